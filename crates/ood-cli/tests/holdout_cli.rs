//! `ood holdout` on real data (Tiny-ImageNet val: 200 classes x 50 images): MixOE's hold-out-class
//! split is seeded and exact, its images are the source's bytes, and the benchmark it writes is
//! trained (`ood train --method ce` and `--method mixoe` on its imglist) and evaluated
//! (`ood bench DIR/benchmark.toml`) end to end.

mod common;
use common::{assert_fails, ok, ood, shared_root};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

/// (path, label) of an imglist.
fn entries(p: &Path) -> Vec<(String, i64)> {
    lines(p)
        .iter()
        .map(|l| {
            let (a, b) = l.split_once(' ').expect("path label");
            (a.to_string(), b.parse().expect("integer label"))
        })
        .collect()
}

#[test]
fn holdout_tiny_imagenet_split_train_and_bench() {
    let Some(root) = shared_root("holdout_tiny_imagenet_split_train_and_bench") else {
        return;
    };
    let tin = root.join("data/tiny-imagenet-200/tin200_val_test_jpeg.tar.gz");
    let spec = format!("tin-val:{}", tin.display());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ho");
    let d = dir.to_str().unwrap();
    let o = ok(ood(&[
        "holdout",
        "--data",
        &spec,
        "--holdout",
        "50",
        "--seed",
        "0",
        "--out",
        d,
    ]));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(stdout.contains("held out 50 of 200 classes"), "{stdout}");

    // Per class: 50 images -> 10 test (0.2), 4 val (0.1 of 40), 36 train.
    let held_in = lines(&dir.join("classes.txt"));
    let held_out = lines(&dir.join("heldout.txt"));
    assert_eq!((held_in.len(), held_out.len()), (150, 50));
    // Class names are the WordNet ids of wnids.txt, in sorted (label) order.
    assert!(
        held_in.iter().all(|c| c.starts_with('n') && c.len() == 9),
        "{held_in:?}"
    );
    assert!(held_in.windows(2).all(|w| w[0] < w[1]));
    let ins: BTreeSet<&String> = held_in.iter().collect();
    assert!(held_out.iter().all(|c| !ins.contains(c)));
    let sets: BTreeMap<&str, Vec<(String, i64)>> = ["train", "val", "test", "near"]
        .into_iter()
        .map(|s| (s, entries(&dir.join(format!("{s}.txt")))))
        .collect();
    let sizes: Vec<usize> = ["train", "val", "test", "near"]
        .iter()
        .map(|s| sets[s].len())
        .collect();
    assert_eq!(sizes, [5400, 600, 1500, 500]);
    let mut seen = BTreeSet::new();
    for (set, list) in &sets {
        let mut per_label: BTreeMap<i64, usize> = BTreeMap::new();
        for (p, l) in list {
            assert!(seen.insert(p.clone()), "{p} is in two sets");
            assert!(p.starts_with(&format!("images/{set}/")), "{p}");
            *per_label.entry(*l).or_default() += 1;
        }
        if *set == "near" {
            assert_eq!(per_label.keys().collect::<Vec<_>>(), [&-1]);
        } else {
            // Every held-in class, re-indexed 0..150, with the same count each.
            assert_eq!(per_label.len(), 150, "{set}");
            assert_eq!(*per_label.keys().next().unwrap(), 0);
            assert_eq!(*per_label.keys().last().unwrap(), 149);
            let n = list.len() / 150;
            assert!(per_label.values().all(|&c| c == n), "{set}");
        }
    }
    // Class folders match the labels: label k is classes.txt line k.
    let (p, l) = &sets["train"][0];
    assert_eq!(p.split('/').nth(2).unwrap(), held_in[*l as usize]);
    let (p, _) = &sets["near"][0];
    assert!(held_out.iter().any(|c| c == p.split('/').nth(2).unwrap()));
    // Images are the source's JPEG bytes, not re-encoded.
    let bytes = std::fs::read(dir.join(p)).unwrap();
    assert_eq!(&bytes[..2], &[0xff, 0xd8]);

    // Seeded: the same seed gives the same split, another seed another one.
    let again = tmp.path().join("ho_again");
    ok(ood(&[
        "holdout",
        "--data",
        &spec,
        "--holdout",
        "50",
        "--seed",
        "0",
        "--out",
        again.to_str().unwrap(),
    ]));
    assert_eq!(
        lines(&again.join("train.txt")),
        lines(&dir.join("train.txt"))
    );
    let other = tmp.path().join("ho_seed1");
    ok(ood(&[
        "holdout",
        "--data",
        &spec,
        "--holdout",
        "0.25",
        "--seed",
        "1",
        "--out",
        other.to_str().unwrap(),
    ]));
    assert_eq!(lines(&other.join("heldout.txt")).len(), 50);
    assert_ne!(lines(&other.join("heldout.txt")), held_out);

    // Never writes into a non-empty folder; unknown class names are errors.
    assert_fails(
        &ood(&["holdout", "--data", &spec, "--holdout", "5", "--out", d]),
        &[d, "not empty"],
    );
    assert_fails(
        &ood(&[
            "holdout",
            "--data",
            &spec,
            "--classes",
            "n01443537,nosuchclass",
            "--out",
            tmp.path().join("x").to_str().unwrap(),
        ]),
        &["nosuchclass", "is not a class"],
    );
    assert!(!tmp.path().join("x").exists());

    // Train on the held-in classes (a seeded 1,500-image sample, one epoch), then bench.
    let train = format!("imglist:{d}/train.txt@{d}");
    let ce = tmp.path().join("ce");
    ok(ood(&[
        "train",
        "--method",
        "ce",
        "--model",
        "resnet20",
        "--data",
        &train,
        "--sample",
        "1500",
        "--epochs",
        "1",
        "--threads",
        "2",
        "--out-dir",
        ce.to_str().unwrap(),
    ]));
    let dtd = format!(
        "tar:{}",
        root.join("data/dtd-subset10/dtd10_30perclass_jpeg.tar")
            .display()
    );
    let mixoe = tmp.path().join("mixoe");
    ok(ood(&[
        "train",
        "--method",
        "mixoe",
        "--model",
        "resnet20",
        "--data",
        &train,
        "--outliers",
        &dtd,
        "--sample",
        "1500",
        "--epochs",
        "1",
        "--init",
        ce.join("model.safetensors").to_str().unwrap(),
        "--threads",
        "2",
        "--out-dir",
        mixoe.to_str().unwrap(),
    ]));
    let json = tmp.path().join("bench.json");
    ok(ood(&[
        "bench",
        &format!("{d}/benchmark.toml"),
        "--model",
        "resnet20",
        "--weights",
        mixoe.join("model.safetensors").to_str().unwrap(),
        "--detectors",
        "msp,knn",
        "--threads",
        "2",
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
        "--out-dir",
        tmp.path().join("bench").to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let acc = r["id_accuracy"].as_f64().unwrap();
    // 150 classes after one epoch on 1,500 images: above chance (1/150), far from perfect.
    assert!(acc > 1.0 / 150.0 && acc < 0.9, "ID accuracy {acc}");
    let rows = r["rows"].as_array().unwrap();
    for det in ["msp", "knn"] {
        let near = rows
            .iter()
            .find(|x| x["detector"] == det && x["dataset"] == "near")
            .unwrap_or_else(|| panic!("no {det} near row"));
        let a = near["auroc"].as_f64().unwrap();
        assert!(a > 0.3 && a < 0.8, "{det} near AUROC {a}");
    }
}
