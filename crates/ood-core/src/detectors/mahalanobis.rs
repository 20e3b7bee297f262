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
//! `reweightood`), used on the features of a CIDER-style backbone.
//!
//! Numerics and spec traps:
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
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{DEFAULT_CHUNK_ROWS, Features, FitData, Head};
use crate::linalg::{gram_accumulate, matmul_f64, pinvh};
use ndarray::{Array1, Array2, ArrayView2, Axis, s};
use serde::{Deserialize, Serialize};

/// Class-conditional Gaussians with a shared covariance; score = −(smallest Mahalanobis distance).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mahalanobis {
    /// L2-normalise features (fit and test) first: the ReweightOOD scorer. Default false (MDS).
    pub normalize: bool,
}

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
        let mut out = Array1::<f32>::zeros(x.len());
        let mut start = 0;
        while start < x.len() {
            let end = (start + SCORE_BLOCK).min(x.len());
            let mut h = to_f64_rows(x.embeddings.slice(s![start..end, ..]), self.normalize);
            h -= &self.origin;
            let dist = sq_mahalanobis(h.view(), self.centres.view(), self.precision.view());
            for (o, row) in out.slice_mut(s![start..end]).iter_mut().zip(dist.rows()) {
                *o = -(row.iter().copied().fold(f64::INFINITY, f64::min)) as f32;
            }
            start = end;
        }
        check_scores("mahalanobis", out)
    }
}

impl DetectorParams for Mahalanobis {
    const NAME: &'static str = "mahalanobis";
    const ABOUT: &'static str = "class-conditional Mahalanobis distance, shared covariance (Lee et al., NeurIPS'18); normalize=true is ReweightOOD's scorer";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn toy() -> (Features, Head) {
        // Two classes in 2-D, hand-computable statistics.
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let h = array![[1.0f32, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0]];
        (
            Features::with_head(h, &head, Some(vec![0, 0, 1, 1])).unwrap(),
            head,
        )
    }

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
