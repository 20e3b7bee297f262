//! CLIP as an image classifier over a set of class prompts: a [`Network`] whose features are the
//! unit-norm image embeddings and whose logits are CLIP's zero-shot logits
//! `exp(logit_scale) · norm(image) · norm(text)ᵀ` against the classes' text embeddings. The
//! head is therefore exactly linear in the features: weight = `exp(logit_scale) · norm(text)`,
//! bias = 0, and every detector that recomputes logits from the head (ReAct, ASH, ViM, ...)
//! sees CLIP's own logits. NegLabel and MCM normalise the features themselves, so they score
//! the same as on unnormalised embeddings.

use super::model::{ClipModel, l2_normalize};
use crate::data::Interpolation;
use crate::network::{Forward, InputSpec, Network};
use crate::{Error, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The model name of CLIP classifiers (`--model clip`).
pub const NAME: &str = "clip";

/// CLIP with its class text embeddings (see the module doc).
pub struct ClipClassifier {
    model: ClipModel,
    /// `exp(logit_scale) · norm(text)`, `(classes, projection_dim)` on the model's device.
    head_weight: Tensor,
    head: ood_core::Head,
    /// SHA-256 of the head's weights (f32, little-endian): what the logits depend on besides
    /// the CLIP weights.
    head_sha256: String,
}

impl std::fmt::Debug for ClipClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipClassifier")
            .field("model", &self.model)
            .field("classes", &self.head.num_classes())
            .finish_non_exhaustive()
    }
}

impl ClipClassifier {
    /// CLIP from `weights` (see [`ClipModel::load`]) with the class text embeddings in the rows of
    /// `text.weight` (e.g. the `weight` tensor `ood neglabel mine --encoder clip` writes; any
    /// scale, they are normalised).
    pub fn load(weights: &Path, text: &ood_core::Head, device: Device) -> Result<Self> {
        let model = ClipModel::load(weights, None, device)?;
        Self::new(model, text)
    }

    /// `model` with the class text embeddings in the rows of `text.weight`.
    pub fn new(model: ClipModel, text: &ood_core::Head) -> Result<Self> {
        let p = model.config().projection_dim as usize;
        if text.dim() != p {
            return Err(Error::Config(format!(
                "the class text embeddings are {}-d but the CLIP projection is {p}-d",
                text.dim()
            )));
        }
        let c = text.num_classes();
        let t = Tensor::from_slice(
            text.weight
                .as_standard_layout()
                .as_slice()
                .expect("standard layout"),
        )
        .f_view([c as i64, p as i64])?
        .f_to_kind(Kind::Float)?;
        let w = l2_normalize(&t)?.f_mul_scalar(model.logit_scale().exp())?;
        let flat = Vec::<f32>::try_from(&w.f_contiguous()?.f_view(-1)?)?;
        let weight = ndarray::Array2::from_shape_vec((c, p), flat)
            .map_err(|e| Error::Config(format!("text head shape: {e}")))?;
        let bytes: Vec<u8> = flat_bytes(&weight);
        let head_sha256 = ood_core::hashing::sha256_bytes(&bytes);
        let head = ood_core::Head::new(weight, ndarray::Array1::zeros(c))?;
        let head_weight = w.f_to_device(model.device())?;
        Ok(ClipClassifier {
            model,
            head_weight,
            head,
            head_sha256,
        })
    }

    /// The model.
    pub fn model(&self) -> &ClipModel {
        &self.model
    }

    fn forward(&self, images: &Tensor) -> Result<Forward> {
        let features = l2_normalize(&self.model.encode_image(images)?)?;
        let logits = features.f_matmul(&self.head_weight.f_tr()?)?;
        Ok(Forward { features, logits })
    }
}

/// The little-endian bytes of a matrix's values, row by row.
fn flat_bytes(m: &ndarray::Array2<f32>) -> Vec<u8> {
    m.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Network for ClipClassifier {
    fn logits_key(&self) -> Option<String> {
        Some(self.head_sha256.clone())
    }

    fn name(&self) -> String {
        NAME.into()
    }

    fn forward_t(&self, images: &Tensor, _train: bool) -> Forward {
        self.forward(images)
            .unwrap_or_else(|e| panic!("CLIP forward: {e}"))
    }

    fn head(&self) -> Result<ood_core::Head> {
        Ok(self.head.clone())
    }

    fn input_spec(&self) -> InputSpec {
        let size = self.model.config().image_size as u32;
        InputSpec {
            size,
            resize: size,
            interpolation: Interpolation::Bicubic,
            mean: super::CLIP_MEAN,
            std: super::CLIP_STD,
        }
    }

    fn device(&self) -> Device {
        self.model.device()
    }
}
