//! `ood eval`: evaluate detectors on cached features and write the table, CSV, JSON, config and
//! HTML report. `ood example` (and later `ood bench`) reuse [`execute`].

use crate::light::args::{DetectorArgs, EvalArgs, RunArgs};
use crate::light::common::{guard_outputs, parse_key_values};
use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ood_core::benchmark::Group;
use ood_core::evaluation::{self, Event};
use ood_core::metrics::Convention;
use ood_core::{DetectorSpec, report};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use ood_core::evaluation::FileInputs as Inputs;

/// Resolved run options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Detectors with their parameters.
    pub detectors: Vec<DetectorSpec>,
    /// Metric convention.
    pub convention: Convention,
    /// ID-val and OOD-val files for the parameter search.
    pub sweep: Option<(PathBuf, PathBuf)>,
    /// OOD-val features handed to the detectors that fit on them (GROOD's noise prototype,
    /// `SideInputs::ood_val`), with or without a search: `--val-ood`, or the benchmark's OOD-val
    /// set in `ood bench`. Without it those detectors' fits fail and they are reported skipped.
    pub ood_val: Option<PathBuf>,
    /// Output folder.
    pub out_dir: PathBuf,
    /// Extra JSON output path.
    pub json: Option<PathBuf>,
    /// A second set of inputs in a text encoder's embedding space (image embeddings + ID label
    /// embeddings as the head) scored with vision-language detectors (NegLabel, MCM); their rows
    /// join the main result.
    pub vision_language: Option<VisionLanguage>,
}

/// Inputs and detectors of the vision-language part of a run (see [`Options::vision_language`]).
#[derive(Debug, Clone)]
pub struct VisionLanguage {
    /// Embedding files; `head` holds the ID label text embeddings.
    pub inputs: Inputs,
    /// Detectors to run on them (NegLabel with its negatives, MCM).
    pub detectors: Vec<DetectorSpec>,
}

/// Resolves `--detectors`, `--param`, `--convention` and the sweep options.
pub fn resolve(run: &RunArgs) -> Result<Options> {
    let (detectors, convention) = resolve_detectors(&run.select, run.negatives.is_some())?;
    let sweep = match (&run.val_id, &run.val_ood, run.sweep) {
        (Some(i), Some(o), true) => Some((i.clone(), o.clone())),
        _ => None,
    };
    Ok(Options {
        detectors,
        convention,
        sweep,
        ood_val: run.val_ood.clone(),
        out_dir: run.out_dir.clone(),
        json: run.json.clone(),
        vision_language: None,
    })
}

/// Resolves `--detectors`, `--param` and `--convention`; `all` leaves `neg_label` out when there
/// are no negatives.
pub fn resolve_detectors(
    a: &DetectorArgs,
    has_negatives: bool,
) -> Result<(Vec<DetectorSpec>, Convention)> {
    let detectors = parse_detectors(&a.detectors, &a.params, has_negatives)?;
    Ok((detectors, a.convention.map(Into::into).unwrap_or_default()))
}

/// Parses a detector list (`all` or comma-separated names) with `DETECTOR.KEY=VALUE` overrides.
/// `all` leaves `neg_label` out when there are no negatives (they are a side input of its fit,
/// `--negatives`).
pub fn parse_detectors(
    list: &str,
    params: &[String],
    has_negatives: bool,
) -> Result<Vec<DetectorSpec>> {
    let mut d = parse_detector_names(list, params)?;
    if !has_negatives && list.trim() == "all" {
        d.retain(|d| !matches!(d, DetectorSpec::NegLabel(_)));
    }
    Ok(d)
}

fn parse_detector_names(list: &str, params: &[String]) -> Result<Vec<DetectorSpec>> {
    let names: Vec<String> = if list.trim() == "all" {
        DetectorSpec::names()
            .into_iter()
            .map(String::from)
            .collect()
    } else {
        list.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    if names.is_empty() {
        bail!("--detectors is empty");
    }
    let mut per: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (k, v) in parse_key_values(params)? {
        let Some((det, key)) = k.split_once('.') else {
            bail!("--param expects DETECTOR.KEY=VALUE (e.g. knn.k=100), got '{k}={v}'");
        };
        if !names.iter().any(|n| n == det) {
            bail!(
                "--param {k}: detector '{det}' is not in --detectors ({})",
                names.join(",")
            );
        }
        per.entry(det.to_string())
            .or_default()
            .push((key.to_string(), v));
    }
    names
        .iter()
        .map(|n| {
            DetectorSpec::from_name(n, per.get(n).map(Vec::as_slice).unwrap_or(&[]))
                .map_err(Into::into)
        })
        .collect()
}

fn parse_set(s: &str, group: Option<Group>) -> Result<(String, Option<Group>, PathBuf)> {
    match s.split_once('=') {
        Some((n, p)) if !n.is_empty() && !p.is_empty() => {
            Ok((n.to_string(), group, PathBuf::from(p)))
        }
        _ => bail!("expected NAME=FILE for an OOD set, got '{s}'"),
    }
}

/// Runs `ood eval`.
pub fn run(a: EvalArgs) -> Result<()> {
    let mut ood = Vec::new();
    for s in &a.near {
        ood.push(parse_set(s, Some(Group::Near))?);
    }
    for s in &a.far {
        ood.push(parse_set(s, Some(Group::Far))?);
    }
    for s in &a.ood {
        ood.push(parse_set(s, None)?);
    }
    if ood.is_empty() {
        bail!("no OOD sets: give at least one --near, --far or --ood NAME=FILE");
    }
    let mut names: Vec<&str> = ood.iter().map(|(n, _, _)| n.as_str()).collect();
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        bail!("OOD set name '{}' is used twice", w[0]);
    }
    let inputs = Inputs {
        fit: a.fit,
        fit_val: a.fit_val,
        head: a.head,
        id: a.id,
        ood,
        negatives: a.run.negatives.clone(),
    };
    let opts = resolve(&a.run)?;
    let mut ins = inputs.files();
    for (flag, p) in [("--val-id", &a.run.val_id), ("--val-ood", &a.run.val_ood)] {
        if let Some(p) = p {
            ins.push((flag.to_string(), p.clone()));
        }
    }
    let _guard = guard_outputs(&named(&ins), &named(&output_files(&opts)))?;
    let search = ood_core::detectors::knn::installed_search()
        .map_or_else(|| "built-in exact (CPU)".to_string(), |s| s.describe());
    execute(
        "oodkit evaluation",
        "eval",
        &inputs,
        &opts,
        json!({ "device": a.device, "knn_search": search }),
    )
}

/// The files a run writes (`--out-dir`'s four files and `--json`), each with its flag.
pub fn output_files(opts: &Options) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = evaluation::OUT_DIR_FILES
        .iter()
        .map(|f| ("--out-dir".to_string(), opts.out_dir.join(f)))
        .collect();
    if let Some(j) = &opts.json {
        v.push(("--json".to_string(), j.clone()));
    }
    v
}

/// `(flag, path)` pairs as the borrowed form [`guard_outputs`] takes.
pub fn named(v: &[(String, PathBuf)]) -> Vec<(&str, &Path)> {
    v.iter().map(|(f, p)| (f.as_str(), p.as_path())).collect()
}

/// Loads everything, runs the parameter search (when asked) and the benchmark, prints the table
/// and writes the artifacts ([`ood_core::evaluation`]). Nothing is written unless the whole run
/// succeeds.
pub fn execute(
    title: &str,
    command: &str,
    inputs: &Inputs,
    opts: &Options,
    extra_config: Value,
) -> Result<()> {
    // Every caller has checked already; this keeps `execute` safe on its own.
    let mut ins = inputs.files();
    if let Some((vi, vo)) = &opts.sweep {
        ins.push(("--val-id".into(), vi.clone()));
        ins.push(("--val-ood".into(), vo.clone()));
    }
    if let Some(vo) = &opts.ood_val {
        ins.push(("--val-ood".into(), vo.clone()));
    }
    ood_core::atomic_file::check_outputs_are_not_inputs(&named(&ins), &named(&output_files(opts)))?;
    let plan = evaluation::Plan {
        detectors: opts.detectors.clone(),
        convention: opts.convention,
        sweep: opts.sweep.clone(),
        ood_val: opts.ood_val.clone(),
        vision_language: opts
            .vision_language
            .as_ref()
            .map(|v| (v.inputs.clone(), v.detectors.clone())),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed_precise} {msg}")
            .expect("valid template"),
    );
    let (result, config) =
        evaluation::evaluate(inputs, &plan, command, extra_config, &mut |e| match e {
            Event::Chosen(d) => bar.suspend(|| {
                eprintln!(
                    "ood: {} search chose {}",
                    d.name(),
                    Value::Object(d.params())
                )
            }),
            Event::Warning(w) => bar.suspend(|| eprintln!("ood: warning: {w}")),
            Event::Start(steps) => bar.set_length(steps),
            Event::Step(m) => {
                bar.set_message(m.to_string());
                bar.inc(1);
            }
            Event::Aligned(m) => bar.suspend(|| eprintln!("ood: aligned embeddings: {m}")),
        })?;
    bar.finish_and_clear();

    // The files are written even when nobody reads the table any more (`ood eval ... | head`).
    let printed = crate::outln!("{}", report::text_table(&result).trim_end_matches('\n'));
    let dir = &opts.out_dir;
    evaluation::write_artifacts(dir, opts.json.as_deref(), title, &result, &config)?;
    printed?;
    eprintln!(
        "wrote {}/{{results.csv,results.json,config.json,report.html}}",
        dir.display()
    );
    Ok(())
}
