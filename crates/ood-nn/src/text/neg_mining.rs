//! NegLabel's negative-label mining (Jiang et al., ICLR 2024; spec 7.3) with any
//! [`TextEncoder`]: embed the ID-label prompts and the WordNet candidates' prompts, score each
//! candidate by the `percentile` quantile of its cosine similarity to the ID labels, and keep the
//! `fraction` farthest per part of speech (the selection rule is
//! [`ood_core::neg_mining::select`]). [`Mined::write`] writes the negatives file that
//! `ood eval --negatives` and the `neg_label` detector read.

use crate::text::TextEncoder;
use crate::{Error, Result};
use ndarray::{Array2, Axis};
use ood_core::neg_mining::{self, Candidate, PartOfSpeech};
use ood_core::safetensors::{TensorToWrite, write};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Mining settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MineOptions {
    /// Quantile of a candidate's similarities to the ID labels that scores it, in `[0, 1]`
    /// (NegLabel: 0.95).
    pub percentile: f64,
    /// Fraction of the candidates of each part of speech kept, in `(0, 1]`.
    pub fraction: f64,
    /// Encoder batch size.
    pub batch_size: usize,
}

/// The outcome of [`mine`].
#[derive(Debug, Clone)]
pub struct Mined {
    /// The ID labels, in label order.
    pub labels: Vec<String>,
    /// Every candidate, in WordNet order.
    pub candidates: Vec<Candidate>,
    /// Each candidate's prompt.
    pub prompts: Vec<String>,
    /// ID label embeddings `(classes, d)`.
    pub id_embeddings: Array2<f32>,
    /// Candidate embeddings `(candidates, d)`.
    pub candidate_embeddings: Array2<f32>,
    /// Each candidate's score (the similarity quantile; lower = farther from the ID labels).
    pub q: Vec<f64>,
    /// Indices of the chosen negatives: nouns then adjectives, each by ascending `q`.
    pub selected: Vec<usize>,
    /// Seconds spent embedding the candidates.
    pub encode_seconds: f64,
}

/// Embeds and selects (see the module doc). `progress(done, total)` is called after each chunk
/// of candidates.
pub fn mine(
    encoder: &dyn TextEncoder,
    labels: &[&str],
    candidates: Vec<Candidate>,
    opts: &MineOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Mined> {
    if !(opts.fraction > 0.0 && opts.fraction <= 1.0) {
        return Err(Error::Config(format!(
            "fraction must lie in (0, 1], got {}",
            opts.fraction
        )));
    }
    if !(0.0..=1.0).contains(&opts.percentile) {
        return Err(Error::Config(format!(
            "percentile must lie in [0, 1], got {}",
            opts.percentile
        )));
    }
    if opts.batch_size == 0 {
        return Err(Error::Config("batch size must be at least 1".into()));
    }
    if labels.is_empty() {
        return Err(Error::Config("no ID labels".into()));
    }
    let id_prompts: Vec<String> = labels.iter().map(|l| neg_mining::id_prompt(l)).collect();
    let id_refs: Vec<&str> = id_prompts.iter().map(String::as_str).collect();
    let id_embeddings = encoder.encode(&id_refs, opts.batch_size)?;
    let prompts: Vec<String> = candidates.iter().map(|c| c.pos.prompt(&c.word)).collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut parts = Vec::new();
    let chunk = (opts.batch_size * 20).max(1);
    let mut done = 0;
    for c in refs.chunks(chunk) {
        parts.push(encoder.encode(c, opts.batch_size)?);
        done += c.len();
        progress(done, refs.len());
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    let candidate_embeddings = ndarray::concatenate(Axis(0), &views)
        .map_err(|e| Error::Config(format!("candidate embeddings: {e}")))?;
    let encode_seconds = started.elapsed().as_secs_f64();
    let q = neg_mining::candidate_quantiles(
        candidate_embeddings.view(),
        id_embeddings.view(),
        opts.percentile,
    )?;
    let pos: Vec<PartOfSpeech> = candidates.iter().map(|c| c.pos).collect();
    let selected = neg_mining::select(&pos, &q, opts.fraction)?;
    Ok(Mined {
        labels: labels.iter().map(|l| l.to_string()).collect(),
        candidates,
        prompts,
        id_embeddings,
        candidate_embeddings,
        q,
        selected,
        encode_seconds,
    })
}

impl Mined {
    /// The chosen negatives' embeddings `(negatives, d)`, in [`Mined::selected`] order.
    pub fn negatives(&self) -> Array2<f32> {
        self.candidate_embeddings.select(Axis(0), &self.selected)
    }

    /// `(nouns, adjectives)` among all candidates and among the selected ones.
    pub fn counts(&self) -> ((usize, usize), (usize, usize)) {
        let nouns = |idx: &mut dyn Iterator<Item = usize>| {
            idx.filter(|&i| self.candidates[i].pos == PartOfSpeech::Noun)
                .count()
        };
        let n = nouns(&mut (0..self.candidates.len()));
        let s = nouns(&mut self.selected.iter().copied());
        ((n, self.candidates.len() - n), (s, self.selected.len() - s))
    }

    /// The selected words as a table: `rank word pos lexfile q prompt`.
    pub fn words_tsv(&self) -> String {
        let mut tsv = String::from("rank\tword\tpos\tlexfile\tq\tprompt\n");
        for (r, &i) in self.selected.iter().enumerate() {
            let c = &self.candidates[i];
            tsv += &format!(
                "{r}\t{}\t{}\t{}\t{:.8}\t{}\n",
                c.word,
                c.pos.as_str(),
                c.lexfile,
                self.q[i],
                self.prompts[i]
            );
        }
        tsv
    }

    /// Every candidate as a table: `index word pos lexfile q`.
    pub fn candidates_tsv(&self) -> String {
        let mut all = String::from("index\tword\tpos\tlexfile\tq\n");
        for (i, c) in self.candidates.iter().enumerate() {
            all += &format!(
                "{i}\t{}\t{}\t{}\t{:.8}\n",
                c.word,
                c.pos.as_str(),
                c.lexfile,
                self.q[i]
            );
        }
        all
    }

    /// Writes the negatives file: tensors `negatives` `(m, d)`, `weight` `(classes, d)` (the ID
    /// label embeddings, so the file is also a zero-bias head) and `bias`; with
    /// `save_candidates` also `candidates`, `candidate_q` and `selected`. Metadata: `kind` =
    /// `neglabel_negatives`, the run's `config` JSON, the `words` and the `id_labels`.
    pub fn write(
        &self,
        out: &Path,
        config: &serde_json::Value,
        save_candidates: bool,
    ) -> Result<()> {
        let mut meta = BTreeMap::new();
        meta.insert("kind".to_string(), "neglabel_negatives".to_string());
        meta.insert("config".to_string(), config.to_string());
        let words: Vec<&str> = self
            .selected
            .iter()
            .map(|&i| self.candidates[i].word.as_str())
            .collect();
        let json = |v: &[&str]| serde_json::to_string(v).expect("strings serialise");
        let labels: Vec<&str> = self.labels.iter().map(String::as_str).collect();
        meta.insert("words".to_string(), json(&words));
        meta.insert("id_labels".to_string(), json(&labels));
        let (c, d) = self.id_embeddings.dim();
        let flat = |m: &Array2<f32>| m.as_standard_layout().iter().copied().collect::<Vec<f32>>();
        let neg = self.negatives();
        let bias = vec![0f32; c];
        let (negv, idv) = (flat(&neg), flat(&self.id_embeddings));
        let mut tensors = vec![
            TensorToWrite::f32("negatives", vec![neg.nrows(), d], &negv),
            TensorToWrite::f32("weight", vec![c, d], &idv),
            TensorToWrite::f32("bias", vec![c], &bias),
        ];
        let (candv, qv, selv);
        if save_candidates {
            candv = flat(&self.candidate_embeddings);
            qv = self.q.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            selv = self
                .selected
                .iter()
                .map(|&i| i as i64)
                .collect::<Vec<i64>>();
            tensors.push(TensorToWrite::f32(
                "candidates",
                vec![self.candidate_embeddings.nrows(), d],
                &candv,
            ));
            tensors.push(TensorToWrite::f32("candidate_q", vec![qv.len()], &qv));
            tensors.push(TensorToWrite::i64("selected", vec![selv.len()], &selv));
        }
        write(out, &tensors, &meta)?;
        Ok(())
    }
}
