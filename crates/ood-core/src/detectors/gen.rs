//! GEN: generalized entropy score (Liu, Lochman & Zach, "GEN: Pushing the Limits of Softmax-Based
//! Out-of-Distribution Detection", CVPR 2023, <https://openaccess.thecvf.com/content/CVPR2023/html/Liu_GEN_Pushing_the_Limits_of_Softmax-Based_Out-of-Distribution_Detection_CVPR_2023_paper.html>);
//! OpenOOD key `gen`.
//!
//! Score: with `p = softmax(z)` sorted ascending, keep the last `M` entries (all `C` when
//! `M ≥ C`) and return `−Σ p_i^γ (1 − p_i)^γ`. Higher = more in-distribution (a peaked softmax
//! has a small generalized entropy).
//!
//! Defaults `γ = 0.1`, `M = 100` (OpenOOD `gen.yml`); sweep `γ ∈ {0.01, 0.1, 0.5, 1, 2, 5, 10}` ×
//! `M ∈ {10, 50, 100, 200, 500, 1000}` with γ varying fastest (OpenOOD APS order).
//! Checked against the spec's section 9.4 vectors (γ = 0.1 with M = 100 and M = 2) and the NumPy
//! golden fixture.
//!
//! Trap handled: for a confident sample `1 − p_max` is far below f32 (and even f64) resolution
//! near 1. OpenOOD computes in float32, where `p_max` rounds to 1 and its term vanishes; here the
//! softmax is computed in f64 and `1 − p_max` as the sum of the other probabilities, which matches
//! the formula (and SciPy) instead of the rounding. Scores of very confident samples can
//! therefore differ from OpenOOD's float32 numbers (ranking is only finer, never coarser).

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// Generalized entropy of the top-`M` softmax probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gen {
    /// Exponent `γ` of the generalized entropy (0.1 in the paper and OpenOOD).
    pub gamma: f64,
    /// Number `M` of largest probabilities kept (100 in OpenOOD; all classes when `M ≥ C`).
    pub m: usize,
}

impl Default for Gen {
    fn default() -> Self {
        Gen { gamma: 0.1, m: 100 }
    }
}

/// `Σ p_i^γ (1 − p_i)^γ` over the `m` largest softmax probabilities of `z`, in f64, with
/// `1 − p` of the largest probability computed as the sum of the others (so that a confident
/// softmax keeps its tiny `1 − p` instead of rounding it to 0).
pub(crate) fn generalized_entropy(z: &[f32], gamma: f64, m: usize) -> f64 {
    let top = z
        .iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > z[best] { i } else { best });
    let mx = z[top] as f64;
    let e: Vec<f64> = z.iter().map(|&v| (v as f64 - mx).exp()).collect();
    let total: f64 = e.iter().sum();
    let rest: f64 = e
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != top)
        .map(|(_, v)| v)
        .sum();
    let mut pairs: Vec<(f64, f64)> = e
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let p = v / total;
            (p, if i == top { rest / total } else { 1.0 - p })
        })
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let start = pairs.len().saturating_sub(m);
    pairs[start..]
        .iter()
        .map(|&(p, q)| p.powf(gamma) * q.powf(gamma))
        .sum()
}

#[derive(Debug)]
struct GenScorer {
    gamma: f64,
    m: usize,
    head: Head,
}

impl Detector for Gen {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        if !(self.gamma > 0.0 && self.gamma.is_finite()) {
            return Err(Error::InvalidParameter(format!(
                "gen gamma must be > 0, got {}",
                self.gamma
            )));
        }
        if self.m == 0 {
            return Err(Error::InvalidParameter("gen m must be >= 1, got 0".into()));
        }
        check_fit_data(data, head, 0)?;
        Ok(Box::new(GenScorer {
            gamma: self.gamma,
            m: self.m,
            head: head.clone(),
        }))
    }
}

impl Scorer for GenScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let g = self.gamma;
        let s = x
            .logits
            .rows()
            .into_iter()
            .map(|r| -generalized_entropy(&r.to_vec(), g, self.m) as f32)
            .collect();
        check_scores("gen", s)
    }
}

impl DetectorParams for Gen {
    const NAME: &'static str = "gen";
    const ABOUT: &'static str = "generalized entropy of the top-M softmax (Liu et al., CVPR'23)";
    fn sweep(&self) -> Vec<Self> {
        let gammas = [0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0];
        let ms = [10, 50, 100, 200, 500, 1000];
        ms.iter()
            .flat_map(|&m| gammas.iter().map(move |&gamma| Gen { gamma, m }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::tests::spec_logits;

    #[test]
    fn gen_matches_spec_vectors() {
        let (f, head) = spec_logits();
        for (m, want) in [
            (100, [-3.012039, -3.381201, -2.939402]),
            (2, [-1.618173, -1.701880, -1.740988]),
        ] {
            let s = Gen { gamma: 0.1, m }
                .fit(&(&f).into(), &head)
                .unwrap()
                .score(&f)
                .unwrap();
            for (a, b) in s.iter().zip(want) {
                assert!((*a as f64 - b).abs() < 1e-5, "m={m}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn gen_rejects_bad_params() {
        let (f, head) = spec_logits();
        assert!(Gen { gamma: 0.0, m: 2 }.fit(&(&f).into(), &head).is_err());
        assert!(Gen { gamma: 0.1, m: 0 }.fit(&(&f).into(), &head).is_err());
    }
}
