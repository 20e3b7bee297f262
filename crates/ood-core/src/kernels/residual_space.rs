//! The ViM residual space: the feature directions outside the principal subspace.
//!
//! [`fit_residual_space`] streams the fit data once and returns the origin `u = −pinv(W)·b` of the
//! head, the eigenvectors of `Σ = mean (h − u)(h − u)ᵀ` after the first `D` (eigenvalues
//! descending) as an orthonormal basis `P⊥`, and the RMS norm of the centred features
//! ([`ResidualSpace`]); [`ResidualSpace::norms`] gives `‖P⊥ᵀ(h − u)‖` per row. [`resolve_dim`]
//! picks `D` (explicit, or the ViM paper's rule). Used by [`Vim`](crate::detectors::Vim) and
//! [`Residual`](crate::detectors::Residual).

use crate::detector::check_fit_data;
use crate::error::{Error, Result};
use crate::features::{DEFAULT_CHUNK_ROWS, FitData, Head};
use crate::linalg::{gram_accumulate, matmul_f64, pinv, symmetric_eigen};
use ndarray::{Array1, Array2, ArrayView2, Axis, s};

/// The principal-subspace dimension for feature dimension `d`: explicit (must be `< d`) or the
/// ViM paper's rule.
pub(crate) fn resolve_dim(dim: Option<usize>, d: usize, detector: &str) -> Result<usize> {
    match dim {
        Some(k) if k >= d => Err(Error::InvalidParameter(format!(
            "{detector} dim (principal subspace) must be smaller than the feature dimension {d}, \
             got {k}"
        ))),
        Some(k) => Ok(k),
        None if d >= 2048 => Ok(1000),
        None if d >= 768 => Ok(512),
        None => Ok(d / 2),
    }
}

/// The origin `u` and the residual space `P⊥` (`(d, d − D)`, orthonormal columns).
#[derive(Debug, Clone)]
pub(crate) struct ResidualSpace {
    pub(crate) origin: Array1<f64>,
    pub(crate) basis: Array2<f64>,
    /// Root-mean-square norm of the centred fit features `h − u`: the scale against which a
    /// residual norm counts as round-off.
    pub(crate) rms: f64,
}

/// Streams `data` once: `u = −pinv(W)·b`, `Σ = mean (h−u)(h−u)ᵀ`, and the eigenvectors after
/// the first `dim` (eigenvalues descending).
pub(crate) fn fit_residual_space(
    data: &FitData<'_>,
    head: &Head,
    dim: Option<usize>,
    detector: &str,
) -> Result<ResidualSpace> {
    check_fit_data(data, head, 1)?;
    let d = data.dim();
    let keep = resolve_dim(dim, d, detector)?;
    let w = head.weight.mapv(|v| v as f64);
    let b = head.bias.mapv(|v| v as f64);
    let origin = -matmul_f64(pinv(w.view())?.view(), b.view().insert_axis(Axis(1)))
        .column(0)
        .to_owned();
    let mut gram = Array2::<f64>::zeros((d, d));
    data.for_each_embedding_chunk(DEFAULT_CHUNK_ROWS, |chunk| {
        let mut y = chunk.mapv(|v| v as f64);
        y -= &origin;
        gram_accumulate(&mut gram, y.view());
        Ok(())
    })?;
    gram /= data.len() as f64;
    let rms = gram.diag().sum().max(0.0).sqrt();
    let (_, vecs) = symmetric_eigen(gram.view())?;
    let basis = vecs.slice(s![.., keep..]).to_owned();
    Ok(ResidualSpace { origin, basis, rms })
}

impl ResidualSpace {
    /// `‖P⊥ᵀ(h − u)‖` for every row of `x`.
    pub(crate) fn norms(&self, x: ArrayView2<'_, f32>) -> Array1<f64> {
        let mut y = x.mapv(|v| v as f64);
        y -= &self.origin;
        let r = matmul_f64(y.view(), self.basis.view());
        r.map_axis(Axis(1), |row| row.dot(&row).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_dim_follows_the_vim_paper_rule() {
        assert_eq!(resolve_dim(None, 512, "vim").unwrap(), 256);
        assert_eq!(resolve_dim(None, 2048, "vim").unwrap(), 1000);
        assert_eq!(resolve_dim(None, 768, "vim").unwrap(), 512);
    }
}
