//! LTS: logit scaling (Djurisic, Liu & Nikolic, "Logit Scaling for Out-of-Distribution
//! Detection", 2024, arXiv:2409.01175, <https://arxiv.org/abs/2409.01175>; authors' code
//! `andrijazz/lts`, `lts.py`). Not in OpenOOD.
//!
//! With `a = max(h, 0)` (the authors apply a ReLU first, which matters for transformer features),
//! `D` the feature dimension and `k = D − round_half_even(D · p / 100)`: `S_all = Σ_j a_j`,
//! `S_top` = the sum of the `k` largest `a_j`, the scale `s = (S_all / S_top)²`, and the score is
//! the energy of the scaled logits, `log Σ_c exp(s · z_c)` (the authors' `scoring_method:
//! energy`; the logits are scaled whole, bias included, unlike SCALE which scales the features).
//! Higher = more in-distribution.
//!
//! Default `p = 95` (every config of the authors: `lts@95`). No sweep (not in OpenOOD). No fit
//! statistics.
//!
//! Differences from the authors' code: a feature with no positive entry has `S_all = S_top = 0`
//! and no defined scale (NaN in theirs); here its scale is 1 (the logits are left as they are),
//! the value of `S_all / S_top` when the top `k` hold all the mass. `k = 0` is an `Err`. Computed
//! in f64 from the given logits and features. Checked against NumPy
//! (`tests/data/posthoc_reference_d.py`, `tests/posthoc_golden_d.rs`) and by hand below.

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::Result;
use crate::features::{Features, FitData, Head};
use crate::kernels::top_k::{kept_count, top_k_indices};
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// Energy of the logits scaled by `(S_all / S_top-k)²` of the rectified features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lts {
    /// Percentile `p` in `[0, 100)` that sets `k` (95 in the authors' configs).
    pub percentile: f64,
}

impl Default for Lts {
    fn default() -> Self {
        Lts { percentile: 95.0 }
    }
}

#[derive(Debug)]
struct LtsScorer {
    k: usize,
    head: Head,
}

impl Detector for Lts {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        let k = kept_count("lts", head.dim(), self.percentile)?;
        check_fit_data(data, head, 0)?;
        Ok(Box::new(LtsScorer {
            k,
            head: head.clone(),
        }))
    }
}

impl Scorer for LtsScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let s = x
            .embeddings
            .rows()
            .into_iter()
            .zip(x.logits.rows())
            .map(|(h, z)| {
                let a: Vec<f32> = h.iter().map(|&v| v.max(0.0)).collect();
                let all: f64 = a.iter().map(|&v| v as f64).sum();
                let top: f64 = top_k_indices(&a, self.k).iter().map(|&i| a[i] as f64).sum();
                let scale = if top > 0.0 { (all / top).powi(2) } else { 1.0 };
                let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64 * scale;
                let sum: f64 = z.iter().map(|&v| (v as f64 * scale - m).exp()).sum();
                (m + sum.ln()) as f32
            })
            .collect();
        check_scores("lts", s)
    }
}

impl DetectorParams for Lts {
    const NAME: &'static str = "lts";
    const ABOUT: &'static str = "energy of logits scaled by (S_all/S_top-k)^2 of the rectified features (Djurisic et al., 2024)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn lts_matches_hand_computation() {
        // D = 4, p = 50: k = 2. h = [1, 3, −5, 2]: a = [1, 3, 0, 2], S_all = 6, S_top = 5,
        // s = 1.44. Identity-like head with two classes: z = (1, 5 − 1) = (1, 4) (bias −1 on
        // class 1): score log(e^1.44 + e^5.76).
        let w = array![[1.0f32, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]];
        let head = Head::new(w, array![0.0, -1.0]).unwrap();
        let x = Features::with_head(
            array![[1.0f32, 3.0, -5.0, 2.0], [-1.0, 0.0, -2.0, 0.0]],
            &head,
            None,
        )
        .unwrap();
        let s = Lts { percentile: 50.0 }
            .fit(&(&x).into(), &head)
            .unwrap()
            .score(&x)
            .unwrap();
        let want0 = (1.44f64.exp() + 5.76f64.exp()).ln();
        // No positive entry: scale 1, z = (−1, −1): log(2/e).
        let want1 = (2.0f64).ln() - 1.0;
        assert!(((s[0] as f64) - want0).abs() < 1e-6, "{} vs {want0}", s[0]);
        assert!(((s[1] as f64) - want1).abs() < 1e-6, "{} vs {want1}", s[1]);
        assert!(Lts { percentile: 100.0 }.fit(&(&x).into(), &head).is_err());
    }
}
