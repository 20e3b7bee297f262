//! KNN: Sun, Ming, Zhu & Li, "Out-of-Distribution Detection with Deep Nearest Neighbors",
//! ICML 2022, arXiv:2204.06507; OpenOOD key `knn`.
//!
//! Score: `s(x) = −d²_(k)(x̂)`, the negated k-th smallest **squared** L2 distance between the
//! L2-normalised query feature `x̂ = h/‖h‖` and the L2-normalised ID fit features (the bank).
//! Higher = more in-distribution. Squared or not, the ranking (and every metric) is the same;
//! squared is what OpenOOD and the official code return (faiss `IndexFlatL2`).
//!
//! Defaults: `k = 50`, `alpha = 1` (whole fit set in the bank), from OpenOOD `knn.yml` and the
//! paper's CIFAR setting. APS sweep (spec table 5.1): `k ∈ {50, 100, 200, 500, 1000}`.
//! Presets from the paper: CIFAR-10 `k = 50, alpha = 1`; ImageNet-1K `k = 1000, alpha = 1` or the
//! cheap `k = 10, alpha = 0.01` (uniform subsample without replacement; `seed` picks it).
//!
//! Spec traps handled:
//! * OpenOOD's normaliser is `x/‖x‖ + 1e-10` (epsilon added to every component **after**
//!   dividing). The same vector is added to bank and query, so it cancels exactly in L2
//!   distances; in f32 it also rounds away for all but near-zero components. We use plain
//!   `x/‖x‖` (a zero row stays zero instead of becoming NaN).
//! * `k` larger than the bank (`⌊alpha·N⌋` rows) is an error, not faiss's `+inf`/`-1` filler.
//!
//! Implementation (exact, no approximation; the search is shared, in `kernels/neighbours.rs`):
//! the bank is held as one row-major `(N, d)` f32 matrix plus squared norms. Queries are cut
//! into blocks; each block is multiplied against bank tiles with faer's GEMM
//! ([`crate::linalg::gemm_nt_into`]) into a bounded per-thread tile
//! (default 512 × 4096 floats = 8 MiB; 512 beat 256 query rows by ≈ 10% on the
//! benchmark, 1024 was no better), `d² = ‖q‖² + ‖b‖² − 2⟨q, b⟩` clamped at 0 (what faiss
//! computes), and each row keeps its k smallest values in a candidate buffer with a running
//! threshold (partial select when the buffer fills). The query × bank matrix is never
//! materialised. Query blocks run in parallel on the rayon pool. [`KnnScorer::kth_distances`]
//! returns the k-th distances for several `k` from one search (the APS sweep costs one search).
//! Checked against the spec's section 9.4 vector and against faiss `IndexFlatL2`
//! (`tests/posthoc_golden_b.rs`, `examples/knn_bench.rs`, BENCHMARKS.md).
//!
//! Fit memory: the bank (`⌊alpha·N⌋ · d` f32) plus one chunk of features; a file is read
//! features-only, chunk by chunk.

use super::{DetectorParams, GridScores};
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{DEFAULT_CHUNK_ROWS, Features, FitData, Head};
use crate::kernels::neighbours::{Bank, Metric, Tiles, search_smallest};
use crate::linalg::normalize_rows;
use ndarray::{Array1, Array2};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// A neighbour search that [`KnnScorer`] hands its search to instead of the built-in CPU one,
/// e.g. ood-nn's libtorch search on a GPU (`--device cuda`), installed with [`set_search`]. It
/// gets the normalised bank and queries and must return what the built-in search returns: for
/// each query row, the `ks[j]`-th smallest squared L2 distance `‖q‖² + ‖b‖² − 2⟨q, b⟩` (clamped
/// at 0) in column `j`.
pub trait KnnSearch: Send + Sync + std::fmt::Debug {
    /// The k-th smallest squared distances, `(queries, ks.len())`.
    fn kth_distances(
        &self,
        bank: ndarray::ArrayView2<'_, f32>,
        queries: ndarray::ArrayView2<'_, f32>,
        ks: &[usize],
    ) -> Result<Array2<f32>>;
    /// What it is, for messages and configs.
    fn describe(&self) -> String;
}

static SEARCH: std::sync::RwLock<Option<std::sync::Arc<dyn KnnSearch>>> =
    std::sync::RwLock::new(None);

/// Installs (or, with `None`, removes) the neighbour search every [`KnnScorer`] of this process
/// uses from now on.
pub fn set_search(search: Option<std::sync::Arc<dyn KnnSearch>>) {
    *SEARCH
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = search;
}

/// The installed neighbour search, if any.
pub fn installed_search() -> Option<std::sync::Arc<dyn KnnSearch>> {
    SEARCH
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Deep nearest neighbours: negated k-th squared distance in normalised feature space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Knn {
    /// Which neighbour's distance is the score (50 in OpenOOD and the paper's CIFAR setting).
    pub k: usize,
    /// Fraction of the fit set kept in the bank, in `(0, 1]` (1 = all; the paper's cheap
    /// ImageNet setting uses 0.01). The bank has `⌊alpha·N⌋` rows.
    pub alpha: f64,
    /// Seed of the uniform subsample (only used when `alpha < 1`).
    pub seed: u64,
}

impl Default for Knn {
    fn default() -> Self {
        Knn {
            k: 50,
            alpha: 1.0,
            seed: 0,
        }
    }
}

impl Knn {
    /// OpenOOD's APS grid: `k ∈ {50, 100, 200, 500, 1000}` (same `alpha` and `seed`).
    pub fn sweep_grid(&self) -> Vec<Knn> {
        [50, 100, 200, 500, 1000]
            .into_iter()
            .map(|k| Knn { k, ..self.clone() })
            .collect()
    }

    /// Fits and returns the concrete scorer (for [`KnnScorer::kth_distances`]).
    pub fn fit_knn(&self, data: &FitData<'_>, head: &Head) -> Result<KnnScorer> {
        self.fit_knn_chunked(data, head, DEFAULT_CHUNK_ROWS)
    }

    fn fit_knn_chunked(
        &self,
        data: &FitData<'_>,
        head: &Head,
        chunk_rows: usize,
    ) -> Result<KnnScorer> {
        if self.k == 0 {
            return Err(Error::InvalidParameter("knn k must be >= 1, got 0".into()));
        }
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(Error::InvalidParameter(format!(
                "knn alpha must be in (0, 1], got {}",
                self.alpha
            )));
        }
        check_fit_data(data, head, 1)?;
        let n = data.len();
        let m = if self.alpha >= 1.0 {
            n
        } else {
            (self.alpha * n as f64).floor() as usize
        };
        if m < self.k {
            return Err(Error::TooFewSamples {
                what: format!(
                    "knn bank (k = {}, alpha = {} of {n} fit rows)",
                    self.k, self.alpha
                ),
                need: self.k,
                got: m,
            });
        }
        // Sorted row indices of the subsample (None = every row).
        let keep: Option<Vec<usize>> = (m < n).then(|| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed);
            let mut idx = rand::seq::index::sample(&mut rng, n, m).into_vec();
            idx.sort_unstable();
            idx
        });
        let bank = Bank::from_fit_data(data, keep.as_deref(), m, chunk_rows)?;
        Ok(KnnScorer {
            bank,
            k: self.k,
            head: head.clone(),
            tiles: Tiles::default(),
        })
    }
}

impl Detector for Knn {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        Ok(Box::new(self.fit_knn(data, head)?))
    }
}

/// Fitted KNN: the normalised bank and `k`.
#[derive(Debug)]
pub struct KnnScorer {
    bank: Bank,
    k: usize,
    head: Head,
    tiles: Tiles,
}

impl KnnScorer {
    /// Number of bank rows.
    pub fn bank_len(&self) -> usize {
        self.bank.n
    }

    /// Sets the block sizes of the search (queries per block, bank rows per tile); both are
    /// clamped to at least 1. A thread's tile holds `query_block · bank_block` f32.
    pub fn set_tiles(&mut self, query_block: usize, bank_block: usize) {
        self.tiles = Tiles {
            query_block: query_block.max(1),
            bank_block: bank_block.max(1),
        };
    }

    /// The k-th smallest squared distance of every row of `x` to the bank, for each `k` in
    /// `ks` (column `j` is `ks[j]`), from a single search. The KNN score for `ks[j]` is the
    /// negation of column `j`.
    pub fn kth_distances(&self, x: &Features, ks: &[usize]) -> Result<Array2<f32>> {
        check_input(x, &self.head)?;
        if let Some(&bad) = ks.iter().find(|&&k| k == 0 || k > self.bank.n) {
            return Err(Error::InvalidParameter(format!(
                "knn k must be in 1..={} (the bank size), got {bad}",
                self.bank.n
            )));
        }
        let kmax = ks.iter().copied().max().unwrap_or(0);
        if kmax == 0 {
            return Ok(Array2::zeros((x.len(), 0)));
        }
        let q = normalize_rows(x.embeddings.view());
        if let Some(search) = installed_search() {
            let bank = ndarray::ArrayView2::from_shape((self.bank.n, self.bank.d), &self.bank.data)
                .map_err(|e| Error::InvalidParameter(format!("knn bank shape: {e}")))?;
            return search.kth_distances(bank, q.view(), ks);
        }
        Ok(search_smallest(
            q.view(),
            &self.bank,
            kmax,
            Metric::SquaredL2,
            self.tiles,
            ks.len(),
            |sorted, out| {
                for (o, &k) in out.iter_mut().zip(ks) {
                    *o = sorted[k - 1];
                }
            },
        ))
    }
}

impl Scorer for KnnScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        let d = self.kth_distances(x, &[self.k])?;
        check_scores("knn", d.column(0).mapv(|v| -v))
    }
}

impl DetectorParams for Knn {
    const NAME: &'static str = "knn";
    const ABOUT: &'static str =
        "negated k-th squared distance to normalised ID features (Sun et al., ICML'22)";
    fn sweep(&self) -> Vec<Self> {
        self.sweep_grid()
    }

    /// Validation scores of a `k`-grid from one bank and one search per set: the k-th distances
    /// for every `k` come out of a single top-`max k` pass ([`KnnScorer::kth_distances`]), so the
    /// whole grid costs what its largest `k` costs. Identical to fitting each candidate (the same
    /// distances, the same order statistics). `None` when the candidates do not share one bank
    /// (same `alpha` and `seed`).
    fn grid_val_scores(
        grid: &[Self],
        fit: &FitData<'_>,
        head: &Head,
        val_id: &Features,
        val_ood: &Features,
    ) -> Option<Vec<GridScores>> {
        let first = grid.first()?;
        if grid
            .iter()
            .any(|k| k.alpha != first.alpha || k.seed != first.seed || k.k == 0)
        {
            return None;
        }
        let smallest = grid.iter().map(|k| k.k).min()?;
        let scorer = match (Knn {
            k: smallest,
            ..first.clone()
        })
        .fit_knn(fit, head)
        {
            Ok(s) => s,
            // Every candidate fails the same way (or worse): let the per-candidate path report it.
            Err(_) => return None,
        };
        let bank = scorer.bank_len();
        let ks: Vec<usize> = grid.iter().map(|k| k.k).filter(|&k| k <= bank).collect();
        let id = scorer.kth_distances(val_id, &ks);
        let ood = scorer.kth_distances(val_ood, &ks);
        let (id, ood) = match (id, ood) {
            (Ok(i), Ok(o)) => (i, o),
            (Err(e), _) | (_, Err(e)) => {
                let msg = e.to_string();
                return Some(
                    grid.iter()
                        .map(|_| Err(Error::InvalidParameter(msg.clone())))
                        .collect(),
                );
            }
        };
        let mut col = 0;
        Some(
            grid.iter()
                .map(|k| {
                    if k.k > bank {
                        return Err(Error::TooFewSamples {
                            what: format!("knn bank (k = {}, alpha = {})", k.k, k.alpha),
                            need: k.k,
                            got: bank,
                        });
                    }
                    let j = col;
                    col += 1;
                    Ok((
                        check_scores("knn", id.column(j).mapv(|v| -v))?,
                        check_scores("knn", ood.column(j).mapv(|v| -v))?,
                    ))
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

    fn bank_and_queries() -> (Features, Features, Head) {
        let head = Head::new(Array2::eye(3), Array1::zeros(3)).unwrap();
        let bank = array![
            [1.0f32, 0.0, 0.0],
            [0.9, 0.1, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.8, 0.6],
            [0.6, 0.8, 0.0]
        ];
        let q = array![[1.0f32, 0.05, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5]];
        (
            Features::with_head(bank, &head, None).unwrap(),
            Features::with_head(q, &head, None).unwrap(),
            head,
        )
    }

    #[test]
    fn knn_matches_spec_vector() {
        // Spec section 9.4 (OpenOOD normaliser, squared L2).
        let (bank, q, head) = bank_and_queries();
        let want = [
            [-0.002495, -0.800000, -0.383419],
            [-0.003683, -2.000000, -0.383419],
            [-0.721597, -2.000000, -0.724847],
        ];
        for (k, w) in (1..=3).zip(want) {
            let s = Knn {
                k,
                ..Knn::default()
            }
            .fit(&(&bank).into(), &head)
            .unwrap()
            .score(&q)
            .unwrap();
            for (a, b) in s.iter().zip(w) {
                assert!((*a as f64 - b).abs() < 2e-6, "k={k}: {a} vs {b}");
            }
        }
        // All three k from one search.
        let sc = Knn {
            k: 1,
            ..Knn::default()
        }
        .fit_knn(&(&bank).into(), &head)
        .unwrap();
        let d = sc.kth_distances(&q, &[3, 1, 2]).unwrap();
        assert!((d[[0, 0]] - 0.721597).abs() < 2e-6 && (d[[2, 2]] - 0.383419).abs() < 2e-6);
    }

    #[test]
    fn knn_rejects_k_above_bank_and_bad_params() {
        let (bank, q, head) = bank_and_queries();
        let e = Knn {
            k: 6,
            ..Knn::default()
        }
        .fit(&(&bank).into(), &head)
        .err()
        .unwrap();
        assert!(
            matches!(
                e,
                Error::TooFewSamples {
                    need: 6,
                    got: 5,
                    ..
                }
            ),
            "{e}"
        );
        for alpha in [0.0, -1.0, 1.5, f64::NAN] {
            assert!(matches!(
                Knn {
                    k: 1,
                    alpha,
                    seed: 0
                }
                .fit(&(&bank).into(), &head),
                Err(Error::InvalidParameter(_))
            ));
        }
        let sc = Knn {
            k: 1,
            ..Knn::default()
        }
        .fit_knn(&(&bank).into(), &head)
        .unwrap();
        assert!(sc.kth_distances(&q, &[6]).is_err());
        let head2 = Head::new(Array2::eye(2), Array1::zeros(2)).unwrap();
        let q2 = Features::with_head(array![[1.0f32, 0.0]], &head2, None).unwrap();
        assert!(matches!(
            sc.score(&q2),
            Err(Error::DimensionMismatch { .. })
        ));
    }

    #[test]
    fn knn_alpha_subsamples_reproducibly() {
        let head = Head::new(Array2::eye(2), Array1::zeros(2)).unwrap();
        // 10 points on the unit circle; alpha 0.5 keeps 5 of them.
        let pts = Array2::from_shape_fn((10, 2), |(i, j)| {
            let a = i as f32 * 0.3;
            if j == 0 { a.cos() } else { a.sin() }
        });
        let f = Features::with_head(pts, &head, None).unwrap();
        let knn = Knn {
            k: 5,
            alpha: 0.5,
            seed: 3,
        };
        let a = knn.fit_knn(&(&f).into(), &head).unwrap();
        assert_eq!(a.bank_len(), 5);
        let b = knn.fit_knn(&(&f).into(), &head).unwrap();
        assert_eq!(a.bank.data, b.bank.data);
        // Streaming from a file in chunks of 3 rows picks the same rows.
        let dir = tempfile::tempdir().unwrap();
        f.save(dir.path().join("f.safetensors")).unwrap();
        let file = crate::FeatureFile::open(dir.path().join("f.safetensors")).unwrap();
        let c = knn.fit_knn_chunked(&(&file).into(), &head, 3).unwrap();
        assert_eq!(a.bank.data, c.bank.data);
        let all = Knn {
            k: 5,
            ..Knn::default()
        }
        .fit_knn_chunked(&(&file).into(), &head, 4)
        .unwrap();
        assert_eq!(all.bank_len(), 10);
        // Every kept row is one of the fit rows (normalised: they are already unit vectors).
        for r in a.bank.data.chunks(2) {
            assert!(all.bank.data.chunks(2).any(|q| q == r));
        }
        // Scoring the fit rows: the 5th neighbour in a 5-row bank is its farthest row, so the
        // score is minus the largest squared distance to a kept row (rows are unit vectors).
        let s = a.score(&f).unwrap();
        for (i, row) in f.embeddings.rows().into_iter().enumerate() {
            let farthest = a
                .bank
                .data
                .chunks(2)
                .map(|b| (row[0] - b[0]).powi(2) + (row[1] - b[1]).powi(2))
                .fold(0.0f32, f32::max);
            assert!(
                (s[i] + farthest).abs() < 1e-5,
                "row {i}: score {} vs -{farthest}",
                s[i]
            );
        }
    }
}
