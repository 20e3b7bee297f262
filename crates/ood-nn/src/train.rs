//! The training loop: one readable function, [`train`], that runs a loss over a network.
//!
//! * SGD with momentum, Nesterov and decoupled-from-nothing (PyTorch-style, L2 added to the
//!   gradient) weight decay, implemented here so that the momentum buffers are part of the
//!   checkpoint: a run killed after epoch `e` and resumed gives the same weights as an
//!   uninterrupted run.
//! * Cosine learning-rate schedule per step, with an optional linear warm-up (the intended
//!   schedule; the reference CIDER/ReweightOOD code's negative-lr first epoch is not reproduced).
//! * Standard CIFAR augmentation on tensors (random crop after padding with the normalised black
//!   value, horizontal flip), seeded per epoch so that resume is exact.
//! * A checkpoint after every epoch (`last.safetensors` with weights and momentum buffers, plus
//!   `state.json` with the epoch, the config and the epoch logs), written atomically.
//!
//! The network is given as a forward closure over a [`tch::nn::VarStore`], so any model of this
//! crate (or a test's tiny CNN) trains through the same code.

use crate::error::{Error, Result};
use crate::losses::Method;
use ood_core::atomic_file;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor, nn};

/// Random crop + flip augmentation for small images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Pixels of padding before the random crop (4 for CIFAR; 0 disables cropping).
    pub crop_padding: i64,
    /// Random horizontal flip with probability 1/2.
    pub horizontal_flip: bool,
    /// Per-channel value used for padding, in normalised units (black: `-mean/std`).
    pub pad_value: [f32; 3],
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
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// Augmentation, if any.
    pub augment: Option<Augment>,
    /// Seed for shuffling, augmentation and outlier sampling.
    pub seed: u64,
    /// Drop the last incomplete batch.
    pub drop_last: bool,
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
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            augment: None,
            seed: 0,
            drop_last: false,
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
    /// Auxiliary outlier images for outlier-exposure methods.
    pub outliers: Option<&'a Tensor>,
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

fn tensor_err(path: &Path, e: tch::TchError) -> Error {
    Error::Weights {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn augment_batch(x: &Tensor, aug: &Augment, rng: &mut ChaCha8Rng) -> Tensor {
    let (n, h, w) = (x.size()[0], x.size()[2], x.size()[3]);
    let p = aug.crop_padding;
    let padded = if p > 0 {
        let pad = Tensor::from_slice(&aug.pad_value)
            .view([1, 3, 1, 1])
            .to_device(x.device());
        let base = pad.expand([n, 3, h + 2 * p, w + 2 * p], false).contiguous();
        base.narrow(2, p, h).narrow(3, p, w).copy_(x);
        base
    } else {
        x.shallow_clone()
    };
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (dy, dx) = if p > 0 {
            (rng.gen_range(0..=2 * p), rng.gen_range(0..=2 * p))
        } else {
            (0, 0)
        };
        let mut xi = padded.get(i).narrow(1, dy, h).narrow(2, dx, w);
        if aug.horizontal_flip && rng.r#gen::<bool>() {
            xi = xi.flip([2]);
        }
        out.push(xi);
    }
    Tensor::stack(&out, 0)
}

/// Trains the variables of `vs` with `forward` (images, train flag → logits) on `data`.
///
/// With `checkpoint_dir`, a checkpoint is written after every epoch; with `resume` too, training
/// continues after the last completed epoch of a run with the same config (a different config is
/// an error). Returns the logs of all epochs, including resumed ones.
pub fn train(
    vs: &nn::VarStore,
    forward: &dyn Fn(&Tensor, bool) -> Tensor,
    data: &TrainData<'_>,
    cfg: &TrainConfig,
    checkpoint_dir: Option<&Path>,
    resume: bool,
    progress: &mut dyn FnMut(&Step),
) -> Result<Vec<EpochLog>> {
    let n = data.images.size()[0] as usize;
    if n == 0 || data.labels.size()[0] as usize != n {
        return Err(Error::Config(format!(
            "training needs images and as many labels (got {n} images, {} labels)",
            data.labels.size()[0]
        )));
    }
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(Error::Config(
            "batch_size and epochs must be positive".into(),
        ));
    }
    cfg.method.check(data.outliers.is_some())?;
    let device = vs.device();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let trainable: Vec<(String, Tensor)> = vars
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    let mut buffers: Vec<Tensor> = trainable.iter().map(|(_, t)| t.zeros_like()).collect();

    let mut logs = Vec::new();
    let mut start_epoch = 0;
    if let (Some(dir), true) = (checkpoint_dir, resume) {
        let state_path = dir.join("state.json");
        if state_path.exists() {
            let state: State = serde_json::from_slice(
                &std::fs::read(&state_path).map_err(|e| Error::io(&state_path, e))?,
            )
            .map_err(|e| Error::Data {
                path: state_path.clone(),
                reason: format!("bad training state: {e}"),
            })?;
            if state.config != *cfg {
                return Err(Error::Config(format!(
                    "cannot resume from {}: it was trained with a different config",
                    dir.display()
                )));
            }
            let ckpt = dir.join("last.safetensors");
            let saved: BTreeMap<String, Tensor> = Tensor::read_safetensors(&ckpt)
                .map_err(|e| tensor_err(&ckpt, e))?
                .into_iter()
                .collect();
            tch::no_grad(|| -> Result<()> {
                for (name, mut var) in vs.variables() {
                    let src = saved.get(&name).ok_or_else(|| Error::Weights {
                        path: ckpt.clone(),
                        reason: format!("checkpoint lacks '{name}'"),
                    })?;
                    var.copy_(src);
                }
                for ((name, _), buf) in trainable.iter().zip(buffers.iter_mut()) {
                    let key = format!("__momentum__.{name}");
                    let src = saved.get(&key).ok_or_else(|| Error::Weights {
                        path: ckpt.clone(),
                        reason: format!("checkpoint lacks '{key}'"),
                    })?;
                    buf.copy_(src);
                }
                Ok(())
            })?;
            start_epoch = state.epochs_done;
            logs = state.logs;
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
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0i64, 0usize);
        let mut lr = cfg.lr;
        for step in 0..steps {
            let lo = step * cfg.batch_size;
            let hi = (lo + cfg.batch_size).min(n);
            let idx = Tensor::from_slice(&order[lo..hi]);
            let mut x = data.images.index_select(0, &idx);
            if let Some(aug) = &cfg.augment {
                x = augment_batch(&x, aug, &mut rng);
            }
            let x = x.to_device(device);
            let y = data.labels.index_select(0, &idx).to_device(device);
            let outliers = match data.outliers {
                Some(o) => {
                    let m = o.size()[0];
                    let k = cfg.method.outlier_batch(hi - lo) as i64;
                    let oidx: Vec<i64> = (0..k).map(|_| rng.gen_range(0..m)).collect();
                    let mut ox = o.index_select(0, &Tensor::from_slice(&oidx));
                    if let Some(aug) = &cfg.augment {
                        ox = augment_batch(&ox, aug, &mut rng);
                    }
                    Some(ox.to_device(device))
                }
                None => None,
            };
            let (loss, logits) = cfg
                .method
                .loss(forward, &x, &y, outliers.as_ref(), &mut rng);
            let loss_v = loss.double_value(&[]);
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
            loss.backward();
            lr = lr_at(cfg, epoch * steps + step, total, warm);
            tch::no_grad(|| {
                for ((_, p), buf) in trainable.iter().zip(buffers.iter_mut()) {
                    let g = p.grad();
                    if !g.defined() {
                        continue;
                    }
                    let mut d = if cfg.weight_decay != 0.0 {
                        &g + p * cfg.weight_decay
                    } else {
                        g.shallow_clone()
                    };
                    if cfg.momentum != 0.0 {
                        let _ = buf.g_mul_scalar_(cfg.momentum).g_add_(&d);
                        d = if cfg.nesterov {
                            &d + &*buf * cfg.momentum
                        } else {
                            buf.shallow_clone()
                        };
                    }
                    let mut p = p.shallow_clone();
                    let _ = p.g_sub_(&(d * lr));
                }
            });
            let b = (hi - lo) as f64;
            loss_sum += loss_v * b;
            seen += hi - lo;
            correct += logits
                .argmax(-1, false)
                .eq_tensor(&y)
                .sum(Kind::Int64)
                .int64_value(&[]);
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
            accuracy: correct as f64 / seen as f64,
            lr,
            seconds: secs,
            images_per_second: seen as f64 / secs,
        });
        if let Some(dir) = checkpoint_dir {
            save_checkpoint(
                dir,
                vs,
                &trainable,
                &buffers,
                &State {
                    epochs_done: epoch + 1,
                    config: cfg.clone(),
                    logs: logs.clone(),
                },
            )?;
        }
    }
    Ok(logs)
}

fn save_checkpoint(
    dir: &Path,
    vs: &nn::VarStore,
    trainable: &[(String, Tensor)],
    buffers: &[Tensor],
    state: &State,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let ckpt: PathBuf = dir.join("last.safetensors");
    let tmp = atomic_file::temp_path(&ckpt).with_extension("safetensors");
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.to_device(Device::Cpu)))
        .collect();
    for ((name, _), buf) in trainable.iter().zip(buffers) {
        named.push((format!("__momentum__.{name}"), buf.to_device(Device::Cpu)));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::write_safetensors(&named, &tmp).map_err(|e| tensor_err(&tmp, e))?;
    std::fs::rename(&tmp, &ckpt).map_err(|e| Error::io(&ckpt, e))?;
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    atomic_file::write_bytes_atomic(&dir.join("state.json"), &json)?;
    Ok(())
}
