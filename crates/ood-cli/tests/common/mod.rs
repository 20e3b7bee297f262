//! Helpers shared by the `ood` binary's integration tests (each test file uses a subset).
#![allow(dead_code)]

pub mod layout;

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `ood` binary with `args`.
pub fn ood(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ood"))
        .args(args)
        .output()
        .expect("the ood binary runs")
}

/// Runs the `ood` binary with `args` in the working directory `cwd`.
pub fn ood_in(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ood"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the ood binary runs")
}

/// The run's standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that the run succeeded (showing its stderr otherwise) and returns it.
pub fn ok(o: Output) -> Output {
    assert!(o.status.success(), "ood failed: {}", stderr(&o));
    o
}

/// Asserts the error contract: exit code 2 and every needle in the message.
pub fn assert_fails(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "exit code 2 expected; stderr: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
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

/// The project's shared data folder (`$OOD_DATA_ROOT`, else `<workspace>/../shared`), or `None`
/// after [`skip`] when it is missing.
pub fn shared_root(test: &str) -> Option<std::path::PathBuf> {
    let root = std::env::var_os("OOD_DATA_ROOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared"))
        });
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
