//! JPEG decode throughput (BENCHMARKS.md, "JPEG decoding"): oodkit's own decoder
//! (`ood_nn::data::jpeg`, bit-exact with libjpeg-turbo) vs the `image` crate (zune-jpeg), on the
//! first N CIFAR-10 JPEG test images and the 300 DTD-subset images, all read into memory first;
//! single thread, median of 3 passes. Pillow's side: scripts/bench_jpeg_pillow.py.
//!
//! `. scripts/env && cargo run --release -p ood-nn --example jpeg_bench -- [N]`

use ood_nn::data::jpeg;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn members(archive: &Path, limit: usize) -> Result<Vec<Vec<u8>>, Box<dyn std::error::Error>> {
    let f = std::fs::File::open(archive)?;
    let r: Box<dyn Read> = if archive.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut tar = tar::Archive::new(r);
    let mut v = Vec::new();
    for e in tar.entries()? {
        let mut e = e?;
        let name = e.path()?.to_string_lossy().to_lowercase();
        if e.header().entry_type().is_file() && name.ends_with(".jpg") {
            let mut b = Vec::new();
            e.read_to_end(&mut b)?;
            v.push(b);
            if v.len() == limit {
                break;
            }
        }
    }
    Ok(v)
}

fn time(files: &[Vec<u8>], f: &dyn Fn(&[u8]) -> usize) -> (f64, usize) {
    let mut times = Vec::new();
    let mut px = 0;
    for _ in 0..3 {
        let t = Instant::now();
        px = files.iter().map(|b| f(b)).sum();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (times[1], px)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let root = std::env::var_os("OOD_DATA_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    let sets = [
        (
            "cifar10-test",
            root.join("data/cifar10-jpeg/cifar10_test_jpeg.tar.gz"),
            n,
        ),
        (
            "dtd-subset10",
            root.join("data/dtd-subset10/dtd10_30perclass_jpeg.tar"),
            usize::MAX,
        ),
    ];
    for (name, path, limit) in sets {
        let files = members(&path, limit)?;
        let own = |b: &[u8]| jpeg::decode(b).expect("decodes").data.len() / 3;
        let img = |b: &[u8]| {
            let i = image::load_from_memory(b).expect("decodes").to_rgb8();
            (i.width() * i.height()) as usize
        };
        for (dec, f) in [
            ("oodkit jpeg", &own as &dyn Fn(&[u8]) -> usize),
            ("image crate", &img),
        ] {
            let (s, px) = time(&files, f);
            println!(
                "{name}: {dec}: {} images in {s:.3} s, {:.0} img/s, {:.1} Mpx/s",
                files.len(),
                files.len() as f64 / s,
                px as f64 / s / 1e6
            );
        }
    }
    Ok(())
}
