//! `ood neglabel mine`: NegLabel's negative-label mining (spec 7.3) with MiniLM or CLIP text
//! embeddings. The selection rule lives in `ood_core::neg_mining`; this file embeds and writes.

use crate::args::{NeglabelCommand, NeglabelMineArgs};
use anyhow::{Context, Result, bail};
use ndarray::{Array2, Axis};
use ood_core::neg_mining::{self, Candidate, PartOfSpeech};
use ood_core::safetensors::{TensorToWrite, write};
use ood_core::{atomic_file, hashing};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Runs `ood neglabel ...`.
pub fn run(c: NeglabelCommand) -> Result<()> {
    match c {
        NeglabelCommand::Mine(a) => mine(&a),
    }
}

/// A loaded text encoder.
enum Encoder {
    MiniLm(Box<ood_nn::text::SentenceEncoder>),
    Clip(Box<(ood_nn::clip::ClipModel, ood_nn::text::ClipTokenizer)>),
}

impl Encoder {
    fn encode(&self, texts: &[&str], batch: usize) -> Result<Array2<f32>> {
        Ok(match self {
            Encoder::MiniLm(e) => e.encode(texts, batch)?,
            Encoder::Clip(mt) => ood_nn::clip::ClipTextEncoder {
                model: &mt.0,
                tokenizer: &mt.1,
            }
            .encode(texts, batch)?,
        })
    }
}

fn env_path(var: &str, what: &str) -> Result<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .with_context(|| format!("no {what}: pass it explicitly or set ${var} (`. scripts/env`)"))
}

fn with_suffix(out: &Path, suffix: &str) -> PathBuf {
    let mut p = out.with_extension("");
    p.as_mut_os_string().push(suffix);
    p
}

fn mine(a: &NeglabelMineArgs) -> Result<()> {
    if !(a.fraction > 0.0 && a.fraction <= 1.0) {
        bail!("--fraction must lie in (0, 1], got {}", a.fraction);
    }
    if !(0.0..=1.0).contains(&a.percentile) {
        bail!("--percentile must lie in [0, 1], got {}", a.percentile);
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if let Some(t) = a.threads {
        if t < 1 {
            bail!("--threads must be at least 1, got {t}");
        }
        tch::set_num_threads(t);
    }
    let device = ood_nn::device::parse_device(&a.device)?;
    let started = Instant::now();
    let (out_tsv, out_candidates) = (
        with_suffix(&a.out, ".tsv"),
        with_suffix(&a.out, ".candidates.tsv"),
    );
    let out_config = crate::cmd::common::with_appended(&a.out, ".config.json");
    let mut ins = vec![("--labels", a.labels.as_path())];
    for (flag, p) in [("--weights", &a.weights), ("--bpe", &a.bpe)] {
        if let Some(p) = p {
            ins.push((flag, p.as_path()));
        }
    }
    let _guard = crate::cmd::common::guard_outputs(
        &ins,
        &[
            ("--out", a.out.as_path()),
            ("--out (its .tsv)", out_tsv.as_path()),
            ("--out (its .candidates.tsv)", out_candidates.as_path()),
            ("--out (its .config.json)", out_config.as_path()),
        ],
    )?;

    // ID labels.
    let text = std::fs::read_to_string(&a.labels)
        .with_context(|| format!("reading {}", a.labels.display()))?;
    let labels: Vec<&str> = text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l).trim())
        .collect();
    if labels.is_empty() {
        bail!("{}: no labels", a.labels.display());
    }
    if let Some(i) = labels.iter().position(|l| l.is_empty()) {
        bail!("{}: line {} is empty", a.labels.display(), i + 1);
    }

    // Candidates.
    let mut cands: Vec<Candidate> = neg_mining::wordnet_candidates(&a.wordnet)
        .with_context(|| format!("reading WordNet from {}", a.wordnet.display()))?;
    if let Some(n) = a.max_per_pos {
        let (mut nn, mut na) = (0, 0);
        cands.retain(|c| {
            let k = match c.pos {
                PartOfSpeech::Noun => &mut nn,
                PartOfSpeech::Adjective => &mut na,
            };
            *k += 1;
            *k <= n
        });
    }

    // Encoder.
    let (encoder, weights, bpe) = match a.encoder.as_str() {
        "minilm" => {
            let dir = match &a.weights {
                Some(p) => p.clone(),
                None => env_path("OOD_MINILM_DIR", "--weights (MiniLM folder)")?,
            };
            let e = ood_nn::text::SentenceEncoder::load(&dir, device)
                .with_context(|| format!("loading MiniLM {}", dir.display()))?;
            (Encoder::MiniLm(Box::new(e)), dir, None)
        }
        _ => {
            let Some(w) = &a.weights else {
                bail!(
                    "--encoder clip needs --weights MODEL.safetensors (a Hugging Face CLIPModel)"
                );
            };
            let bpe = match &a.bpe {
                Some(p) => p.clone(),
                None => env_path("OOD_CLIP_BPE", "--bpe (bpe_simple_vocab_16e6.txt.gz)")?,
            };
            let m = ood_nn::clip::ClipModel::load(w, None, device)
                .with_context(|| format!("loading CLIP {}", w.display()))?;
            let t = ood_nn::text::ClipTokenizer::from_file(&bpe)
                .with_context(|| format!("loading CLIP BPE {}", bpe.display()))?;
            (Encoder::Clip(Box::new((m, t))), w.clone(), Some(bpe))
        }
    };

    let id_prompts: Vec<String> = labels.iter().map(|l| neg_mining::id_prompt(l)).collect();
    let id_refs: Vec<&str> = id_prompts.iter().map(String::as_str).collect();
    let id_emb = encoder
        .encode(&id_refs, a.batch_size)
        .context("embedding the ID labels")?;
    let prompts: Vec<String> = cands.iter().map(|c| c.pos.prompt(&c.word)).collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let t_enc = Instant::now();
    let mut parts = Vec::new();
    let chunk = (a.batch_size * 20).max(1);
    for (i, c) in refs.chunks(chunk).enumerate() {
        parts.push(
            encoder
                .encode(c, a.batch_size)
                .context("embedding the candidates")?,
        );
        eprintln!(
            "embedded {}/{} candidates ({:.0} s)",
            (i * chunk + c.len()),
            refs.len(),
            t_enc.elapsed().as_secs_f64()
        );
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    let cand_emb = ndarray::concatenate(Axis(0), &views)?;
    let encode_s = t_enc.elapsed().as_secs_f64();

    let q = neg_mining::candidate_quantiles(cand_emb.view(), id_emb.view(), a.percentile)?;
    let pos: Vec<PartOfSpeech> = cands.iter().map(|c| c.pos).collect();
    let selected = neg_mining::select(&pos, &q, a.fraction)?;
    let neg = cand_emb.select(Axis(0), &selected);
    let count = |p: PartOfSpeech, idx: &mut dyn Iterator<Item = usize>| {
        idx.filter(|&i| cands[i].pos == p).count()
    };
    let n_noun = count(PartOfSpeech::Noun, &mut (0..cands.len()));
    let n_adj = cands.len() - n_noun;
    let s_noun = count(PartOfSpeech::Noun, &mut selected.iter().copied());
    let s_adj = selected.len() - s_noun;

    // Outputs.
    let mut tsv = String::from("rank\tword\tpos\tlexfile\tq\tprompt\n");
    for (r, &i) in selected.iter().enumerate() {
        let c = &cands[i];
        tsv += &format!(
            "{r}\t{}\t{}\t{}\t{:.8}\t{}\n",
            c.word,
            c.pos.as_str(),
            c.lexfile,
            q[i],
            prompts[i]
        );
    }
    let config = json!({
        "command": "neglabel mine",
        "tool_version": env!("CARGO_PKG_VERSION"),
        "labels": a.labels.display().to_string(),
        "labels_sha256": hashing::sha256_file(&a.labels)?,
        "num_labels": labels.len(),
        "encoder": a.encoder,
        "weights": weights.display().to_string(),
        "bpe": bpe.map(|p| p.display().to_string()),
        "wordnet": a.wordnet.display().to_string(),
        "wordnet_data_noun_sha256": hashing::sha256_file(&a.wordnet.join("data.noun"))?,
        "wordnet_data_adj_sha256": hashing::sha256_file(&a.wordnet.join("data.adj"))?,
        "lexfiles": neg_mining::ADJ_LEXFILES.iter().chain(&neg_mining::NOUN_LEXFILES).collect::<Vec<_>>(),
        "id_prompt": "the nice {}",
        "noun_prompt": "the nice {}",
        "adj_prompt": "This is a {} photo",
        "percentile": a.percentile,
        "fraction": a.fraction,
        "max_per_pos": a.max_per_pos,
        "candidates": {"noun": n_noun, "adj": n_adj},
        "selected": {"noun": s_noun, "adj": s_adj},
        "dim": id_emb.ncols(),
        "batch_size": a.batch_size,
        "device": format!("{device:?}"),
        "encode_seconds": encode_s,
        "seconds": started.elapsed().as_secs_f64(),
        "order": "selected nouns then selected adjectives, each by ascending q",
        "output": a.out.display().to_string(),
        "words_tsv": out_tsv.display().to_string(),
    });
    let mut meta = BTreeMap::new();
    meta.insert("kind".to_string(), "neglabel_negatives".to_string());
    meta.insert("config".to_string(), config.to_string());
    meta.insert(
        "words".to_string(),
        serde_json::to_string(
            &selected
                .iter()
                .map(|&i| cands[i].word.as_str())
                .collect::<Vec<_>>(),
        )?,
    );
    meta.insert("id_labels".to_string(), serde_json::to_string(&labels)?);
    let (c, d) = id_emb.dim();
    let flat = |m: &Array2<f32>| m.as_standard_layout().iter().copied().collect::<Vec<f32>>();
    let bias = vec![0f32; c];
    let (negv, idv) = (flat(&neg), flat(&id_emb));
    let mut tensors = vec![
        TensorToWrite::f32("negatives", vec![neg.nrows(), d], &negv),
        TensorToWrite::f32("weight", vec![c, d], &idv),
        TensorToWrite::f32("bias", vec![c], &bias),
    ];
    let (candv, qv, selv);
    if a.save_candidates {
        candv = flat(&cand_emb);
        qv = q.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        selv = selected.iter().map(|&i| i as i64).collect::<Vec<i64>>();
        tensors.push(TensorToWrite::f32(
            "candidates",
            vec![cand_emb.nrows(), d],
            &candv,
        ));
        tensors.push(TensorToWrite::f32("candidate_q", vec![qv.len()], &qv));
        tensors.push(TensorToWrite::i64("selected", vec![selv.len()], &selv));
        let mut all = String::from("index\tword\tpos\tlexfile\tq\n");
        for (i, c) in cands.iter().enumerate() {
            all += &format!(
                "{i}\t{}\t{}\t{}\t{:.8}\n",
                c.word,
                c.pos.as_str(),
                c.lexfile,
                q[i]
            );
        }
        atomic_file::write_bytes_atomic(&out_candidates, all.as_bytes())?;
    }
    write(&a.out, &tensors, &meta).with_context(|| format!("writing {}", a.out.display()))?;
    atomic_file::write_bytes_atomic(&out_tsv, tsv.as_bytes())?;
    atomic_file::write_bytes_atomic(
        &out_config,
        (serde_json::to_string_pretty(&config)? + "\n").as_bytes(),
    )?;
    eprintln!(
        "candidates: {n_noun} nouns, {n_adj} adjectives; selected {s_noun} + {s_adj} = {} \
         negatives ({d}-d) in {:.1} s (embedding {encode_s:.1} s) -> {}",
        selected.len(),
        started.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}
