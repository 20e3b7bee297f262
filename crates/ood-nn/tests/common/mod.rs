//! Shared helpers of the integration tests: where the real data lives.

#![allow(dead_code)]

use std::path::PathBuf;

/// `$OOD_DATA_ROOT`, else `<workspace>/../shared`; `None` (with a printed message) when the
/// folder does not exist, so that tests needing real data skip.
pub fn shared_root(test: &str) -> Option<PathBuf> {
    let root = std::env::var_os("OOD_DATA_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    if root.join("DATA.md").is_file() {
        Some(root)
    } else {
        eprintln!(
            "SKIPPED {test}: shared data folder {} not found (set OOD_DATA_ROOT)",
            root.display()
        );
        None
    }
}
