//! Dense linear algebra on `ndarray` arrays, backed by `faer`. This is the only file that imports
//! `faer`: GEMM for logits and kNN distances (including the slice-level [`gemm_nt_into`] used by
//! the blocked nearest-neighbour search), Gram-matrix accumulation for streamed covariances,
//! symmetric eigendecomposition and pseudo-inverses for ViM and Mahalanobis.

use crate::error::{Error, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatRef, Par, Side};
use ndarray::{Array1, Array2, ArrayView2};

fn par() -> Par {
    Par::rayon(0)
}

/// A faer view of a standard-layout (row-major, contiguous) ndarray view.
fn as_faer<'a, T>(a: &'a ArrayView2<'a, T>) -> MatRef<'a, T> {
    let (r, c) = a.dim();
    MatRef::from_row_major_slice(
        a.as_slice()
            .expect("linalg works on standard-layout arrays"),
        r,
        c,
    )
}

/// `a · bᵀ` for `a (n, k)` and `b (m, k)`, giving `(n, m)`, in f32.
pub fn matmul_transb(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Array2<f32> {
    assert_eq!(a.ncols(), b.ncols(), "inner dimensions of a·bᵀ must agree");
    let a = a.as_standard_layout();
    let b = b.as_standard_layout();
    let (n, m) = (a.nrows(), b.nrows());
    let mut out = Array2::<f32>::zeros((n, m));
    if n == 0 || m == 0 {
        return out;
    }
    {
        let av = a.view();
        let bv = b.view();
        let fa = as_faer(&av);
        let fb = as_faer(&bv);
        let dst =
            faer::MatMut::from_row_major_slice_mut(out.as_slice_mut().expect("fresh array"), n, m);
        matmul(dst, Accum::Replace, fa, fb.transpose(), 1.0f32, par());
    }
    out
}

/// `a · bᵀ` for `a (n, k)` and `b (m, k)`, giving `(n, m)`, in f64 (neither operand is copied
/// when both are standard layout).
pub fn matmul_transb_f64(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> Array2<f64> {
    assert_eq!(a.ncols(), b.ncols(), "inner dimensions of a·bᵀ must agree");
    let a = a.as_standard_layout();
    let b = b.as_standard_layout();
    let (n, m) = (a.nrows(), b.nrows());
    let mut out = Array2::<f64>::zeros((n, m));
    if n == 0 || m == 0 {
        return out;
    }
    {
        let av = a.view();
        let bv = b.view();
        let dst =
            faer::MatMut::from_row_major_slice_mut(out.as_slice_mut().expect("fresh array"), n, m);
        matmul(
            dst,
            Accum::Replace,
            as_faer(&av),
            as_faer(&bv).transpose(),
            1.0f64,
            par(),
        );
    }
    out
}

/// `a · b` for `a (n, k)` and `b (k, m)` in f64.
pub fn matmul_f64(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> Array2<f64> {
    assert_eq!(a.ncols(), b.nrows(), "inner dimensions of a·b must agree");
    let a = a.as_standard_layout();
    let b = b.as_standard_layout();
    let (n, m) = (a.nrows(), b.ncols());
    let mut out = Array2::<f64>::zeros((n, m));
    if n == 0 || m == 0 {
        return out;
    }
    {
        let av = a.view();
        let bv = b.view();
        let dst =
            faer::MatMut::from_row_major_slice_mut(out.as_slice_mut().expect("fresh array"), n, m);
        matmul(
            dst,
            Accum::Replace,
            as_faer(&av),
            as_faer(&bv),
            1.0f64,
            par(),
        );
    }
    out
}

/// Eigendecomposition of a symmetric matrix: eigenvalues in **descending** order and the matching
/// eigenvectors as columns.
pub fn symmetric_eigen(a: ArrayView2<'_, f64>) -> Result<(Array1<f64>, Array2<f64>)> {
    let (n, m) = a.dim();
    if n != m {
        return Err(Error::Linalg(format!(
            "eigendecomposition needs a square matrix, got {n}x{m}"
        )));
    }
    if a.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "matrix to decompose".into(),
        });
    }
    let a = a.as_standard_layout();
    let av = a.view();
    let evd = as_faer(&av)
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Linalg(format!("symmetric eigendecomposition failed: {e:?}")))?;
    let s = evd.S();
    let u = evd.U();
    // faer returns ascending order; reverse to descending.
    let vals = Array1::from_iter((0..n).rev().map(|i| s[i]));
    let vecs = Array2::from_shape_fn((n, n), |(r, c)| u[(r, n - 1 - c)]);
    Ok((vals, vecs))
}

/// `out = a · bᵀ` on raw row-major slices: `a` is `(m, k)`, `b` is `(n, k)`, `out` is `(m, n)`,
/// all contiguous and row-major. `parallel` lets faer split the product over the rayon pool;
/// callers that already parallelise over blocks pass `false`.
///
/// This is the kernel of the blocked kNN search: it never allocates, so a search can reuse one
/// tile buffer per thread.
pub fn gemm_nt_into(a: &[f32], b: &[f32], k: usize, out: &mut [f32], parallel: bool) {
    assert!(k > 0, "inner dimension must be positive");
    let (m, n) = (a.len() / k, b.len() / k);
    assert_eq!(a.len(), m * k, "a must hold whole rows of length k");
    assert_eq!(b.len(), n * k, "b must hold whole rows of length k");
    assert_eq!(out.len(), m * n, "out must be (m, n)");
    if m == 0 || n == 0 {
        return;
    }
    // Computed as the column-major product outᵀ = b · aᵀ, which faer's x86 kernels handle best
    // (destination columns contiguous, lhs rows contiguous); the memory is the same.
    let fa = MatRef::from_row_major_slice(a, m, k);
    let fb = MatRef::from_row_major_slice(b, n, k);
    let dst = faer::MatMut::from_column_major_slice_mut(out, n, m);
    let p = if parallel { par() } else { Par::Seq };
    matmul(dst, Accum::Replace, fb, fa.transpose(), 1.0f32, p);
}

/// `g += xᵀ · x` for `x (n, d)` and `g (d, d)`, in f64: the Gram-matrix step of a streamed
/// covariance (one call per chunk).
pub fn gram_accumulate(g: &mut Array2<f64>, x: ArrayView2<'_, f64>) {
    let d = x.ncols();
    assert_eq!(g.dim(), (d, d), "gram matrix must be (d, d)");
    if x.nrows() == 0 || d == 0 {
        return;
    }
    let x = x.as_standard_layout();
    let xv = x.view();
    let fx = as_faer(&xv);
    let gs = g
        .as_slice_mut()
        .expect("gram matrix is a fresh standard-layout array");
    let dst = faer::MatMut::from_row_major_slice_mut(gs, d, d);
    matmul(dst, Accum::Add, fx.transpose(), fx, 1.0f64, par());
}

/// Pseudo-inverse of a symmetric matrix through its eigendecomposition (like SciPy's `pinvh`):
/// eigenvalues with `|λ| <= rtol · max|λ|` are treated as zero. `rtol = None` uses SciPy's
/// default `n · ε(f64)`.
pub fn pinvh(a: ArrayView2<'_, f64>, rtol: Option<f64>) -> Result<Array2<f64>> {
    let n = a.nrows();
    let (vals, vecs) = symmetric_eigen(a)?;
    let rtol = rtol.unwrap_or(n as f64 * f64::EPSILON);
    let vmax = vals.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let cutoff = rtol * vmax;
    // pinv = V · diag(1/λ over kept λ) · Vᵀ.
    let mut scaled = vecs.clone();
    for (j, &l) in vals.iter().enumerate() {
        let f = if l.abs() > cutoff { 1.0 / l } else { 0.0 };
        scaled.column_mut(j).mapv_inplace(|v| v * f);
    }
    Ok(matmul_f64(scaled.view(), vecs.t()))
}

/// Moore–Penrose pseudo-inverse of a general `(m, n)` matrix through a thin SVD, giving `(n, m)`.
/// Singular values below `max(m, n) · ε · σ_max` count as zero.
pub fn pinv(a: ArrayView2<'_, f64>) -> Result<Array2<f64>> {
    if a.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "matrix to pseudo-invert".into(),
        });
    }
    let (m, n) = a.dim();
    if m == 0 || n == 0 {
        return Ok(Array2::zeros((n, m)));
    }
    let a = a.as_standard_layout();
    let av = a.view();
    let svd = as_faer(&av)
        .thin_svd()
        .map_err(|e| Error::Linalg(format!("singular value decomposition failed: {e:?}")))?;
    let (u, s, v) = (svd.U(), svd.S(), svd.V());
    let r = s.column_vector().nrows();
    let smax = (0..r).fold(0.0f64, |acc, i| acc.max(s[i].abs()));
    let cutoff = m.max(n) as f64 * f64::EPSILON * smax;
    // pinv = V · diag(1/σ) · Uᵀ.
    Ok(Array2::from_shape_fn((n, m), |(i, j)| {
        (0..r)
            .filter(|&t| s[t] > cutoff)
            .map(|t| v[(i, t)] * u[(j, t)] / s[t])
            .sum()
    }))
}

/// Divides a row by its L2 norm (f64 accumulation; a zero row stays zero).
pub fn normalize_in_place(r: &mut [f32]) {
    let n = r
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt();
    if n > 0.0 {
        let inv = (1.0 / n) as f32;
        r.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Each row divided by its L2 norm (zero rows stay zero), as a standard-layout array.
pub fn normalize_rows(x: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut out = x.as_standard_layout().into_owned();
    if out.ncols() > 0 {
        out.as_slice_mut()
            .expect("fresh standard-layout array")
            .chunks_exact_mut(x.ncols())
            .for_each(normalize_in_place);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn matmul_transb_matches_hand_computation() {
        let a = array![[1.0f32, 2.0], [3.0, 4.0], [0.5, -1.0]];
        let b = array![[1.0f32, 0.0], [1.0, 1.0]];
        assert_eq!(
            matmul_transb(a.view(), b.view()),
            array![[1.0, 3.0], [3.0, 7.0], [0.5, -0.5]]
        );
    }

    #[test]
    fn gemm_nt_into_matches_matmul_transb() {
        let a = Array2::from_shape_fn((37, 19), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
        let b = Array2::from_shape_fn((53, 19), |(i, j)| ((i * 5 + j) % 13) as f32 * 0.5 - 3.0);
        let want = matmul_transb(a.view(), b.view());
        for parallel in [false, true] {
            let mut out = vec![0.0f32; 37 * 53];
            gemm_nt_into(
                a.as_slice().unwrap(),
                b.as_slice().unwrap(),
                19,
                &mut out,
                parallel,
            );
            assert_eq!(out, want.as_slice().unwrap());
        }
    }

    #[test]
    fn gram_accumulate_adds_xtx() {
        let x = array![[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]];
        let mut g = Array2::from_elem((2, 2), 1.0);
        gram_accumulate(&mut g, x.view());
        assert_eq!(g, array![[11.25, 0.0], [0.0, 6.0]]);
    }

    #[test]
    fn pinvh_inverts_and_drops_null_space() {
        let a = array![[4.0, 1.0], [1.0, 3.0]];
        let p = pinvh(a.view(), None).unwrap();
        let id = matmul_f64(a.view(), p.view());
        assert!((id[[0, 0]] - 1.0).abs() < 1e-12 && id[[0, 1]].abs() < 1e-12);
        // rank one: [[1,1],[1,1]] has pinv [[.25,.25],[.25,.25]].
        let p = pinvh(array![[1.0, 1.0], [1.0, 1.0]].view(), None).unwrap();
        for v in p.iter() {
            assert!((v - 0.25).abs() < 1e-12, "{p}");
        }
    }

    #[test]
    fn pinv_of_a_wide_matrix() {
        // a = [[1,0,0],[0,2,0]] → pinv = [[1,0],[0,.5],[0,0]].
        let p = pinv(array![[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]].view()).unwrap();
        let want = array![[1.0, 0.0], [0.0, 0.5], [0.0, 0.0]];
        assert!((&p - &want).iter().all(|v| v.abs() < 1e-12), "{p}");
    }

    #[test]
    fn symmetric_eigen_of_a_2x2() {
        let (vals, vecs) = symmetric_eigen(array![[2.0, 1.0], [1.0, 2.0]].view()).unwrap();
        assert!((vals[0] - 3.0).abs() < 1e-12 && (vals[1] - 1.0).abs() < 1e-12);
        let v0 = vecs.column(0);
        assert!((v0[0].abs() - 0.5f64.sqrt()).abs() < 1e-12 && (v0[0] - v0[1]).abs() < 1e-12);
    }
}
