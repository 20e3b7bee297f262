//! torchvision ResNets (`torchvision/models/resnet.py`): ResNet-18/34 (BasicBlock) and
//! ResNet-50/101/152 (Bottleneck, "v1.5": the stride sits on the 3×3 conv).
//!
//! Paper: He et al., "Deep Residual Learning for Image Recognition", <https://arxiv.org/abs/1512.03385>.
//! Layout: 7×7/2 conv (64, pad 3, no bias) → BN → ReLU → 3×3/2 max-pool (pad 1) → four stages
//! (64/128/256/512 planes, strides 1/2/2/2) → adaptive global average pool → feature
//! (512·expansion: 512 for BasicBlock, 2048 for Bottleneck) → Linear. Bottleneck: 1×1 conv (planes) →
//! BN → ReLU → 3×3 conv (planes, stride s) → BN → ReLU → 1×1 conv (4·planes) → BN, + shortcut, ReLU.
//! Shortcut `downsample` = 1×1 conv (stride s, no bias) + BN when stride ≠ 1 or channels change.
//! OpenOOD's ImageNet-200 `ResNet18_224x224` subclasses torchvision's TorchvisionResNet (BasicBlock, 2-2-2-2),
//! so [`TorchvisionResNet::resnet18`] loads it. TagFog's ImageNet-100 ResNets use `AvgPool2d(7)`, equal to the
//! global average on 224×224 inputs.
//!
//! Tensor names: `conv1.weight`, `bn1.*`, `layer{1..4}.{i}.conv{1,2,3}.weight`,
//! `layer{1..4}.{i}.bn{1,2,3}.*`, `layer{1..4}.{i}.downsample.{0,1}.*`, `fc.{weight,bias}`.
//! Init (torchvision): convs Kaiming-normal fan-out ReLU, BN 1/0, Linear PyTorch default
//! (`zero_init_residual = False`). Normalisation: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).

use std::path::Path;

use tch::nn;
use tch::{Device, Tensor};

use super::common::{self, ConvBn, ConvInit};
use crate::{Error, Result};

/// Residual block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convs, expansion 1.
    Basic,
    /// 1×1 → 3×3 → 1×1 convs, expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels per plane.
    pub fn expansion(self) -> i64 {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

#[derive(Debug)]
struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn new(p: nn::Path<'_>, kind: BlockKind, cin: i64, planes: i64, stride: i64) -> Self {
        let init = ConvInit::KaimingNormalFanOut;
        let cout = planes * kind.expansion();
        // (cin, cout, kernel, stride, padding) per conv
        let specs: Vec<(i64, i64, i64, i64, i64)> = match kind {
            BlockKind::Basic => vec![(cin, planes, 3, stride, 1), (planes, planes, 3, 1, 1)],
            BlockKind::Bottleneck => vec![
                (cin, planes, 1, 1, 0),
                (planes, planes, 3, stride, 1),
                (planes, cout, 1, 1, 0),
            ],
        };
        let convs = specs
            .into_iter()
            .enumerate()
            .map(|(j, (i, o, k, s, pad))| {
                let (conv, bn) = (&p / format!("conv{}", j + 1), &p / format!("bn{}", j + 1));
                ConvBn::new(conv, bn, i, o, k, s, pad, init)
            })
            .collect();
        let downsample = (stride != 1 || cin != cout).then(|| {
            let d = &p / "downsample";
            ConvBn::new(&d / "0", &d / "1", cin, cout, 1, stride, 0, init)
        });
        Block { convs, downsample }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let last = self.convs.len() - 1;
        let mut out = x.shallow_clone();
        for (j, conv_bn) in self.convs.iter().enumerate() {
            out = conv_bn.forward_t(&out, train);
            if j < last {
                out = common::relu(out);
            }
        }
        let identity = match &self.downsample {
            Some(conv_bn) => conv_bn.forward_t(x, train),
            None => x.shallow_clone(),
        };
        common::add_relu(out, &identity)
    }

    fn fold(&mut self) {
        self.convs.iter_mut().for_each(ConvBn::fold);
        if let Some(d) = &mut self.downsample {
            d.fold();
        }
    }
}

/// A torchvision-layout TorchvisionResNet.
#[derive(Debug)]
pub struct TorchvisionResNet {
    conv_bn1: ConvBn,
    layers: Vec<Vec<Block>>,
    fc: nn::Linear,
    kind: BlockKind,
    blocks: [usize; 4],
}

impl TorchvisionResNet {
    /// Builds a TorchvisionResNet with `blocks` residual blocks of `kind` per stage and fresh (torchvision) weights.
    pub fn new(vs: &nn::Path<'_>, num_classes: i64, kind: BlockKind, blocks: [usize; 4]) -> Self {
        let init = ConvInit::KaimingNormalFanOut;
        let conv_bn1 = ConvBn::new(vs / "conv1", vs / "bn1", 3, 64, 7, 2, 3, init);
        let mut cin = 64;
        let mut layers = Vec::with_capacity(4);
        for (stage, (&n, planes)) in blocks.iter().zip([64i64, 128, 256, 512]).enumerate() {
            let lp = vs / format!("layer{}", stage + 1);
            let stride = if stage == 0 { 1 } else { 2 };
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(Block::new(
                    &lp / i,
                    kind,
                    cin,
                    planes,
                    if i == 0 { stride } else { 1 },
                ));
                cin = planes * kind.expansion();
            }
            layers.push(v);
        }
        let fc = common::linear(vs / "fc", 512 * kind.expansion(), num_classes, false);
        TorchvisionResNet {
            conv_bn1,
            layers,
            fc,
            kind,
            blocks,
        }
    }

    /// ResNet-18 (BasicBlock 2-2-2-2); also OpenOOD's ImageNet-200 `ResNet18_224x224`.
    pub fn resnet18(vs: &nn::Path<'_>, num_classes: i64) -> Self {
        Self::new(vs, num_classes, BlockKind::Basic, [2, 2, 2, 2])
    }

    /// ResNet-34 (BasicBlock 3-4-6-3).
    pub fn resnet34(vs: &nn::Path<'_>, num_classes: i64) -> Self {
        Self::new(vs, num_classes, BlockKind::Basic, [3, 4, 6, 3])
    }

    /// ResNet-50 (Bottleneck 3-4-6-3).
    pub fn resnet50(vs: &nn::Path<'_>, num_classes: i64) -> Self {
        Self::new(vs, num_classes, BlockKind::Bottleneck, [3, 4, 6, 3])
    }

    /// ResNet-101 (Bottleneck 3-4-23-3).
    pub fn resnet101(vs: &nn::Path<'_>, num_classes: i64) -> Self {
        Self::new(vs, num_classes, BlockKind::Bottleneck, [3, 4, 23, 3])
    }

    /// Loads from a safetensors file with torchvision tensor names; block type, block counts and
    /// classes are read from the file. Weights are frozen and BatchNorm folded (inference).
    pub fn load_safetensors(path: impl AsRef<Path>, device: Device) -> Result<Self> {
        let path = path.as_ref();
        let tensors = common::read_weights(path)?;
        let mut blocks = [0usize; 4];
        for (s, b) in blocks.iter_mut().enumerate() {
            *b = common::count_blocks(&tensors, &format!("layer{}.", s + 1));
        }
        if blocks.contains(&0) {
            return Err(Error::Weights {
                path: path.to_path_buf(),
                reason: format!("not a torchvision resnet: block counts per stage {blocks:?}"),
            });
        }
        let kind = if tensors.contains_key("layer1.0.conv3.weight") {
            BlockKind::Bottleneck
        } else {
            BlockKind::Basic
        };
        let fc = common::shape_of(&tensors, "fc.weight", path)?;
        let mut vs = nn::VarStore::new(device);
        let model = Self::new(&vs.root(), fc[0], kind, blocks);
        common::load_strict(&mut vs, &tensors, path)?;
        vs.freeze();
        let mut model = model;
        model.fold();
        Ok(model)
    }

    /// `(features (n, 512·expansion), logits (n, K))` for normalised images `(n, 3, h, w)`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let mut out = self.stem(x, train);
        for i in 0..self.layers.len() {
            out = self.stage(i, &out, train);
        }
        self.pool_head(&out, train)
    }

    /// The stem (conv, BN, ReLU, max-pool): the input of stage 0.
    pub fn stem(&self, x: &Tensor, train: bool) -> Tensor {
        common::relu(self.conv_bn1.forward_t(x, train)).max_pool2d(
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1],
            false,
        )
    }

    /// Number of stages (4).
    pub fn num_stages(&self) -> usize {
        self.layers.len()
    }

    /// Stage `i` (`layer{i+1}`) on its input.
    pub fn stage(&self, i: usize, x: &Tensor, train: bool) -> Tensor {
        let mut out = x.shallow_clone();
        for block in &self.layers[i] {
            out = block.forward_t(&out, train);
        }
        out
    }

    /// `(features, logits)` of the last stage's output: global average, `fc`.
    pub fn pool_head(&self, out: &Tensor, train: bool) -> (Tensor, Tensor) {
        let features = out.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        let logits = features.apply_t(&self.fc, train);
        (features, logits)
    }

    /// Folds every BatchNorm into its convolution for inference (`common::ConvBn`: weight
    /// `W·γ/√(σ²+ε)`, bias `β − μ·γ/√(σ²+ε)`); the weights
    /// must be final.
    pub fn fold(&mut self) {
        self.conv_bn1.fold();
        self.layers.iter_mut().flatten().for_each(Block::fold);
    }

    /// A copy of the final linear layer.
    pub fn head(&self) -> Result<ood_core::Head> {
        common::head_of(&self.fc)
    }

    /// Block type.
    pub fn kind(&self) -> BlockKind {
        self.kind
    }

    /// Blocks per stage.
    pub fn blocks(&self) -> [usize; 4] {
        self.blocks
    }

    /// Feature dimension (512 or 2048).
    pub fn feature_dim(&self) -> i64 {
        512 * self.kind.expansion()
    }
}
