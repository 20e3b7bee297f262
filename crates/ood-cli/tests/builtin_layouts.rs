//! Every built-in benchmark on a miniature of the layout it reads (issue 14, "Benchmarks as
//! data"): the folders each manifest names are built at test time from real images of ../shared
//! (CIFAR-10 JPEG standing in for the ID classes, Tiny-ImageNet, MNIST, notMNIST and DTD for the
//! OOD sets; a few images per set), and `ood bench NAME --data-root MINI` runs end to end:
//!
//! * `openood-cifar100`: the OpenOOD v1.5 imglist layout; the table equals `ood extract` of the
//!   same image files read as class-folder trees + `ood eval` (`openood_layout.rs` does that for
//!   every detector on `openood-cifar10`; here feature, logit and one network detector);
//! * `openood-cifar10 --full-spectrum` (CIFAR-10-C joins the ID set; `openood_layout.rs` runs
//!   the plain benchmark against extract + eval);
//! * `openood-imagenet200` (plain and `--full-spectrum`, whose ID set joins ImageNet-V2/-C/-R;
//!   the full-spectrum table equals extract + eval with all four ID sets in one folder tree) and
//!   `openood-imagenet` (`--full-spectrum`): `images_largescale/` and `images_classic/`;
//! * `knn-imagenet`: the KNN/MOS folder tree, with a seeded random torchvision ResNet-18 at the
//!   ImageNet preprocessing (resize 256, centre crop 224);
//! * `neglabel-imagenet`: with `--model clip`, a small random-weight CLIP written at test time
//!   (no CLIP weights exist here), and its errors before any work (layout, `--text-head`);
//! * the errors of an imglist layout before any work: missing listed images (the count and the
//!   first paths) and an ID label outside the network's classes (the line).
//!
//! Every run must warn about each set whose size differs from the built-in's (all do: the
//! miniature is smaller), with both numbers.

mod common;
use common::layout::{
    As, ListSet, Results, Sources, assert_same_results, assert_size_warnings, extract_and_eval,
    list_set, resnet20_weights, results, write_openood, write_samples,
};
use common::{assert_fails, ood, shared_root, stderr};
use std::path::{Path, PathBuf};

/// A finished `ood bench` run.
struct Run {
    /// The process.
    out: std::process::Output,
    /// Its `--json` file.
    json: PathBuf,
    /// Its `--out-dir`.
    dir: PathBuf,
}

impl Run {
    /// Asserts that the run succeeded (showing its stderr otherwise); returns its stderr.
    fn ok(&self) -> String {
        let err = stderr(&self.out);
        assert!(self.out.status.success(), "ood bench failed: {err}");
        err
    }

    /// The run's `config.json` (inputs with their row counts, the bench settings under `extra`).
    fn config(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("config.json")).unwrap())
            .unwrap()
    }

    /// The number of rows the evaluation read as its ID test set.
    fn id_rows(&self) -> u64 {
        let c = self.config();
        c["inputs"]["id_test"]["rows"]
            .as_u64()
            .unwrap_or_else(|| panic!("no ID row count in {}", c["inputs"]))
    }
}

/// `ood bench NAME --data-root MINI` with `args`, its cache (shared by the runs of a test) and
/// outputs under `work`, the outputs named by `run`.
fn bench(name: &str, run: &str, mini: &Path, work: &Path, args: &[&str]) -> Run {
    let json = work.join(format!("{run}.json"));
    let (cache, dir) = (work.join("cache"), work.join(format!("out-{run}")));
    let mut a = vec!["bench", name, "--data-root", mini.to_str().unwrap()];
    a.extend(["--cache-dir", cache.to_str().unwrap()]);
    a.extend(["--out-dir", dir.to_str().unwrap()]);
    a.extend(["--json", json.to_str().unwrap()]);
    a.extend(args);
    Run {
        out: ood(&a),
        json,
        dir,
    }
}

/// How a bench run's stderr says it got a set's features: `extracted` or `cached`.
fn extraction<'a>(err: &'a str, set: &str) -> &'a str {
    let line = err
        .lines()
        .find(|l| l.starts_with(&format!("{set}: ")))
        .unwrap_or_else(|| panic!("no line for set {set}: {err}"));
    line.rsplit_once(" (")
        .and_then(|(_, s)| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line}"))
}

/// Asserts that every OOD set of `want` is reported, in its group.
fn assert_groups(r: &Results, want: &[(&str, Option<&str>)]) {
    for (set, group) in want {
        assert_eq!(
            r.groups.get(*set).map(Option::as_deref),
            Some(*group),
            "{set}: {:?}",
            r.groups
        );
    }
}

#[test]
fn openood_cifar100_on_a_miniature_layout_equals_extract_and_eval() {
    let Some(root) = shared_root("openood_cifar100_on_a_miniature_layout_equals_extract_and_eval")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mini = tmp.path().join("data");
    let src = Sources::new(&root);
    let ic = "images_classic";
    // CIFAR-10 JPEG (10 classes, class-major) stands in for CIFAR-100, Tiny-ImageNet test for
    // CIFAR-10 and Places365, notMNIST for SVHN.
    #[rustfmt::skip]
    let sets = [
        list_set("train_cifar100", ic, "cifar100/train", &src.cifar_train, (0, 250, 200), false),
        list_set("val_cifar100", ic, "cifar100/val", &src.cifar_test, (7, 250, 40), false),
        list_set("test_cifar100", ic, "cifar100/test", &src.cifar_test, (0, 100, 100), false),
        list_set("test_cifar10", ic, "cifar10/test", &src.tin_test, (0, 100, 40), true),
        list_set("test_tin", ic, "tin/test", &src.tin_val, (0, 100, 40), true),
        list_set("val_tin", ic, "tin/val", &src.tin_val, (50, 250, 20), true),
        list_set("test_mnist", ic, "mnist", &src.mnist, (0, 100, 40), true),
        list_set("test_svhn", ic, "svhn", &src.notmnist, (0, 100, 40), true),
        list_set("test_texture", ic, "texture", &src.dtd, (0, 7, 40), true),
        list_set("test_places365", ic, "places365", &src.tin_test, (50, 100, 40), true),
    ];
    write_openood(&mini, "cifar100", &sets);
    let weights = resnet20_weights(&root);
    let net = [
        "--model",
        "resnet20",
        "--weights",
        weights.to_str().unwrap(),
    ];
    let mut args = net.to_vec();
    args.extend(["--detectors", CIFAR_DETECTORS]);
    let run = bench("openood-cifar100", "cifar100", &mini, tmp.path(), &args);
    let err = run.ok();
    assert_size_warnings(
        "openood-cifar100",
        &err,
        &[
            ("cifar10", 40, 10000),
            ("tin", 40, 7793),
            ("mnist", 40, 70000),
            ("svhn", 40, 26032),
            ("texture", 40, 5640),
            ("places365", 40, 35195),
        ],
    );
    let b = results(&run.json);
    assert_eq!(b.json["convention"], "openood");
    assert_eq!(run.id_rows(), 100);
    assert_groups(
        &b,
        &[
            ("cifar10", Some("near")),
            ("tin", Some("near")),
            ("mnist", Some("far")),
            ("svhn", Some("far")),
            ("texture", Some("far")),
            ("places365", Some("far")),
        ],
    );
    assert!(
        b.id_accuracy > 0.5,
        "ResNet-20 on 100 CIFAR-10 images: {}",
        b.id_accuracy
    );

    let ic = mini.join(ic);
    let sets: Vec<(&str, As, PathBuf)> = [
        ("train", As::Fit, "cifar100/train"),
        ("val", As::FitVal, "cifar100/val"),
        ("test", As::Id, "cifar100/test"),
        ("val_tin", As::ValOod, "tin/val"),
        ("cifar10", As::Near, "cifar10/test"),
        ("tin", As::Near, "tin/test"),
        ("mnist", As::Far, "mnist"),
        ("svhn", As::Far, "svhn"),
        ("texture", As::Far, "texture"),
        ("places365", As::Far, "places365"),
    ]
    .into_iter()
    .map(|(n, r, dir)| (n, r, ic.join(dir)))
    .collect();
    let e = results(&extract_and_eval(
        tmp.path(),
        &net,
        &sets,
        Some("odin"),
        &["--detectors", CIFAR_DETECTORS],
    ));
    assert_same_results(&b, &e);
    assert!(b.skipped.is_empty(), "{}", b.json["skipped"]);
    // Six sets and the two group means, for every detector.
    assert_eq!(b.table.len(), 8 * CIFAR_DETECTORS.split(',').count());
}

#[test]
fn openood_cifar10_full_spectrum_on_a_miniature_layout() {
    let Some(root) = shared_root("openood_cifar10_full_spectrum_on_a_miniature_layout") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mini = tmp.path().join("data");
    let src = Sources::new(&root);
    let ic = "images_classic";
    #[rustfmt::skip]
    let sets = [
        list_set("train_cifar10", ic, "cifar10/train", &src.cifar_train, (0, 500, 100), false),
        list_set("val_cifar10", ic, "cifar10/val", &src.cifar_test, (7, 500, 20), false),
        list_set("test_cifar10", ic, "cifar10/test", &src.cifar_test, (0, 250, 40), false),
        list_set("test_cifar10c", ic, "cifar10c", &src.cifar_train, (3, 2500, 20), false),
        list_set("test_cifar100", ic, "cifar100", &src.tin_test, (0, 500, 20), true),
        list_set("test_tin", ic, "tin/test", &src.tin_val, (0, 500, 20), true),
        list_set("val_tin", ic, "tin/val", &src.tin_val, (25, 1000, 10), true),
        list_set("test_mnist", ic, "mnist", &src.mnist, (0, 500, 20), true),
        list_set("test_svhn", ic, "svhn", &src.notmnist, (0, 500, 20), true),
        list_set("test_texture", ic, "texture", &src.dtd, (0, 15, 20), true),
        list_set("test_places365", ic, "places365", &src.tin_test, (25, 500, 20), true),
    ];
    write_openood(&mini, "cifar10", &sets);
    let weights = resnet20_weights(&root);
    let w = weights.to_str().unwrap();
    let args = [
        "--model",
        "resnet20",
        "--weights",
        w,
        "--detectors",
        DETECTORS,
    ];
    let plain = bench("openood-cifar10", "plain", &mini, tmp.path(), &args);
    plain.ok();
    assert_eq!(plain.id_rows(), 40);
    let mut args = args.to_vec();
    args.push("--full-spectrum");
    let run = bench("openood-cifar10", "full", &mini, tmp.path(), &args);
    let err = run.ok();
    assert_size_warnings(
        "openood-cifar10",
        &err,
        &[
            ("cifar100", 20, 10000),
            ("tin", 20, 7793),
            ("mnist", 20, 70000),
            ("svhn", 20, 26032),
            ("texture", 20, 5640),
            ("places365", 20, 35195),
        ],
    );
    // CIFAR-10-C joins the ID test set.
    assert_eq!(extraction(&err, "cifar10c"), "extracted", "{err}");
    assert_eq!(extraction(&err, "cifar10_test"), "cached", "{err}");
    assert_eq!(run.config()["extra"]["full_spectrum"], true);
    assert_eq!(run.id_rows(), 60);
    let r = results(&run.json);
    assert_groups(
        &r,
        &[
            ("cifar100", Some("near")),
            ("tin", Some("near")),
            ("mnist", Some("far")),
            ("svhn", Some("far")),
            ("texture", Some("far")),
            ("places365", Some("far")),
        ],
    );
    assert_ne!(r.table, results(&plain.json).table);

    // `--align auto`: the classifier's features projected into the text space of the negatives
    // file (the projection fitted once on the fit set, then taken from the cache) score NegLabel
    // and MCM beside MSP on the classifier's own features.
    let neg = tmp.path().join("neg.safetensors");
    random_negatives(&neg);
    let n = neg.to_str().unwrap();
    #[rustfmt::skip]
    let args = ["--model", "resnet20", "--weights", w, "--detectors", "msp,neg_label,mcm",
        "--param", "neg_label.groups=4", "--negatives", n, "--align", "auto"];
    let projection = |err: &str| -> String {
        let line = err.lines().find(|l| l.starts_with("projection: "));
        line.unwrap_or_else(|| panic!("no projection line: {err}"))
            .to_string()
    };
    let first = bench("openood-cifar10", "align", &mini, tmp.path(), &args);
    let err = first.ok();
    assert!(projection(&err).ends_with("(fitted)"), "{err}");
    let r = results(&first.json);
    let detectors: std::collections::BTreeSet<&str> =
        r.table.keys().map(|k| k.1.as_str()).collect();
    assert_eq!(
        detectors,
        ["mcm", "msp", "neg_label"].into(),
        "{:?}",
        r.skipped
    );
    let again = bench("openood-cifar10", "align-again", &mini, tmp.path(), &args);
    let err = again.ok();
    assert!(projection(&err).ends_with("(cached)"), "{err}");
    assert_eq!(results(&again.json).table, r.table);
}

/// The sets of a miniature OpenOOD v1.5 ImageNet layout (`b`: `imagenet` or `imagenet200`), in
/// the folders OpenOOD's download script uses.
#[rustfmt::skip]
fn imagenet_sets<'a>(b: &str, src: &'a Sources) -> Vec<ListSet<'a>> {
    let (il, ic) = ("images_largescale", "images_classic");
    vec![
        list_set(format!("train_{b}"), il, "imagenet_1k/train", &src.cifar_train, (0, 500, 100), false),
        list_set(format!("val_{b}"), il, "imagenet_1k/val", &src.cifar_test, (3, 500, 20), false),
        list_set(format!("test_{b}"), il, "imagenet_1k/test", &src.cifar_test, (0, 250, 40), false),
        list_set(format!("test_{b}_v2"), il, "imagenet_v2", &src.cifar_train, (7, 5000, 10), false),
        list_set(format!("test_{b}_c"), il, "imagenet_c", &src.cifar_train, (11, 5000, 10), false),
        list_set(format!("test_{b}_r"), il, "imagenet_r", &src.cifar_test, (17, 1000, 10), false),
        list_set("test_ssb_hard", il, "ssb_hard", &src.tin_val, (0, 500, 20), true),
        list_set("test_ninco", il, "ninco", &src.tin_test, (0, 500, 20), true),
        list_set("test_inaturalist", il, "inaturalist", &src.tin_test, (250, 500, 20), true),
        list_set("test_textures", ic, "texture", &src.dtd, (1, 15, 20), true),
        list_set("test_openimage_o", il, "openimage_o", &src.tin_val, (250, 500, 20), true),
        list_set("val_openimage_o", il, "openimage_o_val", &src.tin_val, (125, 1000, 10), true),
    ]
}

/// The OOD sets of the OpenOOD ImageNet built-ins with their groups.
const IMAGENET_OOD: [(&str, Option<&str>); 5] = [
    ("ssb_hard", Some("near")),
    ("ninco", Some("near")),
    ("inaturalist", Some("far")),
    ("textures", Some("far")),
    ("openimage_o", Some("far")),
];

/// The size warnings of the miniature OpenOOD ImageNet layouts.
const IMAGENET_SIZES: [(&str, usize, usize); 5] = [
    ("ssb_hard", 20, 49000),
    ("ninco", 20, 5879),
    ("inaturalist", 20, 10000),
    ("textures", 20, 5160),
    ("openimage_o", 20, 15869),
];

/// The detectors of the openood-cifar100 run: those of [`DETECTORS`] and ODIN (the network at
/// score time: probes in the extraction).
const CIFAR_DETECTORS: &str = "msp,energy,max_logit,knn,mahalanobis,vim,react,odin";

/// Feature-space detectors of every kind the runner handles (logits, features with a fit,
/// class Gaussians, the fit-val set) without the network passes at score time.
const DETECTORS: &str = "msp,energy,max_logit,knn,mahalanobis,vim,react";

#[test]
fn openood_imagenet200_on_a_miniature_layout_plain_and_full_spectrum() {
    let Some(root) =
        shared_root("openood_imagenet200_on_a_miniature_layout_plain_and_full_spectrum")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mini = tmp.path().join("data");
    let src = Sources::new(&root);
    write_openood(&mini, "imagenet200", &imagenet_sets("imagenet200", &src));
    let weights = resnet20_weights(&root);
    let net = [
        "--model",
        "resnet20",
        "--weights",
        weights.to_str().unwrap(),
    ];
    let mut args = net.to_vec();
    args.extend(["--detectors", DETECTORS]);

    let run = bench("openood-imagenet200", "plain", &mini, tmp.path(), &args);
    let err = run.ok();
    assert_size_warnings("openood-imagenet200", &err, &IMAGENET_SIZES);
    let plain = results(&run.json);
    assert_eq!(run.id_rows(), 40);
    assert_eq!(run.config()["extra"]["full_spectrum"], false);
    assert_groups(&plain, &IMAGENET_OOD);
    // The covariate-shifted sets are not extracted without --full-spectrum.
    assert!(!err.contains("imagenet_v2:"), "{err}");

    // Full spectrum: ImageNet-200-V2/-C/-R join the ID test set (40 + 3 x 10 images).
    args.push("--full-spectrum");
    let run = bench("openood-imagenet200", "full", &mini, tmp.path(), &args);
    let err = run.ok();
    assert_size_warnings("openood-imagenet200", &err, &IMAGENET_SIZES);
    // The covariate-shifted sets are extracted now, the others come from the first run's cache.
    for set in ["imagenet_v2", "imagenet_c", "imagenet_r"] {
        assert_eq!(extraction(&err, set), "extracted", "{set}: {err}");
    }
    for set in [
        "imagenet200_train",
        "imagenet200_test",
        "ssb_hard",
        "textures",
    ] {
        assert_eq!(extraction(&err, set), "cached", "{set}: {err}");
    }
    let full = results(&run.json);
    assert_eq!(run.config()["extra"]["full_spectrum"], true);
    assert_eq!(run.id_rows(), 70);
    assert_eq!(full.groups, plain.groups);
    assert_ne!(
        full.table, plain.table,
        "the csid sets change the ID scores"
    );

    // The reference: the four ID test sets as one class-folder tree.
    let il = mini.join("images_largescale");
    let joined = tmp.path().join("joined");
    for dir in [
        "imagenet_1k/test",
        "imagenet_v2",
        "imagenet_c",
        "imagenet_r",
    ] {
        for class in std::fs::read_dir(il.join(dir)).unwrap() {
            let class = class.unwrap();
            let to = joined.join(class.file_name());
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(class.path()).unwrap() {
                let f = f.unwrap();
                let name = format!(
                    "{}-{}",
                    dir.replace('/', "_"),
                    f.file_name().to_str().unwrap()
                );
                std::fs::copy(f.path(), to.join(name)).unwrap();
            }
        }
    }
    let ic = mini.join("images_classic");
    let sets: Vec<(&str, As, PathBuf)> = vec![
        ("train", As::Fit, il.join("imagenet_1k/train")),
        ("val", As::FitVal, il.join("imagenet_1k/val")),
        ("test", As::Id, joined),
        ("val_openimage_o", As::ValOod, il.join("openimage_o_val")),
        ("ssb_hard", As::Near, il.join("ssb_hard")),
        ("ninco", As::Near, il.join("ninco")),
        ("inaturalist", As::Far, il.join("inaturalist")),
        ("textures", As::Far, ic.join("texture")),
        ("openimage_o", As::Far, il.join("openimage_o")),
    ];
    let e = results(&extract_and_eval(
        tmp.path(),
        &net,
        &sets,
        None,
        &["--detectors", DETECTORS],
    ));
    assert_same_results(&full, &e);
}

#[test]
fn openood_imagenet_on_a_miniature_layout_full_spectrum() {
    let Some(root) = shared_root("openood_imagenet_on_a_miniature_layout_full_spectrum") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mini = tmp.path().join("data");
    let src = Sources::new(&root);
    write_openood(&mini, "imagenet", &imagenet_sets("imagenet", &src));
    let weights = resnet20_weights(&root);
    let run = bench(
        "openood-imagenet",
        "full",
        &mini,
        tmp.path(),
        &[
            "--model",
            "resnet20",
            "--weights",
            weights.to_str().unwrap(),
            "--detectors",
            DETECTORS,
            "--full-spectrum",
        ],
    );
    let err = run.ok();
    assert_size_warnings("openood-imagenet", &err, &IMAGENET_SIZES);
    let r = results(&run.json);
    assert_eq!(run.config()["extra"]["full_spectrum"], true);
    assert_eq!(run.id_rows(), 70);
    assert_groups(&r, &IMAGENET_OOD);
    let detectors: std::collections::BTreeSet<&str> =
        r.table.keys().map(|k| k.1.as_str()).collect();
    assert_eq!(
        detectors.len(),
        DETECTORS.split(',').count(),
        "{detectors:?}"
    );
}

/// The OOD sets of the KNN and NegLabel ImageNet built-ins (MOS's subsets and DTD).
const MOS_OOD: [(&str, Option<&str>); 4] = [
    ("inaturalist", Some("far")),
    ("sun", Some("far")),
    ("places", Some("far")),
    ("textures", Some("far")),
];

/// Writes the KNN/MOS ImageNet folder tree under `mini`: `imagenet/val/<wnid>/*` (and
/// `imagenet/train/<wnid>/*` with `train`), `iNaturalist/images`, `SUN/images`,
/// `Places/images`, `dtd/images/<class>/*`. CIFAR-10 classes stand in for ImageNet's (ten
/// wnids in sorted order = labels 0..9), Tiny-ImageNet for the scene and species sets.
fn write_knn_layout(mini: &Path, src: &Sources, train: bool) {
    const WNIDS: [&str; 10] = [
        "n01440764",
        "n01443537",
        "n01484850",
        "n01491361",
        "n01494475",
        "n01496331",
        "n01498041",
        "n01514668",
        "n01514859",
        "n01518878",
    ];
    let wnid = |l: i64| WNIDS[l as usize].to_string();
    if train {
        write_samples(
            &mini.join("imagenet/train"),
            &src.cifar_train,
            (0, 1000, 50),
            &wnid,
        );
    }
    write_samples(
        &mini.join("imagenet/val"),
        &src.cifar_test,
        (5, 500, 20),
        &wnid,
    );
    let images = |_: i64| "images".to_string();
    write_samples(
        &mini.join("iNaturalist"),
        &src.tin_test,
        (0, 500, 12),
        &images,
    );
    write_samples(&mini.join("SUN"), &src.tin_val, (0, 500, 12), &images);
    write_samples(&mini.join("Places"), &src.tin_test, (250, 500, 12), &images);
    // DTD's own class folders (its tar reader labels them in sorted order).
    let dtd_classes = [
        "banded",
        "blotchy",
        "braided",
        "bubbly",
        "bumpy",
        "chequered",
        "cobwebbed",
        "cracked",
        "crosshatched",
        "crystalline",
    ];
    let class = |l: i64| dtd_classes[l as usize].to_string();
    write_samples(&mini.join("dtd/images"), &src.dtd, (2, 25, 12), &class);
}

#[test]
fn knn_imagenet_on_a_miniature_layout_at_224_px() {
    let Some(root) = shared_root("knn_imagenet_on_a_miniature_layout_at_224_px") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mini = tmp.path().join("data");
    write_knn_layout(&mini, &Sources::new(&root), true);
    // A torchvision ResNet-18 (ImageNet preprocessing: resize 256, centre crop 224) with seeded
    // random weights and ten classes, saved by the registry itself.
    let weights = tmp.path().join("resnet18.safetensors");
    tch::manual_seed(0);
    let arch = ood_nn::models::Arch::parse("resnet18").unwrap();
    let net = arch.build(10, tch::Device::Cpu).unwrap();
    net.var_store().save(&weights).unwrap();
    let run = bench(
        "knn-imagenet",
        "knn",
        &mini,
        tmp.path(),
        &[
            "--model",
            "resnet18",
            "--weights",
            weights.to_str().unwrap(),
            "--detectors",
            "knn,msp,energy",
        ],
    );
    let err = run.ok();
    // Folder sets are counted as they are read: a warning for every one, the fit set included.
    assert_size_warnings(
        "knn-imagenet",
        &err,
        &[
            ("imagenet_train", 50, 1281167),
            ("imagenet_val", 20, 50000),
            ("inaturalist", 12, 10000),
            ("sun", 12, 10000),
            ("places", 12, 10000),
            ("textures", 12, 5640),
        ],
    );
    let r = results(&run.json);
    assert_eq!(r.json["convention"], "knn");
    assert_groups(&r, &MOS_OOD);
    let detectors: std::collections::BTreeSet<&str> =
        r.table.keys().map(|k| k.1.as_str()).collect();
    assert_eq!(
        detectors,
        ["energy", "knn", "msp"].into(),
        "{:?}",
        r.skipped
    );
    // ResNet-18 features (512-d, ten classes) of the ImageNet preprocessing.
    let fit = &run.config()["inputs"]["fit"];
    assert_eq!(
        (fit["dim"].as_u64(), fit["classes"].as_u64()),
        (Some(512), Some(10))
    );
    assert_eq!(fit["rows"], 50);
    let pre = fit["metadata"]["preprocessing"].as_str().unwrap();
    assert!(
        pre.contains("resize_shorter(256, pil_bilinear) > center_crop(224)"),
        "{pre}"
    );
}

/// A small CLIPModel with random weights (seeded) in Hugging Face's tensor names, its shapes
/// what [`ood_nn::clip`] infers the configuration from: ViT width 64 (one head), one layer,
/// patch 8 on 32-px images; text width 64, one layer; projection 32.
fn random_clip(path: &Path) {
    use tch::{Device, Kind, Tensor};
    tch::manual_seed(0);
    let opts = (Kind::Float, Device::Cpu);
    let r = |shape: &[i64]| Tensor::randn(shape, opts) * 0.05;
    let mut t: Vec<(String, Tensor)> = Vec::new();
    let ln = |t: &mut Vec<(String, Tensor)>, p: &str, w: i64| {
        t.push((format!("{p}.weight"), Tensor::ones([w], opts) + r(&[w])));
        t.push((format!("{p}.bias"), r(&[w])));
    };
    let (w, m, p) = (64, 128, 32);
    for tower in ["vision_model", "text_model"] {
        let l = format!("{tower}.encoder.layers.0");
        ln(&mut t, &format!("{l}.layer_norm1"), w);
        ln(&mut t, &format!("{l}.layer_norm2"), w);
        for (name, o, i) in [
            ("self_attn.q_proj", w, w),
            ("self_attn.k_proj", w, w),
            ("self_attn.v_proj", w, w),
            ("self_attn.out_proj", w, w),
            ("mlp.fc1", m, w),
            ("mlp.fc2", w, m),
        ] {
            t.push((format!("{l}.{name}.weight"), r(&[o, i])));
            t.push((format!("{l}.{name}.bias"), r(&[o])));
        }
    }
    let ve = "vision_model.embeddings";
    t.push((format!("{ve}.patch_embedding.weight"), r(&[w, 3, 8, 8])));
    t.push((format!("{ve}.class_embedding"), r(&[w])));
    t.push((format!("{ve}.position_embedding.weight"), r(&[17, w])));
    ln(&mut t, "vision_model.pre_layrnorm", w);
    ln(&mut t, "vision_model.post_layernorm", w);
    t.push(("visual_projection.weight".into(), r(&[p, w])));
    t.push((
        "text_model.embeddings.token_embedding.weight".into(),
        r(&[64, w]),
    ));
    t.push((
        "text_model.embeddings.position_embedding.weight".into(),
        r(&[16, w]),
    ));
    ln(&mut t, "text_model.final_layer_norm", w);
    t.push(("text_projection.weight".into(), r(&[p, w])));
    t.push(("logit_scale".into(), Tensor::ones([0i64; 0], opts) * 2.0));
    Tensor::write_safetensors(&t, path).unwrap();
}

/// The class text embeddings (`weight`, ten classes) and negative labels (`negatives`) of a
/// NegLabel run, random (seeded), in the layout `ood neglabel mine` writes.
fn random_negatives(path: &Path) {
    use tch::{Device, Kind, Tensor};
    tch::manual_seed(1);
    let opts = (Kind::Float, Device::Cpu);
    Tensor::write_safetensors(
        &[
            ("weight", Tensor::randn([10, 32], opts)),
            ("negatives", Tensor::randn([40, 32], opts)),
        ],
        path,
    )
    .unwrap();
}

#[test]
fn neglabel_imagenet_on_a_miniature_layout_with_a_random_clip() {
    let Some(root) = shared_root("neglabel_imagenet_on_a_miniature_layout_with_a_random_clip")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mini = t.join("data");
    let clip = t.join("clip.safetensors");
    let neg = t.join("neg.safetensors");
    random_clip(&clip);
    random_negatives(&neg);
    let clip_args = |with_text: bool| {
        let mut a = vec![
            "--model".to_string(),
            "clip".into(),
            "--weights".into(),
            clip.to_str().unwrap().into(),
            "--negatives".into(),
            neg.to_str().unwrap().into(),
        ];
        if with_text {
            a.extend(["--text-head".into(), neg.to_str().unwrap().into()]);
        }
        a
    };
    fn s(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    // No layout yet: the first missing folder and the layout the built-in expects.
    std::fs::create_dir_all(&mini).unwrap();
    let a = clip_args(true);
    let run = bench("neglabel-imagenet", "neglabel", &mini, t, &s(&a));
    assert_fails(
        &run.out,
        &[
            "set 'imagenet_val_fit'",
            "imagenet/val not found",
            "expected layout",
            "iNaturalist/images",
        ],
    );
    write_knn_layout(&mini, &Sources::new(&root), false);
    // The layout is there, but CLIP without its class text embeddings: a clear error, and
    // nothing was extracted.
    let a = clip_args(false);
    let run = bench("neglabel-imagenet", "neglabel", &mini, t, &s(&a));
    assert_fails(&run.out, &["--model clip needs --text-head"]);
    assert!(!t.join("cache").exists(), "work was done before the error");

    let mut a = clip_args(true);
    a.extend(
        [
            "--detectors",
            "neg_label,mcm,msp,energy",
            "--param",
            "neg_label.groups=4",
        ]
        .map(String::from),
    );
    let run = bench("neglabel-imagenet", "neglabel", &mini, t, &s(&a));
    let err = run.ok();
    assert_size_warnings(
        "neglabel-imagenet",
        &err,
        &[
            ("imagenet_val_fit", 20, 50000),
            ("imagenet_val", 20, 50000),
            ("inaturalist", 12, 10000),
            ("sun", 12, 10000),
            ("places", 12, 10000),
            ("textures", 12, 5640),
        ],
    );
    // The fit set is the ID set (NegLabel is zero-shot): one extraction, then the cache.
    assert_eq!(extraction(&err, "imagenet_val_fit"), "extracted", "{err}");
    assert_eq!(extraction(&err, "imagenet_val"), "cached", "{err}");
    let r = results(&run.json);
    assert_eq!(r.json["convention"], "hendrycks");
    // CLIP's own preprocessing at its input size, and one feature file for fit and ID.
    let c = run.config();
    let (fit, id) = (&c["inputs"]["fit"], &c["inputs"]["id_test"]);
    assert_eq!(fit["path"], id["path"]);
    assert_eq!(
        (id["rows"].as_u64(), id["classes"].as_u64()),
        (Some(20), Some(10))
    );
    let pre = id["metadata"]["preprocessing"].as_str().unwrap();
    assert!(
        pre.contains("bicubic") && pre.contains("center_crop(32)"),
        "{pre}"
    );
    let detectors: std::collections::BTreeSet<&str> =
        r.table.keys().map(|k| k.1.as_str()).collect();
    assert_eq!(
        detectors,
        ["energy", "mcm", "msp", "neg_label"].into(),
        "{:?}",
        r.skipped
    );
    assert_groups(&r, &MOS_OOD);

    // CLIP's logits follow its class text embeddings: another text head is another cache entry
    // (re-extracted, not the first head's logits), and the first head's entry is still there.
    let reversed = t.join("neg-reversed.safetensors");
    let tensors: Vec<(String, tch::Tensor)> = tch::Tensor::read_safetensors(&neg)
        .unwrap()
        .into_iter()
        .map(|(n, v)| {
            if n == "weight" {
                (n, v.flip([0]))
            } else {
                (n, v)
            }
        })
        .collect();
    tch::Tensor::write_safetensors(&tensors, &reversed).unwrap();
    for (head, run_name, want) in [
        (&reversed, "reversed", "extracted"),
        (&neg, "again", "cached"),
    ] {
        let mut a = clip_args(false);
        a.extend(["--text-head".into(), head.to_str().unwrap().into()]);
        a.extend(["--detectors", "msp,energy"].map(String::from));
        let run = bench("neglabel-imagenet", run_name, &mini, t, &s(&a));
        let err = run.ok();
        assert_eq!(
            extraction(&err, "imagenet_val_fit"),
            want,
            "{run_name}: {err}"
        );
    }
}

#[test]
fn imglist_layout_errors_come_before_any_work() {
    let Some(root) = shared_root("imglist_layout_errors_come_before_any_work") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mini = tmp.path().join("data");
    let src = Sources::new(&root);
    write_openood(&mini, "imagenet200", &imagenet_sets("imagenet200", &src));
    let weights = resnet20_weights(&root);
    let net = [
        "--model",
        "resnet20",
        "--weights",
        weights.to_str().unwrap(),
    ];
    let il = mini.join("images_largescale");
    let lists = mini.join("benchmark_imglist/imagenet200");

    // Two images of the ninco list are gone: exit 2 with the count and the first paths.
    let ninco = std::fs::read_to_string(lists.join("test_ninco.txt")).unwrap();
    let gone: Vec<&str> = ninco
        .lines()
        .skip(3)
        .take(2)
        .map(|l| l.split_once(' ').unwrap().0)
        .collect();
    for g in &gone {
        std::fs::rename(il.join(g), il.join(format!("{g}.moved"))).unwrap();
    }
    let run = bench("openood-imagenet200", "err", &mini, tmp.path(), &net);
    assert_fails(
        &run.out,
        &[
            "set 'ninco'",
            "2 of the 20 images listed in",
            "test_ninco.txt",
            gone[0],
            gone[1],
        ],
    );
    assert!(
        !tmp.path().join("cache").exists(),
        "work was done before the error"
    );
    for g in &gone {
        std::fs::rename(il.join(format!("{g}.moved")), il.join(g)).unwrap();
    }

    // A label of the ID test list outside ResNet-20's ten classes: the line that has it.
    let test = lists.join("test_imagenet200.txt");
    let text = std::fs::read_to_string(&test).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let path = lines[6].split_once(' ').unwrap().0.to_string();
    lines[6] = format!("{path} 57");
    std::fs::write(&test, lines.join("\n") + "\n").unwrap();
    let run = bench("openood-imagenet200", "err", &mini, tmp.path(), &net);
    assert_fails(
        &run.out,
        &[
            "set 'imagenet200_test'",
            "test_imagenet200.txt",
            &format!("line 7 ('{path}') has label 57"),
            "10 classes",
        ],
    );
    assert!(
        !tmp.path().join("cache").exists(),
        "work was done before the error"
    );

    // A malformed line is named before any work too.
    lines[6] = format!("{path} seven");
    std::fs::write(&test, lines.join("\n") + "\n").unwrap();
    let run = bench("openood-imagenet200", "err", &mini, tmp.path(), &net);
    assert_fails(
        &run.out,
        &[
            "test_imagenet200.txt",
            "line 7",
            "'seven' is not an integer",
        ],
    );
    assert!(
        !tmp.path().join("cache").exists(),
        "work was done before the error"
    );
}
