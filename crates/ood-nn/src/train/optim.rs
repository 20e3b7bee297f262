//! The optimisers and the learning-rate schedule, implemented here so that the optimiser state
//! (momentum buffers, or AdamW's two moment estimates) is part of the checkpoint: a run killed
//! after epoch `e` and resumed gives the same weights as an uninterrupted run.
//!
//! * SGD with momentum, Nesterov and PyTorch-style weight decay (L2 added to the gradient), as
//!   `torch.optim.SGD`;
//! * AdamW as `torch.optim.AdamW` (decoupled weight decay, bias-corrected moments, no AMSGrad);
//! * a cosine learning-rate schedule per step, with an optional linear warm-up (the intended
//!   schedule; the reference CIDER/ReweightOOD code's negative-lr first epoch is not reproduced).

use super::TrainConfig;
use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

/// The optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Optimizer {
    /// SGD with [`TrainConfig::momentum`], [`TrainConfig::nesterov`] and L2
    /// [`TrainConfig::weight_decay`] added to the gradient (`torch.optim.SGD`).
    #[default]
    Sgd,
    /// AdamW (`torch.optim.AdamW`, no AMSGrad): [`TrainConfig::weight_decay`] is the decoupled
    /// decay `p ← p·(1 − lr·wd)`; momentum and Nesterov are unused.
    #[serde(rename = "adamw")]
    AdamW {
        /// First-moment decay β₁.
        beta1: f64,
        /// Second-moment decay β₂.
        beta2: f64,
        /// ε added to the denominator.
        eps: f64,
    },
}

impl Optimizer {
    /// AdamW with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8).
    pub fn adamw() -> Optimizer {
        Optimizer::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// Names of the per-parameter state tensors in the checkpoint (`<prefix>.<variable>`).
    fn state_prefixes(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Sgd => &["__momentum__"],
            Optimizer::AdamW { .. } => &["__exp_avg__", "__exp_avg_sq__"],
        }
    }
}

/// Learning rate at global step `t` (0-based) of `total`, with `warm` warm-up steps.
pub fn lr_at(cfg: &TrainConfig, t: usize, total: usize, warm: usize) -> f64 {
    if t < warm {
        return cfg.lr * (t + 1) as f64 / warm as f64;
    }
    let span = (total - warm).max(1) as f64;
    let p = (t - warm) as f64 / span;
    cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + (std::f64::consts::PI * p).cos())
}

/// The trainable variables of a `VarStore`, sorted by name, and the optimiser's state for them.
pub(super) struct OptimizerState {
    /// `(name, variable)` of every variable that requires a gradient.
    pub(super) trainable: Vec<(String, Tensor)>,
    /// Checkpoint name prefix of each state buffer kind ([`Optimizer::state_prefixes`]).
    pub(super) prefixes: &'static [&'static str],
    /// One buffer per prefix and trainable variable, zero at the start.
    pub(super) buffers: Vec<Vec<Tensor>>,
}

impl OptimizerState {
    /// Zero state for the trainable variables of `vs`.
    pub(super) fn new(vs: &nn::VarStore, optimizer: &Optimizer) -> OptimizerState {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let trainable: Vec<(String, Tensor)> = vars
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        let prefixes = optimizer.state_prefixes();
        let buffers = prefixes
            .iter()
            .map(|_| trainable.iter().map(|(_, t)| t.zeros_like()).collect())
            .collect();
        OptimizerState {
            trainable,
            prefixes,
            buffers,
        }
    }

    /// Zeroes the gradients of the trainable variables (before a backward pass).
    pub(super) fn zero_grad(&self) {
        for (_, t) in &self.trainable {
            let mut g = t.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// One optimiser step at learning rate `lr`; `t` is the 1-based global step (AdamW's bias
    /// correction).
    pub(super) fn step(&mut self, cfg: &TrainConfig, lr: f64, t: usize) {
        tch::no_grad(|| update(cfg, &self.trainable, &mut self.buffers, lr, t));
    }
}

/// The update of [`OptimizerState::step`], without gradient tracking.
fn update(
    cfg: &TrainConfig,
    trainable: &[(String, Tensor)],
    state: &mut [Vec<Tensor>],
    lr: f64,
    t: usize,
) {
    for (i, (_, p)) in trainable.iter().enumerate() {
        let g = p.grad();
        if !g.defined() {
            continue;
        }
        let mut p = p.shallow_clone();
        match cfg.optimizer {
            Optimizer::Sgd => {
                // In place on the gradient (zeroed before the next backward), as
                // `torch.optim.SGD` does; the same operations in the same order as
                // d = g + wd·p; buf = m·buf + d; d = d + m·buf (Nesterov) or buf; p -= lr·d.
                let buf = &mut state[0][i];
                let mut d = g;
                if cfg.weight_decay != 0.0 {
                    let _ = d.g_add_(&(&p * cfg.weight_decay));
                }
                if cfg.momentum != 0.0 {
                    let _ = buf.g_mul_scalar_(cfg.momentum).g_add_(&d);
                    if cfg.nesterov {
                        let _ = d.g_add_(&(&*buf * cfg.momentum));
                    } else {
                        d = buf.shallow_clone();
                    }
                }
                let _ = p.g_sub_(&(d * lr));
            }
            Optimizer::AdamW { beta1, beta2, eps } => {
                if cfg.weight_decay != 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - lr * cfg.weight_decay);
                }
                let mut m = state[0][i].shallow_clone();
                let mut v = state[1][i].shallow_clone();
                let _ = m.g_mul_scalar_(beta1).g_add_(&(&g * (1.0 - beta1)));
                let _ = v.g_mul_scalar_(beta2).g_add_(&(&g * &g * (1.0 - beta2)));
                let bc1 = 1.0 - beta1.powi(t as i32);
                let bc2 = 1.0 - beta2.powi(t as i32);
                let denom = v.sqrt() / bc2.sqrt() + eps;
                let _ = p.g_sub_(&(&m / denom * (lr / bc1)));
            }
        }
    }
}
