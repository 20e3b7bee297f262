//! CLIP (Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
//! <https://arxiv.org/abs/2103.00020>) on libtorch, inference only: the ViT image tower, the
//! causal text transformer, both projections and the logit scale.
//!
//! Tensor names are those of Hugging Face `transformers`' `CLIPModel` safetensors
//! (`vision_model.embeddings.patch_embedding.weight`, `vision_model.pre_layrnorm.weight` (sic),
//! `text_model.encoder.layers.0.self_attn.q_proj.weight`, `visual_projection.weight`,
//! `text_projection.weight`, `logit_scale`, ...), so `openai/clip-vit-base-patch16`'s
//! `model.safetensors` loads unchanged. The configuration comes from that repository's
//! `config.json` ([`ClipConfig::from_hf_json`], missing keys take `transformers`' defaults) or is
//! inferred from the tensor shapes ([`ClipConfig::infer`], heads = width / 64 as in every OpenAI
//! CLIP).
//!
//! * image: `x = [cls; conv_p(pixels)] + pos`, `pre_layrnorm`, N pre-norm layers
//!   (`x += attn(ln1 x)`, `x += fc2 act(fc1 ln2 x)`), `post_layernorm(x[:, 0])`, `visual_projection`;
//! * text: `x = tok[ids] + pos`, N pre-norm layers with a causal mask, `final_layer_norm`, the
//!   hidden state at the first end-of-text token (`eos_token_id`; `argmax(ids)` for the legacy id
//!   2, as `transformers` does), `text_projection`;
//! * `logits_per_image = exp(logit_scale) · norm(img) · norm(txt)ᵀ`.
//!
//! `act` is `quick_gelu` (`x·σ(1.702x)`, OpenAI) or `gelu`. Checked against `transformers`' CLIPModel on
//! random weights (`tests/clip_parity.rs`, `scripts/gen_clip_parity.py`).
//! Image preprocessing is [`preprocess`] (Pillow bicubic resize of the shorter side, centre crop,
//! CLIP mean/std), the library's one [`Preprocess`] pipeline.
//!
//! As an image classifier, CLIP is a [`crate::network::Network`] like any other
//! ([`ClipClassifier`]: features = unit-norm image embeddings, logits = zero-shot logits, head =
//! the class text embeddings times the logit scale), so it runs through the one extraction loop.
//!
//! Files: [`config`] (configuration), [`model`] (the towers), [`text_encoder`] (sentences to
//! embeddings), [`classifier`] (the network).

pub mod classifier;
pub mod config;
pub mod model;
pub mod text_encoder;

pub use classifier::ClipClassifier;
pub use config::{ClipConfig, TowerConfig};
pub use model::{ClipModel, l2_normalize};
pub use text_encoder::ClipTextEncoder;

use crate::data::{Interpolation, Preprocess};
use image::RgbImage;

/// CLIP's image normalisation mean (after `x/255`).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's image normalisation standard deviation.
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// CLIP's test-time preprocessing at `size` pixels: `Resize(size, bicubic)` of the shorter side
/// (Pillow, bit-exact; torchvision's output size), `CenterCrop(size)`, `x/255`, CLIP mean/std.
pub fn preprocess(size: u32) -> Preprocess {
    Preprocess {
        resize: Some(size),
        interpolation: Interpolation::Bicubic,
        crop: Some(size),
        pad: 0,
        mean: CLIP_MEAN,
        std: CLIP_STD,
    }
}

/// [`preprocess`] of one image, appended to `out` as CHW f32.
pub fn preprocess_into(img: RgbImage, size: u32, out: &mut Vec<f32>) {
    preprocess(size).apply_into(img, out);
}

/// A description of [`preprocess`] for feature-file metadata.
pub fn preprocess_description(size: u32) -> String {
    preprocess(size).describe()
}
