//! Users' own networks as TorchScript files (`--model torchscript:FILE.pt`), run by libtorch's
//! TorchScript runtime on the CPU or CUDA.
//!
//! The contract (README, "Your own model (TorchScript)"; `scripts/export_torchscript.py` writes it
//! for any torchvision or timm model and for the akamaster ResNets):
//! * `forward(x)` takes a normalised `(n, 3, size, size)` float32 batch and returns the tuple
//!   `(features, logits)` or the dict `{"features": .., "logits": ..}`, features `(n, d)` being the
//!   input of the final linear layer and logits `(n, c)` its output;
//! * the head (weight `(c, d)`, bias `(c)`) is read from named parameters: the names given in
//!   [`TorchScriptOptions`] (`--head-weight fc.weight --head-bias fc.bias`), else the ones the
//!   file names in its config; without a bias name the bias is zero;
//! * the optional method `oodkit_config() -> str` returns a JSON object with the preprocessing
//!   (`input_size`, `resize`, `interpolation` = `bilinear`|`bicubic`, `mean`, `std`) and the head's
//!   parameter names (`head_weight`, `head_bias`); other keys are ignored. Options override it.
//!
//! [`TorchScript::load`] checks the contract before any data is read: it runs a deterministic probe
//! batch of two images, checks the output's form and shapes against the head, and requires
//! `features · weightᵀ + bias` to reproduce the logits within 1e-3 of their scale (detectors such
//! as ReAct, ASH, ViM and grad-norm recompute logits from the head). Every failure is an
//! [`Error::Weights`] naming the file. The module always runs in eval mode, whatever `train`
//! [`Network::forward_t`] is given.

use crate::data::Interpolation;
use crate::network::{Forward, InputSpec, Network, default_resize};
use crate::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tch::{CModule, Device, IValue, Kind, Tensor};

/// The prefix of TorchScript model names (`torchscript:FILE.pt`).
pub const PREFIX: &str = "torchscript:";

/// Relative tolerance of the head check: `max |features·Wᵀ+b − logits| ≤ 1e-3 · max(1, max |logits|)`.
pub const HEAD_TOLERANCE: f64 = 1e-3;

/// Settings that override (or stand in for) the file's `oodkit_config()`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TorchScriptOptions {
    /// Name of the head weight `(c, d)` among the module's named parameters (e.g. `fc.weight`).
    pub head_weight: Option<String>,
    /// Name of the head bias `(c)` (e.g. `fc.bias`).
    pub head_bias: Option<String>,
    /// Square input size in pixels.
    pub input_size: Option<u32>,
    /// Resampling filter of the resize.
    pub interpolation: Option<Interpolation>,
    /// Channel means after `x/255`.
    pub mean: Option<[f32; 3]>,
    /// Channel standard deviations after `x/255`.
    pub std: Option<[f32; 3]>,
}

impl TorchScriptOptions {
    /// The command-line flag of the first option that is set (`--head-weight`, ...), if any.
    pub fn first_given(&self) -> Option<&'static str> {
        [
            ("--head-weight", self.head_weight.is_some()),
            ("--head-bias", self.head_bias.is_some()),
            ("--input-size", self.input_size.is_some()),
            ("--interpolation", self.interpolation.is_some()),
            ("--mean", self.mean.is_some()),
            ("--std", self.std.is_some()),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
    }
}

/// The JSON of `oodkit_config()`.
#[derive(Debug, Default, Deserialize)]
struct FileConfig {
    input_size: Option<u32>,
    resize: Option<u32>,
    interpolation: Option<String>,
    mean: Option<[f32; 3]>,
    std: Option<[f32; 3]>,
    head_weight: Option<String>,
    head_bias: Option<String>,
}

/// A TorchScript network that follows the contract of the module doc.
pub struct TorchScript {
    path: PathBuf,
    name: String,
    module: CModule,
    head: ood_core::Head,
    spec: InputSpec,
    device: Device,
}

impl std::fmt::Debug for TorchScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchScript")
            .field("path", &self.path)
            .field("spec", &self.spec)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl TorchScript {
    /// Loads `path` onto `device` and checks the contract (see the module doc).
    pub fn load(path: &Path, opts: &TorchScriptOptions, device: Device) -> Result<Self> {
        let bad = |reason: String| Error::Weights {
            path: path.to_path_buf(),
            reason,
        };
        std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let mut module = CModule::load_on_device(path, device).map_err(|e| {
            bad(format!(
                "not a TorchScript file (save one with torch.jit.save; see \
                 scripts/export_torchscript.py): {}",
                first_line(&e.to_string())
            ))
        })?;
        module.f_set_eval()?;
        let file = read_config(&module).map_err(bad)?;

        let input_size = opts.input_size.or(file.input_size).ok_or_else(|| {
            bad(
                "no input size: the file has no oodkit_config() with input_size; give it \
                 (--input-size)"
                    .into(),
            )
        })?;
        if input_size == 0 {
            return Err(bad("input size 0".into()));
        }
        let mean = opts.mean.or(file.mean).ok_or_else(|| {
            bad(
                "no normalisation mean: the file has no oodkit_config() with mean; give it \
                 (--mean a,b,c)"
                    .into(),
            )
        })?;
        let std = opts.std.or(file.std).ok_or_else(|| {
            bad(
                "no normalisation std: the file has no oodkit_config() with std; give it \
                 (--std a,b,c)"
                    .into(),
            )
        })?;
        if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || mean.iter().any(|m| !m.is_finite()) {
            return Err(bad(format!(
                "std must be positive and finite, mean finite: mean {mean:?}, std {std:?}"
            )));
        }
        let interpolation = match (opts.interpolation, &file.interpolation) {
            (Some(i), _) => i,
            (None, None) => Interpolation::Bilinear,
            (None, Some(s)) => Interpolation::parse(s).ok_or_else(|| {
                bad(format!(
                    "oodkit_config() interpolation '{s}' is not supported (bilinear, bicubic)"
                ))
            })?,
        };
        // The file's resize belongs to the file's input size; another size gets the default rule.
        let resize = match file.resize {
            Some(r) if opts.input_size.is_none() || opts.input_size == file.input_size => r,
            _ => default_resize(input_size),
        };

        let weight_name = opts
            .head_weight
            .clone()
            .or(file.head_weight)
            .ok_or_else(|| {
                bad(
                    "no head: name its parameters (--head-weight NAME --head-bias NAME, e.g. \
                 fc.weight and fc.bias) or export with scripts/export_torchscript.py"
                        .into(),
                )
            })?;
        let bias_name = match &opts.head_weight {
            Some(_) => opts.head_bias.clone(),
            None => opts.head_bias.clone().or(file.head_bias),
        };
        let params = module.named_parameters()?;
        let (weight, bias) =
            head_tensors(&params, &weight_name, bias_name.as_deref()).map_err(bad)?;

        let spec = InputSpec {
            size: input_size,
            resize,
            interpolation,
            mean,
            std,
        };
        let net = TorchScript {
            path: path.to_path_buf(),
            name: model_name(path),
            head: head_from_tensors(&weight, &bias)?,
            module,
            spec,
            device,
        };
        net.check_probe(&weight_name, bias_name.as_deref())
            .map_err(bad)?;
        Ok(net)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the module and reads its `(features, logits)` output.
    fn run(&self, images: &Tensor) -> std::result::Result<(Tensor, Tensor), String> {
        let out = self
            .module
            .forward_is(&[IValue::Tensor(images.shallow_clone())])
            .map_err(|e| format!("forward failed: {}", first_line(&e.to_string())))?;
        features_and_logits(out)
    }

    /// Forward pass on a deterministic probe batch: output form, shapes, and the head check.
    fn check_probe(&self, weight: &str, bias: Option<&str>) -> std::result::Result<(), String> {
        let s = i64::from(self.spec.size);
        let x = (Tensor::arange(2 * 3 * s * s, (Kind::Float, self.device)).sin() * 1.5)
            .reshape([2, 3, s, s]);
        let (f, l) = tch::no_grad(|| self.run(&x))?;
        let (fs, ls) = (f.size(), l.size());
        let (c, d) = (self.head.num_classes() as i64, self.head.dim() as i64);
        if fs.len() != 2 || ls.len() != 2 || fs[0] != 2 || ls[0] != 2 {
            return Err(format!(
                "forward on a (2, 3, {s}, {s}) batch returned features {fs:?} and logits {ls:?}; \
                 expected (2, d) and (2, c)"
            ));
        }
        if fs[1] != d || ls[1] != c {
            return Err(format!(
                "the head {weight} is ({c}, {d}) but forward returned features (n, {}) and \
                 logits (n, {})",
                fs[1], ls[1]
            ));
        }
        let f = f.to_device(Device::Cpu).to_kind(Kind::Double);
        let l = l.to_device(Device::Cpu).to_kind(Kind::Double);
        let w = Tensor::from_slice(
            self.head
                .weight
                .as_slice()
                .expect("Head is standard layout"),
        )
        .reshape([c, d])
        .to_kind(Kind::Double);
        let b = Tensor::from_slice(self.head.bias.as_slice().expect("Head is standard layout"))
            .to_kind(Kind::Double);
        let recomputed = f.matmul(&w.tr()) + b;
        let diff = f64::try_from((recomputed - &l).abs().max()).unwrap_or(f64::NAN);
        let scale = f64::try_from(l.abs().max()).unwrap_or(f64::NAN).max(1.0);
        if diff.is_nan() || diff > HEAD_TOLERANCE * scale {
            return Err(format!(
                "the head {weight}{} does not reproduce the logits: max |features·Wᵀ+b − logits| \
                 = {diff:.3e} on a probe batch (logits up to {scale:.3e}, tolerance {:.0e} \
                 relative); forward must return the input and output of that linear layer",
                bias.map(|b| format!(" + {b}")).unwrap_or_default(),
                HEAD_TOLERANCE
            ));
        }
        Ok(())
    }
}

impl Network for TorchScript {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn forward_t(&self, images: &Tensor, _train: bool) -> Forward {
        let (features, logits) = self
            .run(images)
            .unwrap_or_else(|e| panic!("{}: {e}", self.path.display()));
        Forward { features, logits }
    }

    fn head(&self) -> Result<ood_core::Head> {
        Ok(self.head.clone())
    }

    fn input_spec(&self) -> InputSpec {
        self.spec
    }

    fn device(&self) -> Device {
        self.device
    }
}

/// `torchscript:<file stem>`, the stem reduced to `[A-Za-z0-9._-]` (the name goes into cache
/// file names).
fn model_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("torchscript-{stem}")
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// Calls `oodkit_config()` when the module has it.
fn read_config(module: &CModule) -> std::result::Result<FileConfig, String> {
    match module.method_is::<IValue>("oodkit_config", &[]) {
        Ok(IValue::String(s)) => serde_json::from_str(&s)
            .map_err(|e| format!("oodkit_config() is not the expected JSON object: {e}")),
        Ok(other) => Err(format!(
            "oodkit_config() returned {}, not a JSON string",
            describe(&other)
        )),
        Err(e) => {
            let msg = e.to_string();
            if msg.contains("oodkit_config") {
                Ok(FileConfig::default())
            } else {
                Err(format!("oodkit_config() failed: {}", first_line(&msg)))
            }
        }
    }
}

/// Finds the head's parameters by name and checks their shapes.
fn head_tensors(
    params: &[(String, Tensor)],
    weight: &str,
    bias: Option<&str>,
) -> std::result::Result<(Tensor, Option<Tensor>), String> {
    let find = |name: &str, what: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.shallow_clone())
            .ok_or_else(|| {
                let candidates: Vec<String> = params
                    .iter()
                    .filter(|(_, t)| t.dim() == 2)
                    .rev()
                    .take(8)
                    .map(|(n, t)| format!("{n} {:?}", t.size()))
                    .collect();
                format!(
                    "no parameter '{name}' ({what}); the last 2-D parameters are: {}",
                    if candidates.is_empty() {
                        "none".to_string()
                    } else {
                        candidates.join(", ")
                    }
                )
            })
    };
    let w = find(weight, "head weight")?;
    if w.dim() != 2 {
        return Err(format!(
            "head weight '{weight}' has shape {:?}; expected (classes, features)",
            w.size()
        ));
    }
    let b = match bias {
        Some(name) => {
            let b = find(name, "head bias")?;
            if b.size() != [w.size()[0]] {
                return Err(format!(
                    "head bias '{name}' has shape {:?}; the weight '{weight}' {:?} needs ({},)",
                    b.size(),
                    w.size(),
                    w.size()[0]
                ));
            }
            Some(b)
        }
        None => None,
    };
    Ok((w, b))
}

fn head_from_tensors(weight: &Tensor, bias: &Option<Tensor>) -> Result<ood_core::Head> {
    let w = weight
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let (c, d) = (w.size()[0] as usize, w.size()[1] as usize);
    let wv = Vec::<f32>::try_from(w.flatten(0, -1))?;
    let bv = match bias {
        Some(b) => Vec::<f32>::try_from(b.detach().to_device(Device::Cpu).to_kind(Kind::Float))?,
        None => vec![0.0; c],
    };
    let weight = ndarray::Array2::from_shape_vec((c, d), wv)
        .map_err(|e| Error::Config(format!("head weight shape: {e}")))?;
    Ok(ood_core::Head::new(weight, ndarray::Array1::from_vec(bv))?)
}

/// Reads the `(features, logits)` tuple or `{"features", "logits"}` dict of a forward pass.
fn features_and_logits(out: IValue) -> std::result::Result<(Tensor, Tensor), String> {
    let expected =
        "expected the tuple (features, logits) or the dict {\"features\", \"logits\"} of tensors";
    match out {
        IValue::Tuple(mut v) | IValue::GenericList(mut v) if v.len() == 2 => {
            let l = v.pop().expect("two elements");
            let f = v.pop().expect("two elements");
            match (f, l) {
                (IValue::Tensor(f), IValue::Tensor(l)) => Ok((f, l)),
                (f, l) => Err(format!(
                    "forward returned ({}, {}); {expected}",
                    describe(&f),
                    describe(&l)
                )),
            }
        }
        IValue::TensorList(mut v) if v.len() == 2 => {
            let l = v.pop().expect("two elements");
            let f = v.pop().expect("two elements");
            Ok((f, l))
        }
        IValue::GenericDict(entries) => {
            let mut features = None;
            let mut logits = None;
            let mut keys = Vec::new();
            for (k, v) in entries {
                let key = match &k {
                    IValue::String(s) => s.clone(),
                    other => describe(other),
                };
                match (key.as_str(), v) {
                    ("features", IValue::Tensor(t)) => features = Some(t),
                    ("logits", IValue::Tensor(t)) => logits = Some(t),
                    _ => {}
                }
                keys.push(key);
            }
            match (features, logits) {
                (Some(f), Some(l)) => Ok((f, l)),
                _ => Err(format!(
                    "forward returned a dict with keys {keys:?}; {expected}"
                )),
            }
        }
        other => Err(format!("forward returned {}; {expected}", describe(&other))),
    }
}

/// A short description of a TorchScript value for error messages.
fn describe(v: &IValue) -> String {
    match v {
        IValue::Tensor(t) => format!("a tensor {:?}", t.size()),
        IValue::Tuple(v) => format!("a tuple of {}", v.len()),
        IValue::GenericList(v) => format!("a list of {}", v.len()),
        IValue::TensorList(v) => format!("a list of {} tensors", v.len()),
        IValue::GenericDict(v) => format!("a dict of {}", v.len()),
        IValue::String(s) => format!("the string {s:?}"),
        IValue::None => "None".into(),
        IValue::Int(i) => format!("the int {i}"),
        IValue::Double(x) => format!("the float {x}"),
        IValue::Bool(b) => format!("the bool {b}"),
        _ => "a value of another type".into(),
    }
}
