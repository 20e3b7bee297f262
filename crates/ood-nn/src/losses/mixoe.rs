//! Mixture Outlier Exposure (Zhang et al., WACV 2023), as `train/train_mixoe.py` (spec
//! training-methods.md 2.4). Fine-tunes a baseline checkpoint.
//!
//! Per step: an ID batch `(x, y)` and an outlier batch `x_o` of the same size, one
//! `λ ~ Beta(α, α)`; mixup `x̃ = λx + (1−λ)x_o`, or CutMix (outlier pixels pasted into the ID image
//! inside one box for the whole batch, λ recomputed from the clipped box area); soft target
//! `ỹ = λ·onehot(y) + (1−λ)/K`; loss `CE(f(x), y) + β · mean_i −Σ_k ỹ_ik log softmax(f(x̃_i))_k`,
//! with the ID and mixed batches in two separate forward passes.
//!
//! Needs: an auxiliary outlier set, one outlier per ID image each step. Recipe: MixOE's
//! fine-tuning of a baseline model ([`recipe`]).

use super::{ForwardFn, Method, Needs, Outliers, StepLoss, cross_entropy};
use crate::train::TrainConfig;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// The method's `--method` name.
pub const NAME: &str = "mixoe";

/// The method's name in messages.
pub const TITLE: &str = "MixOE";

/// What MixOE needs: an outlier batch every step.
pub const NEEDS: Needs = Needs {
    outliers: Outliers::PerStep,
    ..Needs::NOTHING
};

/// MixOE's fine-tuning recipe (`train/train_mixoe.py`, spec 2.4): 10 epochs from a baseline
/// model (`ood train --init`), batch 32 ID + 32 outliers with the last incomplete batch dropped,
/// SGD Nesterov 0.9, lr 1e-3 with a per-step cosine to 1e-6, weight decay 1e-5; the code's
/// defaults α = β = 1 with mixup.
pub fn recipe() -> TrainConfig {
    TrainConfig {
        method: Method::MixOe {
            alpha: 1.0,
            beta: 1.0,
            mix: Mix::Mixup,
        },
        epochs: 10,
        batch_size: 32,
        lr: 1e-3,
        weight_decay: 1e-5,
        drop_last: true,
        ..cross_entropy::recipe()
    }
}

/// Outlier batch size for an ID batch of `b`: `b` (pairs i ↔ i).
pub fn outlier_batch(b: usize) -> usize {
    b
}

/// Mixes the ID batch `x` with the outlier batch: draws `λ ~ Beta(α, α)`, then mixup or CutMix;
/// returns the mixed batch and the `λ` of its soft targets.
pub fn mix_batch(
    x: &Tensor,
    outliers: &Tensor,
    alpha: f64,
    mix: Mix,
    rng: &mut ChaCha8Rng,
) -> (Tensor, f64) {
    let lam = sample_lambda(alpha, rng);
    match mix {
        Mix::Mixup => (mixup(x, outliers, lam), lam),
        Mix::Cutmix => cutmix(x, outliers, lam, rng),
    }
}

/// One step on the ID batch `x` and its `mixed` batch ([`mix_batch`]): two separate forward
/// passes (BatchNorm statistics per pass), as the reference.
pub fn step(
    forward: &ForwardFn<'_>,
    x: &Tensor,
    y: &Tensor,
    mixed: &Tensor,
    lam: f64,
    beta: f64,
) -> StepLoss {
    let z = forward(x, true).logits;
    let zm = forward(mixed, true).logits;
    StepLoss::new(loss(&z, y, &zm, lam, beta), z, y)
}

/// How ID and outlier images are mixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mix {
    /// Pixel-wise convex combination.
    Mixup,
    /// Outlier box pasted into the ID image.
    Cutmix,
}

/// Mixup `λx + (1−λ)x_o`.
pub fn mixup(x: &Tensor, outliers: &Tensor, lam: f64) -> Tensor {
    x * lam + outliers * (1.0 - lam)
}

/// The CutMix box `(top, bottom, left, right)` (half-open) for an `h×w` image, `λ` and a centre
/// `(cy, cx)`: sides `⌊h·r⌋`, `⌊w·r⌋` with `r = √(1−λ)`, corners `centre ± ⌊side/2⌋` clipped.
pub fn cutmix_box(h: i64, w: i64, lam: f64, cy: i64, cx: i64) -> (i64, i64, i64, i64) {
    let r = (1.0 - lam).sqrt();
    let (bh, bw) = (((h as f64) * r) as i64, ((w as f64) * r) as i64);
    (
        (cy - bh / 2).clamp(0, h),
        (cy + bh / 2).clamp(0, h),
        (cx - bw / 2).clamp(0, w),
        (cx + bw / 2).clamp(0, w),
    )
}

/// CutMix of NCHW batches with a box centred uniformly at random; returns the mixed batch and the
/// recomputed `λ = 1 − box_area/(h·w)`.
pub fn cutmix(x: &Tensor, outliers: &Tensor, lam: f64, rng: &mut ChaCha8Rng) -> (Tensor, f64) {
    let (h, w) = (x.size()[2], x.size()[3]);
    let cy = rng.gen_range(0..h);
    let cx = rng.gen_range(0..w);
    let (t, b, l, r) = cutmix_box(h, w, lam, cy, cx);
    let mixed = x.copy();
    if b > t && r > l {
        mixed
            .narrow(2, t, b - t)
            .narrow(3, l, r - l)
            .copy_(&outliers.narrow(2, t, b - t).narrow(3, l, r - l));
    }
    let lam = 1.0 - ((b - t) * (r - l)) as f64 / (h * w) as f64;
    (mixed, lam)
}

/// `λ ~ Beta(α, α)` from two Gamma draws (Marsaglia–Tsang), seeded.
pub fn sample_lambda(alpha: f64, rng: &mut ChaCha8Rng) -> f64 {
    let a = gamma(alpha, rng);
    let b = gamma(alpha, rng);
    a / (a + b)
}

fn gamma(shape: f64, rng: &mut ChaCha8Rng) -> f64 {
    if shape < 1.0 {
        let u: f64 = rng.r#gen::<f64>().max(f64::MIN_POSITIVE);
        return gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        // Standard normal by Box–Muller.
        let u1: f64 = rng.r#gen::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.r#gen();
        let x = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = rng.r#gen::<f64>().max(f64::MIN_POSITIVE);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Soft-target cross-entropy `mean_i −Σ_k ỹ_ik log softmax(z_i)_k`, `ỹ = λ·onehot(y) + (1−λ)/K`.
pub fn soft_target_ce(logits: &Tensor, labels: &Tensor, lam: f64) -> Tensor {
    let k = logits.size()[1];
    let logp = logits.log_softmax(1, Kind::Float);
    let target = labels.onehot(k).to_kind(Kind::Float) * lam + (1.0 - lam) / k as f64;
    (-(target * logp).sum_dim_intlist([1i64].as_slice(), false, Kind::Float)).mean(Kind::Float)
}

/// The MixOE loss from the ID logits, the mixed-batch logits, `λ` and `β`.
pub fn loss(
    id_logits: &Tensor,
    labels: &Tensor,
    mixed_logits: &Tensor,
    lam: f64,
    beta: f64,
) -> Tensor {
    cross_entropy::loss(id_logits, labels) + soft_target_ce(mixed_logits, labels, lam) * beta
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn cutmix_box_and_lambda() {
        // 32×32, λ = 0.75: r = 0.5, 16×16 box; centred at (0, 31) it is clipped to rows 0..8, cols 23..32.
        assert_eq!(cutmix_box(32, 32, 0.75, 0, 31), (0, 8, 23, 32));
        assert_eq!(cutmix_box(32, 32, 0.75, 16, 16), (8, 24, 8, 24));
        let x = Tensor::zeros([2, 1, 4, 4], (Kind::Float, tch::Device::Cpu));
        let o = Tensor::ones([2, 1, 4, 4], (Kind::Float, tch::Device::Cpu));
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (m, lam) = cutmix(&x, &o, 0.5, &mut rng);
        // λ equals the share of ID pixels left.
        let id_share = 1.0 - m.mean(Kind::Float).double_value(&[]);
        assert!((lam - id_share).abs() < 1e-6, "{lam} vs {id_share}");
    }

    #[test]
    fn beta_sampler_mean_and_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 20000;
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let l = sample_lambda(2.0, &mut rng);
            assert!((0.0..=1.0).contains(&l));
            s += l;
            s2 += l * l;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        // Beta(2, 2): mean 1/2, variance 1/20.
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        assert!((var - 0.05).abs() < 0.003, "{var}");
    }
}
