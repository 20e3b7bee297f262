//! The weight reader and the two plain layers shared by the transformer encoders (CLIP's towers
//! and the BERT sentence encoder): tensors are taken by name from a safetensors file with their
//! shape checked against the config and converted to f32 on the model's device.

use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// `y = x Wᵀ + b`.
pub(crate) struct Linear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_linear(&self.weight, self.bias.as_ref())?)
    }
}

/// Layer normalisation over the last dimension.
pub(crate) struct LayerNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) eps: f64,
}

impl LayerNorm {
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.weight.size()[0];
        Ok(x.f_layer_norm([h], Some(&self.weight), Some(&self.bias), self.eps, false)?)
    }
}

/// Named tensors of one safetensors file, handed out once each.
pub(crate) struct Weights {
    pub(crate) path: PathBuf,
    pub(crate) tensors: HashMap<String, Tensor>,
    pub(crate) device: Device,
}

impl Weights {
    /// Reads `path` (an error names it when missing or unreadable), dropping `strip_prefix`
    /// from the names that carry it.
    pub(crate) fn open(path: &Path, device: Device, strip_prefix: Option<&str>) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Weights {
                path: path.to_path_buf(),
                reason: "file not found".into(),
            });
        }
        let list = Tensor::read_safetensors(path).map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            reason: format!("cannot read safetensors: {e}"),
        })?;
        let tensors = list
            .into_iter()
            .map(
                |(name, t)| match strip_prefix.and_then(|p| name.strip_prefix(p)) {
                    Some(stripped) => (stripped.to_string(), t),
                    None => (name, t),
                },
            )
            .collect();
        Ok(Weights {
            path: path.to_path_buf(),
            tensors,
            device,
        })
    }

    /// Removes tensor `name`, checks its shape and float dtype, converts it to f32 on the device.
    pub(crate) fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let t = self.tensors.remove(name).ok_or_else(|| Error::Weights {
            path: self.path.clone(),
            reason: format!("missing tensor {name:?}"),
        })?;
        if t.size() != shape {
            return Err(Error::Weights {
                path: self.path.clone(),
                reason: format!(
                    "tensor {name:?} has shape {:?}, config implies {shape:?}",
                    t.size()
                ),
            });
        }
        if !matches!(
            t.kind(),
            Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double
        ) {
            return Err(Error::Weights {
                path: self.path.clone(),
                reason: format!("tensor {name:?} has dtype {:?}, expected a float", t.kind()),
            });
        }
        Ok(t.f_to_kind(Kind::Float)?.f_to_device(self.device)?)
    }

    /// `p.weight` `(out, inp)` and, with `bias`, `p.bias` `(out)`.
    pub(crate) fn linear(&mut self, p: &str, out: i64, inp: i64, bias: bool) -> Result<Linear> {
        Ok(Linear {
            weight: self.take(&format!("{p}.weight"), &[out, inp])?,
            bias: if bias {
                Some(self.take(&format!("{p}.bias"), &[out])?)
            } else {
                None
            },
        })
    }

    /// `p.weight` and `p.bias`, both `(h)`.
    pub(crate) fn layer_norm(&mut self, p: &str, h: i64, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.take(&format!("{p}.weight"), &[h])?,
            bias: self.take(&format!("{p}.bias"), &[h])?,
            eps,
        })
    }
}
