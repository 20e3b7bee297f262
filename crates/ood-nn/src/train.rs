//! The training loop: one readable function, [`train`], that runs a loss over a network.
//!
//! * SGD with momentum, Nesterov and PyTorch-style (L2 added to the gradient) weight decay, or
//!   AdamW (PyTorch's `torch.optim.AdamW`: decoupled weight decay, bias-corrected moments),
//!   both implemented here so that the optimiser state (momentum buffers, or the two moment
//!   estimates) is part of the checkpoint: a run killed after epoch `e` and resumed gives the same
//!   weights as an uninterrupted run.
//! * Cosine learning-rate schedule per step, with an optional linear warm-up (the intended
//!   schedule; the reference CIDER/ReweightOOD code's negative-lr first epoch is not reproduced).
//! * Augmentation on tensors ([`crate::augment`]): the CIFAR recipe (random crop after padding
//!   with the normalised black value, horizontal flip) or the contrastive references' SimCLR chain
//!   (random resized crop, flip, colour jitter, grayscale), seeded per epoch so that resume is
//!   exact. The contrastive methods (SupCon, ReweightOOD, TagFog) see two views of every sample,
//!   each augmented independently.
//! * The contrastive methods' projection head (`proj.*`) and, for SupCon/ReweightOOD, an online
//!   linear probe on detached features (`probe.*`) are created here in the network's
//!   [`nn::VarStore`], initialised from the seed (PyTorch's `Linear` distribution,
//!   `U(±1/√fan_in)`), trained and checkpointed with it.
//! * Optional bf16 autocast ([`Precision::Bf16`], `torch.autocast(dtype=torch.bfloat16)` on the
//!   training device, CPU or CUDA: forward and loss in mixed precision, backward and the update
//!   on the float32 weights) and channels-last weights and inputs ([`TrainConfig::channels_last`]),
//!   see [`crate::autocast`].
//! * A checkpoint after every epoch: `last.safetensors` with all variables, the optimiser state
//!   and, in its metadata, the epoch, the config and the epoch logs, written atomically as one
//!   file (so weights and state can never come from different epochs), plus `state.json`, a
//!   readable copy of that state.
//!
//! The network is given as a forward closure over a [`tch::nn::VarStore`] returning penultimate
//! features and logits ([`Forward`]), so any model of this crate (or a test's tiny CNN) trains
//! through the same code.

pub use crate::augment::Augment;
use crate::augment::augment_batch;
use crate::error::{Error, Result};
use crate::losses::{self, Extra, Method};
use crate::network::Forward;
use ood_core::atomic_file;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor, nn};

/// The optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Optimizer {
    /// SGD with [`TrainConfig::momentum`], [`TrainConfig::nesterov`] and L2
    /// [`TrainConfig::weight_decay`] added to the gradient (`torch.optim.SGD`).
    #[default]
    Sgd,
    /// AdamW (`torch.optim.AdamW`, no AMSGrad): [`TrainConfig::weight_decay`] is the decoupled
    /// decay `p ← p·(1 − lr·wd)`; momentum and Nesterov are unused.
    #[serde(rename = "adamw")]
    AdamW {
        /// First-moment decay β₁.
        beta1: f64,
        /// Second-moment decay β₂.
        beta2: f64,
        /// ε added to the denominator.
        eps: f64,
    },
}

impl Optimizer {
    /// AdamW with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8).
    pub fn adamw() -> Optimizer {
        Optimizer::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// Names of the per-parameter state tensors in the checkpoint (`<prefix>.<variable>`).
    fn state_prefixes(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Sgd => &["__momentum__"],
            Optimizer::AdamW { .. } => &["__exp_avg__", "__exp_avg_sq__"],
        }
    }
}

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
    /// The OpenOOD CE baseline recipe (spec training-methods.md 4.3), 100 epochs.
    fn default() -> Self {
        TrainConfig {
            method: Method::CrossEntropy,
            epochs: 100,
            batch_size: 128,
            lr: 0.1,
            lr_min: 1e-6,
            warmup_epochs: 0,
            optimizer: Optimizer::Sgd,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            augment: None,
            seed: 0,
            drop_last: false,
            precision: Precision::Fp32,
            channels_last: false,
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

#[derive(Serialize, Deserialize)]
struct State {
    epochs_done: usize,
    config: TrainConfig,
    logs: Vec<EpochLog>,
}

/// Learning rate at global step `t` (0-based) of `total`, with `warm` warm-up steps.
pub fn lr_at(cfg: &TrainConfig, t: usize, total: usize, warm: usize) -> f64 {
    if t < warm {
        return cfg.lr * (t + 1) as f64 / warm as f64;
    }
    let span = (total - warm).max(1) as f64;
    let p = (t - warm) as f64 / span;
    cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + (std::f64::consts::PI * p).cos())
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
    forward: &dyn Fn(&Tensor, bool) -> Forward,
    data: &TrainData<'_>,
    cfg: &TrainConfig,
    checkpoint_dir: Option<&Path>,
    resume: bool,
    progress: &mut dyn FnMut(&Step),
) -> Result<Vec<EpochLog>> {
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
        .check(data.outliers.is_some(), data.anchors.is_some())?;
    let device = vs.device();

    // Shapes of the network's outputs, from one image in eval mode (no side effects).
    let probe_out = tch::no_grad(|| forward(&data.images.narrow(0, 0, 1).to_device(device), false));
    let (feat_dim, n_out) = (probe_out.features.size()[1], probe_out.logits.size()[1]);
    let max_label = data.labels.max().int64_value(&[]);
    let min_label = data.labels.min().int64_value(&[]);

    // TagFog: the fake outliers join the training set as class K.
    let (images, labels) = if cfg.method.outliers_as_class() {
        let o = data.outliers.expect("checked by Method::check");
        let k = data.anchors.expect("checked by Method::check").size()[0];
        if n_out != k + 1 {
            return Err(Error::Config(format!(
                "TagFog needs a network with K+1 = {} outputs for {k} anchors, it has {n_out}",
                k + 1
            )));
        }
        if min_label < 0 || max_label >= k {
            return Err(Error::Config(format!(
                "TagFog: ID labels must lie in 0..{k} (one per anchor), found {min_label}..={max_label}"
            )));
        }
        let ol = Tensor::full([o.size()[0]], k, (Kind::Int64, Device::Cpu));
        (
            Tensor::cat(&[data.images, o], 0),
            Tensor::cat(&[data.labels, &ol], 0),
        )
    } else {
        (data.images.shallow_clone(), data.labels.shallow_clone())
    };
    let n = images.size()[0] as usize;

    // The contrastive methods' extra modules, in the same VarStore.
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
    let projection: Option<Box<dyn nn::ModuleT>> = match &cfg.method {
        Method::SupCon { .. } | Method::ReweightOod(_) => Some(Box::new(
            losses::reweightood::projection(&(&root / "proj"), feat_dim),
        )),
        Method::TagFog(_) => {
            let a = data.anchors.expect("checked").size()[1];
            Some(Box::new(losses::tagfog::projection(
                &(&root / "proj"),
                feat_dim,
                a,
            )))
        }
        _ => None,
    };
    let probe = cfg.method.has_probe().then(|| {
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
        .map(|a| losses::normalize(&a.to_kind(Kind::Float)).to_device(device));
    let extra = Extra {
        projection: projection.as_deref(),
        probe: probe.as_ref(),
        anchors: anchors.as_ref(),
    };

    if cfg.channels_last {
        set_layout(vs, true);
    }
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let trainable: Vec<(String, Tensor)> = vars
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    let prefixes = cfg.optimizer.state_prefixes();
    // Optimiser state: one buffer per trainable variable and state prefix.
    let mut state: Vec<Vec<Tensor>> = prefixes
        .iter()
        .map(|_| trainable.iter().map(|(_, t)| t.zeros_like()).collect())
        .collect();

    let mut logs = Vec::new();
    let mut start_epoch = 0;
    if let (Some(dir), true) = (checkpoint_dir, resume) {
        let ckpt = dir.join(CHECKPOINT);
        if ckpt.exists() || dir.join("state.json").exists() {
            let file = ood_core::safetensors::SafeTensorsFile::open(&ckpt)?;
            let saved_state = checkpoint_state(&file, dir)?;
            if saved_state.config != *cfg {
                return Err(Error::Config(format!(
                    "cannot resume from {}: it was trained with a different config",
                    dir.display()
                )));
            }
            let get = |key: &str| -> Result<Tensor> {
                let info = file.tensors.get(key).ok_or_else(|| Error::Weights {
                    path: ckpt.clone(),
                    reason: format!("checkpoint lacks '{key}'"),
                })?;
                let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
                Ok(Tensor::from_slice(&file.read_f32(key)?).reshape(shape))
            };
            tch::no_grad(|| -> Result<()> {
                for (name, mut var) in vs.variables() {
                    var.copy_(&get(&name)?);
                }
                for (prefix, bufs) in prefixes.iter().zip(state.iter_mut()) {
                    for ((name, _), buf) in trainable.iter().zip(bufs.iter_mut()) {
                        buf.copy_(&get(&format!("{prefix}.{name}"))?);
                    }
                }
                Ok(())
            })?;
            start_epoch = saved_state.epochs_done;
            logs = saved_state.logs;
        }
    }

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
    let total = steps * cfg.epochs;
    let warm = steps * cfg.warmup_epochs;
    for epoch in start_epoch..cfg.epochs {
        let t0 = Instant::now();
        let mut rng =
            ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct, mut seen, mut rows) = (0.0, 0i64, 0usize, 0usize);
        let mut lr = cfg.lr;
        for step in 0..steps {
            let lo = step * cfg.batch_size;
            let hi = (lo + cfg.batch_size).min(n);
            let idx = Tensor::from_slice(&order[lo..hi]);
            let raw = images.index_select(0, &idx);
            let view = |rng: &mut ChaCha8Rng| match &cfg.augment {
                Some(aug) => augment_batch(&raw, aug, rng),
                None => raw.shallow_clone(),
            };
            let mut y = labels.index_select(0, &idx);
            let x = if cfg.method.two_views() {
                let v1 = view(&mut rng);
                let v2 = view(&mut rng);
                y = Tensor::cat(&[&y, &y], 0);
                Tensor::cat(&[v1, v2], 0)
            } else {
                view(&mut rng)
            };
            let x = layout(cfg, x.to_device(device));
            let y = y.to_device(device);
            let k = cfg.method.outlier_batch(hi - lo);
            let outliers = match data.outliers {
                Some(o) if k > 0 => {
                    let m = o.size()[0];
                    let oidx: Vec<i64> = (0..k).map(|_| rng.gen_range(0..m)).collect();
                    let mut ox = o.index_select(0, &Tensor::from_slice(&oidx));
                    if let Some(aug) = &cfg.augment {
                        ox = augment_batch(&ox, aug, &mut rng);
                    }
                    Some(layout(cfg, ox.to_device(device)))
                }
                _ => None,
            };
            let mut loss = || {
                cfg.method
                    .loss(forward, &x, &y, outliers.as_ref(), &extra, &mut rng)
            };
            let out = match cfg.precision {
                Precision::Fp32 => loss(),
                Precision::Bf16 => crate::autocast::autocast(device, Kind::BFloat16, loss),
            };
            let loss_v = out.loss.double_value(&[]);
            if !loss_v.is_finite() {
                return Err(Error::Config(format!(
                    "training diverged: loss {loss_v} at epoch {} step {}",
                    epoch + 1,
                    step + 1
                )));
            }
            for (_, t) in &trainable {
                let mut g = t.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            out.loss.backward();
            let t = epoch * steps + step;
            lr = lr_at(cfg, t, total, warm);
            tch::no_grad(|| update(cfg, &trainable, &mut state, lr, t + 1));
            let b = (hi - lo) as f64;
            loss_sum += loss_v * b;
            seen += hi - lo;
            correct += losses::correct(&out.logits, &out.labels);
            rows += out.labels.size()[0] as usize;
            progress(&Step {
                epoch: epoch + 1,
                step: step + 1,
                steps,
                loss: loss_v,
                lr,
            });
        }
        let secs = t0.elapsed().as_secs_f64();
        logs.push(EpochLog {
            epoch: epoch + 1,
            loss: loss_sum / seen as f64,
            accuracy: correct as f64 / rows as f64,
            lr,
            seconds: secs,
            images_per_second: seen as f64 / secs,
        });
        if let Some(dir) = checkpoint_dir {
            save_checkpoint(
                dir,
                vs,
                &trainable,
                prefixes,
                &state,
                &State {
                    epochs_done: epoch + 1,
                    config: cfg.clone(),
                    logs: logs.clone(),
                },
            )?;
        }
    }
    if cfg.channels_last {
        set_layout(vs, false);
    }
    Ok(logs)
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

/// One optimiser step at learning rate `lr`; `t` is the 1-based global step (AdamW's bias
/// correction).
fn update(
    cfg: &TrainConfig,
    trainable: &[(String, Tensor)],
    state: &mut [Vec<Tensor>],
    lr: f64,
    t: usize,
) {
    for (i, (_, p)) in trainable.iter().enumerate() {
        let g = p.grad();
        if !g.defined() {
            continue;
        }
        let mut p = p.shallow_clone();
        match cfg.optimizer {
            Optimizer::Sgd => {
                // In place on the gradient (zeroed before the next backward), as
                // `torch.optim.SGD` does; the same operations in the same order as
                // d = g + wd·p; buf = m·buf + d; d = d + m·buf (Nesterov) or buf; p -= lr·d.
                let buf = &mut state[0][i];
                let mut d = g;
                if cfg.weight_decay != 0.0 {
                    let _ = d.g_add_(&(&p * cfg.weight_decay));
                }
                if cfg.momentum != 0.0 {
                    let _ = buf.g_mul_scalar_(cfg.momentum).g_add_(&d);
                    if cfg.nesterov {
                        let _ = d.g_add_(&(&*buf * cfg.momentum));
                    } else {
                        d = buf.shallow_clone();
                    }
                }
                let _ = p.g_sub_(&(d * lr));
            }
            Optimizer::AdamW { beta1, beta2, eps } => {
                if cfg.weight_decay != 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - lr * cfg.weight_decay);
                }
                let mut m = state[0][i].shallow_clone();
                let mut v = state[1][i].shallow_clone();
                let _ = m.g_mul_scalar_(beta1).g_add_(&(&g * (1.0 - beta1)));
                let _ = v.g_mul_scalar_(beta2).g_add_(&(&g * &g * (1.0 - beta2)));
                let bc1 = 1.0 - beta1.powi(t as i32);
                let bc2 = 1.0 - beta2.powi(t as i32);
                let denom = v.sqrt() / bc2.sqrt() + eps;
                let _ = p.g_sub_(&(&m / denom * (lr / bc1)));
            }
        }
    }
}

/// The checkpoint file in the checkpoint folder.
const CHECKPOINT: &str = "last.safetensors";
/// The metadata key of the checkpoint that holds its training state (JSON of [`State`]).
const STATE_KEY: &str = "oodkit_train_state";

/// The training state a checkpoint was written with. It lives in the checkpoint's own metadata,
/// so weights and state are one file renamed into place at once: no crash can pair the weights
/// of one epoch with the state of another. `state.json` beside it is a readable copy; it is only
/// read for checkpoints of older versions, which lack the metadata.
fn checkpoint_state(file: &ood_core::safetensors::SafeTensorsFile, dir: &Path) -> Result<State> {
    let (text, path) = match file.metadata.get(STATE_KEY) {
        Some(s) => (s.clone().into_bytes(), file.path().to_path_buf()),
        None => {
            let p = dir.join("state.json");
            (std::fs::read(&p).map_err(|e| Error::io(&p, e))?, p)
        }
    };
    serde_json::from_slice(&text).map_err(|e| Error::Data {
        path,
        reason: format!("bad training state: {e}"),
    })
}

fn save_checkpoint(
    dir: &Path,
    vs: &nn::VarStore,
    trainable: &[(String, Tensor)],
    prefixes: &[&str],
    opt_state: &[Vec<Tensor>],
    state: &State,
) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    for (prefix, bufs) in prefixes.iter().zip(opt_state) {
        for ((name, _), buf) in trainable.iter().zip(bufs) {
            named.push((format!("{prefix}.{name}"), buf.shallow_clone()));
        }
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut values = Vec::with_capacity(named.len());
    for (name, t) in &named {
        let flat = t
            .detach()
            .to_device(Device::Cpu)
            .to_kind(tch::Kind::Float)
            .contiguous()
            .flatten(0, -1);
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        values.push((name.as_str(), shape, Vec::<f32>::try_from(&flat)?));
    }
    let tensors: Vec<ood_core::safetensors::TensorToWrite<'_>> = values
        .iter()
        .map(|(name, shape, v)| ood_core::safetensors::TensorToWrite::f32(name, shape.clone(), v))
        .collect();
    let state_json = serde_json::to_string(state).expect("state serialises");
    let metadata = BTreeMap::from([(STATE_KEY.to_string(), state_json)]);
    ood_core::safetensors::write(&dir.join(CHECKPOINT), &tensors, &metadata)?;
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    atomic_file::write_bytes_atomic(&dir.join("state.json"), &json)?;
    Ok(())
}
