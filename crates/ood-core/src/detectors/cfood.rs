//! CF-OOD: a conformal k-NN fraction score; OpenOOD key `cfood` (OpenOOD's
//! `CFOODPostprocessor`, `openood/postprocessors/cfood_postprocessor.py` and
//! `configs/postprocessors/cfood.yml`, main branch of December 2025). Everything below is pinned
//! from that code; it cites no paper.
//!
//! Fit (ID train, no labels):
//! 1. every fit feature is L2-normalised as OpenOOD does it, `x̂ = h / (‖h‖ + 1e-10)`;
//! 2. the reference set is all `N` rows when `alpha = 1`, else `n = ⌊alpha·N⌋` rows drawn
//!    uniformly without replacement (see *Differences*);
//! 3. the grid of neighbour fractions is `kval = linspace(0.001, 0.1, 100) ‖ linspace(0.105,
//!    0.5, 81) ‖ linspace(0.51, 0.99, 49)` (NumPy's `linspace`, reproduced to the bit), the
//!    ranks `kpos = int(kval·n − 1)` (truncated toward zero, as NumPy's `astype(int)`), and the
//!    columns whose rank does not exceed the previous column's are dropped;
//! 4. `knndst[i, j]` is entry `kpos_j + 1` of the ascending squared distances from reference
//!    `i` to every reference, itself included (the `+1` skips the zero distance to itself): the
//!    distance to its `(kpos_j + 1)`-th nearest other reference. Each row is non-decreasing.
//!
//! Score of a query `x̂` (normalised the same way): `d_r = ‖x̂ − ref_r‖²`, `count_j = #{r :
//! knndst[r, j] ≥ d_r} / n`, `κ = kval_j` at the first column `j` with `count_j ≥ k` (`κ = 1`
//! when there is none), and `s(x) = −κ`: the smallest neighbour fraction at which at least a
//! fraction `k` of the references would count `x̂` among their neighbours. Higher = more
//! in-distribution.
//!
//! The scores are **coarse by construction**: `−κ` takes at most `|kval| + 1 ≤ 231` values, so
//! many samples tie (every sample inside the densest region scores `−0.001`). Ties are the
//! method's, not float32 rounding (the grid values are far apart in f32).
//!
//! Defaults: `alpha = 0.1`, `k = 0.01` (OpenOOD's `cfood.yml`), `seed = 0`. Sweep: OpenOOD's
//! twelve `(alpha, k)` pairs in its order, `alpha ∈ {0.1, 0.5, 1}` (outer) × `k ∈ {0.001,
//! 0.005, 0.01, 0.05}` (inner). OpenOOD's `avg_topk` is "reserved for future use" and unused, so
//! it is not a parameter.
//!
//! Differences from OpenOOD:
//! * the subsample: OpenOOD takes `torch.randperm(N)[:n]` (not reproducible across runs); here
//!   `seed` drives a ChaCha8 stream and `rand::seq::index::sample`, so a fit is deterministic.
//!   Which rows are drawn differs from OpenOOD's; the reference order does not matter.
//! * distances and comparisons are f64 (OpenOOD: float32 `((v − ref)²).sum()`); a comparison
//!   `knndst ≥ d` that float32 rounding would flip can give a neighbouring grid value there.
//!   `count_j ≥ k` is compared in f64 (OpenOOD: a float32 count over `n` against `k`).
//! * instead of comparing every `d_r` with all `|kval|` columns, each reference's first column
//!   with `knndst[r, j] ≥ d_r` is found by binary search in its (sorted) row, and the counts of
//!   all columns follow from a histogram of those positions: `O(n log |kval|)` per query, the
//!   same counts exactly.
//! * a reference set of fewer than 2 rows has no neighbour to rank (OpenOOD would index past the
//!   end): an error naming `alpha` and `N`.
//!
//! Cost: the fit computes all `n²` reference distances (f64 GEMM in blocks of rows) and selects
//! the grid's order statistics of each row (`O(n log |kval|)` per row, not a full sort); memory
//! is the normalised references `8·n·d` bytes plus `knndst`, `8·n·|kval|` bytes, plus one block of
//! distances (at most `2²²` values). Scoring is one GEMM block against the references per block
//! of queries. `alpha = 1` on a large fit set (the sweep's last third) is quadratic in `N`, as in
//! OpenOOD. Checked against a NumPy re-implementation of OpenOOD's code
//! (`tests/data/posthoc_reference_e.py`, `tests/posthoc_golden_e.rs`) and by hand below.

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{DEFAULT_CHUNK_ROWS, Features, FitData, Head};
use crate::kernels::neighbours::{sq_dists_f64, sq_norms_f64};
use ndarray::{Array1, Array2, ArrayView2, s};
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Conformal k-NN fraction: the smallest neighbour fraction at which enough ID references count
/// the sample as a neighbour, negated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cfood {
    /// Fraction of the fit set kept as references, in `(0, 1]` (`⌊alpha·N⌋` rows; 1 = all).
    pub alpha: f64,
    /// Fraction of the references that must count the sample as a neighbour, in `(0, 1]`.
    pub k: f64,
    /// Seed of the uniform subsample of references (only used when `alpha < 1`).
    pub seed: u64,
}

impl Default for Cfood {
    fn default() -> Self {
        Cfood {
            alpha: 0.1,
            k: 0.01,
            seed: 0,
        }
    }
}

/// Most f64 values of one block of distances (32 MiB).
const TILE: usize = 1 << 22;

/// NumPy's `linspace(start, stop, num)` with its endpoint: `i·step + start`, the last value
/// `stop` itself.
fn linspace(start: f64, stop: f64, num: usize) -> impl Iterator<Item = f64> {
    let step = (stop - start) / (num - 1) as f64;
    (0..num).map(move |i| {
        if i + 1 == num {
            stop
        } else {
            i as f64 * step + start
        }
    })
}

/// The neighbour-fraction grid of a reference set of `n` rows: `kval` and the ranks `kpos`
/// (steps 3 of the module doc).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KGrid {
    pub(crate) kval: Vec<f64>,
    pub(crate) kpos: Vec<usize>,
}

impl KGrid {
    pub(crate) fn new(n: usize) -> KGrid {
        let all: Vec<f64> = linspace(0.001, 0.1, 100)
            .chain(linspace(0.105, 0.5, 81))
            .chain(linspace(0.51, 0.99, 49))
            .collect();
        // `as i64` truncates toward zero, as NumPy's cast to int.
        let pos: Vec<i64> = all.iter().map(|&v| (v * n as f64 - 1.0) as i64).collect();
        let (mut kval, mut kpos) = (Vec::new(), Vec::new());
        for (i, (&v, &p)) in all.iter().zip(&pos).enumerate() {
            if i == 0 || pos[i - 1] < p {
                kval.push(v);
                kpos.push(p.max(0) as usize);
            }
        }
        KGrid { kval, kpos }
    }
}

/// Reference-set size: all `total` rows for `alpha ≥ 1`, else `⌊alpha·total⌋`.
fn reference_size(total: usize, alpha: f64) -> usize {
    if alpha >= 1.0 {
        total
    } else {
        (alpha * total as f64) as usize
    }
}

/// The sorted fit-row indices of the references (`None`: every row).
pub(crate) fn reference_rows(total: usize, n: usize, seed: u64) -> Option<Vec<usize>> {
    (n < total).then(|| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut idx = rand::seq::index::sample(&mut rng, total, n).into_vec();
        idx.sort_unstable();
        idx
    })
}

/// Rows of `x` in f64, each divided by `‖row‖ + 1e-10` (OpenOOD's normaliser).
fn normalise(x: ArrayView2<'_, f32>) -> Array2<f64> {
    let mut y = x.mapv(|v| v as f64);
    for mut r in y.rows_mut() {
        let norm = r.dot(&r).sqrt();
        r /= norm + 1e-10;
    }
    y
}

/// Writes to `out[t]` the element of ascending rank `pos[t] − offset` of `v` (ranks strictly
/// increasing), reordering `v`: one `select_nth` per rank, each on the part of `v` left
/// between its neighbours' ranks.
fn select_ranks(v: &mut [f64], offset: usize, pos: &[usize], out: &mut [f64]) {
    if pos.is_empty() {
        return;
    }
    let mid = pos.len() / 2;
    let p = pos[mid] - offset;
    let (left, nth, right) = v.select_nth_unstable_by(p, f64::total_cmp);
    out[mid] = *nth;
    let (lo, hi) = out.split_at_mut(mid);
    select_ranks(left, offset, &pos[..mid], lo);
    select_ranks(right, offset + p + 1, &pos[mid + 1..], &mut hi[1..]);
}

/// Rows per block when one block of `rows` against `n` references is materialised.
fn block_rows(n: usize) -> usize {
    (TILE / n.max(1)).clamp(1, 256)
}

#[derive(Debug)]
struct CfoodScorer {
    /// `(n, d)` normalised references.
    refs: Array2<f64>,
    norms: Vec<f64>,
    /// `(n, |kval|)` row-major, each row non-decreasing.
    knndst: Vec<f64>,
    kval: Vec<f64>,
    k: f64,
    head: Head,
}

impl Cfood {
    /// The neighbour-fraction grid of a reference set of `n` rows (step 3 of the module doc):
    /// `kval` and the ranks `kpos`, duplicates dropped. Exposed so that it can be checked against
    /// NumPy.
    pub fn k_grid(n: usize) -> (Vec<f64>, Vec<usize>) {
        let g = KGrid::new(n);
        (g.kval, g.kpos)
    }

    fn check(&self) -> Result<()> {
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(Error::InvalidParameter(format!(
                "cfood alpha must be in (0, 1], got {}",
                self.alpha
            )));
        }
        if !(self.k > 0.0 && self.k <= 1.0) {
            return Err(Error::InvalidParameter(format!(
                "cfood k (a fraction of the references) must be in (0, 1], got {}",
                self.k
            )));
        }
        Ok(())
    }
}

impl Detector for Cfood {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        self.check()?;
        check_fit_data(data, head, 1)?;
        let total = data.len();
        let n = reference_size(total, self.alpha);
        let grid = KGrid::new(n);
        let last = grid.kpos.last().copied().unwrap_or(0);
        if n < 2 || last + 1 >= n {
            return Err(Error::TooFewSamples {
                what: format!(
                    "cfood reference set (alpha = {} of N = {total} fit rows; its largest \
                     neighbour rank needs at least 2 references)",
                    self.alpha
                ),
                need: 2.max(last + 2),
                got: n,
            });
        }
        let keep = reference_rows(total, n, self.seed);
        let d = data.dim();
        let mut buf: Vec<f64> = Vec::with_capacity(n * d);
        let mut start = 0usize;
        let mut next = 0usize;
        data.for_each_embedding_chunk(DEFAULT_CHUNK_ROWS, |chunk| {
            let y = normalise(chunk);
            for (i, row) in y.rows().into_iter().enumerate() {
                let take = match &keep {
                    None => true,
                    Some(keep) if next < keep.len() && keep[next] == start + i => {
                        next += 1;
                        true
                    }
                    Some(_) => false,
                };
                if take {
                    buf.extend(row.iter());
                }
            }
            start += chunk.nrows();
            Ok(())
        })?;
        let refs = Array2::from_shape_vec((n, d), buf).expect("n rows of d values");
        let norms = sq_norms_f64(refs.view());
        let klen = grid.kpos.len();
        let ranks: Vec<usize> = grid.kpos.iter().map(|&p| p + 1).collect();
        let mut knndst = vec![0.0f64; n * klen];
        let rb = block_rows(n);
        for (bi, out) in knndst.chunks_mut(rb * klen).enumerate() {
            let r0 = bi * rb;
            let rows = out.len() / klen;
            let mut dist = sq_dists_f64(
                refs.slice(s![r0..r0 + rows, ..]),
                &norms[r0..r0 + rows],
                refs.view(),
                &norms,
            );
            dist.as_slice_mut()
                .expect("fresh array")
                .par_chunks_mut(n)
                .zip(out.par_chunks_mut(klen))
                .for_each(|(row, o)| select_ranks(row, 0, &ranks, o));
        }
        Ok(Box::new(CfoodScorer {
            refs,
            norms,
            knndst,
            kval: grid.kval,
            k: self.k,
            head: head.clone(),
        }))
    }
}

impl CfoodScorer {
    /// `κ` of one query from its squared distances to the references.
    fn kappa(&self, dist: &[f64]) -> f64 {
        let klen = self.kval.len();
        let n = dist.len();
        // hist[t]: references whose first column with knndst ≥ d is t (klen: none).
        let mut hist = vec![0usize; klen + 1];
        for (row, &d) in self.knndst.chunks_exact(klen).zip(dist) {
            hist[row.partition_point(|&v| v < d)] += 1;
        }
        let mut count = 0usize;
        for (j, &h) in hist[..klen].iter().enumerate() {
            count += h;
            if count as f64 / n as f64 >= self.k {
                return self.kval[j];
            }
        }
        1.0
    }
}

impl Scorer for CfoodScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let n = self.refs.nrows();
        let qb = block_rows(n);
        let mut out = Array1::<f32>::zeros(x.len());
        let out_slice = out.as_slice_mut().expect("fresh array");
        for (bi, o) in out_slice.chunks_mut(qb).enumerate() {
            let r0 = bi * qb;
            let q = normalise(x.embeddings.slice(s![r0..r0 + o.len(), ..]));
            let qn = sq_norms_f64(q.view());
            let dist = sq_dists_f64(q.view(), &qn, self.refs.view(), &self.norms);
            dist.as_slice()
                .expect("fresh array")
                .par_chunks(n)
                .zip(o.par_iter_mut())
                .for_each(|(d, o)| *o = -self.kappa(d) as f32);
        }
        check_scores("cfood", out)
    }
}

impl DetectorParams for Cfood {
    const NAME: &'static str = "cfood";
    const ABOUT: &'static str = "smallest neighbour fraction at which a fraction k of the ID references count the sample as a neighbour, negated (OpenOOD CF-OOD)";
    /// OpenOOD's twelve `(alpha, k)` pairs, in its order (`alpha` outer, `k` inner).
    fn sweep(&self) -> Vec<Self> {
        [0.1, 0.5, 1.0]
            .into_iter()
            .flat_map(|alpha| {
                [0.001, 0.005, 0.01, 0.05].into_iter().map(move |k| Cfood {
                    alpha,
                    k,
                    seed: self.seed,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn grid_matches_numpy() {
        // From NumPy 2.4 (`posthoc_reference_e.py` checks larger n against the Rust grid).
        let g = KGrid::new(4);
        assert_eq!(g.kpos, [0, 1, 2]);
        assert_eq!(g.kval, [0.001, 0.5, 0.75]);
        let g = KGrid::new(10);
        assert_eq!(g.kpos, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            g.kval,
            [0.001, 0.20375, 0.3025, 0.40125, 0.5, 0.6, 0.7, 0.8, 0.9]
        );
        assert_eq!(KGrid::new(2).kpos, [0]);
        // n = 1000: the first segment's step 0.001 gives ranks 0..99 minus rounding casualties,
        // the grid stays strictly increasing and ends at 0.99.
        let g = KGrid::new(1000);
        assert!(g.kpos.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*g.kval.last().unwrap(), 0.99);
        assert_eq!(g.kval.len(), g.kpos.len());
    }

    #[test]
    fn select_ranks_equals_sorting() {
        let v: Vec<f64> = (0..50).map(|i| ((i * 37) % 50) as f64 * 0.5).collect();
        let mut sorted = v.clone();
        sorted.sort_by(f64::total_cmp);
        for pos in [vec![0], vec![49], vec![1, 2, 3], vec![0, 7, 20, 21, 48, 49]] {
            let mut w = v.clone();
            let mut out = vec![0.0; pos.len()];
            select_ranks(&mut w, 0, &pos, &mut out);
            let want: Vec<f64> = pos.iter().map(|&p| sorted[p]).collect();
            assert_eq!(out, want, "{pos:?}");
        }
    }

    fn square() -> (Features, Head) {
        // Four unit references at ±e1, ±e2 in 3-D: squared distances 2 to the two adjacent ones
        // and 4 to the opposite one, so every sorted row is (0, 2, 2, 4). With n = 4 the grid is
        // kpos = (0, 1, 2), kval = (0.001, 0.5, 0.75), and knndst rows are entries 1..=3:
        // (2, 2, 4).
        let head = Head::new(Array2::eye(3), Array1::zeros(3)).unwrap();
        let f = Features::with_head(
            array![
                [1.0f32, 0.0, 0.0],
                [0.0, 1.0, 0.0],
                [-1.0, 0.0, 0.0],
                [0.0, -1.0, 0.0]
            ],
            &head,
            None,
        )
        .unwrap();
        (f, head)
    }

    #[test]
    fn cfood_matches_hand_computation() {
        let (fit, head) = square();
        let r = std::f32::consts::FRAC_1_SQRT_2;
        // e1: d = (0, 2, 4, 2). (−1, −1, 0)/√2: d = (2+√2, 2+√2, 2−√2, 2−√2). e3: d = 2 to
        // every reference. (Unit rows all become `h / (1 + 1e-10)`, so the distances between
        // them are those above times the same factor: equal distances stay equal.)
        let q = Features::with_head(
            array![[1.0f32, 0.0, 0.0], [-r, -r, 0.0], [0.0, 0.0, 1.0]],
            &head,
            None,
        )
        .unwrap();
        let score = |k: f64| {
            Cfood {
                alpha: 1.0,
                k,
                seed: 0,
            }
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&q)
            .unwrap()
        };
        // k = 0.5: column 0 (knndst 2) counts 3/4, 2/4 and 4/4 of the references: κ = 0.001.
        assert_eq!(score(0.5).to_vec(), [-0.001f32, -0.001, -0.001]);
        // k = 0.6: the second query counts 2/4 in columns 0 and 1 (knndst 2), 4/4 in column 2
        // (knndst 4 ≥ 2 + √2): κ = 0.75.
        assert_eq!(score(0.6).to_vec(), [-0.001f32, -0.75, -0.001]);
        // k = 1: the first query needs every reference, the opposite one (d = 4) only in
        // column 2; the third has d = 2 = knndst in column 0 (≥ includes equality).
        assert_eq!(score(1.0).to_vec(), [-0.75f32, -0.75, -0.001]);
        // A query farther than every reference's last neighbour gets κ = 1: references at
        // distance ≤ 2 of each other, scored with a fit set whose rows are all e1 but one.
        let near = Features::with_head(
            array![
                [1.0f32, 0.0, 0.0],
                [1.0, 0.0, 0.0],
                [1.0, 0.0, 0.0],
                [0.0, 1.0, 0.0]
            ],
            &head,
            None,
        )
        .unwrap();
        let s = Cfood {
            alpha: 1.0,
            k: 1.0,
            seed: 0,
        }
        .fit(&(&near).into(), &head)
        .unwrap()
        .score(&Features::with_head(array![[-1.0f32, 0.0, 0.0]], &head, None).unwrap())
        .unwrap();
        // The e1 rows' largest knndst is 2 (to e2) < 4 = their distance to −e1.
        assert_eq!(s.to_vec(), [-1.0f32]);
    }

    #[test]
    fn cfood_subsample_is_the_alpha_one_fit_of_the_drawn_rows() {
        let head = Head::new(Array2::eye(3), Array1::zeros(3)).unwrap();
        let pts = Array2::from_shape_fn((40, 3), |(i, j)| {
            let a = i as f32 * 0.37;
            [a.cos(), a.sin(), (a * 0.5).cos() * 0.3][j]
        });
        let fit = Features::with_head(pts.clone(), &head, None).unwrap();
        let q = Features::with_head(pts.mapv(|v| v * 0.9 + 0.05), &head, None).unwrap();
        let det = Cfood {
            alpha: 0.5,
            k: 0.1,
            seed: 5,
        };
        let a = det.fit(&(&fit).into(), &head).unwrap().score(&q).unwrap();
        assert_eq!(
            a,
            det.fit(&(&fit).into(), &head).unwrap().score(&q).unwrap()
        );
        let rows = reference_rows(40, 20, 5).unwrap();
        assert_eq!(rows.len(), 20);
        let sub = fit.select(&rows);
        let b = Cfood {
            alpha: 1.0,
            ..det.clone()
        }
        .fit(&(&sub).into(), &head)
        .unwrap()
        .score(&q)
        .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn cfood_rejects_bad_params_and_tiny_reference_sets() {
        let (fit, head) = square();
        for (alpha, k) in [
            (0.0, 0.01),
            (1.5, 0.01),
            (f64::NAN, 0.01),
            (0.5, 0.0),
            (0.5, 1.5),
        ] {
            let e = Cfood { alpha, k, seed: 0 }
                .fit(&(&fit).into(), &head)
                .err()
                .unwrap();
            assert!(matches!(e, Error::InvalidParameter(_)), "{e}");
        }
        // alpha = 0.25 of 4 rows keeps one reference: no neighbour to rank.
        let e = Cfood {
            alpha: 0.25,
            ..Cfood::default()
        }
        .fit(&(&fit).into(), &head)
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("alpha = 0.25 of N = 4 fit rows") && e.contains("got 1"),
            "{e}"
        );
    }

    #[test]
    fn cfood_sweep_is_openoods_list() {
        let g = Cfood::default().sweep();
        let pairs: Vec<(f64, f64)> = g.iter().map(|c| (c.alpha, c.k)).collect();
        assert_eq!(pairs.len(), 12);
        assert_eq!(pairs[0], (0.1, 0.001));
        assert_eq!(pairs[3], (0.1, 0.05));
        assert_eq!(pairs[4], (0.5, 0.001));
        assert_eq!(pairs[11], (1.0, 0.05));
    }
}
