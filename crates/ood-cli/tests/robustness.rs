//! Issue 12's new-user checks against the `ood` binary: an output equal to an input is refused
//! before any work (the input stays byte-identical), a second writer of the same output is
//! refused, wrong-architecture or NaN weights and crafted headers are errors naming the file, bad
//! numbers are usage errors, never panics; each case exits with code 2.

mod common;
use common::{assert_fails, ood_in, shared_root, stderr};
use ndarray::{Array1, Array2};
use ood_core::{Features, Head};
use std::path::{Path, PathBuf};

/// A tiny benchmark: head, labelled fit features and two sets, written into `dir`.
fn features(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let head = Head::new(
        Array2::from_shape_fn((3, 4), |(k, j)| if k == j { 1.0 } else { 0.1 }),
        Array1::zeros(3),
    )
    .unwrap();
    let x = |n: usize, s: f32| {
        Array2::from_shape_fn((n, 4), |(i, j)| {
            ((i * 7 + j * 3) % 5) as f32 * s + (i % 3 == j) as u8 as f32
        })
    };
    let fit =
        Features::with_head(x(30, 0.3), &head, Some((0..30).map(|i| i % 3).collect())).unwrap();
    let test = Features::with_head(x(12, 0.5), &head, None).unwrap();
    let (h, f, t) = (
        dir.join("head.safetensors"),
        dir.join("fit.safetensors"),
        dir.join("test.safetensors"),
    );
    head.save(&h).unwrap();
    fit.save(&f).unwrap();
    test.save(&t).unwrap();
    (h, f, t)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Issue 12 (1): `score --input X --out X`, a hard link of it, and `eval --id X --json X`.
#[test]
fn an_output_that_is_an_input_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let (h, f, t) = features(dir.path());
    let before = std::fs::read(&t).unwrap();
    let o = ood_in(
        &[
            "score",
            "--detector",
            "msp",
            "--fit",
            &s(&f),
            "--head",
            &s(&h),
            "--input",
            &s(&t),
            "--out",
            &s(&t),
        ],
        dir.path(),
    );
    assert_fails(
        &o,
        &["--out", "is the same file as --input", "test.safetensors"],
    );
    let hard = dir.path().join("alias.npy");
    std::fs::hard_link(&t, &hard).unwrap();
    let o = ood_in(
        &[
            "score",
            "--detector",
            "msp",
            "--fit",
            &s(&f),
            "--head",
            &s(&h),
            "--input",
            &s(&t),
            "--out",
            "./alias.npy",
        ],
        dir.path(),
    );
    assert_fails(&o, &["is the same file as --input"]);
    let o = ood_in(
        &[
            "eval",
            "--fit",
            &s(&f),
            "--head",
            &s(&h),
            "--id",
            &s(&t),
            "--far",
            &format!("x={}", s(&f)),
            "--json",
            &s(&t),
            "--detectors",
            "msp",
        ],
        dir.path(),
    );
    assert_fails(&o, &["--json", "is the same file as --id"]);
    // A head file that happens to sit where --out-dir writes config.json.
    std::fs::create_dir_all(dir.path().join("r")).unwrap();
    let in_out_dir = dir.path().join("r/config.json");
    std::fs::copy(&h, &in_out_dir).unwrap();
    let o = ood_in(
        &[
            "eval",
            "--fit",
            &s(&f),
            "--head",
            &s(&in_out_dir),
            "--id",
            &s(&t),
            "--far",
            &format!("x={}", s(&f)),
            "--out-dir",
            "r",
            "--detectors",
            "msp",
        ],
        dir.path(),
    );
    assert_fails(&o, &["--out-dir", "is the same file as --head"]);
    assert_eq!(
        std::fs::read(&in_out_dir).unwrap(),
        std::fs::read(&h).unwrap()
    );
    assert_eq!(
        std::fs::read(&t).unwrap(),
        before,
        "the input must be untouched"
    );
    // A distinct output works.
    let o = ood_in(
        &[
            "score",
            "--detector",
            "msp",
            "--fit",
            &s(&f),
            "--head",
            &s(&h),
            "--input",
            &s(&t),
            "--out",
            "scores.npy",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.ends_with(".lock") && !n.ends_with(".tmp")),
        "{names:?}"
    );
}

/// Issue 12 (6): while one process writes an output, a second writer of the same output fails at
/// once naming it (the lock is held here by the test itself, so nothing depends on timing).
#[test]
fn a_second_writer_of_the_same_output_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (h, f, t) = features(dir.path());
    let out = dir.path().join("scores.npy");
    let lock = ood_core::atomic_file::OutputLock::acquire(&out).unwrap();
    let args = [
        "score",
        "--detector",
        "msp",
        "--fit",
        &s(&f),
        "--head",
        &s(&h),
        "--input",
        &s(&t),
        "--out",
        "scores.npy",
    ];
    let o = ood_in(&args, dir.path());
    assert_fails(&o, &["scores.npy", "another process is writing"]);
    assert!(!out.exists());
    drop(lock);
    let o = ood_in(&args, dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Issue 12 (4): crafted headers whose shape overflows (`[2^62, 4]`) are errors naming the file
/// for `score --input`, `--head` and `align --anchors` (they panicked).
#[test]
fn overflowing_safetensors_headers_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (h, f, t) = features(dir.path());
    let evil = dir.path().join("evil.safetensors");
    let header = r#"{"features":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]},"logits":{"dtype":"F32","shape":[4611686018427387904,3],"data_offsets":[0,16]},"weight":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0u8; 16]);
    std::fs::write(&evil, bytes).unwrap();
    let base = |input: &Path, head: &Path| {
        vec![
            "score".to_string(),
            "--detector".into(),
            "msp".into(),
            "--fit".into(),
            s(&f),
            "--head".into(),
            s(head),
            "--input".into(),
            s(input),
            "--out".into(),
            "o.npy".into(),
        ]
    };
    for args in [base(&evil, &h), base(&t, &evil)] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_fails(&ood_in(&a, dir.path()), &["evil.safetensors", "too large"]);
    }
    let o = ood_in(
        &[
            "align",
            "--fit",
            &s(&f),
            "--anchors",
            &s(&evil),
            "--out",
            "p.safetensors",
        ],
        dir.path(),
    );
    assert_fails(&o, &["evil.safetensors", "too large"]);
}

/// Issue 12 (7): zero-width and integer features are refused naming the file; a bad parameter
/// value names the parameter.
#[test]
fn odd_feature_files_and_parameters_are_named() {
    use ood_core::safetensors::{TensorToWrite, write};
    let dir = tempfile::tempdir().unwrap();
    let (h, f, t) = features(dir.path());
    let zero = dir.path().join("zero.safetensors");
    write(
        &zero,
        &[
            TensorToWrite::f32("features", vec![5, 0], &[]),
            TensorToWrite::f32("logits", vec![5, 3], &[0.0; 15]),
        ],
        &Default::default(),
    )
    .unwrap();
    let ints = dir.path().join("ints.safetensors");
    write(
        &ints,
        &[
            TensorToWrite::i64("features", vec![2, 4], &[1; 8]),
            TensorToWrite::f32("logits", vec![2, 3], &[0.0; 6]),
        ],
        &Default::default(),
    )
    .unwrap();
    let score = |input: &Path, param: &str| {
        ood_in(
            &[
                "score",
                "--detector",
                "knn",
                "--param",
                param,
                "--fit",
                &s(&f),
                "--head",
                &s(&h),
                "--input",
                &s(input),
                "--out",
                "o.npy",
            ],
            dir.path(),
        )
    };
    assert_fails(&score(&zero, "k=1"), &["zero.safetensors", "zero-width"]);
    assert_fails(
        &score(&ints, "k=1"),
        &["ints.safetensors", "'features' is I64"],
    );
    assert_fails(&score(&t, "k=abc"), &["parameter 'k' cannot be 'abc'"]);
    let o = ood_in(
        &[
            "score",
            "--detector",
            "react",
            "--param",
            "percentile=NaN",
            "--fit",
            &s(&f),
            "--head",
            &s(&h),
            "--input",
            &s(&t),
            "--out",
            "o.npy",
        ],
        dir.path(),
    );
    assert_fails(&o, &["parameter 'percentile' cannot be 'NaN'"]);
}

/// Issue 12 (4): zero or negative counts are usage errors (exit 2), not panics (exit 101).
#[test]
fn zero_and_negative_counts_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec![
            "train",
            "--method",
            "ce",
            "--data",
            "folder:x",
            "--out-dir",
            "o",
            "--batch-size",
            "0",
        ],
        vec![
            "extract",
            "--model",
            "resnet20",
            "--weights",
            "w",
            "--data",
            "folder:x",
            "--out",
            "o",
            "--threads",
            "0",
        ],
        vec![
            "extract",
            "--model",
            "resnet20",
            "--weights",
            "w",
            "--data",
            "folder:x",
            "--out",
            "o",
            "--threads=-2",
        ],
        vec!["bench", "cifar10", "--weights", "w", "--threads", "0"],
        vec![
            "extract",
            "--model",
            "resnet20",
            "--weights",
            "w",
            "--data",
            "folder:x",
            "--out",
            "o",
            "--batch-size",
            "0",
        ],
        vec!["demo", "--epochs", "0"],
    ] {
        let o = ood_in(&args, dir.path());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("invalid value"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

/// Writes two 32x32 PNGs in a class folder and returns the folder spec.
fn images(dir: &Path) -> String {
    let cls = dir.join("imgs/cls");
    std::fs::create_dir_all(&cls).unwrap();
    for (i, v) in [40u8, 200].into_iter().enumerate() {
        image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([v, (x * 8) as u8, (y * 8) as u8]))
            .save(cls.join(format!("{i}.png")))
            .unwrap();
    }
    format!("folder:{}", dir.join("imgs").display())
}

/// Issue 12 (1, 2, 7) with the real akamaster weights: `extract --weights W --out W` is refused
/// and W untouched; ResNet-32 weights as `resnet20` name the unused tensors (top-1 0.27 before);
/// NaN weights name the file and tensor; the legacy `.th` release gives the same features as its
/// safetensors conversion.
#[test]
fn weights_are_checked_strictly_and_never_overwritten() {
    let Some(root) = shared_root("weights_are_checked_strictly_and_never_overwritten") else {
        return;
    };
    let m = root.join("models/akamaster-resnet-cifar10");
    let dir = tempfile::tempdir().unwrap();
    let data = images(dir.path());
    let w = dir.path().join("w.safetensors");
    std::fs::copy(m.join("resnet20-12fca82f.safetensors"), &w).unwrap();
    let before = std::fs::read(&w).unwrap();
    let extract = |weights: &Path, out: &str| {
        ood_in(
            &[
                "extract",
                "--model",
                "resnet20",
                "--weights",
                &s(weights),
                "--data",
                &data,
                "--out",
                out,
            ],
            dir.path(),
        )
    };
    assert_fails(
        &extract(&w, &s(&w)),
        &["--out", "is the same file as --weights", "w.safetensors"],
    );
    assert_eq!(std::fs::read(&w).unwrap(), before);

    let o = extract(&m.join("resnet32-d509ac18.safetensors"), "x.safetensors");
    assert_fails(
        &o,
        &[
            "resnet32-d509ac18.safetensors",
            "the model does not use",
            "layer1.3.",
        ],
    );
    assert!(!dir.path().join("x.safetensors").exists());

    // NaN in one BatchNorm statistic.
    let mut named = tch::Tensor::read_safetensors(&w).unwrap();
    for (n, t) in named.iter_mut() {
        if n == "bn1.running_var" {
            *t = t.copy();
            let _ = t.get(3).fill_(f64::NAN);
        }
    }
    let nan = dir.path().join("nan.safetensors");
    tch::Tensor::write_safetensors(&named, &nan).unwrap();
    assert_fails(
        &extract(&nan, "n.safetensors"),
        &["nan.safetensors", "bn1.running_var", "NaN"],
    );

    let ok = |o: std::process::Output| assert!(o.status.success(), "{}", stderr(&o));
    ok(extract(&w, "a.safetensors"));
    ok(extract(&m.join("resnet20-12fca82f.th"), "b.safetensors"));
    let a = Features::load(dir.path().join("a.safetensors")).unwrap();
    let b = Features::load(dir.path().join("b.safetensors")).unwrap();
    assert_eq!(a.embeddings, b.embeddings);
    assert_eq!(a.logits, b.logits);
}
