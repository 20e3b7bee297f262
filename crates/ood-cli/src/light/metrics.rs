//! `ood metrics --id ID --ood OOD [--convention C] [--json]`.

use crate::outln;
use anyhow::{Context, Result, bail};
use ood_core::metrics::{Convention, evaluate};
use ood_core::scores::read_scores;
use std::path::Path;

/// Reads one score file; an empty file is an error naming it.
fn load(path: &Path, which: &str) -> Result<Vec<f32>> {
    // ood-core's file errors already carry the path.
    let scores = read_scores(path).with_context(|| format!("reading {which} scores"))?;
    if scores.is_empty() {
        bail!("{which} score file {} holds no scores", path.display());
    }
    Ok(scores)
}

/// Prints the four metrics of `id` vs `ood` scores as a table or as one JSON object.
pub fn run(id: &Path, ood: &Path, convention: Convention, json: bool) -> Result<()> {
    let id_scores = load(id, "id")?;
    let ood_scores = load(ood, "ood")?;
    let m = evaluate(&id_scores, &ood_scores, convention).with_context(|| {
        format!(
            "computing metrics of {} (id) vs {} (ood)",
            id.display(),
            ood.display()
        )
    })?;
    if json {
        outln!("{}", serde_json::to_string(&m)?)?;
        return Ok(());
    }
    outln!("id:   {} ({} scores)", id.display(), id_scores.len())?;
    outln!("ood:  {} ({} scores)", ood.display(), ood_scores.len())?;
    outln!("convention: {} ({})", m.convention, m.convention.about())?;
    outln!()?;
    outln!("{:<10} {:>9} {:>8}", "metric", "fraction", "%")?;
    for (name, v) in [
        ("AUROC", m.auroc),
        ("FPR@95", m.fpr95),
        ("AUPR-IN", m.aupr_in),
        ("AUPR-OUT", m.aupr_out),
    ] {
        outln!("{name:<10} {v:>9.6} {:>8.2}", 100.0 * v)?;
    }
    Ok(())
}
