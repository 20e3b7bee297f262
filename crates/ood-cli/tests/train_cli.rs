//! `ood jigsaw` and `ood train` on a tiny folder-per-class set of synthetic 32x32 PNGs: jigsaws
//! are seeded tile permutations readable as `folder:`, every method trains and exports weights
//! that `ood extract` loads, TagFog exports the K ID classes only, and bad inputs exit with code
//! 2 naming the file.

mod common;
use common::{ok, ood, stderr};
use ood_core::safetensors::{Dtype, TensorToWrite, write};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `dir/<class>/NN.png`, 3 classes x 12 images of 32x32: class c is bright in its own third of
/// the image with its own tint, plus a deterministic pattern.
fn write_dataset(dir: &Path) -> PathBuf {
    for (c, name) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..12u32 {
            let img = image::RgbImage::from_fn(32, 32, |x, y| {
                let band = match c {
                    0 => y < 11,
                    1 => x < 11,
                    _ => x > 20,
                };
                let v = if band { 200u8 } else { 50 };
                let noise = ((x * 7 + y * 13 + i * 31) % 40) as u8;
                let mut p = [v.saturating_add(noise); 3];
                p[c] = p[c].saturating_add(40);
                image::Rgb(p)
            });
            img.save(d.join(format!("{i:02}.png"))).unwrap();
        }
    }
    dir.to_path_buf()
}

fn pngs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn jigsaw_writes_seeded_tile_permutations() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_dataset(&tmp.path().join("data"));
    let spec = format!("folder:{}", data.display());
    let out_a = tmp.path().join("jig_a");
    let out_b = tmp.path().join("jig_b");
    let out_c = tmp.path().join("jig_c");
    for (out, seed) in [(&out_a, "3"), (&out_b, "3"), (&out_c, "4")] {
        ok(ood(&[
            "jigsaw",
            "--data",
            &spec,
            "--out",
            out.to_str().unwrap(),
            "--grid",
            "4",
            "--seed",
            seed,
            "--per-image",
            "2",
            "--limit",
            "10",
        ]));
    }
    let a = pngs(&out_a.join("jigsaw"));
    assert_eq!(a.len(), 20);
    assert_eq!(a[0].file_name().unwrap(), "000001.png");
    let b = pngs(&out_b.join("jigsaw"));
    let c = pngs(&out_c.join("jigsaw"));
    let read = |p: &PathBuf| image::open(p).unwrap().to_rgb8();
    let src: Vec<image::RgbImage> = pngs(&data.join("alpha")).iter().map(read).collect();
    let mut differs = 0;
    for i in 0..20 {
        let (ia, ib, ic) = (read(&a[i]), read(&b[i]), read(&c[i]));
        assert_eq!(ia, ib, "same seed, same jigsaw {i}");
        differs += usize::from(ia != ic);
        // File i+1 comes from source image i mod 10 (all class alpha): every 8x8 destination
        // tile is one of the source's 16 tiles.
        let s = &src[i % 10];
        let tile = |img: &image::RgbImage, tx: u32, ty: u32| -> Vec<u8> {
            (0..8)
                .flat_map(|y| (0..8).flat_map(move |x| img.get_pixel(tx * 8 + x, ty * 8 + y).0))
                .collect()
        };
        let mut want: Vec<Vec<u8>> = (0..16).map(|t| tile(s, t % 4, t / 4)).collect();
        let mut got: Vec<Vec<u8>> = (0..16).map(|t| tile(&ia, t % 4, t / 4)).collect();
        want.sort();
        got.sort();
        assert_eq!(
            got, want,
            "jigsaw {i} is a permutation of its source's tiles"
        );
    }
    assert!(
        differs >= 18,
        "another seed gives other permutations ({differs}/20)"
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_a.join("jigsaw.config.json")).unwrap()).unwrap();
    assert_eq!(cfg["count"], 20);
    // A non-empty output folder is refused, naming it.
    let o = ood(&["jigsaw", "--data", &spec, "--out", out_a.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("jig_a"), "{}", stderr(&o));
}

fn write_anchors(path: &Path, k: usize, d: usize) {
    let vals: Vec<f32> = (0..k * d)
        .map(|i| (((i * 37) % 11) as f32 - 5.0) / 5.0)
        .collect();
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    write(
        path,
        &[TensorToWrite {
            name: "embeddings",
            dtype: Dtype::F32,
            shape: vec![k, d],
            data: bytes.into(),
        }],
        &BTreeMap::new(),
    )
    .unwrap();
}

fn train_args<'a>(method: &'a str, data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--method",
        method,
        "--model",
        "resnet8",
        "--data",
        data,
        "--epochs",
        "3",
        "--batch-size",
        "12",
        "--lr",
        "0.05",
        "--warmup-epochs",
        "0",
        "--threads",
        "1",
        "--out-dir",
        out,
    ]
}

#[test]
fn train_every_method_exports_loadable_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_dataset(&tmp.path().join("data"));
    let spec = format!("folder:{}", data.display());
    let jig = tmp.path().join("jig");
    ok(ood(&[
        "jigsaw",
        "--data",
        &spec,
        "--out",
        jig.to_str().unwrap(),
        "--limit",
        "24",
    ]));
    let jig_spec = format!("folder:{}", jig.display());
    let anchors = tmp.path().join("anchors.safetensors");
    write_anchors(&anchors, 3, 6);
    for method in ["ce", "oe", "mixoe", "supcon", "reweightood", "tagfog"] {
        let out = tmp.path().join(format!("run_{method}"));
        let out_s = out.to_str().unwrap();
        let mut args = train_args(method, &spec, out_s);
        if method != "ce" && method != "supcon" && method != "reweightood" {
            args.extend(["--outliers", &jig_spec]);
        }
        if method == "tagfog" {
            args.extend(["--anchors", anchors.to_str().unwrap()]);
        }
        // Two methods run in bf16 autocast with channels-last weights; the export is the same.
        let bf16 = method == "oe" || method == "reweightood";
        if bf16 {
            args.extend(["--precision", "bf16", "--channels-last"]);
        }
        ok(ood(&args));
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("train.config.json")).unwrap()).unwrap();
        let epochs = cfg["epochs"].as_array().unwrap();
        assert_eq!(epochs.len(), 3, "{method}");
        for e in epochs {
            assert!(e["loss"].as_f64().unwrap().is_finite(), "{method}: {e}");
        }
        assert_eq!(cfg["classes"], 3);
        assert_eq!(cfg["class_names"][1], "beta");
        let tc = &cfg["train_config"];
        assert_eq!(tc["precision"], if bf16 { "bf16" } else { "fp32" });
        assert_eq!(tc["channels_last"], bf16);
        // --augment auto: the SimCLR chain for the two-view methods, pad-and-crop otherwise.
        let two_views = ["supcon", "reweightood", "tagfog"].contains(&method);
        assert_eq!(
            tc["augment"]["simclr"].is_object(),
            two_views,
            "{method}: {tc}"
        );
        assert!(out.join("last.safetensors").is_file() && out.join("state.json").is_file());
        let head = ood_core::Head::load(out.join("head.safetensors")).unwrap();
        assert_eq!(head.num_classes(), 3, "{method}: exported head");
        assert_eq!(head.dim(), 64);
        // The exported weights load through the normal extraction path, K = 3 logits.
        let feats = out.join("feats.safetensors");
        ok(ood(&[
            "extract",
            "--model",
            "resnet8",
            "--weights",
            out.join("model.safetensors").to_str().unwrap(),
            "--data",
            &spec,
            "--out",
            feats.to_str().unwrap(),
            "--head-out",
            out.join("extracted_head.safetensors").to_str().unwrap(),
            "--threads",
            "1",
        ]));
        let f = ood_core::Features::load(&feats).unwrap();
        assert_eq!((f.len(), f.dim(), f.num_classes()), (36, 64, 3), "{method}");
        // --head-out writes the network's head: the exported one, and it reproduces the logits.
        let h = ood_core::Head::load(out.join("extracted_head.safetensors")).unwrap();
        assert_eq!(h, head, "{method}: extracted head vs exported head");
        let z = h.logits(f.embeddings.view()).unwrap();
        let err = (&z - &f.logits)
            .mapv(f32::abs)
            .fold(0.0f32, |m, &v| m.max(v));
        assert!(
            err < 1e-3,
            "{method}: head logits differ from extracted logits by {err}"
        );
        if method == "tagfog" {
            assert_eq!(cfg["network_outputs"], 4);
            assert_eq!(cfg["num_outliers"], 24);
        }
    }
    // --resume with the same settings continues (nothing left: 3 of 3 epochs done) and keeps
    // the logs; without --resume an existing checkpoint is refused.
    let out = tmp.path().join("run_ce");
    let mut args = train_args("ce", &spec, out.to_str().unwrap());
    let o = ood(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    args.push("--resume");
    ok(ood(&args));
}

#[test]
fn train_bad_inputs_exit_2_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_dataset(&tmp.path().join("data"));
    let spec = format!("folder:{}", data.display());
    let out = tmp.path().join("out");
    let out_s = out.to_str().unwrap();

    let missing = tmp.path().join("no_such_dir");
    let missing_spec = format!("folder:{}", missing.display());
    let o = ood(&train_args("ce", &missing_spec, out_s));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no_such_dir"), "{}", stderr(&o));

    let bad_init = tmp.path().join("bad_init.safetensors");
    std::fs::write(&bad_init, b"not a safetensors file").unwrap();
    let mut args = train_args("ce", &spec, out_s);
    args.extend(["--init", bad_init.to_str().unwrap()]);
    let o = ood(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("bad_init.safetensors"),
        "{}",
        stderr(&o)
    );

    let anchors = tmp.path().join("two_anchors.safetensors");
    write_anchors(&anchors, 2, 6);
    let mut args = train_args("tagfog", &spec, out_s);
    args.extend(["--anchors", anchors.to_str().unwrap()]);
    let o = ood(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("2 text anchors for 3 classes"),
        "{}",
        stderr(&o)
    );

    let o = ood(&train_args("oe", &spec, out_s));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--outliers"), "{}", stderr(&o));

    std::fs::write(data.join("beta").join("broken.png"), b"garbage").unwrap();
    let o = ood(&train_args("ce", &spec, out_s));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("broken.png"), "{}", stderr(&o));
}

#[test]
fn train_tagfog_embeds_descriptions_with_minilm() {
    let Some(minilm) = std::env::var_os("OOD_MINILM_DIR").filter(|d| Path::new(d).is_dir()) else {
        common::skip("skipped: OOD_MINILM_DIR is not set to the MiniLM folder (. scripts/env)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = write_dataset(&tmp.path().join("data"));
    let spec = format!("folder:{}", data.display());
    let desc = tmp.path().join("desc.txt");
    std::fs::write(
        &desc,
        "alpha: a bright band across the top.\nbeta: a bright band down the left side.\n\
         gamma: a bright band down the right side.\n",
    )
    .unwrap();
    let out = tmp.path().join("run");
    let mut args = train_args("tagfog", &spec, out.to_str().unwrap());
    args.extend([
        "--descriptions",
        desc.to_str().unwrap(),
        "--encoder",
        minilm.to_str().unwrap(),
        "--epochs",
        "1",
    ]);
    // clap refuses a repeated --epochs: drop the default one of train_args.
    let pos = args.iter().position(|a| *a == "--epochs").unwrap();
    args.drain(pos..pos + 2);
    ok(ood(&args));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("train.config.json")).unwrap()).unwrap();
    assert_eq!(cfg["epochs"].as_array().unwrap().len(), 1);
    let sentences = cfg["anchors"]["sentences"].as_array().unwrap();
    assert_eq!(sentences.len(), 3);
    assert_eq!(sentences[1], "a bright band down the left side.");
    // Jigsaws were made from the training images (2 per image by default).
    assert_eq!(cfg["num_outliers"], 72);
    assert_eq!(cfg["jigsaw"]["per_image"], 2);
    let head = ood_core::Head::load(out.join("head.safetensors")).unwrap();
    assert_eq!(head.num_classes(), 3);
    // The wrong number of descriptions is refused.
    std::fs::write(&desc, "alpha: one.\nbeta: two.\n").unwrap();
    let out2 = tmp.path().join("run2");
    let mut args = train_args("tagfog", &spec, out2.to_str().unwrap());
    args.extend([
        "--descriptions",
        desc.to_str().unwrap(),
        "--encoder",
        minilm.to_str().unwrap(),
    ]);
    let o = ood(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("2 text anchors for 3 classes"),
        "{}",
        stderr(&o)
    );
}
