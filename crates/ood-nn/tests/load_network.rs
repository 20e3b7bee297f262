//! `load_network` by name: a real PyTorch-written WRN-16-1 file loads as `wrn`, its forward pass
//! gives logits equal to `features · Wᵀ + b` of the exported head, and wrong names or families are
//! errors naming what is known or what is wrong.

use ood_nn::network::load_network;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn load_network_wrn_by_name_exports_a_consistent_head() {
    let net = load_network("wrn", &data("wrn16_1_weights.safetensors"), Device::Cpu).unwrap();
    assert_eq!(net.name(), "wrn");
    assert_eq!(net.input_spec().size, 32);
    tch::manual_seed(0);
    let x = Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu));
    let out = tch::no_grad(|| net.forward_t(&x, false));
    let feats: Vec<f32> = Vec::try_from(out.features.flatten(0, -1)).unwrap();
    let logits: Vec<f32> = Vec::try_from(out.logits.flatten(0, -1)).unwrap();
    let head = net.head().unwrap();
    let d = head.dim();
    let f = ndarray::Array2::from_shape_vec((3, d), feats).unwrap();
    let z = head.logits(f.view()).unwrap();
    for (a, b) in z.iter().zip(&logits) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

#[test]
fn load_network_rejects_unknown_names_and_wrong_families() {
    let e = load_network("vgg16", &data("wrn16_1_weights.safetensors"), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("unknown model 'vgg16'") && e.contains("cifar_resnet18"),
        "{e}"
    );
    let e = load_network(
        "resnet50",
        &data("wrn16_1_weights.safetensors"),
        Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("wrn16_1_weights.safetensors"), "{e}");
}
