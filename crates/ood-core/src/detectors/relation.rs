//! Relation: Kim, Yun & Song, "Neural Relation Graph: A Unified Framework for Identifying Label
//! Noise and Outlier Data", NeurIPS 2023, arXiv:2301.12321, <https://arxiv.org/abs/2301.12321>;
//! OpenOOD key `relation` (`relation_postprocessor.py`, code borrowed from
//! `snu-mllab/Neural-Relation-Graph`).
//!
//! Fit: the bank is every fit row's L2-normalised feature `f̂_i = h_i/‖h_i‖` and softmax
//! probability vector `p_i = softmax(z_i)` (OpenOOD: the ID-**train** set).
//!
//! Score: with the kernel `r_i(x) = max(⟨f̂, f̂_i⟩, 0) · ⟨p, p_i⟩ ∈ [0, 1]`,
//! `s(x) = Σ_i 1[r_i > thres] · r_i^pow`: the summed strength of the query's edges to the ID
//! bank in the relation graph, small edges cut off. Higher = more in-distribution.
//!
//! Defaults from OpenOOD `relation.yml` and `get_relation`: `pow = 1`, `threshold = 0.03`;
//! sweep `pow ∈ {1, 2, 4, 6, 8}`. `pow` must be finite and `≥ 0` (0 counts the edges),
//! `threshold` finite and `≥ 0`.
//!
//! Float32 ranking: an ID score is a sum over thousands of edges, large and tightly clustered
//! (with a confident head, 290 ± 1 on the conformance blobs), so float32 would tie distinct
//! sums. With `centre = true` (default) the score is `s(x) − s̄`, where `s̄` is the fit-time mean
//! score of the bank rows `⌊i·N/m⌋`, `i < m = min(N, 256)` (computed in f64, like every sum
//! here): a constant shift, so the ranking and every metric are OpenOOD's; `centre = false`
//! returns OpenOOD's values.
//!
//! Differences from OpenOOD's code: its normaliser is `h/sqrt(‖h‖² + 1e-10)`; we use plain
//! `h/‖h‖` (a zero row stays zero); the relative difference, `5e-11/‖h‖²`, is below f32
//! resolution for any feature of norm above 0.03. OpenOOD also writes `sign(r)·|r|^pow` with `|r| > thres`; the kernel is never
//! negative (the feature similarity is clamped at 0 and probabilities are non-negative), so that
//! is `r^pow` for `r > thres`, as here.
//!
//! Implementation: the bank (`N·(d + c)` f32) is held in memory, as in OpenOOD; scoring never
//! materialises the query × bank matrix: query blocks are multiplied against bank tiles with
//! faer's GEMM ([`crate::linalg::gemm_nt_into`], f32 like OpenOOD's torch matmuls) into two
//! bounded per-thread tiles (256 × 4096 floats each), and each edge is thresholded and summed
//! in f64. Query blocks run in parallel. [`RelationScorer`] gives the scores of several `pow`
//! from one pass (the sweep costs one pass). Fit streams the data chunk by chunk. Checked
//! against NumPy (`tests/data/posthoc_reference_d.py`, `tests/posthoc_golden_d.rs`) and by hand
//! below.

use super::{DetectorParams, GridScores};
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores, softmax};
use crate::error::{Error, Result};
use crate::features::{DEFAULT_CHUNK_ROWS, Features, FitData, Head};
use crate::linalg::{gemm_nt_into, normalize_in_place, normalize_rows};
use ndarray::{Array1, Array2, ArrayView2};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Neural relation graph: summed kernel edges (feature cosine × probability overlap) to the ID set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Relation {
    /// Exponent applied to every kept edge (1 in OpenOOD).
    pub pow: f64,
    /// Edges at or below this value are cut (0.03 in OpenOOD's `get_relation`).
    pub threshold: f64,
    /// Subtract the fit-time constant `s̄` (the mean score of up to 256 evenly spaced fit rows)
    /// so that float32 keeps the ranking of large, tightly clustered sums (default true; false
    /// gives OpenOOD's values). The ranking and every metric are the same either way.
    pub centre: bool,
}

impl Default for Relation {
    fn default() -> Self {
        Relation {
            pow: 1.0,
            threshold: 0.03,
            centre: true,
        }
    }
}

impl Relation {
    fn validate(&self) -> Result<()> {
        if !(self.pow >= 0.0 && self.pow.is_finite()) {
            return Err(Error::InvalidParameter(format!(
                "relation pow must be finite and >= 0, got {}",
                self.pow
            )));
        }
        if !(self.threshold >= 0.0 && self.threshold.is_finite()) {
            return Err(Error::InvalidParameter(format!(
                "relation threshold must be finite and >= 0, got {}",
                self.threshold
            )));
        }
        Ok(())
    }

    /// Fits and returns the concrete scorer (for [`RelationScorer::scores_for_pows`]).
    pub fn fit_relation(&self, data: &FitData<'_>, head: &Head) -> Result<RelationScorer> {
        self.fit_relation_chunked(data, head, DEFAULT_CHUNK_ROWS)
    }

    fn fit_relation_chunked(
        &self,
        data: &FitData<'_>,
        head: &Head,
        chunk_rows: usize,
    ) -> Result<RelationScorer> {
        self.validate()?;
        check_fit_data(data, head, 1)?;
        let (n, d, c) = (data.len(), data.dim(), head.num_classes());
        let mut feats: Vec<f32> = Vec::with_capacity(n * d);
        let mut probs: Vec<f32> = Vec::with_capacity(n * c);
        data.for_each_chunk(chunk_rows, |chunk| {
            for (h, z) in chunk.embeddings.rows().into_iter().zip(chunk.logits.rows()) {
                let at = feats.len();
                feats.extend(h.iter());
                normalize_in_place(&mut feats[at..]);
                probs.extend(softmax(&z.to_vec()).into_iter().map(|p| p as f32));
            }
            Ok(())
        })?;
        let mut scorer = RelationScorer {
            feats,
            probs,
            n,
            pow: self.pow,
            threshold: self.threshold,
            offset: 0.0,
            head: head.clone(),
        };
        if self.centre {
            scorer.offset = scorer.offsets(&[self.pow])[0];
        }
        Ok(scorer)
    }
}

impl Detector for Relation {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        Ok(Box::new(self.fit_relation(data, head)?))
    }
}

/// Fitted Relation: the normalised bank features and probabilities.
#[derive(Debug)]
pub struct RelationScorer {
    /// `(n, d)` row-major normalised features.
    feats: Vec<f32>,
    /// `(n, c)` row-major softmax probabilities.
    probs: Vec<f32>,
    n: usize,
    pow: f64,
    threshold: f64,
    /// `s̄` subtracted from every score (0 without `centre`).
    offset: f64,
    head: Head,
}

/// Fit rows whose mean score is the `centre` offset.
const OFFSET_ROWS: usize = 256;

/// Query rows per block and bank rows per tile of the scoring pass.
const QUERY_BLOCK: usize = 256;
const BANK_BLOCK: usize = 4096;

impl RelationScorer {
    /// `(rows, pows.len())` scores of `x`, column `j` with exponent `pows[j]` (and the fitted
    /// threshold), from one pass over the bank.
    /// without the `centre` offset.
    pub fn scores_for_pows(&self, x: &Features, pows: &[f64]) -> Result<Array2<f64>> {
        check_input(x, &self.head)?;
        let q = normalize_rows(x.embeddings.view());
        let p = probabilities(x.logits.view());
        Ok(self.kernel_sums(
            q.as_slice().expect("standard layout"),
            p.as_slice().expect("standard layout"),
            pows,
        ))
    }

    /// For each `pows[j]`, the mean score of the bank rows `⌊i·N/m⌋`, `i < m = min(N, 256)`:
    /// the `centre` offset `s̄`.
    fn offsets(&self, pows: &[f64]) -> Vec<f64> {
        let (d, c) = (self.head.dim(), self.head.num_classes());
        let m = self.n.min(OFFSET_ROWS);
        let rows: Vec<usize> = (0..m).map(|i| i * self.n / m).collect();
        let q: Vec<f32> = rows
            .iter()
            .flat_map(|&r| &self.feats[r * d..(r + 1) * d])
            .copied()
            .collect();
        let p: Vec<f32> = rows
            .iter()
            .flat_map(|&r| &self.probs[r * c..(r + 1) * c])
            .copied()
            .collect();
        let s = self.kernel_sums(&q, &p, pows);
        s.mean_axis(ndarray::Axis(0))
            .expect("at least one fit row")
            .to_vec()
    }

    /// `(rows, pows.len())` kernel sums of normalised query rows `qs` (row-major, `d` wide) with
    /// probabilities `ps` (row-major, `c` wide).
    fn kernel_sums(&self, qs: &[f32], ps: &[f32], pows: &[f64]) -> Array2<f64> {
        let (d, c) = (self.head.dim(), self.head.num_classes());
        let nq = qs.len() / d;
        let np = pows.len();
        let mut out = Array2::<f64>::zeros((nq, np));
        if np == 0 || nq == 0 {
            return out;
        }
        let bb = BANK_BLOCK.min(self.n).max(1);
        let threads = rayon::current_num_threads().max(1);
        let qb = QUERY_BLOCK.min(nq.div_ceil(threads)).max(1);
        let gemm_parallel = nq.div_ceil(qb) < threads;
        let thr = self.threshold;
        let work = |tiles: &mut (Vec<f32>, Vec<f32>), (bi, out_blk): (usize, &mut [f64])| {
            let r0 = bi * qb;
            let rows = out_blk.len() / np;
            let qblk = &qs[r0 * d..(r0 + rows) * d];
            let pblk = &ps[r0 * c..(r0 + rows) * c];
            let mut b0 = 0;
            while b0 < self.n {
                let bn = (self.n - b0).min(bb);
                let dots = &mut tiles.0[..rows * bn];
                let sims = &mut tiles.1[..rows * bn];
                gemm_nt_into(
                    qblk,
                    &self.feats[b0 * d..(b0 + bn) * d],
                    d,
                    dots,
                    gemm_parallel,
                );
                gemm_nt_into(
                    pblk,
                    &self.probs[b0 * c..(b0 + bn) * c],
                    c,
                    sims,
                    gemm_parallel,
                );
                for ((dr, sr), o) in dots
                    .chunks_exact(bn)
                    .zip(sims.chunks_exact(bn))
                    .zip(out_blk.chunks_exact_mut(np))
                {
                    for (&dot, &sim) in dr.iter().zip(sr) {
                        let r = dot.max(0.0) as f64 * sim as f64;
                        if r > thr {
                            for (acc, &pw) in o.iter_mut().zip(pows) {
                                *acc += edge(r, pw);
                            }
                        }
                    }
                }
                b0 += bn;
            }
        };
        let tile_len = qb * bb;
        let out_slice = out.as_slice_mut().expect("fresh array");
        if gemm_parallel {
            let mut tiles = (vec![0.0f32; tile_len], vec![0.0f32; tile_len]);
            out_slice
                .chunks_mut(qb * np)
                .enumerate()
                .for_each(|job| work(&mut tiles, job));
        } else {
            out_slice
                .par_chunks_mut(qb * np)
                .enumerate()
                .for_each_init(|| (vec![0.0f32; tile_len], vec![0.0f32; tile_len]), work);
        }
        out
    }
}

/// `r^pow` (integer powers exactly by repeated multiplication).
fn edge(r: f64, pow: f64) -> f64 {
    if pow == 1.0 {
        r
    } else if pow.fract() == 0.0 && pow <= 64.0 {
        r.powi(pow as i32)
    } else {
        r.powf(pow)
    }
}

/// Row-wise softmax of logits, as a standard-layout f32 array.
fn probabilities(z: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut p = Array2::<f32>::zeros(z.dim());
    for (mut pr, zr) in p.rows_mut().into_iter().zip(z.rows()) {
        for (o, v) in pr.iter_mut().zip(softmax(&zr.to_vec())) {
            *o = v as f32;
        }
    }
    p
}

impl Scorer for RelationScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        let s = self.scores_for_pows(x, &[self.pow])?;
        check_scores("relation", s.column(0).mapv(|v| (v - self.offset) as f32))
    }
}

impl DetectorParams for Relation {
    const NAME: &'static str = "relation";
    const ABOUT: &'static str = "summed relation-graph edges (feature cosine x probability overlap) to the ID set (Kim et al., NeurIPS'23)";
    fn sweep(&self) -> Vec<Self> {
        [1.0, 2.0, 4.0, 6.0, 8.0]
            .into_iter()
            .map(|pow| Relation {
                pow,
                ..self.clone()
            })
            .collect()
    }

    /// Validation scores of a `pow`-grid from one bank and one pass per set (the kernel does not
    /// depend on `pow`). `None` when the candidates do not share a threshold.
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
            .any(|r| r.threshold != first.threshold || r.validate().is_err())
        {
            return None;
        }
        let scorer = first.fit_relation(fit, head).ok()?;
        let pows: Vec<f64> = grid.iter().map(|r| r.pow).collect();
        let offsets: Vec<f64> = if grid.iter().any(|r| r.centre) {
            scorer.offsets(&pows)
        } else {
            vec![0.0; pows.len()]
        };
        let id = scorer.scores_for_pows(val_id, &pows);
        let ood = scorer.scores_for_pows(val_ood, &pows);
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
        Some(
            grid.iter()
                .enumerate()
                .map(|(j, r)| {
                    let off = if r.centre { offsets[j] } else { 0.0 };
                    Ok((
                        check_scores("relation", id.column(j).mapv(|v| (v - off) as f32))?,
                        check_scores("relation", ood.column(j).mapv(|v| (v - off) as f32))?,
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

    #[test]
    fn relation_matches_hand_computation() {
        // Identity head on 2-D features, zero logits scale: logits = features.
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        // Bank: h1 = (ln 3, 0) → f̂1 = (1, 0), p1 = (3/4, 1/4); h2 = (0, ln 3) → f̂2 = (0, 1),
        // p2 = (1/4, 3/4).
        let l3 = 3.0f32.ln();
        let fit = Features::with_head(array![[l3, 0.0], [0.0, l3]], &head, None).unwrap();
        // Query (a, a) with a = ln 3: f̂ = (1, 1)/√2, p = (1/2, 1/2):
        // r1 = (1/√2)·(1/2) = 0.353553, r2 = the same; s = 0.707107 (pow 1), 2·0.125 = 0.25 (pow 2).
        // Query (−a, 0): cosines −1 and 0 → r = 0 for both: s = 0.
        // Query (2a, 0): f̂ = (1, 0), p = (9/10, 1/10): r1 = 1·(27/40 + 1/40) = 0.7,
        // r2 = 0 (orthogonal); s = 0.7 (pow 1), 0.49 (pow 2).
        let test = Features::with_head(array![[l3, l3], [-l3, 0.0], [2.0 * l3, 0.0]], &head, None)
            .unwrap();
        let sc = Relation::default()
            .fit_relation(&(&fit).into(), &head)
            .unwrap();
        let s = sc.scores_for_pows(&test, &[1.0, 2.0]).unwrap();
        let want = [[2.0 * 0.5f64.sqrt() * 0.5, 0.25], [0.0, 0.0], [0.7, 0.49]];
        for (i, w) in want.iter().enumerate() {
            for j in 0..2 {
                assert!((s[[i, j]] - w[j]).abs() < 1e-6, "{i},{j}: {}", s[[i, j]]);
            }
        }
        // A threshold above 0.36 cuts the two edges of the first query.
        let s = Relation {
            pow: 1.0,
            threshold: 0.36,
            centre: false,
        }
        .fit(&(&fit).into(), &head)
        .unwrap()
        .score(&test)
        .unwrap();
        assert!(s[0] == 0.0 && (s[2] - 0.7).abs() < 1e-6);
        // Centred: the two bank rows score 0.625 each (an edge to itself, f̂ = (1, 0) with
        // p = (3/4, 1/4): 9/16 + 1/16; 0 to the other), so s̄ = 0.625.
        let s = Relation::default()
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&test)
            .unwrap();
        assert!(
            (s[1] + 0.625).abs() < 1e-6 && (s[2] - 0.075).abs() < 1e-6,
            "{s}"
        );
    }

    #[test]
    fn relation_single_rows_equal_the_batch() {
        // One query row takes the path where the GEMM itself runs in parallel; a bank larger
        // than one tile is summed over several tiles.
        let d = 6;
        let head = Head::new(Array2::eye(d), Array1::zeros(d)).unwrap();
        let mut state = 7u64;
        let mut rnd = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.3
        };
        let bank = Array2::from_shape_fn((BANK_BLOCK + 37, d), |_| rnd());
        let q = Array2::from_shape_fn((9, d), |_| rnd());
        let fit = Features::with_head(bank, &head, None).unwrap();
        let test = Features::with_head(q, &head, None).unwrap();
        let sc = Relation::default().fit(&(&fit).into(), &head).unwrap();
        let all = sc.score(&test).unwrap();
        for i in 0..test.len() {
            let one = sc.score(&test.slice(i, i + 1)).unwrap()[0];
            assert!(
                (one - all[i]).abs() <= 1e-5 * all[i].abs().max(1.0),
                "{i}: {one} vs {}",
                all[i]
            );
        }
    }

    #[test]
    fn relation_rejects_bad_params() {
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let fit = Features::with_head(array![[1.0f32, 2.0]], &head, None).unwrap();
        for (pow, threshold) in [
            (-1.0, 0.03),
            (f64::NAN, 0.03),
            (1.0, -0.1),
            (1.0, f64::INFINITY),
        ] {
            assert!(matches!(
                Relation {
                    pow,
                    threshold,
                    centre: true
                }
                .fit(&(&fit).into(), &head),
                Err(Error::InvalidParameter(_))
            ));
        }
    }
}
