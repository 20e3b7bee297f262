//! Miniature benchmark layouts built at test time from real images of ../shared (issue 14): the
//! folders a built-in benchmark manifest reads (an OpenOOD v1.5 `data/` folder with its image
//! lists, or the KNN/MOS folder tree), a few images per set, with the sets ../shared lacks stood
//! in for by other real images; and the reference a bench run is compared with (`ood extract`
//! of the same image files as class-folder trees, then `ood eval`).

use super::{ok, ood};
use ood_nn::data::{DataSpec, Pixels};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The real image sources of ../shared, as data specs.
pub struct Sources {
    /// CIFAR-10 JPEG train (50k, class-major).
    pub cifar_train: String,
    /// CIFAR-10 JPEG test (10k, class-major).
    pub cifar_test: String,
    /// Tiny-ImageNet val (10k, labelled).
    pub tin_val: String,
    /// Tiny-ImageNet test (10k, unlabelled).
    pub tin_test: String,
    /// MNIST test digits (idx).
    pub mnist: String,
    /// notMNIST test letters (idx).
    pub notmnist: String,
    /// The DTD subset (10 classes, 30 images each).
    pub dtd: String,
}

impl Sources {
    /// The sources under the shared folder `shared`.
    pub fn new(shared: &Path) -> Sources {
        let d = shared.join("data");
        let tin = d.join("tiny-imagenet-200/tin200_val_test_jpeg.tar.gz");
        let spec = |kind: &str, p: PathBuf| format!("{kind}:{}", p.display());
        Sources {
            cifar_train: spec("tar", d.join("cifar10-jpeg/cifar10_train_jpeg.tar.gz")),
            cifar_test: spec("tar", d.join("cifar10-jpeg/cifar10_test_jpeg.tar.gz")),
            tin_val: spec("tin-val", tin.clone()),
            tin_test: spec("tin-test", tin),
            mnist: spec("idx", d.join("mnist/t10k-images-idx3-ubyte.gz")),
            notmnist: spec("idx", d.join("notmnist/t10k-images-idx3-ubyte.gz")),
            dtd: spec("tar", d.join("dtd-subset10/dtd10_30perclass_jpeg.tar")),
        }
    }
}

/// The akamaster ResNet-20 (CIFAR-10) weights of the shared folder.
pub fn resnet20_weights(shared: &Path) -> PathBuf {
    shared.join("models/akamaster-resnet-cifar10/resnet20-12fca82f.safetensors")
}

/// Which samples of a source: every `step`-th from `offset`, `n` of them.
pub type Pick = (usize, usize, usize);

/// Writes the picked samples of `spec` under `dir` as `<folder(label)>/<i>.<ext>` (the archive's
/// bytes for encoded images, PNG for idx digits) and returns each file's path relative to `dir`
/// with its label.
pub fn write_samples(
    dir: &Path,
    spec: &str,
    (offset, step, n): Pick,
    folder: &dyn Fn(i64) -> String,
) -> Vec<(String, i64)> {
    let data = DataSpec::parse(spec).unwrap();
    let mut out = Vec::new();
    for (i, s) in data
        .samples()
        .unwrap()
        .skip(offset)
        .step_by(step)
        .take(n)
        .enumerate()
    {
        let s = s.unwrap();
        let png = |img: &dyn Fn(&mut Vec<u8>)| {
            let mut b = Vec::new();
            img(&mut b);
            (b, "png")
        };
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
            } => png(&|b| {
                image::GrayImage::from_raw(width, height, data.clone())
                    .unwrap()
                    .write_to(&mut std::io::Cursor::new(b), image::ImageFormat::Png)
                    .unwrap()
            }),
            Pixels::Rgb(img) => png(&|b| {
                img.write_to(&mut std::io::Cursor::new(b), image::ImageFormat::Png)
                    .unwrap()
            }),
        };
        let rel = format!("{}/{i:05}.{ext}", folder(s.label));
        let path = dir.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        out.push((rel, s.label));
    }
    assert_eq!(out.len(), n, "{spec}: not enough samples");
    out
}

/// One set of a miniature OpenOOD v1.5 layout: the image list's name (without `.txt`), the
/// images folder it lists from (`images_classic`, `images_largescale`), the set's folder under
/// it, the source and its samples, and whether it is an OOD set.
pub struct ListSet<'a> {
    /// `benchmark_imglist/<benchmark>/<list>.txt`.
    pub list: String,
    /// `images_classic` or `images_largescale`.
    pub images: &'a str,
    /// The set's folder under `images`.
    pub dir: &'a str,
    /// The source's data spec.
    pub spec: &'a str,
    /// Which samples.
    pub pick: Pick,
    /// OOD sets are listed with label `-1` (OpenOOD's convention) and stored in folder `0`.
    pub ood: bool,
}

/// Shorthand for a [`ListSet`].
pub fn list_set<'a>(
    list: impl Into<String>,
    images: &'a str,
    dir: &'a str,
    spec: &'a str,
    pick: Pick,
    ood: bool,
) -> ListSet<'a> {
    ListSet {
        list: list.into(),
        images,
        dir,
        spec,
        pick,
        ood,
    }
}

/// Writes a miniature OpenOOD v1.5 `data/` folder at `mini`: each set's images under
/// `<images>/<dir>/<label>/<i>.<ext>` and `benchmark_imglist/<benchmark>/<list>.txt` listing
/// them (`<dir>/<label>/<i>.<ext> <label>`), as OpenOOD's download script lays them out.
pub fn write_openood(mini: &Path, benchmark: &str, sets: &[ListSet<'_>]) {
    let lists = mini.join("benchmark_imglist").join(benchmark);
    std::fs::create_dir_all(&lists).unwrap();
    for s in sets {
        let folder = |l: i64| {
            if s.ood {
                "0".to_string()
            } else {
                l.to_string()
            }
        };
        let lines: Vec<String> =
            write_samples(&mini.join(s.images).join(s.dir), s.spec, s.pick, &folder)
                .into_iter()
                .map(|(rel, l)| format!("{}/{rel} {}", s.dir, if s.ood { -1 } else { l }))
                .collect();
        std::fs::write(
            lists.join(format!("{}.txt", s.list)),
            lines.join("\n") + "\n",
        )
        .unwrap();
    }
}

/// `(dataset, detector) -> (auroc, fpr95, aupr_in, aupr_out)` of a results JSON.
pub type Table = BTreeMap<(String, String), [f64; 4]>;

/// A results JSON (`ood bench --json`, `ood eval --json`).
pub struct Results {
    /// The metrics of every (dataset, detector) row.
    pub table: Table,
    /// Each row's group (`near`, `far`, or none), by dataset.
    pub groups: BTreeMap<String, Option<String>>,
    /// The detectors that could not be fitted on the data, sorted.
    pub skipped: Vec<String>,
    /// ID accuracy.
    pub id_accuracy: f64,
    /// The whole JSON.
    pub json: serde_json::Value,
}

/// Reads a results JSON.
pub fn results(path: &Path) -> Results {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut table = Table::new();
    let mut groups = BTreeMap::new();
    for r in v["rows"].as_array().unwrap() {
        let dataset = r["dataset"].as_str().unwrap().to_string();
        let key = (dataset.clone(), r["detector"].as_str().unwrap().to_string());
        let m = ["auroc", "fpr95", "aupr_in", "aupr_out"].map(|k| r[k].as_f64().unwrap());
        table.insert(key, m);
        groups.insert(dataset, r["group"].as_str().map(str::to_string));
    }
    let mut skipped: Vec<String> = v["skipped"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["detector"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default();
    skipped.sort();
    Results {
        table,
        groups,
        skipped,
        id_accuracy: v["id_accuracy"].as_f64().unwrap(),
        json: v,
    }
}

/// Asserts that two results hold the same detectors, datasets and ID accuracy, and the same
/// metrics to 1e-6 (sample order may differ between the readers, so sums may round differently).
pub fn assert_same_results(bench: &Results, reference: &Results) {
    assert_eq!(
        bench.skipped, reference.skipped,
        "skipped detectors: bench {} vs extract+eval {}",
        bench.json["skipped"], reference.json["skipped"]
    );
    assert_eq!(bench.id_accuracy, reference.id_accuracy, "ID accuracy");
    assert_eq!(
        bench.table.keys().collect::<Vec<_>>(),
        reference.table.keys().collect::<Vec<_>>(),
        "same datasets and detectors"
    );
    for (k, bm) in &bench.table {
        let em = &reference.table[k];
        for (x, y) in bm.iter().zip(em) {
            assert!(
                (x - y).abs() < 1e-6,
                "{k:?}: bench {bm:?} vs extract+eval {em:?}"
            );
        }
    }
}

/// What a set is in the reference run (`ood eval`'s flag).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum As {
    /// `--fit` (its extraction also writes the head).
    Fit,
    /// `--fit-val`.
    FitVal,
    /// `--id`.
    Id,
    /// `--val-ood` (what `ood bench` hands GROOD: the benchmark's OOD-val set).
    ValOod,
    /// `--near NAME=FILE`.
    Near,
    /// `--far NAME=FILE`.
    Far,
}

/// The reference of a bench run: `ood extract` of every set's images read as a class-folder tree
/// (`folder:DIR`; `with`: the extra computations, e.g. `network` for what the network detectors
/// need, as `ood bench` computes it itself), then `ood eval` of the feature files with `extra`
/// flags (e.g. `--detectors`). `net` holds the model flags (`--model M --weights W`); the fit
/// set comes first. Returns the eval's results JSON.
pub fn extract_and_eval(
    work: &Path,
    net: &[&str],
    sets: &[(&str, As, PathBuf)],
    with: Option<&str>,
    extra: &[&str],
) -> PathBuf {
    let feats = work.join("feats");
    let head = feats.join("head.safetensors");
    assert!(sets[0].1 == As::Fit, "the fit set comes first");
    let mut eval: Vec<String> = vec!["eval".into()];
    for (name, role, dir) in sets {
        let out = feats.join(format!("{name}.safetensors"));
        let data = format!("folder:{}", dir.display());
        let mut args: Vec<&str> = vec!["extract"];
        args.extend(net);
        args.extend(["--data", &data, "--out", out.to_str().unwrap()]);
        if *role == As::Fit {
            args.extend(["--head-out", head.to_str().unwrap()]);
        }
        let fit_file = feats.join(format!("{}.safetensors", sets[0].0));
        if let Some(w) = with {
            args.extend(["--with", w]);
            // The multi-layer Mahalanobis' perturbed layer means follow the fit set's class
            // Gaussians: the other sets are extracted with the fit set's features (its second
            // phase), as `ood bench` orders it itself.
            let mds = w == "network" || w.split(',').any(|d| d == "mahalanobis_ensemble");
            if mds && *role != As::Fit {
                args.extend(["--fit-features", fit_file.to_str().unwrap()]);
            }
        }
        ok(ood(&args));
        let file = out.to_str().unwrap().to_string();
        let (flag, value) = match role {
            As::Fit => ("--fit", file),
            As::FitVal => ("--fit-val", file),
            As::Id => ("--id", file),
            As::ValOod => ("--val-ood", file),
            As::Near => ("--near", format!("{name}={file}")),
            As::Far => ("--far", format!("{name}={file}")),
        };
        eval.extend([flag.to_string(), value]);
    }
    let json = work.join("eval.json");
    eval.extend([
        "--head".into(),
        head.to_str().unwrap().into(),
        "--out-dir".into(),
        work.join("eval").to_str().unwrap().into(),
        "--json".into(),
        json.to_str().unwrap().into(),
    ]);
    eval.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = eval.iter().map(String::as_str).collect();
    ok(ood(&args));
    json
}

/// Asserts that stderr warns about every `(set, images, defined)` size mismatch with both
/// numbers.
pub fn assert_size_warnings(bench: &str, stderr: &str, sizes: &[(&str, usize, usize)]) {
    for (set, got, want) in sizes {
        let w = format!(
            "benchmark {bench}: set '{set}' has {got} images, the benchmark defines {want}"
        );
        assert!(stderr.contains(&w), "missing warning {w:?}: {stderr}");
    }
    assert_eq!(
        stderr.matches("the benchmark defines").count(),
        sizes.len(),
        "one warning per set of another size: {stderr}"
    );
}
