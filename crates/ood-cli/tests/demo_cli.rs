//! `ood demo` end to end on the real built-in data (reduced sizes), its input errors, and the HTML
//! report rendered by headless Chromium.
//!
//! The demo needs Fashion-MNIST from the Debian package `dataset-fashion-mnist` and the project's
//! venv (scikit-learn's digits, scikit-image's images) on PATH, both from `bash scripts/setup` +
//! `. scripts/env` (which `scripts/test` sources). Where they are missing the test says so and
//! skips.

mod common;
use common::{assert_fails, ood, stderr};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fmnist_available() -> bool {
    let ok = Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file();
    if !ok {
        common::skip(
            "SKIP: Fashion-MNIST not installed (/usr/share/datasets/fashion-mnist): run bash scripts/setup",
        );
    }
    ok
}

fn venv_available() -> bool {
    let found = ood_nn::demo::demo_data_dir()
        .join("digits.csv.gz")
        .is_file();
    if !found {
        common::skip(
            "SKIP: the demo's far-OOD files are not in .deps/demo (or $OOD_DEMO_DATA): run bash scripts/setup",
        );
    }
    found
}

fn row<'a>(rows: &'a [Value], detector: &str, dataset: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["detector"] == detector && r["dataset"] == dataset)
        .unwrap_or_else(|| panic!("no row {detector}/{dataset}"))
}

fn auroc(r: &Value) -> f64 {
    r["auroc"].as_f64().expect("auroc is a number")
}

/// Files whose name marks an unfinished atomic write.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(leftovers(&p));
        } else if p.file_name().is_some_and(|n| {
            n.to_string_lossy().starts_with('.') || n.to_string_lossy().ends_with(".tmp")
        }) {
            out.push(p);
        }
    }
    out
}

#[test]
fn demo_quick_trains_scores_and_reports() {
    if !fmnist_available() || !venv_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let json_path = dir.path().join("bench.json");
    let o = ood(&[
        "demo",
        "--quick",
        "--epochs",
        "3",
        "--seed",
        "0",
        "--out-dir",
        out.to_str().unwrap(),
        "--json",
        json_path.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "ood demo failed: {err}");
    let table = String::from_utf8_lossy(&o.stdout);
    for name in [
        "holdout", "digits", "textures", "photos", "jigsaw", "near", "far",
    ] {
        assert!(table.contains(name), "table lacks {name}:\n{table}");
    }

    let res: Value =
        serde_json::from_slice(&std::fs::read(out.join("results/results.json")).unwrap()).unwrap();
    let again: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(res, again, "--json writes the same result object");
    let acc = res["id_accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.80,
        "6-class Fashion-MNIST accuracy after 3 quick epochs: {acc}"
    );
    let rows = res["rows"].as_array().unwrap();
    let detectors: Vec<&str> = res["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    // Every detector but neg_label (which needs mined negative labels) runs.
    for d in [
        "msp",
        "max_logit",
        "energy",
        "gen",
        "klm",
        "grad_norm",
        "react",
        "ash",
        "scale",
        "dice",
        "she",
        "fdbd",
        "mcm",
        "knn",
        "mahalanobis",
        "rmds",
        "vim",
        "residual",
        "nn_guide",
    ] {
        assert!(detectors.contains(&d), "{d} missing from {detectors:?}");
    }
    for r in rows {
        let a = auroc(r);
        assert!((0.0..=1.0).contains(&a), "AUROC out of range: {r}");
    }
    // The held-out classes are near OOD: the best detector separates them clearly.
    let best_near = detectors
        .iter()
        .map(|d| auroc(row(rows, d, "holdout")))
        .fold(0.0, f64::max);
    assert!(best_near > 0.70, "best hold-out AUROC {best_near}");
    // And far OOD is easier than near for the typical detectors.
    for d in ["msp", "knn", "vim"] {
        let near = auroc(row(rows, d, "nearood"));
        let far = auroc(row(rows, d, "farood"));
        assert!(far > near, "{d}: far mean {far} not above near mean {near}");
    }

    let config: Value =
        serde_json::from_slice(&std::fs::read(out.join("results/config.json")).unwrap()).unwrap();
    assert_eq!(config["command"], "demo");
    let epochs = config["extra"]["training"]["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    let first = epochs[0]["loss"].as_f64().unwrap();
    let last = epochs[2]["loss"].as_f64().unwrap();
    assert!(last < first, "training loss goes down: {first} -> {last}");
    let inputs = config["extra"]["data_inputs"].as_array().unwrap();
    assert!(
        inputs.iter().any(|i| i["path"]
            .as_str()
            .unwrap()
            .ends_with("t10k-images-idx3-ubyte.gz")
            && i["sha256"].as_str().unwrap().len() == 64),
        "input hashes recorded: {inputs:?}"
    );
    let html = std::fs::read_to_string(out.join("results/report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("holdout"));
    assert!(
        !html.contains("<script src"),
        "the report loads nothing from outside"
    );
    for f in [
        "model",
        "head",
        "fmnist6_train",
        "fmnist6_test",
        "holdout",
        "jigsaw",
    ] {
        assert!(
            out.join(format!("features/{f}.safetensors")).is_file(),
            "{f}"
        );
    }
    assert!(
        leftovers(&out).is_empty(),
        "temporary files left: {:?}",
        leftovers(&out)
    );
}

#[test]
fn demo_bad_input_exits_2_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d");
    let o = dir.path().to_str().unwrap();
    // An unknown detector fails at once, not after training.
    assert_fails(
        &ood(&[
            "demo",
            "--quick",
            "--detectors",
            "msp,nosuch",
            "--out-dir",
            out.to_str().unwrap(),
        ]),
        &["nosuch"],
    );
    // A missing folder of the user's own data is named.
    let missing = format!("folder:{o}/no_such_train");
    assert_fails(
        &ood(&[
            "demo",
            "--train",
            &missing,
            "--test",
            &format!("folder:{o}"),
            "--far",
            &format!("x=folder:{o}"),
            "--out-dir",
            out.to_str().unwrap(),
        ]),
        &["no_such_train"],
    );
    // Own OOD sets without own ID data.
    assert_fails(
        &ood(&[
            "demo",
            "--far",
            &format!("x=folder:{o}"),
            "--out-dir",
            out.to_str().unwrap(),
        ]),
        &["--train"],
    );
    assert_fails(
        &ood(&[
            "demo",
            "--quick",
            "--depth",
            "10",
            "--out-dir",
            out.to_str().unwrap(),
        ]),
        &["6n+2"],
    );
    assert!(!out.exists(), "nothing written on bad input");
}

/// Writes a folder-per-class tree of small PNGs: class `c` images are bright in channel `c`.
fn write_tree(root: &Path, classes: usize, per_class: usize, seed: u8) {
    for c in 0..classes {
        let d = root.join(format!("class{c}"));
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..per_class {
            let mut px = vec![0u8; 16 * 16 * 3];
            for (k, p) in px.iter_mut().enumerate() {
                let noise = ((k * 31 + i * 17 + seed as usize * 7) % 40) as u8;
                *p = if k % 3 == c % 3 { 180 + noise } else { noise };
            }
            image::RgbImage::from_raw(16, 16, px)
                .unwrap()
                .save(d.join(format!("{i}.png")))
                .unwrap();
        }
    }
}

#[test]
fn demo_runs_on_user_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test, far) = (
        dir.path().join("train"),
        dir.path().join("test"),
        dir.path().join("far"),
    );
    write_tree(&train, 3, 64, 1);
    write_tree(&test, 3, 10, 2);
    // Far OOD: mid-grey images.
    let fd = far.join("x");
    std::fs::create_dir_all(&fd).unwrap();
    for i in 0..20 {
        image::RgbImage::from_pixel(16, 16, image::Rgb([90 + i as u8, 90, 90]))
            .save(fd.join(format!("{i}.png")))
            .unwrap();
    }
    let (train_s, test_s) = (
        format!("folder:{}", train.display()),
        format!("folder:{}", test.display()),
    );
    let far_s = format!("grey=folder:{}", far.display());
    let demo = |out: &Path, epochs: &str, detectors: &[&str]| {
        let mut args = vec![
            "demo",
            "--train",
            &train_s,
            "--test",
            &test_s,
            "--far",
            &far_s,
            "--side",
            "16",
            "--epochs",
            epochs,
            "--out-dir",
        ];
        args.push(out.to_str().unwrap());
        args.extend_from_slice(detectors);
        ood(&args)
    };
    let out = dir.path().join("out");
    let o = demo(&out, "12", &["--detectors", "msp,energy,knn"]);
    assert!(
        o.status.success(),
        "ood demo on folders failed: {}",
        stderr(&o)
    );
    let res: Value =
        serde_json::from_slice(&std::fs::read(out.join("results/results.json")).unwrap()).unwrap();
    let acc = res["id_accuracy"].as_f64().unwrap();
    assert!(acc > 0.9, "three colour classes are easy: accuracy {acc}");
    let rows = res["rows"].as_array().unwrap();
    assert_eq!(
        rows.iter().filter(|r| r["dataset"] == "grey").count(),
        3,
        "one row per detector: {rows:?}"
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(out.join("results/config.json")).unwrap()).unwrap();
    assert_eq!(config["extra"]["benchmark"], "custom");
    assert_eq!(
        config["extra"]["classes"],
        serde_json::json!(["class0", "class1", "class2"])
    );

    // A failure after training and extraction (a KNN bank smaller than k, found at fit time):
    // exit 2, the problem named, and the features written on the way removed again.
    let out2 = dir.path().join("out2");
    let o = demo(
        &out2,
        "1",
        &["--detectors", "knn", "--param", "knn.k=100000"],
    );
    assert_fails(&o, &["knn", "100000"]);
    assert!(
        !out2.exists(),
        "no partial output, but {} remains",
        out2.display()
    );
}

/// Headless Chromium renders `ood example`'s report; the screenshot must show a page with content
/// (text, table rules, coloured curves), not a blank or error page.
#[test]
fn report_renders_in_headless_chromium() {
    let chromium = Path::new("/usr/bin/chromium");
    if !chromium.is_file() {
        common::skip(
            "SKIP: /usr/bin/chromium not installed (bash scripts/setup installs Debian chromium)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ex");
    let o = ood(&["example", "--out-dir", out.to_str().unwrap()]);
    assert!(o.status.success(), "ood example failed: {}", stderr(&o));
    let report = out.join("results/report.html");
    let png = dir.path().join("shot.png");
    let profile = dir.path().join("profile");
    let status = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.display()),
            "--window-size=1280,2400",
            &format!("--screenshot={}", png.display()),
            &format!("file://{}", report.display()),
        ])
        .output()
        .expect("chromium runs");
    assert!(
        png.is_file(),
        "chromium wrote no screenshot: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1280, 2400));
    let total = (img.width() * img.height()) as f64;
    let non_white = img
        .pixels()
        .filter(|p| p.0.iter().any(|&v| v < 235))
        .count() as f64;
    let coloured = img
        .pixels()
        .filter(|p| {
            let [r, g, b] = p.0.map(i32::from);
            (r - g).abs().max((g - b).abs()).max((r - b).abs()) > 60
        })
        .count();
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    eprintln!(
        "screenshot {}: {:.1}% non-white, {coloured} saturated pixels, {} colours",
        png.display(),
        100.0 * non_white / total,
        colours.len()
    );
    assert!(non_white / total > 0.02, "page looks blank");
    assert!(
        coloured > 500,
        "no coloured ROC curves or histograms visible"
    );
    assert!(colours.len() > 50, "too few colours for text + plots");
}
