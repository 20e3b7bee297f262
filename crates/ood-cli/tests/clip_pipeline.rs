//! The CLIP NegLabel pipeline end to end on a small RANDOM CLIPModel (made at test time by
//! `scripts/gen_clip_parity.py`, whose outputs `ood-nn/tests/clip_parity.rs` checks against
//! transformers): `ood neglabel mine --encoder clip`, `ood extract --model clip` on image folders,
//! and `ood eval` with `neg_label` and `mcm`. Checks the extracted logits are CLIP's zero-shot
//! logits against the mined ID-label embeddings and that both detectors are reported. Skips with
//! a message when python/transformers, the BPE file or WordNet are missing.

mod common;

use ood_core::safetensors::SafeTensorsFile;
use std::path::{Path, PathBuf};
use std::process::Command;

fn ws() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ood(args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_ood"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ood {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Copies the generator's PNGs (random images of several sizes) into a class-folder tree.
fn images(src: &Path, dir: &Path, layout: &[(&str, &[usize])]) {
    for (class, idx) in layout {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in *idx {
            std::fs::copy(
                src.join(format!("img{i}.png")),
                dir.join(class).join(format!("{i}.png")),
            )
            .unwrap();
        }
    }
}

#[test]
fn mine_extract_eval_with_random_clip() {
    let bpe = std::env::var_os("OOD_CLIP_BPE")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws().join(".deps/open_clip/bpe_simple_vocab_16e6.txt.gz"));
    let python = ws().join(".venv/bin/python");
    if !bpe.is_file() || !python.is_file() || !Path::new("/usr/share/wordnet/data.adj").is_file() {
        common::skip("SKIPPED: needs the CLIP BPE file, .venv/bin/python and WordNet");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let gen_out = Command::new(&python)
        .arg(ws().join("scripts/gen_clip_parity.py"))
        .arg(t.join("ref"))
        .arg(&bpe)
        .output()
        .unwrap();
    if !gen_out.status.success() {
        let err = String::from_utf8_lossy(&gen_out.stderr);
        if err.contains("No module named") {
            common::skip(&format!("SKIPPED: python lacks transformers: {err}"));
            return;
        }
        panic!("{err}");
    }
    let weights = t.join("ref/model/model.safetensors");
    let p = |x: &Path| x.to_str().unwrap().to_string();
    std::fs::write(t.join("labels.txt"), "red square\nblue circle\n").unwrap();
    ood(&[
        "neglabel",
        "mine",
        "--encoder",
        "clip",
        "--weights",
        &p(&weights),
        "--bpe",
        &p(&bpe),
        "--labels",
        &p(&t.join("labels.txt")),
        "--max-per-pos",
        "40",
        "--threads",
        "2",
        "--out",
        &p(&t.join("neg.safetensors")),
    ]);
    let neg = SafeTensorsFile::open(t.join("neg.safetensors")).unwrap();
    assert_eq!(neg.info("negatives").unwrap().shape, vec![12, 32]);
    assert_eq!(neg.info("weight").unwrap().shape, vec![2, 32]);

    let src = t.join("ref/images");
    images(&src, &t.join("id"), &[("a", &[0, 1]), ("b", &[2, 3])]);
    images(&src, &t.join("ood"), &[("x", &[1, 2, 3])]);
    for set in ["id", "ood"] {
        ood(&[
            "extract",
            "--model",
            "clip",
            "--weights",
            &p(&weights),
            "--text-head",
            &p(&t.join("neg.safetensors")),
            "--data",
            &format!("folder:{}", p(&t.join(set))),
            "--batch-size",
            "3",
            "--out",
            &p(&t.join(format!("{set}.safetensors"))),
        ]);
    }
    let f = ood_core::Features::load(t.join("id.safetensors")).unwrap();
    assert_eq!(f.embeddings.dim(), (4, 32));
    assert_eq!(f.logits.dim(), (4, 2));
    // logits = exp(1.7) * cos(image, label) (the generator sets logit_scale = 1.7).
    let w = ood_core::Head::load(t.join("neg.safetensors"))
        .unwrap()
        .weight;
    for i in 0..4 {
        let x = f.embeddings.row(i);
        for c in 0..2 {
            let e = w.row(c);
            let cos = x.dot(&e) / (x.dot(&x).sqrt() * e.dot(&e).sqrt());
            let want = 1.7f32.exp() * cos;
            assert!(
                (f.logits[[i, c]] - want).abs() < 1e-4,
                "{} vs {want}",
                f.logits[[i, c]]
            );
        }
    }

    ood(&[
        "eval",
        "--fit",
        &p(&t.join("id.safetensors")),
        "--head",
        &p(&t.join("neg.safetensors")),
        "--id",
        &p(&t.join("id.safetensors")),
        "--ood",
        &format!("blobs={}", p(&t.join("ood.safetensors"))),
        "--negatives",
        &p(&t.join("neg.safetensors")),
        "--detectors",
        "neg_label,mcm",
        "--param",
        "neg_label.groups=3",
        "--out-dir",
        &p(&t.join("eval")),
    ]);
    let csv = std::fs::read_to_string(t.join("eval/results.csv")).unwrap();
    assert!(csv.contains("neg_label") && csv.contains("mcm"), "{csv}");
}
