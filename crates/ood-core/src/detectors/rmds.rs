//! Relative Mahalanobis distance (RMDS): Ren, Fort, Liu, Roy, Padhy & Lakshminarayanan,
//! "A Simple Fix to Mahalanobis Distance for Improving Near-OOD Detection", 2021,
//! arXiv:2106.09022; OpenOOD key `rmds`.
//!
//! Fit (ID train with labels): class means `μ_c` and shared MLE covariance `Σ` exactly as
//! [`Mahalanobis`](super::Mahalanobis), plus the global mean `μ₀` and the MLE covariance `Σ₀` of all
//! fit features (no class centring), both ÷N and pseudo-inverted with `pinvh`.
//! Score: `d_c = (h − μ_c)ᵀ Σ⁺ (h − μ_c)`, `d₀ = (h − μ₀)ᵀ Σ₀⁺ (h − μ₀)`,
//! `s(h) = max_c (d₀ − d_c) = d₀ − min_c d_c`. Higher = more in-distribution. No
//! hyper-parameters (`rmds.yml`), so no sweep.
//!
//! `normalize = true` applies `h/‖h‖` to fit and test features first, as Mahalanobis++ does for
//! [`Mahalanobis`](super::Mahalanobis) (Mueller & Hein, ICML 2025).
//!
//! Shares the streamed f64 statistics of `kernels/class_stats.rs` with
//! [`Mahalanobis`](super::Mahalanobis) (one pass, one chunk in memory); classes without fit
//! samples are left out of the min, labels outside `0..c` are an error.
//! Checked against NumPy/scikit-learn (`tests/data/posthoc_reference_b.py`,
//! `tests/posthoc_golden_b.rs`).

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_input};
use crate::error::Result;
use crate::features::{Features, FitData, Head};
use crate::kernels::class_stats::{
    fit_class_stats, pinv_rtol, score_in_blocks, sq_mahalanobis, to_f64_rows,
};
use crate::linalg::pinvh;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// Mahalanobis distance relative to a class-agnostic background Gaussian.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rmds {
    /// L2-normalise fit and test features first (the Mahalanobis++ fix, applied to RMDS).
    pub normalize: bool,
}

#[derive(Debug)]
struct RmdsScorer {
    normalize: bool,
    /// The global fit mean; every centre is relative to it.
    origin: Array1<f64>,
    centres: Array2<f64>,
    precision: Array2<f64>,
    global_precision: Array2<f64>,
    head: Head,
}

impl Detector for Rmds {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        let name = if self.normalize {
            "rmds (normalize = true)"
        } else {
            "rmds"
        };
        let st = fit_class_stats(data, head, self.normalize, name)?;
        let rtol = Some(pinv_rtol(data.dim()));
        let precision = pinvh(st.within.view(), rtol)?;
        let global_precision = pinvh(st.global.view(), rtol)?;
        let centres = &st.means - &st.global_mean;
        Ok(Box::new(RmdsScorer {
            normalize: self.normalize,
            origin: st.global_mean,
            centres,
            precision,
            global_precision,
            head: head.clone(),
        }))
    }
}

impl Scorer for RmdsScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let d = self.origin.len();
        let zero = Array2::<f64>::zeros((1, d));
        score_in_blocks(x, "rmds", |block| {
            let mut h = to_f64_rows(block, self.normalize);
            h -= &self.origin;
            let dc = sq_mahalanobis(h.view(), self.centres.view(), self.precision.view());
            let d0 = sq_mahalanobis(h.view(), zero.view(), self.global_precision.view());
            dc.rows()
                .into_iter()
                .zip(d0.column(0))
                .map(|(row, &b)| b - row.iter().copied().fold(f64::INFINITY, f64::min))
                .collect()
        })
    }
}

impl DetectorParams for Rmds {
    const NAME: &'static str = "rmds";
    const ABOUT: &'static str =
        "relative Mahalanobis distance against a background Gaussian (Ren et al., 2021)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use ndarray::array;

    #[test]
    fn rmds_matches_hand_computation() {
        // Classes (1,0),(3,0) | (0,1),(0,3): Σ = diag(.5,.5) → P = 2I.
        // All points around μ0 = (1,1): Σ0 = [[1.5,-1],[-1,1.5]] → Σ0⁻¹ = [[1.2,.8],[.8,1.2]].
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let f = Features::with_head(
            array![[1.0f32, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0]],
            &head,
            Some(vec![0, 0, 1, 1]),
        )
        .unwrap();
        let t = Features::with_head(array![[2.0f32, 0.0], [1.0, 1.0]], &head, None).unwrap();
        let s = Rmds::default()
            .fit(&(&f).into(), &head)
            .unwrap()
            .score(&t)
            .unwrap();
        // (2,0): h−μ0 = (1,−1): d0 = 1.2+1.2−1.6 = 0.8; min d_c = 0 → 0.8.
        // (1,1): d0 = 0; d_c = 4 → −4.
        assert!(
            (s[0] - 0.8).abs() < 1e-5 && (s[1] + 4.0).abs() < 1e-5,
            "{s}"
        );
        let unlabelled = Features::new(f.embeddings.clone(), f.logits.clone(), None).unwrap();
        assert!(matches!(
            Rmds::default().fit(&(&unlabelled).into(), &head),
            Err(Error::MissingLabels { .. })
        ));
    }

    #[test]
    fn rmds_normalize_equals_rmds_on_normalised_features() {
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let raw = array![
            [1.0f32, 0.2],
            [3.0, 0.5],
            [0.1, 1.0],
            [0.4, 3.0],
            [2.0, 2.5]
        ];
        let unit = raw.map_axis(ndarray::Axis(1), |r| (r[0] * r[0] + r[1] * r[1]).sqrt());
        let normed = &raw / &unit.insert_axis(ndarray::Axis(1));
        let labels = Some(vec![0, 0, 1, 1, 1]);
        let f = Features::with_head(raw, &head, labels.clone()).unwrap();
        let g = Features::with_head(normed, &head, labels).unwrap();
        let a = Rmds { normalize: true }
            .fit(&(&f).into(), &head)
            .unwrap()
            .score(&f)
            .unwrap();
        let b = Rmds::default()
            .fit(&(&g).into(), &head)
            .unwrap()
            .score(&g)
            .unwrap();
        for (x, y) in a.iter().zip(b.iter()) {
            assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{x} vs {y}");
        }
        assert!(
            a.iter()
                .zip(
                    Rmds::default()
                        .fit(&(&f).into(), &head)
                        .unwrap()
                        .score(&f)
                        .unwrap()
                        .iter()
                )
                .any(|(x, y)| (x - y).abs() > 1e-3)
        );
    }
}
