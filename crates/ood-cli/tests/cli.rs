//! Runs the built `ood` binary: `ood metrics` output and exit codes.

mod common;
use common::{assert_fails, ok, ood, stderr};
use std::path::{Path, PathBuf};
use std::process::Output;

const A_ID: [f64; 20] = [
    0.95, 0.91, 0.88, 0.86, 0.83, 0.80, 0.78, 0.74, 0.71, 0.69, 0.66, 0.62, 0.58, 0.55, 0.51, 0.47,
    0.42, 0.37, 0.30, 0.22,
];
const A_OOD: [f64; 20] = [
    0.89, 0.76, 0.64, 0.60, 0.53, 0.49, 0.45, 0.40, 0.38, 0.35, 0.33, 0.28, 0.26, 0.24, 0.20, 0.18,
    0.15, 0.12, 0.08, 0.05,
];

fn write_text(dir: &Path, name: &str, values: &[f64]) -> PathBuf {
    let p = dir.join(name);
    let text: String = values.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(&p, text).unwrap();
    p
}

fn json_of(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "ood failed: {}", stderr(o));
    let out = String::from_utf8(o.stdout.clone()).unwrap();
    assert_eq!(
        out.trim().lines().count(),
        1,
        "one JSON object on one line: {out}"
    );
    serde_json::from_str(out.trim()).unwrap()
}

fn close(v: &serde_json::Value, key: &str, want: f64) {
    let got = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("missing {key} in {v}"));
    assert!((got - want).abs() <= 1e-6, "{key}: got {got}, want {want}");
}

#[test]
fn metrics_json_vector_a_matches_spec_golden() {
    let dir = tempfile::tempdir().unwrap();
    let id = write_text(dir.path(), "id.txt", &A_ID);
    let oo = write_text(dir.path(), "ood.txt", &A_OOD);
    let (id, oo) = (id.to_str().unwrap(), oo.to_str().unwrap());

    let v = json_of(&ood(&["metrics", "--id", id, "--ood", oo, "--json"]));
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 5, "{v}");
    assert_eq!(v["convention"], "openood");
    close(&v, "auroc", 0.81);
    close(&v, "fpr95", 0.65);
    close(&v, "aupr_in", 0.781585);
    close(&v, "aupr_out", 0.829161);

    // Spec table 9.3, row A, for the other conventions.
    let cases = [
        ("classic", 0.55, 0.781585, 0.829161),
        ("hendrycks", 0.70, 0.791474, 0.833883),
        ("knn", 0.55, 0.756585, 0.804161),
    ];
    for (c, fpr, ain, aout) in cases {
        let args = [
            "metrics",
            "--id",
            id,
            "--ood",
            oo,
            "--convention",
            c,
            "--json",
        ];
        let v = json_of(&ood(&args));
        assert_eq!(v["convention"], c);
        close(&v, "auroc", 0.81);
        close(&v, "fpr95", fpr);
        close(&v, "aupr_in", ain);
        close(&v, "aupr_out", aout);
    }
}

#[test]
fn metrics_table_names_the_convention() {
    let dir = tempfile::tempdir().unwrap();
    let id = write_text(dir.path(), "id.txt", &A_ID);
    let oo = write_text(dir.path(), "ood.txt", &A_OOD);
    // The .npy path too: write the OOD set with numpy's layout via ood-core.
    let oo_npy = dir.path().join("ood.npy");
    let v: Vec<f32> = A_OOD.iter().map(|&x| x as f32).collect();
    ood_core::scores::write_npy(&oo_npy, &v).unwrap();
    for oo in [oo, oo_npy] {
        let args = [
            "metrics",
            "--id",
            id.to_str().unwrap(),
            "--ood",
            oo.to_str().unwrap(),
        ];
        let o = ood(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = String::from_utf8(o.stdout).unwrap();
        assert!(out.contains("convention: openood (OOD positive"), "{out}");
        assert!(out.contains("AUROC       0.810000    81.00"), "{out}");
        assert!(out.contains("FPR@95      0.650000    65.00"), "{out}");
        assert!(out.contains("(20 scores)"), "{out}");
    }
}

#[test]
fn metrics_errors_exit_2_and_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let id = write_text(dir.path(), "id.txt", &A_ID);
    let id = id.to_str().unwrap();
    let missing = dir.path().join("no_such_scores.txt");
    let missing = missing.to_str().unwrap();
    assert_fails(
        &ood(&["metrics", "--id", id, "--ood", missing]),
        &["no_such_scores.txt", "No such file"],
    );

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    assert_fails(
        &ood(&["metrics", "--id", empty.to_str().unwrap(), "--ood", id]),
        &["empty.txt", "holds no scores"],
    );

    let nan = dir.path().join("with_nan.txt");
    std::fs::write(&nan, "0.5\n0.25\nNaN\n").unwrap();
    assert_fails(
        &ood(&["metrics", "--id", id, "--ood", nan.to_str().unwrap()]),
        &["with_nan.txt", "line 3", "non-finite"],
    );

    let bad = dir.path().join("bad_line.txt");
    std::fs::write(&bad, "0.5\nzero\n").unwrap();
    assert_fails(
        &ood(&[
            "metrics",
            "--id",
            id,
            "--ood",
            bad.to_str().unwrap(),
            "--json",
        ]),
        &["bad_line.txt", "line 2", "\"zero\""],
    );

    assert_fails(
        &ood(&[
            "metrics",
            "--id",
            id,
            "--ood",
            id,
            "--convention",
            "sklearn",
        ]),
        &["sklearn", "--convention", "openood"],
    );
}

#[test]
fn list_detectors_groups_every_detector_once_by_family() {
    let o = ok(ood(&["list", "detectors"]));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut family = String::new();
    let mut seen = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(f) = line.strip_suffix(':') {
            family = f.to_string();
        } else if let Some(name) = line.split_whitespace().next() {
            assert!(line.contains("needs: "), "{line}");
            assert!(
                seen.insert(name.to_string(), family.clone()).is_none(),
                "{name} twice"
            );
        }
    }
    assert_eq!(seen.len(), ood_core::DetectorSpec::names().len());
    for (name, want) in [
        ("msp", "logits"),
        ("temp_scaling", "logits"),
        ("knn", "features"),
        ("vim", "features"),
        ("mcm", "vision-language"),
        ("neg_label", "vision-language"),
        ("odin", "network"),
        ("iodin", "network"),
    ] {
        assert_eq!(seen[name], want, "{name}");
    }
}

/// Whether an ELF file names `lib` among its libraries (DT_NEEDED names live in .dynstr).
fn names_library(exe: &str, lib: &[u8]) -> bool {
    let bytes = std::fs::read(exe).expect("the binary is readable");
    bytes.windows(lib.len()).any(|w| w == lib)
}

#[test]
fn ood_runs_light_commands_without_libtorch_and_hands_the_rest_to_ood_net() {
    // `ood` itself must not load libtorch (start-up cost and memory of `metrics`, `list`, ...);
    // `ood-net` must (it runs the networks), which also shows the check can fail.
    assert!(!names_library(env!("CARGO_BIN_EXE_ood"), b"libtorch_cpu"));
    assert!(names_library(
        env!("CARGO_BIN_EXE_ood-net"),
        b"libtorch_cpu"
    ));
    // Network commands, help and mistakes go through `ood-net`, which knows every command.
    let help = ok(ood(&["--help"]));
    let help = String::from_utf8_lossy(&help.stdout);
    for cmd in ["metrics", "eval", "extract", "train", "holdout"] {
        assert!(
            help.contains(&format!("\n  {cmd} ")),
            "--help lists {cmd}:\n{help}"
        );
    }
    let o = ood(&[
        "extract",
        "--model",
        "resnet20",
        "--data",
        "folder:/nonexistent-ood-dir",
    ]);
    assert_fails(
        &o,
        &[
            "required arguments were not provided",
            "--out <OUT>",
            "Usage: ood extract",
        ],
    );
    let o = ood(&["no-such-command"]);
    assert_fails(&o, &["unrecognized subcommand 'no-such-command'"]);
    // A KNN search on a device is ood-net's (libtorch): handed over, and a device that is not
    // there is a clear error before any work (CUDA absent here, or no device 7 on a GPU machine).
    let o = ood(&[
        "score",
        "--detector",
        "knn",
        "--fit",
        "f",
        "--head",
        "h",
        "--input",
        "i",
        "--out",
        "o",
        "--device",
        "cuda:7",
    ]);
    assert_fails(&o, &["--device cuda:7"]);
    // A light command's own help comes from `ood` and reads as `ood`.
    let h = ok(ood(&["metrics", "--help"]));
    assert!(String::from_utf8_lossy(&h.stdout).contains("Usage: ood metrics"));
}
