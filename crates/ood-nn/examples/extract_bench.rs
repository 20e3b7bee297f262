//! Rust side of the feature-extraction benchmark (BENCHMARKS.md, "Feature extraction"), to set
//! beside scripts/bench_extract_torch.py: akamaster ResNet-20/56 CPU inference (eval, no_grad,
//! f32) on the first N CIFAR-10 JPEG test images, fixed batch size and thread count; plus the
//! whole `extract` path (tar.gz read, JPEG decode, preprocessing, inference). It applies the
//! `ood` binary's start-up allocator setting ([`ood_nn::malloc::keep_heap_memory`]) and loads
//! the networks as the binary does ([`ood_nn::models::Arch::load`]: BatchNorm folded, channels-
//! last); the unfolded network (as training builds it) is timed beside it.
//!
//! `. scripts/env && cargo run --release -p ood-nn --example extract_bench -- [N] [BATCH] [THREADS]`

use ood_nn::data::{DataSpec, OnError, Preprocess};
use ood_nn::models::he_resnet::{MEAN, STD};
use ood_nn::network::{ExtractOptions, Network, extract};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let n = args.first().copied().unwrap_or(10_000);
    let batch = args.get(1).copied().unwrap_or(256);
    let threads = args.get(2).copied().unwrap_or(2);
    let repeats = 3;
    let malloc = ood_nn::malloc::keep_heap_memory();
    tch::set_num_threads(threads as i32);
    let root = std::env::var_os("OOD_DATA_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    let spec = DataSpec::Tar(root.join("data/cifar10-jpeg/cifar10_test_jpeg.tar.gz"));
    let t = Instant::now();
    let mut x = Vec::with_capacity(n * 3072);
    for s in spec.samples()?.take(n) {
        ood_nn::data::preprocess::to_chw_normalized(&s?.decode()?, MEAN, STD, &mut x);
    }
    let decode_s = t.elapsed().as_secs_f64();
    let x = tch::Tensor::from_slice(&x).reshape([n as i64, 3, 32, 32]);
    println!(
        "tch 0.24 / libtorch, threads {}, n {n}, batch {batch}, read+decode {decode_s:.2} s, \
         malloc settings applied: {malloc}",
        tch::get_num_threads()
    );
    let models = root.join("models/akamaster-resnet-cifar10");
    for (depth, file) in [(20, "resnet20-12fca82f"), (56, "resnet56-4bfd9763")] {
        let weights = models.join(format!("{file}.safetensors"));
        let arch = ood_nn::models::Arch::He(depth);
        let net = arch.load(&weights, tch::Device::Cpu)?;
        let mut unfolded = arch.build(10, tch::Device::Cpu)?;
        ood_nn::network::load_init(unfolded.var_store_mut(), &weights, arch.head_name())?;
        for (what, model) in [
            ("unfolded (as trained)", &unfolded),
            ("as `ood extract` loads it", &net),
        ] {
            let mut times = Vec::new();
            tch::no_grad(|| {
                let _ = model.forward_t(&x.narrow(0, 0, batch.min(n) as i64), false);
                for _ in 0..repeats {
                    let t = Instant::now();
                    let mut i = 0;
                    while i < n {
                        let b = batch.min(n - i) as i64;
                        let _ = model.forward_t(&x.narrow(0, i as i64, b), false);
                        i += batch;
                    }
                    times.push(t.elapsed().as_secs_f64());
                }
            });
            times.sort_by(f64::total_cmp);
            let med = times[repeats / 2];
            println!(
                "resnet{depth} {what}: inference median {med:.2} s over {repeats} runs, {:.0} img/s",
                n as f64 / med
            );
        }
        let opts = ExtractOptions {
            batch_size: batch,
            preprocess: Preprocess::normalize_only(MEAN, STD),
            on_error: OnError::Fail,
            precision: Default::default(),
            probes: Vec::new(),
            fit_statistics: None,
        };
        let t = Instant::now();
        let ex = extract(&net, Box::new(spec.samples()?.take(n)), &opts, &mut |_| {})?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "resnet{depth}: full extract (tar.gz + decode + preprocess + inference) {s:.2} s, {:.0} img/s",
            ex.features.len() as f64 / s
        );
    }
    Ok(())
}
