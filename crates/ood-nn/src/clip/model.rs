//! The CLIP model on libtorch: the ViT image tower, the causal text transformer, both
//! projections and the logit scale (see the [module doc](super) for the computation).

use super::config::{ClipConfig, TowerConfig};
use crate::layers::{LayerNorm, Linear, Weights};
use crate::{Error, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Act {
    QuickGelu,
    Gelu,
}

pub(crate) fn activation(name: &str) -> std::result::Result<Act, String> {
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
