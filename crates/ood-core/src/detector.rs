//! The two traits every post-hoc method implements.
//!
//! A [`Detector`] is hyper-parameters only. [`Detector::fit`] sees in-distribution fit data (and
//! the classifier [`Head`]) and returns a [`Scorer`], the fitted state. A scorer maps features to
//! one score per row, and **a higher score always means more in-distribution**.

use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use ndarray::{Array1, Array2};

/// Data a detector fits on besides the ID features and the head: side inputs are data passed to
/// [`Detector::fit_with`], never hyper-parameters (a detector's parameters stay what its search
/// grid and its config serialise).
#[derive(Debug, Clone, Copy, Default)]
pub struct SideInputs<'a> {
    /// NegLabel's mined negative-label text embeddings `(M, d)`, in mined order.
    pub negatives: Option<&'a Array2<f32>>,
    /// OOD validation features (OpenOOD's OOD `val` split): GROOD averages its noise prototype
    /// from them. Runners pass the OOD-val set of the run when it has one.
    pub ood_val: Option<&'a Features>,
}

/// Hyper-parameters of a post-hoc detector.
pub trait Detector: std::fmt::Debug + Send + Sync {
    /// Fits on in-distribution data and returns the fitted scorer. Validation of the
    /// hyper-parameters happens here.
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>>;

    /// [`Detector::fit`] with side inputs, for the detectors that need them (NegLabel, GROOD);
    /// the others ignore them.
    fn fit_with(
        &self,
        data: &FitData<'_>,
        head: &Head,
        side: &SideInputs<'_>,
    ) -> Result<Box<dyn Scorer>> {
        let _ = side;
        self.fit(data, head)
    }
}

/// A fitted detector. Higher score = more in-distribution.
pub trait Scorer: Send + Sync {
    /// One score per row of `x`. Errors on empty input or on features whose shape does not match
    /// what the scorer was fitted on.
    fn score(&self, x: &Features) -> Result<Array1<f32>>;
}

/// Checks that `x` is non-empty and matches the head's feature dimension and class count.
pub fn check_input(x: &Features, head: &Head) -> Result<()> {
    if x.is_empty() {
        return Err(Error::TooFewSamples {
            what: "scoring".into(),
            need: 1,
            got: 0,
        });
    }
    head.check(x)
}

/// Checks that fit data is non-empty and matches the head.
pub fn check_fit_data(data: &FitData<'_>, head: &Head, need: usize) -> Result<()> {
    if data.len() < need {
        return Err(Error::TooFewSamples {
            what: "fitting".into(),
            need,
            got: data.len(),
        });
    }
    if data.dim() != head.dim() {
        return Err(Error::dim(
            "feature dimension (fit data vs head)",
            head.dim(),
            data.dim(),
        ));
    }
    if data.num_classes() != head.num_classes() {
        return Err(Error::dim(
            "number of classes (fit data vs head)",
            head.num_classes(),
            data.num_classes(),
        ));
    }
    Ok(())
}

/// Checks that a score vector is finite (a detector whose arithmetic overflowed must say so).
pub fn check_scores(detector: &str, scores: Array1<f32>) -> Result<Array1<f32>> {
    if scores.iter().all(|s| s.is_finite()) {
        Ok(scores)
    } else {
        Err(Error::NonFinite {
            what: format!("{detector} scores"),
        })
    }
}

/// `log Σ exp(v)` in f64, stable.
pub fn logsumexp(v: &[f32]) -> f64 {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
}

/// `ln(p / (1 − p))` of the largest softmax probability `p` of `v / t`, in f64 without ever
/// forming `p`: `−ln Σ_{j≠top} exp((v_j − v_top) / t)`. The same ranking as `p` itself, but
/// where `p` rounds to 1 (a confident sample: `1 − p` below 1e-16 in f64, 6e-8 in f32) this is
/// still the gap between the top two scaled values, so no ranking is lost. `+∞` for one value.
pub fn max_softmax_log_odds(v: impl Iterator<Item = f64> + Clone, t: f64) -> f64 {
    let (top, vt) =
        v.clone().enumerate().fold(
            (0, f64::NEG_INFINITY),
            |b, (i, x)| if x > b.1 { (i, x) } else { b },
        );
    let rest = v
        .enumerate()
        .filter(|&(i, _)| i != top)
        .map(|(_, x)| (x - vt) / t);
    let m = rest.clone().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return f64::INFINITY;
    }
    -(m + rest.map(|x| (x - m).exp()).sum::<f64>().ln())
}

/// Softmax of one row in f64.
pub fn softmax(v: &[f32]) -> Vec<f64> {
    let lse = logsumexp(v);
    v.iter().map(|&x| (x as f64 - lse).exp()).collect()
}
