//! Training objectives, one file per method; [`Method`] is the closed list the training loop and
//! the CLI use.

use crate::error::{Error, Result};
use crate::network::Forward;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{Module, ModuleT};
use tch::{Kind, Tensor, nn};

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
    /// Supervised contrastive learning (Khosla et al., NeurIPS 2020; spec training-methods.md
    /// 3.8.1) on two views per image through the projection `Linear(d→d) → ReLU → Linear(d→128)`
    /// (`proj.*`), plus an online linear probe (`probe.*`) trained by cross-entropy on the
    /// **detached** penultimate features (it does not shape the encoder; it gives the exported
    /// classifier head and the logged accuracy).
    #[serde(rename = "supcon")]
    SupCon {
        /// Temperature τ (0.1).
        tau: f64,
        /// Base temperature τ_base (0.07 in the reference, so the loss carries τ/τ_base).
        tau_base: f64,
    },
    /// ReweightOOD (Regmi et al., CVPR-W 2024; spec 3.2) on two views per image through the
    /// projection `Linear(d→d) → ReLU → Linear(d→128)` (`proj.*`), plus the same online linear
    /// probe as [`Method::SupCon`]. Its test-time score is Mahalanobis on normalised penultimate
    /// features (detector `mahalanobis` with `normalize=true`).
    #[serde(rename = "reweightood")]
    ReweightOod(reweightood::Params),
    /// TagFog (spec 1.5): `L_CE` over K+1 classes (class K = jigsaw fake outliers, given as the
    /// outlier set and shuffled into the epoch with label K) + α·`L_CI` against frozen text
    /// anchors + β·`L_SC`, on two views per sample through the projection
    /// `Linear(d→2d) → BN → ReLU → Linear(2d→A)` (`proj.*`). The network needs K+1 outputs.
    #[serde(rename = "tagfog")]
    TagFog(tagfog::Params),
}

impl Method {
    /// SupCon with the reference temperatures (τ = 0.1, τ_base = 0.07).
    pub fn supcon() -> Method {
        Method::SupCon {
            tau: 0.1,
            tau_base: supcon::DEFAULT_BASE_TEMPERATURE,
        }
    }

    /// ReweightOOD with the defaults of `train_reweightood.yml`.
    pub fn reweightood() -> Method {
        Method::ReweightOod(reweightood::Params::default())
    }

    /// TagFog with the shipped defaults (τ_ci = τ_sup = 0.1, τ_base = 0.07, α = β = 1).
    pub fn tagfog() -> Method {
        Method::TagFog(tagfog::Params::default())
    }

    /// True for the methods that see two augmented views of every sample.
    pub fn two_views(&self) -> bool {
        matches!(
            self,
            Method::SupCon { .. } | Method::ReweightOod(_) | Method::TagFog(_)
        )
    }

    /// True for the methods whose outlier set is shuffled into the training set as class K
    /// (TagFog's fake outliers) rather than sampled per step.
    pub fn outliers_as_class(&self) -> bool {
        matches!(self, Method::TagFog(_))
    }

    /// True for the methods that train an online linear probe on detached features.
    pub fn has_probe(&self) -> bool {
        matches!(self, Method::SupCon { .. } | Method::ReweightOod(_))
    }
}

/// The parts a contrastive method trains besides the network, created by
/// [`crate::train::train`] in the same `VarStore`.
pub struct Extra<'a> {
    /// Projection head (`proj.*`).
    pub projection: Option<&'a dyn ModuleT>,
    /// Online linear probe (`probe.*`).
    pub probe: Option<&'a nn::Linear>,
    /// L2-normalised text anchors `(K, A)` (TagFog).
    pub anchors: Option<&'a Tensor>,
}

impl std::fmt::Debug for Extra<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extra")
            .field("projection", &self.projection.is_some())
            .field("probe", &self.probe.is_some())
            .field("anchors", &self.anchors.map(|a| a.size()))
            .finish()
    }
}

/// Row-wise L2 normalisation (`F.normalize`, eps 1e-12).
pub fn normalize(z: &Tensor) -> Tensor {
    z / z
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12)
}

/// What one step of a method returns.
#[derive(Debug)]
pub struct StepLoss {
    /// The loss to minimise.
    pub loss: Tensor,
    /// Logits whose argmax is compared with `labels` for the logged accuracy.
    pub logits: Tensor,
    /// Labels of `logits`' rows.
    pub labels: Tensor,
}

impl Method {
    /// Checks that the method's data needs are met.
    pub fn check(&self, have_outliers: bool, have_anchors: bool) -> Result<()> {
        match self {
            Method::OutlierExposure { .. } if !have_outliers => Err(Error::Config(
                "outlier exposure needs an auxiliary outlier set".into(),
            )),
            Method::MixOe { .. } if !have_outliers => {
                Err(Error::Config("MixOE needs an auxiliary outlier set".into()))
            }
            Method::TagFog(_) if !have_outliers => Err(Error::Config(
                "TagFog needs its fake outliers (jigsaw images) as the outlier set".into(),
            )),
            Method::TagFog(_) if !have_anchors => Err(Error::Config(
                "TagFog needs the text anchors (K, A) of the ID classes".into(),
            )),
            _ => Ok(()),
        }
    }
    /// Outlier batch size for an ID batch of `b` (0 for methods that sample no outliers per step).
    pub fn outlier_batch(&self, b: usize) -> usize {
        match self {
            Method::OutlierExposure { outlier_ratio, .. } => {
                ((b as f64) * outlier_ratio).round().max(1.0) as usize
            }
            Method::MixOe { .. } => b,
            _ => 0,
        }
    }
    /// The loss of one step. `x` holds the ID images, or for two-view methods
    /// ([`Method::two_views`]) both views `[first views; second views]` with `y` repeated;
    /// `outliers` the step's outlier batch (OE, MixOE).
    pub fn loss(
        &self,
        forward: &dyn Fn(&Tensor, bool) -> Forward,
        x: &Tensor,
        y: &Tensor,
        outliers: Option<&Tensor>,
        extra: &Extra<'_>,
        rng: &mut ChaCha8Rng,
    ) -> StepLoss {
        let out = |loss: Tensor, logits: Tensor| StepLoss {
            loss,
            logits,
            labels: y.shallow_clone(),
        };
        match self {
            Method::CrossEntropy => {
                let z = forward(x, true).logits;
                out(cross_entropy::loss(&z, y), z)
            }
            Method::OutlierExposure { weight, .. } => {
                let o = outliers.expect("checked by Method::check");
                // One forward pass over ID and outliers together, as the OE reference does.
                let both = forward(&Tensor::cat(&[x, o], 0), true).logits;
                let b = x.size()[0];
                let z = both.narrow(0, 0, b);
                let zo = both.narrow(0, b, o.size()[0]);
                out(
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
                let z = forward(x, true).logits;
                let zm = forward(&mixed, true).logits;
                out(mixoe::loss(&z, y, &zm, lam, *beta), z)
            }
            Method::SupCon { .. } | Method::ReweightOod(_) => {
                let f = forward(x, true);
                let proj = extra.projection.expect("created by train()");
                let z = normalize(&proj.forward_t(&f.features, true));
                let contrastive = match self {
                    Method::SupCon { tau, tau_base } => supcon::loss(&z, y, *tau, *tau_base),
                    Method::ReweightOod(p) => reweightood::loss(&z, y, p),
                    _ => unreachable!("matched above"),
                };
                let probe = extra.probe.expect("created by train()");
                let pl = probe.forward(&f.features.detach());
                out(contrastive + cross_entropy::loss(&pl, y), pl)
            }
            Method::TagFog(p) => {
                let f = forward(x, true);
                let proj = extra.projection.expect("created by train()");
                let anchors = extra.anchors.expect("checked by Method::check");
                let z = normalize(&proj.forward_t(&f.features, true));
                let terms = tagfog::loss(&f.logits, &z, anchors, y, p);
                out(terms.total, f.logits)
            }
        }
    }
}

/// Number of rows of `logits` whose argmax equals `labels`.
pub fn correct(logits: &Tensor, labels: &Tensor) -> i64 {
    logits
        .argmax(-1, false)
        .eq_tensor(labels)
        .sum(Kind::Int64)
        .int64_value(&[])
}
