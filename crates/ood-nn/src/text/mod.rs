//! Text encoders: a BERT sentence encoder (all-MiniLM-L6-v2) for textual anchors and label
//! embeddings.
//!
//! * [`bert`]: the BERT forward pass with Hugging Face weights;
//! * [`clip_bpe`]: CLIP's byte-level BPE tokenizer ([`ClipTokenizer`]), without ftfy;
//! * [`sentence`]: tokenisation + BERT + mean pooling + L2 normalisation ([`SentenceEncoder`]).

pub mod bert;
pub mod clip_bpe;
pub mod sentence;

pub use bert::{BertConfig, BertModel};
pub use clip_bpe::ClipTokenizer;
pub use sentence::SentenceEncoder;
