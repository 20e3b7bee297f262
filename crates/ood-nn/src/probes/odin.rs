//! ODIN's probe ([`ood_core::probes::Probe::Odin`]; Liang et al., ICLR 2018): the logits of the
//! input moved by `ε` against the sign of the gradient of `CE(f(x)/T, argmax f(x))`, each
//! channel's step divided by its normalisation std — OpenOOD's `odin_postprocessor.py`, up to its
//! loss reduction (see `probes::input_gradient`) and its std table (see `ood_core`'s `odin`).

use super::{ProbeContext, input_gradient, plain_logits, signed_step};
use crate::network::Network;
use tch::Tensor;

/// `f(x − ε · sign(∇ₓ) / σ)`, `(n, c)`.
pub fn perturbed_logits(
    net: &dyn Network,
    x: &Tensor,
    temperature: f64,
    epsilon: f64,
    ctx: &ProbeContext<'_>,
) -> Tensor {
    let g = input_gradient(net, x, temperature);
    let moved = tch::no_grad(|| x - signed_step(&g, ctx) * epsilon);
    plain_logits(net, &moved)
}
