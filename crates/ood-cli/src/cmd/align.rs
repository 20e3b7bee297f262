//! `ood align`: fit TagFog's projection head on frozen features against text anchors
//! ([`ood_nn::align`]), and the shared helper `ood bench --align auto` uses.

use crate::args::AlignArgs;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ood_cli::light::common::guard_outputs;
use ood_core::{Features, atomic_file, hashing};
use ood_nn::align::{AlignConfig, fit_projection};
use serde_json::json;
use std::path::Path;

/// Fits and writes a projection (`out` + `out.config.json`, atomically); returns the fit's
/// summary JSON.
pub fn fit_and_save(
    fit: &Path,
    anchors: &Path,
    out: &Path,
    cfg: &AlignConfig,
) -> Result<serde_json::Value> {
    let cfg_path = out.with_extension("config.json");
    let _guard = guard_outputs(
        &[("--fit", fit), ("--anchors", anchors)],
        &[("--out", out), ("--out (its .config.json)", &cfg_path)],
    )?;
    let features =
        Features::load(fit).with_context(|| format!("loading fit features {}", fit.display()))?;
    let Some(labels) = features.labels.clone() else {
        bail!(
            "{}: the fit features have no labels (alignment needs the class of every row)",
            fit.display()
        );
    };
    let t = ood_nn::align::load_anchors(anchors)?;
    let bar = ProgressBar::new(cfg.epochs as u64);
    bar.set_style(
        ProgressStyle::with_template("aligning {bar:30} epoch {pos}/{len} {elapsed_precise} {msg}")
            .expect("valid template"),
    );
    let fitted = fit_projection(
        features.embeddings.view(),
        &labels,
        t.view(),
        cfg,
        &mut |_, loss| {
            bar.set_message(format!("L_CI {loss:.4}"));
            bar.inc(1);
        },
    )
    .with_context(|| format!("aligning {} to {}", fit.display(), anchors.display()))?;
    bar.finish_and_clear();
    let summary = json!({
        "tool": "oodkit",
        "version": env!("CARGO_PKG_VERSION"),
        "command": "align",
        "config": cfg,
        "fit": {"path": fit.display().to_string(), "sha256": hashing::sha256_file(fit)?, "rows": features.len(), "dim": features.dim()},
        "anchors": {"path": anchors.display().to_string(), "sha256": hashing::sha256_file(anchors)?, "classes": t.nrows(), "dim": t.ncols()},
        "epoch_losses": fitted.epoch_losses,
        "train_anchor_accuracy": fitted.train_anchor_accuracy,
    });
    let mut proj = fitted.projection;
    proj.metadata.insert("config".into(), summary.to_string());
    proj.save(out)
        .with_context(|| format!("writing {}", out.display()))?;
    atomic_file::write_bytes_atomic(
        &cfg_path,
        (serde_json::to_string_pretty(&summary).expect("JSON values serialise") + "\n").as_bytes(),
    )?;
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
