//! A BERT encoder (Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
//! Understanding", <https://arxiv.org/abs/1810.04805>) on libtorch, inference only.
//!
//! The layout and tensor names follow Hugging Face `transformers`' `BertModel` (eager attention), so
//! a `model.safetensors` saved from it loads as is (with or without the `bert.` prefix):
//!
//! * embeddings: `x = LayerNorm(word[ids] + position[0..t] + token_type[type_ids])`;
//! * each of the N layers (post-norm):
//!   `a = LayerNorm(x + O(softmax(Q K^T / sqrt(d_head) + mask) V))`,
//!   `x = LayerNorm(a + W2 gelu(W1 a + b1) + b2)`, with `gelu` the exact erf form (HF `"gelu"`);
//! * the padding mask removes padded keys from every softmax (padded query rows are computed but
//!   meaningless; callers pool over real tokens only).
//!
//! Dropout is absent (inference). The pooler (`pooler.dense`) is not used by sentence encoders and
//! is ignored if present. Checked against the PyTorch reference forward in
//! `scripts/bench_minilm_torch.py` and the sentence-transformers golden embeddings of
//! all-MiniLM-L6-v2 (see `tests/text_minilm.rs`).

use crate::layers::{LayerNorm, Linear, Weights};
use crate::{Error, Result};
use serde::Deserialize;
use std::path::Path;
use tch::{Device, Tensor};

/// The fields of a Hugging Face BERT `config.json` that the forward pass needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size (rows of the word embedding).
    pub vocab_size: i64,
    /// Hidden width `h`.
    pub hidden_size: i64,
    /// Number of transformer layers.
    pub num_hidden_layers: i64,
    /// Number of attention heads (must divide `hidden_size`).
    pub num_attention_heads: i64,
    /// Width of the feed-forward layer.
    pub intermediate_size: i64,
    /// Longest sequence the position embedding covers.
    pub max_position_embeddings: i64,
    /// Rows of the token-type embedding.
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: i64,
    /// LayerNorm epsilon.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Activation of the feed-forward layer: `"gelu"` (exact), `"gelu_new"` /
    /// `"gelu_pytorch_tanh"` (tanh approximation) or `"relu"`.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Only `"absolute"` is supported.
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
}

fn default_type_vocab_size() -> i64 {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    Gelu,
    GeluTanh,
    Relu,
}

impl BertConfig {
    /// Reads and checks a `config.json`; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: BertConfig = serde_json::from_str(&text).map_err(|e| Error::Data {
            path: path.to_path_buf(),
            reason: format!("not a BERT config: {e}"),
        })?;
        config.check().map_err(|reason| Error::Data {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(config)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        for (name, v) in positive {
            if v <= 0 {
                return Err(format!("{name} must be positive, got {v}"));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!(
                "layer_norm_eps must be positive, got {}",
                self.layer_norm_eps
            ));
        }
        self.activation()?;
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                self.position_embedding_type
            ));
        }
        Ok(())
    }

    fn activation(&self) -> std::result::Result<Activation, String> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(format!("hidden_act {other:?} is not supported")),
        }
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// A BERT encoder with weights on one device.
pub struct BertModel {
    config: BertConfig,
    activation: Activation,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    device: Device,
}

impl std::fmt::Debug for BertModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertModel")
            .field("config", &self.config)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl BertModel {
    /// Loads the weights of a BERT model from a safetensors file with Hugging Face tensor names
    /// (`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`, ...,
    /// optionally prefixed by `bert.`). Every tensor's shape is checked against `config`; errors
    /// name the file and the tensor.
    pub fn load(weights: impl AsRef<Path>, config: BertConfig, device: Device) -> Result<Self> {
        let path = weights.as_ref();
        config.check().map_err(Error::Config)?;
        let activation = config.activation().map_err(Error::Config)?;
        let mut w = Weights::open(path, device, Some("bert."))?;
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let word = w.take("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position = w.take(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type = w.take(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let emb_norm = w.layer_norm("embeddings.LayerNorm", h, eps)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers as usize);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let inter = config.intermediate_size;
            layers.push(Layer {
                query: w.linear(&format!("{p}.attention.self.query"), h, h, true)?,
                key: w.linear(&format!("{p}.attention.self.key"), h, h, true)?,
                value: w.linear(&format!("{p}.attention.self.value"), h, h, true)?,
                attn_out: w.linear(&format!("{p}.attention.output.dense"), h, h, true)?,
                attn_norm: w.layer_norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
                intermediate: w.linear(&format!("{p}.intermediate.dense"), inter, h, true)?,
                output: w.linear(&format!("{p}.output.dense"), h, inter, true)?,
                out_norm: w.layer_norm(&format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        Ok(BertModel {
            config,
            activation,
            word,
            position,
            token_type,
            emb_norm,
            layers,
            device,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The device holding the weights.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Hidden states of the last layer, `(b, t, h)` f32, for token ids `(b, t)`, token-type ids
    /// `(b, t)` and an attention mask `(b, t)` (nonzero = real token, 0 = padding), all integer
    /// tensors on [`BertModel::device`]. Run it inside `tch::no_grad` for inference.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        let size = input_ids.size();
        let [b, t] = size[..] else {
            return Err(Error::Config(format!(
                "input ids must be (batch, tokens), got shape {size:?}"
            )));
        };
        for (name, other) in [
            ("token type ids", token_type_ids),
            ("attention mask", attention_mask),
        ] {
            if other.size() != size {
                return Err(Error::Config(format!(
                    "{name} have shape {:?}, input ids {size:?}",
                    other.size()
                )));
            }
        }
        if t > self.config.max_position_embeddings {
            return Err(Error::Config(format!(
                "sequence of {t} tokens exceeds max_position_embeddings {}",
                self.config.max_position_embeddings
            )));
        }
        let h = self.config.hidden_size;
        let nh = self.config.num_attention_heads;
        let dh = h / nh;

        let words = Tensor::f_embedding(&self.word, input_ids, -1, false, false)?;
        let types = Tensor::f_embedding(&self.token_type, token_type_ids, -1, false, false)?;
        let positions = self.position.f_narrow(0, 0, t)?.f_unsqueeze(0)?;
        let mut x = self
            .emb_norm
            .forward(&words.f_add(&types)?.f_add(&positions)?)?;

        // (b, 1, 1, t): true where the key is a real token.
        let keep = attention_mask
            .f_ne(0)?
            .f_view([b, 1, 1, t])?
            .f_to_device(self.device)?;
        let heads =
            |y: Tensor| -> Result<Tensor> { Ok(y.f_view([b, t, nh, dh])?.f_transpose(1, 2)?) };
        for layer in &self.layers {
            let q = heads(layer.query.forward(&x)?)?;
            let k = heads(layer.key.forward(&x)?)?;
            let v = heads(layer.value.forward(&x)?)?;
            let ctx = Tensor::f_scaled_dot_product_attention(
                &q,
                &k,
                &v,
                Some(&keep),
                0.0,
                false,
                None,
                false,
            )?;
            let ctx = ctx.f_transpose(1, 2)?.f_contiguous()?.f_view([b, t, h])?;
            let a = layer
                .attn_norm
                .forward(&layer.attn_out.forward(&ctx)?.f_add(&x)?)?;
            let inter = layer.intermediate.forward(&a)?;
            let inter = match self.activation {
                Activation::Gelu => inter.f_gelu("none")?,
                Activation::GeluTanh => inter.f_gelu("tanh")?,
                Activation::Relu => inter.f_relu()?,
            };
            x = layer
                .out_norm
                .forward(&layer.output.forward(&inter)?.f_add(&a)?)?;
        }
        Ok(x)
    }
}
