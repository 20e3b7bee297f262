//! `ood score` without the CLI: fit one registry detector on a feature file (streamed, as the CLI
//! does) and write the scores of another as `.npy`. The Python package's tests compare
//! `oodkit.Detector(...).fit(...).score(...)` against this (or against the `ood` binary when it
//! is built), so both go through the same library path.
//!
//! ```text
//! cargo run -p ood-core --example score_file -- NAME FIT HEAD INPUT OUT [--negatives FILE] [key=value ...]
//! ```

use ood_core::detectors::NegLabel;
use ood_core::{DetectorSpec, FeatureFile, Features, FitData, Head, SideInputs};
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: score_file NAME FIT HEAD INPUT OUT [--negatives FILE] [key=value ...]";
    if a.len() < 5 {
        return Err(usage.into());
    }
    let (mut params, mut negatives) = (Vec::new(), None);
    let mut rest = a[5..].iter();
    while let Some(x) = rest.next() {
        if x == "--negatives" {
            negatives = Some(rest.next().ok_or(usage)?.clone());
        } else {
            let (k, v) = x.split_once('=').ok_or(usage)?;
            params.push((k.to_string(), v.to_string()));
        }
    }
    let spec = DetectorSpec::from_name(&a[0], &params)?;
    let negatives = negatives.map(NegLabel::load_negatives).transpose()?;
    let head = Head::load(&a[2])?;
    let fit = FeatureFile::open(&a[1])?;
    let input = Features::load(&a[3])?;
    let scores = spec
        .as_detector()
        .fit_with(
            &FitData::File(&fit),
            &head,
            &SideInputs {
                negatives: negatives.as_deref(),
                ..SideInputs::default()
            },
        )?
        .score(&input)?;
    ood_core::scores::write_npy(Path::new(&a[4]), scores.as_slice().expect("fresh array"))?;
    Ok(())
}
