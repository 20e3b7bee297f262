//! Rust side of the training-throughput benchmark (BENCHMARKS.md, "Training throughput"), to set
//! beside scripts/bench_train_torch.py: the CE training step of `ood train` (random crop + flip,
//! forward, cross-entropy, backward, SGD Nesterov with weight decay, cosine lr) through
//! [`ood_nn::train::train`] on `steps` batches of seeded random 32×32 images, for two epochs;
//! the second epoch's images per second is the figure (the first warms up allocators and
//! libtorch's kernels).
//!
//! ```text
//! . scripts/env && cargo run --release -p ood-nn --example train_throughput -- \
//!     --model resnet20 --batch 128 --steps 20 --threads 2 [--precision bf16] [--channels-last] \
//!     [--device cuda] [--no-malloc-tuning]
//! ```
//! Prints one JSON line.

use ood_nn::Network;
use ood_nn::train::{Augment, Precision, TrainConfig, TrainData, train};
use tch::{Device, Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the `ood` binary does (ood_nn::malloc); `--no-malloc-tuning` keeps glibc's defaults.
    let tune = !std::env::args().any(|a| a == "--no-malloc-tuning");
    let malloc_tuned = tune && ood_nn::malloc::keep_heap_memory();
    let mut model = "resnet20".to_string();
    let (mut batch, mut steps, mut threads) = (128usize, 20usize, 0i32);
    let (mut precision, mut channels_last, mut device) = (Precision::Fp32, false, Device::Cpu);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--model" => model = val()?,
            "--batch" => batch = val()?.parse()?,
            "--steps" => steps = val()?.parse()?,
            "--threads" => threads = val()?.parse()?,
            "--precision" => {
                precision = match val()?.as_str() {
                    "fp32" => Precision::Fp32,
                    "bf16" => Precision::Bf16,
                    p => return Err(format!("--precision {p}: fp32 or bf16").into()),
                }
            }
            "--channels-last" => channels_last = true,
            "--no-malloc-tuning" => {}
            "--device" => {
                device = match val()?.as_str() {
                    "cpu" => Device::Cpu,
                    "cuda" => Device::Cuda(0),
                    d => return Err(format!("--device {d}: cpu or cuda").into()),
                }
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if threads > 0 {
        tch::set_num_threads(threads);
    }
    tch::manual_seed(0);
    let n = (batch * steps) as i64;
    let images = Tensor::randn([n, 3, 32, 32], (Kind::Float, Device::Cpu));
    let labels = Tensor::randint(10, [n], (Kind::Int64, Device::Cpu));
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: batch,
        augment: Some(Augment {
            crop_padding: 4,
            horizontal_flip: true,
            pad_value: [0.0; 3],
            simclr: None,
        }),
        precision,
        channels_last,
        ..TrainConfig::default()
    };
    let data = TrainData::new(&images, &labels);
    if !matches!(model.as_str(), "resnet20" | "cifar_resnet18") {
        return Err(format!("--model {model}: resnet20 or cifar_resnet18").into());
    }
    let net = ood_nn::models::Arch::parse(&model)?.build(10, device)?;
    let fwd = |x: &Tensor, t: bool| net.forward_t(x, t);
    let logs = train(net.var_store(), &fwd, &data, &cfg, None, false, &mut |_| {})?;
    let last = logs.last().expect("two epochs");
    println!(
        "{}",
        serde_json::json!({
            "impl": "oodkit (tch 0.24, libtorch 2.11)",
            "model": model,
            "batch": batch,
            "steps": steps,
            "threads": tch::get_num_threads(),
            "device": format!("{device:?}"),
            "precision": format!("{precision:?}").to_lowercase(),
            "channels_last": channels_last,
            "malloc_tuned": malloc_tuned,
            "warmup_epoch_images_per_second": logs[0].images_per_second,
            "images_per_second": last.images_per_second,
            "final_loss": last.loss,
        })
    );
    Ok(())
}
