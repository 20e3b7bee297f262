//! `ood train`: the arguments become a method's recipe ([`ood_nn::losses::recipe`]) and the
//! library's inputs; [`ood_nn::train::train`] runs with a progress bar, [`ood_nn::train::export`]
//! writes the weights that `ood extract` / `ood bench` load, and the run's record is written
//! beside them (`train.config.json`).

use crate::args::TrainArgs;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ood_core::{atomic_file, hashing};
use ood_nn::data::DataSpec;
use ood_nn::losses::{self, ForwardFn, Method, Outliers, mixoe};
use ood_nn::models::Arch;
use ood_nn::network::load_init;
use ood_nn::train::{
    Augment, EpochLog, Exported, Images, Optimizer, TrainConfig, TrainData, export, read_images,
    train,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Tensor, nn};

/// Builds `model` with `outputs` classes through the registry (fresh weights with PyTorch's
/// initialisation from libtorch's seeded RNG, or `init`) and calls `run` with its variables and
/// forward pass.
fn with_network<T>(
    arch: Arch,
    outputs: i64,
    device: Device,
    init: Option<&Path>,
    run: &mut dyn FnMut(&nn::VarStore, &ForwardFn<'_>) -> Result<T>,
) -> Result<T> {
    use ood_nn::Network;
    let mut net = arch.build(outputs, device)?;
    if let Some(p) = init {
        load_init(net.var_store_mut(), p, arch.head_name()).with_context(|| {
            format!(
                "--init {}: the weights do not fit {}",
                p.display(),
                arch.name()
            )
        })?;
    }
    let net = &net;
    run(net.var_store(), &|x, t| net.forward_t(x, t))
}

/// The method's recipe with the arguments' overrides; `mean` / `std` are the network's input
/// normalisation (for the augmentation's padding value).
fn config(a: &TrainArgs, mean: [f32; 3], std: [f32; 3]) -> Result<TrainConfig> {
    let mut c = losses::recipe(&a.method)?;
    if let Method::MixOe { mix, .. } = &mut c.method {
        *mix = if a.mix == "cutmix" {
            mixoe::Mix::Cutmix
        } else {
            mixoe::Mix::Mixup
        };
    }
    if let Some(e) = a.epochs {
        c.epochs = e;
    }
    if let Some(b) = a.batch_size {
        c.batch_size = b;
    }
    if let Some(lr) = a.lr {
        c.set_lr(lr);
    }
    if let Some(w) = a.weight_decay {
        c.weight_decay = w;
    }
    if let Some(w) = a.warmup_epochs {
        c.warmup_epochs = w;
    }
    c.warmup_epochs = c.warmup_epochs.min(c.epochs.saturating_sub(1));
    if a.optimizer == "adamw" {
        c.optimizer = Optimizer::adamw();
    }
    c.seed = a.seed;
    c.precision = a.precision.into();
    c.channels_last = a.channels_last;
    c.augment = match (a.no_augment, a.augment.as_str()) {
        (true, _) | (_, "none") => None,
        (_, "simclr") => Some(Augment::simclr(mean, std)),
        (_, "cifar") => Some(Augment::cifar(mean, std)),
        _ => Some(c.method.augment(mean, std)),
    };
    Ok(c)
}

/// TagFog's anchors `(K, A)` from `--anchors` or `--descriptions`, with a description of their
/// source for the config.
fn anchors(a: &TrainArgs, device: Device) -> Result<(Tensor, serde_json::Value)> {
    if let Some(p) = &a.anchors {
        let m = super::align::load_anchors(p)?;
        let (k, d) = m.dim();
        let v: Vec<f32> = m.iter().copied().collect();
        return Ok((
            Tensor::from_slice(&v).view([k as i64, d as i64]),
            json!({"anchors": p.display().to_string(), "sha256": hashing::sha256_file(p)?}),
        ));
    }
    let Some(desc) = &a.descriptions else {
        bail!(
            "--method tagfog needs text anchors: --descriptions FILE.txt (or cifar10 / \
             fashion_mnist for the built-in ones) or --anchors TEXT.safetensors"
        );
    };
    let path = PathBuf::from(desc);
    let (text, source) = if path.is_file() {
        let t = std::fs::read_to_string(&path)
            .with_context(|| format!("reading descriptions {}", path.display()))?;
        (t, path.display().to_string())
    } else if let Some(t) = ood_nn::text::builtin_descriptions(desc) {
        (t.to_string(), format!("built-in {desc}"))
    } else {
        bail!("--descriptions {desc}: no such file (built-in names: cifar10, fashion_mnist)");
    };
    let sentences = ood_nn::text::parse_descriptions(&text);
    if sentences.is_empty() {
        bail!("{source}: no descriptions");
    }
    let dir = match &a.encoder {
        Some(d) => d.clone(),
        None => PathBuf::from(std::env::var_os("OOD_MINILM_DIR").context(
            "--descriptions needs a sentence encoder: --encoder DIR or OOD_MINILM_DIR \
             (`. scripts/env` sets it)",
        )?),
    };
    let enc = ood_nn::text::SentenceEncoder::load(&dir, device)
        .with_context(|| format!("loading sentence encoder {}", dir.display()))?;
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let emb = enc.encode(&refs, 64)?;
    let (k, d) = emb.dim();
    let v: Vec<f32> = emb.iter().copied().collect();
    let text_sha = hashing::sha256_bytes(text.as_bytes());
    Ok((
        Tensor::from_slice(&v).view([k as i64, d as i64]),
        json!({
            "descriptions": source,
            "sha256": text_sha,
            "sentences": sentences,
            "encoder": dir.display().to_string(),
            "encoder_fingerprint": enc.fingerprint()?,
        }),
    ))
}

/// What `ood train` writes into `--out-dir` (the first one's lock guards the whole run).
const OUTPUT_FILES: [&str; 5] = [
    "model.safetensors",
    "head.safetensors",
    "train.config.json",
    "last.safetensors",
    "state.json",
];

/// Runs `ood train`.
pub fn run(a: &TrainArgs) -> Result<()> {
    if let Some(t) = a.threads {
        if t < 1 {
            bail!("--threads must be at least 1, got {t}");
        }
        tch::set_num_threads(t);
    }
    if a.limit == Some(0) || a.sample == Some(0) {
        bail!("--limit and --sample must be at least 1");
    }
    let device = ood_nn::device::parse_device(&a.device)?;
    let arch = Arch::parse(&a.model)?;
    let (spec, head_name) = (arch.input_spec(), arch.head_name());
    let cfg = config(a, spec.mean, spec.std)?;
    let data_spec = DataSpec::parse(&a.data)?;
    let outlier_spec = a.outliers.as_deref().map(DataSpec::parse).transpose()?;
    let _guard = guard_files(a, &data_spec, outlier_spec.as_ref())?;
    let needs = cfg.method.needs();
    if needs.outliers == Outliers::PerStep && outlier_spec.is_none() {
        bail!("--method {} needs --outliers SPEC", a.method);
    }
    if !needs.anchors && (a.anchors.is_some() || a.descriptions.is_some()) {
        bail!("--anchors / --descriptions are only used by --method tagfog");
    }
    let (anchors, anchor_info) = if needs.anchors {
        let (t, i) = anchors(a, device)?;
        (Some(t), i)
    } else {
        (None, serde_json::Value::Null)
    };

    let t_read = Instant::now();
    let side = spec.size;
    let n_anchors = anchors.as_ref().map(|t| t.size()[0]);
    let sets = read_sets(
        a,
        &data_spec,
        outlier_spec.as_ref(),
        needs.outliers,
        side,
        n_anchors,
    )?;
    let to_tensor = |pixels: &[u8]| {
        ood_nn::data::preprocess::normalized_tensor(pixels, side as usize, spec.mean, spec.std)
    };
    let images = to_tensor(&sets.train.pixels);
    let labels = Tensor::from_slice(&sets.train.labels);
    let outliers = sets.outliers.as_ref().map(|o| to_tensor(&o.pixels));
    let read_secs = t_read.elapsed().as_secs_f64();

    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("creating {}", a.out_dir.display()))?;
    if !a.resume && a.out_dir.join("state.json").exists() {
        bail!(
            "{} holds a training checkpoint: pass --resume to continue it, or choose another \
             --out-dir",
            a.out_dir.display()
        );
    }
    let n_outliers = sets.outliers.as_ref().map(Images::len);
    let rows = sets.train.len()
        + if cfg.method.outliers_as_class() {
            n_outliers.unwrap_or(0)
        } else {
            0
        };
    let bar = progress_bar(rows.div_ceil(cfg.batch_size) as u64 * cfg.epochs as u64);
    tch::manual_seed(a.seed as i64);
    let outputs = cfg.method.network_outputs(sets.k);
    let t0 = Instant::now();
    let mut step_t = Instant::now();
    let mut first = true;
    let data = TrainData {
        images: &images,
        labels: &labels,
        outliers: outliers.as_ref(),
        anchors: anchors.as_ref(),
    };
    let (logs, files): (Vec<EpochLog>, Exported) =
        with_network(arch, outputs, device, a.init.as_deref(), &mut |vs, fwd| {
            let logs = train(vs, fwd, &data, &cfg, Some(&a.out_dir), a.resume, &mut |s| {
                if first {
                    bar.set_position(((s.epoch - 1) * s.steps + s.step - 1) as u64);
                    first = false;
                }
                let ips = cfg.batch_size as f64 / step_t.elapsed().as_secs_f64().max(1e-9);
                step_t = Instant::now();
                bar.inc(1);
                bar.set_message(format!(
                    "epoch {} loss {:.4} lr {:.2e} {ips:.0} img/s",
                    s.epoch, s.loss, s.lr
                ));
            })?;
            let files = export(vs, head_name, &cfg.method, sets.k, &a.out_dir)?;
            Ok((logs, files))
        })?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();

    let mut inputs =
        vec![json!({"data": data_spec.to_spec_string(), "fingerprint": data_spec.fingerprint()?})];
    if let Some(s) = &outlier_spec {
        inputs.push(json!({"outliers": s.to_spec_string(), "fingerprint": s.fingerprint()?}));
    }
    if let Some(p) = &a.init {
        inputs.push(json!({"init": p.display().to_string(), "sha256": hashing::sha256_file(p)?}));
    }
    let record = json!({
        "command": "train",
        "tool_version": env!("CARGO_PKG_VERSION"),
        "method": a.method,
        "model": a.model,
        "classes": sets.k,
        "class_names": sets.class_names,
        "network_outputs": outputs,
        "exported_head": cfg.method.exported_head(sets.k),
        "train_config": cfg,
        "input_size": side,
        "mean": spec.mean,
        "std": spec.std,
        "num_images": sets.train.len(),
        "num_outliers": n_outliers,
        "limit": a.limit,
        "sample": a.sample,
        "jigsaw": sets.jigsaw,
        "anchors": anchor_info,
        "inputs": inputs,
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
        "read_seconds": read_secs,
        "train_seconds": secs,
        "epochs": logs,
        "model_file": files.model.display().to_string(),
        "model_sha256": hashing::sha256_file(&files.model)?,
        "head_file": files.head.display().to_string(),
    });
    let text = serde_json::to_string_pretty(&record)? + "\n";
    atomic_file::write_bytes_atomic(&a.out_dir.join("train.config.json"), text.as_bytes())?;
    if let Some(l) = logs.last() {
        eprintln!(
            "trained {} ({}) for {} epochs in {secs:.1} s: last epoch loss {:.4}, train accuracy \
             {:.4}, {:.0} img/s -> {}",
            a.model,
            a.method,
            logs.len(),
            l.loss,
            l.accuracy,
            l.images_per_second,
            files.model.display()
        );
    }
    Ok(())
}

/// Refuses outputs that would overwrite an input, and locks `--out-dir` for the run.
fn guard_files(
    a: &TrainArgs,
    data: &DataSpec,
    outliers: Option<&DataSpec>,
) -> Result<ood_cli::light::common::OutputGuard> {
    let data_files = data.input_files();
    let outlier_files = outliers.map(DataSpec::input_files).unwrap_or_default();
    let mut ins: Vec<(&str, &Path)> = data_files.iter().map(|p| ("--data", p.as_path())).collect();
    ins.extend(outlier_files.iter().map(|p| ("--outliers", p.as_path())));
    for (flag, p) in [("--anchors", &a.anchors), ("--init", &a.init)] {
        if let Some(p) = p {
            ins.push((flag, p.as_path()));
        }
    }
    if let Some(d) = a
        .descriptions
        .as_deref()
        .map(Path::new)
        .filter(|p| p.is_file())
    {
        ins.push(("--descriptions", d));
    }
    let outs: Vec<PathBuf> = OUTPUT_FILES.iter().map(|f| a.out_dir.join(f)).collect();
    let outs: Vec<(&str, &Path)> = outs.iter().map(|p| ("--out-dir", p.as_path())).collect();
    ood_cli::light::common::guard_outputs(&ins, &outs)
}

/// The image sets of a run, read into memory.
struct Sets {
    /// The labelled training images (`--limit`, `--sample`).
    train: Images,
    /// Class names of the training source, where it defines them.
    class_names: Vec<String>,
    /// Number of ID classes.
    k: i64,
    /// The outliers: `--outliers`, or TagFog's jigsaws of the training images.
    outliers: Option<Images>,
    /// How the jigsaws were made (`null` when none were).
    jigsaw: serde_json::Value,
}

/// Reads `--data` and `--outliers` as `side × side` images, or makes the jigsaws a method that
/// trains its outliers as class K needs from the training images. With `n_anchors` text anchors
/// there must be one per class.
fn read_sets(
    a: &TrainArgs,
    data: &DataSpec,
    outliers: Option<&DataSpec>,
    use_of_outliers: Outliers,
    side: u32,
    n_anchors: Option<i64>,
) -> Result<Sets> {
    let mut train_set =
        read_images(data, side, a.limit).with_context(|| format!("reading --data {}", a.data))?;
    if let Some(n) = a.sample {
        train_set = train_set.subsample(n, side as usize, a.seed ^ 0x5355_4253);
    }
    if let Some(bad) = train_set.labels.iter().find(|&&l| l < 0) {
        bail!(
            "--data {}: unlabelled images (label {bad}); training needs a labelled source such as \
             a folder-per-class tree",
            a.data
        );
    }
    let class_names = data.classes().unwrap_or_default();
    let k = (*train_set.labels.iter().max().expect("non-empty") + 1).max(class_names.len() as i64);
    if k < 2 {
        bail!("--data {}: a single class; a classifier needs two", a.data);
    }
    if let Some(n) = n_anchors
        && n != k
    {
        bail!("{n} text anchors for {k} classes: give one description per class, in label order");
    }
    let mut jigsaw = serde_json::Value::Null;
    let outliers = match (outliers, use_of_outliers) {
        (Some(s), _) => {
            let mut o = read_images(s, side, a.limit)
                .with_context(|| format!("reading --outliers {}", s.to_spec_string()))?;
            if let Some(n) = a.sample {
                o = o.subsample(n, side as usize, a.seed ^ 0x4f55_5453);
            }
            Some(o)
        }
        (None, Outliers::AsClass) => {
            jigsaw = json!({"grid": a.grid, "per_image": a.jigsaw_per_image,
                "seed": a.seed, "from": "the training images (ood_nn::jigsaw)"});
            let pixels = losses::tagfog::jigsaw_outliers(
                &train_set.pixels,
                side as usize,
                a.grid,
                a.jigsaw_per_image,
                a.seed,
            )?;
            let n = pixels.len() / (3 * (side * side) as usize);
            Some(Images {
                pixels,
                labels: vec![-1; n],
            })
        }
        (None, _) => None,
    };
    Ok(Sets {
        train: train_set,
        class_names,
        k,
        outliers,
        jigsaw,
    })
}

/// A progress bar over `steps` training steps.
fn progress_bar(steps: u64) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
