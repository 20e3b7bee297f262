//! The CIFAR-10 ResNets of He et al. (2016) as released by akamaster/pytorch_resnet_cifar10
//! (ResNet-20/32/44/56), re-implemented exactly.
//!
//! Paper: "Deep Residual Learning for Image Recognition", <https://arxiv.org/abs/1512.03385>,
//! section 4.2. Reference code: github.com/akamaster/pytorch_resnet_cifar10 @ d5489e8, `resnet.py`.
//!
//! Architecture: stem conv3x3 3→16 (stride 1, pad 1, no bias), BN, ReLU; three stages of `n`
//! BasicBlocks (`n` = 3/5/7/9 for depth 20/32/44/56) with 16/32/64 channels, the first block of
//! stages 2 and 3 with stride 2. BasicBlock: conv3x3, BN, ReLU, conv3x3, BN, + shortcut, ReLU.
//! Shortcut "option A" where the shape changes: `x[:, :, ::2, ::2]` zero-padded by `planes/4`
//! channels on each side (no parameters). BN eps 1e-5, running statistics in eval mode. Global
//! average pool → 64-d penultimate feature → `linear` 64→10.
//!
//! Input: RGB `x/255` normalised with mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) — the
//! ImageNet statistics, which is what akamaster's training script uses — at 32x32.
//!
//! Tensor names: `conv1.weight`, `bn1.{weight,bias,running_mean,running_var}`,
//! `layer{1,2,3}.{i}.conv{1,2}.weight`, `layer{L}.{i}.bn{1,2}.*`, `linear.{weight,bias}`
//! (the released `.th` files carry a `module.` prefix; the `.safetensors` conversions do not).
//! Checked against PyTorch logits on 1,000 CIFAR-10 test images (tests/golden_resnet20.rs).

use crate::error::{Error, Result};
use crate::models::common::{self, ConvBn, ConvInit};
use tch::Tensor;
use tch::nn;

/// ImageNet channel means used by the akamaster training script.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations used by the akamaster training script.
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Blocks per stage for a given depth (`6n + 2`): 8 → 1, 14 → 2, 20 → 3, 32 → 5, 44 → 7, 56 → 9
/// (8 and 14 are the small CPU models of `ood demo`).
pub fn blocks_for_depth(depth: usize) -> Result<usize> {
    match depth {
        8 | 14 | 20 | 32 | 44 | 56 | 110 | 1202 => Ok((depth - 2) / 6),
        _ => Err(Error::Config(format!(
            "He et al. CIFAR ResNet depth must be 8, 14, 20, 32, 44, 56, 110 or 1202, got {depth}"
        ))),
    }
}

/// akamaster's `_weights_init`: `kaiming_normal_` (fan-in, gain √2) on every conv and linear
/// weight; PyTorch's defaults elsewhere (BatchNorm weight 1 / bias 0, linear bias U(±1/√fan_in)).
const INIT: ConvInit = ConvInit::KaimingNormalFanIn;

/// conv3x3 (pad 1, no bias) under `p/conv`, BatchNorm under `p/bn`.
fn conv3x3_bn(p: &nn::Path, conv: &str, bn: &str, cin: i64, cout: i64, stride: i64) -> ConvBn {
    ConvBn::new(p / conv, p / bn, cin, cout, 3, stride, 1, INIT)
}

#[derive(Debug)]
struct BasicBlock {
    conv_bn1: ConvBn,
    conv_bn2: ConvBn,
    /// Channels to zero-pad on each side for the option-A shortcut, when the shape changes.
    shortcut_pad: Option<i64>,
}

impl BasicBlock {
    fn new(p: &nn::Path, cin: i64, planes: i64, stride: i64) -> Self {
        let shortcut_pad = (stride != 1 || cin != planes).then_some(planes / 4);
        BasicBlock {
            conv_bn1: conv3x3_bn(p, "conv1", "bn1", cin, planes, stride),
            conv_bn2: conv3x3_bn(p, "conv2", "bn2", planes, planes, 1),
            shortcut_pad,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = common::relu(self.conv_bn1.forward_t(x, train));
        let out = self.conv_bn2.forward_t(&out, train);
        let short = match self.shortcut_pad {
            Some(pad) => x
                .slice(2, 0, None, 2)
                .slice(3, 0, None, 2)
                .constant_pad_nd([0, 0, 0, 0, pad, pad]),
            None => x.shallow_clone(),
        };
        common::add_relu(out, &short)
    }
}

/// A He et al. CIFAR ResNet (depth 6n+2: 8, 14, 20, 32, 44, 56, ...) as akamaster released it.
#[derive(Debug)]
pub struct HeResNet {
    depth: usize,
    conv_bn1: ConvBn,
    blocks: Vec<BasicBlock>,
    linear: nn::Linear,
}

impl HeResNet {
    /// Builds the network under `vs` with fresh weights (akamaster's initialisation).
    pub fn new(vs: &nn::Path<'_>, num_classes: i64, depth: usize) -> Result<Self> {
        let n = blocks_for_depth(depth)?;
        let conv_bn1 = conv3x3_bn(vs, "conv1", "bn1", 3, 16, 1);
        let mut blocks = Vec::with_capacity(3 * n);
        let mut cin = 16;
        for (stage, planes) in [16i64, 32, 64].into_iter().enumerate() {
            let lp = vs / format!("layer{}", stage + 1);
            for i in 0..n {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(&(&lp / i), cin, planes, stride));
                cin = planes;
            }
        }
        let linear = common::linear_with(vs / "linear", 64, num_classes, Some(INIT), false);
        Ok(HeResNet {
            depth,
            conv_bn1,
            blocks,
            linear,
        })
    }

    /// Network depth (20, 32, 44, 56, ...).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// `(features (n, 64), logits (n, K))` for normalised images `(n, 3, 32, 32)`: features are
    /// the global average of the last stage.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let mut out = self.stem(x, train);
        for i in 0..3 {
            out = self.stage(i, &out, train);
        }
        self.pool_head(&out)
    }

    /// The stem (conv, BN, ReLU): the input of stage 0.
    pub fn stem(&self, x: &Tensor, train: bool) -> Tensor {
        common::relu(self.conv_bn1.forward_t(x, train))
    }

    /// Stage `i` of 3 (16, 32, 64 channels) on its input.
    pub fn stage(&self, i: usize, x: &Tensor, train: bool) -> Tensor {
        let n = self.blocks.len() / 3;
        let mut out = x.shallow_clone();
        for b in &self.blocks[i * n..(i + 1) * n] {
            out = b.forward_t(&out, train);
        }
        out
    }

    /// `(features, logits)` of the last stage's output: global average, linear head.
    pub fn pool_head(&self, out: &Tensor) -> (Tensor, Tensor) {
        let features = out.mean_dim([2i64, 3].as_slice(), false, tch::Kind::Float);
        let logits = features.apply(&self.linear);
        (features, logits)
    }

    /// Folds every BatchNorm into its convolution for inference (`common::ConvBn`: weight
    /// `W·γ/√(σ²+ε)`, bias `β − μ·γ/√(σ²+ε)`); the weights
    /// must be final.
    pub fn fold(&mut self) {
        self.conv_bn1.fold();
        for b in &mut self.blocks {
            b.conv_bn1.fold();
            b.conv_bn2.fold();
        }
    }

    /// A copy of the final linear layer.
    pub fn head(&self) -> Result<ood_core::Head> {
        common::head_of(&self.linear)
    }
}
