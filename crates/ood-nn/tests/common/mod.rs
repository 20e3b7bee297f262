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
        skip(&format!(
            "SKIPPED {test}: shared data folder {} not found (set OOD_DATA_ROOT)",
            root.display()
        ));
        None
    }
}

/// Reports a test that cannot run here for want of data or tools. With `OOD_REQUIRE_DATA=1` (set
/// by `.ci/run`) that is a failure instead, so a suite that silently checks nothing cannot pass.
pub fn skip(reason: &str) {
    if std::env::var_os("OOD_REQUIRE_DATA").is_some_and(|v| v == "1") {
        panic!("OOD_REQUIRE_DATA=1 but this test cannot run: {reason}");
    }
    eprintln!("{reason}");
}
