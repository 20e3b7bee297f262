//! Text encoders: a BERT sentence encoder (all-MiniLM-L6-v2) for textual anchors and label
//! embeddings.
//!
//! * [`bert`]: the BERT forward pass with Hugging Face weights;
//! * [`clip_bpe`]: CLIP's byte-level BPE tokenizer ([`ClipTokenizer`]), without ftfy;
//! * [`sentence`]: tokenisation + BERT + mean pooling + L2 normalisation ([`SentenceEncoder`]);
//! * [`encoder`]: the [`TextEncoder`] trait (MiniLM, CLIP's text tower);
//! * [`neg_mining`]: NegLabel's negative-label mining with any [`TextEncoder`].

pub mod bert;
pub mod clip_bpe;
pub mod encoder;
pub mod neg_mining;
pub mod sentence;

pub use bert::{BertConfig, BertModel};
pub use clip_bpe::ClipTokenizer;
pub use encoder::TextEncoder;
pub use sentence::SentenceEncoder;

/// Class descriptions written for this project (one `class: sentence` line per class, in label
/// order): `cifar10` and `fashion_mnist`, for TagFog's textual anchors.
pub fn builtin_descriptions(name: &str) -> Option<&'static str> {
    match name {
        "cifar10" => Some(include_str!("../../data/descriptions/cifar10.txt")),
        "fashion_mnist" => Some(include_str!("../../data/descriptions/fashion_mnist.txt")),
        _ => None,
    }
}

/// The sentences of a descriptions text: one per non-empty line; a line `class: sentence` keeps
/// the text after the first `": "` (the class name is dropped, as TagFog's parser does for
/// CIFAR-100 and ImageNet100), a line without `": "` is kept whole.
pub fn parse_descriptions(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(": ") {
            Some((_, s)) => s.trim().to_string(),
            None => l.to_string(),
        })
        .collect()
}
