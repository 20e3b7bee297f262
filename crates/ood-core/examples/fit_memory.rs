//! Peak-memory check of the streamed fits (numbers in BENCHMARKS.md).
//!
//! ```text
//! cargo run --release -p ood-core --example fit_memory -- write /tmp/fit_mem 200000 512 100
//! /usr/bin/time -v target/release/examples/fit_memory fit /tmp/fit_mem mahalanobis
//! ```
//!
//! `write DIR N D C` writes a seeded synthetic feature file (`N × D` features, `C` classes,
//! labels) and a head; `fit DIR NAME [key=value ...]` fits that registry detector from the file
//! (streamed in chunks) and scores 1,000 rows, printing the time; run it under
//! `/usr/bin/time -v` to read the maximum resident set size.

use ndarray::{Array1, Array2};
use ood_core::{DetectorSpec, FeatureFile, Features, FitData, Head};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let usage = "usage: fit_memory write DIR N D C | fit DIR NAME [key=value ...]";
    let dir = Path::new(a.get(2).ok_or(usage)?);
    match a.get(1).map(String::as_str) {
        Some("write") => {
            let n: usize = a.get(3).ok_or(usage)?.parse()?;
            let d: usize = a.get(4).ok_or(usage)?.parse()?;
            let c: usize = a.get(5).ok_or(usage)?.parse()?;
            std::fs::create_dir_all(dir)?;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
            let centres = Array2::from_shape_fn((c, d), |_| rng.r#gen::<f32>() * 4.0);
            let labels: Vec<i64> = (0..n).map(|i| (i % c) as i64).collect();
            let h = Array2::from_shape_fn((n, d), |(i, j)| {
                (centres[[i % c, j]] + rng.r#gen::<f32>() * 2.0 - 1.0).max(0.0)
            });
            let head = Head::new(
                Array2::from_shape_fn((c, d), |_| rng.r#gen::<f32>() * 0.1 - 0.05),
                Array1::from_shape_fn(c, |_| rng.r#gen::<f32>() * 0.1),
            )?;
            Features::with_head(h, &head, Some(labels))?.save(dir.join("train.safetensors"))?;
            head.save(dir.join("head.safetensors"))?;
            println!("wrote {}", dir.display());
        }
        Some("fit") => {
            let name = a.get(3).ok_or(usage)?;
            let params: Vec<(String, String)> = a[4..]
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let spec = DetectorSpec::from_name(name, &params)?;
            let file = FeatureFile::open(dir.join("train.safetensors"))?;
            let head = Head::load(dir.join("head.safetensors"))?;
            let t = Instant::now();
            let scorer = spec.as_detector().fit(&FitData::from(&file), &head)?;
            let fit_s = t.elapsed().as_secs_f64();
            let test = file.read_rows(0, 1000.min(file.len()))?;
            let s = scorer.score(&test)?;
            println!(
                "{spec:?}: fit on {}x{} from file in {fit_s:.2} s; mean score of 1000 rows {:.4}",
                file.len(),
                file.dim(),
                s.mean().unwrap_or(0.0)
            );
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
