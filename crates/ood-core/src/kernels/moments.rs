//! Streamed first and second moments of unlabelled fit features, in f64.
//!
//! [`mean_feature`] is the mean fit feature (one pass, one chunk in memory). [`fit_moments`] adds
//! the maximum-likelihood covariance (÷N) around it ([`Moments`]): like
//! [`fit_class_stats`](super::class_stats::fit_class_stats) it keeps only the sum and the `d × d`
//! Gram matrix, taken around a shift (the first chunk's mean) so that the `G/N − ȳȳᵀ` step does
//! not cancel catastrophically; peak memory is one chunk plus `O(d²)`. Used by
//! [`Dice`](crate::detectors::Dice), [`Fdbd`](crate::detectors::Fdbd) and
//! [`Nci`](crate::detectors::Nci) (mean), [`Neco`](crate::detectors::Neco) (mean and
//! covariance) and [`Ssd`](crate::detectors::Ssd) (of the normalised features).

use crate::error::Result;
use crate::features::{DEFAULT_CHUNK_ROWS, FitData};
use crate::linalg::gram_accumulate;
use ndarray::{Array1, Array2, ArrayView2, Axis};

/// Mean fit feature in f64, streamed.
pub(crate) fn mean_feature(data: &FitData<'_>) -> Result<Array1<f64>> {
    let mut sum = Array1::<f64>::zeros(data.dim());
    data.for_each_embedding_chunk(DEFAULT_CHUNK_ROWS, |chunk| {
        for r in chunk.rows() {
            sum.iter_mut().zip(r).for_each(|(s, &v)| *s += v as f64);
        }
        Ok(())
    })?;
    Ok(sum / data.len() as f64)
}

/// Mean and maximum-likelihood covariance of the fit features.
#[derive(Debug, Clone)]
pub(crate) struct Moments {
    /// `(d,)` mean.
    pub(crate) mean: Array1<f64>,
    /// `(d, d)` covariance around the mean, divided by `N` (NumPy `var`, scikit-learn
    /// `StandardScaler.var_` on the diagonal).
    pub(crate) covariance: Array2<f64>,
}

/// Streams non-empty fit data once and returns its [`Moments`].
pub(crate) fn fit_moments(data: &FitData<'_>) -> Result<Moments> {
    fit_moments_chunked(data, DEFAULT_CHUNK_ROWS)
}

/// [`fit_moments`] with an explicit chunk size.
pub(crate) fn fit_moments_chunked(data: &FitData<'_>, chunk_rows: usize) -> Result<Moments> {
    fit_moments_mapped(data, chunk_rows, |chunk| chunk.mapv(|v| v as f64))
}

/// [`fit_moments`] of the rows after `map`, applied to each `(rows, d)` chunk of features (it
/// must keep the row count and the dimension), e.g. L2-normalised rows (SSD).
pub(crate) fn fit_moments_mapped(
    data: &FitData<'_>,
    chunk_rows: usize,
    map: impl Fn(ArrayView2<'_, f32>) -> Array2<f64>,
) -> Result<Moments> {
    let d = data.dim();
    let mut sum = Array1::<f64>::zeros(d);
    let mut gram = Array2::<f64>::zeros((d, d));
    let mut shift: Option<Array1<f64>> = None;
    data.for_each_embedding_chunk(chunk_rows, |chunk| {
        let mut y = map(chunk);
        let sh = shift.get_or_insert_with(|| y.mean_axis(Axis(0)).expect("chunk is non-empty"));
        y -= &*sh;
        sum += &y.sum_axis(Axis(0));
        gram_accumulate(&mut gram, y.view());
        Ok(())
    })?;
    let shift = shift.unwrap_or_else(|| Array1::zeros(d));
    let n = data.len().max(1) as f64;
    let ybar = sum / n;
    // Σ = G/N − ȳȳᵀ in the shifted coordinates (a shift does not change a covariance).
    let mut covariance = gram / n;
    for i in 0..d {
        for j in 0..d {
            covariance[(i, j)] -= ybar[i] * ybar[j];
        }
    }
    let t = covariance.t().to_owned();
    covariance += &t;
    covariance *= 0.5;
    Ok(Moments {
        mean: ybar + shift,
        covariance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{Features, Head};
    use ndarray::array;

    #[test]
    fn moments_match_hand_computation_streamed_or_not() {
        // Rows (1, 0), (3, 2), (2, 7): mean (2, 3); deviations (−1, −3), (1, −1), (0, 4):
        // Σ = [[2, 2], [2, 26]] / 3.
        let head = Head::new(array![[1.0f32, 0.0]], array![0.0]).unwrap();
        let f = Features::with_head(array![[1.0f32, 0.0], [3.0, 2.0], [2.0, 7.0]], &head, None)
            .unwrap();
        let want = array![[2.0, 2.0], [2.0, 26.0]] / 3.0;
        for rows in [1, 2, 3] {
            let m = fit_moments_chunked(&(&f).into(), rows).unwrap();
            assert!(
                (&m.mean - &array![2.0, 3.0])
                    .iter()
                    .all(|v| v.abs() < 1e-12)
            );
            assert!(
                (&m.covariance - &want).iter().all(|v| v.abs() < 1e-12),
                "{rows}: {}",
                m.covariance
            );
        }
        let mean = mean_feature(&(&f).into()).unwrap();
        assert_eq!(mean, array![2.0, 3.0]);
    }
}
