//! NECO: neural-collapse based score (Ben Ammar, Belkhir, Popescu, Manzanera & Franchi, "NECO:
//! NEural Collapse Based Out-of-distribution detection", ICLR 2024, arXiv:2310.06823,
//! <https://arxiv.org/abs/2310.06823>). Not an OpenOOD postprocessor (OpenOOD v1.5 has no
//! `neco`); pinned from the authors' code (`ood_methods.neco` and its `--neco_dim` default).
//!
//! Fit (ID train, no labels):
//! 1. standardise: `m` = mean, `s` = standard deviation (÷N) of every feature (scikit-learn
//!    `StandardScaler`; a feature that is constant up to round-off gets `s = 1`, scikit-learn's
//!    rule `var ≤ N·ε·var + (N·m·ε)²`);
//! 2. principal axes of the standardised features (scikit-learn `PCA`: the eigenvectors of their
//!    covariance, eigenvalues descending), keeping the first `D` as `P` (`d × D`).
//!
//! Score with `u = (h − m) / s`: `s(h) = ‖Pᵀu‖₂ / ‖u‖₂`, the fraction of the standardised
//! feature's norm that lies in the ID principal subspace (neural collapse puts ID features in
//! the span of the class means and OOD features orthogonal to it). With `max_logit = true` the
//! ratio is multiplied by `max_c z_c`, as the authors do for every architecture except ResNet
//! (ViT, DeiT, Swin). Higher = more in-distribution.
//!
//! Defaults: `max_logit = false` (the authors' ResNet setting, the architecture of OpenOOD's
//! benchmarks). `dim` (`D`): `None` = the authors' default `neco_dim = 100`, capped at `d / 2`
//! for features with `d < 200` so that the default stays valid on small features (an explicit
//! `D` must satisfy `1 ≤ D < d`; `D = d` would score every sample 1). No sweep: OpenOOD has no
//! `neco` grid and the authors tune `D` per model.
//!
//! Differences from the authors' code, none of which changes a score for `D ≤ rank`: the
//! principal axes come from the symmetric eigensolver on the `d × d` covariance (streamed,
//! f64) instead of an SVD of the whole standardised training matrix (which needs `N ≥ d`);
//! scikit-learn's `PCA.transform` also subtracts the mean of the standardised training
//! features, which is 0 up to round-off and is left out. For DeiT/Swin the authors divide by
//! the norm of the raw (unstandardised) feature instead; that variant is not reproduced.
//!
//! Fitting streams the data once (one chunk plus the `d × d` Gram matrix, `kernels/moments.rs`).
//! Scores are computed in f64. Checked against scikit-learn's `StandardScaler` + `PCA`
//! (`tests/data/posthoc_reference_c.py`, `tests/posthoc_golden_c.rs`) and by hand below.

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use crate::kernels::moments::fit_moments;
use crate::linalg::{matmul_f64, symmetric_eigen};
use ndarray::{Array1, Array2, Axis, s};
use serde::{Deserialize, Serialize};

/// Norm ratio of the standardised feature's projection onto the ID principal subspace.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Neco {
    /// Principal-subspace dimension `D` (`None` = 100, capped at `d / 2`; see the module doc).
    pub dim: Option<usize>,
    /// Multiply the ratio by the maximum logit (the authors' ViT/DeiT/Swin setting).
    pub max_logit: bool,
}

/// The subspace dimension for feature dimension `d`.
fn resolve_dim(dim: Option<usize>, d: usize) -> Result<usize> {
    match dim {
        Some(k) if k == 0 || k >= d => Err(Error::InvalidParameter(format!(
            "neco dim (principal subspace) must be at least 1 and smaller than the feature \
             dimension {d}, got {k}"
        ))),
        Some(k) => Ok(k),
        None if d >= 2 => Ok(100.min(d / 2)),
        None => Err(Error::InvalidParameter(
            "neco needs features of dimension at least 2 (a subspace and its complement)".into(),
        )),
    }
}

#[derive(Debug)]
struct NecoScorer {
    mean: Array1<f64>,
    scale: Array1<f64>,
    /// `(d, D)` principal axes of the standardised features, orthonormal columns.
    basis: Array2<f64>,
    max_logit: bool,
    head: Head,
}

impl Detector for Neco {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        check_fit_data(data, head, 1)?;
        let d = data.dim();
        let keep = resolve_dim(self.dim, d)?;
        let m = fit_moments(data)?;
        let n = data.len() as f64;
        let eps = f64::EPSILON;
        let scale: Array1<f64> = m
            .covariance
            .diag()
            .iter()
            .zip(&m.mean)
            .map(|(&var, &mu)| {
                let constant = var <= n * eps * var + (n * mu * eps).powi(2);
                if constant { 1.0 } else { var.sqrt() }
            })
            .collect();
        // Covariance of the standardised features: Σ_ij / (s_i s_j).
        let mut cov = m.covariance;
        for ((i, j), v) in cov.indexed_iter_mut() {
            *v /= scale[i] * scale[j];
        }
        let (_, vecs) = symmetric_eigen(cov.view())?;
        Ok(Box::new(NecoScorer {
            mean: m.mean,
            scale,
            basis: vecs.slice(s![.., ..keep]).to_owned(),
            max_logit: self.max_logit,
            head: head.clone(),
        }))
    }
}

impl Scorer for NecoScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let mut u = x.embeddings.mapv(|v| v as f64);
        u -= &self.mean;
        u /= &self.scale;
        let proj = matmul_f64(u.view(), self.basis.view());
        let s = u
            .axis_iter(Axis(0))
            .zip(proj.axis_iter(Axis(0)))
            .zip(x.logits.rows())
            .map(|((u, p), z)| {
                let ratio = p.dot(&p).sqrt() / u.dot(&u).sqrt();
                if self.max_logit {
                    let top = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    (ratio * top as f64) as f32
                } else {
                    ratio as f32
                }
            })
            .collect();
        check_scores("neco", s)
    }
}

impl DetectorParams for Neco {
    const NAME: &'static str = "neco";
    const ABOUT: &'static str = "norm ratio of the standardised feature in the ID principal subspace (Ben Ammar et al., ICLR'24)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn neco_matches_hand_computation() {
        // Fit rows (1, 1, 0), (−1, −1, 0), (1, −1, 2), (−1, 1, −2): mean 0, variances (1, 1, 2),
        // so s = (1, 1, √2).
        let head = Head::new(
            array![[1.0f32, 0.0, 0.0], [0.0, 1.0, 0.0]],
            array![0.0, 0.0],
        )
        .unwrap();
        let fit = Features::with_head(
            array![
                [1.0f32, 1.0, 0.0],
                [-1.0, -1.0, 0.0],
                [1.0, -1.0, 2.0],
                [-1.0, 1.0, -2.0]
            ],
            &head,
            None,
        )
        .unwrap();
        // Standardised rows u = (x, y, z/√2): covariance C = [[1, 0, a], [0, 1, −a], [a, −a, 1]]
        // with a = mean(x·z/√2) = (2 + 2)/4/√2 = 1/√2. Eigen: e1 = (1, −1, √2)/2 with
        // λ = 1 + √2·a = 2, then λ = 1 for (1, 1, 0)/√2, and λ = 0 for (1, −1, −√2)/2.
        let test =
            Features::with_head(array![[2.0f32, 0.0, 0.0], [1.0, 1.0, 3.0]], &head, None).unwrap();
        let r = |u: [f64; 3], k: usize| {
            let e = [
                [0.5, -0.5, 2f64.sqrt() / 2.0],
                [1.0 / 2f64.sqrt(), 1.0 / 2f64.sqrt(), 0.0],
            ];
            let p: f64 = e[..k]
                .iter()
                .map(|v| (v[0] * u[0] + v[1] * u[1] + v[2] * u[2]).powi(2))
                .sum();
            (p / (u[0] * u[0] + u[1] * u[1] + u[2] * u[2])).sqrt()
        };
        let u0 = [2.0, 0.0, 0.0];
        let u1 = [1.0, 1.0, 3.0 / 2f64.sqrt()];
        for (dim, max_logit, want) in [
            (1, false, [r(u0, 1), r(u1, 1)]),
            (2, false, [r(u0, 2), r(u1, 2)]),
            (1, true, [2.0 * r(u0, 1), 1.0 * r(u1, 1)]),
        ] {
            let s = Neco {
                dim: Some(dim),
                max_logit,
            }
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&test)
            .unwrap();
            for (a, b) in s.iter().zip(want) {
                assert!((*a as f64 - b).abs() < 1e-6, "dim {dim}: {a} vs {b}");
            }
        }
        // The default at d = 3 is D = 1.
        let a = Neco::default().fit(&(&fit).into(), &head).unwrap();
        assert!((a.score(&test).unwrap()[0] as f64 - r(u0, 1)).abs() < 1e-6);
    }

    #[test]
    fn neco_dim_rule_and_errors() {
        assert_eq!(resolve_dim(None, 512).unwrap(), 100);
        assert_eq!(resolve_dim(None, 2048).unwrap(), 100);
        assert_eq!(resolve_dim(None, 24).unwrap(), 12);
        assert!(resolve_dim(None, 1).is_err());
        for (dim, d) in [(0, 8), (8, 8), (100, 16)] {
            let e = resolve_dim(Some(dim), d).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "smaller than the feature dimension {d}, got {dim}"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn neco_scales_constant_features_by_one() {
        // Feature 1 is constant (5): scikit-learn keeps s = 1 there, so u_1 = h_1 − 5.
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let fit = Features::with_head(array![[1.0f32, 5.0], [3.0, 5.0]], &head, None).unwrap();
        let test = Features::with_head(array![[4.0f32, 6.0]], &head, None).unwrap();
        // s_0 = 1, u = (2, 1); the principal axis is e_0 (variance 1 vs 0): ratio 2/√5.
        let s = Neco {
            dim: Some(1),
            max_logit: false,
        }
        .fit(&(&fit).into(), &head)
        .unwrap()
        .score(&test)
        .unwrap();
        assert!((s[0] as f64 - 2.0 / 5f64.sqrt()).abs() < 1e-6, "{s}");
    }
}
