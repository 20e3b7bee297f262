//! Golden checks of the akamaster ResNet-20 against PyTorch, on real CIFAR-10 JPEG test images.
//!
//! Reference: `resnet20_golden_logits_cifar10jpeg_first1000.npy` (PyTorch float32 logits of the
//! first 1,000 images of `cifar10_test_order.txt`, decoded by libjpeg-turbo into
//! `golden_decoded_first1000_uint8_NHWC.npy`). Skips when the shared data folder is missing.

mod common;

use ood_nn::data::npy::{NpyData, read_npy};
use ood_nn::data::{DataSpec, Preprocess};
use ood_nn::models::he_resnet::{MEAN, STD};
use ood_nn::network::Network;
use tch::{Device, Tensor};

fn logits_of(net: &ood_nn::models::Net, nhwc: &[u8], n: usize) -> Vec<f32> {
    let mut chw = Vec::with_capacity(n * 3072);
    for i in 0..n {
        let img =
            image::RgbImage::from_raw(32, 32, nhwc[i * 3072..(i + 1) * 3072].to_vec()).unwrap();
        ood_nn::data::preprocess::to_chw_normalized(&img, MEAN, STD, &mut chw);
    }
    let x = Tensor::from_slice(&chw).reshape([n as i64, 3, 32, 32]);
    let out = tch::no_grad(|| net.forward_t(&x, false));
    Vec::<f32>::try_from(out.logits.flatten(0, -1)).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn golden(root: &std::path::Path) -> (Vec<u8>, Vec<f32>, ood_nn::models::Net) {
    let d = root.join("data/cifar10-jpeg/golden_decoded_first1000_uint8_NHWC.npy");
    let a = read_npy(&d).unwrap();
    assert_eq!(a.shape, vec![1000, 32, 32, 3]);
    let NpyData::U8(pixels) = a.data else {
        panic!("golden images must be uint8")
    };
    let m = root.join("models/akamaster-resnet-cifar10");
    let g = read_npy(m.join("resnet20_golden_logits_cifar10jpeg_first1000.npy")).unwrap();
    assert_eq!(g.shape, vec![1000, 10]);
    let net = ood_nn::models::Arch::He(20)
        .load(&m.join("resnet20-12fca82f.safetensors"), Device::Cpu)
        .unwrap();
    (pixels, g.to_f32(), net)
}

#[test]
fn resnet20_logits_match_pytorch_on_golden_pixels() {
    let Some(root) = common::shared_root("resnet20_logits_match_pytorch_on_golden_pixels") else {
        return;
    };
    tch::set_num_threads(2);
    let (pixels, want, net) = golden(&root);
    let got = logits_of(&net, &pixels, 1000);
    let diff = max_abs_diff(&got, &want);
    eprintln!("resnet20 on golden pixels: max |logit - pytorch| = {diff:.3e}");
    assert!(diff <= 1e-4, "max abs logit difference {diff}");
    // All 1,000 are class 0 (airplane); the JPEG test set accuracy is ~81% overall.
    let labels =
        read_npy(root.join("data/cifar10-jpeg/golden_labels_first1000_uint8.npy")).unwrap();
    assert_eq!(labels.to_f32().iter().filter(|&&l| l == 0.0).count(), 1000);
}

#[test]
fn own_jpeg_decoding_of_the_tarball_vs_libjpeg_turbo() {
    let Some(root) = common::shared_root("own_jpeg_decoding_of_the_tarball_vs_libjpeg_turbo")
    else {
        return;
    };
    tch::set_num_threads(2);
    let (golden_pixels, want, net) = golden(&root);
    let dir = root.join("data/cifar10-jpeg");
    let spec = DataSpec::Tar(dir.join("cifar10_test_jpeg.tar.gz"));
    // Order: all 10,000 member names equal cifar10_test_order.txt.
    let order = std::fs::read_to_string(dir.join("cifar10_test_order.txt")).unwrap();
    let order: Vec<&str> = order.lines().collect();
    let mut names = Vec::new();
    let mut labels = Vec::new();
    let mut ours = Vec::with_capacity(1000 * 3072);
    for s in spec.samples().unwrap() {
        let s = s.unwrap();
        names.push(s.name.clone());
        labels.push(s.label);
        if ours.len() < 1000 * 3072 {
            ours.extend_from_slice(s.decode().unwrap().as_raw());
        }
    }
    assert_eq!(names.len(), 10_000);
    assert_eq!(
        names, order,
        "sample order differs from cifar10_test_order.txt"
    );
    for (k, chunk) in labels.chunks(1000).enumerate() {
        assert!(
            chunk.iter().all(|&l| l == k as i64),
            "labels of class block {k}"
        );
    }
    let equal = ours
        .iter()
        .zip(&golden_pixels)
        .filter(|(a, b)| a == b)
        .count();
    let max_px = ours
        .iter()
        .zip(&golden_pixels)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    let rate = equal as f64 / ours.len() as f64;
    let got = logits_of(&net, &ours, 1000);
    let diff = max_abs_diff(&got, &want);
    let mean_diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / got.len() as f32;
    let argmax = |v: &[f32]| ood_core::features::argmax(v);
    let agree = got
        .chunks(10)
        .zip(want.chunks(10))
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    eprintln!(
        "own decoding (ood_nn::data::jpeg): {:.4}% of bytes equal to libjpeg-turbo, max pixel \
         diff {max_px}, logits vs pytorch: max |diff| {diff:.3e}, mean |diff| {mean_diff:.3e}, \
         same top-1 class {agree}/1000",
        100.0 * rate
    );
    // The preprocessing used by `extract` (normalisation only at 32x32) is the same path.
    assert_eq!(
        Preprocess::normalize_only(MEAN, STD).output_size(32, 32),
        (32, 32)
    );
    // The own decoder (ood_nn::data::jpeg) is bit-exact with libjpeg-turbo, so the logits match
    // PyTorch's as closely as from the golden decoded array. With OOD_JPEG_DECODER=image the
    // `image` crate (zune-jpeg) decodes instead: 81.4% equal bytes, max logit difference 0.82.
    if ood_nn::data::image_crate_for_jpeg() {
        eprintln!("OOD_JPEG_DECODER=image: the bit-exactness checks below are not applicable");
        assert!(
            diff <= 1.5 && agree >= 980,
            "max abs logit difference {diff}"
        );
        return;
    }
    assert_eq!(
        equal,
        ours.len(),
        "decoded bytes differ from libjpeg-turbo (max pixel difference {max_px})"
    );
    assert!(diff <= 1e-4, "max abs logit difference {diff}");
    assert_eq!(agree, 1000);
}
