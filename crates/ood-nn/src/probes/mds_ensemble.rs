//! The multi-layer Mahalanobis detector's input preprocessing
//! ([`ood_core::probes::Probe::MdsEnsemble`]; Lee et al., NeurIPS 2018; OpenOOD
//! `mds_ensemble_postprocessor.py`'s `compute_Mahalanobis_score`): per layer, the input moved by
//! `ε` against the sign of the gradient of `½ (z − μ_ĉ)ᵀ P (z − μ_ĉ)` (the layer's channel means
//! `z`, its closest class `ĉ`), divided by the normalisation std, and the layer's channel means
//! of the moved input. The class Gaussians come from the fit set
//! ([`ood_core::detectors::LayerGaussians`]).

use super::layer_means::{layer_mean, num_layers, stages_of};
use super::{ProbeContext, signed_step};
use crate::error::{Error, Result};
use crate::network::Network;
use ood_core::detectors::LayerGaussians;
use tch::{Kind, Tensor};

/// An `(r, c)` f64 matrix as a float32 tensor on `device`.
fn tensor(a: &ndarray::Array2<f64>, device: tch::Device) -> Tensor {
    let v: Vec<f32> = a.iter().map(|&x| x as f32).collect();
    Tensor::from_slice(&v)
        .reshape([a.nrows() as i64, a.ncols() as i64])
        .to_device(device)
}

/// One `(n, channels)` tensor per layer, stem first: the channel means of the perturbed input.
pub fn perturbed_means(
    net: &dyn Network,
    x: &Tensor,
    epsilon: f64,
    ctx: &ProbeContext<'_>,
) -> Result<Vec<Tensor>> {
    let staged = stages_of(net)?;
    let gaussians: &LayerGaussians = ctx.fit_statistics.ok_or_else(|| {
        Error::Config(
            "mahalanobis_ensemble's input preprocessing needs the class Gaussians of the fit \
             set (its layer_means): extract the fit set first"
                .into(),
        )
    })?;
    let layers = num_layers(staged);
    if gaussians.layers().len() != layers {
        return Err(Error::Config(format!(
            "mahalanobis_ensemble: the fit statistics have {} layers, {} has {layers}",
            gaussians.layers().len(),
            net.name()
        )));
    }
    let device = x.device();
    let mut out = Vec::with_capacity(layers);
    for (l, g) in gaussians.layers().iter().enumerate() {
        let mu = tensor(&g.means, device);
        let p = tensor(&g.precision, device);
        let grad = tch::with_grad(|| {
            let xg = x.detach().set_requires_grad(true);
            let z = layer_mean(staged, &xg, l).to_kind(Kind::Float);
            // (n, m) squared distances to every class; the closest class's is the loss.
            let diff = z.detach().unsqueeze(1) - mu.unsqueeze(0);
            let d2 = (diff.matmul(&p) * &diff).sum_dim_intlist(2, false, Kind::Float);
            let closest = d2.argmin(1, false);
            let zc = &z - mu.index_select(0, &closest);
            let loss = (zc.matmul(&p) * &zc).sum(Kind::Float) * 0.5;
            Tensor::run_backward(&[loss], &[&xg], false, false)
                .into_iter()
                .next()
                .expect("one input, one gradient")
        });
        let moved = tch::no_grad(|| x - signed_step(&grad, ctx) * epsilon);
        out.push(tch::no_grad(|| layer_mean(staged, &moved, l)));
    }
    Ok(out)
}
