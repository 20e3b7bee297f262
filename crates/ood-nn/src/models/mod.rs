//! Network architectures with PyTorch-compatible tensor names, and [`Arch`], the one registry of
//! them.
//!
//! Every architecture file has the same inherent API: `new(vs, num_classes, variant..)` builds it
//! with fresh weights and its reference code's PyTorch initialisation, `forward_t(x, train)`
//! returns `(features, logits)`, and `head()` copies the final linear layer out as an
//! [`ood_core::Head`]. The families whose variant a weights file reveals (OpenOOD's 32x32
//! ResNets, torchvision ResNets, WRN) also have `load_safetensors(path, device)`, which reads it
//! from the tensor names and shapes; the He et al. ResNets load through [`Arch::load`], whose
//! name fixes the depth. Every load checks every tensor with [`common::load_strict`]. [`Arch`] names them for the command line, holds the one copy of each input
//! convention, and builds ([`Arch::build`], for training) or loads ([`Arch::load`], for
//! inference) a [`Net`]: the model with its variables, which is a [`Network`].

pub mod common;
pub mod he_resnet;
pub mod resnet32x32;
pub mod th_pickle;
pub mod torchscript;
pub mod torchvision_resnet;
pub mod wrn;

use crate::error::{Error, Result};
use crate::network::{Forward, InputSpec, Network};
use resnet32x32::ResNet32x32Depth;
use std::path::Path;
use tch::{Device, Tensor, nn};
use torchvision_resnet::BlockKind;

/// Every architecture oodkit can build and load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// He et al. (2016) CIFAR ResNet of depth 6n+2 as akamaster released it (`resnet8` ..
    /// `resnet56`, `resnet110`): [`he_resnet`].
    He(usize),
    /// OpenOOD's `ResNet18_32x32` / `ResNet34_32x32` (`cifar_resnet18`, `cifar_resnet34`):
    /// [`resnet32x32`].
    ResNet32x32(ResNet32x32Depth),
    /// Wide ResNet with the Outlier Exposure / OpenOOD tensor names (`wrn`): any WRN-d-k loads
    /// (depth and width read from the file); training builds WRN-40-2 with dropout 0.3.
    Wrn,
    /// torchvision ResNet-18/34/50/101 at 224 px (`resnet18` .. `resnet101`):
    /// [`torchvision_resnet`].
    Torchvision(usize),
}

/// The command-line names [`Arch::parse`] knows, in order.
pub const KNOWN_MODELS: &[&str] = &[
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "cifar_resnet18",
    "cifar_resnet34",
    "wrn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
];

/// akamaster's CIFAR ResNets: RGB `x/255` normalised with the ImageNet statistics, 32 px.
const HE_SPEC: InputSpec = InputSpec::new(32, he_resnet::MEAN, he_resnet::STD);
/// OpenOOD's CIFAR-10 normalisation.
const CIFAR10_SPEC: InputSpec =
    InputSpec::new(32, [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]);
/// The Outlier Exposure WRN normalisation.
const OE_WRN_SPEC: InputSpec = InputSpec::new(
    32,
    [125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0],
    [63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0],
);
/// ImageNet normalisation at 224 px.
const IMAGENET_SPEC: InputSpec = InputSpec::new(224, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);

impl Arch {
    /// Parses a command-line model name (see [`KNOWN_MODELS`]).
    pub fn parse(name: &str) -> Result<Arch> {
        let unknown = || {
            Error::Config(format!(
                "unknown model '{name}' (known: {}; also clip with --text-head, and \
                 torchscript:FILE.pt for your own network)",
                KNOWN_MODELS.join(", ")
            ))
        };
        Ok(match name {
            "cifar_resnet18" => Arch::ResNet32x32(ResNet32x32Depth::R18),
            "cifar_resnet34" => Arch::ResNet32x32(ResNet32x32Depth::R34),
            "wrn" => Arch::Wrn,
            "resnet18" | "resnet34" | "resnet50" | "resnet101" => {
                Arch::Torchvision(name[6..].parse().map_err(|_| unknown())?)
            }
            _ => match name.strip_prefix("resnet").map(str::parse::<usize>) {
                Some(Ok(depth)) if he_resnet::blocks_for_depth(depth).is_ok() => Arch::He(depth),
                _ => return Err(unknown()),
            },
        })
    }

    /// The command-line name.
    pub fn name(&self) -> String {
        match self {
            Arch::He(d) => format!("resnet{d}"),
            Arch::ResNet32x32(ResNet32x32Depth::R18) => "cifar_resnet18".into(),
            Arch::ResNet32x32(ResNet32x32Depth::R34) => "cifar_resnet34".into(),
            Arch::Wrn => "wrn".into(),
            Arch::Torchvision(d) => format!("resnet{d}"),
        }
    }

    /// The input convention of the architecture's reference weights (size and normalisation).
    pub fn input_spec(&self) -> InputSpec {
        match self {
            Arch::He(_) => HE_SPEC,
            Arch::ResNet32x32(_) => CIFAR10_SPEC,
            Arch::Wrn => OE_WRN_SPEC,
            Arch::Torchvision(_) => IMAGENET_SPEC,
        }
    }

    /// The name of the final linear layer (`{head}.weight`, `{head}.bias`).
    pub fn head_name(&self) -> &'static str {
        match self {
            Arch::He(_) => "linear",
            _ => "fc",
        }
    }

    /// Builds the architecture with `classes` outputs and fresh weights (its reference code's
    /// initialisation, drawn from libtorch's seeded RNG) on `device`, for training.
    pub fn build(&self, classes: i64, device: Device) -> Result<Net> {
        let vs = nn::VarStore::new(device);
        let model = self.model(&vs.root(), classes)?;
        Ok(Net {
            arch: *self,
            vs,
            model,
            input: self.input_spec(),
        })
    }

    fn model(&self, root: &nn::Path<'_>, classes: i64) -> Result<Model> {
        Ok(match *self {
            Arch::He(depth) => Model::He(he_resnet::HeResNet::new(root, classes, depth)?),
            Arch::ResNet32x32(depth) => Model::ResNet32x32(resnet32x32::ResNet32x32::new(
                root,
                classes,
                depth,
                common::ConvInit::PyTorchDefault,
            )),
            Arch::Wrn => Model::Wrn(wrn::WideResNet::wrn40_2(root, classes, 0.3)?),
            Arch::Torchvision(d) => {
                let (kind, blocks) = match d {
                    18 => (BlockKind::Basic, [2, 2, 2, 2]),
                    34 => (BlockKind::Basic, [3, 4, 6, 3]),
                    50 => (BlockKind::Bottleneck, [3, 4, 6, 3]),
                    _ => (BlockKind::Bottleneck, [3, 4, 23, 3]),
                };
                Model::Torchvision(torchvision_resnet::TorchvisionResNet::new(
                    root, classes, kind, blocks,
                ))
            }
        })
    }

    /// Loads the architecture from a weights file (the one reader and the one strict copy of
    /// [`common`]; the class count is read from the head) for inference: frozen, eval mode is
    /// the caller's `train = false`. A file of another architecture or depth is an error naming
    /// the tensors that do not fit. The input convention is the architecture's
    /// ([`Arch::input_spec`]) unless the file records the one it was trained with
    /// ([`crate::network::INPUT_METADATA_KEY`], written by `ood demo`).
    pub fn load(&self, weights: &Path, device: Device) -> Result<Net> {
        let tensors = common::read_weights(weights)?;
        let mut vs = nn::VarStore::new(device);
        let model = match self {
            // Any WRN-d-k: depth and width come from the file.
            Arch::Wrn => Model::Wrn(wrn::WideResNet::from_tensors(
                &vs.root(),
                &tensors,
                weights,
            )?),
            _ => {
                let head = format!("{}.weight", self.head_name());
                let classes = match tensors.get(&head).map(Tensor::size) {
                    Some(s) if s.len() == 2 => s[0],
                    Some(s) => {
                        return Err(Error::Weights {
                            path: weights.to_path_buf(),
                            reason: format!("tensor `{head}` must be 2-d, found shape {s:?}"),
                        });
                    }
                    None => {
                        return Err(Error::Weights {
                            path: weights.to_path_buf(),
                            reason: format!(
                                "missing tensor `{head}` (is this a {} file?)",
                                self.name()
                            ),
                        });
                    }
                };
                self.model(&vs.root(), classes)?
            }
        };
        common::load_strict(&mut vs, &tensors, weights)?;
        let input = common::read_input_spec(weights)?.unwrap_or_else(|| self.input_spec());
        vs.freeze();
        let mut model = model;
        model.fold();
        Ok(Net {
            arch: *self,
            vs,
            model,
            input,
        })
    }
}

/// The model of one [`Arch`].
#[derive(Debug)]
enum Model {
    He(he_resnet::HeResNet),
    ResNet32x32(resnet32x32::ResNet32x32),
    Wrn(wrn::WideResNet),
    Torchvision(torchvision_resnet::TorchvisionResNet),
}

impl Model {
    /// Folds BatchNorm into the preceding convolutions for inference, where the architecture
    /// has such pairs ([`common::ConvBn`]).
    fn fold(&mut self) {
        match self {
            Model::He(m) => m.fold(),
            Model::ResNet32x32(m) => m.fold(),
            Model::Torchvision(m) => m.fold(),
            // Pre-activation blocks (BN → ReLU → conv): no conv directly followed by BN.
            Model::Wrn(_) => {}
        }
    }
}

/// A built or loaded architecture with its variables: a [`Network`] for extraction, and a
/// variable store plus forward pass for training.
#[derive(Debug)]
pub struct Net {
    arch: Arch,
    vs: nn::VarStore,
    model: Model,
    input: InputSpec,
}

impl Net {
    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }
    /// The variables (parameters and BatchNorm statistics).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    /// Mutable access to the variables (loading `--init` weights, saving).
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }
}

impl Network for Net {
    fn name(&self) -> String {
        self.arch.name()
    }
    fn forward_t(&self, images: &Tensor, train: bool) -> Forward {
        let (features, logits) = match &self.model {
            Model::He(m) => m.forward_t(images, train),
            Model::ResNet32x32(m) => m.forward_t(images, train),
            Model::Wrn(m) => m.forward_t(images, train),
            Model::Torchvision(m) => m.forward_t(images, train),
        };
        Forward { features, logits }
    }
    fn head(&self) -> Result<ood_core::Head> {
        match &self.model {
            Model::He(m) => m.head(),
            Model::ResNet32x32(m) => m.head(),
            Model::Wrn(m) => m.head(),
            Model::Torchvision(m) => m.head(),
        }
    }
    fn input_spec(&self) -> InputSpec {
        self.input
    }
    fn device(&self) -> Device {
        self.vs.device()
    }
    fn staged(&self) -> Option<&dyn crate::network::Staged> {
        Some(self)
    }
    fn conv_outputs(&self, x: &Tensor) -> Option<Vec<Tensor>> {
        // The architectures whose every convolution is a `ConvBn` and whose ReLUs are functions
        // (no `nn.ReLU` modules for hooks to see), as OpenOOD's ResNet18_32x32 and akamaster's.
        match &self.model {
            Model::He(_) | Model::ResNet32x32(_) => {
                Some(common::with_conv_taps(|| tch::no_grad(|| self.forward_t(x, false))).1)
            }
            Model::Wrn(_) | Model::Torchvision(_) => None,
        }
    }
}

impl crate::network::Staged for Net {
    fn num_stages(&self) -> usize {
        match &self.model {
            Model::He(_) => 3,
            Model::ResNet32x32(m) => m.num_stages(),
            Model::Wrn(m) => m.num_stages(),
            Model::Torchvision(m) => m.num_stages(),
        }
    }
    fn stem(&self, x: &Tensor) -> Tensor {
        match &self.model {
            Model::He(m) => m.stem(x, false),
            Model::ResNet32x32(m) => m.stem(x, false),
            Model::Wrn(m) => m.stem(x),
            Model::Torchvision(m) => m.stem(x, false),
        }
    }
    fn stage(&self, i: usize, x: &Tensor) -> Tensor {
        match &self.model {
            Model::He(m) => m.stage(i, x, false),
            Model::ResNet32x32(m) => m.stage(i, x, false),
            Model::Wrn(m) => m.stage(i, x, false),
            Model::Torchvision(m) => m.stage(i, x, false),
        }
    }
    fn head_logits(&self, out: &Tensor) -> Tensor {
        match &self.model {
            Model::He(m) => m.pool_head(out).1,
            Model::ResNet32x32(m) => m.pool_head(out, false).1,
            Model::Wrn(m) => m.pool_head(out, false).1,
            Model::Torchvision(m) => m.pool_head(out, false).1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_name_parses_and_round_trips() {
        for &name in KNOWN_MODELS {
            let a = Arch::parse(name).unwrap();
            assert_eq!(a.name(), name);
        }
        for bad in ["resnet21", "resnet", "vgg16", "resnet18x", "cifar_resnet50"] {
            let e = Arch::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("unknown model '{bad}'")), "{e}");
        }
        assert_eq!(
            Arch::parse("resnet20").unwrap().input_spec().mean,
            he_resnet::MEAN
        );
        assert_eq!(Arch::parse("resnet50").unwrap().input_spec().size, 224);
    }

    /// Fresh networks start as PyTorch's: BatchNorm weight 1 and bias 0 everywhere (tch's own
    /// default draws the weight from U(0, 1)), and a built network saved and loaded back gives
    /// the same outputs.
    #[test]
    fn built_networks_have_pytorch_batchnorm_and_load_back() {
        for name in ["resnet8", "cifar_resnet18", "wrn", "resnet18"] {
            tch::manual_seed(0);
            let net = Arch::parse(name).unwrap().build(7, Device::Cpu).unwrap();
            let vars = net.var_store().variables();
            let mut bn = 0;
            for (n, v) in &vars {
                if let Some(base) = n.strip_suffix(".weight")
                    && vars.contains_key(&format!("{base}.running_mean"))
                {
                    bn += 1;
                    assert!(bool::try_from(v.eq(1.0).all()).unwrap(), "{name}: {n}");
                    let b = &vars[&format!("{base}.bias")];
                    assert!(
                        bool::try_from(b.eq(0.0).all()).unwrap(),
                        "{name}: {base}.bias"
                    );
                }
            }
            assert!(bn > 0, "{name}");
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("w.safetensors");
            net.var_store().save(&p).unwrap();
            let back = Arch::parse(name).unwrap().load(&p, Device::Cpu).unwrap();
            let size = net.input_spec().size.min(64) as i64;
            let x = Tensor::randn([2, 3, size, size], (tch::Kind::Float, Device::Cpu));
            let a = tch::no_grad(|| net.forward_t(&x, false));
            let b = tch::no_grad(|| back.forward_t(&x, false));
            // Loaded for inference, BatchNorm is folded into the convolutions (except WRN's
            // pre-activation blocks): the same function up to float rounding.
            for (u, v) in [(&a.features, &b.features), (&a.logits, &b.logits)] {
                let err = ((u - v).abs() / (v.abs() + 1.0)).max().double_value(&[]);
                assert!(err < 1e-5, "{name}: loaded back differs by {err}");
            }
            // Training mode after loading is the unfolded conv-then-BN (batch statistics). (WRN
            // is not folded, and its built and loaded dropout rates differ.)
            let (c, d) = (net, back);
            if name != "wrn" {
                let ta = c.forward_t(&x, true);
                let tb = d.forward_t(&x, true);
                let err = (ta.logits - tb.logits).abs().max().double_value(&[]);
                assert!(err < 1e-5, "{name}: training-mode pass differs by {err}");
            }
            assert_eq!(d.head().unwrap(), c.head().unwrap());
        }
    }

    #[test]
    fn a_weights_file_may_record_its_input_convention() {
        use crate::network::{INPUT_METADATA_KEY, InputSpec};
        use std::collections::BTreeMap;
        tch::manual_seed(0);
        let arch = Arch::parse("resnet8").unwrap();
        let net = arch.build(6, Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Values that need every bit of an f32 to round-trip.
        let spec = InputSpec::new(28, [0.286_041_3, 0.1, 1.0 / 3.0], [0.353_023_1, 0.7, 0.2]);
        let p = dir.path().join("demo.safetensors");
        let meta = BTreeMap::from([(INPUT_METADATA_KEY.to_string(), spec.to_metadata())]);
        common::write_weights(net.var_store(), &p, &meta).unwrap();
        let back = arch.load(&p, Device::Cpu).unwrap();
        assert_eq!(back.input_spec(), spec);
        assert_eq!(back.input_spec().resize, 28);
        // The tensors are those of the network: same outputs as a plain save.
        let plain = dir.path().join("plain.safetensors");
        net.var_store().save(&plain).unwrap();
        let other = arch.load(&plain, Device::Cpu).unwrap();
        assert_eq!(other.input_spec(), arch.input_spec());
        let x = Tensor::randn([2, 3, 28, 28], (tch::Kind::Float, Device::Cpu));
        let a = tch::no_grad(|| back.forward_t(&x, false)).logits;
        let b = tch::no_grad(|| other.forward_t(&x, false)).logits;
        assert_eq!((a - b).abs().max().double_value(&[]), 0.0);
        // A malformed record is an error naming the file and the key.
        for bad in [
            r#"{"size": 28, "mean": [0.1, 0.2], "std": [1, 1, 1]}"#,
            r#"{"size": 28, "mean": [0, 0, 0], "std": [1, 0, 1]}"#,
            "28px",
        ] {
            let q = dir.path().join("bad.safetensors");
            let meta = BTreeMap::from([(INPUT_METADATA_KEY.to_string(), bad.to_string())]);
            common::write_weights(net.var_store(), &q, &meta).unwrap();
            let e = arch.load(&q, Device::Cpu).unwrap_err().to_string();
            assert!(
                e.contains("bad.safetensors") && e.contains(INPUT_METADATA_KEY),
                "{e}"
            );
        }
    }
}
