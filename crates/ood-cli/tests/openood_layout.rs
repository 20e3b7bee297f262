//! The OpenOOD v1.5 layout on real data (issue 14): a miniature OpenOOD `data/` folder is built
//! at test time from ../shared (CIFAR-10 JPEG as ID, Tiny-ImageNet, MNIST, notMNIST and DTD as
//! OOD; the sets OpenOOD has and ../shared lacks stand in with other images), with
//! `benchmark_imglist/cifar10/*.txt` listing files under `images_classic/`, exactly as OpenOOD's
//! download script lays them out. `ood bench openood-cifar10 --data-root MINI` must give the same
//! table as reading the same image files another way: `ood extract` of each set as a class-folder
//! tree and `ood eval` of the feature files.

mod common;
use common::{ok, ood, shared_root};
use ood_nn::data::{DataSpec, Pixels};
use std::collections::BTreeMap;
use std::path::Path;

/// Writes every `step`-th sample of `spec` (from `offset`, at most `n`) under
/// `MINI/images_classic/<dir>/<label>/<i>.<ext>` (the archive's bytes for encoded images, PNG for
/// idx digits) and returns the imglist lines `"<dir>/<label>/<i>.<ext> <label>"`. OOD sets get
/// label `-1` in the list (OpenOOD's convention) and folder `0`.
fn write_set(
    mini: &Path,
    dir: &str,
    spec: &str,
    (offset, step, n): (usize, usize, usize),
    ood_set: bool,
) -> Vec<String> {
    let spec = DataSpec::parse(spec).unwrap();
    let mut lines = Vec::new();
    for (i, s) in spec
        .samples()
        .unwrap()
        .skip(offset)
        .step_by(step)
        .take(n)
        .enumerate()
    {
        let s = s.unwrap();
        let (bytes, ext) = match s.pixels {
            Pixels::Encoded(b) => {
                let ext = if b.starts_with(b"\x89PNG") {
                    "png"
                } else {
                    "jpg"
                };
                (b, ext)
            }
            Pixels::Gray {
                width,
                height,
                data,
            } => {
                let img = image::GrayImage::from_raw(width, height, data).unwrap();
                let mut b = Vec::new();
                img.write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Png)
                    .unwrap();
                (b, "png")
            }
            Pixels::Rgb(img) => {
                let mut b = Vec::new();
                img.write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Png)
                    .unwrap();
                (b, "png")
            }
        };
        let folder = if ood_set { 0 } else { s.label };
        let rel = format!("{dir}/{folder}/{i:05}.{ext}");
        let path = mini.join("images_classic").join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        lines.push(format!("{rel} {}", if ood_set { -1 } else { s.label }));
    }
    assert_eq!(lines.len(), n, "{dir}: not enough samples");
    lines
}

/// One set of the miniature layout: imglist name, images folder, data spec of the source, which
/// samples `(offset, step, n)`, OOD or not.
type SetDef<'a> = (&'a str, &'a str, &'a str, (usize, usize, usize), bool);

/// `(dataset, detector) -> (auroc, fpr95, aupr_in, aupr_out)` of a results JSON, and the skipped
/// detectors.
type Table = BTreeMap<(String, String), [f64; 4]>;

fn table(path: &Path) -> (Table, Vec<String>, f64) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut t = Table::new();
    for r in v["rows"].as_array().unwrap() {
        let key = (
            r["dataset"].as_str().unwrap().to_string(),
            r["detector"].as_str().unwrap().to_string(),
        );
        let m = ["auroc", "fpr95", "aupr_in", "aupr_out"].map(|k| r[k].as_f64().unwrap());
        t.insert(key, m);
    }
    let mut skipped: Vec<String> = v["skipped"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| format!("{}: {}", s["detector"], s["reason"]))
                .collect()
        })
        .unwrap_or_default();
    skipped.sort();
    (t, skipped, v["id_accuracy"].as_f64().unwrap())
}

#[test]
fn openood_cifar10_on_a_miniature_layout_equals_extract_and_eval() {
    let Some(root) = shared_root("openood_cifar10_on_a_miniature_layout_equals_extract_and_eval")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mini = tmp.path().join("data");
    let d = root.join("data");
    let cifar_train = format!(
        "tar:{}",
        d.join("cifar10-jpeg/cifar10_train_jpeg.tar.gz").display()
    );
    let cifar_test = format!(
        "tar:{}",
        d.join("cifar10-jpeg/cifar10_test_jpeg.tar.gz").display()
    );
    let tin = d.join("tiny-imagenet-200/tin200_val_test_jpeg.tar.gz");
    let (tin_val, tin_test) = (
        format!("tin-val:{}", tin.display()),
        format!("tin-test:{}", tin.display()),
    );
    let mnist = format!(
        "idx:{}",
        d.join("mnist/t10k-images-idx3-ubyte.gz").display()
    );
    let notmnist = format!(
        "idx:{}",
        d.join("notmnist/t10k-images-idx3-ubyte.gz").display()
    );
    let dtd = format!(
        "tar:{}",
        d.join("dtd-subset10/dtd10_30perclass_jpeg.tar").display()
    );
    // (imglist file, images folder, source, (offset, step, n), OOD?)
    let sets: [SetDef<'_>; 11] = [
        (
            "train_cifar10",
            "cifar10/train",
            &cifar_train,
            (0, 125, 400),
            false,
        ),
        (
            "val_cifar10",
            "cifar10/val",
            &cifar_test,
            (7, 125, 80),
            false,
        ),
        (
            "test_cifar10",
            "cifar10/test",
            &cifar_test,
            (0, 50, 200),
            false,
        ),
        (
            "test_cifar10c",
            "cifar10c",
            &cifar_test,
            (3, 500, 20),
            false,
        ),
        ("test_cifar100", "cifar100", &tin_test, (0, 50, 100), true),
        ("test_tin", "tin/test", &tin_val, (0, 50, 100), true),
        ("val_tin", "tin/val", &tin_val, (25, 200, 40), true),
        ("test_mnist", "mnist", &mnist, (0, 50, 100), true),
        ("test_svhn", "svhn", &notmnist, (0, 50, 100), true),
        ("test_texture", "texture", &dtd, (0, 3, 100), true),
        (
            "test_places365",
            "places365",
            &tin_test,
            (25, 50, 100),
            true,
        ),
    ];
    let lists = mini.join("benchmark_imglist/cifar10");
    std::fs::create_dir_all(&lists).unwrap();
    for (list, dir, spec, pick, ood_set) in sets {
        let lines = write_set(&mini, dir, spec, pick, ood_set);
        std::fs::write(lists.join(format!("{list}.txt")), lines.join("\n") + "\n").unwrap();
    }
    let weights = root.join("models/akamaster-resnet-cifar10/resnet20-12fca82f.safetensors");
    let w = weights.to_str().unwrap();
    let cache = tmp.path().join("cache");
    let bench_json = tmp.path().join("bench.json");
    let o = ok(ood(&[
        "bench",
        "openood-cifar10",
        "--data-root",
        mini.to_str().unwrap(),
        "--model",
        "resnet20",
        "--weights",
        w,
        "--cache-dir",
        cache.to_str().unwrap(),
        "--out-dir",
        tmp.path().join("bench").to_str().unwrap(),
        "--json",
        bench_json.to_str().unwrap(),
    ]));
    // The built-in's expected set sizes (OpenOOD's) differ here: warnings with both numbers.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("set 'tin' has 100 images, the benchmark defines 7793"),
        "{err}"
    );

    // The same image files through other readers: class-folder trees, `ood extract`, `ood eval`.
    let ic = mini.join("images_classic");
    let feats = tmp.path().join("feats");
    let extract = |dir: &str, name: &str| -> String {
        let out = feats.join(format!("{name}.safetensors"));
        let data = format!("folder:{}", ic.join(dir).display());
        let mut args = vec![
            "extract",
            "--model",
            "resnet20",
            "--weights",
            w,
            "--data",
            &data,
            "--out",
            out.to_str().unwrap(),
        ];
        let head = feats.join("head.safetensors");
        let head_s = head.to_str().unwrap().to_string();
        if name == "train" {
            args.extend(["--head-out", &head_s]);
        }
        // Every set carries what the network detectors need (scored sets; ID val, where
        // AdaSCALE fits; train, where Gram and the multi-layer Mahalanobis fit), as `ood bench`
        // computes it itself; the other sets' perturbed layer means follow train's class
        // Gaussians (extracted first).
        args.extend(["--with", "network"]);
        let train_file = feats.join("train.safetensors");
        let train_s = train_file.to_str().unwrap().to_string();
        if name != "train" {
            args.extend(["--fit-features", &train_s]);
        }
        ok(ood(&args));
        out.to_str().unwrap().to_string()
    };
    let fit = extract("cifar10/train", "train");
    let fit_val = extract("cifar10/val", "val");
    let id = extract("cifar10/test", "test");
    // The benchmark's OOD-val set: `ood bench` hands it to grood (its noise prototype).
    let val_ood = extract("tin/val", "val_tin");
    let near: Vec<String> = [("cifar100", "cifar100"), ("tin", "tin/test")]
        .iter()
        .map(|(n, dir)| format!("{n}={}", extract(dir, n)))
        .collect();
    let far: Vec<String> = [
        ("mnist", "mnist"),
        ("svhn", "svhn"),
        ("texture", "texture"),
        ("places365", "places365"),
    ]
    .iter()
    .map(|(n, dir)| format!("{n}={}", extract(dir, n)))
    .collect();
    let head = feats.join("head.safetensors");
    let eval_json = tmp.path().join("eval.json");
    let mut args = vec![
        "eval".to_string(),
        "--fit".into(),
        fit,
        "--fit-val".into(),
        fit_val,
        "--head".into(),
        head.to_str().unwrap().into(),
        "--id".into(),
        id,
        "--val-ood".into(),
        val_ood,
        "--out-dir".into(),
        tmp.path().join("eval").to_str().unwrap().into(),
        "--json".into(),
        eval_json.to_str().unwrap().into(),
    ];
    for n in &near {
        args.extend(["--near".into(), n.clone()]);
    }
    for f in &far {
        args.extend(["--far".into(), f.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(ood(&args));

    let (b, b_skipped, b_acc) = table(&bench_json);
    let (e, e_skipped, e_acc) = table(&eval_json);
    assert_eq!(b_skipped, e_skipped);
    assert_eq!(b_acc, e_acc, "ID accuracy");
    assert!(
        b_acc > 0.6,
        "ResNet-20 on 200 CIFAR-10 test images: {b_acc}"
    );
    assert_eq!(
        b.keys().collect::<Vec<_>>(),
        e.keys().collect::<Vec<_>>(),
        "same datasets and detectors"
    );
    // Every near/far set and both group means, for every detector that fitted.
    let datasets: std::collections::BTreeSet<&str> = b.keys().map(|k| k.0.as_str()).collect();
    for want in ["cifar100", "tin", "mnist", "svhn", "texture", "places365"] {
        assert!(datasets.contains(want), "{datasets:?}");
    }
    assert!(b.len() >= 20 * 8, "{} rows", b.len());
    // Sample order differs (imglist order vs sorted folder walk), so sums may round differently.
    for (k, bm) in &b {
        let em = &e[k];
        for (x, y) in bm.iter().zip(em) {
            assert!(
                (x - y).abs() < 1e-6,
                "{k:?}: bench {bm:?} vs extract+eval {em:?}"
            );
        }
    }
}
