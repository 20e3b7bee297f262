//! `ood list detectors`.

use anyhow::Result;
use ood_core::DetectorSpec;

/// Prints every detector, its parameters with defaults, and its search grid size.
pub fn run() -> Result<()> {
    for d in DetectorSpec::all_defaults() {
        let params: Vec<String> = d.params().iter().map(|(k, v)| format!("{k}={v}")).collect();
        let grid = d.sweep().len();
        println!(
            "{:<14} {:<40} sweep: {:<3} {}",
            d.name(),
            if params.is_empty() {
                "(no parameters)".to_string()
            } else {
                params.join(" ")
            },
            grid,
            d.about()
        );
    }
    Ok(())
}
