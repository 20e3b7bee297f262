//! Mahalanobis distance score (MDS): Lee, Lee, Lee & Shin, "A Simple Unified Framework for
//! Detecting Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018,
//! arXiv:1807.03888 (single-layer, no input preprocessing, as OpenOOD key `mds`).
//!
//! Fit (ID train with labels): class means `μ_c`, the shared maximum-likelihood covariance
//! `Σ = (1/N) Σ_c Σ_{i∈c} (h_i − μ_c)(h_i − μ_c)ᵀ` (÷N, not N−1: scikit-learn
//! `EmpiricalCovariance` on the class-centred features) and `P = pinvh(Σ)`.
//! Score: `s(h) = max_c −(h − μ_c)ᵀ P (h − μ_c)`. Higher = more in-distribution. No
//! hyper-parameters in OpenOOD (`mds.yml`), so no sweep.
//!
//! `normalize = true` applies `h/‖h‖` to fit and test features first: this is the ReweightOOD
//! test-time scorer (Regmi et al., CVPR-W 2024; spec training-methods.md 3.5; OpenOOD key
//! `reweightood`), used on the features of a CIDER-style backbone. It is also Mahalanobis++
//! (Mueller & Hein, "Mahalanobis++: Improving OOD Detection via Feature Normalization", ICML 2025,
//! arXiv:2505.18032): L2-normalised features, then class means, the shared covariance and the
//! minimum distance exactly as above; nothing else differs.
//!
//! Numerics and spec traps (the statistics and distances are `kernels/class_stats.rs`):
//! * Fitting streams the data chunk by chunk and keeps only sufficient statistics in f64: per-class
//!   counts and sums and the `d × d` Gram matrix, all taken around a shift (the first chunk's
//!   mean) so that the `G − Σ n_c μ_c μ_cᵀ` step does not cancel catastrophically. Peak memory:
//!   one chunk plus `O(c·d + d²)` (see BENCHMARKS.md).
//! * The pseudo-inverse drops eigenvalues below `d · ε(f32) · λ_max`: OpenOOD computes in float32,
//!   where smaller eigenvalues are rounding noise (SciPy's `pinvh` cutoff at f32 precision).
//! * A class with no fit sample has no mean and is left out of the max (OpenOOD would produce NaN).
//!   Labels outside `0..c` are an error.
//! * Distances are computed in f64 around the global mean, in blocks of query rows.
//!
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

/// Class-conditional Gaussians with a shared covariance; score = −(smallest Mahalanobis distance).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mahalanobis {
    /// L2-normalise features (fit and test) first: the ReweightOOD scorer. Default false (MDS).
    pub normalize: bool,
}

#[derive(Debug)]
struct MahalanobisScorer {
    normalize: bool,
    /// Origin of the centred coordinates (the global fit mean).
    origin: Array1<f64>,
    /// Class means relative to `origin`.
    centres: Array2<f64>,
    precision: Array2<f64>,
    head: Head,
}

impl Detector for Mahalanobis {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        let name = if self.normalize {
            "mahalanobis (normalize = true)"
        } else {
            "mahalanobis"
        };
        let st = fit_class_stats(data, head, self.normalize, name)?;
        let precision = pinvh(st.within.view(), Some(pinv_rtol(data.dim())))?;
        let centres = &st.means - &st.global_mean;
        Ok(Box::new(MahalanobisScorer {
            normalize: self.normalize,
            origin: st.global_mean,
            centres,
            precision,
            head: head.clone(),
        }))
    }
}

impl Scorer for MahalanobisScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        score_in_blocks(x, "mahalanobis", |block| {
            let mut h = to_f64_rows(block, self.normalize);
            h -= &self.origin;
            let dist = sq_mahalanobis(h.view(), self.centres.view(), self.precision.view());
            dist.rows()
                .into_iter()
                .map(|row| -row.iter().copied().fold(f64::INFINITY, f64::min))
                .collect()
        })
    }
}

impl DetectorParams for Mahalanobis {
    const NAME: &'static str = "mahalanobis";
    const ABOUT: &'static str = "class-conditional Mahalanobis distance, shared covariance (Lee et al., NeurIPS'18); normalize=true is ReweightOOD's scorer";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::kernels::class_stats::tests::toy;
    use ndarray::array;

    #[test]
    fn mahalanobis_matches_hand_computation() {
        // μ0 = (2,0), μ1 = (0,2); centred: (±1,0),(0,±1) → Σ = diag(.5,.5), P = diag(2,2).
        let (f, head) = toy();
        let test = Features::with_head(array![[2.0f32, 0.0], [1.0, 1.0]], &head, None).unwrap();
        let s = Mahalanobis::default()
            .fit(&(&f).into(), &head)
            .unwrap()
            .score(&test)
            .unwrap();
        // (2,0): distance 0 to μ0. (1,1): 2·((−1)² + 1²) = 4 to both.
        assert!(s[0].abs() < 1e-6 && (s[1] + 4.0).abs() < 1e-5, "{s}");
    }

    #[test]
    fn mahalanobis_needs_labels_in_range() {
        let (f, head) = toy();
        let unlabelled = Features::new(f.embeddings.clone(), f.logits.clone(), None).unwrap();
        assert!(matches!(
            Mahalanobis::default().fit(&(&unlabelled).into(), &head),
            Err(Error::MissingLabels { .. })
        ));
        let bad = Features::new(
            f.embeddings.clone(),
            f.logits.clone(),
            Some(vec![0, 0, 1, 2]),
        )
        .unwrap();
        let e = Mahalanobis::default()
            .fit(&(&bad).into(), &head)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("label 2") && e.contains("0..2"), "{e}");
    }

    #[test]
    fn mahalanobis_normalize_is_scale_invariant() {
        let (_, head) = toy();
        let h = array![
            [1.0f32, 0.2],
            [3.0, 0.1],
            [0.1, 1.0],
            [0.9, 3.0],
            [2.0, 1.0]
        ];
        let f = Features::with_head(h, &head, Some(vec![0, 0, 1, 1, 0])).unwrap();
        let d = Mahalanobis { normalize: true };
        let sc = d.fit(&(&f).into(), &head).unwrap();
        let t1 = Features::with_head(array![[1.0f32, 0.5], [0.2, 2.0]], &head, None).unwrap();
        let t2 = Features::with_head(array![[4.0f32, 2.0], [0.1, 1.0]], &head, None).unwrap();
        let (a, b) = (sc.score(&t1).unwrap(), sc.score(&t2).unwrap());
        assert!(
            (a[0] - b[0]).abs() < 1e-4 && (a[1] - b[1]).abs() < 1e-4,
            "{a} {b}"
        );
        assert!(a[0] < -1e-3, "not a degenerate all-zero score: {a}");
        // Without normalisation the scale matters.
        let raw = Mahalanobis::default().fit(&(&f).into(), &head).unwrap();
        assert!((raw.score(&t1).unwrap()[0] - raw.score(&t2).unwrap()[0]).abs() > 1e-2);
    }
}
