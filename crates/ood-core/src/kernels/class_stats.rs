//! Streamed class-conditional Gaussian statistics and squared Mahalanobis distances.
//!
//! [`fit_class_stats`] streams labelled fit data once, chunk by chunk, and returns the class means,
//! the shared within-class MLE covariance (÷N) and the global MLE covariance ([`ClassStats`]). Only
//! sufficient statistics are kept, in f64: per-class counts and sums and the `d × d` Gram matrix,
//! all taken around a shift (the first chunk's mean) so that the `G − Σ n_c μ_c μ_cᵀ` step does not
//! cancel catastrophically; peak memory is one chunk plus `O(c·d + d²)`. A class with no fit sample
//! is left out of the means; labels outside `0..c` are an error. [`sq_mahalanobis`] gives the
//! squared distances of query rows to a set of centres under a precision matrix, and [`pinv_rtol`]
//! is the relative cutoff of the pseudo-inverse: eigenvalues below `d · ε(f32) · λ_max` are
//! dropped, as OpenOOD computes in float32, where smaller eigenvalues are rounding noise (SciPy's
//! `pinvh` cutoff at f32 precision). Used by [`Mahalanobis`](crate::detectors::Mahalanobis)
//! (and its ReweightOOD `normalize` variant) and [`Rmds`](crate::detectors::Rmds).

use crate::detector::{check_fit_data, check_scores};
use crate::error::{Error, Result};
use crate::features::{DEFAULT_CHUNK_ROWS, Features, FitData, Head};
use crate::linalg::{gram_accumulate, matmul_f64};
use ndarray::{Array1, Array2, ArrayView2, Axis};

/// Streamed class statistics: means, shared (within-class) and global MLE covariances.
#[derive(Debug, Clone)]
pub(crate) struct ClassStats {
    /// `(m, d)` means of the `m` classes that have at least one fit sample.
    pub(crate) means: Array2<f64>,
    /// Global mean of all fit features.
    pub(crate) global_mean: Array1<f64>,
    /// `(d, d)` shared within-class covariance (÷N).
    pub(crate) within: Array2<f64>,
    /// `(d, d)` covariance of all features around the global mean (÷N).
    pub(crate) global: Array2<f64>,
}

/// Relative cutoff of the pseudo-inverse (see the module doc).
pub(crate) fn pinv_rtol(d: usize) -> f64 {
    d.max(1) as f64 * f32::EPSILON as f64
}

/// Rows of `x` in f64, each divided by its L2 norm when `normalize` (zero rows stay zero).
pub(crate) fn to_f64_rows(x: ArrayView2<'_, f32>, normalize: bool) -> Array2<f64> {
    let mut y = x.mapv(|v| v as f64);
    if normalize {
        for mut r in y.rows_mut() {
            let n = r.dot(&r).sqrt();
            if n > 0.0 {
                r /= n;
            }
        }
    }
    y
}

/// Streams labelled fit data once and returns the class statistics.
pub(crate) fn fit_class_stats(
    data: &FitData<'_>,
    head: &Head,
    normalize: bool,
    detector: &str,
) -> Result<ClassStats> {
    fit_class_stats_chunked(data, head, normalize, detector, DEFAULT_CHUNK_ROWS)
}

/// [`fit_class_stats`] with an explicit chunk size.
pub(crate) fn fit_class_stats_chunked(
    data: &FitData<'_>,
    head: &Head,
    normalize: bool,
    detector: &str,
    chunk_rows: usize,
) -> Result<ClassStats> {
    check_fit_data(data, head, 1)?;
    if !data.has_labels() {
        return Err(Error::MissingLabels {
            detector: detector.to_string(),
        });
    }
    let (d, c) = (data.dim(), head.num_classes());
    let mut counts = vec![0usize; c];
    let mut sums = Array2::<f64>::zeros((c, d));
    let mut gram = Array2::<f64>::zeros((d, d));
    let mut shift: Option<Array1<f64>> = None;
    data.for_each_chunk(chunk_rows, |chunk| {
        let labels = chunk.labels.as_ref().ok_or_else(|| Error::MissingLabels {
            detector: detector.to_string(),
        })?;
        let mut y = to_f64_rows(chunk.embeddings.view(), normalize);
        let sh = shift.get_or_insert_with(|| y.mean_axis(Axis(0)).expect("chunk is non-empty"));
        y -= &*sh;
        for (row, &l) in y.rows().into_iter().zip(labels) {
            if l < 0 || l as usize >= c {
                return Err(Error::InvalidParameter(format!(
                    "{detector}: fit label {l} is outside 0..{c} (the head has {c} classes)"
                )));
            }
            counts[l as usize] += 1;
            let mut srow = sums.row_mut(l as usize);
            srow += &row;
        }
        gram_accumulate(&mut gram, y.view());
        Ok(())
    })?;
    let shift = shift.unwrap_or_else(|| Array1::zeros(d));
    let n = counts.iter().sum::<usize>() as f64;
    let classes: Vec<usize> = (0..c).filter(|&k| counts[k] > 0).collect();
    // Means of the shifted data.
    let mut ybar = Array2::<f64>::zeros((classes.len(), d));
    for (i, &k) in classes.iter().enumerate() {
        ybar.row_mut(i).assign(&(&sums.row(k) / counts[k] as f64));
    }
    let total = sums.sum_axis(Axis(0)) / n;
    // N·Σ_within = G − Σ_c n_c ȳ_c ȳ_cᵀ ; N·Σ_global = G − N ȳ ȳᵀ.
    let mut weighted = ybar.clone();
    for (i, &k) in classes.iter().enumerate() {
        weighted.row_mut(i).mapv_inplace(|v| v * counts[k] as f64);
    }
    let between = matmul_f64(ybar.t(), weighted.view());
    let mut within = (&gram - &between) / n;
    let outer = {
        let t = total.view().insert_axis(Axis(1));
        matmul_f64(t, t.t()) * n
    };
    let mut global = (&gram - &outer) / n;
    symmetrize(&mut within);
    symmetrize(&mut global);
    let means = &ybar + &shift;
    let global_mean = &total + &shift;
    Ok(ClassStats {
        means,
        global_mean,
        within,
        global,
    })
}

fn symmetrize(a: &mut Array2<f64>) {
    let t = a.t().to_owned();
    *a += &t;
    *a *= 0.5;
}

/// `(n, m)` squared Mahalanobis distances `(x_i − c_j)ᵀ P (x_i − c_j)`, for `x (n, d)` and
/// centres `c (m, d)` given relative to the same origin. Expanded as
/// `xᵀPx − 2 xᵀPc + cᵀPc` with one GEMM each; clamped at 0.
pub(crate) fn sq_mahalanobis(
    x: ArrayView2<'_, f64>,
    centres: ArrayView2<'_, f64>,
    precision: ArrayView2<'_, f64>,
) -> Array2<f64> {
    let xp = matmul_f64(x, precision);
    let xpx = (&xp * &x).sum_axis(Axis(1));
    let cp = matmul_f64(centres, precision);
    let cpc = (&cp * &centres).sum_axis(Axis(1));
    let mut cross = matmul_f64(xp.view(), centres.t());
    for (mut row, &a) in cross.rows_mut().into_iter().zip(xpx.iter()) {
        for (v, &b) in row.iter_mut().zip(cpc.iter()) {
            *v = (a - 2.0 * *v + b).max(0.0);
        }
    }
    cross
}

/// Rows per block when scoring (bounds the `(rows, classes)` distance matrix).
pub(crate) const SCORE_BLOCK: usize = 4096;

/// Scores `x` in blocks of [`SCORE_BLOCK`] rows: `score` maps a block's `(rows, d)` features to
/// their scores in f64; the result is checked finite and named `detector` otherwise.
pub(crate) fn score_in_blocks(
    x: &Features,
    detector: &str,
    mut score: impl FnMut(ArrayView2<'_, f32>) -> Array1<f64>,
) -> Result<Array1<f32>> {
    let mut out = Array1::<f32>::zeros(x.len());
    let mut start = 0;
    while start < x.len() {
        let end = (start + SCORE_BLOCK).min(x.len());
        let s = score(x.embeddings.slice(ndarray::s![start..end, ..]));
        out.slice_mut(ndarray::s![start..end])
            .iter_mut()
            .zip(s)
            .for_each(|(o, v)| *o = v as f32);
        start = end;
    }
    check_scores(detector, out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::features::Features;
    use ndarray::array;

    pub(crate) fn toy() -> (Features, Head) {
        // Two classes in 2-D, hand-computable statistics.
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let h = array![[1.0f32, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0]];
        (
            Features::with_head(h, &head, Some(vec![0, 0, 1, 1])).unwrap(),
            head,
        )
    }

    #[test]
    fn mahalanobis_streamed_stats_equal_in_memory() {
        let (f, head) = toy();
        let a = fit_class_stats(&(&f).into(), &head, false, "t").unwrap();
        // Chunks of one row through a file.
        let dir = tempfile::tempdir().unwrap();
        f.save(dir.path().join("f.safetensors")).unwrap();
        let file = crate::FeatureFile::open(dir.path().join("f.safetensors")).unwrap();
        for rows in [1, 3] {
            let b = fit_class_stats_chunked(&(&file).into(), &head, false, "t", rows).unwrap();
            assert!((&a.within - &b.within).iter().all(|v| v.abs() < 1e-12));
            assert!((&a.global - &b.global).iter().all(|v| v.abs() < 1e-12));
            assert!((&a.means - &b.means).iter().all(|v| v.abs() < 1e-12));
        }
        assert_eq!(a.within, array![[0.5, 0.0], [0.0, 0.5]]);
        // Global covariance of (1,0),(3,0),(0,1),(0,3) around (1,1).
        assert!((a.global[[0, 0]] - 1.5).abs() < 1e-12 && (a.global[[0, 1]] + 1.0).abs() < 1e-12);
    }
}
