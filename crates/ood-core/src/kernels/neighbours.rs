//! Exact blocked nearest-neighbour search over an f32 bank.
//!
//! A [`Bank`] holds `(n, d)` rows row-major plus their squared norms; [`search_smallest`] finds,
//! for every query row, the `k` smallest keys over the bank (squared L2 distances or negated inner
//! products, see [`Metric`]), exactly and without materialising the query × bank matrix: query
//! blocks are multiplied against bank tiles with faer's GEMM ([`crate::linalg::gemm_nt_into`])
//! into a bounded per-thread tile ([`Tiles`]), and each row keeps its candidates under a running
//! threshold. Used by [`Knn`](crate::detectors::Knn) (k-th squared L2 distance, several `k` from
//! one search) and [`NnGuide`](crate::detectors::NnGuide) (largest inner products).
//!
//! [`sq_dists_f64`] is the f64 counterpart for detectors whose scores compare or report small
//! distances exactly ([`Cfood`](crate::detectors::Cfood), [`Grood`](crate::detectors::Grood)):
//! one block of query rows against a block of reference rows, from one f64 GEMM.

use crate::error::Result;
use crate::features::FitData;
use crate::linalg::{gemm_nt_into, matmul_transb_f64, normalize_in_place};
use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

/// Block sizes of the blocked search.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tiles {
    pub(crate) query_block: usize,
    pub(crate) bank_block: usize,
}

impl Default for Tiles {
    fn default() -> Self {
        Tiles {
            query_block: 512,
            bank_block: 4096,
        }
    }
}

/// A row-major `(n, d)` f32 bank with the squared norm of every row.
#[derive(Debug, Clone)]
pub(crate) struct Bank {
    pub(crate) data: Vec<f32>,
    pub(crate) norms: Vec<f32>,
    pub(crate) n: usize,
    pub(crate) d: usize,
}

impl Bank {
    /// The bank from rows that are already final (no normalisation).
    pub(crate) fn from_rows(rows: ArrayView2<'_, f32>) -> Bank {
        let (n, d) = rows.dim();
        let data: Vec<f32> = rows.iter().copied().collect();
        Bank::from_vec(data, n, d)
    }

    fn from_vec(data: Vec<f32>, n: usize, d: usize) -> Bank {
        let norms = if d == 0 {
            vec![0.0; n]
        } else {
            data.chunks_exact(d).map(sq_norm).collect()
        };
        Bank { data, norms, n, d }
    }

    /// Streams the (normalised) features of the rows in `keep` (all rows when `None`) from the
    /// fit data, one chunk at a time.
    pub(crate) fn from_fit_data(
        data: &FitData<'_>,
        keep: Option<&[usize]>,
        m: usize,
        chunk_rows: usize,
    ) -> Result<Bank> {
        let d = data.dim();
        let mut buf: Vec<f32> = Vec::with_capacity(m * d);
        let mut start = 0usize;
        let mut next = 0usize; // position in `keep`
        data.for_each_embedding_chunk(chunk_rows, |chunk| {
            let end = start + chunk.nrows();
            for (i, row) in chunk.rows().into_iter().enumerate() {
                let take = match keep {
                    None => true,
                    Some(keep) if next < keep.len() && keep[next] == start + i => {
                        next += 1;
                        true
                    }
                    Some(_) => false,
                };
                if take {
                    let at = buf.len();
                    buf.extend(row.iter());
                    normalize_in_place(&mut buf[at..]);
                }
            }
            start = end;
            Ok(())
        })?;
        debug_assert_eq!(buf.len(), m * d);
        Ok(Bank::from_vec(buf, m, d))
    }
}

fn sq_norm(r: &[f32]) -> f32 {
    r.iter().map(|&v| v * v).sum()
}

/// What the search ranks by (it keeps the smallest keys).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Metric {
    /// Key = `‖q‖² + ‖b‖² − 2⟨q, b⟩`, clamped at 0 (faiss `IndexFlatL2`).
    SquaredL2,
    /// Key = `−⟨q, b⟩` (faiss `IndexFlatIP`, largest inner products first).
    NegInnerProduct,
}

/// Exact blocked search: for every row of `queries` (standard layout) finds the `k` smallest
/// keys over the bank, sorts them ascending and hands them to `reduce`, which writes `out_cols`
/// values for that row. Memory: one `query_block × bank_block` tile and `2k` candidates per
/// query row of a block, per thread.
pub(crate) fn search_smallest(
    queries: ArrayView2<'_, f32>,
    bank: &Bank,
    k: usize,
    metric: Metric,
    tiles: Tiles,
    out_cols: usize,
    reduce: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Array2<f32> {
    let (nq, d) = queries.dim();
    assert_eq!(d, bank.d, "query and bank dimensions agree");
    assert!(k >= 1 && k <= bank.n, "1 <= k <= bank size");
    let mut out = Array2::<f32>::zeros((nq, out_cols));
    if nq == 0 || out_cols == 0 {
        return out;
    }
    let queries = queries.as_standard_layout();
    let qs = queries.as_slice().expect("standard layout");
    let bb = tiles.bank_block.min(bank.n).max(1);
    let threads = rayon::current_num_threads().max(1);
    // Enough query blocks to keep every thread busy, but never more rows than asked.
    let qb = tiles.query_block.min(nq.div_ceil(threads)).max(1).min(nq);
    let nblocks = nq.div_ceil(qb);
    // Too few blocks to occupy the pool: run blocks in turn and let the GEMM go parallel.
    let gemm_parallel = nblocks < threads;
    let out_slice = out.as_slice_mut().expect("fresh array");
    let work = |tile: &mut Vec<f32>, (bi, out_blk): (usize, &mut [f32])| {
        let r0 = bi * qb;
        let rows = (nq - r0).min(qb);
        let qblk = &qs[r0 * d..(r0 + rows) * d];
        let qnorms: Vec<f32> = if d == 0 {
            vec![0.0; rows]
        } else {
            qblk.chunks_exact(d).map(sq_norm).collect()
        };
        let cap = (2 * k).max(k + 64);
        let mut cands: Vec<Vec<f32>> = (0..rows).map(|_| Vec::with_capacity(cap)).collect();
        let mut thr = vec![f32::INFINITY; rows];
        let mut b0 = 0;
        while b0 < bank.n {
            let bn = (bank.n - b0).min(bb);
            let t = &mut tile[..rows * bn];
            if d == 0 {
                t.fill(0.0);
            } else {
                gemm_nt_into(qblk, &bank.data[b0 * d..(b0 + bn) * d], d, t, gemm_parallel);
            }
            let bnorms = &bank.norms[b0..b0 + bn];
            for (r, ips) in t.chunks_exact_mut(bn).enumerate() {
                let c = &mut cands[r];
                let th = &mut thr[r];
                let qn = qnorms[r];
                // Turn the inner products into keys in place (a vectorised pass).
                match metric {
                    Metric::SquaredL2 => {
                        for (v, &bn2) in ips.iter_mut().zip(bnorms) {
                            *v = (qn + bn2 - 2.0 * *v).max(0.0);
                        }
                    }
                    Metric::NegInnerProduct => ips.iter_mut().for_each(|v| *v = -*v),
                }
                // Most groups of 32 keys hold nothing below the running threshold once the
                // buffer has filled: test the group with a branch-free OR first.
                for group in ips.chunks(32) {
                    let t0 = *th;
                    if !group.iter().fold(false, |acc, &key| acc | (key < t0)) {
                        continue;
                    }
                    for &key in group {
                        if key < *th {
                            c.push(key);
                            if c.len() == cap {
                                c.select_nth_unstable_by(k - 1, f32::total_cmp);
                                c.truncate(k);
                                *th = c[k - 1];
                            }
                        }
                    }
                }
            }
            b0 += bn;
        }
        for (c, o) in cands.iter_mut().zip(out_blk.chunks_exact_mut(out_cols)) {
            if c.len() > k {
                c.select_nth_unstable_by(k - 1, f32::total_cmp);
                c.truncate(k);
            }
            c.sort_unstable_by(f32::total_cmp);
            reduce(c, o);
        }
    };
    let tile_len = qb * bb;
    if gemm_parallel {
        let mut tile = vec![0.0f32; tile_len];
        out_slice
            .chunks_mut(qb * out_cols)
            .enumerate()
            .for_each(|job| work(&mut tile, job));
    } else {
        out_slice
            .par_chunks_mut(qb * out_cols)
            .enumerate()
            .for_each_init(|| vec![0.0f32; tile_len], work);
    }
    out
}

/// The squared L2 norm of every row of `x`.
pub(crate) fn sq_norms_f64(x: ArrayView2<'_, f64>) -> Vec<f64> {
    x.rows().into_iter().map(|r| r.dot(&r)).collect()
}

/// `(q, b)` squared L2 distances in f64 between the rows of `q` and the rows of `b`, given their
/// squared norms `qn` and `bn`: `‖q‖² + ‖b‖² − 2⟨q, b⟩` from one GEMM, clamped at 0. The
/// callers bound the block sizes (the result is materialised).
pub(crate) fn sq_dists_f64(
    q: ArrayView2<'_, f64>,
    qn: &[f64],
    b: ArrayView2<'_, f64>,
    bn: &[f64],
) -> Array2<f64> {
    debug_assert_eq!((q.nrows(), b.nrows()), (qn.len(), bn.len()));
    let mut ip = matmul_transb_f64(q, b);
    for (mut row, &a) in ip.rows_mut().into_iter().zip(qn) {
        for (v, &c) in row.iter_mut().zip(bn) {
            *v = (a + c - 2.0 * *v).max(0.0);
        }
    }
    ip
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::normalize_rows;

    #[test]
    fn knn_blocked_search_equals_brute_force_for_any_tiles() {
        // Pseudo-random data; every tile shape must give the brute-force answer.
        let (n, nq, d) = (97, 23, 7);
        let mut state = 12345u64;
        let mut rnd = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let b = Array2::from_shape_fn((n, d), |_| rnd());
        let q = Array2::from_shape_fn((nq, d), |_| rnd());
        let bank = Bank::from_rows(normalize_rows(b.view()).view());
        let qn = normalize_rows(q.view());
        let k = 9;
        let mut want = Array2::<f32>::zeros((nq, k));
        for i in 0..nq {
            let mut ds: Vec<f32> = (0..n)
                .map(|j| {
                    (0..d)
                        .map(|t| (qn[[i, t]] - bank.data[j * d + t]).powi(2))
                        .sum()
                })
                .collect();
            ds.sort_by(f32::total_cmp);
            for t in 0..k {
                want[[i, t]] = ds[t];
            }
        }
        for (qb, bb) in [(1, 1), (4, 10), (23, 97), (256, 4096), (5, 33)] {
            let got = search_smallest(
                qn.view(),
                &bank,
                k,
                Metric::SquaredL2,
                Tiles {
                    query_block: qb,
                    bank_block: bb,
                },
                k,
                |s, o| o.copy_from_slice(s),
            );
            for (a, w) in got.iter().zip(want.iter()) {
                assert!((a - w).abs() < 1e-5, "tiles {qb}x{bb}: {a} vs {w}");
            }
            // A single query takes the path where the GEMM itself runs in parallel.
            let one = search_smallest(
                qn.slice(ndarray::s![5..6, ..]),
                &bank,
                k,
                Metric::SquaredL2,
                Tiles {
                    query_block: qb,
                    bank_block: bb,
                },
                k,
                |s, o| o.copy_from_slice(s),
            );
            for (a, w) in one.iter().zip(want.row(5).iter()) {
                assert!(
                    (a - w).abs() < 1e-5,
                    "single query, tiles {qb}x{bb}: {a} vs {w}"
                );
            }
        }
    }

    #[test]
    fn f64_distances_equal_direct_differences() {
        let q = ndarray::array![[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]];
        let b = ndarray::array![[1.0, 2.0, 0.5], [2.0, 0.0, 0.0], [-1.0, 1.0, 1.0]];
        let d = sq_dists_f64(
            q.view(),
            &sq_norms_f64(q.view()),
            b.view(),
            &sq_norms_f64(b.view()),
        );
        for i in 0..2 {
            for j in 0..3 {
                let want: f64 = (0..3).map(|t| (q[[i, t]] - b[[j, t]]).powi(2)).sum();
                assert!(
                    (d[[i, j]] - want).abs() < 1e-12,
                    "{i},{j}: {} vs {want}",
                    d[[i, j]]
                );
            }
        }
        assert_eq!(d[[0, 0]], 0.0);
    }
}
