//! CIFAR binary batches (`cifar10-bin:FILE[,FILE...]`, `cifar100-bin:FILE[,...]`), read in the
//! given file order, records in file order. A CIFAR-10 record is 1 label byte + 3072 planar RGB
//! bytes (`data_batch_*.bin`, `test_batch.bin`); a CIFAR-100 record (`train.bin`, `test.bin`)
//! has a coarse and a fine label byte, and the fine label is used.

use super::{Pixels, RawSample, SampleIter, data_err};
use crate::error::{Error, Result};
use std::path::PathBuf;

/// The records of `files` (CIFAR-`classes`, 10 or 100) as 32x32 RGB images.
pub(super) fn samples(files: &[PathBuf], classes: u32) -> Result<SampleIter> {
    let label_bytes = if classes == 100 { 2 } else { 1 };
    let rec = label_bytes + 3072;
    let mut all: Vec<(String, Vec<u8>)> = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        if bytes.is_empty() || bytes.len() % rec != 0 {
            return Err(data_err(
                f,
                format!(
                    "{} bytes is not a whole number of {rec}-byte CIFAR-{classes} records",
                    bytes.len()
                ),
            ));
        }
        all.push((f.display().to_string(), bytes));
    }
    let iter = all.into_iter().flat_map(move |(file, bytes)| {
        let n = bytes.len() / rec;
        (0..n)
            .map(|i| {
                let r = &bytes[i * rec..(i + 1) * rec];
                let label = i64::from(r[label_bytes - 1]);
                let px = &r[label_bytes..];
                let rgb: Vec<u8> = (0..1024)
                    .flat_map(|j| [px[j], px[1024 + j], px[2048 + j]])
                    .collect();
                Ok(RawSample {
                    name: format!("{file}#{i}"),
                    label,
                    pixels: Pixels::Rgb(
                        image::RgbImage::from_raw(32, 32, rgb)
                            .expect("3072 bytes make a 32x32 rgb image"),
                    ),
                })
            })
            .collect::<Vec<_>>()
    });
    Ok(Box::new(iter))
}
