//! `--model torchscript:FILE.pt` end to end on real CIFAR-10 JPEGs (issue 13, users' own models).
//!
//! `scripts/gen_torchscript_parity.py` (run at test time with `.venv/bin/python`; torchvision and
//! timm from `scripts/setup`) copies the first images of each class out of the shared CIFAR-10
//! JPEG test tarball, exports a torchvision ResNet-18 and a timm ViT-Tiny (random weights, seed 0)
//! and the akamaster ResNet-20 with `scripts/export_torchscript.py`, and computes PyTorch's own
//! features and logits of the two random networks (eager, the library models, their own PIL
//! preprocessing). The tests check `ood extract` against those to 1e-4, the ResNet-20 export
//! against the native `--model resnet20` path to 1e-4, the contract's errors, and the README's
//! copy-paste snippet. Skips with a message (a failure under `OOD_REQUIRE_DATA=1`) when the shared
//! data, the venv's python, torchvision or timm are missing.

mod common;

use common::{assert_fails, ok, ood};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn ws() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    ws().join(".venv/bin/python")
}

fn p(x: &Path) -> String {
    x.to_str().expect("utf-8 path").to_string()
}

/// The generator's output folder (made once per test binary), or `None` after a skip.
fn fixtures(test: &str) -> Option<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let Some(shared) = common::shared_root("torchscript fixtures") else {
            return Err("shared data folder missing".into());
        };
        if !python().is_file() {
            return Err(format!(
                "{} not found (run scripts/setup)",
                python().display()
            ));
        }
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("torchscript_fixtures");
        let _ = std::fs::remove_dir_all(&out);
        let o = Command::new(python())
            .arg(ws().join("scripts/gen_torchscript_parity.py"))
            .args([p(&out), p(&shared), "2".into(), "30".into()])
            .output()
            .expect("python runs");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if !o.status.success() {
            if err.contains("No module named") {
                return Err(format!("python lacks a module (torchvision/timm): {err}"));
            }
            panic!("gen_torchscript_parity.py failed: {err}");
        }
        Ok(out)
    });
    match dir {
        Ok(d) => Some(d.clone()),
        Err(reason) => {
            common::skip(&format!("SKIPPED {test}: {reason}"));
            None
        }
    }
}

fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = ood_nn::data::npy::read_npy(path).expect("reference npy");
    (a.shape.clone(), a.to_f32())
}

/// `max |a - b|` and `max |b|`.
fn max_diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    (d, b.iter().map(|v| v.abs()).fold(0.0, f32::max))
}

/// `ood extract` of `model` on `data` into `out`, loaded back.
fn extract(model: &str, extra: &[&str], data: &Path, out: &Path) -> ood_core::Features {
    let data = format!("folder:{}", p(data));
    let out_s = p(out);
    let mut args = vec![
        "extract", "--model", model, "--data", &data, "--out", &out_s,
    ];
    args.extend_from_slice(extra);
    ok(ood(&args));
    ood_core::Features::load(out).expect("extracted features")
}

fn check_against_pytorch(name: &str) {
    let Some(dir) = fixtures(name) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f.safetensors");
    let model = format!("torchscript:{}", p(&dir.join(format!("{name}.pt"))));
    let f = extract(&model, &[], &dir.join("images"), &out);
    for (what, ours) in [("features", &f.embeddings), ("logits", &f.logits)] {
        let (shape, reference) = read_npy(&dir.join(format!("{name}_{what}.npy")));
        assert_eq!(ours.shape(), &shape[..], "{name} {what} shape");
        let (d, scale) = max_diff(ours.as_slice().unwrap(), &reference);
        eprintln!("{name} {what}: max |ood - pytorch| = {d:.3e} (values up to {scale:.3})");
        assert!(
            d <= 1e-4 * scale.max(1.0),
            "{name} {what}: max difference {d} to PyTorch (values up to {scale})"
        );
    }
    assert_eq!(
        f.embeddings.nrows(),
        20,
        "2 images of each of the 10 classes"
    );
    assert_eq!(f.logits.ncols(), 10);
}

#[test]
fn torchscript_resnet18_matches_pytorch_on_cifar10_jpegs() {
    check_against_pytorch("resnet18");
}

#[test]
fn torchscript_vit_matches_pytorch_on_cifar10_jpegs() {
    // timm's bicubic resize to 248 + centre crop 224 + mean/std 0.5, read from the file.
    check_against_pytorch("vit");
}

#[test]
fn torchscript_resnet20_export_matches_native_resnet20() {
    let Some(dir) = fixtures("torchscript_resnet20_export_matches_native_resnet20") else {
        return;
    };
    let shared = common::shared_root("resnet20").expect("fixtures need it");
    let weights = shared.join("models/akamaster-resnet-cifar10/resnet20-12fca82f.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let images = dir.join("images_r20");
    let native = extract(
        "resnet20",
        &["--weights", &p(&weights)],
        &images,
        &tmp.path().join("native.safetensors"),
    );
    let ts = extract(
        &format!("torchscript:{}", p(&dir.join("resnet20.pt"))),
        &[],
        &images,
        &tmp.path().join("ts.safetensors"),
    );
    assert_eq!(native.embeddings.nrows(), 300);
    for (what, a, b) in [
        ("features", &ts.embeddings, &native.embeddings),
        ("logits", &ts.logits, &native.logits),
    ] {
        let (d, scale) = max_diff(a.as_slice().unwrap(), b.as_slice().unwrap());
        eprintln!(
            "resnet20 {what}: max |torchscript - native| = {d:.3e} (values up to {scale:.3})"
        );
        assert!(d <= 1e-4 * scale.max(1.0), "resnet20 {what}: {d}");
    }
    assert_eq!(ts.labels, native.labels);
    // The heads agree too (the file's `head.weight`/`head.bias` against the native `linear`).
    let acc = |f: &ood_core::Features| f.accuracy().unwrap();
    assert_eq!(acc(&ts), acc(&native));
    assert!(acc(&ts) > 0.7, "real weights on real images: {}", acc(&ts));

    // The library entry point: load_network knows torchscript:FILE and reads the file's config.
    let cpu = tch::Device::Cpu;
    let net = ood_nn::network::load_network(
        &format!("torchscript:{}", p(&dir.join("resnet20.pt"))),
        Path::new("unused"),
        cpu,
    )
    .unwrap();
    let native_net = ood_nn::network::load_network("resnet20", &weights, cpu).unwrap();
    assert_eq!(net.name(), "torchscript-resnet20");
    assert_eq!(net.input_spec(), native_net.input_spec());
    let (h, hn) = (net.head().unwrap(), native_net.head().unwrap());
    assert_eq!((h.weight, h.bias), (hn.weight, hn.bias));
}

#[test]
fn torchscript_flags_dicts_and_contract_errors() {
    let Some(dir) = fixtures("torchscript_flags_dicts_and_contract_errors") else {
        return;
    };
    let cases = dir.join("cases");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.safetensors");
    let images = dir.join("images");
    let data = format!("folder:{}", p(&images));
    let run = |file: &Path, extra: &[&str]| {
        let model = format!("torchscript:{}", p(file));
        let mut args = vec!["extract", "--model", &model, "--data", &data, "--out"];
        let o = p(&out);
        args.push(&o);
        args.extend_from_slice(extra);
        ood(&args)
    };
    let pre = [
        "--input-size",
        "32",
        "--mean",
        "0.5,0.5,0.5",
        "--std",
        "0.25,0.25,0.25",
    ];
    let with = |extra: &[&'static str]| [&pre[..], extra].concat();
    let plain = cases.join("plain.pt");

    // A module without oodkit_config(): everything from flags works.
    ok(run(
        &plain,
        &with(&["--head-weight", "fc.weight", "--head-bias", "fc.bias"]),
    ));
    let f = ood_core::Features::load(&out).unwrap();
    assert_eq!((f.dim(), f.num_classes(), f.len()), (8, 4, 20));
    let cfg = std::fs::read_to_string(ood_test_config(&out)).unwrap();
    assert!(cfg.contains("resize_shorter(32, pil_bilinear)"), "{cfg}");
    // A dict output with the config in the file.
    ok(run(&cases.join("dict.pt"), &[]));
    let g = ood_core::Features::load(&out).unwrap();
    assert_eq!(g.embeddings.shape(), &[20, 8]);

    // Errors name the file and what is wrong.
    let plain_s = p(&plain);
    assert_fails(
        &run(&plain, &[]),
        &[&plain_s, "no input size", "--input-size"],
    );
    assert_fails(&run(&plain, &pre), &[&plain_s, "no head", "--head-weight"]);
    assert_fails(
        &run(&plain, &with(&["--head-weight", "fc.wieght"])),
        &["no parameter 'fc.wieght'", "fc.weight [4, 8]"],
    );
    assert_fails(
        &run(&plain, &with(&["--head-weight", "conv.weight"])),
        &["head weight 'conv.weight' has shape [8, 3, 3, 3]"],
    );
    assert_fails(
        &run(
            &plain,
            &with(&["--head-weight", "fc.weight", "--head-bias", "conv.bias"]),
        ),
        &["head bias 'conv.bias' has shape [8]"],
    );
    // A linear layer of the right shape that is not the one forward uses; a missing bias.
    for head in [
        &["--head-weight", "other.weight", "--head-bias", "other.bias"][..],
        &["--head-weight", "fc.weight"][..],
    ] {
        assert_fails(
            &run(&plain, &with(head)),
            &[
                &plain_s,
                "does not reproduce the logits",
                "max |features·Wᵀ+b − logits| =",
            ],
        );
    }
    assert_fails(
        &run(
            &cases.join("single_output.pt"),
            &with(&["--head-weight", "fc.weight"]),
        ),
        &[
            "single_output.pt",
            "forward returned a tensor [2, 4]",
            "(features, logits)",
        ],
    );
    assert_fails(
        &run(&cases.join("dict_bad_key.pt"), &[]),
        &["dict_bad_key.pt", "keys [\"feats\", \"logits\"]"],
    );
    let safetensors = dir.join("images/airplane/0000.jpg");
    assert_fails(
        &run(&safetensors, &[]),
        &["0000.jpg", "not a TorchScript file"],
    );
    assert_fails(&run(&dir.join("missing.pt"), &[]), &["missing.pt"]);
    assert_fails(
        &run(&plain, &["--mean", "1,2"]),
        &["--mean <R,G,B>", "three finite numbers"],
    );
    // --weights belongs to the built-in models; the TorchScript flags to TorchScript files.
    assert_fails(
        &run(&plain, &["--weights", &plain_s]),
        &["--weights", "not used with --model torchscript:"],
    );
    let o = ood(&[
        "extract",
        "--model",
        "resnet20",
        "--data",
        &data,
        "--out",
        &p(&out),
    ]);
    assert_fails(&o, &["--model resnet20 needs --weights"]);
    let o = ood(&[
        "extract",
        "--model",
        "resnet20",
        "--weights",
        &plain_s,
        "--input-size",
        "32",
        "--data",
        &data,
        "--out",
        &p(&out),
    ]);
    assert_fails(
        &o,
        &["--input-size applies to --model torchscript:FILE.pt only"],
    );
}

fn ood_test_config(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".config.json");
    PathBuf::from(s)
}

#[test]
fn torchscript_readme_snippet_runs() {
    let Some(dir) = fixtures("torchscript_readme_snippet_runs") else {
        return;
    };
    let readme = std::fs::read_to_string(ws().join("README.md")).unwrap();
    let at = readme
        .find("<!-- torchscript-snippet")
        .expect("README marks the snippet");
    let start = readme[at..].find("```python\n").unwrap() + at + "```python\n".len();
    let end = readme[start..].find("```").unwrap() + start;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("snippet.py"), &readme[start..end]).unwrap();
    let o = Command::new(python())
        .arg("snippet.py")
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = extract(
        &format!("torchscript:{}", p(&tmp.path().join("my_model.pt"))),
        &[],
        &dir.join("images"),
        &tmp.path().join("f.safetensors"),
    );
    assert_eq!((f.len(), f.dim(), f.num_classes()), (20, 512, 10));
    let cfg = std::fs::read_to_string(ood_test_config(&tmp.path().join("f.safetensors"))).unwrap();
    assert!(
        cfg.contains("resize_shorter(256, pil_bilinear) > center_crop(224)"),
        "{cfg}"
    );
}
