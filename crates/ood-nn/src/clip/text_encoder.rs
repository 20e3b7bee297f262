//! CLIP's text tower as a sentence encoder (NegLabel's label and negative-word embeddings).

use super::model::{ClipModel, l2_normalize};
use crate::{Error, Result};
use tch::{Device, Tensor};

/// CLIP's text side as a sentence encoder: [`ClipTokenizer`](crate::text::ClipTokenizer)
/// (context 77, truncation keeps `<end_of_text>`) + [`ClipModel::encode_text`] + L2
/// normalisation.
pub struct ClipTextEncoder<'a> {
    /// The model.
    pub model: &'a ClipModel,
    /// The tokenizer.
    pub tokenizer: &'a crate::text::ClipTokenizer,
}

impl ClipTextEncoder<'_> {
    /// Unit-norm text embeddings `(n, projection_dim)` in batches of `batch_size`, without
    /// gradients.
    pub fn encode(&self, texts: &[&str], batch_size: usize) -> Result<ndarray::Array2<f32>> {
        if batch_size == 0 {
            return Err(Error::Config("batch_size must be at least 1".into()));
        }
        let ctx = self.model.config().max_position_embeddings as usize;
        let d = self.model.config().projection_dim as usize;
        let mut out = Vec::with_capacity(texts.len() * d);
        for chunk in texts.chunks(batch_size) {
            let ids = self.tokenizer.tokenize_batch(chunk, ctx)?;
            let ids = Tensor::from_slice(ids.as_slice().expect("standard layout"))
                .f_view([chunk.len() as i64, ctx as i64])?;
            let emb = tch::no_grad(|| -> Result<Tensor> {
                l2_normalize(&self.model.encode_text(&ids)?)
            })?;
            let emb = emb.f_to_device(Device::Cpu)?.f_contiguous()?.f_view(-1)?;
            out.extend(Vec::<f32>::try_from(&emb)?);
        }
        ndarray::Array2::from_shape_vec((texts.len(), d), out)
            .map_err(|e| Error::Config(format!("embedding buffer has the wrong size: {e}")))
    }
}
