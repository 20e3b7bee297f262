//! Building blocks shared by the model files: layers initialised like PyTorch, strict weight
//! loading with errors that name the file and the tensor, and the classifier-head copy.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{Array1, Array2};
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// How convolution weights of a freshly built model are initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvInit {
    /// PyTorch's `nn.Conv2d` default: Kaiming-uniform with `a = √5`, i.e. U(±1/√fan_in).
    /// OpenOOD's `ResNet18_32x32` keeps it.
    #[default]
    PyTorchDefault,
    /// Kaiming-normal, fan-out, ReLU gain: N(0, √(2 / (k·k·out_channels))). Used by TagFog / SupCon
    /// (`resnet_big.py`), torchvision ResNets and the Wide ResNets.
    KaimingNormalFanOut,
}

impl ConvInit {
    fn init(self) -> Init {
        match self {
            ConvInit::PyTorchDefault => Init::Kaiming {
                dist: nn::init::NormalOrUniform::Uniform,
                fan: nn::init::FanInOut::FanIn,
                non_linearity: nn::init::NonLinearity::ExplicitGain((1.0f64 / 3.0).sqrt()),
            },
            ConvInit::KaimingNormalFanOut => Init::Kaiming {
                dist: nn::init::NormalOrUniform::Normal,
                fan: nn::init::FanInOut::FanOut,
                non_linearity: nn::init::NonLinearity::ReLU,
            },
        }
    }
}

/// A bias-free 2-d convolution (`weight` of shape `(cout, cin, k, k)`).
pub(crate) fn conv2d(
    p: nn::Path<'_>,
    cin: i64,
    cout: i64,
    k: i64,
    stride: i64,
    padding: i64,
    init: ConvInit,
) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ws_init: init.init(),
        ..Default::default()
    };
    nn::conv2d(p, cin, cout, k, cfg)
}

/// `BatchNorm2d` as PyTorch builds it: weight 1, bias 0, running mean 0 / var 1, eps 1e-5,
/// momentum 0.1. (tch's own default draws the weight from U(0, 1).)
pub(crate) fn batch_norm2d(p: nn::Path<'_>, c: i64) -> nn::BatchNorm {
    let cfg = nn::BatchNormConfig {
        ws_init: Init::Const(1.0),
        bs_init: Init::Const(0.0),
        eps: 1e-5,
        momentum: 0.1,
        ..Default::default()
    };
    nn::batch_norm2d(p, c, cfg)
}

/// `nn.Linear` with PyTorch's default init: weight and bias U(±1/√fan_in); with `zero_bias` the
/// bias starts at 0 (Wide ResNet convention).
pub(crate) fn linear(p: nn::Path<'_>, din: i64, dout: i64, zero_bias: bool) -> nn::Linear {
    let bound = 1.0 / (din.max(1) as f64).sqrt();
    let cfg = nn::LinearConfig {
        ws_init: Init::Uniform {
            lo: -bound,
            up: bound,
        },
        bs_init: Some(if zero_bias {
            Init::Const(0.0)
        } else {
            Init::Uniform {
                lo: -bound,
                up: bound,
            }
        }),
        bias: true,
    };
    nn::linear(p, din, dout, cfg)
}

/// Copies a linear layer to an [`ood_core::Head`] (weight `(c, d)`, bias `(c)`), as f32 on the CPU.
pub(crate) fn head_of(fc: &nn::Linear) -> Result<ood_core::Head> {
    let w = fc.ws.detach().to_device(Device::Cpu).to_kind(Kind::Float);
    let size = w.size();
    let (c, d) = match size.as_slice() {
        [c, d] => (*c as usize, *d as usize),
        other => {
            return Err(Error::Config(format!(
                "classifier weight has shape {other:?}, expected (classes, dim)"
            )));
        }
    };
    let wv = Vec::<f32>::try_from(w.contiguous().flatten(0, -1))?;
    let bv = match &fc.bs {
        Some(b) => Vec::<f32>::try_from(
            b.detach()
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous(),
        )?,
        None => vec![0.0; c],
    };
    let weight = Array2::from_shape_vec((c, d), wv)
        .map_err(|e| Error::Config(format!("classifier weight: {e}")))?;
    Ok(ood_core::Head::new(weight, Array1::from_vec(bv))?)
}

/// The tensors of a safetensors file by name, with a leading `module.` (from `nn.DataParallel`)
/// stripped.
pub(crate) fn read_weights(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "weights file not found"),
        ));
    }
    let named = Tensor::read_safetensors(path).map_err(|e| Error::Weights {
        path: path.to_path_buf(),
        reason: format!("cannot read as safetensors: {e}"),
    })?;
    Ok(strip_module_prefix(named))
}

/// Removes a leading `module.` from every name.
pub(crate) fn strip_module_prefix(named: Vec<(String, Tensor)>) -> HashMap<String, Tensor> {
    named
        .into_iter()
        .map(|(n, t)| match n.strip_prefix("module.") {
            Some(s) => (s.to_string(), t),
            None => (n, t),
        })
        .collect()
}

/// The shape of tensor `name`, or a [`Error::Weights`] naming the file.
pub(crate) fn shape_of(
    tensors: &HashMap<String, Tensor>,
    name: &str,
    path: &Path,
) -> Result<Vec<i64>> {
    tensors
        .get(name)
        .map(|t| t.size())
        .ok_or_else(|| Error::Weights {
            path: path.to_path_buf(),
            reason: format!("missing tensor `{name}`"),
        })
}

/// Number of consecutive sub-modules `{prefix}0.`, `{prefix}1.`, ... present in the file.
pub(crate) fn count_blocks(tensors: &HashMap<String, Tensor>, prefix: &str) -> usize {
    let mut n = 0;
    while tensors
        .keys()
        .any(|k| k.starts_with(&format!("{prefix}{n}.")))
    {
        n += 1;
    }
    n
}

/// Copies every variable of `vs` from `tensors` (strict: a missing tensor, a shape mismatch or an
/// unused tensor other than `num_batches_tracked` is an error), then freezes the store.
pub(crate) fn load_strict(
    vs: &mut nn::VarStore,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    let werr = |reason: String| Error::Weights {
        path: path.to_path_buf(),
        reason,
    };
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let src = tensors
            .get(name)
            .ok_or_else(|| werr(format!("missing tensor `{name}`")))?;
        if src.size() != var.size() {
            return Err(werr(format!(
                "tensor `{name}` has shape {:?}, the model expects {:?}",
                src.size(),
                var.size()
            )));
        }
        let mut dst = var.shallow_clone();
        tch::no_grad(|| dst.f_copy_(src))
            .map_err(|e| werr(format!("cannot copy tensor `{name}`: {e}")))?;
    }
    let mut extra: Vec<&String> = tensors
        .keys()
        .filter(|k| !vars.contains_key(*k) && !k.ends_with("num_batches_tracked"))
        .collect();
    if !extra.is_empty() {
        extra.sort();
        let shown: Vec<&str> = extra.iter().take(5).map(|s| s.as_str()).collect();
        return Err(werr(format!(
            "{} tensor(s) not used by the model (architecture mismatch?): {}",
            extra.len(),
            shown.join(", ")
        )));
    }
    vs.freeze();
    Ok(())
}
