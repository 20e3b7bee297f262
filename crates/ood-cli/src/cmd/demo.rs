//! `ood demo`: the embedded default. Assembles the built-in Fashion-MNIST hold-out benchmark (or
//! the user's folders), trains a small ResNet on the CPU with [`ood_nn::demo::run`], then scores
//! every detector through `ood eval`'s [`eval::execute`] (table, CSV, JSON, config, HTML report).

use crate::args::DemoArgs;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ood_cli::light::eval::{self, Inputs, Options};
use ood_cli::outln;
use ood_core::benchmark::Group;
use ood_nn::data::DataSpec;
use ood_nn::demo::{self, DemoData, Event, RunOptions, Sizes};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

fn parse_sets(args: &DemoArgs) -> Result<Vec<(String, Option<Group>, DataSpec)>> {
    let mut out = Vec::new();
    let groups = [
        (&args.near, Some(Group::Near)),
        (&args.far, Some(Group::Far)),
        (&args.ood, None),
    ];
    for (list, group) in groups {
        for s in list {
            let Some((name, spec)) = s
                .split_once('=')
                .filter(|(n, p)| !n.is_empty() && !p.is_empty())
            else {
                bail!("expected NAME=SPEC for an OOD set (e.g. noise=folder:my/noise), got '{s}'");
            };
            if out.iter().any(|(n, _, _): &(String, _, _)| n == name) {
                bail!("OOD set name '{name}' is used twice");
            }
            let spec = DataSpec::parse(spec).with_context(|| format!("OOD set '{name}'"))?;
            out.push((name.to_string(), group, spec));
        }
    }
    Ok(out)
}

fn assemble(a: &DemoArgs, sizes: Sizes) -> Result<DemoData> {
    match (&a.train, &a.test) {
        (Some(train), Some(test)) => {
            let sets = parse_sets(a)?;
            if sets.is_empty() {
                bail!(
                    "with --train/--test, give at least one OOD set (--near, --far or --ood NAME=SPEC)"
                );
            }
            if a.side < 8 {
                bail!("--side {} is too small (at least 8 pixels)", a.side);
            }
            let train = DataSpec::parse(train).context("--train")?;
            let test = DataSpec::parse(test).context("--test")?;
            Ok(demo::custom_data(&train, &test, &sets, a.side)?)
        }
        _ => {
            if !(a.near.is_empty() && a.far.is_empty() && a.ood.is_empty()) {
                bail!(
                    "--near/--far/--ood replace the built-in sets only together with --train and --test"
                );
            }
            Ok(demo::builtin_data(
                Path::new(demo::FMNIST_DIR),
                &demo::demo_data_dir(),
                sizes,
                a.seed,
            )?)
        }
    }
}

/// `ood demo --export-data DIR`: writes the built-in benchmark's sets as files
/// ([`demo::export_data`]) and exits.
fn export(a: &DemoArgs, dir: &Path) -> Result<()> {
    // Before reading any data: an existing non-empty folder is never written into.
    ood_core::atomic_file::ensure_empty_dir(dir)?;
    let sizes = if a.quick { Sizes::QUICK } else { Sizes::FULL };
    let data = demo::builtin_data(
        Path::new(demo::FMNIST_DIR),
        &demo::demo_data_dir(),
        sizes,
        a.seed,
    )?;
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(
        "writing {bar:30} {pos}/{len} images {elapsed_precise}",
    )?);
    let manifest = demo::export_data(&data, sizes, a.seed, dir, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let d = dir.display();
    outln!(
        "wrote {d}: {}",
        manifest
            .sets
            .iter()
            .map(|s| format!("{} {}", s.name, s.expect.unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    let how = if manifest.name == demo::BENCHMARK {
        format!("ood bench {} --data-root {d}", demo::BENCHMARK)
    } else {
        format!(
            "ood bench {d}/benchmark.toml (benchmark '{}': not the built-in's full sizes and \
             seed 0)",
            manifest.name
        )
    };
    outln!("run: {how} --model ... --weights ...")?;
    Ok(())
}

/// Runs `ood demo`.
pub fn run(a: DemoArgs) -> Result<()> {
    let t_all = Instant::now();
    if let Some(dir) = &a.export_data {
        return export(&a, dir);
    }
    if let Some(t) = a.threads {
        if t < 1 {
            bail!("--threads must be at least 1");
        }
        ood_nn::device::set_threads(t);
    }
    if a.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if a.depth < 8 || !(a.depth - 2).is_multiple_of(6) {
        bail!(
            "--depth {} is not an akamaster ResNet depth (6n+2: 8, 14, 20, 32, ...)",
            a.depth
        );
    }
    // Resolve the detector list before the minutes of training, so that a typo fails at once.
    let (mut detectors, convention) = eval::resolve_detectors(&a.run.select, false)?;
    if !a.with_network && a.run.select.detectors.trim() == "all" {
        // The demo stays quick: the network detectors' probes cost most of an extraction.
        detectors.retain(|d| d.family() != "network");
    }

    // Your own data's files must survive `--json` (the only output whose name is free); the
    // output folder is locked for the run.
    let mut own_files = Vec::new();
    for spec in a.train.iter().chain(&a.test) {
        own_files.extend(DataSpec::parse(spec)?.input_files());
    }
    for (_, _, spec) in parse_sets(&a)? {
        own_files.extend(spec.input_files());
    }
    let ins: Vec<(&str, &Path)> = own_files
        .iter()
        .map(|p| ("your data", p.as_path()))
        .collect();
    let mut outs = vec![("--out-dir", a.out_dir.as_path())];
    if let Some(j) = &a.run.json {
        outs.push(("--json", j.as_path()));
    }
    let _guard = ood_cli::light::common::guard_outputs(&ins, &outs)?;

    let sizes = if a.quick { Sizes::QUICK } else { Sizes::FULL };
    let data = assemble(&a, sizes)?;
    eprintln!(
        "ood demo: {} training images of {} classes ({}), {} ID test images, OOD sets: {}",
        data.train.len(),
        data.classes.len(),
        data.classes.join(", "),
        data.test.len(),
        data.ood
            .iter()
            .map(|s| format!(
                "{} ({}, {})",
                s.name,
                s.group.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
                s.len()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Feature files are written as the run goes; if it fails later (extraction of a later set,
    // or evaluation), the features folder it created is removed again: no partial output.
    let features = a.out_dir.join("features");
    let fresh = !features.exists();
    let out_fresh = !a.out_dir.exists();
    let result = (|| -> Result<()> {
        let mut opts = RunOptions::new(a.epochs, a.seed);
        opts.depth = a.depth;
        // The network detectors' probes are computed as `ood bench` does (the user's path).
        opts.probes = ood_core::DetectorSpec::probes_of(&detectors, false);
        opts.fit_probes = ood_core::DetectorSpec::fit_probes_of(&detectors, false);
        let steps_per_epoch = data.train.len().div_ceil(opts.train.batch_size);
        let bar = ProgressBar::new((steps_per_epoch * a.epochs) as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} {bar:30} {pos}/{len} steps {elapsed_precise} eta {eta} {msg}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(format!("training ResNet-{}", a.depth));
        let mut extracting = String::new();
        let t_train = Instant::now();
        let out = demo::run(&data, &opts, &features, &mut |e: &Event<'_>| match e {
            Event::Train(s) => {
                bar.set_message(format!(
                    "epoch {}/{} loss {:.4} lr {:.4}",
                    s.epoch, a.epochs, s.loss, s.lr
                ));
                bar.inc(1);
            }
            Event::Extract { name, done, total } => {
                if extracting != *name {
                    if extracting.is_empty() {
                        bar.finish_and_clear();
                    }
                    extracting = name.to_string();
                }
                if done == total {
                    eprintln!("extracted {name}: {total} images");
                }
            }
        })?;
        bar.finish_and_clear();
        let train_extract_s = t_train.elapsed().as_secs_f64();
        for l in &out.logs {
            eprintln!(
                "epoch {:>2}: loss {:.4}  train accuracy {:.2}%  {:.1} s  {:.0} img/s",
                l.epoch,
                l.loss,
                100.0 * l.accuracy,
                l.seconds,
                l.images_per_second
            );
        }

        let inputs = Inputs {
            fit: out.fit.clone(),
            fit_val: None,
            head: out.head.clone(),
            id: out.id_test.clone(),
            ood: out.ood.clone(),
            negatives: None,
        };
        let run_opts = Options {
            detectors,
            convention,
            sweep: None,
            ood_val: None,
            out_dir: a.out_dir.join("results"),
            json: a.run.json.clone(),
            vision_language: None,
        };
        let custom = a.train.is_some();
        let extra = json!({
            "benchmark": if custom { "custom" } else { "fashion-mnist 6/4 hold-out (built-in)" },
            "seed": a.seed,
            "quick": a.quick,
            "sizes": if custom { serde_json::Value::Null } else { json!(sizes) },
            "classes": data.classes,
            "held_out_classes": if custom { json!(null) } else {
                json!(demo::HELD_OUT.iter().map(|&c| demo::FMNIST_CLASSES[c as usize]).collect::<Vec<_>>())
            },
            "sets": std::iter::once(&data.train).chain(std::iter::once(&data.test)).chain(&data.ood)
                .map(|s| json!({"name": s.name, "group": s.group, "images": s.len(), "side": s.side, "source": s.source}))
                .collect::<Vec<_>>(),
            "data_inputs": data.inputs,
            "model": {"architecture": format!("akamaster resnet{}", opts.depth), "weights": out.weights.display().to_string(),
                       "normalization": {"mean": out.normalization.0, "std": out.normalization.1}},
            "training": {"config": opts.train, "epochs": out.logs, "seconds": out.train_seconds},
            "threads": tch::get_num_threads(),
        });
        let title = if custom {
            "oodkit demo: your data"
        } else {
            "oodkit demo: Fashion-MNIST 6-class hold-out benchmark"
        };
        eval::execute(title, "demo", &inputs, &run_opts, extra)?;
        eprintln!(
            "ood demo: training {:.1} s, training + extraction {:.1} s, total {:.1} s",
            out.train_seconds,
            train_extract_s,
            t_all.elapsed().as_secs_f64()
        );
        Ok(())
    })();
    if result.is_err() && fresh {
        let _ = std::fs::remove_dir_all(&features);
        if out_fresh {
            // Only if nothing else was written there.
            let _ = std::fs::remove_dir(&a.out_dir);
        }
    }
    result
}
