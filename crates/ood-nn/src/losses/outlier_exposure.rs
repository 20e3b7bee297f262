//! Outlier Exposure (Hendrycks, Mazeika & Dietterich, "Deep Anomaly Detection with Outlier
//! Exposure", ICLR 2019, arXiv:1812.04606).
//!
//! Loss: `CE(f(x), y) + λ · mean_o [ −(1/K) Σ_k log softmax(f(x_o))_k ]`, i.e. cross-entropy to the
//! uniform distribution on auxiliary outliers (equivalently `−mean_k z_k + lse(z)`), λ = 0.5 in the
//! OE CIFAR recipe (spec training-methods.md 4.2).
//!
//! Needs: an auxiliary outlier set, sampled per step (twice the ID batch). Recipe: OE's
//! fine-tuning of a baseline model ([`recipe`]).

use super::{ForwardFn, Method, Needs, Outliers, StepLoss, cross_entropy};
use crate::train::TrainConfig;
use tch::{Kind, Tensor};

/// The method's `--method` name.
pub const NAME: &str = "oe";

/// The method's name in messages.
pub const TITLE: &str = "outlier exposure";

/// What OE needs: an outlier batch every step.
pub const NEEDS: Needs = Needs {
    outliers: Outliers::PerStep,
    ..Needs::NOTHING
};

/// Weight λ of the outlier term in the OE CIFAR recipe.
pub const WEIGHT: f64 = 0.5;

/// Outlier batch as a multiple of the ID batch in the OE recipe (256 outliers per 128 images).
pub const OUTLIER_RATIO: f64 = 2.0;

/// OE's fine-tuning recipe (`CIFAR/oe_tune.py`, spec 4.2): 10 epochs at lr 1e-3 from a baseline
/// model (`ood train --init`), λ = 0.5, outlier batch 2× the ID batch; otherwise the CE baseline
/// (batch 128, SGD Nesterov 0.9, weight decay 5e-4, cosine to 1e-6).
pub fn recipe() -> TrainConfig {
    TrainConfig {
        method: Method::OutlierExposure {
            weight: WEIGHT,
            outlier_ratio: OUTLIER_RATIO,
        },
        epochs: 10,
        lr: 1e-3,
        ..cross_entropy::recipe()
    }
}

/// Outlier batch size for an ID batch of `b`: `round(b · ratio)`, at least 1.
pub fn outlier_batch(b: usize, outlier_ratio: f64) -> usize {
    ((b as f64) * outlier_ratio).round().max(1.0) as usize
}

/// One step: CE on the ID batch `x` plus `weight` × CE-to-uniform on the outlier batch, both in
/// one forward pass, as the OE reference does.
pub fn step(
    forward: &ForwardFn<'_>,
    x: &Tensor,
    y: &Tensor,
    outliers: &Tensor,
    weight: f64,
) -> StepLoss {
    let both = forward(&Tensor::cat(&[x, outliers], 0), true).logits;
    let b = x.size()[0];
    let z = both.narrow(0, 0, b);
    let zo = both.narrow(0, b, outliers.size()[0]);
    StepLoss::new(cross_entropy::loss(&z, y) + uniform_ce(&zo) * weight, z, y)
}

/// Mean cross-entropy from the uniform distribution over the `K` classes to `softmax(z)`.
pub fn uniform_ce(logits: &Tensor) -> Tensor {
    (-logits
        .log_softmax(-1, Kind::Float)
        .mean_dim(-1, false, Kind::Float))
    .mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_ce_matches_hand_computation() {
        // z = [1, 0, 0]: lse = ln(e + 2); mean_k z_k = 1/3
        let z = Tensor::from_slice(&[1.0f32, 0.0, 0.0]).view([1, 3]);
        let want = (1f64.exp() + 2.0).ln() - 1.0 / 3.0;
        assert!((uniform_ce(&z).double_value(&[]) - want).abs() < 1e-6);
        // Uniform logits reach the minimum ln K.
        let u = Tensor::zeros([4, 5], (Kind::Float, tch::Device::Cpu));
        assert!((uniform_ce(&u).double_value(&[]) - 5f64.ln()).abs() < 1e-6);
    }
}
