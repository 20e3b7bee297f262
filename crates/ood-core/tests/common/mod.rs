//! Shared loader of the golden fixtures `tests/data/posthoc_reference_*.json`: the head, the
//! train and test features (4-decimal values, exact as float32) and the `(spec, scores)` cases,
//! and the golden tolerance checks. Used by `posthoc_golden_d.rs`, `_e.rs` and `_f.rs`
//! (`mod common;`); the older golden files carry their own copies.
#![allow(dead_code)] // each test crate uses its own part

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

/// The head of a fixture (`{"weight": .., "bias": ..}`).
pub fn head(v: &Value) -> Head {
    Head::new(
        matrix(&v["weight"]),
        Array1::from(serde_json::from_value::<Vec<f32>>(v["bias"].clone()).unwrap()),
    )
    .unwrap()
}

/// A fixture set (`{"features": .., "logits": .., "labels"?: ..}`; absent or null labels: none).
pub fn features(v: &Value) -> Features {
    let labels: Option<Vec<i64>> = v
        .get("labels")
        .filter(|l| !l.is_null())
        .map(|l| serde_json::from_value(l.clone()).unwrap());
    Features::new(matrix(&v["features"]), matrix(&v["logits"]), labels).unwrap()
}

/// The fixture's head, train features (labelled when it has labels) and test features
/// (unlabelled).
pub fn head_train_test(j: &Value) -> (Head, Features, Features) {
    let test = Features::new(
        matrix(&j["test"]["features"]),
        matrix(&j["test"]["logits"]),
        None,
    )
    .unwrap();
    (head(&j["head"]), features(&j["train"]), test)
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

/// Asserts `|a − b| ≤ 1e-4 · max(|b|, floor)` for every score (relative; `floor` is the score
/// scale below which the tolerance stops shrinking, 0 for purely relative).
pub fn assert_close(what: &str, got: &[f32], want: &[f64], floor: f64) {
    assert_eq!(got.len(), want.len(), "{what}: number of scores");
    let worst = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| (a as f64 - b).abs() / b.abs().max(floor))
        .fold(0.0f64, f64::max);
    eprintln!("{what}: worst scaled error {worst:.2e}");
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a as f64 - b).abs() <= 1e-4 * b.abs().max(floor),
            "{what} row {i}: oodkit {a} vs reference {b}"
        );
    }
}
