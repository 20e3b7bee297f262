//! Supervised contrastive loss (Khosla et al., NeurIPS 2020), "all" contrast mode, exactly as the
//! implementation copied in TagFog's `losses.SupConLoss` (spec training-methods.md 3.8.1):
//!
//! `L = (τ/τ_base) · (1/N) Σ_i −(1/|P(i)|) Σ_{p∈P(i)} log( exp(⟨z_i,z_p⟩/τ) / Σ_{a≠i} exp(⟨z_i,z_a⟩/τ) )`
//!
//! over `N` L2-normalised views `z` (two views per image, ordered `[first views; second views]`),
//! `A(i)` = every view but `i`, `P(i)` = the views of `A(i)` with `i`'s label. `τ_base` defaults to
//! 0.07 in the reference, so `τ = 0.1` carries the factor 1.4286 (TagFog defect 6, kept for parity
//! and configurable here).

use tch::{Kind, Tensor};

/// Base temperature of the reference implementation.
pub const DEFAULT_BASE_TEMPERATURE: f64 = 0.07;

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
