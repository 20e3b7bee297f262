//! Sentence embeddings with a BERT encoder, as sentence-transformers computes them for
//! all-MiniLM-L6-v2 (Reimers & Gurevych, "Sentence-BERT", <https://arxiv.org/abs/1908.10084>):
//!
//! `e = normalize( sum_t mask_t * H_t / max(sum_t mask_t, 1e-9) )`, with `H` the last hidden states
//! `(t, h)` of [`BertModel`], `mask` 1 on real tokens (including `[CLS]` and `[SEP]`) and 0 on
//! padding, and `normalize(v) = v / max(|v|_2, 1e-12)` (`torch.nn.functional.normalize`).
//!
//! Tokenisation is the model's own `tokenizer.json` (Hugging Face `tokenizers`), with its stored
//! padding removed (we pad each batch to its longest sequence, which does not change the result)
//! and truncation set to `max_seq_length` from `sentence_bert_config.json` (256 for
//! all-MiniLM-L6-v2; the `tokenizer.json` of that model says 128, which sentence-transformers
//! overrides), capped by `max_position_embeddings`.

use super::bert::{BertConfig, BertModel};
use crate::{Error, Result};
use ndarray::Array2;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};
use tokenizers::{Tokenizer, TruncationParams};

/// The files of an encoder folder whose bytes define its embeddings (hashed by
/// [`SentenceEncoder::fingerprint`]).
pub const ENCODER_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

#[derive(Debug, Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

/// A sentence encoder: tokenizer + BERT + mean pooling + L2 normalisation.
pub struct SentenceEncoder {
    dir: PathBuf,
    tokenizer: Tokenizer,
    model: BertModel,
    max_seq_length: usize,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("dir", &self.dir)
            .field("model", &self.model)
            .field("max_seq_length", &self.max_seq_length)
            .finish_non_exhaustive()
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        reason: format!("invalid JSON: {e}"),
    })
}

impl SentenceEncoder {
    /// Loads a sentence-transformers folder: `config.json`, `tokenizer.json`, `model.safetensors`,
    /// and if present `sentence_bert_config.json` (`max_seq_length`) and `1_Pooling/config.json`
    /// (must ask for mean pooling). Errors name the missing or invalid file.
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::io(
                &dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "encoder folder not found"),
            ));
        }
        let config = BertConfig::from_file(dir.join("config.json"))?;

        let pooling_path = dir.join("1_Pooling").join("config.json");
        if pooling_path.is_file() {
            let p: PoolingConfig = read_json(&pooling_path)?;
            if !p.pooling_mode_mean_tokens
                || p.pooling_mode_cls_token
                || p.pooling_mode_max_tokens
                || p.pooling_mode_mean_sqrt_len_tokens
            {
                return Err(Error::Data {
                    path: pooling_path,
                    reason: "only mean pooling (pooling_mode_mean_tokens alone) is supported"
                        .into(),
                });
            }
        }

        let positions = config.max_position_embeddings as usize;
        let sbert_path = dir.join("sentence_bert_config.json");
        let max_seq_length = if sbert_path.is_file() {
            let s: SentenceBertConfig = read_json(&sbert_path)?;
            s.max_seq_length.unwrap_or(positions).min(positions)
        } else {
            positions
        };
        if max_seq_length < 2 {
            return Err(Error::Data {
                path: sbert_path,
                reason: format!(
                    "max_seq_length {max_seq_length} leaves no room for [CLS] and [SEP]"
                ),
            });
        }

        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(Error::io(
                &tok_path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer file not found"),
            ));
        }
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| Error::Data {
            path: tok_path.clone(),
            reason: format!("cannot load tokenizer: {e}"),
        })?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| Error::Data {
                path: tok_path.clone(),
                reason: format!("cannot set truncation to {max_seq_length}: {e}"),
            })?;
        let vocab = tokenizer.get_vocab_size(true) as i64;
        if vocab > config.vocab_size {
            return Err(Error::Data {
                path: tok_path,
                reason: format!(
                    "tokenizer has {vocab} tokens, the model's vocab_size is {}",
                    config.vocab_size
                ),
            });
        }

        let model = BertModel::load(dir.join("model.safetensors"), config, device)?;
        Ok(SentenceEncoder {
            dir,
            tokenizer,
            model,
            max_seq_length,
        })
    }

    /// Embedding width (384 for all-MiniLM-L6-v2).
    pub fn dim(&self) -> usize {
        self.model.config().hidden_size as usize
    }

    /// Longest token sequence (with `[CLS]` and `[SEP]`); longer inputs are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// The folder the encoder was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The underlying BERT model.
    pub fn model(&self) -> &BertModel {
        &self.model
    }

    /// Token ids of one sentence as the encoder sees it (special tokens added, truncated).
    pub fn token_ids(&self, sentence: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(sentence, true)
            .map_err(|e| self.tok_err(e))?;
        Ok(enc.get_ids().to_vec())
    }

    fn tok_err(&self, e: tokenizers::Error) -> Error {
        Error::Data {
            path: self.dir.join("tokenizer.json"),
            reason: format!("tokenisation failed: {e}"),
        }
    }

    /// Unit-norm sentence embeddings `(n, dim)`, row i for sentence i, computed without
    /// gradients in batches of `batch_size` sentences of similar length (sorted by token count,
    /// longest first, as sentence-transformers' `encode` does), each padded to its longest
    /// member: padding is masked out, so the grouping changes only the work, not the result.
    /// `n = 0` gives a `(0, dim)` array.
    pub fn encode(&self, sentences: &[&str], batch_size: usize) -> Result<Array2<f32>> {
        if batch_size == 0 {
            return Err(Error::Config("batch_size must be at least 1".into()));
        }
        let d = self.dim();
        let encs = self
            .tokenizer
            .encode_batch(sentences.to_vec(), true)
            .map_err(|e| self.tok_err(e))?;
        let mut order: Vec<usize> = (0..encs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encs[i].get_ids().len()));
        let mut out = vec![0f32; sentences.len() * d];
        for rows in order.chunks(batch_size) {
            let t = rows
                .iter()
                .map(|&i| encs[i].get_ids().len())
                .max()
                .unwrap_or(0);
            let b = rows.len();
            let mut ids = vec![0i64; b * t];
            let mut types = vec![0i64; b * t];
            let mut mask = vec![0i64; b * t];
            for (row, e) in rows.iter().map(|&i| &encs[i]).enumerate() {
                for (j, ((&id, &ty), &m)) in e
                    .get_ids()
                    .iter()
                    .zip(e.get_type_ids())
                    .zip(e.get_attention_mask())
                    .enumerate()
                {
                    ids[row * t + j] = i64::from(id);
                    types[row * t + j] = i64::from(ty);
                    mask[row * t + j] = i64::from(m);
                }
            }
            let emb = tch::no_grad(|| self.embed_ids(&ids, &types, &mask, b as i64, t as i64))?;
            for (&i, v) in rows.iter().zip(emb.chunks_exact(d)) {
                out[i * d..(i + 1) * d].copy_from_slice(v);
            }
        }
        Array2::from_shape_vec((sentences.len(), d), out)
            .map_err(|e| Error::Config(format!("embedding buffer has the wrong size: {e}")))
    }

    fn embed_ids(
        &self,
        ids: &[i64],
        types: &[i64],
        mask: &[i64],
        b: i64,
        t: i64,
    ) -> Result<Vec<f32>> {
        let device = self.model.device();
        let to = |v: &[i64]| -> Result<Tensor> {
            Ok(Tensor::from_slice(v).f_view([b, t])?.f_to_device(device)?)
        };
        let (ids, types, mask) = (to(ids)?, to(types)?, to(mask)?);
        let hidden = self.model.forward(&ids, &types, &mask)?; // (b, t, h)
        let m = mask.f_to_kind(Kind::Float)?.f_unsqueeze(-1)?; // (b, t, 1)
        let summed = hidden.f_mul(&m)?.f_sum_dim_intlist(1, false, Kind::Float)?; // (b, h)
        let count = m
            .f_sum_dim_intlist(1, false, Kind::Float)?
            .f_clamp_min(1e-9)?; // (b, 1)
        let mean = summed.f_div(&count)?;
        let norm = mean
            .f_norm_scalaropt_dim(2.0, 1, true)?
            .f_clamp_min(1e-12)?;
        let unit = mean
            .f_div(&norm)?
            .f_to_device(Device::Cpu)?
            .f_contiguous()?
            .f_view(-1)?;
        Ok(Vec::<f32>::try_from(&unit)?)
    }

    /// SHA-256 (hex) over the names and bytes of [`ENCODER_FILES`] in the encoder folder: changes
    /// whenever the tokenizer, configuration or weights change.
    pub fn fingerprint(&self) -> Result<String> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        for name in ENCODER_FILES {
            let path = self.dir.join(name);
            let mut f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            hasher.update(name.as_bytes());
            hasher.update([0u8]);
            loop {
                let n = f.read(&mut buf).map_err(|e| Error::io(&path, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
        Ok(format!("{:x}", hasher.finalize()))
    }
}
