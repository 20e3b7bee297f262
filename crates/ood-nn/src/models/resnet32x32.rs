//! CIFAR ResNet-18 / ResNet-34 as OpenOOD's `ResNet18_32x32` (`openood/networks/resnet18_32x32.py`);
//! TagFog's `networks/resnet_big.py` has the same topology.
//!
//! Layout (spec training-methods.md 4.1): 3×3 stem conv, 64 channels, stride 1, no bias → BN → ReLU,
//! **no max-pool**; four stages of BasicBlocks (3×3 conv → BN → ReLU → 3×3 conv → BN, + shortcut,
//! ReLU) with 64/128/256/512 channels, first block of stages 2-4 with stride 2; shortcut identity or
//! 1×1 conv (stride s, no bias) + BN when the shape changes; adaptive global average pool → 512-d
//! feature → `Linear(512 → K)`. Block counts 2-2-2-2 (ResNet-18) or 3-4-6-3 (ResNet-34).
//!
//! Tensor names as OpenOOD: `conv1.weight`, `bn1.{weight,bias,running_mean,running_var}`,
//! `layer{1..4}.{i}.conv{1,2}.weight`, `layer{1..4}.{i}.bn{1,2}.*`, `layer{1..4}.{i}.shortcut.0.weight`
//! (conv), `layer{1..4}.{i}.shortcut.1.*` (BN), `fc.{weight,bias}`. A `module.` prefix is stripped.
//!
//! Init: OpenOOD keeps PyTorch's defaults ([`ConvInit::PyTorchDefault`]); TagFog / SupCon use
//! Kaiming-normal fan-out convs and BN 1/0 ([`ConvInit::KaimingNormalFanOut`]). Linear: PyTorch default.
//! Normalisation used with these nets (OpenOOD CIFAR-10): mean (0.4914, 0.4822, 0.4465),
//! std (0.2470, 0.2435, 0.2616); CIFAR-100: (0.5071, 0.4867, 0.4408) / (0.2675, 0.2565, 0.2761).

use std::path::Path;

use tch::nn;
use tch::{Device, Tensor};

use super::common::{self, ConvBn, ConvInit};
use crate::{Error, Result};

/// Which CIFAR ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResNet32x32Depth {
    /// Block counts 2-2-2-2.
    R18,
    /// Block counts 3-4-6-3.
    R34,
}

impl ResNet32x32Depth {
    /// BasicBlocks per stage.
    pub fn blocks(self) -> [usize; 4] {
        match self {
            ResNet32x32Depth::R18 => [2, 2, 2, 2],
            ResNet32x32Depth::R34 => [3, 4, 6, 3],
        }
    }
}

/// A BasicBlock with an optional 1×1 conv + BN projection shortcut.
#[derive(Debug)]
struct BasicBlock {
    conv_bn1: ConvBn,
    conv_bn2: ConvBn,
    shortcut: Option<ConvBn>,
}

impl BasicBlock {
    fn new(p: nn::Path<'_>, cin: i64, cout: i64, stride: i64, init: ConvInit) -> Self {
        let shortcut = (stride != 1 || cin != cout).then(|| {
            let s = &p / "shortcut";
            ConvBn::new(&s / "0", &s / "1", cin, cout, 1, stride, 0, init)
        });
        BasicBlock {
            conv_bn1: ConvBn::new(&p / "conv1", &p / "bn1", cin, cout, 3, stride, 1, init),
            conv_bn2: ConvBn::new(&p / "conv2", &p / "bn2", cout, cout, 3, 1, 1, init),
            shortcut,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = common::relu(self.conv_bn1.forward_t(x, train));
        let out = self.conv_bn2.forward_t(&out, train);
        let sc = match &self.shortcut {
            Some(conv_bn) => conv_bn.forward_t(x, train),
            None => x.shallow_clone(),
        };
        common::add_relu(out, &sc)
    }

    fn fold(&mut self) {
        self.conv_bn1.fold();
        self.conv_bn2.fold();
        if let Some(s) = &mut self.shortcut {
            s.fold();
        }
    }
}

/// OpenOOD's CIFAR ResNet-18 / ResNet-34 (`ResNet18_32x32`).
#[derive(Debug)]
pub struct ResNet32x32 {
    conv_bn1: ConvBn,
    layers: Vec<Vec<BasicBlock>>,
    fc: nn::Linear,
    depth: ResNet32x32Depth,
}

impl ResNet32x32 {
    /// Builds the network under `vs` with fresh weights.
    pub fn new(
        vs: &nn::Path<'_>,
        num_classes: i64,
        depth: ResNet32x32Depth,
        init: ConvInit,
    ) -> Self {
        let conv_bn1 = ConvBn::new(vs / "conv1", vs / "bn1", 3, 64, 3, 1, 1, init);
        let mut cin = 64;
        let mut layers = Vec::with_capacity(4);
        for (stage, (&n, planes)) in depth
            .blocks()
            .iter()
            .zip([64i64, 128, 256, 512])
            .enumerate()
        {
            let lp = vs / format!("layer{}", stage + 1);
            let mut blocks = Vec::with_capacity(n);
            for i in 0..n {
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(&lp / i, cin, planes, stride, init));
                cin = planes;
            }
            layers.push(blocks);
        }
        let fc = common::linear(vs / "fc", 512, num_classes, false);
        ResNet32x32 {
            conv_bn1,
            layers,
            fc,
            depth,
        }
    }

    /// ResNet-18 with OpenOOD's (PyTorch default) init.
    pub fn resnet18(vs: &nn::Path<'_>, num_classes: i64) -> Self {
        Self::new(
            vs,
            num_classes,
            ResNet32x32Depth::R18,
            ConvInit::PyTorchDefault,
        )
    }

    /// ResNet-34 with OpenOOD's (PyTorch default) init.
    pub fn resnet34(vs: &nn::Path<'_>, num_classes: i64) -> Self {
        Self::new(
            vs,
            num_classes,
            ResNet32x32Depth::R34,
            ConvInit::PyTorchDefault,
        )
    }

    /// Loads a network from a safetensors file with OpenOOD tensor names; depth (18 or 34) and the
    /// number of classes are read from the file. The weights are frozen and BatchNorm folded
    /// (inference).
    pub fn load_safetensors(path: impl AsRef<Path>, device: Device) -> Result<Self> {
        let path = path.as_ref();
        let tensors = common::read_weights(path)?;
        let counts: Vec<usize> = (1..=4)
            .map(|s| common::count_blocks(&tensors, &format!("layer{s}.")))
            .collect();
        let depth = match counts.as_slice() {
            [2, 2, 2, 2] => ResNet32x32Depth::R18,
            [3, 4, 6, 3] => ResNet32x32Depth::R34,
            other => {
                return Err(Error::Weights {
                    path: path.to_path_buf(),
                    reason: format!(
                        "block counts per stage {other:?} match neither CIFAR ResNet-18 [2, 2, 2, 2] nor ResNet-34 [3, 4, 6, 3]"
                    ),
                });
            }
        };
        let fc = common::shape_of(&tensors, "fc.weight", path)?;
        let mut vs = nn::VarStore::new(device);
        let model = Self::new(&vs.root(), fc[0], depth, ConvInit::PyTorchDefault);
        common::load_strict(&mut vs, &tensors, path)?;
        vs.freeze();
        let mut model = model;
        model.fold();
        Ok(model)
    }

    /// `(features (n, 512), logits (n, K))` for normalised images `(n, 3, h, w)`; `train` selects
    /// batch statistics (and updates the running ones) in the BN layers.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let mut out = self.stem(x, train);
        for i in 0..self.layers.len() {
            out = self.stage(i, &out, train);
        }
        self.pool_head(&out, train)
    }

    /// The stem (conv, BN, ReLU): the input of stage 0.
    pub fn stem(&self, x: &Tensor, train: bool) -> Tensor {
        common::relu(self.conv_bn1.forward_t(x, train))
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
        self.layers.iter_mut().flatten().for_each(BasicBlock::fold);
    }

    /// A copy of the final linear layer.
    pub fn head(&self) -> Result<ood_core::Head> {
        common::head_of(&self.fc)
    }

    /// Which depth this is.
    pub fn depth(&self) -> ResNet32x32Depth {
        self.depth
    }

    /// Feature dimension (512).
    pub fn feature_dim(&self) -> i64 {
        512
    }
}
