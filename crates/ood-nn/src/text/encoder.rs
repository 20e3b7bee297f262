//! [`TextEncoder`]: what NegLabel's mining (and any other use of label embeddings) needs from a
//! text model — sentences in, unit-norm embeddings out. Implemented by the MiniLM
//! [`SentenceEncoder`] and by CLIP's text tower ([`crate::clip::ClipTextEncoder`]).

use crate::Result;
use crate::text::SentenceEncoder;
use ndarray::Array2;

/// A sentence encoder: `(n, dim)` unit-norm embeddings of `texts`, computed in batches of
/// `batch_size` without gradients.
pub trait TextEncoder {
    /// Embeds `texts`.
    fn encode(&self, texts: &[&str], batch_size: usize) -> Result<Array2<f32>>;
}

impl TextEncoder for SentenceEncoder {
    fn encode(&self, texts: &[&str], batch_size: usize) -> Result<Array2<f32>> {
        SentenceEncoder::encode(self, texts, batch_size)
    }
}

impl TextEncoder for crate::clip::ClipTextEncoder<'_> {
    fn encode(&self, texts: &[&str], batch_size: usize) -> Result<Array2<f32>> {
        crate::clip::ClipTextEncoder::encode(self, texts, batch_size)
    }
}
