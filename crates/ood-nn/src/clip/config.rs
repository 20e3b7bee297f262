//! CLIP's configuration: from Hugging Face's `config.json` ([`ClipConfig::from_hf_json`],
//! missing keys take `transformers`' defaults) or inferred from the tensor shapes
//! ([`ClipConfig::infer`]).

use crate::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// One tower's transformer configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TowerConfig {
    /// Width.
    pub hidden_size: i64,
    /// Width of the MLP.
    pub intermediate_size: i64,
    /// Attention heads.
    pub num_attention_heads: i64,
    /// Layers.
    pub num_hidden_layers: i64,
    /// `"quick_gelu"` or `"gelu"`.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}

/// Full CLIP configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    /// Image tower.
    pub vision: TowerConfig,
    /// Input image size (square).
    pub image_size: i64,
    /// Patch size of the ViT stem.
    pub patch_size: i64,
    /// Text tower.
    pub text: TowerConfig,
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Context length (77).
    pub max_position_embeddings: i64,
    /// End-of-text token id used for pooling (49407; 2 = legacy argmax).
    pub eos_token_id: i64,
    /// Joint embedding dimension.
    pub projection_dim: i64,
}

#[derive(Deserialize)]
struct HfText {
    #[serde(default = "d_vocab")]
    vocab_size: i64,
    #[serde(default = "d_512")]
    hidden_size: i64,
    #[serde(default = "d_2048")]
    intermediate_size: i64,
    #[serde(default = "d_12")]
    num_hidden_layers: i64,
    #[serde(default = "d_8")]
    num_attention_heads: i64,
    #[serde(default = "d_77")]
    max_position_embeddings: i64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "d_eos")]
    eos_token_id: i64,
}
#[derive(Deserialize)]
struct HfVision {
    #[serde(default = "d_768")]
    hidden_size: i64,
    #[serde(default = "d_3072")]
    intermediate_size: i64,
    #[serde(default = "d_12")]
    num_hidden_layers: i64,
    #[serde(default = "d_12")]
    num_attention_heads: i64,
    #[serde(default = "d_224")]
    image_size: i64,
    #[serde(default = "d_32")]
    patch_size: i64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
}
#[derive(Deserialize)]
struct HfClip {
    #[serde(default = "d_512")]
    projection_dim: i64,
    text_config: Option<serde_json::Value>,
    vision_config: Option<serde_json::Value>,
    /// Older `transformers` configs (e.g. early `openai/clip-vit-*` uploads).
    text_config_dict: Option<serde_json::Value>,
    vision_config_dict: Option<serde_json::Value>,
}
fn d_vocab() -> i64 {
    49408
}
fn d_eos() -> i64 {
    49407
}
fn d_512() -> i64 {
    512
}
fn d_2048() -> i64 {
    2048
}
fn d_12() -> i64 {
    12
}
fn d_8() -> i64 {
    8
}
fn d_77() -> i64 {
    77
}
fn d_768() -> i64 {
    768
}
fn d_3072() -> i64 {
    3072
}
fn d_224() -> i64 {
    224
}
fn d_32() -> i64 {
    32
}

impl ClipConfig {
    /// OpenAI CLIP ViT-B/`patch` (16 or 32) at 224 px.
    pub fn vit_b(patch: i64) -> Self {
        ClipConfig {
            vision: TowerConfig {
                hidden_size: 768,
                intermediate_size: 3072,
                num_attention_heads: 12,
                num_hidden_layers: 12,
                hidden_act: default_act(),
                layer_norm_eps: 1e-5,
            },
            image_size: 224,
            patch_size: patch,
            text: TowerConfig {
                hidden_size: 512,
                intermediate_size: 2048,
                num_attention_heads: 8,
                num_hidden_layers: 12,
                hidden_act: default_act(),
                layer_norm_eps: 1e-5,
            },
            vocab_size: 49408,
            max_position_embeddings: 77,
            eos_token_id: 49407,
            projection_dim: 512,
        }
    }

    /// Reads a Hugging Face `CLIPModel` `config.json` (keys it leaves out take the
    /// `transformers` defaults, as `save_pretrained` writes only the differences).
    pub fn from_hf_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |e: serde_json::Error| Error::Data {
            path: path.to_path_buf(),
            reason: format!("not a CLIP config: {e}"),
        };
        let c: HfClip = serde_json::from_str(&text).map_err(bad)?;
        let empty = || serde_json::Value::Object(Default::default());
        let pick = |a: Option<serde_json::Value>, b: Option<serde_json::Value>| {
            a.filter(|v| !v.is_null())
                .or(b.filter(|v| !v.is_null()))
                .unwrap_or_else(empty)
        };
        let t: HfText =
            serde_json::from_value(pick(c.text_config, c.text_config_dict)).map_err(bad)?;
        let v: HfVision =
            serde_json::from_value(pick(c.vision_config, c.vision_config_dict)).map_err(bad)?;
        let config = ClipConfig {
            vision: TowerConfig {
                hidden_size: v.hidden_size,
                intermediate_size: v.intermediate_size,
                num_attention_heads: v.num_attention_heads,
                num_hidden_layers: v.num_hidden_layers,
                hidden_act: v.hidden_act,
                layer_norm_eps: v.layer_norm_eps,
            },
            image_size: v.image_size,
            patch_size: v.patch_size,
            text: TowerConfig {
                hidden_size: t.hidden_size,
                intermediate_size: t.intermediate_size,
                num_attention_heads: t.num_attention_heads,
                num_hidden_layers: t.num_hidden_layers,
                hidden_act: t.hidden_act,
                layer_norm_eps: t.layer_norm_eps,
            },
            vocab_size: t.vocab_size,
            max_position_embeddings: t.max_position_embeddings,
            eos_token_id: t.eos_token_id,
            projection_dim: c.projection_dim,
        };
        config.check().map_err(|reason| Error::Data {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(config)
    }

    /// Infers the configuration from the tensor shapes of a `CLIPModel` safetensors file: widths,
    /// MLP widths, layer counts, patch and image size, vocabulary, context and projection sizes;
    /// heads = width / 64 (true of all OpenAI CLIP models).
    pub fn infer(weights: impl AsRef<Path>) -> Result<Self> {
        let path = weights.as_ref();
        let file = ood_core::safetensors::SafeTensorsFile::open(path)?;
        let shape = |name: &str| -> Result<Vec<usize>> {
            Ok(file
                .info(name)
                .map_err(|_| Error::Weights {
                    path: path.to_path_buf(),
                    reason: format!("missing tensor {name:?} (not a Hugging Face CLIPModel file)"),
                })?
                .shape
                .clone())
        };
        let layers = |prefix: &str| {
            (0..)
                .take_while(|i| {
                    file.info(&format!("{prefix}.encoder.layers.{i}.mlp.fc1.weight"))
                        .is_ok()
                })
                .count() as i64
        };
        let patch = shape("vision_model.embeddings.patch_embedding.weight")?;
        let vpos = shape("vision_model.embeddings.position_embedding.weight")?;
        let vfc1 = shape("vision_model.encoder.layers.0.mlp.fc1.weight")?;
        let tok = shape("text_model.embeddings.token_embedding.weight")?;
        let tpos = shape("text_model.embeddings.position_embedding.weight")?;
        let tfc1 = shape("text_model.encoder.layers.0.mlp.fc1.weight")?;
        let proj = shape("visual_projection.weight")?;
        let (vw, tw) = (patch[0] as i64, tok[1] as i64);
        let grid = ((vpos[0] - 1) as f64).sqrt().round() as i64;
        let tower = |w: i64, inter: usize, n: i64| TowerConfig {
            hidden_size: w,
            intermediate_size: inter as i64,
            num_attention_heads: (w / 64).max(1),
            num_hidden_layers: n,
            hidden_act: default_act(),
            layer_norm_eps: 1e-5,
        };
        let config = ClipConfig {
            vision: tower(vw, vfc1[0], layers("vision_model")),
            image_size: grid * patch[2] as i64,
            patch_size: patch[2] as i64,
            text: tower(tw, tfc1[0], layers("text_model")),
            vocab_size: tok[0] as i64,
            max_position_embeddings: tpos[0] as i64,
            eos_token_id: 49407,
            projection_dim: proj[0] as i64,
        };
        config.check().map_err(|reason| Error::Weights {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(config)
    }

    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        for (name, t) in [("vision", &self.vision), ("text", &self.text)] {
            if t.hidden_size <= 0 || t.num_attention_heads <= 0 || t.num_hidden_layers <= 0 {
                return Err(format!("{name} tower: sizes must be positive"));
            }
            if t.hidden_size % t.num_attention_heads != 0 {
                return Err(format!(
                    "{name} tower: hidden_size {} is not a multiple of num_attention_heads {}",
                    t.hidden_size, t.num_attention_heads
                ));
            }
            super::model::activation(&t.hidden_act)?;
        }
        if self.patch_size <= 0 || self.image_size % self.patch_size != 0 {
            return Err(format!(
                "image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        Ok(())
    }

    /// Number of image patches plus the class token.
    pub fn vision_tokens(&self) -> i64 {
        let g = self.image_size / self.patch_size;
        g * g + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_config_defaults_and_legacy_dict_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        // transformers' defaults are CLIP ViT-B/32.
        std::fs::write(&p, "{}").unwrap();
        assert_eq!(ClipConfig::from_hf_json(&p).unwrap(), ClipConfig::vit_b(32));
        std::fs::write(
            &p,
            r#"{"projection_dim": 512, "text_config": null,
                "text_config_dict": {"eos_token_id": 2},
                "vision_config_dict": {"patch_size": 16}}"#,
        )
        .unwrap();
        let c = ClipConfig::from_hf_json(&p).unwrap();
        assert_eq!(c.patch_size, 16);
        assert_eq!(c.eos_token_id, 2);
        assert_eq!(c.vision_tokens(), 197);
        std::fs::write(&p, r#"{"vision_config": {"patch_size": 15}}"#).unwrap();
        let e = ClipConfig::from_hf_json(&p).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("patch_size"), "{e}");
    }
}
