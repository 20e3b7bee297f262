//! ViM (Virtual-logit Matching): Wang, Li, Feng & Zhang, "ViM: Out-Of-Distribution with
//! Virtual-logit Matching", CVPR 2022, arXiv:2203.10807; OpenOOD key `vim`.
//!
//! Fit (ID train, no labels):
//! 1. origin `u = −pinv(W) · b` from the head;
//! 2. `Σ = (1/N) Σ_i (h_i − u)(h_i − u)ᵀ` (scikit-learn `EmpiricalCovariance(assume_centered=True)`),
//!    eigenvectors sorted by eigenvalue, descending;
//! 3. residual space `P⊥` = the eigenvectors **after** the first `D` (dimension `d − D`);
//! 4. `α = mean_i max_c z_ic / mean_i ‖P⊥ᵀ(h_i − u)‖` over the fit set.
//!
//! Score: `s(h) = lse(z) − α · ‖P⊥ᵀ(h − u)‖`. Higher = more in-distribution.
//!
//! `dim` (`D`): `None` (default) = the ViM paper's rule: 1000 when `d ≥ 2048`, 512 when
//! `d ≥ 768`, else `d/2`. That is 256 for 512-d ResNet-18 features (= OpenOOD `vim.yml`'s 256)
//! and 1000 for 2048-d ResNet-50 (= OpenOOD's ImageNet scripts), and it keeps the defaults valid
//! on small `d`. An explicit `D` must satisfy `D < d`, else `Err`: OpenOOD's `D = 1000` with
//! 512-d features gives an empty `P⊥`, `α = ∞` and NaN scores (spec 5.8). APS sweep
//! `D ∈ {256, 1000}` (spec table 5.1); candidates invalid for the data fail at fit time and the
//! sweep skips them.
//!
//! Fitting streams the data twice (statistics, then `α`), keeping one chunk plus the `d × d`
//! f64 Gram matrix; the symmetric eigensolver replaces OpenOOD's general `eig` (same result for a
//! symmetric matrix). The residual machinery (`kernels/residual_space.rs`) is shared with
//! [`Residual`](super::Residual).
//! Checked against NumPy/scikit-learn (`tests/data/posthoc_reference_b.py`).

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_input, check_scores, logsumexp};
use crate::error::{Error, Result};
use crate::features::{DEFAULT_CHUNK_ROWS, Features, FitData, Head};
use crate::kernels::residual_space::{ResidualSpace, fit_residual_space};
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// Virtual-logit matching: energy minus the scaled norm of the feature's residual.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Vim {
    /// Principal-subspace dimension `D` (`None` = the paper's rule, see the module doc).
    pub dim: Option<usize>,
}

impl Vim {
    /// OpenOOD's APS grid: `D ∈ {256, 1000}`.
    pub fn sweep_grid(&self) -> Vec<Vim> {
        vec![Vim { dim: Some(256) }, Vim { dim: Some(1000) }]
    }
}

#[derive(Debug)]
struct VimScorer {
    space: ResidualSpace,
    alpha: f64,
    head: Head,
}

impl Detector for Vim {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        let space = fit_residual_space(data, head, self.dim, "vim")?;
        // Second pass: mean max logit and mean residual norm.
        let (mut sum_max, mut sum_norm) = (0.0f64, 0.0f64);
        data.for_each_chunk(DEFAULT_CHUNK_ROWS, |chunk| {
            sum_max += chunk
                .logits
                .rows()
                .into_iter()
                .map(|r| r.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64)
                .sum::<f64>();
            sum_norm += space.norms(chunk.embeddings.view()).sum();
            Ok(())
        })?;
        // Round-off, not a residual: identical or rank-deficient fit features leave residual
        // norms around 1e-16 of the feature scale, and alpha would blow up to ~1e15.
        let mean_norm = sum_norm / data.len() as f64;
        if mean_norm.is_nan() || mean_norm <= 1e-9 * space.rms {
            return Err(Error::Linalg(format!(
                "vim: every fit feature lies in the principal subspace (mean residual norm 0 with \
                 D = {} of d = {}), so alpha is undefined",
                data.dim() - space.basis.ncols(),
                data.dim()
            )));
        }
        let alpha = sum_max / sum_norm;
        Ok(Box::new(VimScorer {
            space,
            alpha,
            head: head.clone(),
        }))
    }
}

impl Scorer for VimScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let norms = self.space.norms(x.embeddings.view());
        let s = x
            .logits
            .rows()
            .into_iter()
            .zip(norms.iter())
            .map(|(z, &r)| {
                let z = z.to_vec();
                (logsumexp(&z) - self.alpha * r) as f32
            })
            .collect();
        check_scores("vim", s)
    }
}

impl DetectorParams for Vim {
    const NAME: &'static str = "vim";
    const ABOUT: &'static str =
        "energy minus scaled residual norm outside the principal subspace (Wang et al., CVPR'22)";
    fn sweep(&self) -> Vec<Self> {
        self.sweep_grid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn vim_matches_hand_computation() {
        // Head W = I(2) with b = (−1, 0) → u = (1, 0). Fit points (h − u): (±2, 0) and (0, ±1):
        // Σ = diag(2, .5) → principal axis x, residual axis y (D = 1).
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![-1.0, 0.0]).unwrap();
        let fit = Features::with_head(
            array![[3.0f32, 0.0], [-1.0, 0.0], [1.0, 1.0], [1.0, -1.0]],
            &head,
            None,
        )
        .unwrap();
        // max logits: 2, 0, 1, 0 → mean .75; residual norms 0, 0, 1, 1 → mean .5; α = 1.5.
        let t = Features::with_head(array![[1.0f32, 2.0]], &head, None).unwrap();
        let s = Vim { dim: Some(1) }
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&t)
            .unwrap();
        // z = (0, 2): lse = 2 + ln(1 + e⁻²); residual |2| → s = lse − 3.
        let want = 2.0 + (1.0 + (-2.0f64).exp()).ln() - 3.0;
        assert!((s[0] as f64 - want).abs() < 1e-5, "{s} vs {want}");
        // The default (d/2 = 1) is the same model.
        let s2 = Vim::default()
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&t)
            .unwrap();
        assert!((s2[0] - s[0]).abs() < 1e-6);
    }

    /// Issue 12: identical fit features leave residual norms of pure round-off (~1e-16), which
    /// made alpha ~1e15 and every score ~-1e15 with exit 0; now it is the same clear error as an
    /// exact zero.
    #[test]
    fn vim_rejects_identical_fit_features() {
        let head = Head::new(
            array![[0.3f32, -1.2, 0.7], [1.1, 0.4, -0.2]],
            array![0.1, -0.3],
        )
        .unwrap();
        let row = [0.731f32, -2.19, 5.03];
        let x = ndarray::Array2::from_shape_fn((50, 3), |(_, j)| row[j]);
        let fit = Features::with_head(x, &head, None).unwrap();
        let e = Vim { dim: Some(1) }
            .fit(&(&fit).into(), &head)
            .err()
            .expect("identical features have no residual")
            .to_string();
        assert!(e.contains("alpha is undefined"), "{e}");
    }

    #[test]
    fn vim_rejects_dim_not_below_feature_dim() {
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let fit = Features::with_head(array![[1.0f32, 2.0], [0.5, 0.1]], &head, None).unwrap();
        for dim in [2, 256, 1000] {
            let e = Vim { dim: Some(dim) }
                .fit(&(&fit).into(), &head)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("smaller than the feature dimension 2"), "{e}");
        }
    }
}
