//! The built-in benchmark `fmnist-holdout` is the demo's benchmark as files: `ood demo
//! --export-data` writes the demo's sets, and `ood bench fmnist-holdout` on them with the demo's
//! `model.safetensors` gives the demo's numbers exactly (same pixels, same weights, same
//! extraction). Real data: Fashion-MNIST (Debian `dataset-fashion-mnist`) and the demo's far-OOD
//! files (`.deps/demo`), both from `bash scripts/setup`; `OOD_REQUIRE_DATA=1` turns a missing one
//! into a failure.

mod common;
use common::{assert_fails, ok, ood, stderr};
use serde_json::Value;
use std::path::Path;

fn data_available() -> bool {
    if !Path::new("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").is_file() {
        common::skip(
            "SKIP: Fashion-MNIST not installed (/usr/share/datasets/fashion-mnist): run bash scripts/setup",
        );
        return false;
    }
    if !ood_nn::demo::demo_data_dir()
        .join("digits.csv.gz")
        .is_file()
    {
        common::skip(
            "SKIP: the demo's far-OOD files are not in .deps/demo (or $OOD_DEMO_DATA): run bash scripts/setup",
        );
        return false;
    }
    true
}

fn json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// (detector, dataset) -> (AUROC, FPR@95) of a result object.
fn metrics(res: &Value) -> Vec<((String, String), (f64, f64))> {
    let mut v: Vec<_> = res["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                (
                    r["detector"].as_str().unwrap().to_string(),
                    r["dataset"].as_str().unwrap().to_string(),
                ),
                (r["auroc"].as_f64().unwrap(), r["fpr95"].as_f64().unwrap()),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

const SETS: [(&str, usize, usize); 7] = [
    // (set, --quick size, the benchmark's size)
    ("fmnist6_train", 3000, 36000),
    ("fmnist6_test", 600, 6000),
    ("holdout", 300, 2000),
    ("digits", 300, 1797),
    ("textures", 300, 2000),
    ("photos", 300, 2000),
    ("jigsaw", 300, 2000),
];

#[test]
fn fmnist_holdout_bench_on_exported_sets_reproduces_the_demo() {
    if !data_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = |p: &str| tmp.path().join(p);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (demo_dir, data, cache) = (t("demo"), t("data"), t("cache"));

    // The demo (reduced sizes), then its sets as files.
    ok(ood(&[
        "demo",
        "--quick",
        "--epochs",
        "2",
        "--seed",
        "0",
        "--out-dir",
        &s(&demo_dir),
    ]));
    let o = ok(ood(&[
        "demo",
        "--quick",
        "--seed",
        "0",
        "--export-data",
        &s(&data),
    ]));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains("fmnist6_train 3000") && out.contains("benchmark.toml"),
        "{out}"
    );
    for (set, n, _) in SETS {
        let list = std::fs::read_to_string(data.join(format!("{set}.txt"))).unwrap();
        assert_eq!(list.lines().count(), n, "{set}");
    }

    let demo_res = json(&demo_dir.join("results/results.json"));
    let detectors: Vec<&str> = demo_res["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(detectors.len() > 20, "{detectors:?}");
    let detectors = detectors.join(",");
    let weights = demo_dir.join("features/model.safetensors");
    let bench = |name: &str, root: Option<&Path>, json_out: &Path| {
        let mut args = vec![
            "bench".to_string(),
            name.to_string(),
            "--model".into(),
            "resnet8".into(),
            "--weights".into(),
            s(&weights),
            "--batch-size".into(),
            "500".into(),
            "--cache-dir".into(),
            s(&cache),
            "--detectors".into(),
            detectors.clone(),
            "--out-dir".into(),
            s(&t("results")),
            "--json".into(),
            s(json_out),
        ];
        if let Some(r) = root {
            args.extend(["--data-root".into(), s(r)]);
        }
        ood(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // The built-in over the exported folder: the demo's numbers, with a size warning per set.
    let o = ok(bench("fmnist-holdout", Some(&data), &t("b1.json")));
    let err = stderr(&o);
    for (set, got, want) in SETS {
        let w = format!(
            "warning: benchmark fmnist-holdout: set '{set}' has {got} images, the benchmark defines {want}"
        );
        assert!(err.contains(&w), "no warning {w:?}: {err}");
    }
    assert!(err.contains("resnet8: input 28 px"), "{err}");
    let b1 = json(&t("b1.json"));
    let (want, got) = (metrics(&demo_res), metrics(&b1));
    assert!(want.len() >= 7 * 20, "{} rows", want.len());
    assert_eq!(
        want.iter().map(|r| &r.0).collect::<Vec<_>>(),
        got.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    for ((key, (a, f)), (_, (a2, f2))) in want.iter().zip(&got) {
        assert!(
            (a - a2).abs() <= 1e-6 && (f - f2).abs() <= 1e-6,
            "{key:?}: demo AUROC {a} FPR95 {f}, bench {a2} {f2}"
        );
    }
    assert_eq!(demo_res["id_accuracy"], b1["id_accuracy"]);

    // The manifest written with the data: its own root and sizes, no warning, cached features.
    let o = ok(bench(&s(&data.join("benchmark.toml")), None, &t("b2.json")));
    let err = stderr(&o);
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(err.matches("(cached)").count(), 7, "{err}");
    assert_eq!(metrics(&json(&t("b2.json"))), got);

    // Errors: exit 2, naming what is wrong, before any work.
    let o = bench("fmnist-holdout", Some(&t("nowhere")), &t("e.json"));
    assert_fails(
        &o,
        &[
            "nowhere/fmnist6_train.txt",
            "not found",
            "ood demo --export-data",
        ],
    );
    // A missing image.
    let gone = data.join("images/photos/000007.png");
    std::fs::remove_file(&gone).unwrap();
    let o = bench("fmnist-holdout", Some(&data), &t("e.json"));
    assert_fails(&o, &["set 'photos'", "1 of the 300 images", "000007.png"]);
    assert!(!t("e.json").exists());
    // An existing folder is never exported into.
    let before = snapshot(&data);
    let o = ood(&["demo", "--quick", "--export-data", &s(&data)]);
    assert_fails(&o, &[&s(&data), "not empty"]);
    assert_eq!(snapshot(&data), before);
    // The export is of the built-in benchmark only.
    let o = ood(&[
        "demo",
        "--export-data",
        &s(&t("x")),
        "--train",
        "folder:a",
        "--test",
        "folder:b",
    ]);
    assert_fails(&o, &["--export-data"]);
    assert!(!t("x").exists());
}

#[test]
fn bench_list_shows_fmnist_holdout() {
    let o = ok(ood(&["bench", "--list"]));
    let out = String::from_utf8_lossy(&o.stdout);
    let entry = out
        .split("\n\n")
        .find(|e| e.starts_with("fmnist-holdout"))
        .unwrap_or_else(|| panic!("no fmnist-holdout in:\n{out}"));
    for needle in [
        "(7 sets, openood convention)",
        "ood demo --export-data DIR",
        "--data-root DIR",
        "36000 / 6000 / 2000 / 1797",
    ] {
        assert!(entry.contains(needle), "{needle}: {entry}");
    }
}
