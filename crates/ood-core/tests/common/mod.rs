//! Shared loader of the golden fixtures `tests/data/posthoc_reference_*.json`: the head, the
//! train and test features (4-decimal values, exact as float32) and the `(spec, scores)` cases,
//! and the golden tolerance check. Used by `posthoc_golden_f.rs` (`mod common;`); the older
//! golden files carry their own copies.

use ndarray::{Array1, Array2};
use ood_core::{DetectorSpec, Features, Head, Scorer};
use serde_json::Value;

/// A JSON list of rows as an `(n, d)` f32 matrix.
pub fn matrix(v: &Value) -> Array2<f32> {
    let rows: Vec<Vec<f32>> = serde_json::from_value(v.clone()).expect("matrix");
    let (n, d) = (rows.len(), rows[0].len());
    Array2::from_shape_vec((n, d), rows.into_iter().flatten().collect()).expect("rectangular")
}

/// A JSON list of rows as an `(n, d)` f64 matrix.
pub fn matrix_f64(v: &Value) -> Array2<f64> {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).expect("matrix");
    let (n, d) = (rows.len(), rows[0].len());
    Array2::from_shape_vec((n, d), rows.into_iter().flatten().collect()).expect("rectangular")
}

/// The parsed fixture `tests/data/<name>`.
pub fn fixture_json(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("JSON")
}

/// The fixture's head, train features (labelled when it has labels) and test features.
pub fn head_train_test(j: &Value) -> (Head, Features, Features) {
    let head = Head::new(
        matrix(&j["head"]["weight"]),
        Array1::from(serde_json::from_value::<Vec<f32>>(j["head"]["bias"].clone()).unwrap()),
    )
    .unwrap();
    let labels: Option<Vec<i64>> = serde_json::from_value(j["train"]["labels"].clone()).unwrap();
    let train = Features::new(
        matrix(&j["train"]["features"]),
        matrix(&j["train"]["logits"]),
        labels,
    )
    .unwrap();
    let test = Features::new(
        matrix(&j["test"]["features"]),
        matrix(&j["test"]["logits"]),
        None,
    )
    .unwrap();
    (head, train, test)
}

/// The `(spec, scores)` cases of a fixture section.
pub fn parse_cases(v: &Value) -> Vec<(DetectorSpec, Vec<f64>)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                serde_json::from_value::<DetectorSpec>(c["spec"].clone()).expect("spec parses"),
                serde_json::from_value::<Vec<f64>>(c["scores"].clone()).unwrap(),
            )
        })
        .collect()
}

/// Asserts `|a − b| ≤ tol · max(|b|, 1)` for every score of `scorer` on `test` (relative, with
/// the score scale as the floor for values that cancel to near zero).
pub fn assert_scores(what: &str, scorer: &dyn Scorer, test: &Features, want: &[f64], tol: f64) {
    let s = scorer.score(test).unwrap();
    assert_eq!(s.len(), want.len(), "{what}");
    let worst = s
        .iter()
        .zip(want)
        .map(|(&a, &b)| (a as f64 - b).abs() / b.abs().max(1.0))
        .fold(0.0f64, f64::max);
    eprintln!("{what}: worst scaled error {worst:.2e}");
    for (i, (&a, &b)) in s.iter().zip(want).enumerate() {
        assert!(
            (a as f64 - b).abs() <= tol * b.abs().max(1.0),
            "{what} row {i}: oodkit {a} vs reference {b}"
        );
    }
}
