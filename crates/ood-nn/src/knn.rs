//! The KNN detector's neighbour search on libtorch (any device: a GPU with `--device cuda`, or
//! the CPU), installed into [`ood_core::detectors::knn`] with [`install`]; the detector itself
//! stays in ood-core and sees only numbers.
//!
//! What it computes is what the CPU search computes: for each query row, the `k`-th smallest
//! squared L2 distance `‖q‖² + ‖b‖² − 2⟨q, b⟩` (clamped at 0) to the bank, for several `k` at once.
//! Queries go in blocks against bank tiles; each tile's distances are cut to the running best
//! with `topk`, so the query × bank matrix is never materialised.
//!
//! **Screening** ([`Screen::Bf16`], [`Screen::F16`]): the tile products run in reduced precision
//! (tensor cores on a GPU; AVX512-BF16/AMX on a CPU), keeping the `c = k + margin` best
//! candidates and the `(c+1)`-th approximate distance as a boundary; the candidates are then
//! re-ranked with exact f32 arithmetic. With `q̃, b̃` the rounded vectors, `⟨q̃, b̃⟩` accumulated
//! in f32 differs from `⟨q, b⟩` by at most
//! `‖q−q̃‖·‖b̃‖ + ‖q̃‖·‖b−b̃‖ + ‖q−q̃‖·‖b−b̃‖ + d·2⁻²⁴·‖q̃‖·‖b̃‖`, with the rounding errors
//! measured (per query, and the bank's maxima), so an approximate distance is within
//! `ε(q)`, twice that plus the f32 rounding of the distance formula, of the exact one. A row
//! whose exact `k`-th candidate distance is at most `boundary − ε(q)` has its exact answer
//! among the candidates (every point left out is at least that far away exactly); every other
//! row is searched again exactly. So screening changes the time, never the result. The bound
//! assumes f32 accumulation of the reduced-precision products, which the CPU's oneDNN kernels
//! do; cuBLAS may reduce in reduced precision unless told otherwise, so CUDA runs
//! [`Screen::Exact`] by default (f32 GEMMs, which a GPU runs fast enough for the KNN
//! paper's ImageNet setting).

use crate::error::{Error, Result};
use ndarray::{Array2, ArrayView2};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tch::{Device, Kind, Tensor};

/// Arithmetic of the tile products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// f32 products throughout (the exact search).
    Exact,
    /// bf16 products, candidates re-ranked in f32.
    Bf16,
    /// f16 products, candidates re-ranked in f32.
    F16,
}

impl Screen {
    fn kind(self) -> Option<Kind> {
        match self {
            Screen::Exact => None,
            Screen::Bf16 => Some(Kind::BFloat16),
            Screen::F16 => Some(Kind::Half),
        }
    }
}

/// The search engine: a device, a screening mode and the tile sizes.
#[derive(Debug, Clone)]
pub struct TorchKnn {
    device: Device,
    screen: Screen,
    /// Query rows per block.
    pub query_block: i64,
    /// Bank rows per tile.
    pub bank_block: i64,
    /// Extra candidates kept per row beyond `k` when screening.
    pub margin: i64,
    /// Query rows the screening bound could not certify, searched again exactly (a count over
    /// this engine's life, for tests and diagnostics).
    rechecked: Arc<AtomicUsize>,
}

impl TorchKnn {
    /// An engine on `device` (blocks of 1,024 queries against tiles of 65,536 bank rows; 64 extra
    /// candidates when screening).
    pub fn new(device: Device, screen: Screen) -> Self {
        TorchKnn {
            device,
            screen,
            query_block: 1024,
            bank_block: 65_536,
            margin: 64,
            rechecked: Arc::default(),
        }
    }

    /// Query rows searched again exactly because the screening bound could not certify them.
    pub fn rechecked_rows(&self) -> usize {
        self.rechecked.load(Ordering::Relaxed)
    }

    /// For every row of `queries`, the `ks[j]`-th smallest squared L2 distance to the rows of
    /// `bank` in column `j` (`1 <= k <= bank rows`).
    pub fn kth_distances(
        &self,
        bank: ArrayView2<'_, f32>,
        queries: ArrayView2<'_, f32>,
        ks: &[usize],
    ) -> Result<Array2<f32>> {
        let (n, d) = bank.dim();
        let nq = queries.nrows();
        if queries.ncols() != d {
            return Err(Error::Config(format!(
                "knn search: queries have {} columns, the bank {d}",
                queries.ncols()
            )));
        }
        if let Some(&bad) = ks.iter().find(|&&k| k == 0 || k > n) {
            return Err(Error::Config(format!(
                "knn search: k must be in 1..={n}, got {bad}"
            )));
        }
        let kmax = ks.iter().copied().max().unwrap_or(0) as i64;
        let mut out = Array2::<f32>::zeros((nq, ks.len()));
        if nq == 0 || kmax == 0 {
            return Ok(out);
        }
        let b = to_tensor(bank)?.to_device(self.device);
        let b_norms = (&b * &b).sum_dim_intlist(1, false, Kind::Float);
        let b_low = self.screen.kind().map(|k| b.to_kind(k));
        // max ‖b̃‖ and max ‖b − b̃‖ over the bank, for the screening bound.
        let b_bound = b_low.as_ref().map(|bl| {
            let bl32 = bl.to_kind(Kind::Float);
            let norm_max = |t: &Tensor| {
                (t * t)
                    .sum_dim_intlist(1, false, Kind::Float)
                    .max()
                    .sqrt()
                    .double_value(&[])
            };
            (norm_max(&bl32), norm_max(&(&b - &bl32)))
        });
        let q_all = to_tensor(queries)?.to_device(self.device);
        let mut r0 = 0i64;
        while r0 < nq as i64 {
            let rows = (nq as i64 - r0).min(self.query_block);
            let q = q_all.narrow(0, r0, rows);
            let sorted = tch::no_grad(|| match (&b_low, b_bound, self.screen.kind()) {
                (Some(bl), Some(bound), Some(kind)) => {
                    self.screened(&q, &b, &b_norms, bl, kind, bound, kmax)
                }
                _ => self.exact(&q, &b, &b_norms, kmax),
            })?;
            let sorted = Vec::<f32>::try_from(sorted.to_device(Device::Cpu).contiguous().view(-1))?;
            for r in 0..rows as usize {
                let row = &sorted[r * kmax as usize..(r + 1) * kmax as usize];
                for (j, &k) in ks.iter().enumerate() {
                    out[[r0 as usize + r, j]] = row[k - 1];
                }
            }
            r0 += rows;
        }
        Ok(out)
    }

    /// The `kmax` smallest exact distances of each query row, ascending `(rows, kmax)`.
    fn exact(&self, q: &Tensor, b: &Tensor, b_norms: &Tensor, kmax: i64) -> Result<Tensor> {
        let q_norms = (q * q).sum_dim_intlist(1, true, Kind::Float);
        let n = b.size()[0];
        let mut best: Option<Tensor> = None;
        let mut b0 = 0;
        while b0 < n {
            let bn = (n - b0).min(self.bank_block);
            let ip = q.matmul(&b.narrow(0, b0, bn).tr());
            let dist =
                (&q_norms + b_norms.narrow(0, b0, bn).unsqueeze(0) - ip * 2.0).clamp_min(0.0);
            let cand = match best.take() {
                Some(prev) => Tensor::cat(&[prev, dist], 1),
                None => dist,
            };
            let k = kmax.min(cand.size()[1]);
            best = Some(cand.topk(k, 1, false, true).0);
            b0 += bn;
        }
        best.ok_or_else(|| Error::Config("knn search: empty bank".into()))
    }

    /// Screened in `kind`, re-ranked exactly; rows the bound cannot certify are searched again
    /// with [`TorchKnn::exact`].
    #[allow(clippy::too_many_arguments)]
    fn screened(
        &self,
        q: &Tensor,
        b: &Tensor,
        b_norms: &Tensor,
        b_low: &Tensor,
        kind: Kind,
        (b_low_max, b_err_max): (f64, f64),
        kmax: i64,
    ) -> Result<Tensor> {
        let n = b.size()[0];
        let d = b.size()[1];
        // Candidates plus one boundary value.
        let c = (kmax + self.margin).min(n);
        let keep = (c + 1).min(n);
        let q_norms = (q * q).sum_dim_intlist(1, true, Kind::Float);
        let q_low = q.to_kind(kind);
        let (mut vals, mut idx): (Option<Tensor>, Option<Tensor>) = (None, None);
        let mut b0 = 0;
        while b0 < n {
            let bn = (n - b0).min(self.bank_block);
            let ip = q_low
                .matmul(&b_low.narrow(0, b0, bn).tr())
                .to_kind(Kind::Float);
            let dist =
                (&q_norms + b_norms.narrow(0, b0, bn).unsqueeze(0) - ip * 2.0).clamp_min(0.0);
            let tile_idx = Tensor::arange_start(b0, b0 + bn, (Kind::Int64, q.device()))
                .unsqueeze(0)
                .expand([q.size()[0], bn], false);
            let (cv, ci) = match (vals.take(), idx.take()) {
                (Some(v), Some(i)) => (Tensor::cat(&[v, dist], 1), Tensor::cat(&[i, tile_idx], 1)),
                _ => (dist, tile_idx.contiguous()),
            };
            let k = keep.min(cv.size()[1]);
            let (tv, ti) = cv.topk(k, 1, false, true);
            idx = Some(ci.gather(1, &ti, false));
            vals = Some(tv);
            b0 += bn;
        }
        let (vals, idx) = (vals.expect("non-empty bank"), idx.expect("non-empty bank"));
        let cand = idx.narrow(1, 0, c);
        // Exact distances of the candidates.
        let rows = q.size()[0];
        let picked = b.index_select(0, &cand.reshape([-1])).reshape([rows, c, d]);
        let ip = (&picked * q.unsqueeze(1)).sum_dim_intlist(2, false, Kind::Float);
        let exact = (&q_norms
            + b_norms
                .index_select(0, &cand.reshape([-1]))
                .reshape([rows, c])
            - ip * 2.0)
            .clamp_min(0.0);
        let sorted = exact.topk(kmax, 1, false, true).0;
        if keep == c {
            // Every bank row is a candidate: nothing was left out.
            return Ok(sorted);
        }
        let boundary = vals.narrow(1, c, 1).squeeze_dim(1);
        // |⟨q̃, b̃⟩ − ⟨q, b⟩| ≤ ‖q−q̃‖·‖b̃‖ + ‖q̃‖·‖b−b̃‖ + ‖q−q̃‖·‖b−b̃‖ + d·2⁻²⁴·‖q̃‖·‖b̃‖ (the last
        // term: f32 accumulation); a distance moves by twice that, plus the f32 rounding of
        // `‖q‖² + ‖b‖² − 2⟨q, b⟩` in both computations.
        let q32 = q_low.to_kind(Kind::Float);
        let row_norm = |t: &Tensor| t.square().sum_dim_intlist(1, false, Kind::Float).sqrt();
        let (q_low_n, q_err_n) = (row_norm(&q32), row_norm(&(q - &q32)));
        let acc = d as f64 * 2f64.powi(-24);
        let ip_err = &q_err_n * (b_low_max + b_err_max) + &q_low_n * (b_err_max + acc * b_low_max);
        let round = (q_norms.squeeze_dim(1) + b_low_max * b_low_max) * 2f64.powi(-20);
        let slack = ip_err * 2.0 + round;
        let kth = sorted.narrow(1, kmax - 1, 1).squeeze_dim(1);
        let unsure = kth.gt_tensor(&(boundary - slack)).nonzero().squeeze_dim(1);
        if unsure.numel() == 0 {
            return Ok(sorted);
        }
        self.rechecked.fetch_add(unsure.numel(), Ordering::Relaxed);
        let redo = self.exact(&q.index_select(0, &unsure), b, b_norms, kmax)?;
        Ok(sorted.index_copy(0, &unsure, &redo))
    }
}

fn to_tensor(a: ArrayView2<'_, f32>) -> Result<Tensor> {
    let (r, c) = a.dim();
    let a = a.as_standard_layout();
    let s = a.as_slice().expect("standard layout");
    Ok(Tensor::from_slice(s).reshape([r as i64, c as i64]))
}

impl ood_core::detectors::knn::KnnSearch for TorchKnn {
    fn kth_distances(
        &self,
        bank: ArrayView2<'_, f32>,
        queries: ArrayView2<'_, f32>,
        ks: &[usize],
    ) -> ood_core::Result<Array2<f32>> {
        TorchKnn::kth_distances(self, bank, queries, ks)
            .map_err(|e| ood_core::Error::InvalidParameter(format!("knn search on libtorch: {e}")))
    }

    fn describe(&self) -> String {
        format!("libtorch on {:?}, screen {:?}", self.device, self.screen)
    }
}

/// Makes the KNN detector of this process search with libtorch on `device` (exact f32 unless
/// `screen` says otherwise; see the module documentation for why CUDA does not screen by
/// default).
pub fn install(device: Device, screen: Option<Screen>) {
    let screen = screen.unwrap_or(Screen::Exact);
    ood_core::detectors::knn::set_search(Some(Arc::new(TorchKnn::new(device, screen))));
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};

    /// Clustered unit vectors (a KNN bank looks like this) and some exact duplicates, so that
    /// ties and near-ties occur.
    fn data(n: usize, d: usize, seed: u64) -> Array2<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> = (0..8)
            .map(|_| (0..d).map(|_| rng.gen_range(-1.0..1.0)).collect())
            .collect();
        let mut a = Array2::<f32>::zeros((n, d));
        for i in 0..n {
            let c = &centres[i % 8];
            for j in 0..d {
                a[[i, j]] = c[j] + 0.3 * rng.gen_range(-1.0f32..1.0);
            }
            let norm = a.row(i).dot(&a.row(i)).sqrt();
            a.row_mut(i).mapv_inplace(|v| v / norm);
        }
        for i in (0..n).step_by(97) {
            let r = a.row(i).to_owned();
            a.row_mut((i + 1) % n).assign(&r);
        }
        a
    }

    /// Brute force in f64.
    fn brute(bank: &Array2<f32>, q: &Array2<f32>, ks: &[usize]) -> Array2<f32> {
        let mut out = Array2::zeros((q.nrows(), ks.len()));
        for (i, qr) in q.rows().into_iter().enumerate() {
            let mut d: Vec<f64> = bank
                .rows()
                .into_iter()
                .map(|b| {
                    b.iter()
                        .zip(qr.iter())
                        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                        .sum()
                })
                .collect();
            d.sort_by(f64::total_cmp);
            for (j, &k) in ks.iter().enumerate() {
                out[[i, j]] = d[k - 1] as f32;
            }
        }
        out
    }

    #[test]
    fn exact_and_screened_searches_equal_brute_force_on_the_cpu() {
        let bank = data(1500, 48, 1);
        let q = data(130, 48, 2);
        let ks = [1, 7, 50, 200];
        let want = brute(&bank, &q, &ks);
        for screen in [Screen::Exact, Screen::Bf16, Screen::F16] {
            let mut s = TorchKnn::new(Device::Cpu, screen);
            // Small blocks and tiles: several query blocks, several bank tiles, a ragged last one.
            (s.query_block, s.bank_block, s.margin) = (50, 400, 64);
            let got = s.kth_distances(bank.view(), q.view(), &ks).unwrap();
            let err = (&got - &want).mapv(f32::abs).fold(0.0f32, |m, &v| m.max(v));
            assert!(err < 2e-6, "{screen:?}: max |error| {err}");
            // The bound certifies most rows from the screened candidates alone.
            assert!(
                s.rechecked_rows() < q.nrows() / 2,
                "{screen:?}: {}",
                s.rechecked_rows()
            );
        }
        // Without extra candidates, rows whose k-th candidate sits at the boundary are searched
        // again, and the results are still exact.
        let mut s = TorchKnn::new(Device::Cpu, Screen::Bf16);
        (s.query_block, s.bank_block, s.margin) = (50, 400, 0);
        let got = s.kth_distances(bank.view(), q.view(), &ks).unwrap();
        let err = (&got - &want).mapv(f32::abs).fold(0.0f32, |m, &v| m.max(v));
        assert!(err < 2e-6, "margin 0: max |error| {err}");
        assert!(s.rechecked_rows() > 0);
        // Duplicates of query rows in the bank give distance 0 at k = 1.
        let got = TorchKnn::new(Device::Cpu, Screen::Bf16)
            .kth_distances(bank.view(), bank.slice(ndarray::s![..5, ..]), &[1])
            .unwrap();
        assert!(got.iter().all(|&v| v < 1e-6), "{got:?}");
    }

    #[test]
    fn bad_k_and_shapes_are_errors() {
        let bank = data(20, 4, 3);
        let s = TorchKnn::new(Device::Cpu, Screen::Exact);
        let e = s
            .kth_distances(bank.view(), bank.view(), &[21])
            .unwrap_err();
        assert!(e.to_string().contains("1..=20"), "{e}");
        let q = Array2::<f32>::zeros((2, 5));
        assert!(s.kth_distances(bank.view(), q.view(), &[1]).is_err());
    }
}
