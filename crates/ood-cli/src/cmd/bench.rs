//! `ood bench NAME|FILE.toml`: a benchmark manifest ([`ood_nn::benchmarks`]: the built-ins, e.g.
//! `cifar10-jpeg` on the data of `../shared`, or the user's own) over `--data-root`. Every set is
//! checked, then extracted once into the content-addressed cache and reused; then every detector
//! runs through `ood eval`'s runner.

use crate::args::BenchArgs;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ood_cli::light::common::guard_outputs;
use ood_cli::light::eval::{self, Inputs, Options, VisionLanguage};
use ood_cli::outln;
use ood_core::DetectorSpec;
use ood_nn::benchmarks::{self, Benchmark, Event, Role};
use ood_nn::network::{file_sha256, load_model, model_file};
use serde_json::json;
use std::path::Path;
use std::path::PathBuf;

/// The default data root: `$OOD_DATA_ROOT`, else `../shared` next to the working directory.
fn default_data_root() -> PathBuf {
    std::env::var_os("OOD_DATA_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared"))
}

/// `ood bench --list`: every built-in with its description and layout.
fn list() -> Result<()> {
    for b in Benchmark::builtins()? {
        let alias: Vec<&str> = benchmarks::ALIASES
            .iter()
            .filter(|(_, n)| *n == b.name)
            .map(|(a, _)| *a)
            .collect();
        outln!(
            "{}{} ({} sets, {} convention)\n  {}\n  layout: {}\n",
            b.name,
            if alias.is_empty() {
                String::new()
            } else {
                format!(" (alias: {})", alias.join(", "))
            },
            b.sets.len(),
            b.convention,
            b.description.trim(),
            b.layout.trim()
        )?;
    }
    Ok(())
}

/// Runs `ood bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    if a.list {
        return list();
    }
    let Some(name) = a.benchmark.as_deref() else {
        bail!("give a benchmark NAME or FILE.toml (ood bench --list shows the built-ins)");
    };
    let bench = Benchmark::load(name)?;
    if let Some(t) = a.threads {
        ood_nn::device::set_threads(t);
    }
    let mut opts = eval::resolve(&a.run)?;
    if a.run.select.convention.is_none() {
        opts.convention = bench.convention.parse()?;
    }
    let (weights, weights_flag) = model_file(&a.model, a.weights.as_deref())?;
    let mut ins = vec![(weights_flag.to_string(), weights.clone())];
    if let Some(n) = &a.run.negatives {
        ins.push(("--negatives".into(), n.clone()));
    }
    if let Some(p) = a.align.as_deref().filter(|p| *p != "auto") {
        ins.push(("--align".into(), PathBuf::from(p)));
    }
    if let Some(p) = &a.text_head {
        ins.push(("--text-head".into(), p.clone()));
    }
    let _guard = guard_outputs(&eval::named(&ins), &eval::named(&eval::output_files(&opts)))?;
    let root = a
        .data_root
        .clone()
        .or_else(|| bench.resolved_root.clone())
        .unwrap_or_else(default_data_root);
    // Every file is checked before the network is loaded.
    let checked = benchmarks::check_files(&bench, &root)?;

    let device = ood_nn::device::parse_device(&a.device)?;
    if device.is_cuda() {
        // The KNN detector searches on the same GPU (libtorch, exact f32).
        ood_nn::knn::install(device, None);
    }
    let model_opts = ood_nn::network::ModelOptions {
        torchscript: a.torchscript.options(),
        class_text: a.text_head.clone(),
    };
    let net = load_model(&a.model, a.weights.as_deref(), &model_opts, device)?;
    // The ID sets' image-list labels are the network's classes: checked before any extraction.
    benchmarks::check_labels(&checked, net.head()?.num_classes())?;
    let weights_sha = file_sha256(&weights)?;
    let input = net.input_spec();
    if ood_nn::models::Arch::parse(&a.model).is_ok_and(|arch| arch.input_spec() != input) {
        eprintln!(
            "{}: input {} px, mean {:?}, std {:?}, as recorded in {}",
            net.name(),
            input.size,
            input.mean,
            input.std,
            weights.display()
        );
    }
    let cache = a.cache_dir.clone();
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos} images {elapsed_precise}")
            .expect("valid template"),
    );
    let probes = benchmarks::probe_plan(
        &opts.detectors,
        a.run.sweep,
        bench.one(Role::FitVal).is_some(),
    );
    let sets = benchmarks::extract(
        &checked,
        net.as_ref(),
        &weights_sha,
        &cache,
        &benchmarks::ExtractPlan {
            batch_size: a.batch_size,
            full_spectrum: a.full_spectrum,
            probes: &probes,
        },
        &mut |e| match e {
            Event::Start(s) => {
                bar.reset();
                bar.set_message(format!("extracting {}", s.name));
            }
            Event::Images(n) => bar.set_position(n as u64),
            // `suspend` + eprintln, not `bar.println`: the latter drops its line when stderr is
            // not a terminal (logs, CI), and warnings must reach the user.
            Event::Done(s, p, reused) => bar.suspend(|| {
                eprintln!(
                    "{}: {} ({})",
                    s.name,
                    p.display(),
                    if reused { "cached" } else { "extracted" }
                )
            }),
            Event::Warning(w) => bar.suspend(|| eprintln!("ood: warning: {w}")),
        },
    )?;
    bar.finish_and_clear();
    let head_path = cache.join(format!(
        "head-{}-{}.safetensors",
        net.name(),
        &weights_sha[..16]
    ));
    net.head()?.save(&head_path)?;
    let negatives = if a.align.is_some() {
        None
    } else {
        a.run.negatives.clone()
    };
    let (inputs, val) = benchmarks::file_inputs(&sets, &head_path, &cache, negatives)?;
    // The benchmark's OOD-val set is GROOD's noise-prototype data, searched or not.
    if opts.ood_val.is_none() {
        opts.ood_val = val.as_ref().map(|(_, o)| o.clone());
    }
    if a.run.sweep && opts.sweep.is_none() {
        opts.sweep = val;
        if opts.sweep.is_none() {
            bail!(
                "--sweep: benchmark {} has no val_id/val_ood pair; give --val-id and --val-ood",
                bench.name
            );
        }
    }
    if let Some(align) = &a.align {
        opts.vision_language = Some(aligned_inputs(align, &a, &cache, &inputs, &mut opts)?);
    }
    eval::execute(
        &format!(
            "oodkit bench {}: {} ({})",
            bench.name,
            net.name(),
            weights.display()
        ),
        &format!("bench {}", bench.name),
        &inputs,
        &opts,
        json!({
            "benchmark": bench,
            "full_spectrum": a.full_spectrum,
            "model": net.name(),
            "weights": weights.display().to_string(),
            "weights_sha256": weights_sha,
            "input": {"size": input.size, "mean": input.mean, "std": input.std},
            "data_root": root.display().to_string(),
        }),
    )
}

/// `--align`: projects every cached feature file into the text space of the `--negatives` file
/// (its `weight` = ID label embeddings) and moves NegLabel/MCM to those embeddings.
fn aligned_inputs(
    align: &str,
    a: &BenchArgs,
    cache: &Path,
    inputs: &Inputs,
    opts: &mut Options,
) -> Result<VisionLanguage> {
    let Some(neg) = a.run.negatives.clone() else {
        bail!(
            "--align needs --negatives NEG.safetensors (from `ood neglabel mine`: `weight` holds the ID label embeddings, `negatives` the negative labels)"
        );
    };
    let neg_sha = file_sha256(&neg)?;
    let proj_path = if align == "auto" {
        let cfg = ood_nn::align::AlignConfig::default();
        let fit_sha = file_sha256(&inputs.fit)?;
        let key = ood_core::hashing::sha256_bytes(
            format!("{fit_sha} {neg_sha} {}", serde_json::to_string(&cfg)?).as_bytes(),
        );
        let p = cache.join(format!("align-{}.safetensors", &key[..16]));
        if p.exists() {
            eprintln!("projection: {} (cached)", p.display());
        } else {
            crate::cmd::align::fit_and_save(&inputs.fit, &neg, &p, &cfg)?;
            eprintln!("projection: {} (fitted)", p.display());
        }
        p
    } else {
        PathBuf::from(align)
    };
    let vl_inputs = ood_nn::align::project_inputs(inputs, &proj_path, &neg, cache)
        .with_context(|| format!("projecting the features with {}", proj_path.display()))?;
    let is_vl = |d: &DetectorSpec| matches!(d, DetectorSpec::NegLabel(_) | DetectorSpec::Mcm(_));
    let detectors: Vec<DetectorSpec> = opts
        .detectors
        .iter()
        .filter(|d| is_vl(d))
        .cloned()
        .collect();
    if detectors.is_empty() {
        bail!("--align given but --detectors has neither neg_label nor mcm");
    }
    opts.detectors.retain(|d| !is_vl(d));
    if opts.detectors.is_empty() {
        bail!(
            "--align: no detector left for the classifier features (give more than neg_label,mcm)"
        );
    }
    Ok(VisionLanguage {
        inputs: vl_inputs,
        detectors,
    })
}
