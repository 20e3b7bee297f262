//! `ood embed-text`: sentence embeddings of the lines of a text file (textual anchors, label
//! embeddings).

use crate::args::EmbedTextArgs;
use anyhow::{Context, Result, bail};
use ood_cli::light::common::guard_outputs;
use ood_core::safetensors::{TensorToWrite, write};
use ood_nn::text::SentenceEncoder;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Embeds every line of `--in` (row i = line i, empty lines included; a trailing newline does
/// not add a line) and writes tensor `embeddings` (n, d) f32 with metadata: encoder folder and
/// fingerprint, input path and hash, n, d, max_seq_length, pooling.
pub fn run(args: &EmbedTextArgs) -> Result<()> {
    let device = ood_nn::device::parse_device(&args.device)?;
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if let Some(t) = args.threads {
        if t < 1 {
            bail!("--threads must be at least 1, got {t}");
        }
        ood_nn::device::set_threads(t);
    }
    let _guard = guard_outputs(
        &[
            ("--in", args.input.as_path()),
            ("--encoder", args.encoder.as_path()),
        ],
        &[("--out", args.out.as_path())],
    )?;
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    if lines.is_empty() {
        bail!("{}: no lines to embed", args.input.display());
    }
    let encoder = SentenceEncoder::load(&args.encoder, device)
        .with_context(|| format!("loading encoder {}", args.encoder.display()))?;
    let fingerprint = encoder
        .fingerprint()
        .with_context(|| format!("hashing encoder {}", args.encoder.display()))?;
    let emb = encoder
        .encode(&lines, args.batch_size)
        .with_context(|| format!("embedding {}", args.input.display()))?;
    let (n, d) = emb.dim();
    let values: Vec<f32> = emb.iter().copied().collect();
    let mut meta = BTreeMap::new();
    meta.insert("kind".to_string(), "text_embeddings".to_string());
    meta.insert(
        "encoder_dir".to_string(),
        args.encoder.display().to_string(),
    );
    meta.insert("encoder_sha256".to_string(), fingerprint);
    meta.insert(
        "encoder_sha256_files".to_string(),
        ood_nn::text::sentence::ENCODER_FILES.join(","),
    );
    meta.insert("input".to_string(), args.input.display().to_string());
    meta.insert(
        "input_sha256".to_string(),
        format!("{:x}", Sha256::digest(text.as_bytes())),
    );
    meta.insert("n".to_string(), n.to_string());
    meta.insert("dim".to_string(), d.to_string());
    meta.insert(
        "max_seq_length".to_string(),
        encoder.max_seq_length().to_string(),
    );
    meta.insert("pooling".to_string(), "mean,l2_normalize".to_string());
    write(
        &args.out,
        &[TensorToWrite::f32("embeddings", vec![n, d], &values)],
        &meta,
    )
    .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("embedded {n} lines ({d}-d) -> {}", args.out.display());
    Ok(())
}
