//! TagFog objective (Textual Anchor Guidance + Fake Outlier Generation), exactly as the shipped
//! `train.py` + `losses.Ourloss` + `losses.SupConLoss` (spec training-methods.md 1.5):
//!
//! `L = L_CE + α·L_CI + β·L_SC`, α = β = 1, over `N = 2B` views (two augmentations per sample):
//! * `L_CE`: cross-entropy over **K+1** classes (class `K` = jigsaw fake outliers);
//! * `L_CI`: for an ID view, `−log softmax_c(⟨z_i, t_c⟩/τ_ci)[y_i]` over the `K` frozen text anchors
//!   `t_c`; for a jigsaw view 0; the mean is over **all** views (jigsaw views dilute it);
//! * `L_SC`: [`super::supcon`] on `z` with jigsaw views as one ordinary class, τ = 0.1,
//!   τ_base = 0.07 (factor 1.4286, kept for parity).
//!
//! `z = n(g(f(x)))` with the projection MLP `g = Linear(d→2d) → BN1d → ReLU → Linear(2d→A)` to the
//! anchor width `A` (768 in the paper for CLIP ViT-L/14; 384 with the MiniLM encoder used here),
//! saved under `proj.*`. At test time OOD scores use the first `K` logits only (the fake-outlier
//! logit is dropped): `ood train` exports the first `K` rows of the K+1 head.
//!
//! Needs: two views per sample, the text anchors `(K, A)` of the ID classes, and fake outliers
//! (jigsaws, [`jigsaw_outliers`]) that join the training set as class `K`
//! ([`training_set`]). Recipe: the shipped CIFAR scripts ([`recipe`]).

use super::{ForwardFn, Method, Needs, Outliers, StepLoss, cross_entropy, normalize};
use crate::error::{Error, Result};
use crate::train::TrainConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor, nn};

/// The method's `--method` name.
pub const NAME: &str = "tagfog";

/// The method's name in messages.
pub const TITLE: &str = "TagFog";

/// What TagFog needs: two views, text anchors, and its fake outliers as class `K`.
pub const NEEDS: Needs = Needs {
    outliers: Outliers::AsClass,
    two_views: true,
    anchors: true,
    probe: false,
};

/// Jigsaw grid of the CIFAR fake outliers (4×4 tiles, spec 1.2).
pub const JIGSAW_GRID: usize = 4;

/// Jigsaws per training image of the CIFAR-10 fake outliers (spec 1.2; 1 for CIFAR-100).
pub const JIGSAW_PER_IMAGE: usize = 2;

/// TagFog's CIFAR recipe (`scripts/*.sh` + `util.py`, spec 1.7): 200 epochs, batch 512 images
/// (1024 views), SGD momentum 0.9 without Nesterov, weight decay 1e-4, lr 0.05 with 10 linear
/// warm-up epochs, then a per-step cosine to 0 (the reference decays ×0.1 after epochs 150 and
/// 180 instead).
pub fn recipe() -> TrainConfig {
    TrainConfig {
        method: Method::tagfog(),
        epochs: 200,
        batch_size: 512,
        lr: 0.05,
        lr_min: 0.0,
        warmup_epochs: 10,
        nesterov: false,
        weight_decay: 1e-4,
        ..cross_entropy::recipe()
    }
}

/// TagFog's fake outliers made from the training images (spec 1.2): `per_image` passes over the
/// `side`×`side` RGB images `pixels`, each image cut into `grid`×`grid` tiles and shuffled,
/// seeded from `seed`.
pub fn jigsaw_outliers(
    pixels: &[u8],
    side: usize,
    grid: usize,
    per_image: usize,
    seed: u64,
) -> Result<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6a69_6773_6177);
    crate::jigsaw::jigsaw_set(pixels, side, side, 3, grid, per_image, &mut rng)
}

/// The training set: the ID `images` and `labels` followed by the fake `outliers` with label
/// `K` = `classes`. The network must have `K+1` outputs (`outputs`) and the ID labels must lie in
/// `0..K`.
pub fn training_set(
    images: &Tensor,
    labels: &Tensor,
    outliers: &Tensor,
    classes: i64,
    outputs: i64,
) -> Result<(Tensor, Tensor)> {
    let k = classes;
    if outputs != k + 1 {
        return Err(Error::Config(format!(
            "TagFog needs a network with K+1 = {} outputs for {k} anchors, it has {outputs}",
            k + 1
        )));
    }
    let (min_label, max_label) = (labels.min().int64_value(&[]), labels.max().int64_value(&[]));
    if min_label < 0 || max_label >= k {
        return Err(Error::Config(format!(
            "TagFog: ID labels must lie in 0..{k} (one per anchor), found {min_label}..={max_label}"
        )));
    }
    let ol = Tensor::full([outliers.size()[0]], k, (Kind::Int64, Device::Cpu));
    Ok((
        Tensor::cat(&[images, outliers], 0),
        Tensor::cat(&[labels, &ol], 0),
    ))
}

/// One step on both views `x` (ID and fake outliers, labels in `0..=K`): the K+1-way
/// cross-entropy of the logits, the anchor alignment and SupCon of the normalised projections.
pub fn step(
    forward: &ForwardFn<'_>,
    x: &Tensor,
    y: &Tensor,
    extra: &super::Extra<'_>,
    p: &Params,
) -> StepLoss {
    let f = forward(x, true);
    let proj = extra.projection.expect("created by train()");
    let anchors = extra.anchors.expect("checked by Method::check");
    let z = normalize(&proj.forward_t(&f.features, true));
    let terms = loss(&f.logits, &z, anchors, y, p);
    StepLoss::new(terms.total, f.logits, y)
}

/// TagFog hyper-parameters (shipped defaults).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// Anchor-alignment temperature τ_ci (`--temp_ci`).
    pub tau_ci: f64,
    /// SupCon temperature τ (`--temp_sup`).
    pub tau_sup: f64,
    /// SupCon base temperature (0.07 in the reference).
    pub tau_base: f64,
    /// Weight α of L_CI.
    pub alpha: f64,
    /// Weight β of L_SC.
    pub beta: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            tau_ci: 0.1,
            tau_sup: 0.1,
            tau_base: super::supcon::DEFAULT_BASE_TEMPERATURE,
            alpha: 1.0,
            beta: 1.0,
        }
    }
}

/// The three terms and the total of one step.
#[derive(Debug)]
pub struct Terms {
    /// Cross-entropy over K+1 classes.
    pub ce: Tensor,
    /// Anchor alignment.
    pub ci: Tensor,
    /// Supervised contrastive term.
    pub sc: Tensor,
    /// `ce + α·ci + β·sc`.
    pub total: Tensor,
}

/// Projection MLP `Linear(d→2d) → BatchNorm1d(2d) → ReLU → Linear(2d→anchor_dim)`.
pub fn projection(vs: &nn::Path, d: i64, anchor_dim: i64) -> nn::SequentialT {
    nn::seq_t()
        .add(nn::linear(vs / "0", d, 2 * d, Default::default()))
        .add(nn::batch_norm1d(vs / "1", 2 * d, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs / "3", 2 * d, anchor_dim, Default::default()))
}

/// Anchor alignment L_CI of normalised embeddings `z` `(n, A)` against normalised anchors `(K, A)`;
/// labels equal to `K` (jigsaw) contribute 0 but count in the mean.
pub fn anchor_alignment(z: &Tensor, anchors: &Tensor, labels: &Tensor, tau_ci: f64) -> Tensor {
    let k = anchors.size()[0];
    let per = -(z.matmul(&anchors.tr()) / tau_ci).log_softmax(1, Kind::Float);
    let is_id = labels.lt(k);
    // Clamp jigsaw labels to a valid index, then zero their term.
    let idx = labels.clamp_max(k - 1).view([-1, 1]);
    let picked = per.gather(1, &idx, false).squeeze_dim(1);
    (picked * is_id.to_kind(Kind::Float)).mean(Kind::Float)
}

/// The TagFog loss of K+1 logits `(n, K+1)`, normalised embeddings `z` `(n, A)`, normalised
/// anchors `(K, A)` and labels in `0..=K`.
pub fn loss(logits: &Tensor, z: &Tensor, anchors: &Tensor, labels: &Tensor, p: &Params) -> Terms {
    let ce = cross_entropy::loss(logits, labels);
    let ci = anchor_alignment(z, anchors, labels, p.tau_ci);
    let sc = super::supcon::loss(z, labels, p.tau_sup, p.tau_base);
    let total = &ce + &ci * p.alpha + &sc * p.beta;
    Terms { ce, ci, sc, total }
}
