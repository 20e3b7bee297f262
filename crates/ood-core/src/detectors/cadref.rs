//! CADRef: class-aware decoupled relative feature (Ling, Chang, Zhao, Zhao, Chow & Deng, "CADRef:
//! Robust Out-of-Distribution Detection via Class-Aware Decoupled Relative Feature Leveraging",
//! CVPR 2025, arXiv:2503.00325, <https://arxiv.org/abs/2503.00325>; authors' code
//! `LingAndZero/CADRef` `ood_methods/CADRef.py`). Not in OpenOOD.
//!
//! Fit (ID-train, no labels): `μ_c` = mean feature of the fit rows **predicted** `c` (as
//! [`Caref`](super::Caref)), and `S̄` = the mean logit score `S(z)` over all fit rows.
//!
//! Score with `ĉ = argmax z`, `δ = h − μ_ĉ` and `σ = sign(w_ĉ)` (the signs of the predicted
//! class's head weights, `sign(0) = 0`): the relative error is split by whether a deviation
//! raises or lowers the predicted logit,
//! `E⁺ = Σ_j max(σ_j δ_j, 0) / ‖h‖₁`, `E⁻ = Σ_j max(−σ_j δ_j, 0) / ‖h‖₁`, and
//! `s(h) = −(E⁺ / S(z) + E⁻ / S̄)`. Higher = more in-distribution.
//!
//! `logit_method` picks `S` (the authors' `--logit_method`): `energy` (default, the authors'
//! default: `log Σ exp z`), `max_logit` (`max z`), `msp` (`max softmax z`) or `gen` (`1 / G`,
//! GEN's generalized entropy `G = Σ p^γ (1 − p)^γ` over the `M` largest probabilities with
//! `γ = 0.1`, `M = max(⌊C/10⌋, 10)`, as the authors' `gen`). No sweep.
//!
//! Differences from the authors' code: a class that no fit row is predicted as is an `Err`
//! naming it (theirs: a NaN mean); a zero feature (`‖h‖₁ = 0`) or `S(z) = 0` gives a non-finite
//! score, which is an `Err`; `S̄` must be `> 0` (an error otherwise: the formula assumes positive
//! logit scores, as energies of a trained classifier are). `1 − p` of GEN's largest probability
//! is the sum of the others (as [`Gen`](super::Gen)), so confident samples keep their ranking.
//! Fit streams the data (`kernels/predicted_means.rs`); scores are computed in f64. Checked
//! against NumPy (`tests/data/posthoc_reference_d.py`, `tests/posthoc_golden_d.rs`) and by hand
//! below.

use super::DetectorParams;
use super::caref::empty_class;
use super::r#gen::generalized_entropy;
use crate::detector::{Detector, Scorer, check_fit_data, logsumexp};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use crate::kernels::predicted_means::{Rows, predicted_class_means, score_by_prediction};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// The logit score `S(z)` that scales CADRef's positive error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogitMethod {
    /// `log Σ exp z` (the authors' default).
    #[default]
    Energy,
    /// `max z`.
    MaxLogit,
    /// `max softmax(z)`.
    Msp,
    /// `1 / G`, GEN's generalized entropy with `γ = 0.1`, `M = max(⌊C/10⌋, 10)`.
    Gen,
}

impl LogitMethod {
    /// `S(z)` in f64.
    fn score(self, z: &[f32]) -> f64 {
        match self {
            LogitMethod::Energy => logsumexp(z),
            LogitMethod::MaxLogit => z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64,
            LogitMethod::Msp => {
                let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                1.0 / z.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>()
            }
            LogitMethod::Gen => 1.0 / generalized_entropy(z, 0.1, (z.len() / 10).max(10)),
        }
    }
}

/// Relative feature error to the predicted class's mean, decoupled by the class weights' signs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cadref {
    /// The logit score `S` (energy, as the authors' default).
    pub logit_method: LogitMethod,
}

#[derive(Debug)]
struct CadrefScorer {
    method: LogitMethod,
    /// `(c, d)` mean fit feature per predicted class.
    means: Array2<f64>,
    /// `S̄`, the mean fit logit score.
    mean_score: f64,
    head: Head,
}

impl Detector for Cadref {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        check_fit_data(data, head, 1)?;
        let method = self.logit_method;
        let mut total = 0.0f64;
        let means = predicted_class_means(
            data,
            head,
            Rows::Features,
            |chunk, i, _| {
                let z = chunk.logits.row(i);
                total += method.score(z.as_slice().expect("standard-layout logits"));
                Ok(true)
            },
            |k| empty_class("cadref", k),
        )?;
        let mean_score = total / data.len() as f64;
        if !(mean_score > 0.0 && mean_score.is_finite()) {
            return Err(Error::InvalidParameter(format!(
                "cadref: the mean {method:?} logit score of the fit data must be finite and > 0, \
                 got {mean_score}"
            )));
        }
        Ok(Box::new(CadrefScorer {
            method,
            means,
            mean_score,
            head: head.clone(),
        }))
    }
}

impl Scorer for CadrefScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        score_by_prediction(x, &self.head, "cadref", |c, h, z| {
            let (mut pos, mut neg, mut l1) = (0.0f64, 0.0f64, 0.0f64);
            for ((&v, &m), &w) in h.iter().zip(self.means.row(c)).zip(self.head.weight.row(c)) {
                let sg = if w > 0.0 {
                    1.0
                } else if w < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                let e = (v as f64 - m) * sg;
                if e > 0.0 {
                    pos += e;
                } else {
                    neg -= e;
                }
                l1 += (v as f64).abs();
            }
            let sz = self
                .method
                .score(z.as_slice().expect("standard-layout logits"));
            -(pos / l1 / sz + neg / l1 / self.mean_score)
        })
    }
}

impl DetectorParams for Cadref {
    const NAME: &'static str = "cadref";
    const ABOUT: &'static str = "relative feature error to the predicted class's mean, decoupled by weight signs and scaled by a logit score (Ling et al., CVPR'25)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn cadref_matches_hand_computation() {
        // Head rows w0 = (1, −1), w1 = (0, 1); zero bias. Fit rows (3, 0) → z = (3, 0), class 0;
        // (1, 0) → (1, 0), class 0; (0, 2) → (−2, 2), class 1: μ0 = (2, 0), μ1 = (0, 2).
        let head = Head::new(array![[1.0f32, -1.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let fit = Features::with_head(array![[3.0f32, 0.0], [1.0, 0.0], [0.0, 2.0]], &head, None)
            .unwrap();
        // Max-logit S: fit scores 3, 1, 2 → S̄ = 2.
        // Query (4, 1): z = (3, 1), class 0, S = 3; δ = (2, 1), σ = (1, −1): σδ = (2, −1);
        // E⁺ = 2/5, E⁻ = 1/5; s = −(0.4/3 + 0.2/2) = −0.233333.
        // Query (1, 3): z = (−2, 3), class 1, S = 3; δ = (1, 1), σ = (0, 1): σδ = (0, 1);
        // E⁺ = 1/4, E⁻ = 0; s = −(0.25/3) = −0.083333.
        let test = Features::with_head(array![[4.0f32, 1.0], [1.0, 3.0]], &head, None).unwrap();
        let s = Cadref {
            logit_method: LogitMethod::MaxLogit,
        }
        .fit(&(&fit).into(), &head)
        .unwrap()
        .score(&test)
        .unwrap();
        assert!((s[0] as f64 + 0.7 / 3.0).abs() < 1e-6, "{s}");
        assert!((s[1] as f64 + 0.25 / 3.0).abs() < 1e-6, "{s}");
        // Energy: S of query 1 is log(e³ + e¹); S̄ the mean of the fit rows' log-sum-exps.
        let s = Cadref::default()
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&test)
            .unwrap();
        let sbar =
            ((3f64.exp() + 1.0).ln() + (1f64.exp() + 1.0).ln() + ((-2f64).exp() + 2f64.exp()).ln())
                / 3.0;
        let want = -(0.4 / (3f64.exp() + 1f64.exp()).ln() + 0.2 / sbar);
        assert!((s[0] as f64 - want).abs() < 1e-6, "{s} vs {want}");
    }

    #[test]
    fn cadref_rejects_a_non_positive_mean_logit_score() {
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![-10.0, -10.0]).unwrap();
        let fit = Features::with_head(array![[1.0f32, 0.0], [0.0, 1.0]], &head, None).unwrap();
        let e = Cadref {
            logit_method: LogitMethod::MaxLogit,
        }
        .fit(&(&fit).into(), &head)
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("must be finite and > 0"), "{e}");
    }
}
