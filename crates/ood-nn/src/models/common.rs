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
    /// Kaiming-normal, fan-in, gain √2 (`init.kaiming_normal_` with its defaults): the akamaster
    /// CIFAR ResNets' `_weights_init`, on conv and linear weights.
    KaimingNormalFanIn,
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
            ConvInit::KaimingNormalFanIn => Init::Kaiming {
                dist: nn::init::NormalOrUniform::Normal,
                fan: nn::init::FanInOut::FanIn,
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
        eps: BN_EPS,
        momentum: 0.1,
        ..Default::default()
    };
    nn::batch_norm2d(p, c, cfg)
}

/// A convolution directly followed by BatchNorm (`conv` and `bn` keep their own tensor names,
/// so weights load and save as the two layers). Training and evaluation run the two layers;
/// after [`ConvBn::fold`], which [`super::Arch::load`] calls on networks loaded for inference,
/// the eval-mode forward is one convolution with weight `W·s` and bias `β − μ·s` (with
/// `s = γ / √(σ² + ε)`), stored channels-last: one pass over the activations instead of two, and
/// oneDNN's channels-last kernels without layout conversions (BENCHMARKS.md, "Feature
/// extraction"). The result equals conv-then-BN up to float rounding (golden tests: 1e-4 on
/// logits against PyTorch).
#[derive(Debug)]
pub(crate) struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    stride: i64,
    padding: i64,
    folded: Option<(Tensor, Tensor)>,
}

thread_local! {
    /// Raw convolution outputs recorded by [`ConvBn::forward_t`] inside [`with_conv_taps`].
    static CONV_TAPS: std::cell::RefCell<Option<Vec<Tensor>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` (an eval-mode forward pass) with every [`ConvBn`] taking its unfolded path and
/// recording its raw convolution output (before BatchNorm), and returns `f`'s result with those
/// outputs in execution order (what forward hooks on PyTorch's `nn.Conv2d` modules see).
pub(crate) fn with_conv_taps<T>(f: impl FnOnce() -> T) -> (T, Vec<Tensor>) {
    CONV_TAPS.with(|t| *t.borrow_mut() = Some(Vec::new()));
    let out = f();
    let taps = CONV_TAPS
        .with(|t| t.borrow_mut().take())
        .unwrap_or_default();
    (out, taps)
}

impl ConvBn {
    /// A bias-free `k x k` convolution under `conv` and a PyTorch-initialised BatchNorm under
    /// `bn` (see [`conv2d`], [`batch_norm2d`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        conv: nn::Path<'_>,
        bn: nn::Path<'_>,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        padding: i64,
        init: ConvInit,
    ) -> Self {
        ConvBn {
            conv: conv2d(conv, cin, cout, k, stride, padding, init),
            bn: batch_norm2d(bn, cout),
            stride,
            padding,
            folded: None,
        }
    }

    /// Conv then BN (batch statistics when `train`), or the folded convolution in eval mode once
    /// [`ConvBn::fold`] ran.
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        if !train && CONV_TAPS.with(|t| t.borrow().is_some()) {
            let c = x.apply(&self.conv);
            CONV_TAPS.with(|t| {
                if let Some(v) = t.borrow_mut().as_mut() {
                    v.push(c.shallow_clone());
                }
            });
            return c.apply_t(&self.bn, false);
        }
        match (&self.folded, train) {
            // Channels-last input (a no-op for the activations of folded layers, which already
            // are): oneDNN then keeps every activation channels-last.
            (Some((w, b)), false) => crate::autocast::channels_last(x).conv2d(
                w,
                Some(b),
                [self.stride, self.stride],
                [self.padding, self.padding],
                [1, 1],
                1,
            ),
            _ => x.apply(&self.conv).apply_t(&self.bn, train),
        }
    }

    /// Folds the BatchNorm's running statistics and affine parameters into the convolution
    /// (from the current weights: call it once they are final).
    pub(crate) fn fold(&mut self) {
        let bn = &self.bn;
        let (w, b) = tch::no_grad(|| {
            let scale = match &bn.ws {
                Some(g) => g / (&bn.running_var + BN_EPS).sqrt(),
                None => (&bn.running_var + BN_EPS).sqrt().reciprocal(),
            };
            let shift = match &bn.bs {
                Some(beta) => beta - &bn.running_mean * &scale,
                None => -(&bn.running_mean * &scale),
            };
            let bias = match &self.conv.bs {
                Some(cb) => cb * &scale + shift,
                None => shift,
            };
            let w = &self.conv.ws * scale.reshape([-1, 1, 1, 1]);
            (crate::autocast::channels_last(&w), bias)
        });
        self.folded = Some((w, b));
    }
}

/// `relu(x)` of a fresh activation, in place when no gradient flows through it (inference):
/// one buffer and one memory pass fewer (BENCHMARKS.md, "Feature extraction").
pub(crate) fn relu(mut x: Tensor) -> Tensor {
    if x.requires_grad() {
        x.relu()
    } else {
        let _ = x.relu_();
        x
    }
}

/// `relu(a + b)` for a fresh activation `a`, in place into `a` when no gradient flows.
pub(crate) fn add_relu(mut a: Tensor, b: &Tensor) -> Tensor {
    if a.requires_grad() || b.requires_grad() {
        (a + b).relu()
    } else {
        let _ = a.g_add_(b);
        let _ = a.relu_();
        a
    }
}

/// BatchNorm's ε in every model here (PyTorch's default).
const BN_EPS: f64 = 1e-5;

/// `nn.Linear` with PyTorch's default init: weight and bias U(±1/√fan_in); with `zero_bias` the
/// bias starts at 0 (Wide ResNet convention).
pub(crate) fn linear(p: nn::Path<'_>, din: i64, dout: i64, zero_bias: bool) -> nn::Linear {
    linear_with(p, din, dout, None, zero_bias)
}

/// [`linear`] with the weight drawn by `weight_init` instead of PyTorch's default.
pub(crate) fn linear_with(
    p: nn::Path<'_>,
    din: i64,
    dout: i64,
    weight_init: Option<ConvInit>,
    zero_bias: bool,
) -> nn::Linear {
    let bound = 1.0 / (din.max(1) as f64).sqrt();
    let cfg = nn::LinearConfig {
        ws_init: weight_init.map_or(
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
            ConvInit::init,
        ),
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

/// The one weight reader: the tensors of a weights file by name, as f32 CPU tensors, with a
/// leading `module.` (from `nn.DataParallel`) stripped.
///
/// Formats, told apart by their first bytes: safetensors (any float or integer dtype, converted
/// to f32; headers are validated by [`ood_core::safetensors`]) and legacy `.th` pickles of
/// PyTorch < 1.6 (e.g. the released akamaster files; [`super::th_pickle`]). A zip-format
/// `torch.save` file is refused with the one-line conversion to safetensors. Every value must be
/// finite: a NaN or infinity is an error naming the file and the tensor.
pub fn read_weights(path: &Path) -> Result<HashMap<String, Tensor>> {
    let werr = |reason: String| Error::Weights {
        path: path.to_path_buf(),
        reason,
    };
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let n = f.read(&mut magic).map_err(|e| Error::io(path, e))?;
        if n < magic.len() {
            return Err(werr(format!("{n}-byte file is not a weights file")));
        }
    }
    let named: Vec<(String, Tensor)> = if magic[0] == 0x80 {
        super::th_pickle::load_th(path)?
            .into_iter()
            .map(|(n, t)| {
                let t = t.to_kind(Kind::Float);
                (n, t)
            })
            .collect()
    } else if magic == *b"PK\x03\x04" {
        return Err(werr(
            "a zip-format torch.save checkpoint; convert it once in Python: \
             `from safetensors.torch import save_file; save_file(torch.load(F, map_location=\"cpu\"), OUT)` \
             (for a checkpoint dict, pass its state_dict)"
                .into(),
        ));
    } else {
        let file = ood_core::safetensors::SafeTensorsFile::open(path)
            .map_err(|e| werr(format!("cannot read as safetensors: {e}")))?;
        let mut v = Vec::with_capacity(file.tensors.len());
        for (name, info) in &file.tensors {
            let values = file.read_f32(name).map_err(|e| werr(e.to_string()))?;
            let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
            v.push((name.clone(), Tensor::from_slice(&values).reshape(shape)));
        }
        v
    };
    for (name, t) in &named {
        if t.numel() > 0 && !bool::try_from(t.isfinite().all()).unwrap_or(false) {
            let bad = i64::try_from(t.isfinite().logical_not().sum(Kind::Int64)).unwrap_or(-1);
            return Err(werr(format!(
                "tensor `{name}` holds {bad} NaN or infinite value(s)"
            )));
        }
    }
    Ok(strip_module_prefix(named))
}

/// The input convention a weights file records ([`crate::network::INPUT_METADATA_KEY`], e.g. the
/// demo's 28-px Fashion-MNIST normalisation), if any: only safetensors files carry one.
pub fn read_input_spec(path: &Path) -> Result<Option<crate::network::InputSpec>> {
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        if f.read(&mut magic).map_err(|e| Error::io(path, e))? < magic.len()
            || magic[0] == 0x80
            || magic == *b"PK\x03\x04"
        {
            return Ok(None);
        }
    }
    let file = ood_core::safetensors::SafeTensorsFile::open(path).map_err(|e| Error::Weights {
        path: path.to_path_buf(),
        reason: format!("cannot read as safetensors: {e}"),
    })?;
    crate::network::InputSpec::from_metadata(&file.metadata, path)
}

/// Writes every variable of `vs` as f32 to the safetensors file `path` (names sorted), with
/// `metadata` in its header (e.g. the input convention, [`crate::network::InputSpec::to_metadata`]),
/// atomically: what [`read_weights`] and [`read_input_spec`] read back.
pub fn write_weights(
    vs: &nn::VarStore,
    path: &Path,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut values = Vec::with_capacity(vars.len());
    for (name, t) in &vars {
        let t = t.detach().to_device(Device::Cpu).to_kind(Kind::Float);
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let v =
            Vec::<f32>::try_from(t.flatten(0, -1).contiguous()).map_err(|e| Error::Weights {
                path: path.to_path_buf(),
                reason: format!("tensor `{name}`: {e}"),
            })?;
        values.push((name.as_str(), shape, v));
    }
    let tensors: Vec<ood_core::safetensors::TensorToWrite<'_>> = values
        .iter()
        .map(|(n, s, v)| ood_core::safetensors::TensorToWrite::f32(n, s.clone(), v))
        .collect();
    ood_core::safetensors::write(path, &tensors, metadata)?;
    Ok(())
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

/// Copies every variable of `vs` from `tensors`, strictly: every missing tensor, every tensor
/// of the wrong shape and every tensor the model does not use (other than BatchNorm's
/// `num_batches_tracked`) is an error naming them (up to 8 of each kind), so that weights of
/// another architecture or depth never load silently. The store is not frozen here.
pub fn load_strict(
    vs: &mut nn::VarStore,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let (mut missing, mut misshaped) = (Vec::new(), Vec::new());
    for name in &names {
        match tensors.get(*name) {
            None => missing.push(format!("`{name}`")),
            Some(src) if src.size() != vars[*name].size() => misshaped.push(format!(
                "`{name}` is {:?}, the model needs {:?}",
                src.size(),
                vars[*name].size()
            )),
            Some(_) => {}
        }
    }
    let mut extra: Vec<String> = tensors
        .keys()
        .filter(|k| !vars.contains_key(*k) && !k.ends_with("num_batches_tracked"))
        .map(|k| format!("`{k}`"))
        .collect();
    extra.sort();
    let list = |what: &str, v: &[String]| -> Option<String> {
        (!v.is_empty()).then(|| {
            let shown = v.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
            let more = if v.len() > 8 {
                format!(" and {} more", v.len() - 8)
            } else {
                String::new()
            };
            format!("{} {what}: {shown}{more}", v.len())
        })
    };
    let problems: Vec<String> = [
        list("missing tensor(s)", &missing),
        list("tensor(s) of the wrong shape", &misshaped),
        list(
            "tensor(s) the model does not use (another architecture or depth?)",
            &extra,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !problems.is_empty() {
        return Err(Error::Weights {
            path: path.to_path_buf(),
            reason: format!("the weights do not fit the model: {}", problems.join("; ")),
        });
    }
    for name in names {
        let mut dst = vars[name].shallow_clone();
        tch::no_grad(|| dst.f_copy_(&tensors[name])).map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            reason: format!("cannot copy tensor `{name}`: {e}"),
        })?;
    }
    Ok(())
}
