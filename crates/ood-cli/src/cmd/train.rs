//! `ood train`: the arguments become a [`TrainRun`] (the method's recipe with the overrides, the
//! inputs, the output folder), run with a progress bar; the library writes the weights that
//! `ood extract` / `ood bench` load and the run's record beside them (`train.config.json`).

use crate::args::TrainArgs;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use ood_nn::data::DataSpec;
use ood_nn::train::{AnchorSource, AugmentChoice, OUTPUT_FILES, Overrides, Progress, TrainRun};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Runs `ood train`.
pub fn run(a: &TrainArgs) -> Result<()> {
    if let Some(t) = a.threads {
        ood_nn::device::set_threads(t);
    }
    let anchors = match (&a.anchors, &a.descriptions) {
        (Some(p), _) => Some(AnchorSource::File(p.clone())),
        (None, Some(d)) => Some(AnchorSource::Descriptions {
            source: d.clone(),
            encoder: a
                .encoder
                .clone()
                .or_else(|| std::env::var_os("OOD_MINILM_DIR").map(PathBuf::from)),
        }),
        (None, None) => None,
    };
    let run = TrainRun {
        method: a.method.clone(),
        model: a.model.clone(),
        data: DataSpec::parse(&a.data)?,
        outliers: a.outliers.as_deref().map(DataSpec::parse).transpose()?,
        anchors,
        init: a.init.clone(),
        overrides: Overrides {
            epochs: a.epochs,
            batch_size: a.batch_size,
            lr: a.lr,
            weight_decay: a.weight_decay,
            warmup_epochs: a.warmup_epochs,
            adamw: a.optimizer == "adamw",
            cutmix: a.mix == "cutmix",
            augment: if a.no_augment {
                AugmentChoice::None
            } else {
                AugmentChoice::parse(&a.augment)?
            },
            seed: a.seed,
            precision: a.precision.into(),
            channels_last: a.channels_last,
        },
        jigsaw: (a.grid, a.jigsaw_per_image),
        limit: a.limit,
        sample: a.sample,
        device: ood_nn::device::parse_device(&a.device)?,
        out_dir: a.out_dir.clone(),
        resume: a.resume,
    };
    let _guard = guard_files(&run, a.descriptions.as_deref())?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut step_t, mut first, mut batch) = (Instant::now(), true, 1);
    let report = run.run(&mut |p| match p {
        Progress::Start { steps, batch_size } => {
            bar.set_length(steps);
            batch = batch_size;
        }
        Progress::Step(s) => {
            if first {
                bar.set_position(((s.epoch - 1) * s.steps + s.step - 1) as u64);
                first = false;
            }
            let ips = batch as f64 / step_t.elapsed().as_secs_f64().max(1e-9);
            step_t = Instant::now();
            bar.inc(1);
            bar.set_message(format!(
                "epoch {} loss {:.4} lr {:.2e} {ips:.0} img/s",
                s.epoch, s.loss, s.lr
            ));
        }
    })?;
    bar.finish_and_clear();
    if let Some(l) = report.epochs.last() {
        eprintln!(
            "trained {} ({}) for {} epochs in {:.1} s: last epoch loss {:.4}, train accuracy \
             {:.4}, {:.0} img/s -> {}",
            a.model,
            a.method,
            report.epochs.len(),
            report.seconds,
            l.loss,
            l.accuracy,
            l.images_per_second,
            report.files.model.display()
        );
    }
    Ok(())
}

/// Refuses outputs that would overwrite an input, and locks the output folder for the run.
fn guard_files(
    r: &TrainRun,
    descriptions: Option<&str>,
) -> Result<ood_cli::light::common::OutputGuard> {
    let data_files = r.data.input_files();
    let outlier_files = r.outliers.iter().flat_map(DataSpec::input_files);
    let mut ins: Vec<(&str, PathBuf)> = data_files.into_iter().map(|p| ("--data", p)).collect();
    ins.extend(outlier_files.map(|p| ("--outliers", p)));
    if let Some(AnchorSource::File(p)) = &r.anchors {
        ins.push(("--anchors", p.clone()));
    }
    if let Some(p) = &r.init {
        ins.push(("--init", p.clone()));
    }
    if let Some(d) = descriptions.map(Path::new).filter(|p| p.is_file()) {
        ins.push(("--descriptions", d.to_path_buf()));
    }
    let ins: Vec<(&str, &Path)> = ins.iter().map(|(f, p)| (*f, p.as_path())).collect();
    let outs: Vec<PathBuf> = OUTPUT_FILES.iter().map(|f| r.out_dir.join(f)).collect();
    let outs: Vec<(&str, &Path)> = outs.iter().map(|p| ("--out-dir", p.as_path())).collect();
    ood_cli::light::common::guard_outputs(&ins, &outs)
}
