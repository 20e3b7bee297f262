//! The network side of [`ood_core::probes`]: what a detector needs from the network besides the
//! penultimate features and logits, computed batch by batch inside the one extraction loop
//! ([`crate::network::extract`]) and stored in the feature file as the probe's tensor. One file
//! per method.

pub mod ada_scale;
pub mod gram;
pub mod iodin;
pub mod layer_means;
pub mod mds_ensemble;
pub mod odin;
pub mod rank_feat;

use crate::error::Result;
use crate::network::Network;
use ood_core::probes::Probe;
use tch::{Kind, Tensor};

/// What a probe computation gets besides the network and the batch.
#[derive(Debug, Clone, Copy)]
pub struct ProbeContext<'a> {
    /// Per-channel std the batch was normalised with (`x = (pixel/255 − mean) / std`), so that
    /// perturbation steps are in `[0, 1]` pixel units.
    pub std: [f32; 3],
    /// The fit set's class Gaussians per layer, for probes that need them
    /// ([`Probe::needs_fit_statistics`]: the multi-layer Mahalanobis' input preprocessing).
    pub fit_statistics: Option<&'a ood_core::detectors::LayerGaussians>,
}

/// Computes `probe` on a batch of normalised images `x` `(n, 3, h, w)` on the network's device:
/// `(n, k)` float32 tensors on the CPU, one per part ([`Probe::multi_part`]; one for the
/// others). Gradients are enabled inside where needed (the caller's no-grad mode does not
/// apply); the network's parameters are not changed and receive no gradient that outlives the
/// call.
pub fn compute(
    net: &dyn Network,
    x: &Tensor,
    probe: &Probe,
    ctx: &ProbeContext<'_>,
) -> Result<Vec<Tensor>> {
    let cpu = |t: Tensor| {
        t.to_device(tch::Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
    };
    let parts = match *probe {
        Probe::Gram { powers } => Some(gram::layer_statistics(net, x, powers)?),
        Probe::LayerMeans => Some(layer_means::means(net, x)?),
        Probe::MdsEnsemble { epsilon } => {
            Some(mds_ensemble::perturbed_means(net, x, epsilon, ctx)?)
        }
        _ => None,
    };
    if let Some(parts) = parts {
        return Ok(parts.into_iter().map(cpu).collect());
    }
    let out = match *probe {
        Probe::Odin {
            temperature,
            epsilon,
        } => odin::perturbed_logits(net, x, temperature, epsilon, ctx),
        Probe::Iodin {
            temperature,
            epsilon,
        } => iodin::perturbed_logits(net, x, temperature, epsilon, ctx),
        Probe::RankFeat => rank_feat::logits(net, x)?,
        Probe::AdaScale { o } => ada_scale::perturbed_features(net, x, o),
        Probe::Gram { .. } | Probe::LayerMeans | Probe::MdsEnsemble { .. } => {
            unreachable!("multi-part probes are handled above")
        }
    };
    Ok(vec![cpu(out)])
}

/// The gradient of `Σᵢ CE(f(xᵢ)/T, argmax f(xᵢ))` with respect to the normalised input `x`
/// (each row's own loss: a sum, so a sample's gradient does not depend on its batch; OpenOOD's
/// mean scales every gradient by the same `1/n`, which changes no sign and no argmax).
pub(crate) fn input_gradient(net: &dyn Network, x: &Tensor, temperature: f64) -> Tensor {
    tch::with_grad(|| {
        let x = x.detach().set_requires_grad(true);
        let logits = net.forward_t(&x, false).logits.to_kind(Kind::Float);
        let pred = logits.detach().argmax(1, false);
        let loss = (logits / temperature).cross_entropy_loss::<Tensor>(
            &pred,
            None,
            tch::Reduction::Sum,
            -100,
            0.0,
        );
        let g = Tensor::run_backward(&[loss], &[&x], false, false);
        g.into_iter().next().expect("one input, one gradient")
    })
}

/// `sign(g) / σ` per channel, a zero gradient counting as positive (OpenOOD's
/// `(torch.ge(g, 0).float() − 0.5) · 2`, then divided by the channel std).
pub(crate) fn signed_step(g: &Tensor, ctx: &ProbeContext<'_>) -> Tensor {
    let sign = g.ge(0.0).to_kind(Kind::Float) * 2.0 - 1.0;
    let std = Tensor::from_slice(&ctx.std)
        .to_device(g.device())
        .view([1, 3, 1, 1]);
    sign / std
}

/// The logits of `x` without gradients (the perturbed input's forward pass).
pub(crate) fn plain_logits(net: &dyn Network, x: &Tensor) -> Tensor {
    tch::no_grad(|| net.forward_t(x, false).logits)
}
