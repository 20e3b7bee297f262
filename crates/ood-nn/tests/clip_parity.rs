//! CLIP parity with Hugging Face `transformers`' `CLIPModel` and `CLIPTokenizer`.
//!
//! The reference is made at test time by `scripts/gen_clip_parity.py` (run with the workspace's
//! `.venv/bin/python`): a randomly initialised small CLIPModel saved with `save_pretrained`, PNG
//! images with their PIL-bicubic CLIP preprocessing, the model's projected image/text features and
//! `logits_per_image`, and the tokenizer's ids on ~300 strings (tokenizer built from the same
//! `bpe_simple_vocab_16e6.txt.gz`). Skips with a message when python/transformers or the BPE file
//! are missing.

mod common;

use ood_nn::clip::{ClipConfig, ClipModel, preprocess_into};
use ood_nn::text::ClipTokenizer;
use ood_nn::text::clip_bpe::{CONTEXT_LENGTH, EOT};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Kind, Tensor};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bpe_path() -> Option<PathBuf> {
    let p = std::env::var_os("OOD_CLIP_BPE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".deps/open_clip/bpe_simple_vocab_16e6.txt.gz"));
    p.is_file().then_some(p)
}

/// Runs the generator into a fresh temp dir; `None` (with a printed reason) when it cannot run.
fn reference(full: bool) -> Option<(tempfile::TempDir, PathBuf)> {
    let Some(bpe) = bpe_path() else {
        common::skip(
            "SKIPPED: CLIP BPE vocabulary not found (run scripts/setup or set OOD_CLIP_BPE)",
        );
        return None;
    };
    let python = root().join(".venv/bin/python");
    if !python.is_file() {
        common::skip(&format!("SKIPPED: {} not found", python.display()));
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&python);
    cmd.arg(root().join("scripts/gen_clip_parity.py"))
        .arg(dir.path())
        .arg(&bpe);
    if full {
        cmd.arg("--full");
    }
    let out = cmd.output().unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No module named") {
            common::skip(&format!(
                "SKIPPED: python lacks transformers/torch/PIL: {err}"
            ));
            return None;
        }
        panic!("gen_clip_parity.py failed: {err}");
    }
    let bpe = bpe.clone();
    Some((dir, bpe))
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

fn check_model(dir: &Path, tol: f64) {
    let model_file = dir.join("model/model.safetensors");
    let config = ClipConfig::from_hf_json(dir.join("model/config.json")).unwrap();
    let model = ClipModel::load(&model_file, None, Device::Cpu).unwrap();
    assert_eq!(model.config(), &config);
    let r = load(&dir.join("reference.safetensors"));
    let size = config.image_size as u32;

    // Preprocessing: PNGs through the Rust bicubic pipeline == PIL's pixel values.
    let mut pixels = Vec::new();
    for i in 0..4 {
        let img = image::open(dir.join(format!("images/img{i}.png")))
            .unwrap()
            .to_rgb8();
        if i == 0 {
            let mut p224 = Vec::new();
            preprocess_into(img.clone(), 224, &mut p224);
            let t = Tensor::from_slice(&p224).view([3, 224, 224]);
            let d = max_abs_diff(&t, &r["pixels224"]);
            assert!(d < 1e-5, "224 px preprocessing differs from PIL by {d}");
        }
        preprocess_into(img, size, &mut pixels);
    }
    let pixels = Tensor::from_slice(&pixels).view([4, 3, size as i64, size as i64]);
    let d = max_abs_diff(&pixels, &r["pixel_values"]);
    assert!(d < 1e-5, "preprocessing differs from PIL by {d}");

    tch::no_grad(|| {
        let img = model.encode_image(&r["pixel_values"]).unwrap();
        let txt = model.encode_text(&r["input_ids"]).unwrap();
        let logits = model.logits(&img, &txt).unwrap();
        let di = max_abs_diff(&img, &r["image_features"]);
        let dt = max_abs_diff(&txt, &r["text_features"]);
        let dl = max_abs_diff(&logits, &r["logits_per_image"]);
        eprintln!("max |diff|: image {di:.2e}, text {dt:.2e}, logits {dl:.2e}");
        assert!(di < tol && dt < tol && dl < tol);
        // Our tokenizer pads with 0 instead of <|endoftext|>: same embeddings (causal mask,
        // pooling at the first end-of-text token).
        let ids = r["input_ids"].copy();
        let mut ours = ids.where_self(&ids.ne(i64::from(EOT)), &Tensor::from(0i64));
        let first_eot = r["input_ids"]
            .eq(i64::from(EOT))
            .to_kind(Kind::Int)
            .argmax(-1, false);
        let rows = Tensor::arange(ids.size()[0], (Kind::Int64, Device::Cpu));
        let _ = ours.index_put_(
            &[Some(rows), Some(first_eot)],
            &Tensor::from(i64::from(EOT)),
            false,
        );
        let txt0 = model.encode_text(&ours).unwrap();
        assert!(max_abs_diff(&txt0, &r["text_features"]) < tol);
    });
    // Legacy configs (`eos_token_id` = 2) pool at argmax(ids): the same position for CLIP ids.
    let mut legacy = config.clone();
    legacy.eos_token_id = 2;
    let model = ClipModel::load(&model_file, Some(legacy), Device::Cpu).unwrap();
    let txt = tch::no_grad(|| model.encode_text(&r["input_ids"]).unwrap());
    assert!(max_abs_diff(&txt, &r["text_features"]) < tol);
    // A wrong configuration is an error naming the file and the tensor.
    let mut wrong = config.clone();
    wrong.text.num_hidden_layers += 1;
    let e = ClipModel::load(&model_file, Some(wrong), Device::Cpu)
        .unwrap_err()
        .to_string();
    let first_missing = format!(
        "text_model.encoder.layers.{}",
        config.text.num_hidden_layers
    );
    assert!(
        e.contains("model.safetensors") && e.contains(&first_missing),
        "{e}"
    );
}

#[test]
fn small_random_clip_matches_transformers() {
    let Some((dir, bpe)) = reference(false) else {
        return;
    };
    check_model(dir.path(), 1e-4);

    // Tokenizer parity with CLIPTokenizer on the generated strings (ids up to the first
    // end-of-text token; HF pads with <|endoftext|>, open_clip/ours with 0).
    let tok = ClipTokenizer::from_file(&bpe).unwrap();
    let text = std::fs::read_to_string(dir.path().join("tokens.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let (mut same, mut differ) = (0, Vec::new());
    for c in cases {
        let s = c["text"].as_str().unwrap();
        let want: Vec<i64> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        assert_eq!(want.len(), CONTEXT_LENGTH);
        let got = tok.tokenize(s, CONTEXT_LENGTH).unwrap();
        let cut = |v: &[i64]| -> Vec<i64> {
            let e = v.iter().position(|&x| x == i64::from(EOT)).unwrap();
            v[..=e].to_vec()
        };
        if cut(&got) == cut(&want) {
            same += 1;
        } else {
            differ.push(s.to_string());
        }
    }
    eprintln!(
        "tokenizer: {same}/{} identical to transformers' CLIPTokenizer; differing: {differ:?}",
        cases.len()
    );
    assert!(differ.is_empty(), "tokenizer differs on {differ:?}");
}

#[test]
#[ignore = "builds a random ViT-B/16-sized CLIP (600 MB, ~1 min); run with --ignored"]
fn vit_b16_sized_random_clip_matches_transformers() {
    let Some((dir, _)) = reference(true) else {
        return;
    };
    check_model(dir.path(), 1e-4);
    let inferred = ClipConfig::infer(dir.path().join("model/model.safetensors")).unwrap();
    assert_eq!(inferred, ClipConfig::vit_b(16));
}
