//! Golden parity of Relation, SSD, CARef and CADRef with NumPy re-implementations of OpenOOD's
//! `relation` postprocessor (Neural Relation Graph's `get_relation`), of the SSD authors'
//! `eval_ssd.py` / `utils.py` (normalise, standardise, per-cluster
//! `np.linalg.pinv(np.cov(bias=True))`; the k-means partition re-implemented and checked against
//! scikit-learn's), of the CADRef authors' `CARef.py` / `CADRef.py` and of the LTS authors'
//! `lts.py`, and of OpenOOD's `openmax` (libMR's Weibull fit as the SciPy-solved MLE), on seeded
//! random data
//! (train 300 × 16 with 5 classes, test 40). Fixture and generator:
//! `tests/data/posthoc_reference_d.{json,py}`. Tolerance: `|a − b| ≤ 1e-4 · max(|b|, 1)`
//! (relative, with the score scale as the floor for values that cancel to near zero).

mod common;

use common::{assert_close, matrix, parse_cases};
use ndarray::{Array1, Array2};
use ood_core::{DetectorSpec, FeatureFile, Features, FitData, Head};
use serde_json::Value;

const NAMES: [&str; 5] = ["relation", "ssd", "caref", "cadref", "lts"];

/// The error message of fitting `spec` on `data` (panics if the fit succeeds).
fn fit_err(spec: &DetectorSpec, data: &Features, head: &Head) -> String {
    spec.as_detector()
        .fit(&data.into(), head)
        .err()
        .unwrap_or_else(|| panic!("{spec:?} fitted"))
        .to_string()
}

fn fixture_json() -> Value {
    common::fixture_json("posthoc_reference_d.json")
}

fn fixture() -> (Features, Features, Head, Vec<(DetectorSpec, Vec<f64>)>) {
    let j = fixture_json();
    (
        common::features(&j["train"]),
        common::features(&j["test"]),
        common::head(&j["head"]),
        parse_cases(&j["cases"]),
    )
}

fn check(spec: &DetectorSpec, data: &FitData<'_>, head: &Head, test: &Features, want: &[f64]) {
    let s = spec
        .as_detector()
        .fit(data, head)
        .unwrap_or_else(|e| panic!("{spec:?}: fit failed: {e}"))
        .score(test)
        .unwrap();
    assert_close(&format!("{spec:?}"), s.as_slice().unwrap(), want, 1.0);
}

#[test]
fn posthoc_d_detectors_match_reference_in_memory() {
    let (train, test, head, cases) = fixture();
    for n in NAMES {
        let of_n: Vec<&DetectorSpec> = cases
            .iter()
            .map(|(s, _)| s)
            .filter(|s| s.name() == n)
            .collect();
        let default = DetectorSpec::from_name(n, &[]).unwrap();
        assert!(of_n.contains(&&default), "fixture lacks the {n} default");
        // CARef has no parameters: its default is its only case.
        if !default.params().is_empty() {
            assert!(
                of_n.iter().any(|s| **s != default),
                "fixture lacks a non-default {n} case"
            );
        }
    }
    for (spec, want) in &cases {
        check(spec, &(&train).into(), &head, &test, want);
    }
}

#[test]
fn posthoc_d_detectors_match_reference_streamed_from_file() {
    // The same fits, reading the training features from a feature file.
    let (train, test, head, cases) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("train.safetensors");
    train.save(&p).unwrap();
    let file = FeatureFile::open(&p).unwrap();
    for (spec, want) in &cases {
        check(spec, &(&file).into(), &head, &test, want);
    }
}

#[test]
fn posthoc_d_defaults_work_on_small_data_and_reject_bad_input() {
    // 60 rows, d = 16: every default and sweep candidate fits and scores finitely; empty or
    // mis-shaped input errs. (SSD with 5 clusters, k-means on 60 rows, too.)
    let (train, test, head, _) = fixture();
    let small = train.slice(0, 60);
    for name in NAMES {
        let spec = DetectorSpec::from_name(name, &[]).unwrap();
        let extra = (name == "ssd")
            .then(|| DetectorSpec::from_name(name, &[("clusters".into(), "5".into())]).unwrap());
        for cand in std::iter::once(spec.clone())
            .chain(spec.sweep())
            .chain(extra)
        {
            let s = cand
                .as_detector()
                .fit(&(&small).into(), &head)
                .unwrap()
                .score(&test)
                .unwrap();
            assert!(s.iter().all(|v| v.is_finite()), "{cand:?}");
        }
        let sc = spec.as_detector().fit(&(&small).into(), &head).unwrap();
        assert!(sc.score(&test.slice(0, 0)).is_err(), "{name}: empty input");
        let other = Head::new(Array2::zeros((5, 15)), Array1::zeros(5)).unwrap();
        let wrong = Features::with_head(Array2::zeros((2, 15)), &other, None).unwrap();
        assert!(sc.score(&wrong).is_err(), "{name}: wrong d");
        // LTS has no fit statistics (like SCALE), so it fits on no data.
        assert_eq!(
            spec.as_detector()
                .fit(&(&train.slice(0, 0)).into(), &head)
                .is_err(),
            name != "lts",
            "{name}: empty fit"
        );
    }
}

#[test]
fn posthoc_d_bad_parameters_are_clear_errors() {
    let (train, _, head, _) = fixture();
    let fit = |name: &str, params: &[(&str, &str)]| {
        let p: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        fit_err(&DetectorSpec::from_name(name, &p).unwrap(), &train, &head)
    };
    let e = fit("relation", &[("pow", "-1")]);
    assert!(
        e.contains("relation pow must be finite and >= 0, got -1"),
        "{e}"
    );
    let e = fit("relation", &[("threshold", "-0.5")]);
    assert!(
        e.contains("relation threshold must be finite and >= 0, got -0.5"),
        "{e}"
    );
    let e = fit("ssd", &[("clusters", "0")]);
    assert!(e.contains("ssd clusters and max_iter must be >= 1"), "{e}");
    let e = fit("ssd", &[("clusters", "301")]);
    assert!(e.contains("ssd k-means (301 clusters)"), "{e}");
    // Labels are needed (and only read) with labels = true.
    let unlabelled = Features::new(train.embeddings.clone(), train.logits.clone(), None).unwrap();
    let spec = DetectorSpec::from_name("ssd", &[("labels".into(), "true".into())]).unwrap();
    let e = fit_err(&spec, &unlabelled, &head);
    assert!(e.contains("ssd"), "{e}");
    assert!(
        DetectorSpec::from_name("ssd", &[])
            .unwrap()
            .as_detector()
            .fit(&(&unlabelled).into(), &head)
            .is_ok()
    );
    let e = fit("lts", &[("percentile", "100")]);
    assert!(e.contains("lts percentile 100 keeps no activation"), "{e}");
    // A class no fit row is predicted as has no mean feature.
    let preds = train.predictions();
    let idx: Vec<usize> = (0..train.len()).filter(|&i| preds[i] == 3).collect();
    let one_class = train.select(&idx);
    for n in ["caref", "cadref"] {
        let e = fit_err(&DetectorSpec::from_name(n, &[]).unwrap(), &one_class, &head);
        assert!(e.contains(&format!("{n} mean feature of class 0")), "{e}");
    }
    // CADRef needs a positive mean logit score.
    let low = Features::new(train.embeddings.clone(), &train.logits - 100.0, None).unwrap();
    let e = fit_err(
        &DetectorSpec::from_name("cadref", &[("logit_method".into(), "max_logit".into())]).unwrap(),
        &low,
        &head,
    );
    assert!(e.contains("must be finite and > 0"), "{e}");
    for (name, k, v) in [
        ("cadref", "logit_method", "softmax"),
        ("lts", "percentile", "high"),
        ("caref", "k", "1"),
        ("relation", "pow", "big"),
        ("ssd", "clusters", "-3"),
        ("ssd", "k", "1"),
    ] {
        assert!(DetectorSpec::from_name(name, &[(k.into(), v.into())]).is_err());
    }
}

#[test]
fn posthoc_d_sweeps_needs_and_fit_sets() {
    let grid = |name: &str| {
        DetectorSpec::from_name(name, &[])
            .unwrap()
            .sweep()
            .iter()
            .map(|s| serde_json::Value::Object(s.params()))
            .collect::<Vec<_>>()
    };
    // relation.yml: pow_list [1, 2, 4, 6, 8].
    let pows: Vec<f64> = grid("relation")
        .iter()
        .map(|v| v["pow"].as_f64().unwrap())
        .collect();
    assert_eq!(pows, vec![1.0, 2.0, 4.0, 6.0, 8.0]);
    // ssd.yml sweeps only an unused noise: no grid. CARef and CADRef are not in OpenOOD.
    for n in ["ssd", "caref", "cadref", "lts"] {
        assert!(grid(n).is_empty(), "{n}");
    }
    let on_val = |n: &str| DetectorSpec::from_name(n, &[]).unwrap().fits_on_val();
    assert!(NAMES.iter().all(|n| !on_val(n)));
    let needs =
        |n: &str, p: &[(String, String)]| DetectorSpec::from_name(n, p).unwrap().needs().names();
    assert_eq!(needs("relation", &[]), vec!["features", "logits"]);
    assert_eq!(needs("ssd", &[]), vec!["features"]);
    assert_eq!(needs("caref", &[]), vec!["features", "logits"]);
    assert_eq!(needs("lts", &[]), vec!["features", "logits"]);
    assert_eq!(needs("cadref", &[]), vec!["features", "logits", "head"]);
    assert_eq!(
        needs("ssd", &[("labels".into(), "true".into())]),
        vec!["features", "labels"]
    );
    for n in NAMES {
        assert_eq!(
            DetectorSpec::from_name(n, &[]).unwrap().family(),
            "features"
        );
    }
}

#[test]
fn posthoc_d_relation_grid_scores_equal_per_candidate_fits() {
    // The one-pass pow grid gives what fitting each candidate gives.
    let (train, test, head, _) = fixture();
    let grid = DetectorSpec::from_name("relation", &[]).unwrap().sweep();
    let (val_id, val_ood) = (test.slice(0, 20), test.slice(20, 40));
    let fast = DetectorSpec::grid_val_scores(&grid, &(&train).into(), &head, &val_id, &val_ood)
        .expect("relation has a grid fast path");
    for (spec, got) in grid.iter().zip(fast) {
        let (id, ood) = got.unwrap();
        let sc = spec.as_detector().fit(&(&train).into(), &head).unwrap();
        assert_eq!(id, sc.score(&val_id).unwrap(), "{spec:?}");
        assert_eq!(ood, sc.score(&val_ood).unwrap(), "{spec:?}");
    }
}

/// OpenMax's fixture: the same rows with logits of a class-aligned head (the shared fixture's
/// random head leaves classes without a correctly predicted row), and its cases.
fn openmax_fixture() -> (Features, Features, Head, Vec<(DetectorSpec, Vec<f64>)>) {
    let (train, test, head, _) = fixture();
    let j = fixture_json();
    let om = &j["openmax"];
    let train = Features::new(
        train.embeddings.clone(),
        matrix(&om["train_logits"]),
        train.labels.clone(),
    )
    .unwrap();
    let test = Features::new(test.embeddings.clone(), matrix(&om["test_logits"]), None).unwrap();
    let cases = parse_cases(&om["cases"]);
    (train, test, head, cases)
}

#[test]
fn posthoc_d_openmax_matches_reference_in_memory_and_streamed() {
    let (train, test, head, cases) = openmax_fixture();
    let default = DetectorSpec::from_name("openmax", &[]).unwrap();
    assert!(cases.iter().any(|(s, _)| *s == default));
    assert!(cases.iter().filter(|(s, _)| *s != default).count() >= 2);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("train.safetensors");
    train.save(&p).unwrap();
    let file = FeatureFile::open(&p).unwrap();
    for (spec, want) in &cases {
        check(spec, &(&train).into(), &head, &test, want);
        check(spec, &(&file).into(), &head, &test, want);
    }
}

#[test]
fn posthoc_d_openmax_small_data_and_errors() {
    let (train, test, head, _) = openmax_fixture();
    let spec = DetectorSpec::from_name("openmax", &[]).unwrap();
    let small = train.slice(0, 60);
    let sc = spec.as_detector().fit(&(&small).into(), &head).unwrap();
    assert!(sc.score(&test).unwrap().iter().all(|v| v.is_finite()));
    assert!(sc.score(&test.slice(0, 0)).is_err());
    let other = Head::new(Array2::zeros((4, 16)), Array1::zeros(4)).unwrap();
    let wrong = Features::with_head(Array2::zeros((2, 16)), &other, None).unwrap();
    assert!(sc.score(&wrong).is_err(), "wrong number of classes");
    assert!(
        spec.as_detector()
            .fit(&(&train.slice(0, 0)).into(), &head)
            .is_err()
    );
    // Labels are required; a class without a correctly predicted row is named.
    let unlabelled = Features::new(train.embeddings.clone(), train.logits.clone(), None).unwrap();
    let e = fit_err(&spec, &unlabelled, &head);
    assert!(e.contains("openmax"), "{e}");
    let (random_head_train, _, _, _) = fixture();
    let e = fit_err(&spec, &random_head_train, &head);
    assert!(
        e.contains("openmax mean activation vector of class 1"),
        "{e}"
    );
    for (k, v) in [("tailsize", "1"), ("alpha", "0")] {
        let e = fit_err(
            &DetectorSpec::from_name("openmax", &[(k.into(), v.into())]).unwrap(),
            &train,
            &head,
        );
        assert!(
            e.contains("openmax tailsize must be >= 2 and alpha >= 1"),
            "{e}"
        );
    }
    assert!(DetectorSpec::from_name("openmax", &[("alpha".into(), "-1".into())]).is_err());
    assert!(
        DetectorSpec::from_name("openmax", &[])
            .unwrap()
            .sweep()
            .is_empty()
    );
    assert_eq!(
        DetectorSpec::from_name("openmax", &[])
            .unwrap()
            .needs()
            .names(),
        vec!["logits", "labels"]
    );
    assert_eq!(
        DetectorSpec::from_name("openmax", &[]).unwrap().family(),
        "logits"
    );
}
