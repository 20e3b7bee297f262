//! `ood extract`: run a network over a dataset and write its features.

use crate::args::ExtractArgs;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ood_cli::light::common::{guard_outputs, with_appended};
use ood_nn::data::{DataSpec, OnError};
use ood_nn::network::{ExtractOptions, ModelOptions, extract, file_sha256, load_model, model_file};

fn parse_size(what: &str, v: &str) -> Result<Option<u32>> {
    if v == "none" {
        return Ok(None);
    }
    let n: u32 = v
        .parse()
        .with_context(|| format!("--{what} must be a positive integer or 'none', got '{v}'"))?;
    if n == 0 {
        bail!("--{what} must be at least 1");
    }
    Ok(Some(n))
}

/// The probes of `--with` (and of their search grids with `--with-sweep`); `network` names
/// every detector that needs the network at score time.
fn requested_probes(a: &ExtractArgs) -> Result<Vec<ood_core::probes::Probe>> {
    let Some(list) = &a.with else {
        return Ok(Vec::new());
    };
    let network: Vec<&str> = ood_core::DetectorSpec::all_defaults()
        .iter()
        .filter(|d| d.family() == "network")
        .map(|d| d.name())
        .collect();
    let list = if list.trim() == "network" {
        network.join(",")
    } else {
        list.clone()
    };
    let specs = ood_cli::light::eval::parse_detectors(&list, &a.params, true).context("--with")?;
    if let Some(d) = specs.iter().find(|d| d.probes().is_empty()) {
        bail!(
            "--with {}: {} needs nothing from the network besides features and logits; the \
             detectors that do are {}",
            list,
            d.name(),
            network.join(", ")
        );
    }
    let mut probes = ood_core::DetectorSpec::probes_of(&specs, a.with_sweep);
    ood_core::probes::extend_unique(
        &mut probes,
        ood_core::DetectorSpec::fit_probes_of(&specs, a.with_sweep),
    );
    Ok(probes)
}

/// Runs `ood extract`.
pub fn run(a: ExtractArgs) -> Result<()> {
    if let Some(t) = a.threads {
        ood_nn::device::set_threads(t);
    }
    let device = ood_nn::device::parse_device(&a.device)?;
    let data = DataSpec::parse(&a.data)?;
    let data_files = data.input_files();
    let (weights, weights_flag) = model_file(&a.model, a.weights.as_deref())?;
    let mut ins = vec![(weights_flag, weights.as_path())];
    ins.extend(data_files.iter().map(|p| ("--data", p.as_path())));
    if let Some(h) = &a.text_head {
        ins.push(("--text-head", h.as_path()));
    }
    if let Some(f) = &a.fit_features {
        ins.push(("--fit-features", f.as_path()));
    }
    let config_path = with_appended(&a.out, ".config.json");
    let mut outs = vec![
        ("--out", a.out.as_path()),
        ("--out (its .config.json)", config_path.as_path()),
    ];
    if let Some(h) = &a.head_out {
        outs.push(("--head-out", h.as_path()));
    }
    let _guard = guard_outputs(&ins, &outs)?;
    let model_opts = ModelOptions {
        torchscript: a.torchscript.options(),
        class_text: a.text_head.clone(),
    };
    let net = load_model(&a.model, a.weights.as_deref(), &model_opts, device)?;
    let mut preprocess = net.input_spec().preprocess(&data);
    if let Some(v) = &a.resize {
        preprocess.resize = parse_size("resize", v)?;
    }
    if let Some(v) = &a.crop {
        preprocess.crop = parse_size("crop", v)?;
    }
    if let Some(p) = a.pad {
        preprocess.pad = p;
    }
    let on_error: OnError = a.on_error.into();
    let mut probes = requested_probes(&a)?;
    let (fit_statistics, fit_features_sha) = match &a.fit_features {
        Some(p) => {
            let f = ood_core::FeatureFile::open(p)
                .with_context(|| format!("--fit-features {}", p.display()))?;
            let g = ood_core::detectors::LayerGaussians::fit(&(&f).into(), f.num_classes())
                .with_context(|| format!("--fit-features {}", p.display()))?;
            (Some(std::sync::Arc::new(g)), Some(file_sha256(p)?))
        }
        None => {
            if probes.iter().any(|p| p.needs_fit_statistics()) {
                probes.retain(|p| !p.needs_fit_statistics());
                eprintln!(
                    "ood: note: mahalanobis_ensemble's input preprocessing follows the fit set's \
                     class Gaussians: without --fit-features this file gets the layer means (what \
                     the fit set needs); extract the scored sets with --fit-features {}",
                    a.out.display()
                );
            }
            (None, None)
        }
    };
    let opts = ExtractOptions {
        batch_size: a.batch_size,
        preprocess: preprocess.clone(),
        on_error,
        precision: a.precision.into(),
        probes,
        fit_statistics,
    };
    let weights_sha = file_sha256(&weights)?;
    let data_sha = data.fingerprint()?;

    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} images [{elapsed_precise}, {per_sec}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let started = std::time::Instant::now();
    let samples = data.samples()?;
    let mut ex = extract(net.as_ref(), samples, &opts, &mut |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();

    // CLIP's logits depend on the class text embeddings: their hash is part of the layer.
    let text_head_sha = a.text_head.as_deref().map(file_sha256).transpose()?;
    let layer = ood_nn::network::layer_key(net.as_ref(), &opts);
    let md = &mut ex.features.metadata;
    if let Some(sha) = &text_head_sha {
        md.insert("text_head_sha256".into(), sha.clone());
    }
    md.insert("weights_sha256".into(), weights_sha.clone());
    md.insert("dataset".into(), data.dataset_name());
    md.insert("data_spec".into(), data.to_spec_string());
    md.insert("data_sha256".into(), data_sha.clone());
    let key = ood_nn::network::cache_key(
        &net.name(),
        &weights_sha,
        &data_sha,
        &preprocess.describe(),
        &layer,
    );
    md.insert("cache_key".into(), key.clone());
    ex.features
        .save(&a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    if let Some(h) = &a.head_out {
        net.head()?
            .save(h)
            .with_context(|| format!("writing {}", h.display()))?;
    }

    let config = serde_json::json!({
        "command": "extract",
        "tool_version": env!("CARGO_PKG_VERSION"),
        "model": net.name(),
        "weights": weights.display().to_string(),
        "weights_sha256": weights_sha,
        "data_spec": data.to_spec_string(),
        "dataset": data.dataset_name(),
        "data_sha256": data_sha,
        "layer": "penultimate",
        "probes": opts.probes,
        "fit_features": a.fit_features.as_ref().map(|p| p.display().to_string()),
        "fit_features_sha256": fit_features_sha,
        "text_head": a.text_head.as_ref().map(|p| p.display().to_string()),
        "text_head_sha256": text_head_sha,
        "preprocessing": preprocess.describe(),
        "resize": preprocess.resize,
        "interpolation": preprocess.interpolation.as_str(),
        "crop": preprocess.crop,
        "pad": preprocess.pad,
        "mean": preprocess.mean,
        "std": preprocess.std,
        "cache_key": key,
        "head_out": a.head_out.as_ref().map(|p| p.display().to_string()),
    });
    finish(&a, config, &ex, device, secs, &data, "top-1")?;
    Ok(())
}

/// Completes the run's config with the fields every extraction has, writes it beside the
/// features (atomically) and reports the run.
fn finish(
    a: &ExtractArgs,
    mut config: serde_json::Value,
    ex: &ood_nn::network::Extraction,
    device: tch::Device,
    secs: f64,
    data: &DataSpec,
    accuracy_name: &str,
) -> Result<()> {
    let common = serde_json::json!({
        "batch_size": a.batch_size,
        "precision": crate::args::value_name(&a.precision),
        "device": format!("{device:?}"),
        "on_error": crate::args::value_name(&a.on_error),
        "num_samples": ex.features.len(),
        "feature_dim": ex.features.dim(),
        "num_classes": ex.features.num_classes(),
        "num_skipped": ex.skipped.len(),
        "skipped": ex.skipped.iter().take(1000).collect::<Vec<_>>(),
        "seconds": secs,
        "output": a.out.display().to_string(),
    });
    if let (Some(c), serde_json::Value::Object(m)) = (config.as_object_mut(), common) {
        c.extend(m);
    }
    let cfg_path = with_appended(&a.out, ".config.json");
    let text = serde_json::to_string_pretty(&config)? + "\n";
    ood_core::atomic_file::write_bytes_atomic(&cfg_path, text.as_bytes())?;
    eprintln!(
        "extracted {} images ({} skipped) in {secs:.1} s -> {}",
        ex.features.len(),
        ex.skipped.len(),
        a.out.display()
    );
    if let Some(acc) = ex.features.accuracy().filter(|_| data_labels_known(data)) {
        eprintln!("{accuracy_name} accuracy against the data's labels: {acc:.4}");
    }
    Ok(())
}

fn data_labels_known(d: &DataSpec) -> bool {
    !matches!(d, DataSpec::TinTest(_) | DataSpec::Idx { labels: None, .. })
}
