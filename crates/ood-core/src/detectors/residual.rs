//! Residual: the feature-norm part of ViM alone (Wang et al., "ViM: Out-Of-Distribution with
//! Virtual-logit Matching", CVPR 2022, arXiv:2203.10807, section 4); OpenOOD key `residual`.
//!
//! Fit: origin `u = −pinv(W)·b`, `Σ = mean (h − u)(h − u)ᵀ`, residual space `P⊥` = eigenvectors
//! after the first `D` (descending eigenvalues), exactly as [`Vim`](super::Vim) (shared code in
//! `kernels/residual_space.rs`). OpenOOD fits it on ID **val**, not train (spec 3.1 and 10.6):
//! pass the val features as fit data.
//! Score: `s(h) = −‖P⊥ᵀ(h − u)‖`. Higher = more in-distribution.
//!
//! `dim` (`D`): `None` (default) = the ViM paper's rule (1000 for `d ≥ 2048`, 512 for
//! `d ≥ 768`, else `d/2`); OpenOOD's `residual.yml` has `dim: 512`, written for 768-d ViT
//! features, where the rule also gives 512. An explicit `D ≥ d` is an error. No APS sweep.
//! Checked against NumPy (`tests/data/posthoc_reference_b.py`).

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_input, check_scores};
use crate::error::Result;
use crate::features::{Features, FitData, Head};
use crate::kernels::residual_space::{ResidualSpace, fit_residual_space};
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// Negated norm of the feature's component outside the principal subspace.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Residual {
    /// Principal-subspace dimension `D` (`None` = the ViM paper's rule).
    pub dim: Option<usize>,
}

#[derive(Debug)]
struct ResidualScorer {
    space: ResidualSpace,
    head: Head,
}

impl Detector for Residual {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        Ok(Box::new(ResidualScorer {
            space: fit_residual_space(data, head, self.dim, "residual")?,
            head: head.clone(),
        }))
    }
}

impl Scorer for ResidualScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let s = self.space.norms(x.embeddings.view()).mapv(|r| -r as f32);
        check_scores("residual", s)
    }
}

impl DetectorParams for Residual {
    const FITS_ON_VAL: bool = true;
    const NAME: &'static str = "residual";
    const ABOUT: &'static str = "negated residual norm outside the principal subspace, fitted on ID val (Wang et al., CVPR'22)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn residual_matches_hand_computation() {
        // Same geometry as the ViM test: u = (1, 0), principal axis x, residual axis y.
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![-1.0, 0.0]).unwrap();
        let fit = Features::with_head(
            array![[3.0f32, 0.0], [-1.0, 0.0], [1.0, 1.0], [1.0, -1.0]],
            &head,
            None,
        )
        .unwrap();
        let t = Features::with_head(array![[1.0f32, 2.0], [7.0, -0.5]], &head, None).unwrap();
        let s = Residual { dim: Some(1) }
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&t)
            .unwrap();
        assert!(
            (s[0] + 2.0).abs() < 1e-6 && (s[1] + 0.5).abs() < 1e-6,
            "{s}"
        );
        assert!(
            Residual { dim: Some(2) }
                .fit(&(&fit).into(), &head)
                .is_err()
        );
    }
}
