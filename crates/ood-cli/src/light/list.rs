//! `ood list detectors`.

use crate::outln;
use anyhow::Result;
use ood_core::DetectorSpec;

/// Prints every detector grouped by family (logits, features, network, vision-language): its
/// parameters with defaults, its search grid size, what it reads, and where it comes from.
pub fn run() -> Result<()> {
    let all = DetectorSpec::all_defaults();
    for family in ["logits", "features", "network", "vision-language"] {
        outln!("{family}:")?;
        for d in all.iter().filter(|d| d.family() == family) {
            let params: Vec<String> = d.params().iter().map(|(k, v)| format!("{k}={v}")).collect();
            outln!(
                "  {:<14} {:<40} sweep: {:<3} needs: {:<32} {}",
                d.name(),
                if params.is_empty() {
                    "(no parameters)".to_string()
                } else {
                    params.join(" ")
                },
                d.sweep().len(),
                d.needs().names().join(", "),
                d.about()
            )?;
        }
    }
    Ok(())
}
