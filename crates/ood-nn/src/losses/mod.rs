//! Training objectives, one file per method; [`Method`] is the closed list the training loop and
//! the CLI use.

use crate::error::{Error, Result};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::Tensor;

pub mod cross_entropy;
pub mod mixoe;
pub mod outlier_exposure;
pub mod reweightood;
pub mod supcon;
pub mod tagfog;

/// A training method and its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Method {
    /// Plain cross-entropy.
    CrossEntropy,
    /// Outlier Exposure (Hendrycks et al., ICLR'19): CE + λ·CE-to-uniform on auxiliary outliers.
    OutlierExposure {
        /// Weight λ of the outlier term (0.5 in the OE paper's CIFAR recipe).
        weight: f64,
        /// Outlier batch size as a multiple of the ID batch (2 in the OE recipe: 256 vs 128).
        outlier_ratio: f64,
    },
    /// Mixture Outlier Exposure (Zhang et al., WACV'23): CE + β·soft-target CE on ID images mixed
    /// with outliers (spec training-methods.md 2.4); meant to fine-tune a baseline checkpoint.
    /// Outlier batch = ID batch (pairs i ↔ i).
    #[serde(rename = "mixoe")]
    MixOe {
        /// `λ ~ Beta(α, α)`.
        alpha: f64,
        /// Weight β of the mixed term.
        beta: f64,
        /// Mixup or CutMix.
        mix: mixoe::Mix,
    },
}

impl Method {
    /// Checks that the method's data needs are met.
    pub fn check(&self, have_outliers: bool) -> Result<()> {
        match self {
            Method::OutlierExposure { .. } if !have_outliers => Err(Error::Config(
                "outlier exposure needs an auxiliary outlier set".into(),
            )),
            Method::MixOe { .. } if !have_outliers => {
                Err(Error::Config("MixOE needs an auxiliary outlier set".into()))
            }
            _ => Ok(()),
        }
    }
    /// Outlier batch size for an ID batch of `b`.
    pub fn outlier_batch(&self, b: usize) -> usize {
        match self {
            Method::OutlierExposure { outlier_ratio, .. } => {
                ((b as f64) * outlier_ratio).round().max(1.0) as usize
            }
            Method::MixOe { .. } => b,
            _ => 0,
        }
    }
    /// The loss of one step and the ID logits (for accuracy).
    pub fn loss(
        &self,
        forward: &dyn Fn(&Tensor, bool) -> Tensor,
        x: &Tensor,
        y: &Tensor,
        outliers: Option<&Tensor>,
        rng: &mut ChaCha8Rng,
    ) -> (Tensor, Tensor) {
        match self {
            Method::CrossEntropy => {
                let z = forward(x, true);
                (cross_entropy::loss(&z, y), z)
            }
            Method::OutlierExposure { weight, .. } => {
                let o = outliers.expect("checked by Method::check");
                // One forward pass over ID and outliers together, as the OE reference does.
                let both = forward(&Tensor::cat(&[x, o], 0), true);
                let b = x.size()[0];
                let z = both.narrow(0, 0, b);
                let zo = both.narrow(0, b, o.size()[0]);
                (
                    cross_entropy::loss(&z, y) + outlier_exposure::uniform_ce(&zo) * *weight,
                    z,
                )
            }
            Method::MixOe { alpha, beta, mix } => {
                let o = outliers.expect("checked by Method::check");
                let lam = mixoe::sample_lambda(*alpha, rng);
                let (mixed, lam) = match mix {
                    mixoe::Mix::Mixup => (mixoe::mixup(x, o, lam), lam),
                    mixoe::Mix::Cutmix => mixoe::cutmix(x, o, lam, rng),
                };
                // Two separate forward passes (BatchNorm statistics per pass), as the reference.
                let z = forward(x, true);
                let zm = forward(&mixed, true);
                (mixoe::loss(&z, y, &zm, lam, *beta), z)
            }
        }
    }
}
