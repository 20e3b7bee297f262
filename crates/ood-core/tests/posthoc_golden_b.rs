//! Golden parity of the statistics / nearest-neighbour detectors (KNN, Mahalanobis and its
//! ReweightOOD `normalize` variant, RMDS, ViM, Residual, NNGuide) with NumPy, scikit-learn and
//! faiss-cpu re-implementations of the OpenOOD postprocessors, on seeded random data
//! (train 300 × 16 with 5 classes, test 40). Fixture and generator: `tests/data/
//! posthoc_reference_b.{json,py}`. Tolerance: `|a − b| ≤ 1e-4 · max(|b|, 1)` (relative, with the
//! score scale as the floor for values that cancel to near zero).

use ndarray::{Array1, Array2};
use ood_core::{DetectorSpec, FeatureFile, Features, FitData, Head};
use serde_json::Value;

fn matrix(v: &Value) -> Array2<f32> {
    let rows: Vec<Vec<f32>> = serde_json::from_value(v.clone()).expect("matrix");
    let (n, d) = (rows.len(), rows[0].len());
    Array2::from_shape_vec((n, d), rows.into_iter().flatten().collect()).expect("rectangular")
}

fn fixture() -> (Features, Features, Head, Vec<(DetectorSpec, Vec<f64>)>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/posthoc_reference_b.json"
    );
    let j: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).unwrap();
    let head = Head::new(
        matrix(&j["head"]["weight"]),
        Array1::from(serde_json::from_value::<Vec<f32>>(j["head"]["bias"].clone()).unwrap()),
    )
    .unwrap();
    let labels: Vec<i64> = serde_json::from_value(j["train"]["labels"].clone()).unwrap();
    let train = Features::new(
        matrix(&j["train"]["features"]),
        matrix(&j["train"]["logits"]),
        Some(labels),
    )
    .unwrap();
    let test = Features::new(
        matrix(&j["test"]["features"]),
        matrix(&j["test"]["logits"]),
        None,
    )
    .unwrap();
    let cases = j["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                serde_json::from_value::<DetectorSpec>(c["spec"].clone()).expect("spec parses"),
                serde_json::from_value::<Vec<f64>>(c["scores"].clone()).unwrap(),
            )
        })
        .collect();
    (train, test, head, cases)
}

fn check(spec: &DetectorSpec, data: &FitData<'_>, head: &Head, test: &Features, want: &[f64]) {
    let s = spec
        .as_detector()
        .fit(data, head)
        .unwrap_or_else(|e| panic!("{spec:?}: fit failed: {e}"))
        .score(test)
        .unwrap();
    assert_eq!(s.len(), want.len());
    let worst = s
        .iter()
        .zip(want)
        .map(|(&a, &b)| (a as f64 - b).abs() / b.abs().max(1.0))
        .fold(0.0f64, f64::max);
    eprintln!("{spec:?}: worst scaled error {worst:.2e}");
    for (i, (&a, &b)) in s.iter().zip(want).enumerate() {
        assert!(
            (a as f64 - b).abs() <= 1e-4 * b.abs().max(1.0),
            "{spec:?} row {i}: oodkit {a} vs reference {b}"
        );
    }
}

#[test]
fn posthoc_b_detectors_match_reference_in_memory() {
    let (train, test, head, cases) = fixture();
    let names: Vec<&str> = cases.iter().map(|(s, _)| s.name()).collect();
    for n in ["knn", "mahalanobis", "rmds", "vim", "residual", "nn_guide"] {
        assert!(names.contains(&n), "fixture lacks {n}");
    }
    for (spec, want) in &cases {
        check(spec, &(&train).into(), &head, &test, want);
    }
}

#[test]
fn posthoc_b_detectors_match_reference_streamed_from_file() {
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
fn posthoc_b_defaults_work_on_small_data_and_reject_bad_input() {
    // 60 rows, d = 16: every default fits and scores finitely; empty or mis-shaped input errs.
    let (train, test, head, _) = fixture();
    let small = train.slice(0, 60);
    for name in ["knn", "mahalanobis", "rmds", "vim", "residual", "nn_guide"] {
        let spec = DetectorSpec::from_name(name, &[]).unwrap();
        let sc = spec.as_detector().fit(&(&small).into(), &head).unwrap();
        let s = sc.score(&test).unwrap();
        assert!(s.iter().all(|v| v.is_finite()), "{name}");
        assert!(sc.score(&test.slice(0, 0)).is_err(), "{name}: empty input");
        let other = Head::new(Array2::zeros((5, 15)), Array1::zeros(5)).unwrap();
        let wrong = Features::with_head(Array2::zeros((2, 15)), &other, None).unwrap();
        assert!(sc.score(&wrong).is_err(), "{name}: wrong d");
        assert!(
            spec.as_detector()
                .fit(&(&train.slice(0, 0)).into(), &head)
                .is_err(),
            "{name}: empty fit"
        );
    }
    // The ViM sweep candidates are both invalid at d = 16 and fail cleanly.
    for c in DetectorSpec::from_name("vim", &[]).unwrap().sweep() {
        assert!(c.as_detector().fit(&(&small).into(), &head).is_err());
    }
    assert_eq!(
        DetectorSpec::from_name("knn", &[]).unwrap().sweep().len(),
        5
    );
}
