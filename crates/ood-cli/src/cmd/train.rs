//! `ood train`: read a labelled image set, build a network, run [`ood_nn::train::train`] with a
//! method's recipe, and export weights that `ood extract` / `ood bench` load.

use crate::args::TrainArgs;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ood_core::{atomic_file, hashing};
use ood_nn::Forward;
use ood_nn::data::{DataSpec, Preprocess};
use ood_nn::losses::{Method, mixoe};
use ood_nn::models::Arch;
use ood_nn::network::load_safetensors;
use ood_nn::train::{Augment, EpochLog, Optimizer, Precision, TrainConfig, TrainData, train};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor, nn};

/// Images of one set as 8-bit RGB `n × side × side × 3` and their labels.
pub struct Images {
    /// Pixels.
    pub pixels: Vec<u8>,
    /// Labels (`-1` when unknown).
    pub labels: Vec<i64>,
}

impl Images {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
}

/// Reads the first `limit` images of `spec` as `side × side` RGB: idx data (28x28) are zero
/// padded to `side`, other images get their shorter side resized to `side` (PIL bilinear) and a
/// centre crop, as `ood extract` does by default.
pub fn read_images(spec: &DataSpec, side: u32, limit: Option<usize>) -> Result<Images> {
    let pre = if matches!(spec, DataSpec::Idx { .. }) {
        Preprocess {
            resize: None,
            interpolation: Default::default(),
            crop: None,
            pad: side.saturating_sub(28) / 2,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    } else {
        Preprocess {
            resize: Some(side),
            interpolation: Default::default(),
            crop: Some(side),
            pad: 0,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for s in spec.samples()?.take(limit.unwrap_or(usize::MAX)) {
        let s = s?;
        let name = s.name.clone();
        let label = s.label;
        let img = pre.geometry(s.decode()?);
        if img.dimensions() != (side, side) {
            bail!(
                "{}: image {name} is {}x{} after preprocessing, expected {side}x{side}",
                spec.to_spec_string(),
                img.width(),
                img.height()
            );
        }
        pixels.extend_from_slice(img.as_raw());
        labels.push(label);
    }
    if labels.is_empty() {
        bail!("{}: no images", spec.to_spec_string());
    }
    Ok(Images { pixels, labels })
}

/// A seeded random subset of `n` images (all when there are fewer), in their original order.
fn subsample(set: Images, n: usize, side: usize, seed: u64) -> Images {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    if set.len() <= n {
        return set;
    }
    let mut idx: Vec<usize> = (0..set.len()).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    idx.truncate(n);
    idx.sort_unstable();
    let size = side * side * 3;
    Images {
        pixels: idx
            .iter()
            .flat_map(|&i| set.pixels[i * size..(i + 1) * size].iter().copied())
            .collect(),
        labels: idx.iter().map(|&i| set.labels[i]).collect(),
    }
}

/// A network's forward pass: images, train flag → features and logits.
type ForwardFn<'a> = dyn Fn(&Tensor, bool) -> Forward + 'a;

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
        load_safetensors(net.var_store_mut(), p).with_context(|| {
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

/// The method with its recipe's hyper-parameters, and the recipe's config.
fn recipe(a: &TrainArgs) -> Result<TrainConfig> {
    let mix = if a.mix == "cutmix" {
        mixoe::Mix::Cutmix
    } else {
        mixoe::Mix::Mixup
    };
    let base = TrainConfig::default();
    let contrastive = TrainConfig {
        epochs: 100,
        batch_size: 512,
        lr: 0.1,
        lr_min: 0.1 * 1e-3,
        warmup_epochs: 10,
        weight_decay: 1e-4,
        ..base.clone()
    };
    let mut c = match a.method.as_str() {
        "ce" => base,
        "oe" => TrainConfig {
            method: Method::OutlierExposure {
                weight: 0.5,
                outlier_ratio: 2.0,
            },
            epochs: 10,
            lr: 1e-3,
            ..base
        },
        "mixoe" => TrainConfig {
            method: Method::MixOe {
                alpha: 1.0,
                beta: 1.0,
                mix,
            },
            epochs: 10,
            batch_size: 32,
            lr: 1e-3,
            weight_decay: 1e-5,
            drop_last: true,
            ..base
        },
        "supcon" => TrainConfig {
            method: Method::supcon(),
            ..contrastive
        },
        "reweightood" => TrainConfig {
            method: Method::reweightood(),
            ..contrastive
        },
        "tagfog" => TrainConfig {
            method: Method::tagfog(),
            epochs: 200,
            lr: 0.05,
            lr_min: 0.0,
            nesterov: false,
            ..contrastive
        },
        other => bail!("unknown method '{other}'"),
    };
    if let Some(e) = a.epochs {
        c.epochs = e;
    }
    if let Some(b) = a.batch_size {
        c.batch_size = b;
    }
    if let Some(lr) = a.lr {
        c.lr = lr;
        if matches!(a.method.as_str(), "supcon" | "reweightood") {
            c.lr_min = lr * 1e-3;
        }
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
    if a.precision == "bf16" {
        c.precision = Precision::Bf16;
    }
    c.channels_last = a.channels_last;
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

/// Writes the network's weights (no `proj.*` / `probe.*`; the probe becomes the head of the
/// probe methods; TagFog's head keeps its first `k` rows) to `model.safetensors` and the head to
/// `head.safetensors`.
fn export(
    vs: &nn::VarStore,
    head_name: &str,
    method: &Method,
    k: i64,
    dir: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let mut named: Vec<(String, Tensor)> = Vec::new();
    let vars = vs.variables();
    for (name, t) in &vars {
        if name.starts_with("proj.") || name.starts_with("probe.") {
            continue;
        }
        let mut t = t.detach().to_device(Device::Cpu);
        if let Some(suffix) = name.strip_prefix(&format!("{head_name}.")) {
            if method.has_probe() {
                t = vars[&format!("probe.{suffix}")]
                    .detach()
                    .to_device(Device::Cpu);
            }
            if matches!(method, Method::TagFog(_)) {
                t = t.narrow(0, 0, k).contiguous();
            }
        }
        named.push((name.clone(), t));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let model = dir.join("model.safetensors");
    let tmp = atomic_file::temp_path(&model).with_extension("safetensors");
    Tensor::write_safetensors(&named, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &model).with_context(|| format!("writing {}", model.display()))?;
    let get = |suffix: &str| -> Result<Vec<f32>> {
        let key = format!("{head_name}.{suffix}");
        let t = &named
            .iter()
            .find(|(n, _)| *n == key)
            .with_context(|| format!("the network has no '{key}'"))?
            .1;
        Ok(Vec::<f32>::try_from(t.flatten(0, -1).to_kind(Kind::Float))?)
    };
    let w = get("weight")?;
    let b = get("bias")?;
    let c = b.len();
    let head = ood_core::Head::new(
        ndarray::Array2::from_shape_vec((c, w.len() / c), w)?,
        ndarray::Array1::from_vec(b),
    )?;
    let head_path = dir.join("head.safetensors");
    head.save(&head_path)?;
    Ok((model, head_path))
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
    let cfg = recipe(a)?;
    let data_spec = DataSpec::parse(&a.data)?;
    let outlier_spec = a.outliers.as_deref().map(DataSpec::parse).transpose()?;
    let data_files = data_spec.input_files();
    let outlier_files = outlier_spec
        .as_ref()
        .map(DataSpec::input_files)
        .unwrap_or_default();
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
    let _guard = crate::cmd::common::guard_outputs(&ins, &outs)?;
    let tagfog = matches!(cfg.method, Method::TagFog(_));
    if matches!(
        cfg.method,
        Method::OutlierExposure { .. } | Method::MixOe { .. }
    ) && outlier_spec.is_none()
    {
        bail!("--method {} needs --outliers SPEC", a.method);
    }
    if !tagfog && (a.anchors.is_some() || a.descriptions.is_some()) {
        bail!("--anchors / --descriptions are only used by --method tagfog");
    }
    let (anchors, anchor_info) = if tagfog {
        let (t, i) = anchors(a, device)?;
        (Some(t), i)
    } else {
        (None, serde_json::Value::Null)
    };

    let t_read = Instant::now();
    let side = spec.size;
    let mut train_set = read_images(&data_spec, side, a.limit)
        .with_context(|| format!("reading --data {}", a.data))?;
    if let Some(n) = a.sample {
        train_set = subsample(train_set, n, side as usize, a.seed ^ 0x5355_4253);
    }
    if let Some(bad) = train_set.labels.iter().find(|&&l| l < 0) {
        bail!(
            "--data {}: unlabelled images (label {bad}); training needs a labelled source such as \
             a folder-per-class tree",
            a.data
        );
    }
    let classes = data_spec.classes().unwrap_or_default();
    let k = (*train_set.labels.iter().max().expect("non-empty") + 1).max(classes.len() as i64);
    if k < 2 {
        bail!("--data {}: a single class; a classifier needs two", a.data);
    }
    if let Some(anc) = &anchors
        && anc.size()[0] != k
    {
        bail!(
            "{} text anchors for {k} classes: give one description per class, in label order",
            anc.size()[0]
        );
    }
    let mut jigsaw_source = serde_json::Value::Null;
    let outliers_u8: Option<Vec<u8>> = match (&outlier_spec, tagfog) {
        (Some(s), _) => {
            let mut o = read_images(s, side, a.limit)
                .with_context(|| format!("reading --outliers {}", s.to_spec_string()))?;
            if let Some(n) = a.sample {
                o = subsample(o, n, side as usize, a.seed ^ 0x4f55_5453);
            }
            Some(o.pixels)
        }
        (None, true) => {
            use rand::SeedableRng;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed ^ 0x6a69_6773_6177);
            jigsaw_source = json!({"grid": a.grid, "per_image": a.jigsaw_per_image,
                "seed": a.seed, "from": "the training images (ood_nn::jigsaw)"});
            Some(ood_nn::jigsaw::jigsaw_set(
                &train_set.pixels,
                side as usize,
                side as usize,
                3,
                a.grid,
                a.jigsaw_per_image,
                &mut rng,
            )?)
        }
        (None, false) => None,
    };
    let images = ood_nn::data::preprocess::normalized_tensor(
        &train_set.pixels,
        side as usize,
        spec.mean,
        spec.std,
    );
    let labels = Tensor::from_slice(&train_set.labels);
    let outliers = outliers_u8.as_ref().map(|o| {
        ood_nn::data::preprocess::normalized_tensor(o, side as usize, spec.mean, spec.std)
    });
    let read_secs = t_read.elapsed().as_secs_f64();

    let mut cfg = cfg;
    cfg.augment = match (a.no_augment, a.augment.as_str()) {
        (true, _) | (_, "none") => None,
        (_, "simclr") => Some(Augment::simclr(spec.mean, spec.std)),
        (_, "auto") if cfg.method.two_views() => Some(Augment::simclr(spec.mean, spec.std)),
        _ => Some(Augment::cifar(spec.mean, spec.std)),
    };
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("creating {}", a.out_dir.display()))?;
    if !a.resume && a.out_dir.join("state.json").exists() {
        bail!(
            "{} holds a training checkpoint: pass --resume to continue it, or choose another \
             --out-dir",
            a.out_dir.display()
        );
    }
    let n_rows = train_set.len()
        + if tagfog {
            outliers_u8
                .as_ref()
                .map_or(0, |o| o.len() / (3 * (side * side) as usize))
        } else {
            0
        };
    let steps = n_rows.div_ceil(cfg.batch_size) as u64;
    let bar = ProgressBar::new(steps * cfg.epochs as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    tch::manual_seed(a.seed as i64);
    let outputs = if tagfog { k + 1 } else { k };
    let t0 = Instant::now();
    let mut step_t = Instant::now();
    let mut first = true;
    let batch = cfg.batch_size;
    let (logs, files): (Vec<EpochLog>, (PathBuf, PathBuf)) =
        with_network(arch, outputs, device, a.init.as_deref(), &mut |vs, fwd| {
            let logs = train(
                vs,
                fwd,
                &TrainData {
                    images: &images,
                    labels: &labels,
                    outliers: outliers.as_ref(),
                    anchors: anchors.as_ref(),
                },
                &cfg,
                Some(&a.out_dir),
                a.resume,
                &mut |s| {
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
                },
            )?;
            let files = export(vs, head_name, &cfg.method, k, &a.out_dir)?;
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
    let config = json!({
        "command": "train",
        "tool_version": env!("CARGO_PKG_VERSION"),
        "method": a.method,
        "model": a.model,
        "classes": k,
        "class_names": classes,
        "network_outputs": outputs,
        "exported_head": if tagfog {
            format!("the first {k} of the {outputs} logits (the fake-outlier logit is dropped)")
        } else if cfg.method.has_probe() {
            "the online linear probe trained on detached features".to_string()
        } else {
            "the trained classifier".to_string()
        },
        "train_config": cfg,
        "input_size": side,
        "mean": spec.mean,
        "std": spec.std,
        "num_images": train_set.len(),
        "num_outliers": outliers_u8.as_ref().map(|o| o.len() / (3 * (side * side) as usize)),
        "limit": a.limit,
        "sample": a.sample,
        "jigsaw": jigsaw_source,
        "anchors": anchor_info,
        "inputs": inputs,
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
        "read_seconds": read_secs,
        "train_seconds": secs,
        "epochs": logs,
        "model_file": files.0.display().to_string(),
        "model_sha256": hashing::sha256_file(&files.0)?,
        "head_file": files.1.display().to_string(),
    });
    let text = serde_json::to_string_pretty(&config)? + "\n";
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
            files.0.display()
        );
    }
    Ok(())
}
