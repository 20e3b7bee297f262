//! MixOE's hold-out-class benchmarks (Zhang et al., "Mixture Outlier Exposure: Towards
//! Out-of-Distribution Detection in Fine-grained Environments", WACV 2023) for any labelled
//! dataset: some classes are held out of training and their test images become the near-OOD
//! set.
//!
//! [`write_holdout`] reads a labelled source (a folder or archive per class, an imglist, idx or
//! CIFAR batches: any [`DataSpec`] with labels), draws the held-out classes with a seeded
//! shuffle (or takes them by name or label number), splits each class's images into train / val /
//! test (seeded, per class; or takes test and validation images from their own sources, as
//! MixOE's `info/<dataset>/{train,val,test}.txt`), and writes into a new folder:
//!
//! | file | content |
//! |---|---|
//! | `images/<split>/<class>/<n>_<name>` | the images: encoded files byte for byte, raw pixels (idx, CIFAR batches) as PNG |
//! | `train.txt`, `val.txt`, `test.txt` | OpenOOD imglists of the held-in classes, labels re-indexed `0..K` in the source's class order |
//! | `near.txt` | the held-out classes' test images (label −1) |
//! | `classes.txt`, `heldout.txt` | held-in class names in label order; held-out class names |
//! | `benchmark.toml` | a manifest for `ood bench` (fit = train, fit_val = val, id = test, near = near; `data_root = "."`) |
//! | `holdout.config.json` | the settings, the counts and the inputs' fingerprints |
//!
//! `ood train --data imglist:DIR/train.txt@DIR` trains on the held-in classes. Everything is
//! written to a temporary folder that is renamed into place at the end: all or nothing, and an
//! existing non-empty folder is never written into.

use super::{Benchmark, Role, SetDef};
use crate::data::{DataSpec, Pixels, RawSample};
use crate::error::{Error, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How many classes to hold out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HoldoutCount {
    /// This many classes.
    Classes(usize),
    /// This fraction of the classes (rounded, at least 1).
    Fraction(f64),
}

impl std::str::FromStr for HoldoutCount {
    type Err = String;
    /// `50` (classes) or `0.25` (a fraction in (0, 1)).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Ok(n) = s.parse::<usize>() {
            return Ok(HoldoutCount::Classes(n));
        }
        match s.parse::<f64>() {
            Ok(f) if f > 0.0 && f < 1.0 => Ok(HoldoutCount::Fraction(f)),
            _ => Err(format!(
                "expected a number of classes (e.g. 50) or a fraction in (0, 1) (e.g. 0.25), got '{s}'"
            )),
        }
    }
}

/// The settings of [`write_holdout`].
#[derive(Debug, Clone)]
pub struct HoldoutOptions {
    /// The labelled source (train images; also test images unless `test` is given).
    pub data: DataSpec,
    /// A separate labelled test source with the same classes.
    pub test: Option<DataSpec>,
    /// A separate labelled validation source with the same classes (MixOE's `val.txt`).
    pub val: Option<DataSpec>,
    /// How many classes to hold out (ignored when `classes` is given).
    pub holdout: HoldoutCount,
    /// The held-out classes by name (or by label number, for sources without class names),
    /// instead of a seeded draw.
    pub classes: Option<Vec<String>>,
    /// Per class, the fraction of `data`'s images that become test images (without `test`).
    pub test_fraction: f64,
    /// Per class, the fraction of the remaining training images that become validation images
    /// (without `val`).
    pub val_fraction: f64,
    /// Seed of the class draw and of the per-class splits.
    pub seed: u64,
}

/// What [`write_holdout`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Holdout {
    /// Held-in class names, in label order.
    pub held_in: Vec<String>,
    /// Held-out class names, in source order.
    pub held_out: Vec<String>,
    /// Images per written set: `train`, `val`, `test`, `near`.
    pub counts: BTreeMap<String, usize>,
    /// The benchmark manifest written as `benchmark.toml`.
    pub benchmark: Benchmark,
}

/// Labels of every sample of a source, in order (pixels are read and dropped).
fn labels_of(spec: &DataSpec) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for s in spec.samples()? {
        let s = s?;
        if s.label < 0 {
            return Err(Error::Config(format!(
                "{}: '{}' has no label (hold-out splits need labelled data)",
                spec.to_spec_string(),
                s.name
            )));
        }
        out.push(s.label);
    }
    if out.is_empty() {
        return Err(Error::Config(format!(
            "{}: no images",
            spec.to_spec_string()
        )));
    }
    Ok(out)
}

/// The source's class names (folder names), or `class_<label>` where it has none.
fn class_names(spec: &DataSpec, labels: &[i64]) -> Result<Vec<String>> {
    let names = spec.classes()?;
    let max = *labels.iter().max().expect("non-empty") as usize;
    if names.is_empty() {
        return Ok((0..=max).map(|c| format!("class_{c}")).collect());
    }
    if max >= names.len() {
        return Err(Error::Config(format!(
            "{}: label {max} but only {} class names",
            spec.to_spec_string(),
            names.len()
        )));
    }
    Ok(names)
}

/// A file-name-safe version of `s` (imglist paths end at the first space).
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The file name an image is written under, and its bytes.
fn encoded(sample: RawSample, n: usize) -> Result<(String, Vec<u8>)> {
    let base = sample
        .name
        .rsplit('/')
        .next()
        .unwrap_or(&sample.name)
        .to_string();
    let stem = safe(base.rsplit_once('.').map_or(base.as_str(), |(s, _)| s));
    let name = sample.name.clone();
    match sample.pixels {
        Pixels::Encoded(bytes) => {
            let ext = if bytes.starts_with(&[0xff, 0xd8]) {
                "jpg"
            } else if bytes.starts_with(b"\x89PNG") {
                "png"
            } else {
                base.rsplit_once('.').map_or("img", |(_, e)| e)
            };
            let file = format!("{n:06}_{stem}.{}", safe(ext));
            Ok((file, bytes))
        }
        Pixels::Gray {
            width,
            height,
            data,
        } => {
            let mut buf = std::io::Cursor::new(Vec::new());
            image::GrayImage::from_raw(width, height, data)
                .ok_or_else(|| Error::Config(format!("{name}: bad pixel buffer")))?
                .write_to(&mut buf, image::ImageFormat::Png)
                .map_err(|e| Error::Config(format!("{name}: encoding PNG: {e}")))?;
            Ok((format!("{n:06}_{stem}.png"), buf.into_inner()))
        }
        Pixels::Rgb(img) => {
            let mut buf = std::io::Cursor::new(Vec::new());
            img.write_to(&mut buf, image::ImageFormat::Png)
                .map_err(|e| Error::Config(format!("{name}: encoding PNG: {e}")))?;
            Ok((format!("{n:06}_{stem}.png"), buf.into_inner()))
        }
    }
}

/// Splits `indices` (one class) with a seeded shuffle into (first `round(len · fraction)`,
/// rest), each part back in source order.
fn split(indices: &[usize], fraction: f64, rng: &mut ChaCha8Rng) -> (Vec<usize>, Vec<usize>) {
    let mut v = indices.to_vec();
    v.shuffle(rng);
    let k = ((v.len() as f64) * fraction).round() as usize;
    let (mut a, mut b) = (v[..k].to_vec(), v[k..].to_vec());
    a.sort_unstable();
    b.sort_unstable();
    (a, b)
}

/// Builds the hold-out benchmark of `opts` into `out` (which must not exist or be empty);
/// `progress(done, total)` is called after each image written.
pub fn write_holdout(
    opts: &HoldoutOptions,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Holdout> {
    for (what, f) in [
        ("test fraction", opts.test_fraction),
        ("val fraction", opts.val_fraction),
    ] {
        if !(0.0..1.0).contains(&f) {
            return Err(Error::Config(format!("{what} must lie in [0, 1), got {f}")));
        }
    }
    if opts.test.is_none() && opts.test_fraction == 0.0 {
        return Err(Error::Config(
            "without a separate test source the test fraction must be above 0".into(),
        ));
    }
    ood_core::atomic_file::ensure_empty_dir(out)?;
    let labels = labels_of(&opts.data)?;
    let names = class_names(&opts.data, &labels)?;
    // Sources: 0 = data, 1 = test, 2 = val.
    let extra = [opts.test.as_ref(), opts.val.as_ref()];
    let mut extra_labels = [None, None];
    for (k, spec) in extra.iter().enumerate() {
        let Some(t) = spec else { continue };
        let tl = labels_of(t)?;
        let tn = class_names(t, &tl)?;
        if tn.len() > names.len() || tn[..] != names[..tn.len()] {
            return Err(Error::Config(format!(
                "{} and {} have different classes",
                opts.data.to_spec_string(),
                t.to_spec_string()
            )));
        }
        extra_labels[k] = Some(tl);
    }
    let c = names.len();

    // The held-out classes.
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let out_set: Vec<usize> = match &opts.classes {
        Some(list) => {
            let mut v = Vec::new();
            for n in list {
                let by_number = n.parse::<usize>().ok().filter(|&i| i < c);
                let i = names
                    .iter()
                    .position(|x| x == n)
                    .or(by_number)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "held-out class '{n}' is not a class of {} (classes: {}{})",
                            opts.data.to_spec_string(),
                            names[..c.min(8)].join(", "),
                            if c > 8 { ", ..." } else { "" }
                        ))
                    })?;
                v.push(i);
            }
            v
        }
        None => {
            let k = match opts.holdout {
                HoldoutCount::Classes(k) => k,
                HoldoutCount::Fraction(f) => ((c as f64) * f).round().max(1.0) as usize,
            };
            let mut all: Vec<usize> = (0..c).collect();
            all.shuffle(&mut rng);
            all.truncate(k);
            all
        }
    };
    let mut out_set = out_set;
    out_set.sort_unstable();
    out_set.dedup();
    if out_set.is_empty() || out_set.len() >= c {
        return Err(Error::Config(format!(
            "hold out between 1 and {} of the {c} classes, not {}",
            c - 1,
            out_set.len()
        )));
    }
    let held_in: Vec<usize> = (0..c).filter(|i| !out_set.contains(i)).collect();
    let new_label: BTreeMap<usize, i64> = held_in
        .iter()
        .enumerate()
        .map(|(k, &i)| (i, k as i64))
        .collect();

    // Per-class splits: (source 0 = data, 1 = test source) → set name per sample index.
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); c];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut assign: [BTreeMap<usize, &'static str>; 3] =
        [BTreeMap::new(), BTreeMap::new(), BTreeMap::new()];
    for (class, idx) in by_class.iter().enumerate() {
        let held_out = out_set.contains(&class);
        let (test, train) = if opts.test.is_some() {
            (Vec::new(), idx.clone())
        } else {
            split(idx, opts.test_fraction, &mut rng)
        };
        if held_out {
            for i in test {
                assign[0].insert(i, "near");
            }
            continue;
        }
        let fraction = if opts.val.is_some() {
            0.0
        } else {
            opts.val_fraction
        };
        let (val, train) = split(&train, fraction, &mut rng);
        for (set, v) in [("test", test), ("val", val), ("train", train)] {
            for i in v {
                assign[0].insert(i, set);
            }
        }
    }
    for (k, (labels, set)) in extra_labels.iter().zip(["test", "val"]).enumerate() {
        for (i, &l) in labels.iter().flatten().enumerate() {
            match (out_set.contains(&(l as usize)), set) {
                (true, "test") => assign[k + 1].insert(i, "near"),
                (true, _) => None,
                (false, _) => assign[k + 1].insert(i, set),
            };
        }
    }
    let total: usize = assign.iter().map(BTreeMap::len).sum();

    // Everything goes into a temporary folder that is renamed into place at the end.
    ood_core::atomic_file::write_dir_atomic(out, |tmp| -> Result<Holdout> {
        let mut lists: BTreeMap<&str, String> = ["train", "val", "test", "near"]
            .into_iter()
            .map(|s| (s, String::new()))
            .collect();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut done = 0usize;
        let sources = [Some(&opts.data), opts.test.as_ref(), opts.val.as_ref()];
        for (src, spec) in sources.iter().enumerate() {
            let Some(spec) = spec else { continue };
            for (i, s) in spec.samples()?.enumerate() {
                let Some(&set) = assign[src].get(&i) else {
                    continue;
                };
                let s = s?;
                let class = s.label as usize;
                let (file, bytes) = encoded(s, done + 1)?;
                let rel = format!("images/{set}/{}/{file}", safe(&names[class]));
                let path = tmp.join(&rel);
                let dir = path.parent().expect("has a parent");
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
                let label = if set == "near" { -1 } else { new_label[&class] };
                let list = lists.get_mut(set).expect("known set");
                list.push_str(&format!("{rel} {label}\n"));
                *counts.entry(set.to_string()).or_default() += 1;
                done += 1;
                progress(done, total);
            }
        }
        for (set, text) in &lists {
            let p = tmp.join(format!("{set}.txt"));
            std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
        }
        let held_in_names: Vec<String> = held_in.iter().map(|&i| names[i].clone()).collect();
        let held_out_names: Vec<String> = out_set.iter().map(|&i| names[i].clone()).collect();
        for (file, v) in [
            ("classes.txt", &held_in_names),
            ("heldout.txt", &held_out_names),
        ] {
            let p = tmp.join(file);
            std::fs::write(&p, v.join("\n") + "\n").map_err(|e| Error::io(&p, e))?;
        }
        let dataset = safe(&opts.data.dataset_name());
        let set = |name: &str, role: Role, n: usize| SetDef {
            name: name.into(),
            role,
            data: format!("imglist:{name}.txt@."),
            expect: Some(n),
            resize: None,
            crop: None,
            pad: None,
        };
        let count = |s: &str| counts.get(s).copied().unwrap_or(0);
        let mut sets = vec![
            set("train", Role::Fit, count("train")),
            set("test", Role::Id, count("test")),
            set("near", Role::Near, count("near")),
        ];
        if count("val") > 0 {
            sets.insert(1, set("val", Role::FitVal, count("val")));
        }
        let benchmark = Benchmark {
            name: format!("holdout-{dataset}-{}-s{}", out_set.len(), opts.seed),
            description: format!(
                "Hold-out-class benchmark (MixOE) of {}: {} of {c} classes held out (seed {}): {}. \
                 ID = the other classes' test images, near OOD = the held-out classes' test images.",
                opts.data.to_spec_string(),
                out_set.len(),
                opts.seed,
                held_out_names.join(", ")
            ),
            layout: "written by `ood holdout`: imglists and images/ next to this file".into(),
            convention: "openood".into(),
            data_root: Some(".".into()),
            sets,
            resolved_root: None,
        };
        let p = tmp.join("benchmark.toml");
        let text = toml::to_string(&benchmark)
            .map_err(|e| Error::Config(format!("writing the manifest: {e}")))?;
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
        let config = json!({
            "command": "holdout",
            "tool_version": env!("CARGO_PKG_VERSION"),
            "data": opts.data.to_spec_string(),
            "data_fingerprint": opts.data.fingerprint()?,
            "test": opts.test.as_ref().map(DataSpec::to_spec_string),
            "test_fingerprint": opts.test.as_ref().map(DataSpec::fingerprint).transpose()?,
            "val": opts.val.as_ref().map(DataSpec::to_spec_string),
            "val_fingerprint": opts.val.as_ref().map(DataSpec::fingerprint).transpose()?,
            "holdout": match opts.holdout {
                HoldoutCount::Classes(k) => json!(k),
                HoldoutCount::Fraction(f) => json!(f),
            },
            "classes": opts.classes,
            "test_fraction": opts.test_fraction,
            "val_fraction": opts.val_fraction,
            "seed": opts.seed,
            "held_in": held_in_names,
            "held_out": held_out_names,
            "counts": counts,
        });
        let p = tmp.join("holdout.config.json");
        std::fs::write(
            &p,
            serde_json::to_string_pretty(&config).expect("json") + "\n",
        )
        .map_err(|e| Error::io(&p, e))?;
        Ok(Holdout {
            held_in: held_in_names,
            held_out: held_out_names,
            counts,
            benchmark,
        })
    })
}

/// The data root of a manifest read from `file` with `data_root` set: that folder relative to
/// the manifest's own folder.
pub(super) fn manifest_root(file: &Path, data_root: &str) -> PathBuf {
    file.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(data_root)
}
