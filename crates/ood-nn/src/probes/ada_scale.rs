//! AdaSCALE's probe ([`ood_core::probes::Probe::AdaScale`]; OpenOOD `adascale_postprocessor.py`):
//! the penultimate features of the input moved by `0.5 · sign(∇ₓ z_ŷ)` on the `⌊o · c·h·w⌋`
//! elements with the smallest `|∇ₓ z_ŷ|` per image, `z_ŷ` the predicted class's logit.

use crate::network::Network;
use tch::{Kind, Tensor};

/// The perturbed input's features, `(n, d)`.
pub fn perturbed_features(net: &dyn Network, x: &Tensor, o: f64) -> Tensor {
    let g = tch::with_grad(|| {
        let x = x.detach().set_requires_grad(true);
        let logits = net.forward_t(&x, false).logits.to_kind(Kind::Float);
        let pred = logits.detach().argmax(1, true);
        let top = logits.gather(1, &pred, false).sum(Kind::Float);
        Tensor::run_backward(&[top], &[&x], false, false)
            .into_iter()
            .next()
            .expect("one input, one gradient")
    });
    let moved = tch::no_grad(|| {
        let n = g.size()[0];
        let per_image = g.numel() as i64 / n;
        // Python's int(c·h·w·o), computed as OpenOOD does.
        let count = (per_image as f64 * o) as i64;
        // (c, h, w) order whatever the gradient's memory layout, as PyTorch flattens it.
        let flat = g.abs().contiguous().view([n, -1]);
        let (_, smallest) = flat.topk(count, 1, false, true);
        let mask = Tensor::zeros([n, per_image], (Kind::Float, g.device()))
            .scatter_value(1, &smallest, 1.0)
            .view_as(&g);
        x + g.sign() * mask * 0.5
    });
    tch::no_grad(|| net.forward_t(&moved, false).features)
}
