//! Times the BERT sentence encoder on a list of phrases (one per line) and writes the embeddings
//! for a parity check against `scripts/bench_minilm_torch.py` (see BENCHMARKS.md).
//!
//! `cargo run --release -p ood-nn --example bench_text_encoder -- MODEL_DIR PHRASES.txt BATCH
//! THREADS REPEAT OUT.safetensors`

use ood_nn::text::SentenceEncoder;
use std::collections::BTreeMap;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, phrases, batch, threads, repeat, out] = &args[..] else {
        return Err(
            "usage: bench_text_encoder MODEL_DIR PHRASES.txt BATCH THREADS REPEAT OUT.safetensors"
                .into(),
        );
    };
    let (batch, threads, repeat): (usize, i32, usize) =
        (batch.parse()?, threads.parse()?, repeat.parse()?);
    // As the `ood` binaries do at start-up (ood_nn::malloc).
    let malloc = ood_nn::malloc::keep_heap_memory();
    tch::set_num_threads(threads);
    println!("malloc settings applied: {malloc}");
    let t0 = Instant::now();
    let enc = SentenceEncoder::load(dir, tch::Device::Cpu)?;
    println!("load: {:.3} s", t0.elapsed().as_secs_f64());
    let text = std::fs::read_to_string(phrases)?;
    let lines: Vec<&str> = text.lines().collect();
    enc.encode(&lines[..batch.min(lines.len())], batch)?; // warm-up
    let mut times = Vec::new();
    let mut emb = None;
    for _ in 0..repeat.max(1) {
        let t0 = Instant::now();
        emb = Some(enc.encode(&lines, batch)?);
        times.push(t0.elapsed().as_secs_f64());
    }
    let t0 = Instant::now();
    for l in &lines {
        enc.token_ids(l)?;
    }
    let tok_s = t0.elapsed().as_secs_f64();
    let best = times.iter().cloned().fold(f64::INFINITY, f64::min);
    let all: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
    println!(
        "rust tch: {} phrases, batch {batch}, {threads} threads: best {best:.3} s ({:.0} phrases/s), \
         all runs {}; rust tokenisation alone {tok_s:.3} s",
        lines.len(),
        lines.len() as f64 / best,
        all.join(", ")
    );
    let emb = emb.ok_or("no run")?;
    let (n, d) = emb.dim();
    let values: Vec<f32> = emb.iter().copied().collect();
    ood_core::safetensors::write(
        std::path::Path::new(out),
        &[ood_core::safetensors::TensorToWrite::f32(
            "embeddings",
            vec![n, d],
            &values,
        )],
        &BTreeMap::new(),
    )?;
    Ok(())
}
