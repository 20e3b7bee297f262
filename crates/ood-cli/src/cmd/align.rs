//! `ood align`: fit TagFog's projection head on frozen features against text anchors
//! ([`ood_nn::align`]), and the shared helper `ood bench --align auto` uses.

use crate::args::AlignArgs;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ood_cli::light::common::guard_outputs;
use ood_nn::align::AlignConfig;
use std::path::Path;

/// Fits and writes a projection ([`ood_nn::align::fit_and_save`]) with a progress bar, never over
/// an input; returns the fit's record.
pub fn fit_and_save(
    fit: &Path,
    anchors: &Path,
    out: &Path,
    cfg: &AlignConfig,
) -> Result<serde_json::Value> {
    let _guard = guard_outputs(
        &[("--fit", fit), ("--anchors", anchors)],
        &[
            ("--out", out),
            (
                "--out (its .config.json)",
                &out.with_extension("config.json"),
            ),
        ],
    )?;
    let bar = ProgressBar::new(cfg.epochs as u64);
    bar.set_style(ProgressStyle::with_template(
        "aligning {bar:30} epoch {pos}/{len} {elapsed_precise} {msg}",
    )?);
    let summary = ood_nn::align::fit_and_save(fit, anchors, out, cfg, &mut |_, loss| {
        bar.set_message(format!("L_CI {loss:.4}"));
        bar.inc(1);
    })
    .with_context(|| format!("aligning {} to {}", fit.display(), anchors.display()))?;
    bar.finish_and_clear();
    Ok(summary)
}

/// Runs `ood align`.
pub fn run(a: &AlignArgs) -> Result<serde_json::Value> {
    let cfg = AlignConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        temperature: a.temperature,
        seed: a.seed,
    };
    let s = fit_and_save(&a.fit, &a.anchors, &a.out, &cfg)?;
    let losses = s["epoch_losses"].as_array().expect("written above");
    eprintln!(
        "ood: L_CI {:.4} -> {:.4} over {} epochs; train rows nearest to their class anchor: {:.2}%; wrote {}",
        losses[0].as_f64().unwrap_or(f64::NAN),
        losses[losses.len() - 1].as_f64().unwrap_or(f64::NAN),
        losses.len(),
        100.0 * s["train_anchor_accuracy"].as_f64().unwrap_or(f64::NAN),
        a.out.display()
    );
    Ok(s)
}
