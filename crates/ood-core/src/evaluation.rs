//! Evaluate-and-write: the pipeline behind `ood eval`, `ood bench`, `ood demo`, `ood example` and
//! Python's `oodkit.evaluate`.
//!
//! A run is: the parameter search on validation features when asked ([`search`], OpenOOD's APS),
//! the benchmark ([`crate::benchmark::run`]), optionally a second benchmark in a text encoder's
//! embedding space whose rows join the first ([`BenchmarkResult::merge`]), a manifest of every
//! input (path, SHA-256, shape and metadata of each file; a content hash of in-memory arrays)
//! in the run's configuration ([`Manifest`], [`config`]), and the artifacts written atomically
//! ([`write_artifacts`]): `results.json`, `results.csv`, `config.json`, `report.html`.
//! Nothing is written unless the whole run succeeded.

use crate::atomic_file;
use crate::benchmark::{self, BenchmarkInput, BenchmarkResult, Group, OodSet, SweepOutcome};
use crate::detector::SideInputs;
use crate::detectors::{DetectorSpec, NegLabel};
use crate::error::Result;
use crate::features::{FeatureFile, Features, FitData, Head};
use crate::hashing;
use crate::metrics::Convention;
use crate::report;
use ndarray::Array2;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The files every run writes into its output folder.
pub const OUT_DIR_FILES: [&str; 4] = ["results.json", "results.csv", "config.json", "report.html"];

/// The feature and head files of one benchmark.
#[derive(Debug, Clone)]
pub struct FileInputs {
    /// ID fit features.
    pub fit: PathBuf,
    /// Optional ID val features for the detectors that fit on them.
    pub fit_val: Option<PathBuf>,
    /// Head file.
    pub head: PathBuf,
    /// ID test features.
    pub id: PathBuf,
    /// OOD sets: name, group, file.
    pub ood: Vec<(String, Option<Group>, PathBuf)>,
    /// NegLabel's negative-label embeddings (a safetensors file with tensor `negatives`), a
    /// side input of its fit.
    pub negatives: Option<PathBuf>,
}

/// The opened files of a [`FileInputs`]: the fit data stays on disk (streamed by the detectors
/// that can), the test sets are in memory.
#[derive(Debug)]
pub struct LoadedInputs {
    /// The head.
    pub head: Head,
    /// ID fit features.
    pub fit: FeatureFile,
    /// ID val features.
    pub fit_val: Option<FeatureFile>,
    /// ID test features.
    pub id: Features,
    /// OOD sets.
    pub sets: Vec<OodSet>,
    /// NegLabel's negatives.
    pub negatives: Option<Arc<Array2<f32>>>,
}

impl FileInputs {
    /// Every file the run reads, each with the command-line flag that names it.
    pub fn files(&self) -> Vec<(String, PathBuf)> {
        let mut v = vec![
            ("--fit".to_string(), self.fit.clone()),
            ("--head".to_string(), self.head.clone()),
            ("--id".to_string(), self.id.clone()),
        ];
        if let Some(p) = &self.fit_val {
            v.push(("--fit-val".to_string(), p.clone()));
        }
        for (name, group, p) in &self.ood {
            let flag = match group {
                Some(Group::Near) => "--near",
                Some(Group::Far) => "--far",
                None => "--ood",
            };
            v.push((format!("{flag} {name}"), p.clone()));
        }
        if let Some(p) = &self.negatives {
            v.push(("--negatives".to_string(), p.clone()));
        }
        v
    }

    /// Opens every file (errors name the file).
    pub fn open(&self) -> Result<LoadedInputs> {
        let fit_val = self.fit_val.as_deref().map(FeatureFile::open).transpose()?;
        let mut sets = Vec::with_capacity(self.ood.len());
        for (name, group, path) in &self.ood {
            sets.push(OodSet {
                name: name.clone(),
                group: *group,
                features: Features::load(path)?,
            });
        }
        Ok(LoadedInputs {
            head: Head::load(&self.head)?,
            fit: FeatureFile::open(&self.fit)?,
            fit_val,
            id: Features::load(&self.id)?,
            sets,
            negatives: self
                .negatives
                .as_deref()
                .map(NegLabel::load_negatives)
                .transpose()?,
        })
    }

    /// Adds every file to `manifest` under `prefix`-ed keys (`fit`, `fit_val`, `head`,
    /// `id_test`, `ood:NAME`).
    pub fn describe(&self, prefix: &str, manifest: &mut Manifest) -> Result<()> {
        manifest.file(&format!("{prefix}fit"), &self.fit)?;
        if let Some(p) = &self.fit_val {
            manifest.file(&format!("{prefix}fit_val"), p)?;
        }
        manifest.insert(
            &format!("{prefix}head"),
            json!({"path": self.head.display().to_string(), "sha256": hashing::sha256_file(&self.head)?}),
        );
        manifest.file(&format!("{prefix}id_test"), &self.id)?;
        for (name, group, path) in &self.ood {
            manifest.file(&format!("{prefix}ood:{name}"), path)?;
            manifest.set_group(&format!("{prefix}ood:{name}"), *group);
        }
        if let Some(p) = &self.negatives {
            manifest.other_file(&format!("{prefix}negatives"), p)?;
        }
        Ok(())
    }
}

impl LoadedInputs {
    /// The benchmark input over these files.
    pub fn input(&self) -> BenchmarkInput<'_> {
        BenchmarkInput {
            fit: FitData::File(&self.fit),
            fit_val: self.fit_val.as_ref().map(FitData::File),
            head: &self.head,
            id_test: &self.id,
            ood: &self.sets,
            // The caller adds the run's OOD-val features (`side.ood_val`) when it has them.
            side: SideInputs {
                negatives: self.negatives.as_deref(),
                ood_val: None,
            },
        }
    }
}

/// Every input of a run, by role: what `config.json` records under `inputs`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest(pub BTreeMap<String, Value>);

impl Manifest {
    /// Records `value` for `role`.
    pub fn insert(&mut self, role: &str, value: Value) {
        self.0.insert(role.to_string(), value);
    }

    /// Records a feature file: path, SHA-256, rows, dimension, classes, labels, metadata.
    pub fn file(&mut self, role: &str, path: &Path) -> Result<()> {
        let f = FeatureFile::open(path)?;
        self.insert(
            role,
            json!({
                "path": path.display().to_string(),
                "sha256": hashing::sha256_file(path)?,
                "rows": f.len(),
                "dim": f.dim(),
                "classes": f.num_classes(),
                "labels": f.has_labels(),
                "metadata": f.metadata(),
            }),
        );
        Ok(())
    }

    /// Records any other file the run read (e.g. negative labels): path and SHA-256.
    pub fn other_file(&mut self, role: &str, path: &Path) -> Result<()> {
        self.insert(
            role,
            json!({"path": path.display().to_string(), "sha256": hashing::sha256_file(path)?}),
        );
        Ok(())
    }

    /// Records in-memory features: rows, dimension, classes, labels and the SHA-256 of their
    /// little-endian float32 embeddings and logits followed by the int64 labels.
    pub fn arrays(&mut self, role: &str, f: &Features) {
        let mut bytes = Vec::with_capacity(4 * (f.embeddings.len() + f.logits.len()));
        for v in f.embeddings.iter().chain(f.logits.iter()) {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        for v in f.labels.iter().flatten() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.insert(
            role,
            json!({
                "source": "array",
                "sha256_f32le": hashing::sha256_bytes(&bytes),
                "rows": f.len(),
                "dim": f.dim(),
                "classes": f.num_classes(),
                "labels": f.labels.is_some(),
            }),
        );
    }

    /// Records an in-memory matrix (e.g. negative-label embeddings): rows, columns and the
    /// SHA-256 of its little-endian float32 values in row order.
    pub fn matrix(&mut self, role: &str, m: ndarray::ArrayView2<'_, f32>) {
        let mut bytes = Vec::with_capacity(4 * m.len());
        for v in m.iter() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.insert(
            role,
            json!({
                "source": "array",
                "sha256_f32le": hashing::sha256_bytes(&bytes),
                "rows": m.nrows(),
                "dim": m.ncols(),
            }),
        );
    }

    /// Adds the OOD group to a recorded set.
    pub fn set_group(&mut self, role: &str, group: Option<Group>) {
        if let Some(v) = self.0.get_mut(role) {
            v["group"] = json!(group);
        }
    }
}

/// The outcome of [`search`]: the detectors with their chosen parameters.
#[derive(Debug, Clone)]
pub struct Searched {
    /// Every detector, with the winning candidate's parameters.
    pub detectors: Vec<DetectorSpec>,
    /// Each detector's search (`{"detector": name, "outcome": SweepOutcome}`), for `config.json`.
    pub sweeps: Vec<Value>,
    /// Searches that changed nothing (every candidate gave identical scores).
    pub warnings: Vec<String>,
}

/// OpenOOD's parameter search for every detector on ID-val vs OOD-val features
/// ([`benchmark::sweep`]); `chosen` is called after each detector with its outcome.
pub fn search(
    detectors: &[DetectorSpec],
    input: &BenchmarkInput<'_>,
    val_id: &Features,
    val_ood: &Features,
    chosen: &mut dyn FnMut(&DetectorSpec, &SweepOutcome),
) -> Result<Searched> {
    let mut out = Searched {
        detectors: Vec::with_capacity(detectors.len()),
        sweeps: Vec::new(),
        warnings: Vec::new(),
    };
    for d in detectors {
        // A detector that needs the network at score time is searched only when the val files
        // hold every candidate's probe tensors.
        let lacking = DetectorSpec::probes_of(std::slice::from_ref(d), true)
            .into_iter()
            .find(|p| [val_id, val_ood].iter().any(|f| !f.has_probe(p)));
        if let Some(p) = lacking {
            out.warnings.push(format!(
                "{} was not searched: the val files lack '{}' (extract them with `ood extract --with {} --with-sweep`)",
                d.name(),
                p.tensor_name(),
                d.name()
            ));
            out.detectors.push(d.clone());
            continue;
        }
        let outcome = benchmark::sweep(d, input, val_id, val_ood).map_err(|e| {
            crate::Error::InvalidParameter(format!("parameter search for {}: {e}", d.name()))
        })?;
        if outcome.no_effect {
            out.warnings.push(format!(
                "the {} parameter search changed nothing: all {} candidates gave identical scores",
                d.name(),
                outcome.candidates.len()
            ));
        }
        chosen(d, &outcome);
        out.sweeps
            .push(json!({"detector": d.name(), "outcome": outcome}));
        out.detectors.push(outcome.chosen);
    }
    Ok(out)
}

/// What [`evaluate`] runs on a [`FileInputs`].
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Detectors with their parameters (the search's starting point).
    pub detectors: Vec<DetectorSpec>,
    /// Metric convention.
    pub convention: Convention,
    /// ID-val and OOD-val feature files for the parameter search.
    pub sweep: Option<(PathBuf, PathBuf)>,
    /// OOD-val features handed to the detectors that fit on them (GROOD's noise prototype,
    /// [`SideInputs::ood_val`]), searched or not; read only when such a detector runs. Without
    /// it those detectors' fits fail and they are reported skipped.
    pub ood_val: Option<PathBuf>,
    /// A second set of inputs in a text encoder's embedding space (image embeddings, with the
    /// ID label embeddings as the head) and the vision-language detectors scored on them
    /// (NegLabel, MCM); their rows join the main result.
    pub vision_language: Option<(FileInputs, Vec<DetectorSpec>)>,
}

/// What [`evaluate`] reports as it goes.
pub enum Event<'a> {
    /// The parameter search chose these parameters for a detector that had candidates.
    Chosen(&'a DetectorSpec),
    /// Something the user should know (a search that changed nothing or could not run).
    Warning(&'a str),
    /// The main benchmark starts: its number of steps.
    Start(u64),
    /// A step of the main benchmark.
    Step(&'a str),
    /// A step of the vision-language benchmark.
    Aligned(&'a str),
}

/// A whole run on feature files: opens the inputs, runs the parameter search when the plan has a
/// val pair, the benchmark, and the vision-language part; returns the result and the run's
/// configuration ([`config`], with a manifest of every input that was read). Writes nothing:
/// [`write_artifacts`] does, once the run succeeded.
pub fn evaluate(
    inputs: &FileInputs,
    plan: &Plan,
    command: &str,
    extra_config: Value,
    progress: &mut dyn FnMut(Event<'_>),
) -> Result<(BenchmarkResult, Value)> {
    let loaded = inputs.open()?;
    let ood_val_path = plan
        .ood_val
        .as_deref()
        .filter(|_| plan.detectors.iter().any(|d| d.needs().ood_val));
    let ood_val = ood_val_path.map(Features::load).transpose()?;
    let mut input = loaded.input();
    input.side.ood_val = ood_val.as_ref();
    let mut manifest = Manifest::default();
    inputs.describe("", &mut manifest)?;
    if let Some(vo) = ood_val_path {
        manifest.file("ood_val", vo)?;
    }

    let mut detectors = plan.detectors.clone();
    let mut sweeps = Vec::new();
    if let Some((vi, vo)) = &plan.sweep {
        let (val_id, val_ood) = (Features::load(vi)?, Features::load(vo)?);
        let searched = search(&detectors, &input, &val_id, &val_ood, &mut |_, o| {
            if !o.candidates.is_empty() {
                progress(Event::Chosen(&o.chosen));
            }
        })?;
        for w in &searched.warnings {
            progress(Event::Warning(w));
        }
        detectors = searched.detectors;
        sweeps = searched.sweeps;
        manifest.file("sweep_val_id", vi)?;
        manifest.file("sweep_val_ood", vo)?;
    }

    progress(Event::Start(
        (detectors.len() * (2 + loaded.sets.len())) as u64,
    ));
    let mut result = benchmark::run(&input, &detectors, plan.convention, &mut |m| {
        progress(Event::Step(m))
    })?;
    if let Some((vl_inputs, vl_detectors)) = &plan.vision_language {
        let vl_loaded = vl_inputs.open()?;
        let more = benchmark::run(
            &vl_loaded.input(),
            vl_detectors,
            plan.convention,
            &mut |m| progress(Event::Aligned(m)),
        )?;
        result.merge(more);
        detectors.extend(vl_detectors.iter().cloned());
        vl_inputs.describe("aligned:", &mut manifest)?;
    }
    let config = config(
        command,
        plan.convention,
        &detectors,
        &sweeps,
        &manifest,
        extra_config,
    );
    Ok((result, config))
}

/// The run's configuration (`config.json`): tool and version, the command, the convention, the
/// detectors as run, the parameter searches, every input, and the caller's `extra` settings.
pub fn config(
    command: &str,
    convention: Convention,
    detectors: &[DetectorSpec],
    sweeps: &[Value],
    inputs: &Manifest,
    extra: Value,
) -> Value {
    json!({
        "tool": "oodkit",
        "version": env!("CARGO_PKG_VERSION"),
        "command": command,
        "convention": convention,
        "detectors": detectors,
        "sweep": sweeps,
        "inputs": inputs.0,
        "extra": extra,
    })
}

/// `results.json`'s text: the stable JSON result object, pretty-printed.
pub fn results_json(result: &BenchmarkResult) -> String {
    serde_json::to_string_pretty(&report::json(result)).expect("JSON values serialise") + "\n"
}

/// Writes [`OUT_DIR_FILES`] into `dir` (and `results.json`'s text to `json` too, when given),
/// each atomically. The HTML report is rendered before anything is written.
pub fn write_artifacts(
    dir: &Path,
    json: Option<&Path>,
    title: &str,
    result: &BenchmarkResult,
    config: &Value,
) -> Result<()> {
    let json_text = results_json(result);
    let html = report::html(title, result, config)?;
    let config_text = serde_json::to_string_pretty(config).expect("JSON values serialise") + "\n";
    atomic_file::write_bytes_atomic(&dir.join("results.json"), json_text.as_bytes())?;
    atomic_file::write_bytes_atomic(&dir.join("results.csv"), report::csv(result).as_bytes())?;
    atomic_file::write_bytes_atomic(&dir.join("config.json"), config_text.as_bytes())?;
    atomic_file::write_bytes_atomic(&dir.join("report.html"), html.as_bytes())?;
    if let Some(p) = json {
        atomic_file::write_bytes_atomic(p, json_text.as_bytes())?;
    }
    Ok(())
}
