//! Exact KNN benchmark against faiss `IndexFlatL2` (see BENCHMARKS.md for the numbers).
//!
//! ```text
//! cargo run --release -p ood-core --example knn_bench -- [--bank 50000] [--queries 10000]
//!     [--dim 512] [--k 50] [--seed 0] [--dir /tmp/knn_bench] [--tiles 512x4096] [--reps 3]
//! .venv/bin/python scripts/bench_knn_faiss.py /tmp/knn_bench
//! ```
//!
//! Generates seeded synthetic "penultimate features" (a 100-class Gaussian mixture passed
//! through a ReLU, like pooled CNN features), writes the bank as an oodkit feature file and both
//! sets as `.npy` (for the faiss script), fits KNN from the feature file (streamed, chunked),
//! times the search, and writes the k smallest squared distances of every query (`rust_topk.npy`,
//! `(queries, k)` f32, ascending) so the faiss script can compare them.

use ndarray::{Array1, Array2};
use ood_core::detectors::Knn;
use ood_core::{FeatureFile, Features, FitData, Head, Scorer};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().ok().expect("bad argument value"))
        .unwrap_or(default)
}

/// Minimal `.npy` (v1.0, little-endian f32, C order) writer.
fn write_npy(path: &Path, data: &[f32], shape: &[usize]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
    let shape_s = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_s}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let tmp = path.with_extension("npy.tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    for v in data {
        f.write_all(&v.to_le_bytes())?;
    }
    f.flush()?;
    drop(f);
    std::fs::rename(tmp, path)
}

/// CPU seconds (user + system) used by this process so far, from `/proc/self/stat` (Linux;
/// 0 elsewhere). Assumes the usual 100 clock ticks per second.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

fn synthetic(n: usize, d: usize, centres: &Array2<f32>, rng: &mut impl rand::Rng) -> Array2<f32> {
    let noise = Normal::new(0.0f32, 1.0).expect("valid normal");
    let c = centres.nrows();
    let mut x = Array2::<f32>::zeros((n, d));
    for (i, mut row) in x.rows_mut().into_iter().enumerate() {
        let cls = i % c;
        for (j, v) in row.iter_mut().enumerate() {
            *v = (centres[[cls, j]] + noise.sample(rng)).max(0.0);
        }
    }
    x
}

fn bank_f_norm(file: &FeatureFile) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let mut b = file.read_embeddings(0, file.len())?;
    for mut r in b.rows_mut() {
        let nr = r.dot(&r).sqrt();
        r /= nr;
    }
    Ok(b.into_raw_vec_and_offset().0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = arg(&args, "--bank", 50_000);
    let nq: usize = arg(&args, "--queries", 10_000);
    let d: usize = arg(&args, "--dim", 512);
    let k: usize = arg(&args, "--k", 50);
    let seed: u64 = arg(&args, "--seed", 0);
    let reps: usize = arg(&args, "--reps", 3);
    let dir: String = arg(&args, "--dir", "/tmp/knn_bench".to_string());
    let tiles: String = arg(&args, "--tiles", "512x4096".to_string());
    let (qb, bb) = tiles
        .split_once('x')
        .map(|(a, b)| (a.parse().expect("tiles QxB"), b.parse().expect("tiles QxB")))
        .expect("tiles QxB");
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir)?;

    let t = Instant::now();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let cn = Normal::new(0.0f32, 1.0).expect("valid normal");
    let centres = Array2::from_shape_fn((100, d), |_| cn.sample(&mut rng));
    let bank = synthetic(n, d, &centres, &mut rng);
    let queries = synthetic(nq, d, &centres, &mut rng);
    // A one-class identity-free head: KNN ignores logits; keep the file small.
    let head = Head::new(Array2::zeros((1, d)), Array1::zeros(1))?;
    let bank_f = Features::new(bank, Array2::zeros((n, 1)), None)?;
    let query_f = Features::new(queries, Array2::zeros((nq, 1)), None)?;
    let bank_path = dir.join("bank.safetensors");
    bank_f.save(&bank_path)?;
    write_npy(
        &dir.join("bank.npy"),
        bank_f.embeddings.as_slice().expect("std"),
        &[n, d],
    )?;
    write_npy(
        &dir.join("queries.npy"),
        query_f.embeddings.as_slice().expect("std"),
        &[nq, d],
    )?;
    drop(bank_f);
    eprintln!(
        "generated and wrote data in {:.2}s",
        t.elapsed().as_secs_f64()
    );

    let file = FeatureFile::open(&bank_path)?;
    let t = Instant::now();
    let mut scorer = Knn {
        k,
        ..Knn::default()
    }
    .fit_knn(&FitData::from(&file), &head)?;
    let fit_s = t.elapsed().as_secs_f64();
    scorer.set_tiles(qb, bb);
    let mut times = vec![];
    let mut cpu = vec![];
    let mut scores = Array1::zeros(0);
    for _ in 0..reps {
        let c = cpu_seconds();
        let t = Instant::now();
        scores = scorer.score(&query_f)?;
        times.push(t.elapsed().as_secs_f64());
        cpu.push(cpu_seconds() - c);
    }
    cpu.sort_by(f64::total_cmp);
    times.sort_by(f64::total_cmp);
    // The GEMM alone over the same tiles (no top-k), to show what the selection costs.
    let gemm_s = {
        use rayon::prelude::*;
        let qn = {
            let mut q = query_f.embeddings.clone();
            for mut r in q.rows_mut() {
                let nr = r.dot(&r).sqrt();
                r /= nr;
            }
            q
        };
        let qs = qn.as_slice().expect("std");
        let bank_rows = bank_f_norm(&file)?;
        let t = Instant::now();
        qs.par_chunks(qb * d).for_each_init(
            || vec![0.0f32; qb * bb],
            |tile, qblk| {
                for bblk in bank_rows.chunks(bb * d) {
                    let rows = qblk.len() / d;
                    let bn = bblk.len() / d;
                    ood_core::linalg::gemm_nt_into(qblk, bblk, d, &mut tile[..rows * bn], false);
                }
            },
        );
        t.elapsed().as_secs_f64()
    };
    let ks: Vec<usize> = (1..=k).collect();
    let t = Instant::now();
    let topk = scorer.kth_distances(&query_f, &ks)?;
    let all_k_s = t.elapsed().as_secs_f64();
    let ks_sweep = [50, 100, 200, 500, 1000];
    let t = Instant::now();
    if ks_sweep.iter().all(|&kk| kk <= n) {
        scorer.kth_distances(&query_f, &ks_sweep)?;
    }
    let sweep_s = t.elapsed().as_secs_f64();
    write_npy(
        &dir.join("rust_topk.npy"),
        topk.as_slice().expect("std"),
        &[nq, k],
    )?;
    let gflops = 2.0 * n as f64 * nq as f64 * d as f64 / times[0] / 1e9;
    println!(
        "oodkit knn: bank {n}x{d}, {nq} queries, k={k}, threads {}, tiles {qb}x{bb}",
        rayon::current_num_threads()
    );
    println!("  fit (stream from feature file + normalise): {fit_s:.3} s");
    println!(
        "  search, best of {reps}: {:.3} s (all: {:?}) = {gflops:.1} GFLOP/s effective",
        times[0],
        times.iter().map(|t| format!("{t:.3}")).collect::<Vec<_>>()
    );
    println!(
        "  search CPU time (user+sys, all threads), best of {reps}: {:.2} s",
        cpu[0]
    );
    println!("  GEMM alone over the same tiles (no selection): {gemm_s:.3} s");
    println!("  all k=1..{k} distances in one search: {all_k_s:.3} s");
    println!("  APS sweep k in {ks_sweep:?} in one search: {sweep_s:.3} s");
    println!("  mean score {:.6}", scores.mean().unwrap_or(0.0));
    Ok(())
}
