//! `ood score`: fit one detector and write the scores of one feature file.

use crate::light::args::ScoreArgs;
use crate::light::common::{guard_outputs, load_features, load_head, parse_key_values};
use anyhow::{Context, Result};
use ood_core::detectors::NegLabel;
use ood_core::{DetectorSpec, FeatureFile, FitData, SideInputs};

/// Runs `ood score`.
pub fn run(a: ScoreArgs) -> Result<()> {
    let mut ins = vec![
        ("--fit", a.fit.as_path()),
        ("--head", a.head.as_path()),
        ("--input", a.input.as_path()),
    ];
    if let Some(n) = &a.negatives {
        ins.push(("--negatives", n.as_path()));
    }
    let _guard = guard_outputs(&ins, &[("--out", a.out.as_path())])?;
    let params = parse_key_values(&a.params)?;
    let spec = DetectorSpec::from_name(&a.detector, &params)?;
    let negatives = match &a.negatives {
        Some(p) => Some(
            NegLabel::load_negatives(p)
                .with_context(|| format!("loading negative labels {}", p.display()))?,
        ),
        None => None,
    };
    let head = load_head(&a.head)?;
    let fit = FeatureFile::open(&a.fit)
        .with_context(|| format!("opening fit features {}", a.fit.display()))?;
    let input = load_features(&a.input)?;
    let scorer = spec
        .as_detector()
        .fit_with(
            &FitData::File(&fit),
            &head,
            &SideInputs {
                negatives: negatives.as_deref(),
                ..SideInputs::default()
            },
        )
        .with_context(|| format!("fitting {} on {}", spec.name(), a.fit.display()))?;
    let scores = scorer
        .score(&input)
        .with_context(|| format!("scoring {} with {}", a.input.display(), spec.name()))?;
    ood_core::scores::write_npy(&a.out, scores.as_slice().expect("fresh array"))?;
    eprintln!(
        "wrote {} scores ({}) to {}",
        scores.len(),
        spec.name(),
        a.out.display()
    );
    Ok(())
}
