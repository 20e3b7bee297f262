//! Wide ResNet WRN-d-k as in Outlier Exposure's `CIFAR/models/wrn.py` (hendrycks/outlier-exposure),
//! identical in OpenOOD (`openood/networks/wrn.py`) and TagFog.
//!
//! Paper: Zagoruyko & Komodakis, "Wide Residual Networks", <https://arxiv.org/abs/1605.07146>.
//! Layout (spec training-methods.md 4.2): n = (d − 4)/6 pre-activation BasicBlocks per group,
//! channels [16, 16k, 32k, 64k]; stem 3×3 conv to 16 channels (no BN/ReLU before the first block);
//! groups with strides 1, 2, 2; block = BN → ReLU → 3×3 conv (stride s) → BN → ReLU → dropout p →
//! 3×3 conv, plus the identity (when in == out channels) or a 1×1 conv (`convShortcut`, stride s) applied
//! to the **pre-activated** input; after the last group BN → ReLU → average pool → 64k-d feature →
//! Linear. The original pools with `avg_pool2d(·, 8)`, which is the global average for 32×32 inputs;
//! this port uses the global (adaptive) average, equal on 32×32 and defined for other sizes.
//!
//! Tensor names: `conv1.weight`, `block{1,2,3}.layer.{i}.bn1.*`, `.conv1.weight`, `.bn2.*`,
//! `.conv2.weight`, `.convShortcut.weight`, `bn1.*`, `fc.{weight,bias}`.
//! Init (original): convs N(0, √(2/(k²·out_channels))), BN 1/0, Linear weight PyTorch default, bias 0.
//! WRN-40-2 (OE): n = 6, channels 16/32/64/128, 128-d feature, dropout 0.3 in training;
//! normalisation mean (125.3, 123.0, 113.9)/255, std (63.0, 62.1, 66.7)/255.

use std::path::Path;

use tch::nn;
use tch::{Device, Tensor};

use super::common::{self, ConvInit};
use crate::{Error, Result};

#[derive(Debug)]
struct Block {
    bn1: nn::BatchNorm,
    conv1: nn::Conv2D,
    bn2: nn::BatchNorm,
    conv2: nn::Conv2D,
    shortcut: Option<nn::Conv2D>,
    dropout: f64,
}

impl Block {
    fn new(p: nn::Path<'_>, cin: i64, cout: i64, stride: i64, dropout: f64) -> Self {
        let init = ConvInit::KaimingNormalFanOut;
        Block {
            bn1: common::batch_norm2d(&p / "bn1", cin),
            conv1: common::conv2d(&p / "conv1", cin, cout, 3, stride, 1, init),
            bn2: common::batch_norm2d(&p / "bn2", cout),
            conv2: common::conv2d(&p / "conv2", cout, cout, 3, 1, 1, init),
            shortcut: (cin != cout)
                .then(|| common::conv2d(&p / "convShortcut", cin, cout, 1, stride, 0, init)),
            dropout,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let pre = x.apply_t(&self.bn1, train).relu();
        let out = pre
            .apply(&self.conv1)
            .apply_t(&self.bn2, train)
            .relu()
            .dropout(self.dropout, train)
            .apply(&self.conv2);
        match &self.shortcut {
            Some(conv) => pre.apply(conv) + out,
            None => x + out,
        }
    }
}

/// Wide ResNet WRN-`depth`-`widen`.
#[derive(Debug)]
pub struct WideResNet {
    conv1: nn::Conv2D,
    groups: Vec<Vec<Block>>,
    bn1: nn::BatchNorm,
    fc: nn::Linear,
    depth: i64,
    widen: i64,
}

impl WideResNet {
    /// Builds WRN-`depth`-`widen` with fresh weights; `depth − 4` must be a positive multiple of 6.
    /// `dropout` is the drop probability inside each block during training (OE: 0.3, OpenOOD: 0).
    pub fn new(
        vs: &nn::Path<'_>,
        num_classes: i64,
        depth: i64,
        widen: i64,
        dropout: f64,
    ) -> Result<Self> {
        if depth < 10 || (depth - 4) % 6 != 0 || widen < 1 {
            return Err(Error::Config(format!(
                "wide resnet depth {depth} / width {widen}: depth must be 6n + 4 with n >= 1 and width >= 1"
            )));
        }
        if !(0.0..1.0).contains(&dropout) {
            return Err(Error::Config(format!(
                "wide resnet dropout {dropout} must lie in [0, 1)"
            )));
        }
        let n = ((depth - 4) / 6) as usize;
        let ch = [16, 16 * widen, 32 * widen, 64 * widen];
        let conv1 = common::conv2d(
            vs / "conv1",
            3,
            ch[0],
            3,
            1,
            1,
            ConvInit::KaimingNormalFanOut,
        );
        let mut groups = Vec::with_capacity(3);
        for g in 0..3 {
            let gp = vs / format!("block{}", g + 1) / "layer";
            let stride = if g == 0 { 1 } else { 2 };
            let blocks = (0..n)
                .map(|i| {
                    let (cin, s) = if i == 0 {
                        (ch[g], stride)
                    } else {
                        (ch[g + 1], 1)
                    };
                    Block::new(&gp / i, cin, ch[g + 1], s, dropout)
                })
                .collect();
            groups.push(blocks);
        }
        let bn1 = common::batch_norm2d(vs / "bn1", ch[3]);
        let fc = common::linear(vs / "fc", ch[3], num_classes, true);
        Ok(WideResNet {
            conv1,
            groups,
            bn1,
            fc,
            depth,
            widen,
        })
    }

    /// WRN-40-2 (the Outlier Exposure CIFAR network).
    pub fn wrn40_2(vs: &nn::Path<'_>, num_classes: i64, dropout: f64) -> Result<Self> {
        Self::new(vs, num_classes, 40, 2, dropout)
    }

    /// Loads from a safetensors file with OE / OpenOOD tensor names; depth, width and classes are read
    /// from the file. Weights are frozen; dropout is 0 (inference only).
    pub fn load_safetensors(path: impl AsRef<Path>, device: Device) -> Result<Self> {
        let path = path.as_ref();
        let tensors = common::read_weights(path)?;
        let mut vs = nn::VarStore::new(device);
        let model = Self::from_tensors(&vs.root(), &tensors, path)?;
        common::load_strict(&mut vs, &tensors, path)?;
        vs.freeze();
        Ok(model)
    }

    /// Builds (without loading) the WRN-d-k whose depth, width and class count the tensors of
    /// `path` describe, with dropout 0.
    pub(crate) fn from_tensors(
        vs: &nn::Path<'_>,
        tensors: &std::collections::HashMap<String, Tensor>,
        path: &Path,
    ) -> Result<Self> {
        let n = common::count_blocks(tensors, "block1.layer.") as i64;
        let w = common::shape_of(tensors, "block1.layer.0.conv1.weight", path)?;
        let fc = common::shape_of(tensors, "fc.weight", path)?;
        if n == 0 || w[0] % 16 != 0 {
            return Err(Error::Weights {
                path: path.to_path_buf(),
                reason: format!(
                    "not a wide resnet: {n} blocks in block1, first conv has {} output channels",
                    w[0]
                ),
            });
        }
        Self::new(vs, fc[0], 6 * n + 4, w[0] / 16, 0.0)
    }

    /// `(features (n, 64k), logits (n, K))`; `train` enables dropout and BN batch statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let mut out = self.stem(x);
        for i in 0..self.groups.len() {
            out = self.stage(i, &out, train);
        }
        self.pool_head(&out, train)
    }

    /// The stem (the first convolution): the input of stage 0.
    pub fn stem(&self, x: &Tensor) -> Tensor {
        x.apply(&self.conv1)
    }

    /// Number of stages (block groups, 3).
    pub fn num_stages(&self) -> usize {
        self.groups.len()
    }

    /// Stage `i` (`block{i+1}`) on its input.
    pub fn stage(&self, i: usize, x: &Tensor, train: bool) -> Tensor {
        let mut out = x.shallow_clone();
        for b in &self.groups[i] {
            out = b.forward_t(&out, train);
        }
        out
    }

    /// `(features, logits)` of the last stage's output: final BN and ReLU, global average, `fc`.
    pub fn pool_head(&self, out: &Tensor, train: bool) -> (Tensor, Tensor) {
        let features = out
            .apply_t(&self.bn1, train)
            .relu()
            .adaptive_avg_pool2d([1, 1])
            .flatten(1, -1);
        let logits = features.apply_t(&self.fc, train);
        (features, logits)
    }

    /// A copy of the final linear layer.
    pub fn head(&self) -> Result<ood_core::Head> {
        common::head_of(&self.fc)
    }

    /// Depth d.
    pub fn depth(&self) -> i64 {
        self.depth
    }

    /// Widen factor k.
    pub fn widen(&self) -> i64 {
        self.widen
    }

    /// Feature dimension 64k.
    pub fn feature_dim(&self) -> i64 {
        64 * self.widen
    }
}
