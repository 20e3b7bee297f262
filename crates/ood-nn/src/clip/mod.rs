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
//! Image preprocessing is [`preprocess_into`] (Pillow bicubic resize of the shorter side, centre crop,
//! CLIP mean/std).

use crate::data::preprocess::{
    center_crop, resize_bicubic_pil, shorter_side_size, to_chw_normalized,
};
use crate::layers::{LayerNorm, Linear, Weights};
use crate::{Error, Result};
use image::RgbImage;
use serde::Deserialize;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// CLIP's image normalisation mean (after `x/255`).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's image normalisation standard deviation.
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// CLIP's test-time preprocessing at `size` pixels, appended to `out` as CHW f32:
/// `Resize(size, bicubic)` of the shorter side (Pillow, bit-exact; torchvision's output size),
/// `CenterCrop(size)`, `x/255`, CLIP mean/std.
pub fn preprocess_into(img: RgbImage, size: u32, out: &mut Vec<f32>) {
    let (w, h) = img.dimensions();
    let (nw, nh) = shorter_side_size(w, h, size);
    let img = if (nw, nh) != (w, h) {
        resize_bicubic_pil(&img, nw, nh)
    } else {
        img
    };
    let img = center_crop(&img, size, size);
    to_chw_normalized(&img, CLIP_MEAN, CLIP_STD, out);
}

/// A description of [`preprocess_into`] for feature-file metadata.
pub fn preprocess_description(size: u32) -> String {
    format!(
        "rgb > resize_shorter({size}, pil_bicubic) > center_crop({size}) > x/255 > \
         normalize(mean={CLIP_MEAN:?}, std={CLIP_STD:?})"
    )
}

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

    fn check(&self) -> std::result::Result<(), String> {
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
            activation(&t.hidden_act)?;
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

#[derive(Debug, Clone, Copy)]
enum Act {
    QuickGelu,
    Gelu,
}

fn activation(name: &str) -> std::result::Result<Act, String> {
    match name {
        "quick_gelu" => Ok(Act::QuickGelu),
        "gelu" => Ok(Act::Gelu),
        other => Err(format!("hidden_act {other:?} is not supported")),
    }
}

struct Layer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

struct Encoder {
    layers: Vec<Layer>,
    heads: i64,
    act: Act,
}

impl Encoder {
    fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let (b, t, w) = x.size3()?;
        let nh = self.heads;
        let split =
            |y: Tensor| -> Result<Tensor> { Ok(y.f_view([b, t, nh, w / nh])?.f_transpose(1, 2)?) };
        let mut x = x.shallow_clone();
        for l in &self.layers {
            let h = l.ln1.forward(&x)?;
            let q = split(l.q.forward(&h)?)?;
            let k = split(l.k.forward(&h)?)?;
            let v = split(l.v.forward(&h)?)?;
            let ctx = Tensor::f_scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<&Tensor>,
                0.0,
                causal,
                None,
                false,
            )?;
            let ctx = ctx.f_transpose(1, 2)?.f_contiguous()?.f_view([b, t, w])?;
            x = x.f_add(&l.o.forward(&ctx)?)?;
            let h = l.fc1.forward(&l.ln2.forward(&x)?)?;
            let h = match self.act {
                Act::QuickGelu => h.f_mul(&h.f_mul_scalar(1.702)?.f_sigmoid()?)?,
                Act::Gelu => h.f_gelu("none")?,
            };
            x = x.f_add(&l.fc2.forward(&h)?)?;
        }
        Ok(x)
    }
}

impl Weights {
    fn encoder(&mut self, p: &str, c: &TowerConfig) -> Result<Encoder> {
        let (w, m, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let p = format!("{p}.encoder.layers.{i}");
            layers.push(Layer {
                ln1: self.layer_norm(&format!("{p}.layer_norm1"), w, eps)?,
                q: self.linear(&format!("{p}.self_attn.q_proj"), w, w, true)?,
                k: self.linear(&format!("{p}.self_attn.k_proj"), w, w, true)?,
                v: self.linear(&format!("{p}.self_attn.v_proj"), w, w, true)?,
                o: self.linear(&format!("{p}.self_attn.out_proj"), w, w, true)?,
                ln2: self.layer_norm(&format!("{p}.layer_norm2"), w, eps)?,
                fc1: self.linear(&format!("{p}.mlp.fc1"), m, w, true)?,
                fc2: self.linear(&format!("{p}.mlp.fc2"), w, m, true)?,
            });
        }
        Ok(Encoder {
            layers,
            heads: c.num_attention_heads,
            act: activation(&c.hidden_act).map_err(Error::Config)?,
        })
    }
}

/// A CLIP model (both towers) with weights on one device.
pub struct ClipModel {
    config: ClipConfig,
    device: Device,
    patch: Tensor,
    class_embedding: Tensor,
    vision_pos: Tensor,
    pre_ln: LayerNorm,
    vision: Encoder,
    post_ln: LayerNorm,
    visual_projection: Linear,
    token_embedding: Tensor,
    text_pos: Tensor,
    text: Encoder,
    final_ln: LayerNorm,
    text_projection: Linear,
    logit_scale: f64,
}

impl std::fmt::Debug for ClipModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipModel")
            .field("config", &self.config)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl ClipModel {
    /// Loads a Hugging Face `CLIPModel` safetensors file. The configuration is `config`, else the
    /// `config.json` next to the weights, else inferred from the tensor shapes. Every tensor's
    /// shape is checked; errors name the file and the tensor. Extra tensors (`position_ids`
    /// buffers) are ignored.
    pub fn load(
        weights: impl AsRef<Path>,
        config: Option<ClipConfig>,
        device: Device,
    ) -> Result<Self> {
        let path = weights.as_ref();
        if !path.is_file() {
            return Err(Error::Weights {
                path: path.to_path_buf(),
                reason: "file not found".into(),
            });
        }
        let config = match config {
            Some(c) => c,
            None => {
                let json = path.with_file_name("config.json");
                if json.is_file() {
                    ClipConfig::from_hf_json(&json)?
                } else {
                    ClipConfig::infer(path)?
                }
            }
        };
        config.check().map_err(Error::Config)?;
        let mut w = Weights::open(path, device, None)?;
        let (vw, tw, p) = (
            config.vision.hidden_size,
            config.text.hidden_size,
            config.projection_dim,
        );
        let ve = "vision_model.embeddings";
        let patch = w.take(
            &format!("{ve}.patch_embedding.weight"),
            &[vw, 3, config.patch_size, config.patch_size],
        )?;
        let class_embedding = w.take(&format!("{ve}.class_embedding"), &[vw])?;
        let vision_pos = w.take(
            &format!("{ve}.position_embedding.weight"),
            &[config.vision_tokens(), vw],
        )?;
        let veps = config.vision.layer_norm_eps;
        let pre_ln = w.layer_norm("vision_model.pre_layrnorm", vw, veps)?;
        let vision = w.encoder("vision_model", &config.vision)?;
        let post_ln = w.layer_norm("vision_model.post_layernorm", vw, veps)?;
        let visual_projection = w.linear("visual_projection", p, vw, false)?;
        let token_embedding = w.take(
            "text_model.embeddings.token_embedding.weight",
            &[config.vocab_size, tw],
        )?;
        let text_pos = w.take(
            "text_model.embeddings.position_embedding.weight",
            &[config.max_position_embeddings, tw],
        )?;
        let text = w.encoder("text_model", &config.text)?;
        let final_ln = w.layer_norm(
            "text_model.final_layer_norm",
            tw,
            config.text.layer_norm_eps,
        )?;
        let text_projection = w.linear("text_projection", p, tw, false)?;
        let logit_scale = w.take("logit_scale", &[])?.f_double_value(&[])?;
        Ok(ClipModel {
            config,
            device,
            patch,
            class_embedding,
            vision_pos,
            pre_ln,
            vision,
            post_ln,
            visual_projection,
            token_embedding,
            text_pos,
            text,
            final_ln,
            text_projection,
            logit_scale,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The device holding the weights.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The learned logit scale (log of the inverse temperature; `exp` of it multiplies cosines).
    pub fn logit_scale(&self) -> f64 {
        self.logit_scale
    }

    /// Image embeddings `(b, projection_dim)` (projected, not normalised) of normalised images
    /// `(b, 3, image_size, image_size)`. Run inside `tch::no_grad`.
    pub fn encode_image(&self, pixels: &Tensor) -> Result<Tensor> {
        let s = self.config.image_size;
        let size = pixels.size();
        if size.len() != 4 || size[1] != 3 || size[2] != s || size[3] != s {
            return Err(Error::Config(format!(
                "CLIP image input must be (batch, 3, {s}, {s}), got {size:?}"
            )));
        }
        let b = size[0];
        let w = self.config.vision.hidden_size;
        let x = pixels
            .f_to_kind(Kind::Float)?
            .f_to_device(self.device)?
            .f_conv2d(
                &self.patch,
                None::<&Tensor>,
                [self.config.patch_size; 2],
                [0, 0],
                [1, 1],
                1,
            )?
            .f_flatten(2, 3)?
            .f_transpose(1, 2)?;
        let cls = self
            .class_embedding
            .f_view([1, 1, w])?
            .f_expand([b, 1, w], false)?;
        let x = Tensor::f_cat(&[cls, x], 1)?.f_add(&self.vision_pos.f_unsqueeze(0)?)?;
        let x = self.pre_ln.forward(&x)?;
        let x = self.vision.forward(&x, false)?;
        let pooled = self.post_ln.forward(&x.f_select(1, 0)?)?;
        self.visual_projection.forward(&pooled)
    }

    /// Text embeddings `(b, projection_dim)` (projected, not normalised) of token ids `(b, t)`
    /// (`t ≤ max_position_embeddings`; padding after the end-of-text token is ignored). Run inside
    /// `tch::no_grad`.
    pub fn encode_text(&self, ids: &Tensor) -> Result<Tensor> {
        let size = ids.size();
        let [b, t] = size[..] else {
            return Err(Error::Config(format!(
                "token ids must be (batch, tokens), got shape {size:?}"
            )));
        };
        if t > self.config.max_position_embeddings {
            return Err(Error::Config(format!(
                "{t} tokens exceed the context of {}",
                self.config.max_position_embeddings
            )));
        }
        let ids = ids.f_to_kind(Kind::Int64)?.f_to_device(self.device)?;
        let x = Tensor::f_embedding(&self.token_embedding, &ids, -1, false, false)?
            .f_add(&self.text_pos.f_narrow(0, 0, t)?.f_unsqueeze(0)?)?;
        let x = self.text.forward(&x, true)?;
        let x = self.final_ln.forward(&x)?;
        let eot = if self.config.eos_token_id == 2 {
            ids.f_argmax(-1, false)?
        } else {
            ids.f_eq(self.config.eos_token_id)?
                .f_to_kind(Kind::Int)?
                .f_argmax(-1, false)?
        };
        let rows = Tensor::f_arange(b, (Kind::Int64, self.device))?;
        let pooled = x.f_index(&[Some(rows), Some(eot)])?;
        self.text_projection.forward(&pooled)
    }

    /// `logits_per_image (n_img, n_txt) = exp(logit_scale) · norm(img) · norm(txt)ᵀ` from
    /// embeddings.
    pub fn logits(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        let i = l2_normalize(image_embeds)?;
        let t = l2_normalize(text_embeds)?;
        Ok(i.f_matmul(&t.f_tr()?)?
            .f_mul_scalar(self.logit_scale.exp())?)
    }
}

/// Rows divided by their L2 norm.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let n = x.f_norm_scalaropt_dim(2, [-1i64].as_slice(), true)?;
    Ok(x.f_div(&n)?)
}

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
        let ctx = self.model.config.max_position_embeddings as usize;
        let d = self.model.config.projection_dim as usize;
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

/// Runs CLIP's image tower over `samples` (CLIP preprocessing at the model's image size, batches
/// of `batch_size`, images decoded in parallel) and returns [`crate::network::Extraction`]:
/// features = image embeddings (projected, not normalised; NegLabel and MCM normalise), logits =
/// the zero-shot logits `exp(logit_scale) · cos(image, text_head.weight rows)` against the ID
/// label text embeddings, labels = the data's labels. Metadata: `model` = `clip`, `layer` =
/// `image_embeds`, `preprocessing`.
pub fn extract_images(
    model: &ClipModel,
    samples: crate::data::SampleIter,
    text_head: &ood_core::Head,
    batch_size: usize,
    on_error: crate::data::OnError,
    progress: &mut dyn FnMut(usize),
) -> Result<crate::network::Extraction> {
    use rayon::prelude::*;
    if batch_size == 0 {
        return Err(Error::Config("batch size must be at least 1".into()));
    }
    let p = model.config.projection_dim as usize;
    if text_head.dim() != p {
        return Err(Error::Config(format!(
            "text head has {}-d rows but the CLIP projection is {p}-d",
            text_head.dim()
        )));
    }
    let size = model.config.image_size as u32;
    let text = Tensor::from_slice(
        text_head
            .weight
            .as_standard_layout()
            .as_slice()
            .expect("standard layout"),
    )
    .f_view([text_head.num_classes() as i64, p as i64])?
    .f_to_device(model.device)?;
    let (mut feats, mut logits, mut labels, mut skipped) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut done = 0usize;
    let mut samples = samples.peekable();
    while samples.peek().is_some() {
        let batch: Vec<_> = samples.by_ref().take(batch_size).collect();
        let n_in = batch.len();
        let prepared: Vec<Result<(i64, Vec<f32>)>> = batch
            .into_par_iter()
            .map(|s| {
                let s = s?;
                let label = s.label;
                let mut v = Vec::with_capacity((3 * size * size) as usize);
                preprocess_into(s.decode()?, size, &mut v);
                Ok((label, v))
            })
            .collect();
        let mut pix = Vec::new();
        let mut n = 0i64;
        for r in prepared {
            match r {
                Ok((l, v)) => {
                    labels.push(l);
                    pix.extend_from_slice(&v);
                    n += 1;
                }
                Err(e) => match on_error {
                    crate::data::OnError::Fail => return Err(e),
                    crate::data::OnError::Skip => skipped.push(e.to_string()),
                },
            }
        }
        done += n_in;
        if n > 0 {
            let x = Tensor::from_slice(&pix).f_view([n, 3, size as i64, size as i64])?;
            let (f, l) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
                let f = model.encode_image(&x)?;
                let l = model.logits(&f, &text)?;
                Ok((f, l))
            })?;
            let cpu = |t: Tensor| -> Result<Vec<f32>> {
                let t = t.f_to_device(Device::Cpu)?.f_contiguous()?.f_view(-1)?;
                Ok(Vec::<f32>::try_from(&t)?)
            };
            feats.extend(cpu(f)?);
            logits.extend(cpu(l)?);
        }
        progress(done);
    }
    let n = labels.len();
    if n == 0 {
        return Err(Error::Config(format!(
            "no images were extracted ({} skipped)",
            skipped.len()
        )));
    }
    let emb = ndarray::Array2::from_shape_vec((n, p), feats)
        .map_err(|e| Error::Config(format!("feature shape: {e}")))?;
    let lg = ndarray::Array2::from_shape_vec((n, text_head.num_classes()), logits)
        .map_err(|e| Error::Config(format!("logit shape: {e}")))?;
    let mut features = ood_core::Features::new(emb, lg, Some(labels))?;
    let md = &mut features.metadata;
    md.insert("model".into(), "clip".into());
    md.insert("layer".into(), "image_embeds".into());
    md.insert("preprocessing".into(), preprocess_description(size));
    md.insert("num_skipped".into(), skipped.len().to_string());
    Ok(crate::network::Extraction { features, skipped })
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
