//! Cross-entropy: `mean_i −log softmax(z_i)[y_i]`, the baseline every other method starts from.
//!
//! Needs: labelled ID images only. Recipe: the OpenOOD CE baseline ([`recipe`]), which is also
//! [`TrainConfig::default`] and the base of the fine-tuning recipes (OE, MixOE).

use super::{ForwardFn, Method, Needs, StepLoss};
use crate::train::{Optimizer, Precision, TrainConfig};
use tch::{Reduction, Tensor};

/// The method's `--method` name.
pub const NAME: &str = "ce";

/// The method's name in messages.
pub const TITLE: &str = "cross-entropy";

/// What cross-entropy needs: labelled ID images only.
pub const NEEDS: Needs = Needs::NOTHING;

/// The OpenOOD CE baseline recipe (`configs/pipelines/train/baseline.yml`, spec
/// training-methods.md 4.3): 100 epochs, batch 128, SGD with Nesterov momentum 0.9, weight decay
/// 5e-4, lr 0.1 with a per-step cosine to 1e-6 and no warm-up.
pub fn recipe() -> TrainConfig {
    TrainConfig {
        method: Method::CrossEntropy,
        epochs: 100,
        batch_size: 128,
        lr: 0.1,
        lr_min: 1e-6,
        warmup_epochs: 0,
        optimizer: Optimizer::Sgd,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 5e-4,
        augment: None,
        seed: 0,
        drop_last: false,
        precision: Precision::Fp32,
        channels_last: false,
    }
}

/// One step: the cross-entropy of the ID batch's logits.
pub fn step(forward: &ForwardFn<'_>, x: &Tensor, y: &Tensor) -> StepLoss {
    let z = forward(x, true).logits;
    StepLoss::new(loss(&z, y), z, y)
}

/// Mean cross-entropy of logits `(n, c)` against labels `(n)`.
pub fn loss(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.cross_entropy_loss::<Tensor>(labels, None, Reduction::Mean, -100, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_matches_hand_computation() {
        // z = [[2, 0], [0, 0]], y = [0, 1]: (log(1+e^-2) + log 2) / 2
        let z = Tensor::from_slice(&[2.0f32, 0.0, 0.0, 0.0]).view([2, 2]);
        let y = Tensor::from_slice(&[0i64, 1]);
        let want = ((1.0f64 + (-2.0f64).exp()).ln() + 2f64.ln()) / 2.0;
        assert!((loss(&z, &y).double_value(&[]) - want).abs() < 1e-6);
    }
}
