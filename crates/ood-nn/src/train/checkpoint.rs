//! The checkpoint written after every epoch: `last.safetensors` with all variables, the
//! optimiser state and, in its metadata, the epoch, the config and the epoch logs, written
//! atomically as one file (so weights and state can never come from different epochs), plus
//! `state.json`, a readable copy of that state.

use super::optim::OptimizerState;
use super::{EpochLog, TrainConfig};
use crate::error::{Error, Result};
use ood_core::atomic_file;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Tensor, nn};

/// The checkpoint file in the checkpoint folder.
const CHECKPOINT: &str = "last.safetensors";
/// The metadata key of the checkpoint that holds its training state (JSON of [`State`]).
const STATE_KEY: &str = "oodkit_train_state";

/// The training state saved with the weights.
#[derive(Serialize, Deserialize)]
pub(super) struct State {
    /// Epochs completed.
    pub(super) epochs_done: usize,
    /// The run's config (a resumed run must have the same).
    pub(super) config: TrainConfig,
    /// Logs of the completed epochs.
    pub(super) logs: Vec<EpochLog>,
}

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

/// Restores the variables of `vs` and the optimiser state from the checkpoint in `dir`, if there
/// is one, and returns the epochs it completed and their logs (`0` and none without a
/// checkpoint). A checkpoint of another config is an error.
pub(super) fn resume(
    dir: &Path,
    vs: &nn::VarStore,
    opt: &mut OptimizerState,
    cfg: &TrainConfig,
) -> Result<(usize, Vec<EpochLog>)> {
    let ckpt = dir.join(CHECKPOINT);
    if !(ckpt.exists() || dir.join("state.json").exists()) {
        return Ok((0, Vec::new()));
    }
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
        for (prefix, bufs) in opt.prefixes.iter().zip(opt.buffers.iter_mut()) {
            for ((name, _), buf) in opt.trainable.iter().zip(bufs.iter_mut()) {
                buf.copy_(&get(&format!("{prefix}.{name}"))?);
            }
        }
        Ok(())
    })?;
    Ok((saved_state.epochs_done, saved_state.logs))
}

/// Writes the checkpoint of `vs`, the optimiser state and `state` into `dir`.
pub(super) fn save(
    dir: &Path,
    vs: &nn::VarStore,
    opt: &OptimizerState,
    state: &State,
) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    for (prefix, bufs) in opt.prefixes.iter().zip(&opt.buffers) {
        for ((name, _), buf) in opt.trainable.iter().zip(bufs) {
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
