//! Parity of the Rust networks with plain-PyTorch re-statements of the official definitions
//! (OpenOOD ResNet18_32x32, OE / OpenOOD WideResNet, torchvision ResNet): same tensor names and shapes,
//! and the same eval-mode features and logits for weights set by a closed formula (no big weight files;
//! see tests/data/make_model_fixtures.py, which also writes the expected outputs).

use std::collections::HashMap;
use std::path::PathBuf;

use ood_nn::models::common::ConvInit;
use ood_nn::models::resnet32x32::{ResNet32x32, ResNet32x32Depth};
use ood_nn::models::torchvision_resnet::{BlockKind, TorchvisionResNet};
use ood_nn::models::wrn::WideResNet;
use tch::{Device, Kind, Tensor, nn};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Sets every variable as the python script's `formula_fill` does.
fn formula_fill(vs: &nn::VarStore) {
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for (t, name) in names.into_iter().enumerate() {
        let var = &vars[name];
        let size = var.size();
        let n: i64 = size.iter().product();
        let v = (Tensor::arange(n, (Kind::Double, Device::Cpu)) * 1.37 + (t as f64) * 0.71).sin();
        let v = if size.len() >= 2 {
            let fan_in: i64 = size[1..].iter().product();
            v * (2.0 / (fan_in as f64).sqrt())
        } else if name.ends_with("running_mean") {
            v * 0.1
        } else if name.ends_with("running_var") {
            v * 0.25 + 1.0
        } else if name.ends_with("weight") {
            v * 0.2 + 1.0
        } else if name.ends_with("bias") {
            v * 0.1
        } else {
            panic!("unexpected variable {name}")
        };
        let mut dst = var.shallow_clone();
        tch::no_grad(|| dst.copy_(&v.to_kind(Kind::Float).reshape(size.as_slice())));
    }
}

fn formula_input(n: i64, h: i64, w: i64) -> Tensor {
    (Tensor::arange(n * 3 * h * w, (Kind::Double, Device::Cpu)) * 0.913 + 0.5)
        .sin()
        .to_kind(Kind::Float)
        .reshape([n, 3, h, w])
}

fn expected() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(data("model_parity.safetensors"))
        .expect("fixture")
        .into_iter()
        .collect()
}

/// Names and shapes of the PyTorch state dict (minus `num_batches_tracked`, which tch does not keep).
fn torch_names(arch: &str) -> Vec<(String, Vec<i64>)> {
    let text = std::fs::read_to_string(data("model_names.json")).expect("names fixture");
    let all: serde_json::Value = serde_json::from_str(&text).expect("json");
    let mut v: Vec<(String, Vec<i64>)> = all[arch]
        .as_object()
        .expect("arch entry")
        .iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, s)| {
            let shape = s
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect();
            (k.clone(), shape)
        })
        .collect();
    v.sort();
    v
}

fn assert_names(vs: &nn::VarStore, arch: &str) {
    let mut ours: Vec<(String, Vec<i64>)> = vs
        .variables()
        .into_iter()
        .map(|(k, t)| (k, t.size()))
        .collect();
    ours.sort();
    let theirs = torch_names(arch);
    assert_eq!(ours.len(), theirs.len(), "{arch}: number of tensors");
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a, b, "{arch}: tensor name/shape");
    }
}

/// max |a − b| / (1 + |b|) over all entries.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    ((a - b).abs() / (b.abs() + 1.0)).max().double_value(&[])
}

fn check(arch: &str, out: (Tensor, Tensor), exp: &HashMap<String, Tensor>) {
    let (f, z) = out;
    let ef = &exp[&format!("{arch}.features")];
    let ez = &exp[&format!("{arch}.logits")];
    let (ef_err, ez_err) = (rel_err(&f, ef), rel_err(&z, ez));
    println!("{arch}: features err {ef_err:.2e}, logits err {ez_err:.2e}");
    assert!(ef_err < 1e-4, "{arch}: features differ by {ef_err}");
    assert!(ez_err < 1e-4, "{arch}: logits differ by {ez_err}");
    // the two fixture images must give different outputs, or the check would be weak
    assert!((ez.get(0) - ez.get(1)).abs().max().double_value(&[]) > 1e-3);
}

/// Saves the filled store, loads it through `load`, and checks the loaded model matches too.
fn roundtrip<M>(
    vs: &nn::VarStore,
    load: impl Fn(&std::path::Path) -> ood_nn::Result<M>,
    fwd: impl Fn(&M) -> (Tensor, Tensor),
    arch: &str,
    exp: &HashMap<String, Tensor>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{arch}.safetensors"));
    vs.save(&path).unwrap();
    let m = load(&path).unwrap();
    check(arch, tch::no_grad(|| fwd(&m)), exp);
}

#[test]
fn cifar_resnet18_and_34_match_openood() {
    let exp = expected();
    for (arch, depth) in [
        ("cifar_resnet18", ResNet32x32Depth::R18),
        ("cifar_resnet34", ResNet32x32Depth::R34),
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = ResNet32x32::new(&vs.root(), 10, depth, ConvInit::KaimingNormalFanOut);
        assert_names(&vs, arch);
        formula_fill(&vs);
        let x = formula_input(2, 32, 32);
        check(arch, tch::no_grad(|| m.forward_t(&x, false)), &exp);
        let head = m.head().unwrap();
        assert_eq!((head.num_classes(), head.dim()), (10, 512));
        roundtrip(
            &vs,
            |p| ResNet32x32::load_safetensors(p, Device::Cpu),
            |m| m.forward_t(&x, false),
            arch,
            &exp,
        );
    }
}

#[test]
fn wide_resnets_match_oe() {
    let exp = expected();
    for (arch, depth, widen) in [("wrn40_2", 40, 2), ("wrn16_1", 16, 1)] {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = WideResNet::new(&vs.root(), 10, depth, widen, 0.3).unwrap();
        assert_names(&vs, arch);
        formula_fill(&vs);
        let x = formula_input(2, 32, 32);
        check(arch, tch::no_grad(|| m.forward_t(&x, false)), &exp);
        assert_eq!(m.head().unwrap().dim(), 64 * widen as usize);
    }
    // a real PyTorch state dict (with num_batches_tracked) through the loader
    let m = WideResNet::load_safetensors(data("wrn16_1_weights.safetensors"), Device::Cpu).unwrap();
    assert_eq!((m.depth(), m.widen()), (16, 1));
    let x = formula_input(2, 32, 32);
    check("wrn16_1", tch::no_grad(|| m.forward_t(&x, false)), &exp);
    // head copy equals the fc tensors of the file
    let file: HashMap<String, Tensor> =
        Tensor::read_safetensors(data("wrn16_1_weights.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let head = m.head().unwrap();
    let w = Vec::<f32>::try_from(file["fc.weight"].flatten(0, -1)).unwrap();
    let b = Vec::<f32>::try_from(&file["fc.bias"]).unwrap();
    assert_eq!(head.weight.iter().copied().collect::<Vec<_>>(), w);
    assert_eq!(head.bias.to_vec(), b);
}

#[test]
fn wide_resnet_rejects_bad_config() {
    let vs = nn::VarStore::new(Device::Cpu);
    assert!(WideResNet::new(&vs.root(), 10, 41, 2, 0.0).is_err());
    assert!(WideResNet::new(&vs.root(), 10, 40, 2, 1.5).is_err());
}

#[test]
fn torchvision_resnets_match() {
    let exp = expected();
    for (arch, kind, blocks) in [
        ("resnet18", BlockKind::Basic, [2, 2, 2, 2]),
        ("resnet50", BlockKind::Bottleneck, [3, 4, 6, 3]),
        ("resnet101", BlockKind::Bottleneck, [3, 4, 23, 3]),
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = TorchvisionResNet::new(&vs.root(), 7, kind, blocks);
        assert_names(&vs, arch);
        formula_fill(&vs);
        let x = formula_input(2, 64, 64);
        check(arch, tch::no_grad(|| m.forward_t(&x, false)), &exp);
        if arch != "resnet101" {
            roundtrip(
                &vs,
                |p| TorchvisionResNet::load_safetensors(p, Device::Cpu),
                |m| m.forward_t(&x, false),
                arch,
                &exp,
            );
        }
    }
}

#[test]
fn loader_names_file_and_mismatch() {
    // a WRN file is not a CIFAR ResNet, and a missing file is an io error naming it
    let p = data("wrn16_1_weights.safetensors");
    let e = ResNet32x32::load_safetensors(&p, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("wrn16_1_weights.safetensors") && e.contains("block counts"),
        "{e}"
    );
    let e = TorchvisionResNet::load_safetensors(&p, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrn16_1_weights.safetensors"), "{e}");
    let e = WideResNet::load_safetensors(data("nope.safetensors"), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.safetensors"), "{e}");
}

#[test]
fn cifar_resnet18_training_mode_matches_torch() {
    let exp = expected();
    let vs = nn::VarStore::new(Device::Cpu);
    let m = ResNet32x32::resnet18(&vs.root(), 10);
    formula_fill(&vs);
    let x = formula_input(2, 32, 32);
    let (_, z) = tch::no_grad(|| m.forward_t(&x, true));
    let err = rel_err(&z, &exp["cifar_resnet18.train_logits"]);
    assert!(err < 1e-4, "train-mode logits differ by {err}");
    // eval-mode and train-mode logits differ, so the comparison above sees batch statistics
    assert!(rel_err(&z, &exp["cifar_resnet18.logits"]) > 1e-2);
    let vars = vs.variables();
    for stat in ["running_mean", "running_var"] {
        let err = rel_err(
            &vars[&format!("bn1.{stat}")],
            &exp[&format!("cifar_resnet18.bn1.{stat}_after")],
        );
        assert!(err < 1e-5, "bn1.{stat} after one step differs by {err}");
    }
}

/// Compile-time check: the Network trait requires Send (models move into extraction workers).
#[allow(dead_code)]
fn models_are_send() {
    use std::marker::PhantomData;
    fn is_send<T: Send>(_: PhantomData<T>) {}
    is_send(PhantomData::<ResNet32x32>);
    is_send(PhantomData::<WideResNet>);
    is_send(PhantomData::<TorchvisionResNet>);
}
