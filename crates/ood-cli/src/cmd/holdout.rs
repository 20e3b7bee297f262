//! `ood holdout`: MixOE's hold-out-class benchmark of a labelled dataset
//! ([`ood_nn::benchmarks::holdout`]).

use crate::args::HoldoutArgs;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use ood_cli::outln;
use ood_nn::benchmarks::holdout::{HoldoutOptions, write_holdout};
use ood_nn::data::DataSpec;

/// Runs `ood holdout` and prints what was written.
pub fn run(a: &HoldoutArgs) -> Result<()> {
    let opts = HoldoutOptions {
        data: DataSpec::parse(&a.data)?,
        test: a.test.as_deref().map(DataSpec::parse).transpose()?,
        val: a.val.as_deref().map(DataSpec::parse).transpose()?,
        holdout: a.holdout,
        classes: a.classes.clone(),
        test_fraction: a.test_fraction,
        val_fraction: a.val_fraction,
        seed: a.seed,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} images {elapsed_precise}",
    )?);
    let h = write_holdout(&opts, &a.out, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let counts: Vec<String> = h.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    outln!(
        "held out {} of {} classes: {}",
        h.held_out.len(),
        h.held_out.len() + h.held_in.len(),
        h.held_out.join(", ")
    )?;
    outln!("images: {}", counts.join(", "))?;
    outln!(
        "wrote {} (benchmark '{}'): ood bench {}/benchmark.toml --model ... --weights ...; \
         ood train --data imglist:{}/train.txt@{} ...",
        a.out.display(),
        h.benchmark.name,
        a.out.display(),
        a.out.display(),
        a.out.display()
    )?;
    Ok(())
}
