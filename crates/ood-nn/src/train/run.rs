//! One whole training run as `ood train` does it: the method's recipe with the run's overrides
//! ([`resolve_config`]), the image sets read into memory (with TagFog's jigsaws or text anchors
//! where the method needs them), the network built through the registry (or started from
//! `init`), [`train`] with its per-epoch checkpoints, [`export`] of the weights and head, and the
//! run's record `train.config.json` beside them, written atomically.

use super::{
    Augment, EpochLog, Exported, Images, Optimizer, Step, TrainConfig, TrainData, export,
    read_images, train,
};
use crate::Network;
use crate::data::DataSpec;
use crate::error::{Error, Result};
use crate::losses::{self, Method, Outliers, mixoe};
use crate::models::Arch;
use crate::network::load_init;
use ood_core::{atomic_file, hashing};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Tensor};

/// What `ood train` writes into the output folder.
pub const OUTPUT_FILES: [&str; 5] = [
    "model.safetensors",
    "head.safetensors",
    "train.config.json",
    "last.safetensors",
    "state.json",
];

/// The augmentation of a run: the method's own (`Auto`), or one chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AugmentChoice {
    /// The method's default (the CIFAR recipe, or SimCLR for the contrastive methods).
    Auto,
    /// Random crop after padding 4 and horizontal flip.
    Cifar,
    /// The SimCLR chain.
    Simclr,
    /// No augmentation.
    None,
}

impl AugmentChoice {
    /// Parses `auto`, `cifar`, `simclr` or `none`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => Self::Auto,
            "cifar" => Self::Cifar,
            "simclr" => Self::Simclr,
            "none" => Self::None,
            other => {
                return Err(Error::Config(format!(
                    "augment '{other}': expected auto, cifar, simclr or none"
                )));
            }
        })
    }
}

/// Changes to a method's recipe; `None` keeps the recipe's value.
#[derive(Debug, Clone)]
pub struct Overrides {
    /// Epochs.
    pub epochs: Option<usize>,
    /// Batch size.
    pub batch_size: Option<usize>,
    /// Peak learning rate.
    pub lr: Option<f64>,
    /// Weight decay.
    pub weight_decay: Option<f64>,
    /// Linear warm-up epochs (capped at `epochs - 1`).
    pub warmup_epochs: Option<usize>,
    /// AdamW instead of the recipe's SGD.
    pub adamw: bool,
    /// MixOE's mixing: CutMix instead of mixup.
    pub cutmix: bool,
    /// Augmentation.
    pub augment: AugmentChoice,
    /// Seed of the initialisation, the shuffles and the augmentation.
    pub seed: u64,
    /// Training precision.
    pub precision: super::Precision,
    /// Channels-last weights and inputs.
    pub channels_last: bool,
}

/// The recipe of `method` with `o` applied; `mean` / `std` are the network's input
/// normalisation (the augmentation's padding value).
pub fn resolve_config(
    method: &str,
    o: &Overrides,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<TrainConfig> {
    let mut c = losses::recipe(method)?;
    if let Method::MixOe { mix, .. } = &mut c.method {
        *mix = if o.cutmix {
            mixoe::Mix::Cutmix
        } else {
            mixoe::Mix::Mixup
        };
    }
    c.epochs = o.epochs.unwrap_or(c.epochs);
    c.batch_size = o.batch_size.unwrap_or(c.batch_size);
    if let Some(lr) = o.lr {
        c.set_lr(lr);
    }
    c.weight_decay = o.weight_decay.unwrap_or(c.weight_decay);
    c.warmup_epochs = o
        .warmup_epochs
        .unwrap_or(c.warmup_epochs)
        .min(c.epochs.saturating_sub(1));
    if o.adamw {
        c.optimizer = Optimizer::adamw();
    }
    c.seed = o.seed;
    c.precision = o.precision;
    c.channels_last = o.channels_last;
    c.augment = match o.augment {
        AugmentChoice::None => None,
        AugmentChoice::Simclr => Some(Augment::simclr(mean, std)),
        AugmentChoice::Cifar => Some(Augment::cifar(mean, std)),
        AugmentChoice::Auto => Some(c.method.augment(mean, std)),
    };
    Ok(c)
}

/// Where TagFog's text anchors come from.
#[derive(Debug, Clone)]
pub enum AnchorSource {
    /// A `(K, A)` tensor file: `weight` (a head, `neglabel mine`) or `embeddings` (`embed-text`).
    File(PathBuf),
    /// One description per class, from a file or a built-in set (`cifar10`, `fashion_mnist`),
    /// embedded with the MiniLM sentence encoder in `encoder`.
    Descriptions {
        /// A file path or a built-in name.
        source: String,
        /// The sentence encoder's folder.
        encoder: Option<PathBuf>,
    },
}

/// One training run.
#[derive(Debug, Clone)]
pub struct TrainRun {
    /// The method's name ([`losses::NAMES`]).
    pub method: String,
    /// The architecture's name as given ([`Arch::parse`]).
    pub model: String,
    /// The labelled training images.
    pub data: DataSpec,
    /// Auxiliary outliers (OE, MixOE; TagFog's instead of jigsaws).
    pub outliers: Option<DataSpec>,
    /// TagFog's anchors.
    pub anchors: Option<AnchorSource>,
    /// Weights to start from.
    pub init: Option<PathBuf>,
    /// Changes to the method's recipe (and the seed).
    pub overrides: Overrides,
    /// TagFog's jigsaw grid and jigsaws per image (when it makes its outliers).
    pub jigsaw: (usize, usize),
    /// Only the first `limit` images of each source.
    pub limit: Option<usize>,
    /// A seeded random `sample` of each source.
    pub sample: Option<usize>,
    /// The training device.
    pub device: Device,
    /// The output folder.
    pub out_dir: PathBuf,
    /// Continue the checkpoint in `out_dir`.
    pub resume: bool,
}

/// What a run reports as it goes.
pub enum Progress<'a> {
    /// Training starts: the number of steps in all.
    Start {
        /// Steps of the whole run.
        steps: u64,
        /// ID images per step.
        batch_size: usize,
    },
    /// A step ended.
    Step(&'a Step),
}

/// What a finished run wrote.
#[derive(Debug)]
pub struct TrainReport {
    /// Per-epoch logs of this process's epochs.
    pub epochs: Vec<EpochLog>,
    /// The exported weights and head.
    pub files: Exported,
    /// Seconds spent training.
    pub seconds: f64,
}

impl TrainRun {
    /// Runs the whole training, writes the model, head and `train.config.json` into
    /// [`TrainRun::out_dir`], and returns what it did.
    pub fn run(&self, progress: &mut dyn FnMut(Progress<'_>)) -> Result<TrainReport> {
        let arch = Arch::parse(&self.model)?;
        let spec = arch.input_spec();
        let cfg = resolve_config(&self.method, &self.overrides, spec.mean, spec.std)?;
        let needs = cfg.method.needs();
        if needs.outliers == Outliers::PerStep && self.outliers.is_none() {
            return Err(Error::Config(format!(
                "method {} needs auxiliary outliers (--outliers SPEC)",
                self.method
            )));
        }
        if !needs.anchors && self.anchors.is_some() {
            return Err(Error::Config(
                "text anchors (--anchors / --descriptions) are only used by tagfog".into(),
            ));
        }
        let (anchors, anchor_info) = match (&self.anchors, needs.anchors) {
            (Some(a), true) => {
                let (t, i) = anchors(a, self.device)?;
                (Some(t), i)
            }
            (None, true) => {
                return Err(Error::Config(
                    "tagfog needs text anchors: --descriptions FILE.txt (or cifar10 / \
                     fashion_mnist for the built-in ones) or --anchors TEXT.safetensors"
                        .into(),
                ));
            }
            _ => (None, Value::Null),
        };

        let t_read = Instant::now();
        let side = spec.size;
        let sets = self.read_sets(needs.outliers, side, anchors.as_ref().map(|t| t.size()[0]))?;
        let to_tensor = |pixels: &[u8]| {
            crate::data::preprocess::normalized_tensor(pixels, side as usize, spec.mean, spec.std)
        };
        let images = to_tensor(&sets.train.pixels);
        let labels = Tensor::from_slice(&sets.train.labels);
        let outliers = sets.outliers.as_ref().map(|o| to_tensor(&o.pixels));
        let read_secs = t_read.elapsed().as_secs_f64();

        std::fs::create_dir_all(&self.out_dir).map_err(|e| Error::io(&self.out_dir, e))?;
        if !self.resume && self.out_dir.join("state.json").exists() {
            return Err(Error::Config(format!(
                "{} holds a training checkpoint: pass --resume to continue it, or choose another \
                 output folder",
                self.out_dir.display()
            )));
        }
        let n_outliers = sets.outliers.as_ref().map(Images::len);
        let rows = sets.train.len()
            + if cfg.method.outliers_as_class() {
                n_outliers.unwrap_or(0)
            } else {
                0
            };
        progress(Progress::Start {
            steps: rows.div_ceil(cfg.batch_size) as u64 * cfg.epochs as u64,
            batch_size: cfg.batch_size,
        });
        tch::manual_seed(cfg.seed as i64);
        let outputs = cfg.method.network_outputs(sets.k);
        let t0 = Instant::now();
        let data = TrainData {
            images: &images,
            labels: &labels,
            outliers: outliers.as_ref(),
            anchors: anchors.as_ref(),
        };
        let mut net = arch.build(outputs, self.device)?;
        if let Some(p) = &self.init {
            load_init(net.var_store_mut(), p, arch.head_name()).map_err(|e| Error::Weights {
                path: p.clone(),
                reason: format!("the weights do not fit {}: {e}", arch.name()),
            })?;
        }
        let (vs, fwd) = (net.var_store(), |x: &Tensor, t: bool| net.forward_t(x, t));
        let logs = train(
            vs,
            &fwd,
            &data,
            &cfg,
            Some(&self.out_dir),
            self.resume,
            &mut |s| progress(Progress::Step(s)),
        )?;
        let files = export(vs, arch.head_name(), &cfg.method, sets.k, &self.out_dir)?;
        let secs = t0.elapsed().as_secs_f64();

        let mut inputs = vec![
            json!({"data": self.data.to_spec_string(), "fingerprint": self.data.fingerprint()?}),
        ];
        if let Some(s) = &self.outliers {
            inputs.push(json!({"outliers": s.to_spec_string(), "fingerprint": s.fingerprint()?}));
        }
        if let Some(p) = &self.init {
            inputs
                .push(json!({"init": p.display().to_string(), "sha256": hashing::sha256_file(p)?}));
        }
        let record = json!({
            "command": "train",
            "tool_version": env!("CARGO_PKG_VERSION"),
            "method": self.method,
            "model": self.model,
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
            "limit": self.limit,
            "sample": self.sample,
            "jigsaw": sets.jigsaw,
            "anchors": anchor_info,
            "inputs": inputs,
            "device": format!("{:?}", self.device),
            "threads": tch::get_num_threads(),
            "read_seconds": read_secs,
            "train_seconds": secs,
            "epochs": logs,
            "model_file": files.model.display().to_string(),
            "model_sha256": hashing::sha256_file(&files.model)?,
            "head_file": files.head.display().to_string(),
        });
        let path = self.out_dir.join("train.config.json");
        let text = serde_json::to_string_pretty(&record)
            .map_err(|e| Error::Config(format!("train.config.json: {e}")))?
            + "\n";
        atomic_file::write_bytes_atomic(&path, text.as_bytes())?;
        Ok(TrainReport {
            epochs: logs,
            files,
            seconds: secs,
        })
    }

    /// Reads the training images and the outliers as `side × side` images, or makes the jigsaws
    /// a method that trains its outliers as class K needs from the training images. With
    /// `n_anchors` text anchors there must be one per class.
    fn read_sets(
        &self,
        use_of_outliers: Outliers,
        side: u32,
        n_anchors: Option<i64>,
    ) -> Result<Sets> {
        let data_err = |spec: &DataSpec, reason: String| Error::Data {
            path: spec.to_spec_string().into(),
            reason,
        };
        let mut train_set = read_images(&self.data, side, self.limit)?;
        let seed = self.overrides.seed;
        if let Some(n) = self.sample {
            train_set = train_set.subsample(n, side as usize, seed ^ 0x5355_4253);
        }
        if let Some(bad) = train_set.labels.iter().find(|&&l| l < 0) {
            return Err(data_err(
                &self.data,
                format!(
                    "unlabelled images (label {bad}); training needs a labelled source such as a \
                     folder-per-class tree"
                ),
            ));
        }
        let class_names = self.data.classes().unwrap_or_default();
        let k =
            (*train_set.labels.iter().max().expect("non-empty") + 1).max(class_names.len() as i64);
        if k < 2 {
            return Err(data_err(
                &self.data,
                "a single class; a classifier needs two".into(),
            ));
        }
        if let Some(n) = n_anchors
            && n != k
        {
            return Err(Error::Config(format!(
                "{n} text anchors for {k} classes: give one description per class, in label order"
            )));
        }
        let mut jigsaw = Value::Null;
        let outliers = match (&self.outliers, use_of_outliers) {
            (Some(s), _) => {
                let mut o = read_images(s, side, self.limit)?;
                if let Some(n) = self.sample {
                    o = o.subsample(n, side as usize, seed ^ 0x4f55_5453);
                }
                Some(o)
            }
            (None, Outliers::AsClass) => {
                let (grid, per_image) = self.jigsaw;
                jigsaw = json!({"grid": grid, "per_image": per_image,
                    "seed": seed, "from": "the training images (ood_nn::jigsaw)"});
                let pixels = losses::tagfog::jigsaw_outliers(
                    &train_set.pixels,
                    side as usize,
                    grid,
                    per_image,
                    seed,
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
}

/// The image sets of a run, read into memory.
struct Sets {
    /// The labelled training images.
    train: Images,
    /// Class names of the training source, where it defines them.
    class_names: Vec<String>,
    /// Number of ID classes.
    k: i64,
    /// The outliers, or TagFog's jigsaws of the training images.
    outliers: Option<Images>,
    /// How the jigsaws were made (`null` when none were).
    jigsaw: Value,
}

/// TagFog's anchors `(K, A)` with a description of their source for the record.
fn anchors(source: &AnchorSource, device: Device) -> Result<(Tensor, Value)> {
    let to_tensor = |m: ndarray::Array2<f32>| {
        let (k, d) = m.dim();
        let v: Vec<f32> = m.iter().copied().collect();
        Tensor::from_slice(&v).view([k as i64, d as i64])
    };
    let (desc, encoder) = match source {
        AnchorSource::File(p) => {
            let m = crate::align::load_anchors(p)?;
            return Ok((
                to_tensor(m),
                json!({"anchors": p.display().to_string(), "sha256": hashing::sha256_file(p)?}),
            ));
        }
        AnchorSource::Descriptions { source, encoder } => (source, encoder),
    };
    let path = Path::new(desc);
    let (text, source) = if path.is_file() {
        let t = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        (t, path.display().to_string())
    } else if let Some(t) = crate::text::builtin_descriptions(desc) {
        (t.to_string(), format!("built-in {desc}"))
    } else {
        return Err(Error::Config(format!(
            "descriptions {desc}: no such file (built-in names: cifar10, fashion_mnist)"
        )));
    };
    let sentences = crate::text::parse_descriptions(&text);
    if sentences.is_empty() {
        return Err(Error::Config(format!("{source}: no descriptions")));
    }
    let dir = encoder.as_ref().ok_or_else(|| {
        Error::Config(
            "descriptions need a sentence encoder: --encoder DIR or OOD_MINILM_DIR \
             (`. scripts/env` sets it)"
                .into(),
        )
    })?;
    let enc = crate::text::SentenceEncoder::load(dir, device)?;
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let emb = enc.encode(&refs, 64)?;
    Ok((
        to_tensor(emb),
        json!({
            "descriptions": source,
            "sha256": hashing::sha256_bytes(text.as_bytes()),
            "sentences": sentences,
            "encoder": dir.display().to_string(),
            "encoder_fingerprint": enc.fingerprint()?,
        }),
    ))
}
