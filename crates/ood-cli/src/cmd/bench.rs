//! `ood bench cifar10`: the real CIFAR-10 benchmark on the data of `../shared` (or `--data-root`):
//! ID = CIFAR-10 JPEG test, fit = CIFAR-10 JPEG train, near OOD = Tiny-ImageNet test (resized to
//! 32), far OOD = MNIST, notMNIST, Fashion-MNIST (zero-padded 28→32, 3 channels) and the DTD
//! subset (shorter side 32, centre crop). Features are extracted once into a content-addressed
//! cache and reused; then every detector runs through `ood eval`'s runner.

use crate::args::BenchArgs;
use crate::cmd::common::guard_outputs;
use crate::cmd::eval::{self, Inputs, Options, VisionLanguage};
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ood_core::DetectorSpec;
use ood_core::benchmark::Group;
use ood_core::projection::Projection;
use ood_nn::data::{DataSpec, OnError, Preprocess};
use ood_nn::network::{ExtractOptions, extract_cached, file_sha256, load_model, model_file};
use serde_json::json;
use std::path::Path;
use std::path::PathBuf;

/// The default data root: `$OOD_DATA_ROOT`, else `../shared` next to the working directory.
fn default_data_root() -> PathBuf {
    std::env::var_os("OOD_DATA_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared"))
}

fn need(path: PathBuf) -> Result<PathBuf> {
    if path.exists() {
        Ok(path)
    } else {
        bail!(
            "{} not found (give --data-root, or set OOD_DATA_ROOT, to the folder that holds data/)",
            path.display()
        )
    }
}

/// Runs `ood bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    if a.benchmark != "cifar10" {
        bail!("unknown benchmark '{}' (known: cifar10)", a.benchmark);
    }
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let mut opts = eval::resolve(&a.run)?;
    let (weights, weights_flag) = model_file(&a.model, a.weights.as_deref())?;
    let mut ins = vec![(weights_flag.to_string(), weights.clone())];
    if let Some(n) = &a.run.negatives {
        ins.push(("--negatives".into(), n.clone()));
    }
    if let Some(p) = a.align.as_deref().filter(|p| *p != "auto") {
        ins.push(("--align".into(), PathBuf::from(p)));
    }
    let _guard = guard_outputs(&eval::named(&ins), &eval::named(&eval::output_files(&opts)))?;
    let root = a.data_root.clone().unwrap_or_else(default_data_root);
    let d = root.join("data");
    let fmnist = PathBuf::from("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz");
    let idx = |dir: &str, images: &str, labels: &str| -> Result<DataSpec> {
        Ok(DataSpec::Idx {
            images: need(d.join(dir).join(images))?,
            labels: Some(need(d.join(dir).join(labels))?),
        })
    };
    let train = DataSpec::Tar(need(d.join("cifar10-jpeg/cifar10_train_jpeg.tar.gz"))?);
    let test = DataSpec::Tar(need(d.join("cifar10-jpeg/cifar10_test_jpeg.tar.gz"))?);
    let tin = DataSpec::TinTest(need(
        d.join("tiny-imagenet-200/tin200_val_test_jpeg.tar.gz"),
    )?);
    let dtd = DataSpec::Tar(need(d.join("dtd-subset10/dtd10_30perclass_jpeg.tar"))?);
    let mnist = idx(
        "mnist",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )?;
    let notmnist = idx(
        "notmnist",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )?;
    let fashion = DataSpec::Idx { images: need(fmnist).context("Fashion-MNIST comes from the Debian package dataset-fashion-mnist (scripts/setup installs it)")?, labels: None };

    let device = ood_nn::device::parse_device(&a.device)?;
    let model_opts = ood_nn::network::ModelOptions {
        torchscript: a.torchscript.options(),
        class_text: None,
    };
    let net = load_model(&a.model, a.weights.as_deref(), &model_opts, device)?;
    let weights_sha = file_sha256(&weights)?;
    let spec = net.input_spec();
    let s = spec.size;
    let pre = |resize: Option<u32>, crop: Option<u32>, pad: u32| Preprocess {
        resize,
        interpolation: spec.interpolation,
        crop,
        pad,
        mean: spec.mean,
        std: spec.std,
    };
    let as_is = pre(None, None, 0);
    let resized = pre(Some(s), Some(s), 0);
    let padded = pre(None, None, s.saturating_sub(28) / 2);
    let jobs: Vec<(&str, Option<Group>, DataSpec, Preprocess)> = vec![
        ("cifar10_train", None, train, as_is.clone()),
        ("cifar10_test", None, test, as_is.clone()),
        ("tin", Some(Group::Near), tin, resized.clone()),
        ("mnist", Some(Group::Far), mnist, padded.clone()),
        ("notmnist", Some(Group::Far), notmnist, padded.clone()),
        ("fashion_mnist", Some(Group::Far), fashion, padded),
        ("dtd10", Some(Group::Far), dtd, resized),
    ];
    let cache = a.cache_dir.clone();
    let mut paths = Vec::new();
    for (name, group, data, preprocess) in jobs {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {pos} images {elapsed_precise}")
                .expect("valid template"),
        );
        bar.set_message(format!("extracting {name}"));
        let opts = ExtractOptions {
            batch_size: a.batch_size,
            preprocess,
            on_error: OnError::Fail,
        };
        let ex = extract_cached(&cache, net.as_ref(), &weights_sha, &data, &opts, &mut |n| {
            bar.set_position(n as u64)
        })
        .with_context(|| format!("extracting {name} ({})", data.to_spec_string()))?;
        bar.finish_and_clear();
        eprintln!(
            "{name}: {} ({})",
            ex.path.display(),
            if ex.reused { "cached" } else { "extracted" }
        );
        paths.push((name.to_string(), group, ex.path));
    }
    let head_path = cache.join(format!(
        "head-{}-{}.safetensors",
        net.name(),
        &weights_sha[..16]
    ));
    net.head()?.save(&head_path)?;
    let inputs = Inputs {
        fit: paths[0].2.clone(),
        fit_val: None,
        head: head_path,
        id: paths[1].2.clone(),
        ood: paths[2..]
            .iter()
            .map(|(n, g, p)| (n.clone(), *g, p.clone()))
            .collect(),
        negatives: if a.align.is_some() {
            None
        } else {
            a.run.negatives.clone()
        },
    };
    if let Some(align) = &a.align {
        opts.vision_language = Some(aligned_inputs(align, &a, &cache, &inputs, &mut opts)?);
    }
    eval::execute(
        &format!(
            "oodkit bench cifar10: {} ({})",
            net.name(),
            weights.display()
        ),
        "bench cifar10",
        &inputs,
        &opts,
        json!({"model": net.name(), "weights": weights.display().to_string(), "weights_sha256": weights_sha, "data_root": root.display().to_string()}),
    )
}

/// `--align`: projects every cached feature file into the text space of the `--negatives` file
/// (its `weight` = ID label embeddings) and moves NegLabel/MCM to those embeddings.
fn aligned_inputs(
    align: &str,
    a: &BenchArgs,
    cache: &Path,
    inputs: &Inputs,
    opts: &mut Options,
) -> Result<VisionLanguage> {
    let Some(neg) = a.run.negatives.clone() else {
        bail!(
            "--align needs --negatives NEG.safetensors (from `ood neglabel mine`: `weight` holds the ID label embeddings, `negatives` the negative labels)"
        );
    };
    let neg_sha = file_sha256(&neg)?;
    let proj_path = if align == "auto" {
        let cfg = ood_nn::align::AlignConfig::default();
        let fit_sha = file_sha256(&inputs.fit)?;
        let key = ood_core::hashing::sha256_bytes(
            format!("{fit_sha} {neg_sha} {}", serde_json::to_string(&cfg)?).as_bytes(),
        );
        let p = cache.join(format!("align-{}.safetensors", &key[..16]));
        if p.exists() {
            eprintln!("projection: {} (cached)", p.display());
        } else {
            crate::cmd::align::fit_and_save(&inputs.fit, &neg, &p, &cfg)?;
            eprintln!("projection: {} (fitted)", p.display());
        }
        p
    } else {
        PathBuf::from(align)
    };
    let proj = Projection::load(&proj_path)
        .with_context(|| format!("loading projection {}", proj_path.display()))?;
    let anchors = crate::cmd::align::load_anchors(&neg)?;
    let tag = format!("{}-{}", &file_sha256(&proj_path)?[..12], &neg_sha[..12]);
    let project = |src: &Path| -> Result<PathBuf> {
        let stem = src
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("features");
        let out = cache.join(format!("aligned-{tag}-{stem}.safetensors"));
        if !out.exists() {
            let f = ood_core::Features::load(src)
                .with_context(|| format!("loading {}", src.display()))?;
            proj.project_features(&f, anchors.view(), 100.0)
                .with_context(|| {
                    format!("projecting {} with {}", src.display(), proj_path.display())
                })?
                .save(&out)?;
        }
        Ok(out)
    };
    let vl_inputs = Inputs {
        fit: project(&inputs.fit)?,
        fit_val: None,
        head: neg.clone(),
        id: project(&inputs.id)?,
        ood: inputs
            .ood
            .iter()
            .map(|(n, g, p)| Ok((n.clone(), *g, project(p)?)))
            .collect::<Result<_>>()?,
        negatives: Some(neg.clone()),
    };
    let is_vl = |d: &DetectorSpec| matches!(d, DetectorSpec::NegLabel(_) | DetectorSpec::Mcm(_));
    let detectors: Vec<DetectorSpec> = opts
        .detectors
        .iter()
        .filter(|d| is_vl(d))
        .cloned()
        .collect();
    if detectors.is_empty() {
        bail!("--align given but --detectors has neither neg_label nor mcm");
    }
    opts.detectors.retain(|d| !is_vl(d));
    if opts.detectors.is_empty() {
        bail!(
            "--align: no detector left for the classifier features (give more than neg_label,mcm)"
        );
    }
    Ok(VisionLanguage {
        inputs: vl_inputs,
        detectors,
    })
}
