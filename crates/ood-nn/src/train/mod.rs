//! The training loop: one readable function, [`train`], that runs a method over a network.
//!
//! * The method ([`Method`], one file per method in [`crate::losses`]) gives the loss of each
//!   step and what it needs: outliers sampled per step (OE, MixOE) or shuffled in as class K
//!   (TagFog), two views of every sample (SupCon, ReweightOOD, TagFog), a projection head
//!   (`proj.*`) and, for SupCon/ReweightOOD, an online linear probe on detached features
//!   (`probe.*`). The loop creates those modules in the network's [`nn::VarStore`], initialised
//!   from the seed (PyTorch's `Linear` distribution, `U(±1/√fan_in)`), and trains and
//!   checkpoints them with it.
//! * SGD with momentum, Nesterov and PyTorch-style weight decay, or AdamW, and a cosine
//!   learning-rate schedule per step with an optional linear warm-up: `optim.rs`.
//! * Augmentation on tensors ([`crate::augment`]): the CIFAR recipe (random crop after padding
//!   with the normalised black value, horizontal flip) or the contrastive references' SimCLR chain
//!   (random resized crop, flip, colour jitter, grayscale), seeded per epoch so that resume is
//!   exact. The two-view methods see two views of every sample, each augmented independently.
//! * Optional bf16 autocast ([`Precision::Bf16`], `torch.autocast(dtype=torch.bfloat16)` on the
//!   training device, CPU or CUDA: forward and loss in mixed precision, backward and the update
//!   on the float32 weights) and channels-last weights and inputs ([`TrainConfig::channels_last`]),
//!   see [`crate::autocast`].
//! * A checkpoint after every epoch (`checkpoint.rs`): `last.safetensors` with all variables, the
//!   optimiser state and the training state, written atomically as one file, plus `state.json`, a
//!   readable copy of that state; a killed run resumes exactly.
//! * After training, [`export`] writes the weights and the classifier head that extraction loads;
//!   [`read_images`] reads an image set into memory for training.
//! * [`TrainRun`] is a whole run as `ood train` does it: recipe and overrides, the image sets,
//!   the network from the registry, the loop, the export and the run's record.
//!
//! The network is given as a forward closure over a [`tch::nn::VarStore`] returning penultimate
//! features and logits ([`Forward`](crate::Forward)), so any model of this crate (or a test's tiny
//! CNN) trains through the same code.

mod checkpoint;
mod export;
mod images;
mod optim;
mod run;

pub use crate::augment::Augment;
pub use export::{Exported, export};
pub use images::{Images, read_images};
pub use optim::{Optimizer, lr_at};
pub use run::{
    AnchorSource, AugmentChoice, OUTPUT_FILES, Overrides, Progress, TrainReport, TrainRun,
    resolve_config,
};

use crate::augment::augment_batch;
use crate::error::{Error, Result};
use crate::losses::{self, Extra, ForwardFn, Method, StepLoss};
use checkpoint::State;
use optim::OptimizerState;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor, nn};

/// Arithmetic precision of the forward pass and loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Float32 throughout.
    #[default]
    Fp32,
    /// bf16 autocast on the training device (weights, gradients and optimiser state stay
    /// float32; no loss scaling is needed with bf16's exponent range).
    Bf16,
}

impl Precision {
    /// The command-line and metadata spelling: `fp32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Everything that defines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Training method (loss).
    pub method: Method,
    /// Number of epochs.
    pub epochs: usize,
    /// In-distribution batch size.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine schedule.
    pub lr_min: f64,
    /// Linear warm-up length in epochs (0: none).
    pub warmup_epochs: usize,
    /// Optimiser (SGD by default).
    #[serde(default)]
    pub optimizer: Optimizer,
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay: L2 added to the gradient (SGD) or decoupled (AdamW).
    pub weight_decay: f64,
    /// Augmentation, if any.
    pub augment: Option<Augment>,
    /// Seed for shuffling, augmentation and outlier sampling.
    pub seed: u64,
    /// Drop the last incomplete batch.
    pub drop_last: bool,
    /// Forward/loss precision.
    #[serde(default)]
    pub precision: Precision,
    /// Store 4-D weights and input batches channels-last (NHWC strides) during training; the
    /// exported weights are plain contiguous tensors either way.
    #[serde(default)]
    pub channels_last: bool,
}

impl Default for TrainConfig {
    /// The OpenOOD CE baseline recipe (spec training-methods.md 4.3), 100 epochs:
    /// [`losses::cross_entropy::recipe`].
    fn default() -> Self {
        losses::cross_entropy::recipe()
    }
}

impl TrainConfig {
    /// Sets the peak learning rate. For the recipes whose cosine floor follows the peak
    /// ([`Method::lr_min_factor`]: SupCon, ReweightOOD) the floor `lr_min` moves with it.
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
        if let Some(f) = self.method.lr_min_factor() {
            self.lr_min = lr * f;
        }
    }
}

/// One finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy on the (augmented) ID batches.
    pub accuracy: f64,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Wall time of the epoch in seconds.
    pub seconds: f64,
    /// ID images per second.
    pub images_per_second: f64,
}

/// What the progress callback sees after each step.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Epoch, from 1.
    pub epoch: usize,
    /// Step within the epoch, from 1.
    pub step: usize,
    /// Steps per epoch.
    pub steps: usize,
    /// This step's loss.
    pub loss: f64,
    /// This step's learning rate.
    pub lr: f64,
}

/// Training data: normalised images `(n, 3, h, w)` f32 and labels `(n)` i64, on the CPU.
#[derive(Debug)]
pub struct TrainData<'a> {
    /// Images.
    pub images: &'a Tensor,
    /// Labels.
    pub labels: &'a Tensor,
    /// Auxiliary outlier images for outlier-exposure methods (sampled per step), or TagFog's fake
    /// outliers (shuffled into the training set with label K).
    pub outliers: Option<&'a Tensor>,
    /// Frozen text anchors `(K, A)` of the ID classes, in label order (TagFog); normalised here.
    pub anchors: Option<&'a Tensor>,
}

impl<'a> TrainData<'a> {
    /// Images and labels only (no outliers, no anchors).
    pub fn new(images: &'a Tensor, labels: &'a Tensor) -> TrainData<'a> {
        TrainData {
            images,
            labels,
            outliers: None,
            anchors: None,
        }
    }
}

/// Trains the variables of `vs` with `forward` (images, train flag → features and logits) on
/// `data`.
///
/// For the contrastive methods the projection head (`proj.*`) and the linear probe (`probe.*`)
/// are added to `vs` first (it must not hold such variables already). With `checkpoint_dir`, a
/// checkpoint is written after every epoch; with `resume` too, training continues after the last
/// completed epoch of a run with the same config (a different config is an error). Returns the
/// logs of all epochs, including resumed ones.
pub fn train(
    vs: &nn::VarStore,
    forward: &ForwardFn<'_>,
    data: &TrainData<'_>,
    cfg: &TrainConfig,
    checkpoint_dir: Option<&Path>,
    resume: bool,
    progress: &mut dyn FnMut(&Step),
) -> Result<Vec<EpochLog>> {
    check_inputs(data, cfg)?;
    let device = vs.device();
    // Shapes of the network's outputs, from one image in eval mode (no side effects).
    let probe_out = tch::no_grad(|| forward(&data.images.narrow(0, 0, 1).to_device(device), false));
    let (feat_dim, n_out) = (probe_out.features.size()[1], probe_out.logits.size()[1]);
    let (images, labels) = training_set(data, &cfg.method, n_out)?;
    let modules = MethodModules::add(vs, cfg, data, feat_dim, n_out)?;

    if cfg.channels_last {
        set_layout(vs, true);
    }
    let mut opt = OptimizerState::new(vs, &cfg.optimizer);
    let (start_epoch, mut logs) = match (checkpoint_dir, resume) {
        (Some(dir), true) => checkpoint::resume(dir, vs, &mut opt, cfg)?,
        _ => (0, Vec::new()),
    };

    let n = images.size()[0] as usize;
    let steps = if cfg.drop_last {
        n / cfg.batch_size
    } else {
        n.div_ceil(cfg.batch_size)
    };
    if steps == 0 {
        return Err(Error::Config(format!(
            "batch size {} is larger than the {n} training images with drop_last",
            cfg.batch_size
        )));
    }
    let run = Epochs {
        forward,
        images: &images,
        labels: &labels,
        outliers: data.outliers,
        extra: modules.extra(),
        cfg,
        device,
        steps,
    };
    for epoch in start_epoch..cfg.epochs {
        logs.push(run.epoch(epoch, &mut opt, progress)?);
        if let Some(dir) = checkpoint_dir {
            let state = State {
                epochs_done: epoch + 1,
                config: cfg.clone(),
                logs: logs.clone(),
            };
            checkpoint::save(dir, vs, &opt, &state)?;
        }
    }
    if cfg.channels_last {
        set_layout(vs, false);
    }
    Ok(logs)
}

/// The checks of [`train`] before any work: images with as many labels, positive batch size and
/// epochs, and the method's needs.
fn check_inputs(data: &TrainData<'_>, cfg: &TrainConfig) -> Result<()> {
    let n_id = data.images.size()[0] as usize;
    if n_id == 0 || data.labels.size()[0] as usize != n_id {
        return Err(Error::Config(format!(
            "training needs images and as many labels (got {n_id} images, {} labels)",
            data.labels.size()[0]
        )));
    }
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(Error::Config(
            "batch_size and epochs must be positive".into(),
        ));
    }
    cfg.method
        .check(data.outliers.is_some(), data.anchors.is_some())
}

/// The images and labels an epoch shuffles: the ID set, plus the outliers as class K for the
/// methods that train them so (TagFog, [`losses::tagfog::training_set`]); `n_out` is the
/// network's number of outputs.
fn training_set(data: &TrainData<'_>, method: &Method, n_out: i64) -> Result<(Tensor, Tensor)> {
    if method.outliers_as_class() {
        let outliers = data.outliers.expect("checked by Method::check");
        let k = data.anchors.expect("checked by Method::check").size()[0];
        losses::tagfog::training_set(data.images, data.labels, outliers, k, n_out)
    } else {
        Ok((data.images.shallow_clone(), data.labels.shallow_clone()))
    }
}

/// The modules a method trains besides the network, in the network's `VarStore`, and the
/// normalised text anchors on the training device.
struct MethodModules {
    /// Projection head (`proj.*`).
    projection: Option<Box<dyn ModuleT>>,
    /// Online linear probe (`probe.*`).
    probe: Option<nn::Linear>,
    /// L2-normalised anchors `(K, A)`.
    anchors: Option<Tensor>,
}

impl MethodModules {
    /// Adds the projection head and the probe the method needs to `vs` (which must not hold
    /// `proj.*` or `probe.*` variables yet), for `feat_dim`-wide features and `n_out` classes,
    /// seeded from the config's seed.
    fn add(
        vs: &nn::VarStore,
        cfg: &TrainConfig,
        data: &TrainData<'_>,
        feat_dim: i64,
        n_out: i64,
    ) -> Result<MethodModules> {
        if cfg.method.two_views()
            && vs
                .variables()
                .keys()
                .any(|k| k.starts_with("proj.") || k.starts_with("probe."))
        {
            return Err(Error::Config(
                "the VarStore already holds 'proj.' or 'probe.' variables; train() creates the \
                 projection head itself"
                    .into(),
            ));
        }
        let root = vs.root();
        let anchor_dim = data.anchors.map(|a| a.size()[1]);
        let projection = cfg
            .method
            .projection(&(&root / "proj"), feat_dim, anchor_dim);
        let probe = cfg.method.has_probe().then(|| {
            let max_label = data.labels.max().int64_value(&[]);
            let min_label = data.labels.min().int64_value(&[]);
            if min_label < 0 || max_label >= n_out {
                return Err(Error::Config(format!(
                    "labels must lie in 0..{n_out} (the network's outputs), found {min_label}..={max_label}"
                )));
            }
            Ok(nn::linear(&root / "probe", feat_dim, n_out, Default::default()))
        });
        let probe = probe.transpose()?;
        init_linears(vs, "proj.", cfg.seed ^ 0x7072_6f6a);
        init_linears(vs, "probe.", cfg.seed ^ 0x7072_6f62);
        let anchors = data
            .anchors
            .map(|a| losses::normalize(&a.to_kind(Kind::Float)).to_device(vs.device()));
        Ok(MethodModules {
            projection,
            probe,
            anchors,
        })
    }

    /// The modules as the method's step sees them.
    fn extra(&self) -> Extra<'_> {
        Extra {
            projection: self.projection.as_deref(),
            probe: self.probe.as_ref(),
            anchors: self.anchors.as_ref(),
        }
    }
}

/// Seeded PyTorch-style initialisation of the linear layers under `prefix` (`U(±1/√fan_in)` for
/// weight and bias; BatchNorm weight 1, bias 0), so that runs in parallel threads do not depend on libtorch's global RNG.
fn init_linears(vs: &nn::VarStore, prefix: &str, seed: u64) {
    let vars: BTreeMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    tch::no_grad(|| {
        for (name, var) in &vars {
            let base = if let Some(b) = name.strip_suffix(".weight") {
                b
            } else if let Some(b) = name.strip_suffix(".bias") {
                b
            } else {
                continue;
            };
            let Some(w) = vars.get(&format!("{base}.weight")) else {
                continue;
            };
            let mut v = var.shallow_clone();
            if w.dim() != 2 {
                // BatchNorm affine parameters: PyTorch's 1 / 0 (tch's default weight is U(0, 1)).
                let _ = v.fill_(if name.ends_with(".weight") { 1.0 } else { 0.0 });
                continue;
            }
            let bound = 1.0 / (w.size()[1] as f64).sqrt();
            let vals: Vec<f32> = (0..var.numel())
                .map(|_| rng.gen_range(-bound..bound) as f32)
                .collect();
            v.copy_(&Tensor::from_slice(&vals).view(var.size().as_slice()));
        }
    });
}

/// What every epoch of a run reads.
struct Epochs<'a> {
    /// The network's forward pass.
    forward: &'a ForwardFn<'a>,
    /// Training images (ID, plus TagFog's fake outliers), on the CPU.
    images: &'a Tensor,
    /// Their labels.
    labels: &'a Tensor,
    /// Outliers sampled per step (OE, MixOE), on the CPU.
    outliers: Option<&'a Tensor>,
    /// The method's extra modules.
    extra: Extra<'a>,
    /// The run's config.
    cfg: &'a TrainConfig,
    /// The training device.
    device: Device,
    /// Steps per epoch.
    steps: usize,
}

impl Epochs<'_> {
    /// Runs epoch `epoch` (0-based): a seeded shuffle, then one optimiser step per batch.
    fn epoch(
        &self,
        epoch: usize,
        opt: &mut OptimizerState,
        progress: &mut dyn FnMut(&Step),
    ) -> Result<EpochLog> {
        let cfg = self.cfg;
        let n = self.images.size()[0] as usize;
        let t0 = Instant::now();
        let mut rng =
            ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct, mut seen, mut rows) = (0.0, 0i64, 0usize, 0usize);
        let mut lr = cfg.lr;
        let total = self.steps * cfg.epochs;
        let warm = self.steps * cfg.warmup_epochs;
        for step in 0..self.steps {
            let lo = step * cfg.batch_size;
            let hi = (lo + cfg.batch_size).min(n);
            let (x, y) = self.batch(&order[lo..hi], &mut rng);
            let outliers = self.outlier_batch(hi - lo, &mut rng);
            let out = self.loss(&x, &y, outliers.as_ref(), &mut rng);
            let loss_v = out.loss.double_value(&[]);
            if !loss_v.is_finite() {
                return Err(Error::Config(format!(
                    "training diverged: loss {loss_v} at epoch {} step {}",
                    epoch + 1,
                    step + 1
                )));
            }
            opt.zero_grad();
            out.loss.backward();
            let t = epoch * self.steps + step;
            lr = lr_at(cfg, t, total, warm);
            opt.step(cfg, lr, t + 1);
            loss_sum += loss_v * (hi - lo) as f64;
            seen += hi - lo;
            correct += losses::correct(&out.logits, &out.labels);
            rows += out.labels.size()[0] as usize;
            progress(&Step {
                epoch: epoch + 1,
                step: step + 1,
                steps: self.steps,
                loss: loss_v,
                lr,
            });
        }
        let secs = t0.elapsed().as_secs_f64();
        Ok(EpochLog {
            epoch: epoch + 1,
            loss: loss_sum / seen as f64,
            accuracy: correct as f64 / rows as f64,
            lr,
            seconds: secs,
            images_per_second: seen as f64 / secs,
        })
    }

    /// The augmented batch of the samples `idx` on the device, and its labels: one view, or for
    /// the two-view methods both views `[first views; second views]` with the labels repeated.
    fn batch(&self, idx: &[i64], rng: &mut ChaCha8Rng) -> (Tensor, Tensor) {
        let idx = Tensor::from_slice(idx);
        let raw = self.images.index_select(0, &idx);
        let view = |rng: &mut ChaCha8Rng| match &self.cfg.augment {
            Some(aug) => augment_batch(&raw, aug, rng),
            None => raw.shallow_clone(),
        };
        let mut y = self.labels.index_select(0, &idx);
        let x = if self.cfg.method.two_views() {
            let v1 = view(rng);
            let v2 = view(rng);
            y = Tensor::cat(&[&y, &y], 0);
            Tensor::cat(&[v1, v2], 0)
        } else {
            view(rng)
        };
        (
            layout(self.cfg, x.to_device(self.device)),
            y.to_device(self.device),
        )
    }

    /// The step's outlier batch for an ID batch of `b` (sampled with replacement, augmented like
    /// the ID images), for the methods that sample outliers per step.
    fn outlier_batch(&self, b: usize, rng: &mut ChaCha8Rng) -> Option<Tensor> {
        let k = self.cfg.method.outlier_batch(b);
        match self.outliers {
            Some(o) if k > 0 => {
                let m = o.size()[0];
                let oidx: Vec<i64> = (0..k).map(|_| rng.gen_range(0..m)).collect();
                let mut ox = o.index_select(0, &Tensor::from_slice(&oidx));
                if let Some(aug) = &self.cfg.augment {
                    ox = augment_batch(&ox, aug, rng);
                }
                Some(layout(self.cfg, ox.to_device(self.device)))
            }
            _ => None,
        }
    }

    /// The method's loss of one step, in the configured precision.
    fn loss(
        &self,
        x: &Tensor,
        y: &Tensor,
        outliers: Option<&Tensor>,
        rng: &mut ChaCha8Rng,
    ) -> StepLoss {
        let mut loss = || {
            self.cfg
                .method
                .loss(self.forward, x, y, outliers, &self.extra, rng)
        };
        match self.cfg.precision {
            Precision::Fp32 => loss(),
            Precision::Bf16 => crate::autocast::autocast(self.device, Kind::BFloat16, loss),
        }
    }
}

/// An input batch in the configured memory layout.
fn layout(cfg: &TrainConfig, x: Tensor) -> Tensor {
    if cfg.channels_last {
        crate::autocast::channels_last(&x)
    } else {
        x
    }
}

/// Re-stores every 4-D variable of `vs` channels-last, or back to contiguous NCHW.
fn set_layout(vs: &nn::VarStore, channels_last: bool) {
    tch::no_grad(|| {
        for (_, mut var) in vs.variables() {
            if var.dim() == 4 {
                let data = if channels_last {
                    crate::autocast::channels_last(&var)
                } else {
                    var.contiguous()
                };
                var.set_data(&data);
            }
        }
    });
}
