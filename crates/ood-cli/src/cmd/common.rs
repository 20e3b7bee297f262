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
