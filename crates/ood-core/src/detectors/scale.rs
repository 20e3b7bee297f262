//! SCALE: activation scaling (Xu, Lian, Li, Li & Zach, "Scaling for Training Time and Post-hoc
//! Out-of-distribution Detection Enhancement", ICLR 2024, arXiv:2310.00227,
//! <https://arxiv.org/abs/2310.00227>); OpenOOD key `scale`.
//!
//! With `D` the feature dimension and `k = D − round_half_even(D · p / 100)`: `S_all = Σ_j h_j`,
//! `S_top` = sum of the `k` largest `h_j`, `h' = h · exp(S_all / S_top)` (**no pruning** of `h`
//! itself), score `lse(W h' + b)`. Higher = more in-distribution.
//!
//! Defaults `p = 85` (OpenOOD `scale.yml`); sweep `p ∈ {65, 70, …, 95}`. No fit statistics.
//!
//! Traps handled: `k = 0` is an `Err`; an all-zero feature vector (`0/0`) keeps `h' = 0`; a zero
//! `S_top` with non-zero entries (only with negative features) gives a non-finite score and an
//! `Err`. Ties do not matter (only the sum of the top-`k` is used). Features are expected to be
//! non-negative (post-ReLU).

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::Result;
use crate::features::{Features, FitData, Head};
use crate::kernels::logits::energies;
use crate::kernels::top_k::{kept_count, top_k_indices};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// Scale the features by `exp(S_all / S_top-k)`, then energy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scale {
    /// Percentile `p` in `[0, 100)` that sets `k` (85 in OpenOOD).
    pub percentile: f64,
}

impl Default for Scale {
    fn default() -> Self {
        Scale { percentile: 85.0 }
    }
}

#[derive(Debug)]
struct ScaleScorer {
    k: usize,
    head: Head,
}

impl Detector for Scale {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        let k = kept_count("scale", head.dim(), self.percentile)?;
        check_fit_data(data, head, 0)?;
        Ok(Box::new(ScaleScorer {
            k,
            head: head.clone(),
        }))
    }
}

impl Scorer for ScaleScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let mut scaled = Array2::<f32>::zeros(x.embeddings.raw_dim());
        for (h, mut out) in x.embeddings.rows().into_iter().zip(scaled.rows_mut()) {
            let h = h.to_vec();
            if h.iter().all(|&v| v == 0.0) {
                continue;
            }
            let all: f64 = h.iter().map(|&v| v as f64).sum();
            let top: f64 = top_k_indices(&h, self.k).iter().map(|&i| h[i] as f64).sum();
            let factor = (all / top).exp() as f32;
            out.iter_mut().zip(&h).for_each(|(o, &v)| *o = v * factor);
        }
        let z = self.head.logits(scaled.view())?;
        check_scores("scale", energies(&z))
    }
}

impl DetectorParams for Scale {
    const NAME: &'static str = "scale";
    const ABOUT: &'static str =
        "energy after exp(S_all/S_top-k) feature scaling (Xu et al., ICLR'24)";
    fn sweep(&self) -> Vec<Self> {
        [65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0]
            .into_iter()
            .map(|percentile| Scale { percentile })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn scale_matches_hand_computation() {
        // D = 4, p = 50: k = 2. h = [1, 3, 0, 2]: S_all = 6, S_top = 5, factor e^1.2.
        let w = array![[1.0f32, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]];
        let head = Head::new(w, array![0.0, -1.0]).unwrap();
        let x = Features::with_head(
            array![[1.0f32, 3.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]],
            &head,
            None,
        )
        .unwrap();
        let s = Scale { percentile: 50.0 }
            .fit(&(&x).into(), &head)
            .unwrap()
            .score(&x)
            .unwrap();
        let e = 1.2f64.exp();
        let want0 = (e.exp() + (5.0 * e - 1.0).exp()).ln();
        let want1 = (1.0 + (-1.0f64).exp()).ln();
        assert!(
            ((s[0] as f64) - want0).abs() / want0 < 1e-6,
            "{} vs {want0}",
            s[0]
        );
        assert!(((s[1] as f64) - want1).abs() < 1e-6);
        assert!(
            Scale { percentile: 100.0 }
                .fit(&(&x).into(), &head)
                .is_err()
        );
    }
}
