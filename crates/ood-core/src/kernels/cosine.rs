//! Cosine similarities of feature rows against label embeddings, block by block (MCM,
//! NegLabel).

use crate::linalg::matmul_f64;
use ndarray::{Array2, ArrayView2, s};

/// Rows per block when computing cosine matrices (bounds memory for large label sets).
pub(crate) const COSINE_BLOCK_ROWS: usize = 512;

/// Rows divided by their L2 norm (clamped at 1e-12 like PyTorch's `F.normalize`), in f64.
pub(crate) fn normalized_rows(a: ArrayView2<'_, f32>) -> Array2<f64> {
    let mut out = a.mapv(|v| v as f64);
    for mut r in out.rows_mut() {
        let n = r.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        r /= n;
    }
    out
}

/// `(d, m)` transpose of the normalised rows of `(m, d)` label embeddings, in standard layout.
pub(crate) fn normalized_columns(a: ArrayView2<'_, f32>) -> Array2<f64> {
    normalized_rows(a).t().as_standard_layout().into_owned()
}

/// Calls `f(first row, cosines)` for consecutive blocks of at most [`COSINE_BLOCK_ROWS`] rows of
/// `x`, where `cosines[k]` is the `(rows, m_k)` matrix of cosines of the normalised rows against
/// the columns of `labels_t[k]` (`(d, m_k)`, already normalised). Memory is one block.
pub(crate) fn for_each_cosine_block(
    x: ArrayView2<'_, f32>,
    labels_t: &[&Array2<f64>],
    mut f: impl FnMut(usize, &[Array2<f64>]),
) {
    let n = x.nrows();
    let mut start = 0;
    while start < n {
        let end = (start + COSINE_BLOCK_ROWS).min(n);
        let xn = normalized_rows(x.slice(s![start..end, ..]));
        let cos: Vec<Array2<f64>> = labels_t
            .iter()
            .map(|t| matmul_f64(xn.view(), t.view()))
            .collect();
        f(start, &cos);
        start = end;
    }
}
