//! End-to-end runs of the `ood` binary: `example`, `eval`, `score` and `list`, including the error
//! contract (exit code 2, a message naming the file and the problem, no partial output files).

mod common;
use common::{ood_in as ood, stderr};
use std::path::Path;

/// Generates the synthetic example once into `dir` and returns its feature folder.
fn example(dir: &Path) -> std::path::PathBuf {
    let o = ood(
        &["example", "--out-dir", "ex", "--detectors", "msp,energy"],
        dir,
    );
    assert!(o.status.success(), "example failed: {}", stderr(&o));
    dir.join("ex/features")
}

#[test]
fn example_writes_table_and_all_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let o = ood(
        &["example", "--out-dir", "ex", "--detectors", "msp,energy"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("ID accuracy:"), "{table}");
    assert!(
        table.contains("held_out_class") && table.contains("nearood") && table.contains("farood"),
        "{table}"
    );
    for f in ["results.csv", "results.json", "config.json", "report.html"] {
        assert!(
            dir.path().join("ex/results").join(f).is_file(),
            "missing {f}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("ex/results/results.json")).unwrap())
            .unwrap();
    let acc = json["id_accuracy"].as_f64().unwrap();
    assert!(acc > 0.8 && acc <= 1.0, "{acc}");
    let rows = json["rows"].as_array().unwrap();
    // 2 detectors x (2 sets + 2 means)
    assert_eq!(rows.len(), 8);
    for r in rows {
        for k in [
            "dataset", "group", "detector", "auroc", "fpr95", "aupr_in", "aupr_out",
        ] {
            assert!(r.get(k).is_some(), "row lacks {k}: {r}");
        }
        let a = r["auroc"].as_f64().unwrap();
        assert!(a > 0.5 && a <= 1.0, "{r}");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("ex/results/config.json")).unwrap())
            .unwrap();
    assert_eq!(
        config["inputs"]["id_test"]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    let html = std::fs::read_to_string(dir.path().join("ex/results/report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("ROC") && html.contains("held_out_class"));
}

#[test]
fn eval_errors_name_the_file_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = example(dir.path());
    let s = |n: &str| f.join(format!("{n}.safetensors")).display().to_string();
    // A missing OOD file.
    let o = ood(
        &[
            "eval",
            "--fit",
            &s("train"),
            "--head",
            &s("head"),
            "--id",
            &s("test"),
            "--far",
            "gone=/nonexistent/x.safetensors",
            "--out-dir",
            "r1",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/x.safetensors"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("r1").exists());
    // A corrupt OOD file.
    std::fs::write(
        dir.path().join("bad.safetensors"),
        b"definitely not safetensors",
    )
    .unwrap();
    let o = ood(
        &[
            "eval",
            "--fit",
            &s("train"),
            "--head",
            &s("head"),
            "--id",
            &s("test"),
            "--far",
            "bad=bad.safetensors",
            "--out-dir",
            "r2",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.safetensors"), "{}", stderr(&o));
    assert!(!dir.path().join("r2").exists());
    // Features whose dimension does not match the head: the far set is rewritten with fewer dims.
    let far = ood_core::Features::load(f.join("far.safetensors")).unwrap();
    let narrow = ood_core::Features::new(
        far.embeddings.slice(ndarray::s![.., ..10]).to_owned(),
        far.logits.clone(),
        None,
    )
    .unwrap();
    narrow.save(dir.path().join("narrow.safetensors")).unwrap();
    let o = ood(
        &[
            "eval",
            "--fit",
            &s("train"),
            "--head",
            &s("head"),
            "--id",
            &s("test"),
            "--far",
            "narrow=narrow.safetensors",
            "--out-dir",
            "r3",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("dimension mismatch") && stderr(&o).contains("narrow"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("r3").exists());
    // An unknown detector lists the known ones.
    let o = ood(
        &[
            "eval",
            "--fit",
            &s("train"),
            "--head",
            &s("head"),
            "--id",
            &s("test"),
            "--far",
            &format!("far={}", s("far")),
            "--detectors",
            "msp,bogus",
            "--out-dir",
            "r4",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown detector 'bogus'") && stderr(&o).contains("energy"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("r4").exists());
}

#[test]
fn eval_sweep_records_the_chosen_parameters() {
    // ReAct's grid has 4 percentiles (energy, used here before, has a 1-entry grid: nothing was
    // searched). Every recorded candidate AUROC is checked against `ood score` + `ood metrics`.
    let dir = tempfile::tempdir().unwrap();
    let f = example(dir.path());
    let s = |n: &str| f.join(format!("{n}.safetensors")).display().to_string();
    let o = ood(
        &[
            "eval",
            "--fit",
            &s("train"),
            "--head",
            &s("head"),
            "--id",
            &s("test"),
            "--near",
            &format!("near={}", s("near")),
            "--detectors",
            "react",
            "--sweep",
            "--val-id",
            &s("val"),
            "--val-ood",
            &s("far"),
            "--out-dir",
            "r",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r/config.json")).unwrap()).unwrap();
    assert_eq!(config["detectors"][0]["name"], "react");
    assert_eq!(config["sweep"][0]["detector"], "react");
    let outcome = &config["sweep"][0]["outcome"];
    let cands = outcome["candidates"].as_array().unwrap();
    let percentiles: Vec<f64> = cands
        .iter()
        .map(|c| c["spec"]["percentile"].as_f64().unwrap())
        .collect();
    assert_eq!(percentiles, [85.0, 90.0, 95.0, 99.0]);
    let mut best = (f64::NEG_INFINITY, 0.0);
    for (c, &p) in cands.iter().zip(&percentiles) {
        let recorded = c["auroc"]["Ok"].as_f64().unwrap();
        let param = format!("percentile={p}");
        for (set, out) in [("val", "sid.npy"), ("far", "sood.npy")] {
            let o = ood(
                &[
                    "score",
                    "--detector",
                    "react",
                    "--param",
                    &param,
                    "--fit",
                    &s("train"),
                    "--head",
                    &s("head"),
                    "--input",
                    &s(set),
                    "--out",
                    out,
                ],
                dir.path(),
            );
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let o = ood(
            &["metrics", "--id", "sid.npy", "--ood", "sood.npy", "--json"],
            dir.path(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let auroc = m["auroc"].as_f64().unwrap();
        assert!(
            (auroc - recorded).abs() < 1e-12,
            "p {p}: {auroc} vs {recorded}"
        );
        if recorded > best.0 {
            best = (recorded, p);
        }
    }
    assert_eq!(outcome["chosen"]["percentile"].as_f64().unwrap(), best.1);
    assert_eq!(
        config["detectors"][0]["percentile"].as_f64().unwrap(),
        best.1
    );
    assert_eq!(outcome["no_effect"], false);
    assert!(
        stderr(&o).contains(&format!("react search chose {{\"percentile\":{:?}", best.1)),
        "{}",
        stderr(&o)
    );
}

/// A search whose candidates all give the same scores says so. SCALE multiplies the energy by
/// exp(S_all / S_top-k); with one non-zero activation per row, S_top-k = S_all for every
/// percentile of its grid, so all 7 candidates score identically.
#[test]
fn eval_sweep_warns_when_the_search_changes_nothing() {
    use ndarray::{Array1, Array2};
    use ood_core::{Features, Head};
    let dir = tempfile::tempdir().unwrap();
    let (c, d) = (3usize, 40usize);
    let head = Head::new(
        Array2::from_shape_fn((c, d), |(k, j)| if j % c == k { 1.0 } else { 0.1 }),
        Array1::zeros(c),
    )
    .unwrap();
    // Row i: one active unit (i % d) with magnitude 1 + (i % 7) / 3.
    let one_hot = |n: usize, shift: usize| {
        Array2::from_shape_fn((n, d), |(i, j)| {
            if j == (i + shift) % d {
                1.0 + ((i * 5 + shift) % 7) as f32 / 3.0
            } else {
                0.0
            }
        })
    };
    let mut paths = Vec::new();
    for (name, n, shift, labelled) in [
        ("train", 60, 0, true),
        ("test", 30, 1, false),
        ("val", 30, 2, false),
        ("ood", 30, 3, false),
    ] {
        let x = one_hot(n, shift);
        let labels = labelled.then(|| (0..n).map(|i| ((i + shift) % d % c) as i64).collect());
        let f = Features::with_head(x, &head, labels).unwrap();
        let p = dir.path().join(format!("{name}.safetensors"));
        f.save(&p).unwrap();
        paths.push(p.display().to_string());
    }
    let h = dir.path().join("head.safetensors");
    head.save(&h).unwrap();
    let o = ood(
        &[
            "eval",
            "--fit",
            &paths[0],
            "--head",
            &h.display().to_string(),
            "--id",
            &paths[1],
            "--far",
            &format!("x={}", paths[3]),
            "--detectors",
            "scale",
            "--sweep",
            "--val-id",
            &paths[2],
            "--val-ood",
            &paths[3],
            "--out-dir",
            "r",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("warning: the scale parameter search changed nothing: all 7 candidates gave identical scores"),
        "{err}"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r/config.json")).unwrap()).unwrap();
    assert_eq!(config["sweep"][0]["outcome"]["no_effect"], true);
}

#[test]
fn eval_gives_grood_the_val_ood_features_and_skips_it_without_them() {
    // GROOD's noise prototype is the mean of OOD validation features: `--val-ood` (no search
    // needed). Without it the fit fails with what to pass, and the run reports grood skipped.
    let dir = tempfile::tempdir().unwrap();
    let f = example(dir.path());
    let s = |n: &str| f.join(format!("{n}.safetensors")).display().to_string();
    let run = |extra: &[&str], out: &str| -> serde_json::Value {
        let mut args = vec![
            "eval".to_string(),
            "--fit".into(),
            s("train"),
            "--head".into(),
            s("head"),
            "--id".into(),
            s("test"),
            "--near".into(),
            format!("near={}", s("near")),
            "--detectors".into(),
            "grood,msp".into(),
            "--out-dir".into(),
            out.into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = ood(&args, dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&std::fs::read(dir.path().join(out).join("results.json")).unwrap())
            .unwrap()
    };
    let far = s("far");
    let with = run(&["--val-ood", &far], "with");
    let detectors = |v: &serde_json::Value| -> Vec<String> {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["detector"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(detectors(&with).iter().any(|d| d == "grood"), "{with}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("with/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["inputs"]["ood_val"]["path"], far.as_str());
    let without = run(&[], "without");
    assert!(!detectors(&without).iter().any(|d| d == "grood"));
    assert!(detectors(&without).iter().any(|d| d == "msp"));
    let skipped = without["skipped"].to_string();
    assert!(
        skipped.contains("grood") && skipped.contains("OOD validation features"),
        "{skipped}"
    );
}
