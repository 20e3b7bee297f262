//! Gram's probe ([`ood_core::probes::Probe::Gram`]; Sastry & Oore, ICML 2020; OpenOOD
//! `gram_postprocessor.py`'s `G_p`): for every convolution's raw output `F` and power
//! `p ∈ 1..=P`, `sign(r)·|r|^{1/p}` with `r` the row sums of `Fᵖ(Fᵖ)ᵀ` over `(channels, h·w)`.

use crate::error::{Error, Result};
use crate::network::Network;
use tch::{Kind, Tensor};

/// One `(n, P · channels)` tensor per convolution (power-major), in execution order.
pub fn layer_statistics(net: &dyn Network, x: &Tensor, powers: u32) -> Result<Vec<Tensor>> {
    let maps = net.conv_outputs(x).ok_or_else(|| {
        Error::Config(format!(
            "gram needs every convolution's output, which {} does not expose (the He et al. \
             CIFAR ResNets and the 32x32 ResNet-18/34 do; torchvision ResNets, WRN, TorchScript \
             files and CLIP do not)",
            net.name()
        ))
    })?;
    Ok(tch::no_grad(|| {
        maps.iter()
            .map(|f| {
                let f = f.to_kind(Kind::Float);
                let (n, c) = (f.size()[0], f.size()[1]);
                let per_power: Vec<Tensor> = (1..=powers)
                    .map(|p| {
                        let t = f.pow_tensor_scalar(p as i64).reshape([n, c, -1]);
                        let r = t
                            .bmm(&t.transpose(1, 2))
                            .sum_dim_intlist(2, false, Kind::Float);
                        r.sign() * r.abs().pow_tensor_scalar(1.0 / p as f64)
                    })
                    .collect();
                Tensor::cat(&per_power, 1)
            })
            .collect()
    }))
}
