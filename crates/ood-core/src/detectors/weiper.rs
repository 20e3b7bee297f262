//! WeiPer+KLD: Granz, Heurich & Landgraf, "WeiPer: OOD Detection using Weight Perturbations of
//! Class Projections", NeurIPS 2024, arXiv:2405.17164, <https://arxiv.org/abs/2405.17164>. Not an
//! OpenOOD v1.5 postprocessor (OpenOOD has no `weiper`); pinned from the authors' code,
//! <https://github.com/mgranz/weiper> (`Weiper/OpenOOD/openood/postprocessors/`
//! `weiper_kldiv_postprocessor.py` and `weiper_kldiv/utils.py`, defaults from
//! `Weiper/OpenOOD/configs/postprocessors/weiper_kldiv.yml` and the README's table, grid from
//! `Weiper/hyperparameter_search_on_latents.py`).
//!
//! **Perturbed class projections.** For each of `r` repeats and each class `c`, with head rows
//! `w_c` and Gaussian noise `η ~ N(0, I_d)`:
//! `w̃_{i,c} = w_c + δ·‖w_c‖·η_{i,c}/‖η_{i,c}‖` (bias `b_c` unchanged), so every perturbed row
//! lies at relative distance `δ` from its class row. The `r·C` perturbed logits of a feature `h`
//! are `w̃_{i,c}·h + b_c` (row `i·C + c`, repeat-major, as the authors concatenate them).
//!
//! **Densities.** A sample's density is the histogram of its **own coordinates**: the `d`
//! feature values of `h` over `n_bins` equal bins spanning `[lo_z, hi_z]`, and its `r·C`
//! perturbed logits over `n_bins` bins spanning `[lo_w, hi_w]`, each bin's count divided by the
//! number of values (`d` or `r·C`); values outside the range are dropped (their share is lost,
//! not renormalised). `lo`, `hi` are the smallest and largest value of any fit sample (one
//! scalar range per space, the authors' `exact_minmax`). The fit (training) density `p` is the
//! mean of the fit samples' densities.
//!
//! **Score.** For a test sample with densities `q_z`, `q_w`:
//! `KL_s,ε(q) = Σ_j (p'_j − q'_j)(ln p'_j − ln q'_j)`, the symmetric KL divergence between
//! `p' = (p + ε)/Σ(p + ε)` and `q' = (smooth_s(q) + ε)/Σ(smooth_s(q) + ε)`, where `smooth_s` is the
//! authors' uniform kernel: a moving average of `s` bins with replicate padding, PyTorch's
//! `Conv1d(padding="same", padding_mode="replicate")` (`(s − 1) // 2` bins on the left, the rest
//! on the right). Only the test density is smoothed; the fit density only gets `ε`. Then
//!
//! `score = −(KL_{s1,ε1}(q_z) + λ1·KL_{s2,ε2}(q_w) − λ2·MSP̄)`,
//!
//! with `MSP̄` the mean over the `r` repeats of the maximum softmax probability of that repeat's
//! `C` perturbed logits (bias included). Higher = more in-distribution. `s1 = smoothing`,
//! `s2 = smoothing_perturbed`, `ε1 = epsilon = 0.01` and `ε2 = epsilon_perturbed = 0.025` (the
//! defaults of the authors' `calculate_WeiPerKLDiv_score`, which their postprocessor does not
//! override).
//!
//! Defaults: the authors' CIFAR-10 (ResNet-18) setting, `weiper_kldiv.yml` and the README:
//! `n_repeats = 100`, `perturbation_distance = 1.8`, `n_bins = 100`, `lambda_1 = 2.5`,
//! `lambda_2 = 0.1`, `smoothing = 4`, `smoothing_perturbed = 15`. Their other settings (README):
//! CIFAR-100 `δ = 2.4, λ1 = 0.1, λ2 = 1, s1 = 4, s2 = 40`; ImageNet ResNet-50 `δ = 2.4, λ1 = 2.5,
//! λ2 = 0.25, s1 = 40, s2 = 15`; ImageNet ViT-B/16 `δ = 2.0, n_bins = 80, λ1 = 2.5, λ2 = 0.1,
//! s1 = 40, s2 = 15` (all with `r = 100`).
//!
//! Sweep: the authors' `postprocessor_sweep` lists (3,600 candidates) in the order of their own
//! search, `hyperparameter_search_on_latents.py`: `itertools.product` of `perturbation_distance ∈
//! {1.8, 2.0, 2.2, 2.4}` and `n_bins ∈ {60, 80, 100}` outside, `lambda_1 ∈ {0.1, 1, 2.5, 4}`,
//! `lambda_2 ∈ {0.1, 0.25, 1, 2.5, 5}`, `smoothing ∈ {4, 8, 12, 20, 40}` and `smoothing_perturbed
//! ∈ {15, 25, 40}` inside, the **last listed varying fastest** (not OpenOOD's APS order: the
//! README advises against OpenOOD's search, whose `set_hyperparam` also reads the candidates in
//! another order than the config lists them). The fitted state does not depend on the λs or the
//! smoothing, so [`DetectorParams::grid_val_scores`] fits once per `(δ, n_bins)` and scores the
//! histograms once: the grid costs 12 fits.
//!
//! Differences from the authors' code, each documented choice:
//! * One perturbation, drawn once at fit from `seed` (the paper's `W̃`). The authors' code draws
//!   a fresh `W̃` for every batch, at fit and at test time: the fitted `W_tilde` is passed to
//!   `calculate_WeiPerKLDiv_score` as an unknown keyword, where the function's `perturbed_fc`
//!   stays `None` (only the min/max pass reuses the first draw). Their scores therefore change
//!   from batch to batch; ours are deterministic and batch-independent.
//! * The noise: ChaCha8 seeded by `seed`, standard normals from Marsaglia's polar method with a
//!   natural logarithm written in IEEE basic operations only, so the perturbation is the same
//!   on every platform (not torch's `randn`, whose draws cannot be reproduced without torch).
//! * The fit density is the mean over all fit samples; the authors average per-batch means,
//!   which weighs a short last batch more.
//! * A sample's density divides by its number of values. The authors' `batch_histogram` splits
//!   more than 1,000 values into chunks and divides by the size of the last chunk, which weighs
//!   the chunks unequally when the count is not a multiple of 1,000 (e.g. `d = 2048`); with the
//!   CIFAR-10 defaults (`d = 512`, `r·C = 1000`) both are the same.
//! * Bins: `[lo + j·Δ, lo + (j+1)·Δ)`, `Δ = (hi − lo)/n_bins`, the last one closed at `hi`. The
//!   authors' edges are `linspace(lo, hi + 1e-8)` in float32, where the `1e-8` vanishes once
//!   `hi ≥ 0.25` and the fit maximum can then fall out of the last bin; otherwise the edges
//!   differ by at most 1e-8.
//! * Everything in f64 (the authors work in float32): perturbed logits (a per-row dot product
//!   with a fixed summation order, so a row's bins do not depend on its batch), histograms as
//!   integer counts (fitting from memory or from a file, in any chunking, gives the same
//!   density), KL and softmax.
//!
//! Ranking: the score is a sum of three terms, so it is formed in f64 and rounded to f32 once.
//! `MSP̄` saturates at 1 for confident samples, but its weight `λ2 = 0.1` times `1 − MSP̄`
//! (below 1e-16 there) is far below the f32 resolution of the KL terms, which keep the ranking:
//! two samples tie only if both of their histograms agree bin for bin (the conformance suite's
//! confident head gives no ties).
//!
//! Cost: fitting streams the fit data twice (ranges, then histograms), each pass `N·r·C·d`
//! multiply-adds; the perturbed head holds `r·C·d` f64 (`r = 100`: 4 MB for CIFAR-10, 1.6 GB
//! for ImageNet-1K with `d = 2048`, as in the authors' code). Measured (release, 2 shared
//! cores): 5,000 fit rows of `d = 512`, `C = 10`, defaults: fit 2.4 s, scoring them 1.6 s. Checked against a NumPy/PyTorch
//! re-implementation of the authors' code fed the same noise (`tests/data/posthoc_reference_f.py`,
//! `tests/posthoc_golden_f.rs`) and by hand below.

use super::{DetectorParams, GridScores};
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{DEFAULT_CHUNK_ROWS, Features, FitData, Head};
use ndarray::{Array1, Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// WeiPer+KLD: KL divergences of a sample's feature and perturbed-logit histograms to the fit
/// set's, plus the mean MSP of the perturbed logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weiper {
    /// Number of perturbations `r` of every class row (100).
    pub n_repeats: usize,
    /// Relative perturbation distance `δ`: `‖w̃ − w‖ = δ·‖w‖` (1.8, the authors' CIFAR-10 value).
    pub perturbation_distance: f64,
    /// Histogram bins of each density (100).
    pub n_bins: usize,
    /// Weight `λ1` of the perturbed-logit KL divergence (2.5).
    pub lambda_1: f64,
    /// Weight `λ2` of the mean perturbed MSP (0.1).
    pub lambda_2: f64,
    /// Moving-average width `s1` (bins) of the feature density (4).
    pub smoothing: usize,
    /// Moving-average width `s2` (bins) of the perturbed-logit density (15).
    pub smoothing_perturbed: usize,
    /// `ε1` added to the feature densities before normalising (0.01).
    pub epsilon: f64,
    /// `ε2` added to the perturbed-logit densities before normalising (0.025).
    pub epsilon_perturbed: f64,
    /// Seed of the perturbation noise.
    pub seed: u64,
}

impl Default for Weiper {
    fn default() -> Self {
        Weiper {
            n_repeats: 100,
            perturbation_distance: 1.8,
            n_bins: 100,
            lambda_1: 2.5,
            lambda_2: 0.1,
            smoothing: 4,
            smoothing_perturbed: 15,
            epsilon: 0.01,
            epsilon_perturbed: 0.025,
            seed: 0,
        }
    }
}

/// `ln x` for finite `x > 0` (normal, not subnormal) from IEEE basic operations only, so it is
/// bit-identical on every platform (`f64::ln` is the platform's libm): `x = m·2^e` with
/// `m ∈ [√½, √2)`, `ln m = 2·atanh(t)`, `t = (m − 1)/(m + 1)`, `|t| < 0.172`, summed to 13 terms
/// (the next is below 1e-19 relative).
fn ln_portable(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    // Σ_{k=0}^{12} t2^k / (2k + 1), Horner from the top.
    let mut p = 1.0 / 25.0;
    for k in (0..12).rev() {
        p = p * t2 + 1.0 / (2 * k + 1) as f64;
    }
    2.0 * t * p + e as f64 * std::f64::consts::LN_2
}

/// Standard normals from a ChaCha8 stream (Marsaglia's polar method, pairs used in order).
struct Normals {
    rng: rand_chacha::ChaCha8Rng,
    spare: Option<f64>,
}

impl Normals {
    fn new(seed: u64) -> Normals {
        Normals {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            spare: None,
        }
    }

    fn next(&mut self) -> f64 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        loop {
            let u = 2.0 * self.rng.r#gen::<f64>() - 1.0;
            let v = 2.0 * self.rng.r#gen::<f64>() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * ln_portable(s) / s).sqrt();
                self.spare = Some(v * f);
                return u * f;
            }
        }
    }
}

/// The fitted state: everything but the λs, the smoothing widths and the εs.
#[derive(Debug)]
struct Fitted {
    head: Head,
    classes: usize,
    repeats: usize,
    /// `(r·C, d)` perturbed rows, row-major, row `i·C + c`.
    weight: Vec<f64>,
    /// `(r·C)` biases.
    bias: Vec<f64>,
    range_z: (f64, f64),
    range_w: (f64, f64),
    /// Fit densities (`n_bins` each, summing to 1).
    train_z: Vec<f64>,
    train_w: Vec<f64>,
}

/// A sample's histogram counts and mean perturbed MSP.
#[derive(Debug, Clone)]
struct RowStats {
    z: Vec<u32>,
    w: Vec<u32>,
    msp: f64,
}

/// Feature rows per block of the projection ([`Fitted::project_block`]).
const BLOCK_ROWS: usize = 16;

/// `a·b` with eight accumulators in a fixed order (the same bits for a row in any batch, on
/// any platform: no fused multiply-add).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((a, x), y) in acc.iter_mut().zip(x).zip(y) {
            *a += x * y;
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// The bin of `v` among `n` equal bins over `[lo, hi]` (the last one closed), `None` outside.
fn bin(v: f64, (lo, hi): (f64, f64), n: usize) -> Option<usize> {
    if !(v >= lo && v <= hi) {
        return None;
    }
    if hi <= lo {
        return Some(0);
    }
    let j = ((v - lo) / (hi - lo) * n as f64).floor() as usize;
    Some(j.min(n - 1))
}

/// `min` and `max` of a non-empty slice, folded into `acc`.
fn fold_range(acc: (f64, f64), v: &[f64]) -> (f64, f64) {
    v.iter().fold(acc, |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// The symmetric KL divergence of a sample's smoothed density (`counts / n_values`) to the fit
/// density `train` (module doc, `KL_s,ε`).
fn kl_to_train(counts: &[u32], n_values: usize, train: &[f64], s: usize, eps: f64) -> f64 {
    let n = counts.len();
    let q: Vec<f64> = counts.iter().map(|&c| c as f64 / n_values as f64).collect();
    let left = (s - 1) / 2;
    let smoothed: Vec<f64> = (0..n)
        .map(|j| {
            let sum: f64 = (0..s)
                .map(|t| q[(j + t).saturating_sub(left).min(n - 1)])
                .sum();
            sum / s as f64 + eps
        })
        .collect();
    let (sq, sp) = (
        smoothed.iter().sum::<f64>(),
        train.iter().map(|p| p + eps).sum::<f64>(),
    );
    smoothed
        .iter()
        .zip(train)
        .map(|(&q, &p)| {
            let (q, p) = (q / sq, (p + eps) / sp);
            (p - q) * (p.ln() - q.ln())
        })
        .sum()
}

impl Weiper {
    fn validate(&self) -> Result<()> {
        let bad =
            |what: &str, v: String| Err(Error::InvalidParameter(format!("weiper {what}, got {v}")));
        if self.n_repeats == 0 {
            return bad("n_repeats must be >= 1", "0".into());
        }
        if self.n_bins == 0 {
            return bad("n_bins must be >= 1", "0".into());
        }
        if self.smoothing == 0 || self.smoothing_perturbed == 0 {
            return bad(
                "smoothing and smoothing_perturbed must be >= 1 (bins)",
                format!("{} and {}", self.smoothing, self.smoothing_perturbed),
            );
        }
        if !(self.perturbation_distance.is_finite() && self.perturbation_distance >= 0.0) {
            return bad(
                "perturbation_distance must be finite and >= 0",
                self.perturbation_distance.to_string(),
            );
        }
        for (name, v) in [("lambda_1", self.lambda_1), ("lambda_2", self.lambda_2)] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(&format!("{name} must be finite and >= 0"), v.to_string());
            }
        }
        for (name, v) in [
            ("epsilon", self.epsilon),
            ("epsilon_perturbed", self.epsilon_perturbed),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(&format!("{name} must be finite and > 0"), v.to_string());
            }
        }
        Ok(())
    }

    /// The seeded `(r·C, d)` standard normal noise `η`, row `i·C + c`.
    fn noise(&self, classes: usize, d: usize) -> Array2<f64> {
        let mut normals = Normals::new(self.seed);
        Array2::from_shape_simple_fn((self.n_repeats * classes, d), || normals.next())
    }

    /// Test hook: fits with the given noise `η` (`(r·C, d)`, row `i·C + c`) instead of the seeded
    /// draw, so that a reference implementation can feed its own (`tests/posthoc_golden_f.rs`).
    #[doc(hidden)]
    pub fn fit_with_noise(
        &self,
        data: &FitData<'_>,
        head: &Head,
        noise: ArrayView2<'_, f64>,
    ) -> Result<Box<dyn Scorer>> {
        self.validate()?;
        Ok(Box::new(WeiperScorer {
            params: self.clone(),
            fitted: self.fit_state(data, head, Some(noise))?,
        }))
    }

    /// Validated parameters in, fitted state out (`noise`: `None` = the seeded draw).
    fn fit_state(
        &self,
        data: &FitData<'_>,
        head: &Head,
        noise: Option<ArrayView2<'_, f64>>,
    ) -> Result<Fitted> {
        check_fit_data(data, head, 1)?;
        let (c, d) = (head.num_classes(), head.dim());
        let rows = self.n_repeats * c;
        let noise = match noise {
            Some(n) if n.nrows() != rows => {
                return Err(Error::dim(
                    "weiper noise rows (n_repeats · classes)",
                    rows,
                    n.nrows(),
                ));
            }
            Some(n) if n.ncols() != d => {
                return Err(Error::dim(
                    "weiper noise columns (feature dimension)",
                    d,
                    n.ncols(),
                ));
            }
            Some(n) => n.to_owned(),
            None => self.noise(c, d),
        };
        let mut weight = Vec::with_capacity(rows * d);
        let mut bias = Vec::with_capacity(rows);
        for (k, eta) in noise.rows().into_iter().enumerate() {
            let w: Vec<f64> = head.weight.row(k % c).iter().map(|&v| v as f64).collect();
            let w_norm = w.iter().map(|v| v * v).sum::<f64>().sqrt();
            // F.normalize: η / max(‖η‖, 1e-12).
            let eta_norm = eta.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            let scale = self.perturbation_distance * w_norm / eta_norm;
            weight.extend(w.iter().zip(eta).map(|(&w, &e)| w + scale * e));
            bias.push(head.bias[k % c] as f64);
        }
        let mut fitted = Fitted {
            head: head.clone(),
            classes: c,
            repeats: self.n_repeats,
            weight,
            bias,
            range_z: (f64::INFINITY, f64::NEG_INFINITY),
            range_w: (f64::INFINITY, f64::NEG_INFINITY),
            train_z: Vec::new(),
            train_w: Vec::new(),
        };
        // Pass 1: the scalar ranges of the features and of the perturbed logits.
        let (mut rz, mut rw) = (fitted.range_z, fitted.range_w);
        data.for_each_embedding_chunk(DEFAULT_CHUNK_ROWS, |chunk| {
            let chunk = chunk.as_standard_layout();
            let x = chunk.as_slice().expect("standard layout");
            let (cz, cw) = x
                .par_chunks(d * BLOCK_ROWS)
                .map(|x| {
                    let (h, p) = fitted.project_block(x);
                    let empty = (f64::INFINITY, f64::NEG_INFINITY);
                    (fold_range(empty, &h), fold_range(empty, &p))
                })
                .reduce(
                    || {
                        let e = (f64::INFINITY, f64::NEG_INFINITY);
                        (e, e)
                    },
                    |(a, b), (p, q)| ((a.0.min(p.0), a.1.max(p.1)), (b.0.min(q.0), b.1.max(q.1))),
                );
            rz = (rz.0.min(cz.0), rz.1.max(cz.1));
            rw = (rw.0.min(cw.0), rw.1.max(cw.1));
            Ok(())
        })?;
        fitted.range_z = rz;
        fitted.range_w = rw;
        // Pass 2: the summed histogram counts (integers: any chunking gives the same sums).
        let nb = self.n_bins;
        let mut total = vec![0u64; 2 * nb];
        data.for_each_embedding_chunk(DEFAULT_CHUNK_ROWS, |chunk| {
            let chunk = chunk.as_standard_layout();
            let x = chunk.as_slice().expect("standard layout");
            let sums = x
                .par_chunks(d * BLOCK_ROWS)
                .map(|x| {
                    let mut sum = vec![0u64; 2 * nb];
                    for s in fitted.stats_block(x, nb) {
                        for (a, &v) in sum.iter_mut().zip(s.z.iter().chain(&s.w)) {
                            *a += v as u64;
                        }
                    }
                    sum
                })
                .reduce(
                    || vec![0u64; 2 * nb],
                    |mut a, b| {
                        a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                        a
                    },
                );
            total.iter_mut().zip(sums).for_each(|(a, b)| *a += b);
            Ok(())
        })?;
        let n = data.len() as f64;
        fitted.train_z = total[..nb]
            .iter()
            .map(|&v| v as f64 / (n * d as f64))
            .collect();
        fitted.train_w = total[nb..]
            .iter()
            .map(|&v| v as f64 / (n * rows as f64))
            .collect();
        Ok(fitted)
    }

    /// The feature-space divergence `KL_{s1,ε1}(q_z)` of every row.
    fn kl_z(&self, f: &Fitted, stats: &[RowStats]) -> Vec<f64> {
        let d = f.head.dim();
        stats
            .par_iter()
            .map(|s| kl_to_train(&s.z, d, &f.train_z, self.smoothing, self.epsilon))
            .collect()
    }

    /// The perturbed-logit divergence `KL_{s2,ε2}(q_w)` of every row.
    fn kl_w(&self, f: &Fitted, stats: &[RowStats]) -> Vec<f64> {
        let rows = f.repeats * f.classes;
        stats
            .par_iter()
            .map(|s| {
                kl_to_train(
                    &s.w,
                    rows,
                    &f.train_w,
                    self.smoothing_perturbed,
                    self.epsilon_perturbed,
                )
            })
            .collect()
    }

    /// `−(KL_z + λ1·KL_w − λ2·MSP̄)` of every row, in f64, rounded to f32 once.
    fn combine(&self, kl_z: &[f64], kl_w: &[f64], stats: &[RowStats]) -> Result<Array1<f32>> {
        let s = kl_z
            .iter()
            .zip(kl_w)
            .zip(stats)
            .map(|((z, w), s)| (-(z + self.lambda_1 * w - self.lambda_2 * s.msp)) as f32)
            .collect();
        check_scores(Weiper::NAME, s)
    }

    /// The scores of rows with statistics `stats` under these weights, widths and εs.
    fn scores(&self, f: &Fitted, stats: &[RowStats]) -> Result<Array1<f32>> {
        self.combine(&self.kl_z(f, stats), &self.kl_w(f, stats), stats)
    }
}

impl Fitted {
    /// A block of feature rows (`x`: whole rows of `d`) in f64 and their `r·C` perturbed logits
    /// (row-major). Each weight row meets every row of the block while it is in cache; every
    /// value is one [`dot`], so a row's logits do not depend on its block.
    fn project_block(&self, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let d = self.head.dim();
        let h: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let (n, rc) = (h.len() / d, self.bias.len());
        let mut p = vec![0.0f64; n * rc];
        for (k, (w, &b)) in self.weight.chunks_exact(d).zip(&self.bias).enumerate() {
            for (r, hr) in h.chunks_exact(d).enumerate() {
                p[r * rc + k] = dot(w, hr) + b;
            }
        }
        (h, p)
    }

    /// The statistics of a block of rows ([`Fitted::project_block`]).
    fn stats_block(&self, x: &[f32], n_bins: usize) -> Vec<RowStats> {
        let (h, p) = self.project_block(x);
        h.chunks_exact(self.head.dim())
            .zip(p.chunks_exact(self.bias.len()))
            .map(|(h, p)| self.stats(h, p, n_bins))
            .collect()
    }

    /// Histogram counts of one row's features `h` and perturbed logits `p`, and its mean
    /// perturbed MSP.
    fn stats(&self, h: &[f64], p: &[f64], n_bins: usize) -> RowStats {
        let mut z = vec![0u32; n_bins];
        let mut w = vec![0u32; n_bins];
        for &v in h {
            if let Some(j) = bin(v, self.range_z, n_bins) {
                z[j] += 1;
            }
        }
        for &v in p {
            if let Some(j) = bin(v, self.range_w, n_bins) {
                w[j] += 1;
            }
        }
        // max softmax = 1 / Σ_j exp(z_j − z_max), per repeat.
        let msp = p
            .chunks_exact(self.classes)
            .map(|block| {
                let m = block.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                1.0 / block.iter().map(|&v| (v - m).exp()).sum::<f64>()
            })
            .sum::<f64>()
            / self.repeats as f64;
        RowStats { z, w, msp }
    }

    /// The statistics of every row of `x` (checked against the head).
    fn stats_of(&self, x: &Features, n_bins: usize) -> Result<Vec<RowStats>> {
        check_input(x, &self.head)?;
        let e = x.embeddings.as_standard_layout();
        let blocks: Vec<Vec<RowStats>> = e
            .as_slice()
            .expect("standard layout")
            .par_chunks(self.head.dim() * BLOCK_ROWS)
            .map(|x| self.stats_block(x, n_bins))
            .collect();
        Ok(blocks.into_iter().flatten().collect())
    }
}

#[derive(Debug)]
struct WeiperScorer {
    params: Weiper,
    fitted: Fitted,
}

impl Detector for Weiper {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        self.validate()?;
        Ok(Box::new(WeiperScorer {
            params: self.clone(),
            fitted: self.fit_state(data, head, None)?,
        }))
    }
}

impl Scorer for WeiperScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        let stats = self.fitted.stats_of(x, self.params.n_bins)?;
        self.params.scores(&self.fitted, &stats)
    }
}

impl DetectorParams for Weiper {
    const NAME: &'static str = "weiper";
    const ABOUT: &'static str = "KL divergence of feature and perturbed-logit histograms to the fit set's, plus perturbed MSP (WeiPer+KLD, Granz et al., NeurIPS'24)";

    /// The authors' grid, in their search order (module doc): `perturbation_distance`, `n_bins`,
    /// `lambda_1`, `lambda_2`, `smoothing`, `smoothing_perturbed`, the last varying fastest.
    fn sweep(&self) -> Vec<Self> {
        let mut out = Vec::with_capacity(3600);
        for perturbation_distance in [1.8, 2.0, 2.2, 2.4] {
            for n_bins in [60, 80, 100] {
                for lambda_1 in [0.1, 1.0, 2.5, 4.0] {
                    for lambda_2 in [0.1, 0.25, 1.0, 2.5, 5.0] {
                        for smoothing in [4, 8, 12, 20, 40] {
                            for smoothing_perturbed in [15, 25, 40] {
                                out.push(Weiper {
                                    perturbation_distance,
                                    n_bins,
                                    lambda_1,
                                    lambda_2,
                                    smoothing,
                                    smoothing_perturbed,
                                    ..self.clone()
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// One fit and one histogram pass per `(n_repeats, δ, n_bins, seed)` group of candidates,
    /// one divergence per smoothing width and ε in the group; every candidate then only
    /// recombines them, through the same code as its own scorer, so the results equal
    /// per-candidate fits bit for bit. `None` (fit
    /// each) when a candidate's parameters are invalid, so that its own fit reports the error.
    fn grid_val_scores(
        grid: &[Self],
        fit: &FitData<'_>,
        head: &Head,
        val_id: &Features,
        val_ood: &Features,
    ) -> Option<Vec<GridScores>> {
        if grid.iter().any(|c| c.validate().is_err()) {
            return None;
        }
        let key = |c: &Weiper| {
            (
                c.n_repeats,
                c.perturbation_distance.to_bits(),
                c.n_bins,
                c.seed,
            )
        };
        /// Divergences of the `(id, ood)` rows by `(width, ε bits)`.
        type Cache = Vec<((usize, u64), (Vec<f64>, Vec<f64>))>;
        /// `(n_repeats, δ bits, n_bins, seed)`.
        type Key = (usize, u64, usize, u64);
        /// A group's fit, val statistics and the divergences computed so far.
        struct Group {
            fitted: Fitted,
            id: Vec<RowStats>,
            ood: Vec<RowStats>,
            kl_z: Cache,
            kl_w: Cache,
        }
        let mut groups: Vec<(Key, Result<Group>)> = Vec::new();
        let mut out = Vec::with_capacity(grid.len());
        for cand in grid {
            let k = key(cand);
            let at = match groups.iter().position(|(g, _)| *g == k) {
                Some(i) => i,
                None => {
                    let g = cand.fit_state(fit, head, None).and_then(|fitted| {
                        let id = fitted.stats_of(val_id, cand.n_bins)?;
                        let ood = fitted.stats_of(val_ood, cand.n_bins)?;
                        Ok(Group {
                            fitted,
                            id,
                            ood,
                            kl_z: Vec::new(),
                            kl_w: Vec::new(),
                        })
                    });
                    groups.push((k, g));
                    groups.len() - 1
                }
            };
            let g = match &mut groups[at].1 {
                Ok(g) => g,
                Err(e) => {
                    out.push(Err(Error::InvalidParameter(e.to_string())));
                    continue;
                }
            };
            let kz = (cand.smoothing, cand.epsilon.to_bits());
            if !g.kl_z.iter().any(|(k, _)| *k == kz) {
                let v = (cand.kl_z(&g.fitted, &g.id), cand.kl_z(&g.fitted, &g.ood));
                g.kl_z.push((kz, v));
            }
            let kw = (cand.smoothing_perturbed, cand.epsilon_perturbed.to_bits());
            if !g.kl_w.iter().any(|(k, _)| *k == kw) {
                let v = (cand.kl_w(&g.fitted, &g.id), cand.kl_w(&g.fitted, &g.ood));
                g.kl_w.push((kw, v));
            }
            let (z, w) = (
                &g.kl_z.iter().find(|(k, _)| *k == kz).expect("just added").1,
                &g.kl_w.iter().find(|(k, _)| *k == kw).expect("just added").1,
            );
            out.push(
                cand.combine(&z.0, &w.0, &g.id)
                    .and_then(|a| Ok((a, cand.combine(&z.1, &w.1, &g.ood)?))),
            );
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn ln_portable_matches_libm() {
        for x in [
            1e-300, 1e-20, 0.001, 0.3, 0.7, 0.72, 1.0, 1.4143, 1.5, 2.0, 7.25, 1e10,
        ] {
            let (a, b) = (ln_portable(x), x.ln());
            assert!(
                (a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(1.0),
                "{x}: {a} vs {b}"
            );
        }
        assert_eq!(ln_portable(1.0), 0.0);
    }

    #[test]
    fn normals_have_unit_moments_and_are_seeded() {
        let mut g = Normals::new(3);
        let v: Vec<f64> = (0..200_000).map(|_| g.next()).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.01,
            "{mean} {var}"
        );
        // Pinned bits (x86-64 Linux): ChaCha8 and IEEE basic operations only, so every
        // platform draws exactly these.
        let mut a = Normals::new(0);
        let first: Vec<f64> = (0..3).map(|_| a.next()).collect();
        assert_eq!(
            first.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            [
                4610917216754080763,
                13822414932015080010,
                4594726829371073393
            ],
            "{first:?}"
        );
        assert_ne!(first, (0..3).map(|_| g.next()).collect::<Vec<_>>());
    }

    #[test]
    fn bins_and_smoothing_follow_the_authors_kernel() {
        assert_eq!(bin(0.0, (0.0, 1.0), 4), Some(0));
        assert_eq!(bin(0.25, (0.0, 1.0), 4), Some(1));
        assert_eq!(bin(1.0, (0.0, 1.0), 4), Some(3));
        assert_eq!(bin(1.5, (0.0, 1.0), 4), None);
        assert_eq!(bin(-0.1, (0.0, 1.0), 4), None);
        assert_eq!(bin(2.0, (2.0, 2.0), 4), Some(0));
        // counts (2, 0, 0, 2) of 4 values → q = (.5, 0, 0, .5); width 2: left pad 0, right 1
        // (replicate): smoothed (.25, 0, .25, .5); ε = 0 would break ln, so ε = 0.25:
        // q' ∝ (.5, .25, .5, .75)/2, p = (.25, .25, .25, .25) + .25 → uniform.
        let kl = kl_to_train(&[2, 0, 0, 2], 4, &[0.25; 4], 2, 0.25);
        let q: [f64; 4] = [0.25, 0.125, 0.25, 0.375];
        let want: f64 = q
            .iter()
            .map(|&q| (0.25 - q) * (0.25f64.ln() - q.ln()))
            .sum();
        assert!((kl - want).abs() < 1e-15, "{kl} vs {want}");
        // Width 3 (pad 1 left, 1 right): q = (.25, 0, 0, .5) → smoothed (1/6, 1/12, 1/6, 1/3); a
        // dropped value (count sum 3 of 4) keeps its share out before ε.
        let kl = kl_to_train(&[1, 0, 0, 2], 4, &[0.25; 4], 3, 0.1);
        let s: [f64; 4] = [
            1.0 / 6.0 + 0.1,
            1.0 / 12.0 + 0.1,
            1.0 / 6.0 + 0.1,
            1.0 / 3.0 + 0.1,
        ];
        let t: f64 = s.iter().sum();
        let want: f64 = s
            .iter()
            .map(|&v| (0.25 - v / t) * (0.25f64.ln() - (v / t).ln()))
            .sum();
        assert!((kl - want).abs() < 1e-15, "{kl} vs {want}");
    }

    /// d = 2, C = 2, r = 1, δ = 0: the perturbed logits are the logits, and everything is small
    /// enough to count by hand.
    #[test]
    fn weiper_matches_hand_computation() {
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let fit = Features::with_head(array![[0.0f32, 4.0], [4.0, 0.0], [2.0, 2.0]], &head, None)
            .unwrap();
        let test = Features::with_head(array![[1.0f32, 3.0], [9.0, 0.0]], &head, None).unwrap();
        let d = Weiper {
            n_repeats: 1,
            perturbation_distance: 0.0,
            n_bins: 2,
            smoothing: 1,
            smoothing_perturbed: 1,
            epsilon: 0.5,
            epsilon_perturbed: 0.5,
            ..Weiper::default()
        };
        // Range [0, 4] in both spaces (identity head): bins [0, 2), [2, 4]. Fit counts
        // (1, 1), (1, 1), (0, 2) → p = (1/3, 2/3); p' = (1/3 + .5, 2/3 + .5)/2.
        // Test row 0: (1, 3) → (1, 1) → q = (.5, .5) → q' = (.5, .5). Row 1: (9, 0): 9 is out of
        // range, 0 in bin 0 → q = (.5, 0) → q' = (1, .5)/1.5.
        let p = [(1.0 / 3.0 + 0.5) / 2.0, (2.0 / 3.0 + 0.5) / 2.0];
        let kl = |q: [f64; 2]| -> f64 {
            (0..2)
                .map(|j| (p[j] - q[j]) * (p[j].ln() - q[j].ln()))
                .sum()
        };
        let msp = |a: f64, b: f64| 1.0 / (1.0 + (a.min(b) - a.max(b)).exp());
        let k0 = kl([0.5, 0.5]);
        let k1 = kl([2.0 / 3.0, 1.0 / 3.0]);
        let want = [
            -(k0 + 2.5 * k0 - 0.1 * msp(1.0, 3.0)),
            -(k1 + 2.5 * k1 - 0.1 * msp(9.0, 0.0)),
        ];
        let s = d.fit(&(&fit).into(), &head).unwrap().score(&test).unwrap();
        for (a, b) in s.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
        // The injected-noise hook with any noise and δ = 0 gives the same.
        let sc = d
            .fit_with_noise(&(&fit).into(), &head, Array2::ones((2, 2)).view())
            .unwrap();
        assert_eq!(sc.score(&test).unwrap(), s);
    }

    #[test]
    fn weiper_perturbation_has_the_relative_distance() {
        let head = Head::new(
            array![[3.0f32, 4.0, 0.0], [0.0, 1.0, 0.0]],
            array![0.5, -0.5],
        )
        .unwrap();
        let fit = Features::with_head(array![[1.0f32, 2.0, 3.0]], &head, None).unwrap();
        let d = Weiper {
            n_repeats: 3,
            perturbation_distance: 2.0,
            ..Weiper::default()
        };
        let f = d.fit_state(&(&fit).into(), &head, None).unwrap();
        assert_eq!((f.weight.len(), f.bias.len()), (3 * 2 * 3, 6));
        for (k, w) in f.weight.chunks_exact(3).enumerate() {
            let c = k % 2;
            let orig: Vec<f64> = head.weight.row(c).iter().map(|&v| v as f64).collect();
            let dist = w
                .iter()
                .zip(&orig)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                .sqrt();
            let norm = orig.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!((dist - 2.0 * norm).abs() < 1e-12, "row {k}: {dist}");
            assert_eq!(f.bias[k], head.bias[c] as f64);
        }
        // Another seed, another perturbation; the same seed, the same.
        let g = d.fit_state(&(&fit).into(), &head, None).unwrap();
        assert_eq!(f.weight, g.weight);
        let h = Weiper { seed: 1, ..d }
            .fit_state(&(&fit).into(), &head, None)
            .unwrap();
        assert_ne!(f.weight, h.weight);
    }

    #[test]
    fn weiper_bad_parameters_and_noise_are_clear_errors() {
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let fit = Features::with_head(array![[1.0f32, 2.0]], &head, None).unwrap();
        let err = |d: Weiper| {
            d.fit(&(&fit).into(), &head)
                .err()
                .expect("an error")
                .to_string()
        };
        let base = Weiper::default();
        for (d, want) in [
            (
                Weiper {
                    n_repeats: 0,
                    ..base.clone()
                },
                "weiper n_repeats must be >= 1, got 0",
            ),
            (
                Weiper {
                    n_bins: 0,
                    ..base.clone()
                },
                "weiper n_bins must be >= 1, got 0",
            ),
            (
                Weiper {
                    smoothing_perturbed: 0,
                    ..base.clone()
                },
                "weiper smoothing and smoothing_perturbed must be >= 1 (bins), got 4 and 0",
            ),
            (
                Weiper {
                    perturbation_distance: -1.0,
                    ..base.clone()
                },
                "weiper perturbation_distance must be finite and >= 0, got -1",
            ),
            (
                Weiper {
                    lambda_2: f64::NAN,
                    ..base.clone()
                },
                "weiper lambda_2 must be finite and >= 0, got NaN",
            ),
            (
                Weiper {
                    epsilon: 0.0,
                    ..base.clone()
                },
                "weiper epsilon must be finite and > 0, got 0",
            ),
        ] {
            let e = err(d);
            assert!(e.contains(want), "{e}");
        }
        let e = base
            .fit_with_noise(&(&fit).into(), &head, Array2::zeros((199, 2)).view())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("weiper noise rows (n_repeats · classes): expected 200, got 199"),
            "{e}"
        );
        let e = base
            .fit_with_noise(&(&fit).into(), &head, Array2::zeros((200, 3)).view())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("weiper noise columns (feature dimension): expected 2, got 3"),
            "{e}"
        );
        let empty = fit.slice(0, 0);
        assert!(base.fit(&(&empty).into(), &head).is_err());
    }

    #[test]
    fn weiper_grid_is_the_authors_and_its_fast_path_equals_per_candidate_fits() {
        let g = Weiper::default().sweep();
        assert_eq!(g.len(), 3600);
        assert_eq!(
            (
                g[0].perturbation_distance,
                g[0].n_bins,
                g[0].smoothing_perturbed
            ),
            (1.8, 60, 15)
        );
        assert_eq!(g[1].smoothing_perturbed, 25);
        assert_eq!((g[3].smoothing, g[3].smoothing_perturbed), (8, 15));
        assert_eq!(g[300].n_bins, 80);
        assert_eq!(g[3599].perturbation_distance, 2.4);
        assert!(g.contains(&Weiper::default()));
        // A small grid with two (δ, n_bins) groups on a small problem.
        let head = Head::new(
            array![[1.0f32, -0.5, 0.2], [0.1, 0.8, -0.3]],
            array![0.1, -0.1],
        )
        .unwrap();
        let rows = |k: usize, off: f32| {
            Array2::from_shape_fn((k, 3), |(i, j)| ((i * 7 + j * 3) % 11) as f32 * 0.3 + off)
        };
        let fit = Features::with_head(rows(30, 0.0), &head, None).unwrap();
        let (vi, vo) = (
            Features::with_head(rows(8, 0.1), &head, None).unwrap(),
            Features::with_head(rows(8, 1.7), &head, None).unwrap(),
        );
        let base = Weiper {
            n_repeats: 5,
            n_bins: 10,
            ..Weiper::default()
        };
        let grid: Vec<Weiper> = [
            (1.8, 10, 2.5, 4),
            (1.8, 10, 0.1, 8),
            (2.4, 6, 1.0, 1),
            (1.8, 10, 4.0, 4),
        ]
        .into_iter()
        .map(
            |(perturbation_distance, n_bins, lambda_1, smoothing)| Weiper {
                perturbation_distance,
                n_bins,
                lambda_1,
                smoothing,
                ..base.clone()
            },
        )
        .collect();
        let fast = Weiper::grid_val_scores(&grid, &(&fit).into(), &head, &vi, &vo).unwrap();
        for (c, got) in grid.iter().zip(fast) {
            let (a, b) = got.unwrap();
            let sc = c.fit(&(&fit).into(), &head).unwrap();
            assert_eq!(a, sc.score(&vi).unwrap(), "{c:?}");
            assert_eq!(b, sc.score(&vo).unwrap(), "{c:?}");
        }
        let bad = vec![Weiper { n_bins: 0, ..base }];
        assert!(Weiper::grid_val_scores(&bad, &(&fit).into(), &head, &vi, &vo).is_none());
    }
}
