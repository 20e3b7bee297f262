//! The multi-layer Mahalanobis detector's fit probe ([`ood_core::probes::Probe::LayerMeans`];
//! Lee et al., NeurIPS 2018; OpenOOD `mds_ensemble`'s `mean` feature type): the channel means
//! (spatial mean) of the stem's output and of every stage's output.

use crate::error::{Error, Result};
use crate::network::{Network, Staged};
use tch::{Kind, Tensor};

/// The network's stages, or an error naming the detector that needs them.
pub(crate) fn stages_of(net: &dyn Network) -> Result<&dyn Staged> {
    net.staged().ok_or_else(|| {
        Error::Config(format!(
            "mahalanobis_ensemble needs the network's stages, which {} does not expose (the \
             registry's ResNets and WRN do; TorchScript files and CLIP do not)",
            net.name()
        ))
    })
}

/// The number of layers: the stem and every stage.
pub(crate) fn num_layers(staged: &dyn Staged) -> usize {
    staged.num_stages() + 1
}

/// `(n, channels)` spatial means of a `(n, channels, h, w)` map.
fn channel_means(map: &Tensor) -> Tensor {
    map.mean_dim([2i64, 3].as_slice(), false, Kind::Float)
}

/// The channel means of layer `l` (0 = stem, `i + 1` = stage `i`) of normalised images `x`,
/// running the network only as far as that layer (gradients flow when the caller enables them).
pub(crate) fn layer_mean(staged: &dyn Staged, x: &Tensor, l: usize) -> Tensor {
    let mut out = staged.stem(x);
    for i in 0..l {
        out = staged.stage(i, &out);
    }
    channel_means(&out)
}

/// One `(n, channels)` tensor per layer, stem first, from one forward pass.
pub fn means(net: &dyn Network, x: &Tensor) -> Result<Vec<Tensor>> {
    let staged = stages_of(net)?;
    Ok(tch::no_grad(|| {
        let mut out = staged.stem(x);
        let mut v = vec![channel_means(&out)];
        for i in 0..staged.num_stages() {
            out = staged.stage(i, &out);
            v.push(channel_means(&out));
        }
        v
    }))
}
