//! RankFeat's probe ([`ood_core::probes::Probe::RankFeat`]; Song et al., NeurIPS 2022; OpenOOD
//! `rankfeat_postprocessor.py` with `accelerate = False`): the mean of the logits of the last
//! stage's map and of the second-to-last stage's map run through the last stage, each after
//! removing its rank-1 component `s₁u₁v₁ᵀ` (exact SVD of the `(channels, h·w)` matrix).

use crate::error::{Error, Result};
use crate::network::{Network, Staged};
use tch::Tensor;

/// `(logits(rank1-removed last map) + logits(last stage of rank1-removed previous map)) / 2`.
pub fn logits(net: &dyn Network, x: &Tensor) -> Result<Tensor> {
    let staged: &dyn Staged = net.staged().ok_or_else(|| {
        Error::Config(format!(
            "rank_feat needs the network's stages, which {} does not expose (the registry's \
             ResNets and WRN do; TorchScript files and CLIP do not)",
            net.name()
        ))
    })?;
    let k = staged.num_stages();
    if k < 2 {
        return Err(Error::Config(format!(
            "rank_feat needs at least two stages; {} has {k}",
            net.name()
        )));
    }
    Ok(tch::no_grad(|| {
        let mut out = staged.stem(x);
        for i in 0..k - 1 {
            out = staged.stage(i, &out);
        }
        let before_last = out;
        let last = staged.stage(k - 1, &before_last);
        let logits1 = staged.head_logits(&without_rank1(&last));
        let logits2 = staged.head_logits(&staged.stage(k - 1, &without_rank1(&before_last)));
        (logits1 + logits2) / 2.0
    }))
}

/// `f − s₁u₁v₁ᵀ` per sample, for `f` viewed as `(channels, h·w)`.
fn without_rank1(f: &Tensor) -> Tensor {
    let size = f.size();
    let m = f.reshape([size[0], size[1], -1]);
    let (u, s, v) = m.svd(true, true);
    let top =
        s.narrow(1, 0, 1).unsqueeze(2) * u.narrow(2, 0, 1).bmm(&v.narrow(2, 0, 1).transpose(1, 2));
    (m - top).reshape(size.as_slice())
}
