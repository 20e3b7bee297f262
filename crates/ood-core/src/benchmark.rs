//! Running a benchmark: fit each detector once, score the ID test set and every OOD set, and turn
//! the scores into metrics rows with OpenOOD-style near/far means.
//!
//! A benchmark is data, not a trait: an ID test set plus named OOD sets, each optionally in the
//! `near` or `far` group. Means are the **unweighted mean of the per-dataset metrics** within a
//! group (OpenOOD v1.5, spec section 2.4): sets are never pooled and set sizes do not matter.
//!
//! [`sweep`] is OpenOOD's automatic parameter search (APS) on cached features: every candidate of
//! a detector's grid is fitted and scored on an ID-val / OOD-val pair, the highest AUROC wins with a
//! strict `>` (ties keep the earliest candidate), and a grid whose candidates all produce identical
//! scores is flagged, because such a search does nothing.

use crate::detector::{Scorer, SideInputs};
use crate::detectors::DetectorSpec;
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use crate::metrics::{self, Convention, Metrics};
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// The OpenOOD grouping of OOD sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Semantically close to the ID classes.
    Near,
    /// Far from the ID data.
    Far,
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Group::Near => "near",
            Group::Far => "far",
        })
    }
}

/// One named OOD set.
#[derive(Debug, Clone)]
pub struct OodSet {
    /// Display name (e.g. `tin`, `mnist`).
    pub name: String,
    /// Near or far (None: reported without a group mean).
    pub group: Option<Group>,
    /// Its features.
    pub features: Features,
}

/// Everything a benchmark run needs besides the detector list.
#[derive(Debug, Clone, Copy)]
pub struct BenchmarkInput<'a> {
    /// In-distribution fit data (OpenOOD: ID train).
    pub fit: FitData<'a>,
    /// Optional ID validation data for detectors that fit on it (ReAct, KLM, Residual in OpenOOD).
    pub fit_val: Option<FitData<'a>>,
    /// The classifier head.
    pub head: &'a Head,
    /// ID test set.
    pub id_test: &'a Features,
    /// OOD sets, in report order.
    pub ood: &'a [OodSet],
    /// Side inputs of the detectors that need them (NegLabel's negatives).
    pub side: SideInputs<'a>,
}

/// One metrics row: one detector on one OOD set, or a group mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// OOD set name, or `nearood` / `farood` for group means.
    pub dataset: String,
    /// Group of the set (`near`/`far`), absent when ungrouped.
    pub group: Option<Group>,
    /// Detector name.
    pub detector: String,
    /// AUROC (fraction).
    pub auroc: f64,
    /// FPR at 95% TPR under the run's convention (fraction).
    pub fpr95: f64,
    /// AUPR with ID as positive (fraction).
    pub aupr_in: f64,
    /// AUPR with OOD as positive (fraction).
    pub aupr_out: f64,
    /// True for a near/far mean row.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_mean: bool,
}

/// Scores kept for reports (ROC curves, histograms).
#[derive(Debug, Clone)]
pub struct DetectorScores {
    /// Detector name.
    pub detector: String,
    /// Scores of the ID test set.
    pub id: Array1<f32>,
    /// Scores of each OOD set, in input order.
    pub ood: Vec<(String, Array1<f32>)>,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct BenchmarkResult {
    /// Classifier accuracy on the labelled ID test set (first-maximum logit), when labelled.
    pub id_accuracy: Option<f64>,
    /// The metric convention used.
    pub convention: Convention,
    /// Per-dataset rows followed by group means, detector by detector.
    pub rows: Vec<Row>,
    /// The detectors as run (resolved parameters).
    pub detectors: Vec<DetectorSpec>,
    /// Scores per detector.
    pub scores: Vec<DetectorScores>,
    /// Detectors that could not be fitted on this benchmark's data, with the reason (e.g. SHE
    /// when a class has no correctly predicted fit sample); the others ran.
    pub skipped: Vec<(String, String)>,
}

impl BenchmarkResult {
    /// Appends the rows, scores and detectors of a run on other inputs of the same benchmark
    /// (e.g. vision-language detectors on a text encoder's embeddings of the same images); the
    /// ID accuracy and convention stay this run's.
    pub fn merge(&mut self, other: BenchmarkResult) {
        self.rows.extend(other.rows);
        self.scores.extend(other.scores);
        self.detectors.extend(other.detectors);
        self.skipped.extend(other.skipped);
    }
}

impl Row {
    fn new(dataset: &str, group: Option<Group>, detector: &str, m: &Metrics) -> Row {
        Row {
            dataset: dataset.to_string(),
            group,
            detector: detector.to_string(),
            auroc: m.auroc,
            fpr95: m.fpr95,
            aupr_in: m.aupr_in,
            aupr_out: m.aupr_out,
            is_mean: false,
        }
    }
}

/// Fits `spec` on the data it is meant to fit on: ID val when the detector asks for it and it is
/// given, else the fit data.
pub fn fit_detector(spec: &DetectorSpec, input: &BenchmarkInput<'_>) -> Result<Box<dyn Scorer>> {
    let data = match (spec.fits_on_val(), input.fit_val) {
        (true, Some(val)) => val,
        _ => input.fit,
    };
    spec.as_detector().fit_with(&data, input.head, &input.side)
}

/// Group means (unweighted, per metric) of the per-dataset rows of one detector.
pub fn group_means(rows: &[Row]) -> Vec<Row> {
    let mut out = Vec::new();
    for group in [Group::Near, Group::Far] {
        let members: Vec<&Row> = rows
            .iter()
            .filter(|r| !r.is_mean && r.group == Some(group))
            .collect();
        if members.is_empty() {
            continue;
        }
        let n = members.len() as f64;
        let mean = |f: fn(&Row) -> f64| members.iter().map(|r| f(r)).sum::<f64>() / n;
        out.push(Row {
            dataset: format!("{group}ood"),
            group: Some(group),
            detector: members[0].detector.clone(),
            auroc: mean(|r| r.auroc),
            fpr95: mean(|r| r.fpr95),
            aupr_in: mean(|r| r.aupr_in),
            aupr_out: mean(|r| r.aupr_out),
            is_mean: true,
        });
    }
    out
}

/// Runs every detector on the benchmark. `progress` is called with a short message before each
/// step (fit, then one scoring per set). A detector that cannot be fitted on this data is
/// recorded in [`BenchmarkResult::skipped`] and the others run; when none can be fitted, that is
/// the error.
pub fn run(
    input: &BenchmarkInput<'_>,
    detectors: &[DetectorSpec],
    convention: Convention,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchmarkResult> {
    if input.ood.is_empty() {
        return Err(Error::TooFewSamples {
            what: "OOD sets in the benchmark".into(),
            need: 1,
            got: 0,
        });
    }
    if detectors.is_empty() {
        return Err(Error::InvalidParameter("no detectors to run".into()));
    }
    let mut rows = Vec::new();
    let mut scores = Vec::new();
    let mut ran = Vec::new();
    let mut skipped = Vec::new();
    for spec in detectors {
        let name = spec.name();
        if let Some(why) = missing_probe(spec, input) {
            skipped.push((name.to_string(), format!("cannot score: {why}")));
            continue;
        }
        progress(&format!("{name}: fit"));
        let scorer = match fit_detector(spec, input) {
            Ok(s) => s,
            Err(e) => {
                skipped.push((name.to_string(), format!("fitting failed: {e}")));
                continue;
            }
        };
        ran.push(spec.clone());
        progress(&format!("{name}: score ID test"));
        let id_scores = scorer
            .score(input.id_test)
            .map_err(|e| with_context(e, name, "ID test"))?;
        let mut det_rows = Vec::new();
        let mut ood_scores = Vec::new();
        for set in input.ood {
            progress(&format!("{name}: score {}", set.name));
            let s = scorer
                .score(&set.features)
                .map_err(|e| with_context(e, name, &set.name))?;
            let m = metrics::evaluate(
                id_scores.as_slice().expect("fresh array"),
                s.as_slice().expect("fresh array"),
                convention,
            )?;
            det_rows.push(Row::new(&set.name, set.group, name, &m));
            ood_scores.push((set.name.clone(), s));
        }
        let means = group_means(&det_rows);
        rows.extend(det_rows);
        rows.extend(means);
        scores.push(DetectorScores {
            detector: name.to_string(),
            id: id_scores,
            ood: ood_scores,
        });
    }
    if ran.is_empty() {
        let reasons: Vec<String> = skipped
            .iter()
            .map(|(d, e)| format!("detector {d}: {e}"))
            .collect();
        return Err(Error::InvalidParameter(reasons.join("; ")));
    }
    Ok(BenchmarkResult {
        id_accuracy: input.id_test.accuracy(),
        convention,
        rows,
        detectors: ran,
        scores,
        skipped,
    })
}

/// Why `spec` cannot score `input`: the first probe tensor ([`crate::probes`]) it needs that the
/// ID test set or an OOD set lacks (features extracted without `--with`).
fn missing_probe(spec: &DetectorSpec, input: &BenchmarkInput<'_>) -> Option<String> {
    let sets = std::iter::once(("ID test", input.id_test))
        .chain(input.ood.iter().map(|s| (s.name.as_str(), &s.features)));
    for (set, f) in sets {
        for p in spec.probes() {
            if !f.has_probe(&p) {
                let e = Error::MissingProbe {
                    detector: spec.name().into(),
                    tensor: p.tensor_name(),
                };
                return Some(format!("set {set}: {e}"));
            }
        }
    }
    None
}

fn with_context(e: Error, detector: &str, set: &str) -> Error {
    match e {
        Error::DimensionMismatch {
            what,
            expected,
            got,
        } => Error::DimensionMismatch {
            what: format!("{what} ({detector} on {set})"),
            expected,
            got,
        },
        Error::NonFinite { what } => Error::NonFinite {
            what: format!("{what} on {set}"),
        },
        e => e,
    }
}

/// One candidate of a parameter search and its validation AUROC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Candidate {
    /// The candidate's parameters.
    pub spec: DetectorSpec,
    /// AUROC on ID-val vs OOD-val, or the reason it could not be evaluated.
    pub auroc: std::result::Result<f64, String>,
}

/// The outcome of [`sweep`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepOutcome {
    /// The winner (the input spec when the grid is empty or has one candidate).
    pub chosen: DetectorSpec,
    /// Every candidate in OpenOOD order with its AUROC.
    pub candidates: Vec<Candidate>,
    /// True when at least two candidates were scored and all gave identical scores: the search
    /// did nothing (e.g. a parameter with no effect).
    pub no_effect: bool,
}

/// OpenOOD's APS for one detector: fit every candidate, score ID-val and OOD-val, choose the
/// highest AUROC with a strict `>` (ties keep the first). Candidates that fail to fit (e.g. a ViM
/// dimension larger than the features) are recorded and skipped.
pub fn sweep(
    spec: &DetectorSpec,
    input: &BenchmarkInput<'_>,
    val_id: &Features,
    val_ood: &Features,
) -> Result<SweepOutcome> {
    let grid = spec.sweep();
    if grid.len() <= 1 {
        return Ok(SweepOutcome {
            chosen: grid.into_iter().next().unwrap_or_else(|| spec.clone()),
            candidates: vec![],
            no_effect: false,
        });
    }
    let mut candidates = Vec::with_capacity(grid.len());
    let mut best: Option<(f64, DetectorSpec)> = None;
    let mut first_scores: Option<(Array1<f32>, Array1<f32>)> = None;
    let mut all_same = true;
    let mut scored = 0;
    let fit = match (spec.fits_on_val(), input.fit_val) {
        (true, Some(val)) => val,
        _ => input.fit,
    };
    let results = match DetectorSpec::grid_val_scores(&grid, &fit, input.head, val_id, val_ood) {
        Some(r) => r,
        None => grid
            .iter()
            .map(|cand| {
                fit_detector(cand, input).and_then(|s| Ok((s.score(val_id)?, s.score(val_ood)?)))
            })
            .collect(),
    };
    for (cand, result) in grid.into_iter().zip(results) {
        match result {
            Ok((si, so)) => {
                let a =
                    metrics::auroc(si.as_slice().expect("fresh"), so.as_slice().expect("fresh"))?;
                scored += 1;
                match &first_scores {
                    None => first_scores = Some((si, so)),
                    Some((fi, fo)) => all_same &= *fi == si && *fo == so,
                }
                if best.as_ref().is_none_or(|(b, _)| a > *b) {
                    best = Some((a, cand.clone()));
                }
                candidates.push(Candidate {
                    spec: cand,
                    auroc: Ok(a),
                });
            }
            Err(e) => candidates.push(Candidate {
                spec: cand,
                auroc: Err(e.to_string()),
            }),
        }
    }
    let chosen = best.map(|(_, s)| s).ok_or_else(|| {
        Error::InvalidParameter(format!(
            "{}: no candidate of the search grid could be fitted",
            spec.name()
        ))
    })?;
    Ok(SweepOutcome {
        chosen,
        candidates,
        no_effect: scored >= 2 && all_same,
    })
}
