//! Exporting a trained network: its weights without the training-only modules (`proj.*`,
//! `probe.*`) as `model.safetensors`, and its classifier head as `head.safetensors`, the files
//! `ood extract` and `ood bench` load. What the head is depends on the method: the network's own
//! classifier, the online linear probe (SupCon, ReweightOOD), or the first `K` rows of the K+1
//! classifier (TagFog); see [`Method::exported_head`].

use crate::error::{Error, Result};
use crate::losses::Method;
use ood_core::atomic_file;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor, nn};

/// The files [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The network's weights (`model.safetensors`).
    pub model: PathBuf,
    /// The classifier head (`head.safetensors`).
    pub head: PathBuf,
}

/// Writes the network's weights in `vs` to `dir/model.safetensors` and its head (the linear layer
/// `head_name`, e.g. `fc`) to `dir/head.safetensors`, for a network trained by `method` on
/// `classes` ID classes. `proj.*` and `probe.*` are left out; the probe becomes the head of the
/// probe methods, and the head of the methods that train their outliers as class K keeps its
/// first `classes` rows. Each file is written atomically.
pub fn export(
    vs: &nn::VarStore,
    head_name: &str,
    method: &Method,
    classes: i64,
    dir: &Path,
) -> Result<Exported> {
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
            if method.outliers_as_class() {
                t = t.narrow(0, 0, classes).contiguous();
            }
        }
        named.push((name.clone(), t));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let model = dir.join("model.safetensors");
    let tmp = atomic_file::temp_path(&model).with_extension("safetensors");
    Tensor::write_safetensors(&named, &tmp).map_err(|e| Error::Weights {
        path: tmp.clone(),
        reason: format!("cannot write: {e}"),
    })?;
    std::fs::rename(&tmp, &model).map_err(|e| Error::io(&model, e))?;
    let get = |suffix: &str| -> Result<Vec<f32>> {
        let key = format!("{head_name}.{suffix}");
        let t = &named
            .iter()
            .find(|(n, _)| *n == key)
            .ok_or_else(|| Error::Weights {
                path: model.clone(),
                reason: format!("the network has no '{key}'"),
            })?
            .1;
        Ok(Vec::<f32>::try_from(t.flatten(0, -1).to_kind(Kind::Float))?)
    };
    let w = get("weight")?;
    let b = get("bias")?;
    let c = b.len();
    let weight =
        ndarray::Array2::from_shape_vec((c, w.len() / c), w).map_err(|e| Error::Weights {
            path: model.clone(),
            reason: format!("head '{head_name}': {e}"),
        })?;
    let head = ood_core::Head::new(weight, ndarray::Array1::from_vec(b))?;
    let head_path = dir.join("head.safetensors");
    head.save(&head_path)?;
    Ok(Exported {
        model,
        head: head_path,
    })
}
