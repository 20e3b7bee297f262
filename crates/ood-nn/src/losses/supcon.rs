//! Supervised contrastive loss (Khosla et al., NeurIPS 2020), "all" contrast mode, exactly as the
//! implementation copied in TagFog's `losses.SupConLoss` (spec training-methods.md 3.8.1):
//!
//! `L = (τ/τ_base) · (1/N) Σ_i −(1/|P(i)|) Σ_{p∈P(i)} log( exp(⟨z_i,z_p⟩/τ) / Σ_{a≠i} exp(⟨z_i,z_a⟩/τ) )`
//!
//! over `N` L2-normalised views `z` (two views per image, ordered `[first views; second views]`),
//! `A(i)` = every view but `i`, `P(i)` = the views of `A(i)` with `i`'s label. `τ_base` defaults to
//! 0.07 in the reference, so `τ = 0.1` carries the factor 1.4286 (TagFog defect 6, kept for parity
//! and configurable here).
//!
//! Needs: two views per image, the projection head `Linear(d→d) → ReLU → Linear(d→128)`
//! ([`super::reweightood::projection`], `proj.*`) and an online linear probe (`probe.*`) trained
//! by cross-entropy on the detached penultimate features, exported as the classifier head.
//! Recipe: the contrastive recipe of OpenOOD / ReweightOOD ([`recipe`]), τ = 0.1.

use super::{ForwardFn, Method, Needs, Outliers, StepLoss, cross_entropy, normalize};
use crate::train::TrainConfig;
use tch::nn::Module;
use tch::{Kind, Tensor};

/// The method's `--method` name.
pub const NAME: &str = "supcon";

/// The method's name in messages.
pub const TITLE: &str = "SupCon";

/// What SupCon needs: two views of every image, and the probe (with the projection head).
pub const NEEDS: Needs = Needs {
    outliers: Outliers::Unused,
    two_views: true,
    anchors: false,
    probe: true,
};

/// Temperature τ of the reference.
pub const TEMPERATURE: f64 = 0.1;

/// Base temperature of the reference implementation.
pub const DEFAULT_BASE_TEMPERATURE: f64 = 0.07;

/// `η_min / lr` of the contrastive recipes' cosine schedule (`lr · 0.1³`, spec 3.3).
pub const LR_MIN_FACTOR: f64 = 1e-3;

/// The contrastive recipe of OpenOOD's CIDER / ReweightOOD configs (spec 3.3, CIFAR): 100
/// epochs, batch 512 images (1024 views), SGD Nesterov 0.9, weight decay 1e-4, lr 0.1 with 10
/// linear warm-up epochs then a per-step cosine to `lr · 10⁻³` (the intended schedule, not the
/// reference's negative-lr first epoch).
pub fn recipe() -> TrainConfig {
    TrainConfig {
        method: Method::supcon(),
        epochs: 100,
        batch_size: 512,
        lr: 0.1,
        lr_min: 0.1 * LR_MIN_FACTOR,
        warmup_epochs: 10,
        weight_decay: 1e-4,
        ..cross_entropy::recipe()
    }
}

/// One step: the SupCon loss of the normalised projections of both views `x`, plus the probe's
/// cross-entropy.
pub fn step(
    forward: &ForwardFn<'_>,
    x: &Tensor,
    y: &Tensor,
    extra: &super::Extra<'_>,
    tau: f64,
    tau_base: f64,
) -> StepLoss {
    step_with_probe(forward, x, y, extra, |z| loss(z, y, tau, tau_base))
}

/// The step of the probe methods (SupCon, ReweightOOD): `contrastive` of the L2-normalised
/// projections `z` of the views, plus the cross-entropy of the linear probe on the **detached**
/// penultimate features (the probe's logits are the ones the logged accuracy scores).
pub fn step_with_probe(
    forward: &ForwardFn<'_>,
    x: &Tensor,
    y: &Tensor,
    extra: &super::Extra<'_>,
    contrastive: impl FnOnce(&Tensor) -> Tensor,
) -> StepLoss {
    let f = forward(x, true);
    let proj = extra.projection.expect("created by train()");
    let z = normalize(&proj.forward_t(&f.features, true));
    let contrastive = contrastive(&z);
    let probe = extra.probe.expect("created by train()");
    let pl = probe.forward(&f.features.detach());
    StepLoss::new(contrastive + cross_entropy::loss(&pl, y), pl, y)
}

/// SupCon loss of L2-normalised embeddings `z` `(n, d)` with labels `(n)`.
///
/// Every view must have at least one positive (guaranteed with two views per image); a view
/// without one would divide by zero, as in the reference.
pub fn loss(z: &Tensor, labels: &Tensor, tau: f64, tau_base: f64) -> Tensor {
    let n = z.size()[0];
    let opts = (Kind::Float, z.device());
    let logits = z.matmul(&z.tr()) / tau;
    let not_self = Tensor::ones([n, n], opts) - Tensor::eye(n, opts);
    let pos = labels
        .view([-1, 1])
        .eq_tensor(&labels.view([1, -1]))
        .to_kind(Kind::Float)
        * &not_self;
    // log Σ_{a≠i} exp(logit_ia): fill the diagonal with −∞ before the log-sum-exp.
    let masked = logits.masked_fill(&not_self.eq(0.0), f64::NEG_INFINITY);
    let lse = masked.logsumexp([1], true);
    let log_prob = &logits - lse;
    let mean_log_prob_pos =
        (&pos * log_prob).sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
            / pos.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    (mean_log_prob_pos * (-(tau / tau_base))).mean(Kind::Float)
}
