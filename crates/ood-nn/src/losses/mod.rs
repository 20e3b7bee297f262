//! Training methods, one file per method. Each file holds the method's loss and its training
//! `step`, what it needs besides labelled ID images (`NEEDS`, a [`Needs`]), and its `recipe`: the
//! default hyper-parameters of its paper or reference code, as a [`TrainConfig`].
//!
//! | method | file | needs | recipe |
//! |---|---|---|---|
//! | cross-entropy | [`cross_entropy`] | — | OpenOOD CE baseline: 100 epochs, batch 128, lr 0.1 |
//! | Outlier Exposure | [`outlier_exposure`] | outliers per step (2× the batch) | fine-tune 10 epochs, lr 1e-3, λ 0.5 |
//! | MixOE | [`mixoe`] | outliers per step (1× the batch) | fine-tune 10 epochs, batch 32, lr 1e-3 |
//! | SupCon | [`supcon`] | two views, projection, probe | 100 epochs, batch 512, lr 0.1, warm-up 10 |
//! | ReweightOOD | [`reweightood`] | two views, projection, probe | as SupCon |
//! | TagFog | [`tagfog`] | two views, projection, text anchors, jigsaw outliers as class K | 200 epochs, batch 512, lr 0.05 |
//!
//! [`Method`] is the closed list the training loop ([`crate::train::train`]) and the CLI use; its
//! methods below dispatch to the files, one `match` per question.

use crate::error::{Error, Result};
use crate::network::Forward;
use crate::train::{Augment, TrainConfig};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::ModuleT;
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

/// How a method uses an outlier set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outliers {
    /// It uses none.
    Unused,
    /// A batch of auxiliary outliers is sampled (with replacement) for every step.
    PerStep,
    /// The outliers join the training set as an extra class `K` (TagFog's fake outliers).
    AsClass,
}

/// What a method needs besides labelled ID images; each method file has its `NEEDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// How the outlier set is used.
    pub outliers: Outliers,
    /// Two independently augmented views of every sample (`[first views; second views]`).
    pub two_views: bool,
    /// Frozen text anchors `(K, A)` of the ID classes.
    pub anchors: bool,
    /// An online linear probe (`probe.*`) on detached features, exported as the classifier head.
    pub probe: bool,
}

impl Needs {
    /// Labelled ID images only.
    pub const NOTHING: Needs = Needs {
        outliers: Outliers::Unused,
        two_views: false,
        anchors: false,
        probe: false,
    };
}

/// A network's forward pass: images, train flag → penultimate features and logits.
pub type ForwardFn<'a> = dyn Fn(&Tensor, bool) -> Forward + 'a;

/// Every method's `--method` name, in the order of the table above.
pub const NAMES: [&str; 6] = [
    cross_entropy::NAME,
    outlier_exposure::NAME,
    mixoe::NAME,
    supcon::NAME,
    reweightood::NAME,
    tagfog::NAME,
];

/// The recipe of the method called `name` (one of [`NAMES`]).
pub fn recipe(name: &str) -> Result<TrainConfig> {
    Ok(match name {
        cross_entropy::NAME => cross_entropy::recipe(),
        outlier_exposure::NAME => outlier_exposure::recipe(),
        mixoe::NAME => mixoe::recipe(),
        supcon::NAME => supcon::recipe(),
        reweightood::NAME => reweightood::recipe(),
        tagfog::NAME => tagfog::recipe(),
        other => {
            return Err(Error::Config(format!(
                "unknown method '{other}' (methods: {})",
                NAMES.join(", ")
            )));
        }
    })
}

impl Method {
    /// SupCon with the reference temperatures (τ = 0.1, τ_base = 0.07).
    pub fn supcon() -> Method {
        Method::SupCon {
            tau: supcon::TEMPERATURE,
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

    /// The method's `--method` name.
    pub fn name(&self) -> &'static str {
        match self {
            Method::CrossEntropy => cross_entropy::NAME,
            Method::OutlierExposure { .. } => outlier_exposure::NAME,
            Method::MixOe { .. } => mixoe::NAME,
            Method::SupCon { .. } => supcon::NAME,
            Method::ReweightOod(_) => reweightood::NAME,
            Method::TagFog(_) => tagfog::NAME,
        }
    }

    /// The method's name in messages.
    fn title(&self) -> &'static str {
        match self {
            Method::CrossEntropy => cross_entropy::TITLE,
            Method::OutlierExposure { .. } => outlier_exposure::TITLE,
            Method::MixOe { .. } => mixoe::TITLE,
            Method::SupCon { .. } => supcon::TITLE,
            Method::ReweightOod(_) => reweightood::TITLE,
            Method::TagFog(_) => tagfog::TITLE,
        }
    }

    /// What the method needs besides labelled ID images.
    pub fn needs(&self) -> Needs {
        match self {
            Method::CrossEntropy => cross_entropy::NEEDS,
            Method::OutlierExposure { .. } => outlier_exposure::NEEDS,
            Method::MixOe { .. } => mixoe::NEEDS,
            Method::SupCon { .. } => supcon::NEEDS,
            Method::ReweightOod(_) => reweightood::NEEDS,
            Method::TagFog(_) => tagfog::NEEDS,
        }
    }

    /// True for the methods that see two augmented views of every sample.
    pub fn two_views(&self) -> bool {
        self.needs().two_views
    }

    /// True for the methods whose outlier set is shuffled into the training set as class K
    /// (TagFog's fake outliers) rather than sampled per step.
    pub fn outliers_as_class(&self) -> bool {
        self.needs().outliers == Outliers::AsClass
    }

    /// True for the methods that train an online linear probe on detached features.
    pub fn has_probe(&self) -> bool {
        self.needs().probe
    }

    /// Checks that the method's data needs are met.
    pub fn check(&self, have_outliers: bool, have_anchors: bool) -> Result<()> {
        let needs = self.needs();
        let missing = match needs.outliers {
            Outliers::PerStep if !have_outliers => Some("an auxiliary outlier set"),
            Outliers::AsClass if !have_outliers => {
                Some("its fake outliers (jigsaw images) as the outlier set")
            }
            _ if needs.anchors && !have_anchors => {
                Some("the text anchors (K, A) of the ID classes")
            }
            _ => None,
        };
        match missing {
            Some(what) => Err(Error::Config(format!("{} needs {what}", self.title()))),
            None => Ok(()),
        }
    }

    /// Outlier batch size for an ID batch of `b` (0 for methods that sample no outliers per step).
    pub fn outlier_batch(&self, b: usize) -> usize {
        match self {
            Method::OutlierExposure { outlier_ratio, .. } => {
                outlier_exposure::outlier_batch(b, *outlier_ratio)
            }
            Method::MixOe { .. } => mixoe::outlier_batch(b),
            _ => 0,
        }
    }

    /// Outputs the network needs for `classes` ID classes: one more for the methods that train
    /// their outliers as class K.
    pub fn network_outputs(&self, classes: i64) -> i64 {
        if self.outliers_as_class() {
            classes + 1
        } else {
            classes
        }
    }

    /// The recipe's augmentation for images normalised with `mean` / `std`: the contrastive
    /// references' SimCLR chain for the two-view methods, the CIFAR pad-and-crop + flip
    /// otherwise.
    pub fn augment(&self, mean: [f32; 3], std: [f32; 3]) -> Augment {
        if self.two_views() {
            Augment::simclr(mean, std)
        } else {
            Augment::cifar(mean, std)
        }
    }

    /// The factor `lr_min / lr` of recipes whose cosine floor follows the peak learning rate
    /// (SupCon and ReweightOOD: `η_min = lr · 10⁻³`, spec 3.3); `None` for a fixed floor.
    pub fn lr_min_factor(&self) -> Option<f64> {
        match self {
            Method::SupCon { .. } | Method::ReweightOod(_) => Some(supcon::LR_MIN_FACTOR),
            _ => None,
        }
    }

    /// The projection head the method trains (`proj.*` under `path`) for `feat_dim`-wide
    /// features; `anchor_dim` is the anchors' width `A` (TagFog). `None` for methods without one.
    pub fn projection(
        &self,
        path: &nn::Path,
        feat_dim: i64,
        anchor_dim: Option<i64>,
    ) -> Option<Box<dyn ModuleT>> {
        match self {
            Method::SupCon { .. } | Method::ReweightOod(_) => {
                Some(Box::new(reweightood::projection(path, feat_dim)))
            }
            Method::TagFog(_) => Some(Box::new(tagfog::projection(
                path,
                feat_dim,
                anchor_dim.expect("checked by Method::check"),
            ))),
            _ => None,
        }
    }

    /// What the exported classifier head is, for a run's record, with `classes` ID classes.
    pub fn exported_head(&self, classes: i64) -> String {
        let outputs = self.network_outputs(classes);
        if self.outliers_as_class() {
            format!(
                "the first {classes} of the {outputs} logits (the fake-outlier logit is dropped)"
            )
        } else if self.has_probe() {
            "the online linear probe trained on detached features".to_string()
        } else {
            "the trained classifier".to_string()
        }
    }

    /// The loss of one step. `x` holds the ID images, or for two-view methods
    /// ([`Method::two_views`]) both views `[first views; second views]` with `y` repeated;
    /// `outliers` the step's outlier batch (OE, MixOE).
    pub fn loss(
        &self,
        forward: &ForwardFn<'_>,
        x: &Tensor,
        y: &Tensor,
        outliers: Option<&Tensor>,
        extra: &Extra<'_>,
        rng: &mut ChaCha8Rng,
    ) -> StepLoss {
        let outliers = || outliers.expect("checked by Method::check");
        match self {
            Method::CrossEntropy => cross_entropy::step(forward, x, y),
            Method::OutlierExposure { weight, .. } => {
                outlier_exposure::step(forward, x, y, outliers(), *weight)
            }
            Method::MixOe { alpha, beta, mix } => {
                let (mixed, lam) = mixoe::mix_batch(x, outliers(), *alpha, *mix, rng);
                mixoe::step(forward, x, y, &mixed, lam, *beta)
            }
            Method::SupCon { tau, tau_base } => supcon::step(forward, x, y, extra, *tau, *tau_base),
            Method::ReweightOod(p) => reweightood::step(forward, x, y, extra, p),
            Method::TagFog(p) => tagfog::step(forward, x, y, extra, p),
        }
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

impl StepLoss {
    /// The loss and the logits scored against `labels`.
    pub fn new(loss: Tensor, logits: Tensor, labels: &Tensor) -> StepLoss {
        StepLoss {
            loss,
            logits,
            labels: labels.shallow_clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_gives_the_recipe_of_its_method() {
        for name in NAMES {
            let c = recipe(name).unwrap();
            assert_eq!(c.method.name(), name);
        }
        assert_eq!(recipe("ce").unwrap(), TrainConfig::default());
        assert!(recipe("nope").is_err());
    }

    #[test]
    fn set_lr_moves_the_floor_of_the_contrastive_recipes_only() {
        for (name, floor) in [("supcon", 0.5 * 1e-3), ("reweightood", 0.5 * 1e-3)] {
            let mut c = recipe(name).unwrap();
            c.set_lr(0.5);
            assert_eq!((c.lr, c.lr_min), (0.5, floor), "{name}");
        }
        for name in ["ce", "oe", "mixoe", "tagfog"] {
            let mut c = recipe(name).unwrap();
            let floor = c.lr_min;
            c.set_lr(0.5);
            assert_eq!((c.lr, c.lr_min), (0.5, floor), "{name}");
        }
    }

    #[test]
    fn check_names_what_is_missing() {
        let err = |m: &Method, o: bool, a: bool| m.check(o, a).unwrap_err().to_string();
        let oe = recipe("oe").unwrap().method;
        assert!(err(&oe, false, false).contains("outlier exposure needs an auxiliary outlier set"));
        let tagfog = Method::tagfog();
        assert!(err(&tagfog, false, true).contains("fake outliers"));
        assert!(err(&tagfog, true, false).contains("text anchors"));
        assert!(tagfog.check(true, true).is_ok());
        assert!(Method::supcon().check(false, false).is_ok());
        assert_eq!(tagfog.network_outputs(10), 11);
        assert_eq!(Method::supcon().network_outputs(10), 10);
    }
}
