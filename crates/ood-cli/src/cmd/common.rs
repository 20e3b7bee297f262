//! Small conversions shared by the subcommands: argument parsing helpers and file loading with
//! context.

use anyhow::{Context, Result, bail};
use ood_core::{Features, Head};
use std::path::Path;

/// Splits `key=value` strings.
pub fn parse_key_values(items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => bail!("expected KEY=VALUE, got '{s}'"),
        })
        .collect()
}

/// Loads a feature file into memory, with the path in the error.
pub fn load_features(path: &Path) -> Result<Features> {
    Features::load(path).with_context(|| format!("loading features {}", path.display()))
}

/// Loads a head file, with the path in the error.
pub fn load_head(path: &Path) -> Result<Head> {
    Head::load(path).with_context(|| format!("loading head {}", path.display()))
}

/// What [`guard_outputs`] holds until the command has written everything: the lock of the
/// primary output.
#[must_use = "the lock is released when this is dropped"]
pub struct OutputGuard {
    _lock: Option<ood_core::atomic_file::OutputLock>,
}

/// Before any work: refuses an output that is one of the inputs (same file after resolving
/// links, hard links included), then locks the first output so that a second process writing
/// the same output fails at once instead of mixing its files with ours. Arguments are
/// `(flag, path)` pairs so the error names them.
pub fn guard_outputs(inputs: &[(&str, &Path)], outputs: &[(&str, &Path)]) -> Result<OutputGuard> {
    ood_core::atomic_file::check_outputs_are_not_inputs(inputs, outputs)?;
    let lock = match outputs.first() {
        Some((_, p)) => Some(ood_core::atomic_file::OutputLock::acquire(p)?),
        None => None,
    };
    Ok(OutputGuard { _lock: lock })
}

/// `path` with `suffix` appended to its file name (`x.safetensors` → `x.safetensors.config.json`).
pub fn with_appended(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut p = std::path::PathBuf::from(path.as_os_str());
    p.as_mut_os_string().push(suffix);
    p
}

/// The file `--model`/`--weights` name: FILE of `torchscript:FILE.pt` (then `--weights` is
/// refused), else `--weights` (required). Returns it with the flag that named it.
pub fn model_file(
    model: &str,
    weights: Option<&Path>,
) -> Result<(std::path::PathBuf, &'static str)> {
    match (
        model.strip_prefix(ood_nn::models::torchscript::PREFIX),
        weights,
    ) {
        (Some(""), _) => bail!("--model torchscript: needs a file, e.g. torchscript:model.pt"),
        (Some(_), Some(w)) => bail!(
            "--weights {} is not used with --model {model}: the TorchScript file holds the weights",
            w.display()
        ),
        (Some(file), None) => Ok((file.into(), "--model")),
        (None, Some(w)) => Ok((w.to_path_buf(), "--weights")),
        (None, None) => bail!("--model {model} needs --weights FILE"),
    }
}

/// A network from `--model`, with the preprocessing a TorchScript file asks for.
pub struct LoadedModel {
    /// The network.
    pub net: Box<dyn ood_nn::network::Network>,
    /// TorchScript models: shorter side before the centre crop, and its filter.
    pub resize: Option<(u32, ood_nn::data::Interpolation)>,
}

/// Parses `a,b,c` into three finite numbers.
fn parse_triple(flag: &str, s: &str) -> Result<[f32; 3]> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("{flag} must be three numbers a,b,c, got '{s}'"))?;
    match <[f32; 3]>::try_from(v) {
        Ok(t) if t.iter().all(|x| x.is_finite()) => Ok(t),
        _ => bail!("{flag} must be three finite numbers a,b,c, got '{s}'"),
    }
}

/// Loads `--model` from `file` (see [`model_file`]); the TorchScript options are refused for the
/// built-in models.
pub fn load_model(
    model: &str,
    file: &Path,
    ts: &crate::args::TorchScriptArgs,
    device: tch::Device,
) -> Result<LoadedModel> {
    use ood_nn::models::torchscript::{PREFIX, TorchScript, TorchScriptOptions};
    if !model.starts_with(PREFIX) {
        let given = [
            ("--head-weight", ts.head_weight.is_some()),
            ("--head-bias", ts.head_bias.is_some()),
            ("--input-size", ts.input_size.is_some()),
            ("--mean", ts.mean.is_some()),
            ("--std", ts.std.is_some()),
            ("--interpolation", ts.interpolation.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            bail!("{flag} applies to --model torchscript:FILE.pt only, not to {model}");
        }
        let net = ood_nn::network::load_network(model, file, device)?;
        return Ok(LoadedModel { net, resize: None });
    }
    let opts = TorchScriptOptions {
        head_weight: ts.head_weight.clone(),
        head_bias: ts.head_bias.clone(),
        input_size: ts.input_size,
        interpolation: ts
            .interpolation
            .as_deref()
            .map(|s| ood_nn::data::Interpolation::parse(s).expect("clap checked the value")),
        mean: ts
            .mean
            .as_deref()
            .map(|s| parse_triple("--mean", s))
            .transpose()?,
        std: ts
            .std
            .as_deref()
            .map(|s| parse_triple("--std", s))
            .transpose()?,
    };
    let net = TorchScript::load(file, &opts, device)?;
    let resize = Some((net.resize(), net.interpolation()));
    Ok(LoadedModel {
        net: Box::new(net),
        resize,
    })
}
