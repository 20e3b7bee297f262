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

use tch::{Kind, Tensor, nn};

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
    let ce = super::cross_entropy::loss(logits, labels);
    let ci = anchor_alignment(z, anchors, labels, p.tau_ci);
    let sc = super::supcon::loss(z, labels, p.tau_sup, p.tau_base);
    let total = &ce + &ci * p.alpha + &sc * p.beta;
    Terms { ce, ci, sc, total }
}
