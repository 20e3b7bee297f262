//! `ood demo`: a real, small OOD benchmark built only from what `scripts/setup` installs.
//!
//! * **ID**: Fashion-MNIST (Debian `dataset-fashion-mnist`) with a MixOE-style hold-out split: the
//!   classifier is trained on 6 classes ([`HELD_IN`]: t-shirt/top, trouser, pullover, sandal,
//!   sneaker, bag); the ID test set is their test images.
//! * **Near OOD**: the test images of the 4 held-out classes ([`HELD_OUT`]: dress, coat, shirt,
//!   ankle boot), never seen in training.
//! * **Far OOD**: scikit-learn's bundled handwritten digits (8x8, upsampled to 28x28), seeded
//!   random crops of scikit-image's bundled textures (brick, grass, gravel) and photos (camera,
//!   coins, moon, text, ...) in grayscale resized to 28x28, and Jigsaw-shuffled ID test images
//!   ([`crate::jigsaw`], 4x4 grid, seeded).
//!
//! [`builtin_data`] assembles these sets (or [`custom_data`] a user's own [`DataSpec`]s), [`run`]
//! trains a small akamaster ResNet on the CPU with [`crate::train::train`] (cross-entropy, seeded)
//! and writes feature files (features, logits, labels) of every set plus the classifier head, which
//! the `ood-core` benchmark runner then scores with every post-hoc detector.
//!
//! All images are kept as 8-bit RGB `side × side × 3` (grayscale replicated to three channels) and
//! normalised with the per-channel mean and standard deviation of the training images, which
//! `model.safetensors` records ([`crate::network::INPUT_METADATA_KEY`]) so that every command that
//! loads it feeds it as the demo does. [`export_data`] writes the built-in sets as files: the data
//! of the built-in benchmark [`BENCHMARK`] (`ood bench fmnist-holdout`), on which the demo's
//! weights give the demo's numbers exactly.

use crate::data::preprocess::{
    center_crop, normalized_tensor, resize_bilinear_pil, shorter_side_size,
};
use crate::data::{DataSpec, Pixels};
use crate::error::{Error, Result};
use crate::network::Network;
use crate::train::{EpochLog, Step, TrainConfig, TrainData};
use image::RgbImage;
use ood_core::benchmark::Group;
use ood_core::{Features, hashing};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// The Fashion-MNIST class names in label order.
pub const FMNIST_CLASSES: [&str; 10] = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];
/// Fashion-MNIST labels the classifier is trained on (their new labels are their positions here).
pub const HELD_IN: [i64; 6] = [0, 1, 2, 5, 7, 8];
/// Fashion-MNIST labels held out as the near-OOD set.
pub const HELD_OUT: [i64; 4] = [3, 4, 6, 9];
/// Where the Debian package `dataset-fashion-mnist` installs the idx files.
pub const FMNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// scikit-image textures cropped into the `textures` set.
pub const TEXTURES: [&str; 3] = ["brick.png", "grass.png", "gravel.png"];
/// scikit-image photos cropped into the `photos` set.
pub const PHOTOS: [&str; 9] = [
    "camera.png",
    "coins.png",
    "moon.png",
    "text.png",
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "page.png",
    "rocket.jpg",
];

/// A set of images of one size, 8-bit RGB, `n × side × side × 3` row-major.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// Display name (`fmnist_train`, `holdout`, `digits`, ...).
    pub name: String,
    /// Near or far for OOD sets.
    pub group: Option<Group>,
    /// Image side in pixels.
    pub side: usize,
    /// Pixels.
    pub pixels: Vec<u8>,
    /// Labels (ID sets), or `None`.
    pub labels: Option<Vec<i64>>,
    /// Where the images come from (for the report's configuration).
    pub source: String,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / (self.side * self.side * 3).max(1)
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn image(&self, i: usize) -> &[u8] {
        let s = self.side * self.side * 3;
        &self.pixels[i * s..(i + 1) * s]
    }

    /// Keeps the images at `idx`, in that order.
    fn select(&self, idx: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(idx.len() * self.side * self.side * 3);
        for &i in idx {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            pixels,
            labels: self
                .labels
                .as_ref()
                .map(|l| idx.iter().map(|&i| l[i]).collect()),
            ..self.clone()
        }
    }
}

/// One input file and its SHA-256.
#[derive(Debug, Clone, Serialize)]
pub struct InputFile {
    /// Path or data spec.
    pub path: String,
    /// SHA-256 (hex) of the file, or the [`DataSpec::fingerprint`] of a user data spec.
    pub sha256: String,
}

/// The assembled benchmark.
#[derive(Debug, Clone)]
pub struct DemoData {
    /// Training images with labels `0..classes`.
    pub train: ImageSet,
    /// ID test images with labels.
    pub test: ImageSet,
    /// OOD sets in report order.
    pub ood: Vec<ImageSet>,
    /// Class names of the training labels.
    pub classes: Vec<String>,
    /// Every file read, with its hash.
    pub inputs: Vec<InputFile>,
}

/// Sizes of the built-in benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sizes {
    /// Training images per class (at most 6000).
    pub train_per_class: usize,
    /// ID test images per class (at most 1000).
    pub test_per_class: usize,
    /// Images per OOD set (at most the set's size; crops are generated).
    pub ood_per_set: usize,
}

impl Sizes {
    /// The full run: all 36,000 training images, all 6,000 ID test images, 2,000 per OOD set.
    pub const FULL: Sizes = Sizes {
        train_per_class: 6000,
        test_per_class: 1000,
        ood_per_set: 2000,
    };
    /// The reduced run of `--quick` (CI, tests).
    pub const QUICK: Sizes = Sizes {
        train_per_class: 500,
        test_per_class: 100,
        ood_per_set: 300,
    };
}

fn data_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn input_file(path: &Path) -> Result<InputFile> {
    Ok(InputFile {
        path: path.display().to_string(),
        sha256: hashing::sha256_file(path)?,
    })
}

/// The folder of the demo's bundled far-OOD files (scikit-learn's `digits.csv.gz` and
/// scikit-image's textures and photos, [`TEXTURES`], [`PHOTOS`]), which `bash scripts/setup`
/// copies out of the registries' packages: `$OOD_DEMO_DATA` when set, else `.deps/demo` of the
/// checkout the binary was built from (so an installed binary finds it too).
pub fn demo_data_dir() -> PathBuf {
    match std::env::var_os("OOD_DEMO_DATA") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.deps/demo"),
    }
}

fn gray_to_rgb(gray: &[u8]) -> Vec<u8> {
    gray.iter().flat_map(|&v| [v, v, v]).collect()
}

/// Fashion-MNIST split into held-in (relabelled `0..6`) and held-out images.
fn read_fmnist(
    dir: &Path,
    split: &str,
    inputs: &mut Vec<InputFile>,
) -> Result<(ImageSet, ImageSet)> {
    let images = dir.join(format!("{split}-images-idx3-ubyte.gz"));
    let labels = dir.join(format!("{split}-labels-idx1-ubyte.gz"));
    for p in [&images, &labels] {
        if !p.is_file() {
            return Err(data_err(
                p,
                "not found: Fashion-MNIST comes from the Debian package dataset-fashion-mnist \
                 (bash scripts/setup installs it)",
            ));
        }
        inputs.push(input_file(p)?);
    }
    let spec = DataSpec::Idx {
        images: images.clone(),
        labels: Some(labels),
    };
    let (mut inp, mut inl, mut outp, mut outl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in spec.samples()? {
        let s = s?;
        let Pixels::Gray {
            width: 28,
            height: 28,
            data,
        } = s.pixels
        else {
            return Err(data_err(&images, "expected 28x28 grayscale images"));
        };
        if let Some(k) = HELD_IN.iter().position(|&c| c == s.label) {
            inp.extend(gray_to_rgb(&data));
            inl.push(k as i64);
        } else {
            outp.extend(gray_to_rgb(&data));
            outl.push(s.label);
        }
    }
    let set = |name: &str, pixels, labels| ImageSet {
        name: name.to_string(),
        group: None,
        side: 28,
        pixels,
        labels: Some(labels),
        source: images.display().to_string(),
    };
    Ok((set("in", inp, inl), set("out", outp, outl)))
}

/// The first `per_class` images of every label, in file order.
fn per_class(set: &ImageSet, per_class: usize) -> ImageSet {
    let labels = set.labels.as_ref().expect("labelled");
    let mut counts = std::collections::HashMap::new();
    let idx: Vec<usize> = (0..set.len())
        .filter(|&i| {
            let c = counts.entry(labels[i]).or_insert(0usize);
            *c += 1;
            *c <= per_class
        })
        .collect();
    set.select(&idx)
}

/// A seeded random subset of at most `n` images, in their original order.
fn subsample(set: &ImageSet, n: usize, rng: &mut ChaCha8Rng) -> ImageSet {
    if set.len() <= n {
        return set.clone();
    }
    let mut idx: Vec<usize> = (0..set.len()).collect();
    idx.shuffle(rng);
    idx.truncate(n);
    idx.sort_unstable();
    set.select(&idx)
}

/// scikit-learn's digits (`digits.csv.gz`: 64 values in 0..=16 and the label per line), ink
/// bright on black like Fashion-MNIST, upsampled to `side` (PIL bilinear).
fn read_digits(path: &Path, side: usize) -> Result<Vec<u8>> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).map_err(|e| Error::io(path, e))?)
        .read_to_string(&mut text)
        .map_err(|e| data_err(path, format!("not a gzip text file: {e}")))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let vals: Vec<f32> = line
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| data_err(path, format!("line {}: {e}", i + 1)))?;
        if vals.len() != 65 {
            return Err(data_err(
                path,
                format!("line {}: expected 65 values, found {}", i + 1, vals.len()),
            ));
        }
        let px: Vec<u8> = vals[..64]
            .iter()
            .map(|&v| (v.clamp(0.0, 16.0) * 255.0 / 16.0).round() as u8)
            .collect();
        let img = RgbImage::from_raw(8, 8, gray_to_rgb(&px)).expect("8x8x3 bytes");
        out.extend(resize_bilinear_pil(&img, side as u32, side as u32).into_raw());
    }
    if out.is_empty() {
        return Err(data_err(path, "no digits"));
    }
    Ok(out)
}

/// `n` seeded random square crops (side between 1/8 and 1/2 of the shorter side) of the given
/// images in grayscale, resized to `side`; crop `i` comes from image `i mod len`.
fn crops(paths: &[PathBuf], n: usize, side: usize, rng: &mut ChaCha8Rng) -> Result<Vec<u8>> {
    let mut grays = Vec::new();
    for p in paths {
        let img = image::open(p)
            .map_err(|e| data_err(p, format!("cannot decode image: {e}")))?
            .to_luma8();
        grays.push(img);
    }
    let mut out = Vec::with_capacity(n * side * side * 3);
    for i in 0..n {
        let g = &grays[i % grays.len()];
        let (w, h) = g.dimensions();
        let short = w.min(h);
        let lo = (short / 8).max(side as u32 / 2).min(short);
        let hi = (short / 2).max(lo);
        let s = rng.gen_range(lo..=hi);
        let x = rng.gen_range(0..=w - s);
        let y = rng.gen_range(0..=h - s);
        let crop = image::imageops::crop_imm(g, x, y, s, s).to_image();
        let rgb = RgbImage::from_raw(s, s, gray_to_rgb(crop.as_raw())).expect("s*s*3 bytes");
        out.extend(resize_bilinear_pil(&rgb, side as u32, side as u32).into_raw());
    }
    Ok(out)
}

/// Assembles the built-in benchmark (module doc) from the Fashion-MNIST idx files in `fmnist_dir`
/// and the far-OOD files in `demo_dir` ([`demo_data_dir`]), with the given sizes and seed.
pub fn builtin_data(
    fmnist_dir: &Path,
    demo_dir: &Path,
    sizes: Sizes,
    seed: u64,
) -> Result<DemoData> {
    let mut inputs = Vec::new();
    let (train_in, _) = read_fmnist(fmnist_dir, "train", &mut inputs)?;
    let (test_in, test_out) = read_fmnist(fmnist_dir, "t10k", &mut inputs)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6f6f_6464_656d_6f00);
    let mut train = per_class(&train_in, sizes.train_per_class);
    train.name = "fmnist6_train".into();
    let mut test = per_class(&test_in, sizes.test_per_class);
    test.name = "fmnist6_test".into();
    let holdout = subsample(&test_out, sizes.ood_per_set, &mut rng);

    let digits_path = demo_dir.join("digits.csv.gz");
    if !digits_path.is_file() {
        return Err(data_err(
            &digits_path,
            "not found: scikit-learn's bundled digits (bash scripts/setup copies them there; \
             or set OOD_DEMO_DATA to the folder that holds them)",
        ));
    }
    inputs.push(input_file(&digits_path)?);
    let digits = ImageSet {
        name: "digits".into(),
        group: Some(Group::Far),
        side: 28,
        pixels: read_digits(&digits_path, 28)?,
        labels: None,
        source: digits_path.display().to_string(),
    };
    let digits = subsample(&digits, sizes.ood_per_set, &mut rng);

    let skdata = demo_dir;
    let mut crop_set = |name: &str, files: &[&str], rng: &mut ChaCha8Rng| -> Result<ImageSet> {
        let mut paths = Vec::new();
        for f in files {
            let p = skdata.join(f);
            if !p.is_file() {
                return Err(data_err(
                    &p,
                    "not found: scikit-image's bundled images (bash scripts/setup copies them \
                     there; or set OOD_DEMO_DATA to the folder that holds them)",
                ));
            }
            inputs.push(input_file(&p)?);
            paths.push(p);
        }
        Ok(ImageSet {
            name: name.into(),
            group: Some(Group::Far),
            side: 28,
            pixels: crops(&paths, sizes.ood_per_set, 28, rng)?,
            labels: None,
            source: format!("{} ({})", skdata.display(), files.join(", ")),
        })
    };
    let textures = crop_set("textures", &TEXTURES, &mut rng)?;
    let photos = crop_set("photos", &PHOTOS, &mut rng)?;

    let base = subsample(&test, sizes.ood_per_set, &mut rng);
    let jig = crate::jigsaw::jigsaw_set(&base.pixels, 28, 28, 3, 4, 1, &mut rng)?;
    let jigsaw = ImageSet {
        name: "jigsaw".into(),
        group: Some(Group::Far),
        side: 28,
        pixels: jig,
        labels: None,
        source: "ID test images, 4x4 tiles shuffled (ood_nn::jigsaw)".into(),
    };
    Ok(DemoData {
        train,
        test,
        ood: vec![
            ImageSet {
                name: "holdout".into(),
                group: Some(Group::Near),
                labels: None,
                source: format!(
                    "{} test images of the held-out classes {}",
                    fmnist_dir.display(),
                    HELD_OUT.map(|c| FMNIST_CLASSES[c as usize]).join(", ")
                ),
                ..holdout
            },
            digits,
            textures,
            photos,
            jigsaw,
        ],
        classes: HELD_IN
            .iter()
            .map(|&c| FMNIST_CLASSES[c as usize].to_string())
            .collect(),
        inputs,
    })
}

/// The built-in benchmark of the demo's data (`crates/ood-nn/src/benchmarks/fmnist-holdout.toml`):
/// what [`export_data`] writes, read by `ood bench fmnist-holdout --data-root DIR`.
pub const BENCHMARK: &str = "fmnist-holdout";

/// The name of the manifest [`export_data`] writes for `sizes` and `seed`: [`BENCHMARK`] for the
/// full sets of seed 0 (the benchmark's own), else with the sizes and the seed appended.
pub fn export_name(sizes: Sizes, seed: u64) -> String {
    let mut name = BENCHMARK.to_string();
    if sizes == Sizes::QUICK {
        name += "-quick";
    } else if sizes != Sizes::FULL {
        name += &format!(
            "-{}-{}-{}",
            sizes.train_per_class, sizes.test_per_class, sizes.ood_per_set
        );
    }
    if seed != 0 {
        name += &format!("-s{seed}");
    }
    name
}

/// One image as PNG: 8-bit grayscale when its three channels agree (every image of the
/// built-in sets), else RGB. Decoding gives back the same RGB pixels.
fn png(rgb: &[u8], side: u32) -> Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let gray = rgb.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]);
    let written = if gray {
        let g: Vec<u8> = rgb.chunks_exact(3).map(|p| p[0]).collect();
        image::GrayImage::from_raw(side, side, g)
            .expect("side x side bytes")
            .write_to(&mut buf, image::ImageFormat::Png)
    } else {
        RgbImage::from_raw(side, side, rgb.to_vec())
            .expect("side x side x 3 bytes")
            .write_to(&mut buf, image::ImageFormat::Png)
    };
    written.map_err(|e| Error::Config(format!("encoding PNG: {e}")))?;
    Ok(buf.into_inner())
}

/// Writes the built-in benchmark's sets ([`builtin_data`]) as files into `dir`, which must not
/// exist or be empty (all or nothing: written into a temporary folder renamed at the end), and
/// returns the manifest written with them. `sizes` and `seed` are those `data` was assembled
/// with (recorded, and part of the manifest's name, [`export_name`]).
///
/// | file | content |
/// |---|---|
/// | `images/<set>/<n>.png` | the images, exactly the demo's pixels (8-bit, grayscale PNG) |
/// | `<set>.txt` | an OpenOOD imglist per set, in the demo's order: `images/<set>/<n>.png <label>`, labels `0..6` for the ID sets (the [`HELD_IN`] classes in order), −1 for the OOD sets |
/// | `classes.txt` | the 6 ID class names in label order |
/// | `benchmark.toml` | the [`BENCHMARK`] manifest with `data_root = "."` and the written sizes as `expect` |
/// | `export.json` | the sizes, the seed, every set's count and source, the input files' SHA-256 |
///
/// The sets are `fmnist6_train` (fit), `fmnist6_test` (id), `holdout` (near), `digits`,
/// `textures`, `photos`, `jigsaw` (far). `progress(done, total)` follows the images written.
pub fn export_data(
    data: &DemoData,
    sizes: Sizes,
    seed: u64,
    dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<crate::benchmarks::Benchmark> {
    use crate::benchmarks::{Benchmark, Role, role_name};
    use rayon::prelude::*;
    let builtin = Benchmark::load(BENCHMARK)?;
    let sets: Vec<(&ImageSet, Role)> = std::iter::once((&data.train, Role::Fit))
        .chain(std::iter::once((&data.test, Role::Id)))
        .chain(data.ood.iter().map(|s| {
            let role = match s.group {
                Some(Group::Near) => Role::Near,
                Some(Group::Far) => Role::Far,
                None => Role::Ood,
            };
            (s, role)
        }))
        .collect();
    let ours: Vec<(&str, Role)> = sets.iter().map(|(s, r)| (s.name.as_str(), *r)).collect();
    let theirs: Vec<(&str, Role)> = builtin
        .sets
        .iter()
        .map(|s| (s.name.as_str(), s.role))
        .collect();
    if ours != theirs {
        return Err(Error::Config(format!(
            "the demo's sets {} are not those of the built-in benchmark {BENCHMARK} ({}); only the \
             built-in demo data can be exported",
            ours.iter()
                .map(|(n, r)| format!("{n} ({})", role_name(*r)))
                .collect::<Vec<_>>()
                .join(", "),
            theirs
                .iter()
                .map(|(n, r)| format!("{n} ({})", role_name(*r)))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let total: usize = sets.iter().map(|(s, _)| s.len()).sum();
    ood_core::atomic_file::write_dir_atomic(dir, |tmp| -> Result<Benchmark> {
        let mut done = 0;
        for (set, _) in &sets {
            let folder = tmp.join("images").join(&set.name);
            std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
            let side = set.side as u32;
            let encoded: Vec<Vec<u8>> = (0..set.len())
                .into_par_iter()
                .map(|i| png(set.image(i), side))
                .collect::<Result<_>>()?;
            let mut list = String::new();
            for (i, bytes) in encoded.iter().enumerate() {
                let rel = format!("images/{}/{i:06}.png", set.name);
                let p = tmp.join(&rel);
                std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))?;
                let label = set.labels.as_ref().map_or(-1, |l| l[i]);
                list.push_str(&format!("{rel} {label}\n"));
                done += 1;
                progress(done, total);
            }
            let p = tmp.join(format!("{}.txt", set.name));
            std::fs::write(&p, list).map_err(|e| Error::io(&p, e))?;
        }
        let p = tmp.join("classes.txt");
        std::fs::write(&p, data.classes.join("\n") + "\n").map_err(|e| Error::io(&p, e))?;
        let mut manifest = builtin.clone();
        manifest.name = export_name(sizes, seed);
        manifest.data_root = Some(".".into());
        manifest.layout = format!(
            "written by `ood demo --export-data` (sizes {} train / {} test images per class, {} \
             per OOD set; seed {seed}): imglists and images/ next to this file",
            sizes.train_per_class, sizes.test_per_class, sizes.ood_per_set
        );
        for (def, (set, _)) in manifest.sets.iter_mut().zip(&sets) {
            def.expect = Some(set.len());
        }
        let p = tmp.join("benchmark.toml");
        let text = toml::to_string(&manifest)
            .map_err(|e| Error::Config(format!("writing the manifest: {e}")))?;
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
        let record = serde_json::json!({
            "command": "demo --export-data",
            "tool_version": env!("CARGO_PKG_VERSION"),
            "benchmark": manifest.name,
            "sizes": sizes,
            "seed": seed,
            "classes": data.classes,
            "held_out_classes": HELD_OUT.map(|c| FMNIST_CLASSES[c as usize]),
            "sets": sets.iter().map(|(s, r)| serde_json::json!({
                "name": s.name, "role": role_name(*r), "images": s.len(), "side": s.side,
                "source": s.source,
            })).collect::<Vec<_>>(),
            "inputs": data.inputs,
        });
        let p = tmp.join("export.json");
        std::fs::write(
            &p,
            serde_json::to_string_pretty(&record).expect("json") + "\n",
        )
        .map_err(|e| Error::io(&p, e))?;
        Ok(manifest)
    })
}

/// Reads a user data source into `side × side` RGB images (shorter side resized to `side`, PIL
/// bilinear, then centre crop).
pub fn read_spec(name: &str, spec: &DataSpec, side: usize) -> Result<ImageSet> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for s in spec.samples()? {
        let s = s?;
        labels.push(s.label);
        let img = s.decode()?;
        let (w, h) = img.dimensions();
        let (nw, nh) = shorter_side_size(w, h, side as u32);
        let img = if (nw, nh) != (w, h) {
            resize_bilinear_pil(&img, nw, nh)
        } else {
            img
        };
        pixels.extend(center_crop(&img, side as u32, side as u32).into_raw());
    }
    if labels.is_empty() {
        return Err(Error::Config(format!(
            "{name}: no images in {}",
            spec.to_spec_string()
        )));
    }
    Ok(ImageSet {
        name: name.into(),
        group: None,
        side,
        pixels,
        labels: Some(labels),
        source: spec.to_spec_string(),
    })
}

/// Assembles a benchmark from the user's own data: labelled training and test sets (class =
/// label of the source, e.g. the sorted sub-folder names) and named OOD sets.
pub fn custom_data(
    train: &DataSpec,
    test: &DataSpec,
    ood: &[(String, Option<Group>, DataSpec)],
    side: usize,
) -> Result<DemoData> {
    let mut inputs = Vec::new();
    let mut fp = |spec: &DataSpec| -> Result<()> {
        inputs.push(InputFile {
            path: spec.to_spec_string(),
            sha256: spec.fingerprint()?,
        });
        Ok(())
    };
    fp(train)?;
    fp(test)?;
    for (_, _, s) in ood {
        fp(s)?;
    }
    let train_set = read_spec("id_train", train, side)?;
    let test_set = read_spec("id_test", test, side)?;
    let tl = train_set.labels.as_ref().expect("labelled");
    if tl.iter().any(|&l| l < 0) {
        return Err(Error::Config(format!(
            "the training data {} must be labelled (a folder-per-class tree)",
            train.to_spec_string()
        )));
    }
    let classes = tl.iter().copied().max().unwrap_or(0) + 1;
    if classes < 2 {
        return Err(Error::Config(format!(
            "the training data {} holds a single class; a classifier needs at least two",
            train.to_spec_string()
        )));
    }
    let names = train.classes().unwrap_or_default();
    let mut sets = Vec::new();
    for (name, group, spec) in ood {
        let mut s = read_spec(name, spec, side)?;
        s.group = *group;
        s.labels = None;
        sets.push(s);
    }
    Ok(DemoData {
        train: train_set,
        test: test_set,
        ood: sets,
        classes: (0..classes as usize)
            .map(|i| names.get(i).cloned().unwrap_or_else(|| i.to_string()))
            .collect(),
        inputs,
    })
}

/// How to train and extract.
#[derive(Debug, Clone, Serialize)]
pub struct RunOptions {
    /// akamaster ResNet depth (8 = one block per stage).
    pub depth: usize,
    /// Training recipe (cross-entropy).
    pub train: TrainConfig,
    /// Images per forward pass when extracting.
    pub extract_batch: usize,
    /// Network computations of the detectors that need the network at score time
    /// ([`ood_core::probes`]), on the scored sets.
    pub probes: Vec<ood_core::probes::Probe>,
    /// Those the detectors' fits read, on the training set.
    pub fit_probes: Vec<ood_core::probes::Probe>,
}

impl RunOptions {
    /// The demo's recipe: ResNet-8, SGD (Nesterov, momentum 0.9, weight decay 5e-4), lr 0.1 with
    /// a cosine schedule, batch 128, no augmentation.
    pub fn new(epochs: usize, seed: u64) -> RunOptions {
        RunOptions {
            depth: 8,
            train: TrainConfig {
                epochs,
                batch_size: 128,
                lr: 0.1,
                seed,
                ..TrainConfig::default()
            },
            extract_batch: 500,
            probes: Vec::new(),
            fit_probes: Vec::new(),
        }
    }
}

/// What [`run`] reports while it works.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// One training step finished.
    Train(&'a Step),
    /// `done` of `total` images of set `name` extracted.
    Extract {
        /// Set name.
        name: &'a str,
        /// Images done.
        done: usize,
        /// Images in the set.
        total: usize,
    },
}

/// The files written by [`run`].
#[derive(Debug, Clone, Serialize)]
pub struct DemoOutput {
    /// ID training features (the detectors' fit data).
    pub fit: PathBuf,
    /// ID test features.
    pub id_test: PathBuf,
    /// OOD sets: name, group, feature file.
    pub ood: Vec<(String, Option<Group>, PathBuf)>,
    /// The classifier head.
    pub head: PathBuf,
    /// Trained weights (safetensors, akamaster names).
    pub weights: PathBuf,
    /// Training logs per epoch.
    pub logs: Vec<EpochLog>,
    /// Per-channel normalisation used (mean, std).
    pub normalization: ([f32; 3], [f32; 3]),
    /// Training wall time in seconds.
    pub train_seconds: f64,
}

/// Per-channel mean and standard deviation of 8-bit RGB pixels, in `x/255` units.
fn channel_stats(pixels: &[u8]) -> ([f32; 3], [f32; 3]) {
    let mut sum = [0f64; 3];
    let mut sq = [0f64; 3];
    for px in pixels.chunks_exact(3) {
        for c in 0..3 {
            let v = px[c] as f64 / 255.0;
            sum[c] += v;
            sq[c] += v * v;
        }
    }
    let n = (pixels.len() / 3).max(1) as f64;
    let mut mean = [0f32; 3];
    let mut std = [0f32; 3];
    for c in 0..3 {
        let m = sum[c] / n;
        mean[c] = m as f32;
        std[c] = ((sq[c] / n - m * m).max(1e-8).sqrt()) as f32;
    }
    (mean, std)
}

/// Normalised `(n, 3, side, side)` f32 tensor of a set.
fn to_tensor(set: &ImageSet, mean: [f32; 3], std: [f32; 3]) -> Tensor {
    normalized_tensor(&set.pixels, set.side, mean, std)
}

/// Extracts one in-memory set through the one extraction loop ([`crate::network::extract`]),
/// with the demo's normalisation and no resizing (the sets are already `side x side`).
fn extract_set(
    net: &crate::models::Net,
    set: &ImageSet,
    norm: ([f32; 3], [f32; 3]),
    batch: usize,
    probes: &[ood_core::probes::Probe],
    fit_statistics: Option<&std::sync::Arc<ood_core::detectors::LayerGaussians>>,
    progress: &mut dyn FnMut(&Event<'_>),
) -> Result<Features> {
    let side = set.side as u32;
    let per = set.side * set.side * 3;
    let pixels = std::sync::Arc::new(set.pixels.clone());
    let labels = set.labels.clone();
    let name = set.name.clone();
    let n = set.len();
    let samples: crate::data::SampleIter = Box::new((0..n).map(move |i| {
        let img = RgbImage::from_raw(side, side, pixels[i * per..(i + 1) * per].to_vec())
            .expect("side x side x 3 bytes");
        Ok(crate::data::RawSample {
            name: format!("{name}#{i}"),
            label: labels.as_ref().map_or(-1, |l| l[i]),
            pixels: Pixels::Rgb(img),
        })
    }));
    let opts = crate::network::ExtractOptions {
        batch_size: batch.max(1),
        preprocess: crate::data::Preprocess::normalize_only(norm.0, norm.1),
        on_error: crate::data::OnError::Fail,
        precision: Default::default(),
        probes: probes.to_vec(),
        fit_statistics: fit_statistics.cloned(),
    };
    let ex = crate::network::extract(net, samples, &opts, &mut |done| {
        progress(&Event::Extract {
            name: &set.name,
            done,
            total: n,
        })
    })?;
    let mut f = ex.features;
    if set.labels.is_none() {
        f.labels = None;
    }
    f.metadata.insert("dataset".into(), set.name.clone());
    f.metadata.insert("source".into(), set.source.clone());
    Ok(f)
}

/// Trains the classifier on `data.train` (CPU, seeded) and writes into `dir` the weights
/// (`model.safetensors`), the head (`head.safetensors`) and a feature file per set
/// (`<name>.safetensors`: features, logits, labels). Files are written atomically.
pub fn run(
    data: &DemoData,
    opts: &RunOptions,
    dir: &Path,
    progress: &mut dyn FnMut(&Event<'_>),
) -> Result<DemoOutput> {
    let classes = data.classes.len() as i64;
    if data.train.is_empty() || data.test.is_empty() || data.ood.is_empty() {
        return Err(Error::Config(
            "the demo needs training images, ID test images and at least one OOD set".into(),
        ));
    }
    for s in std::iter::once(&data.test).chain(&data.ood) {
        if s.side != data.train.side {
            return Err(Error::Config(format!(
                "set {} has {}x{} images, the training set {}x{}",
                s.name, s.side, s.side, data.train.side, data.train.side
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    tch::manual_seed(opts.train.seed as i64);
    let net = crate::models::Arch::He(opts.depth).build(classes, Device::Cpu)?;
    let norm = channel_stats(&data.train.pixels);
    let images = to_tensor(&data.train, norm.0, norm.1);
    let labels = Tensor::from_slice(data.train.labels.as_ref().expect("labelled training set"));
    let t0 = std::time::Instant::now();
    let logs = {
        let net_ref = &net;
        crate::train::train(
            net.var_store(),
            &|x, train| net_ref.forward_t(x, train),
            &TrainData::new(&images, &labels),
            &opts.train,
            None,
            false,
            &mut |s| progress(&Event::Train(s)),
        )?
    };
    let train_seconds = t0.elapsed().as_secs_f64();
    drop(images);

    // The weights record the demo's input convention (28 px, the training set's channel
    // statistics), so that `ood bench fmnist-holdout --model resnet8 --weights` reads them
    // as the demo does.
    let weights = dir.join("model.safetensors");
    let spec = crate::network::InputSpec::new(data.train.side as u32, norm.0, norm.1);
    let meta = std::collections::BTreeMap::from([(
        crate::network::INPUT_METADATA_KEY.to_string(),
        spec.to_metadata(),
    )]);
    crate::models::common::write_weights(net.var_store(), &weights, &meta)?;
    drop(net);
    // Features come from the saved weights loaded as every command loads them (BatchNorm folded
    // into the convolutions): the demo's numbers are those of `ood bench` on `model.safetensors`.
    let net = crate::models::Arch::He(opts.depth).load(&weights, Device::Cpu)?;
    let head = dir.join("head.safetensors");
    net.head()?.save(&head)?;
    let mut fit_statistics = None;
    let mut write = |set: &ImageSet,
                     probes: &[ood_core::probes::Probe],
                     stats: Option<&std::sync::Arc<ood_core::detectors::LayerGaussians>>|
     -> Result<(PathBuf, Features)> {
        let f = extract_set(&net, set, norm, opts.extract_batch, probes, stats, progress)?;
        let p = dir.join(format!("{}.safetensors", set.name));
        f.save(&p)?;
        Ok((p, f))
    };
    let (fit, fit_features) = write(&data.train, &opts.fit_probes, None)?;
    // Probes that follow the fit set's class Gaussians (the multi-layer Mahalanobis' input
    // preprocessing) get them from the fit set's layer means, as `ood bench` does.
    if opts.probes.iter().any(|p| p.needs_fit_statistics()) {
        fit_statistics = Some(std::sync::Arc::new(
            ood_core::detectors::LayerGaussians::fit(&(&fit_features).into(), classes as usize)?,
        ));
    }
    drop(fit_features);
    let id_test = write(&data.test, &opts.probes, fit_statistics.as_ref())?.0;
    let mut ood = Vec::new();
    for s in &data.ood {
        ood.push((
            s.name.clone(),
            s.group,
            write(s, &opts.probes, fit_statistics.as_ref())?.0,
        ));
    }
    Ok(DemoOutput {
        fit,
        id_test,
        ood,
        head,
        weights,
        logs,
        normalization: norm,
        train_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::benchmarks::{Benchmark, Role};

    #[test]
    fn the_builtin_manifest_is_the_demos_full_benchmark() {
        let b = Benchmark::load(BENCHMARK).unwrap();
        let full = Sizes::FULL;
        let want = [
            (
                "fmnist6_train",
                Role::Fit,
                HELD_IN.len() * full.train_per_class,
            ),
            (
                "fmnist6_test",
                Role::Id,
                HELD_IN.len() * full.test_per_class,
            ),
            ("holdout", Role::Near, full.ood_per_set),
            // scikit-learn has 1,797 digits: all of them.
            ("digits", Role::Far, 1797.min(full.ood_per_set)),
            ("textures", Role::Far, full.ood_per_set),
            ("photos", Role::Far, full.ood_per_set),
            ("jigsaw", Role::Far, full.ood_per_set),
        ];
        let got: Vec<(&str, Role, usize)> = b
            .sets
            .iter()
            .map(|s| (s.name.as_str(), s.role, s.expect.unwrap()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(export_name(Sizes::FULL, 0), BENCHMARK);
        assert_eq!(export_name(Sizes::QUICK, 3), "fmnist-holdout-quick-s3");
    }

    /// A small stand-in for [`builtin_data`]: the built-in's set names, random 5x5 pixels.
    fn fake_data() -> DemoData {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let side = 5;
        let mut set = |name: &str, n: usize, group: Option<Group>, gray: bool| {
            let mut pixels = Vec::new();
            for _ in 0..n * side * side {
                let v: u8 = rng.r#gen();
                if gray {
                    pixels.extend([v, v, v]);
                } else {
                    pixels.extend([v, rng.r#gen(), rng.r#gen()]);
                }
            }
            ImageSet {
                name: name.into(),
                group,
                side,
                pixels,
                labels: group
                    .is_none()
                    .then(|| (0..n as i64).map(|i| (i * 5) % 6).collect()),
                source: "test".into(),
            }
        };
        let train = set("fmnist6_train", 12, None, true);
        let test = set("fmnist6_test", 6, None, true);
        let ood = vec![
            set("holdout", 3, Some(Group::Near), true),
            set("digits", 2, Some(Group::Far), true),
            set("textures", 2, Some(Group::Far), false),
            set("photos", 1, Some(Group::Far), true),
            set("jigsaw", 4, Some(Group::Far), true),
        ];
        DemoData {
            train,
            test,
            ood,
            classes: (0..6).map(|c| format!("c{c}")).collect(),
            inputs: Vec::new(),
        }
    }

    #[test]
    fn exported_sets_read_back_as_the_same_pixels_and_labels() {
        let data = fake_data();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("fm");
        let mut calls = 0;
        let m = export_data(&data, Sizes::QUICK, 0, &dir, &mut |done, total| {
            calls += 1;
            assert_eq!(total, 30);
            assert!(done <= total);
        })
        .unwrap();
        assert_eq!(calls, 30);
        assert_eq!(m.name, "fmnist-holdout-quick");
        // The manifest written beside the data reads back with its own root and sizes.
        let b = Benchmark::load(dir.join("benchmark.toml").to_str().unwrap()).unwrap();
        assert_eq!(b.name, m.name);
        let root = b.resolved_root.clone().unwrap();
        let checked = crate::benchmarks::check_files(&b, &root).unwrap();
        let sets: Vec<&ImageSet> = std::iter::once(&data.train)
            .chain(std::iter::once(&data.test))
            .chain(&data.ood)
            .collect();
        for ((def, n), set) in b.sets.iter().zip(&checked.counts).zip(&sets) {
            assert_eq!(def.name, set.name);
            assert_eq!((def.expect, *n), (Some(set.len()), Some(set.len())));
            let spec = def.data_spec(&root).unwrap();
            let mut pixels = Vec::new();
            let mut labels = Vec::new();
            for s in spec.samples().unwrap() {
                let s = s.unwrap();
                labels.push(s.label);
                pixels.extend(s.decode().unwrap().into_raw());
            }
            assert_eq!(pixels, set.pixels, "{}", set.name);
            let want = set.labels.clone().unwrap_or(vec![-1; set.len()]);
            assert_eq!(labels, want, "{}", set.name);
        }
        let classes = std::fs::read_to_string(dir.join("classes.txt")).unwrap();
        assert_eq!(classes, "c0\nc1\nc2\nc3\nc4\nc5\n");
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("export.json")).unwrap()).unwrap();
        assert_eq!(record["sets"][2]["role"], "near");

        // An existing folder is never written into; nothing is changed.
        let before = std::fs::read(dir.join("holdout.txt")).unwrap();
        let e = export_data(&data, Sizes::QUICK, 0, &dir, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("not empty") && e.contains("fm"), "{e}");
        assert_eq!(std::fs::read(dir.join("holdout.txt")).unwrap(), before);

        // Other sets than the built-in's are refused before anything is written.
        let mut other = fake_data();
        other.ood.pop();
        let dir2 = tmp.path().join("other");
        let e = export_data(&other, Sizes::QUICK, 0, &dir2, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("jigsaw") && e.contains(BENCHMARK), "{e}");
        assert!(!dir2.exists());
    }
}
