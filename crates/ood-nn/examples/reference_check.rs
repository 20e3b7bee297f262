//! Reference check of the whole extraction path against DATA.md's PyTorch numbers: ResNet-20 on
//! the CIFAR-10 JPEG test set (ID) against Tiny-ImageNet test (resized to 32), MNIST,
//! Fashion-MNIST, notMNIST (zero-padded 28→32, 3 channels) and the DTD subset (shorter side 32,
//! centre crop), scored with MSP and Energy, AUROC by the tie-aware Mann–Whitney statistic.
//!
//! Run: `. scripts/env && cargo run --release -p ood-nn --example reference_check`
//! (`OOD_DATA_ROOT` overrides `<workspace>/../shared`; `OOD_FMNIST` the Fashion-MNIST t10k file).
//! Features are cached under `target/reference-cache` (`OOD_REF_CACHE`). Uncached, it takes a few
//! minutes on 2 idle cores (4 min per 10,000 images on the loaded 2-core build machine). Exits non-zero when a number is off by more than 0.01.

use ood_nn::data::{DataSpec, OnError, Preprocess};
use ood_nn::models::he_resnet::{MEAN, STD};
use ood_nn::network::{ExtractOptions, extract_cached, file_sha256};
use std::path::PathBuf;

fn auroc(id: &[f64], ood: &[f64]) -> f64 {
    // Tie-aware Mann–Whitney: P(s_id > s_ood) + 0.5 P(s_id = s_ood).
    let mut all: Vec<(f64, bool)> = id
        .iter()
        .map(|&s| (s, true))
        .chain(ood.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum_id = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0; // ranks i+1..=j
        rank_sum_id += avg_rank * all[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let (n1, n0) = (id.len() as f64, ood.len() as f64);
    (rank_sum_id - n1 * (n1 + 1.0) / 2.0) / (n1 * n0)
}

fn scores(f: &ood_core::Features) -> (Vec<f64>, Vec<f64>) {
    let mut msp = Vec::new();
    let mut energy = Vec::new();
    for row in f.logits.rows() {
        let m = row
            .iter()
            .fold(f64::NEG_INFINITY, |a, &b| a.max(f64::from(b)));
        let s: f64 = row.iter().map(|&v| (f64::from(v) - m).exp()).sum();
        msp.push(1.0 / s);
        energy.push(m + s.ln());
    }
    (msp, energy)
}

/// (name, data, preprocessing, reference (MSP, Energy) AUROC).
type Set<'a> = (&'a str, DataSpec, &'a Preprocess, Option<(f64, f64)>);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::var_os("OOD_DATA_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    let fmnist = std::env::var_os("OOD_FMNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
        });
    tch::set_num_threads(2);
    let d = root.join("data");
    let weights = root.join("models/akamaster-resnet-cifar10/resnet20-12fca82f.safetensors");
    let net = ood_nn::models::Arch::He(20).load(&weights, tch::Device::Cpu)?;
    let weights_sha = file_sha256(&weights)?;
    let cache = std::env::var_os("OOD_REF_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../target/reference-cache"
            ))
        });
    let p32 = Preprocess {
        resize: Some(32),
        interpolation: Default::default(),
        crop: Some(32),
        pad: 0,
        mean: MEAN,
        std: STD,
    };
    let pad2 = Preprocess {
        resize: None,
        interpolation: Default::default(),
        crop: None,
        pad: 2,
        mean: MEAN,
        std: STD,
    };
    let sets: Vec<Set> = vec![
        (
            "cifar10-jpeg test (ID)",
            DataSpec::Tar(d.join("cifar10-jpeg/cifar10_test_jpeg.tar.gz")),
            &p32,
            None,
        ),
        (
            "tiny-imagenet test",
            DataSpec::TinTest(d.join("tiny-imagenet-200/tin200_val_test_jpeg.tar.gz")),
            &p32,
            Some((0.738, 0.769)),
        ),
        (
            "mnist",
            DataSpec::Idx {
                images: d.join("mnist/t10k-images-idx3-ubyte.gz"),
                labels: None,
            },
            &pad2,
            Some((0.817, 0.936)),
        ),
        (
            "fashion-mnist",
            DataSpec::Idx {
                images: fmnist,
                labels: None,
            },
            &pad2,
            Some((0.862, 0.955)),
        ),
        (
            "notmnist",
            DataSpec::Idx {
                images: d.join("notmnist/t10k-images-idx3-ubyte.gz"),
                labels: None,
            },
            &pad2,
            Some((0.863, 0.937)),
        ),
        (
            "dtd subset",
            DataSpec::Tar(d.join("dtd-subset10/dtd10_30perclass_jpeg.tar")),
            &p32,
            None,
        ),
    ];
    let mut id_scores = None;
    let mut ok = true;
    println!("| set | n | MSP AUROC | ref | Energy AUROC | ref | seconds |");
    println!("|---|---|---|---|---|---|---|");
    for (name, spec, pre, reference) in sets {
        let t = std::time::Instant::now();
        let opts = ExtractOptions {
            batch_size: 256,
            preprocess: pre.clone(),
            on_error: OnError::Fail,
            precision: Default::default(),
            probes: Vec::new(),
            fit_statistics: None,
        };
        // Cached by content (model, weights, data, preprocessing), so reruns are instant.
        let c = extract_cached(&cache, &net, &weights_sha, &spec, &opts, &mut |_| {})?;
        let features = ood_core::Features::load(&c.path)?;
        let secs = t.elapsed().as_secs_f64();
        let (msp, energy) = scores(&features);
        match &id_scores {
            None => {
                println!(
                    "| {name} | {} | accuracy {:.4} | | | | {secs:.1} |",
                    features.len(),
                    features.accuracy().unwrap_or(f64::NAN)
                );
                id_scores = Some((msp, energy));
            }
            Some((id_msp, id_energy)) => {
                let a_msp = auroc(id_msp, &msp);
                let a_en = auroc(id_energy, &energy);
                let (r_msp, r_en) = match reference {
                    Some((a, b)) => {
                        ok &= (a_msp - a).abs() <= 0.01 && (a_en - b).abs() <= 0.01;
                        (format!("{a:.3}"), format!("{b:.3}"))
                    }
                    None => ("-".into(), "-".into()),
                };
                println!(
                    "| {name} | {} | {a_msp:.4} | {r_msp} | {a_en:.4} | {r_en} | {secs:.1} |",
                    features.len()
                );
            }
        }
    }
    if !ok {
        return Err("an AUROC differs from the DATA.md reference by more than 0.01".into());
    }
    println!("all reference AUROCs within 0.01");
    Ok(())
}
