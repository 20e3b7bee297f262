//! i-ODIN's probe ([`ood_core::probes::Probe::Iodin`]; OpenOOD `iodin_postprocessor.py`): ODIN's
//! step applied to one element per image, the one with the largest `|∇ₓ|` (the first on ties, as
//! `torch.argmax` over the flattened `(c, h, w)` gradient).

use super::{ProbeContext, input_gradient, plain_logits, signed_step};
use crate::network::Network;
use tch::{Kind, Tensor};

/// `f(x − ε · mask · sign(∇ₓ) / σ)` with `mask` one-hot at `argmax |∇ₓ|` per image, `(n, c)`.
pub fn perturbed_logits(
    net: &dyn Network,
    x: &Tensor,
    temperature: f64,
    epsilon: f64,
    ctx: &ProbeContext<'_>,
) -> Tensor {
    let g = input_gradient(net, x, temperature);
    let moved = tch::no_grad(|| {
        let n = g.size()[0];
        // Flattened in (c, h, w) order whatever the gradient's memory layout (channels-last
        // behind folded convolutions), so ties resolve as in PyTorch.
        let top = g.abs().contiguous().view([n, -1]).argmax(1, true);
        let mask = Tensor::zeros([n, g.numel() as i64 / n], (Kind::Float, g.device()))
            .scatter_value(1, &top, 1.0)
            .view_as(&g);
        x - signed_step(&g, ctx) * mask * epsilon
    });
    plain_logits(net, &moved)
}
