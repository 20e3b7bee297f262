//! `ood neglabel mine`: NegLabel's negative-label mining (spec 7.3) with MiniLM or CLIP text
//! embeddings. Mining and the negatives file are `ood_nn::text::neg_mining`'s (the selection rule
//! `ood_core::neg_mining`'s); this file reads the arguments and writes the side files.

use crate::args::{NeglabelCommand, NeglabelMineArgs, TextEncoderArg};
use anyhow::{Context, Result, bail};
use ood_core::neg_mining::{self, Candidate, PartOfSpeech};
use ood_core::{atomic_file, hashing};
use ood_nn::text::neg_mining::{self as mining, MineOptions};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Runs `ood neglabel ...`.
pub fn run(c: NeglabelCommand) -> Result<()> {
    match c {
        NeglabelCommand::Mine(a) => mine(&a),
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
        ood_nn::device::set_threads(t);
    }
    let device = ood_nn::device::parse_device(&a.device)?;
    let started = Instant::now();
    let (out_tsv, out_candidates) = (
        with_suffix(&a.out, ".tsv"),
        with_suffix(&a.out, ".candidates.tsv"),
    );
    let out_config = ood_cli::light::common::with_appended(&a.out, ".config.json");
    let mut ins = vec![("--labels", a.labels.as_path())];
    for (flag, p) in [("--weights", &a.weights), ("--bpe", &a.bpe)] {
        if let Some(p) = p {
            ins.push((flag, p.as_path()));
        }
    }
    let _guard = ood_cli::light::common::guard_outputs(
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
    let opts = MineOptions {
        percentile: a.percentile,
        fraction: a.fraction,
        batch_size: a.batch_size,
    };
    let progress = &mut |done: usize, total: usize| {
        eprintln!(
            "embedded {done}/{total} candidates ({:.0} s)",
            started.elapsed().as_secs_f64()
        )
    };
    let (mined, weights, bpe) = match a.encoder {
        TextEncoderArg::Minilm => {
            let dir = match &a.weights {
                Some(p) => p.clone(),
                None => env_path("OOD_MINILM_DIR", "--weights (MiniLM folder)")?,
            };
            let e = ood_nn::text::SentenceEncoder::load(&dir, device)
                .with_context(|| format!("loading MiniLM {}", dir.display()))?;
            let mined = mining::mine(&e, &labels, cands, &opts, progress)?;
            (mined, dir, None)
        }
        TextEncoderArg::Clip => {
            let Some(w) = &a.weights else {
                bail!(
                    "--encoder clip needs --weights MODEL.safetensors (a Hugging Face CLIPModel)"
                );
            };
            let bpe = match &a.bpe {
                Some(p) => p.clone(),
                None => env_path("OOD_CLIP_BPE", "--bpe (bpe_simple_vocab_16e6.txt.gz)")?,
            };
            let model = ood_nn::clip::ClipModel::load(w, None, device)
                .with_context(|| format!("loading CLIP {}", w.display()))?;
            let tokenizer = ood_nn::text::ClipTokenizer::from_file(&bpe)
                .with_context(|| format!("loading CLIP BPE {}", bpe.display()))?;
            let e = ood_nn::clip::ClipTextEncoder {
                model: &model,
                tokenizer: &tokenizer,
            };
            let mined = mining::mine(&e, &labels, cands, &opts, progress)?;
            (mined, w.clone(), Some(bpe))
        }
    };
    let ((n_noun, n_adj), (s_noun, s_adj)) = mined.counts();
    let encode_s = mined.encode_seconds;
    let d = mined.id_embeddings.ncols();

    // Outputs.
    let config = json!({
        "command": "neglabel mine",
        "tool_version": env!("CARGO_PKG_VERSION"),
        "labels": a.labels.display().to_string(),
        "labels_sha256": hashing::sha256_file(&a.labels)?,
        "num_labels": labels.len(),
        "encoder": crate::args::value_name(&a.encoder),
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
        "dim": d,
        "batch_size": a.batch_size,
        "device": format!("{device:?}"),
        "encode_seconds": encode_s,
        "seconds": started.elapsed().as_secs_f64(),
        "order": "selected nouns then selected adjectives, each by ascending q",
        "output": a.out.display().to_string(),
        "words_tsv": out_tsv.display().to_string(),
    });
    if a.save_candidates {
        atomic_file::write_bytes_atomic(&out_candidates, mined.candidates_tsv().as_bytes())?;
    }
    mined
        .write(&a.out, &config, a.save_candidates)
        .with_context(|| format!("writing {}", a.out.display()))?;
    atomic_file::write_bytes_atomic(&out_tsv, mined.words_tsv().as_bytes())?;
    atomic_file::write_bytes_atomic(
        &out_config,
        (serde_json::to_string_pretty(&config)? + "\n").as_bytes(),
    )?;
    eprintln!(
        "candidates: {n_noun} nouns, {n_adj} adjectives; selected {s_noun} + {s_adj} = {} \
         negatives ({d}-d) in {:.1} s (embedding {encode_s:.1} s) -> {}",
        mined.selected.len(),
        started.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}
