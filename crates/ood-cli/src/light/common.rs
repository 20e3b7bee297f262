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
