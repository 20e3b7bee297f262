//! MNIST-style idx files (`idx:IMAGES[,LABELS]`, `.gz` or raw): images `(n, rows, cols)` of
//! unsigned bytes, read as grayscale in file order; labels from an optional 1-D idx file, `-1`
//! without it.

use super::{Pixels, RawSample, SampleIter, data_err, open_maybe_gz};
use crate::error::Result;
use std::io::Read;
use std::path::Path;

/// The images of `images` in file order, labelled from `labels` when given.
pub(super) fn samples(images: &Path, labels: Option<&Path>) -> Result<SampleIter> {
    let (shape, data) = read_idx(images, 3)?;
    let (n, rows, cols) = (shape[0], shape[1], shape[2]);
    let labels: Vec<i64> = match labels {
        Some(lp) => {
            let (ls, l) = read_idx(lp, 1)?;
            if ls[0] != n {
                return Err(data_err(
                    lp,
                    format!("{} labels for {n} images in {}", ls[0], images.display()),
                ));
            }
            l.into_iter().map(i64::from).collect()
        }
        None => vec![-1; n],
    };
    let file = images.display().to_string();
    let px = rows * cols;
    Ok(Box::new((0..n).map(move |i| {
        Ok(RawSample {
            name: format!("{file}#{i}"),
            label: labels[i],
            pixels: Pixels::Gray {
                width: cols as u32,
                height: rows as u32,
                data: data[i * px..(i + 1) * px].to_vec(),
            },
        })
    })))
}

fn read_idx(path: &Path, want_dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let mut bytes = Vec::new();
    open_maybe_gz(path)?
        .read_to_end(&mut bytes)
        .map_err(|e| data_err(path, format!("cannot read idx file: {e}")))?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(data_err(
            path,
            "not an idx file of unsigned bytes (bad magic)",
        ));
    }
    let dims = bytes[3] as usize;
    if dims != want_dims {
        return Err(data_err(
            path,
            format!("idx file has {dims} dimensions, expected {want_dims}"),
        ));
    }
    let header = 4 + 4 * dims;
    if bytes.len() < header {
        return Err(data_err(path, "truncated idx header"));
    }
    let shape: Vec<usize> = (0..dims)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    // Checked: three u32 dimensions can overflow usize (found by fuzzing).
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n == bytes.len() - header);
    if n.is_none() {
        let need = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .map_or("more than fit in memory".to_string(), |n| n.to_string());
        return Err(data_err(
            path,
            format!(
                "idx data has {} bytes, shape {shape:?} needs {need}",
                bytes.len() - header
            ),
        ));
    }
    bytes.drain(..header);
    Ok((shape, bytes))
}
