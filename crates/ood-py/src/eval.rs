//! `evaluate`: the `ood eval` run from Python — fit every detector once, score the ID test set
//! and every OOD set, metrics with near/far means ([`ood_core::benchmark::run`]), optionally
//! OpenOOD's parameter search first ([`ood_core::benchmark::sweep`]), and the CLI's reports
//! ([`ood_core::report`]).

use crate::convert::{Mat, MatView, Vec1};
use crate::fitted::{Given, fit_inputs, head_from, score_inputs};
use crate::{check_threads, compute, core_err, params_dict, spec_from_json, value_err};
use ndarray::Array2;
use numpy::{IntoPyArray, PyReadonlyArray1};
use ood_core::benchmark::{self, BenchmarkInput, BenchmarkResult, Group, OodSet};
use ood_core::detectors::Needs;
use ood_core::evaluation::{self, Manifest};
use ood_core::metrics::Convention;
use ood_core::{DetectorSpec, FeatureFile, Features, FitData, Head, SideInputs, report};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

/// One data set: a feature file, or `(features, logits, labels)` arrays (each may be `None`).
#[derive(FromPyObject)]
pub enum SetArg<'py> {
    /// A feature file (the CLI's format).
    Path(PathBuf),
    /// In-memory arrays.
    Arrays(
        Option<Mat<'py>>,
        Option<Mat<'py>>,
        Option<PyReadonlyArray1<'py, i64>>,
    ),
}

/// A borrowed [`SetArg`] that can cross into the GIL-free closure.
enum SetView<'a> {
    Path(PathBuf),
    Arrays(Option<MatView<'a>>, Option<MatView<'a>>, Option<Vec<i64>>),
}

impl SetArg<'_> {
    fn view(&self) -> SetView<'_> {
        match self {
            SetArg::Path(p) => SetView::Path(p.clone()),
            SetArg::Arrays(x, z, y) => SetView::Arrays(
                x.as_ref().map(Mat::view),
                z.as_ref().map(Mat::view),
                y.as_ref().map(|y| y.as_array().to_vec()),
            ),
        }
    }
}

/// The classifier head: a head file, or `(weight, bias)` arrays (bias may be `None`).
#[derive(FromPyObject)]
pub enum HeadArg<'py> {
    /// A head file.
    Path(PathBuf),
    /// In-memory arrays.
    Arrays(Mat<'py>, Option<Vec1<'py>>),
}

/// Names of the detectors in `specs` for which `pick` holds, comma-separated.
fn needers(specs: &[DetectorSpec], pick: impl Fn(&Needs) -> bool) -> String {
    specs
        .iter()
        .filter(|s| pick(&s.needs()))
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Loads or builds one scored set against `head`, recorded in `manifest` as `role`.
#[allow(clippy::too_many_arguments)]
fn score_set(
    name: &str,
    role: &str,
    manifest: &mut Manifest,
    set: &SetView<'_>,
    specs: &[DetectorSpec],
    needs: Needs,
    head: &Head,
    head_given: bool,
) -> PyResult<Features> {
    match set {
        SetView::Path(p) => {
            let f = Features::load(p).map_err(core_err)?;
            head.check(&f)
                .map_err(|e| value_err(format!("{name}: {}: {e}", p.display())))?;
            manifest.file(role, p).map_err(core_err)?;
            Ok(f)
        }
        SetView::Arrays(x, z, y) => {
            let p = format!("{name}: ");
            let who = needers(specs, |_| true);
            let mut f = score_inputs(&p, &who, needs, x.as_ref(), z.as_ref(), head, head_given)?;
            if let Some(y) = y {
                if y.len() != f.len() {
                    return Err(value_err(format!(
                        "{name}: labels: {} labels for {} samples",
                        y.len(),
                        f.len()
                    )));
                }
                f.labels = Some(y.clone());
            }
            manifest.arrays(role, &f);
            Ok(f)
        }
    }
}

/// The fit data: a file (streamed, as `ood eval` does) or arrays.
enum Fit {
    File(FeatureFile),
    Memory(Features),
}

impl Fit {
    fn data(&self) -> FitData<'_> {
        match self {
            Fit::File(f) => FitData::File(f),
            Fit::Memory(f) => FitData::Memory(f),
        }
    }
}

/// `evaluate(fit, id, ood, detectors, head, fit_val, negatives, convention, sweep, threads,
/// title)`: see `oodkit.evaluate`.
#[pyfunction]
#[pyo3(signature = (fit, id, ood, detectors, head = None, fit_val = None, negatives = None,
                    convention = "openood", sweep = None, threads = None,
                    title = "oodkit evaluation"))]
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    py: Python<'_>,
    fit: SetArg<'_>,
    id: SetArg<'_>,
    ood: Vec<(String, Option<String>, SetArg<'_>)>,
    detectors: Vec<(String, String)>,
    head: Option<HeadArg<'_>>,
    fit_val: Option<SetArg<'_>>,
    negatives: Option<Mat<'_>>,
    convention: &str,
    sweep: Option<(SetArg<'_>, SetArg<'_>)>,
    threads: Option<i64>,
    title: &str,
) -> PyResult<EvalResult> {
    let threads = check_threads(threads)?;
    let convention: Convention = convention.parse().map_err(core_err)?;
    if ood.is_empty() {
        return Err(value_err("ood: no OOD sets"));
    }
    if detectors.is_empty() {
        return Err(value_err("detectors: no detectors to run"));
    }
    let mut groups = Vec::new();
    for (name, g, _) in &ood {
        groups.push(match g.as_deref() {
            None => None,
            Some("near") => Some(Group::Near),
            Some("far") => Some(Group::Far),
            Some(other) => {
                return Err(value_err(format!(
                    "ood: group of '{name}' must be 'near', 'far' or None, got '{other}'"
                )));
            }
        });
    }
    let fit = fit.view();
    let fit_val = fit_val.as_ref().map(SetArg::view);
    let id = id.view();
    let sets: Vec<(String, Option<Group>, SetView<'_>)> = ood
        .iter()
        .zip(groups)
        .map(|((n, _, s), g)| (n.clone(), g, s.view()))
        .collect();
    let sweep = sweep.as_ref().map(|(a, b)| (a.view(), b.view()));
    let head_view = match &head {
        None => None,
        Some(HeadArg::Path(p)) => Some(Err(p.clone())),
        Some(HeadArg::Arrays(w, b)) => Some(Ok((w.view(), b.as_ref().map(Vec1::view)))),
    };
    let neg = negatives.as_ref().map(Mat::view);
    let result = compute(py, threads, move || {
        let negatives = neg.as_ref().map(|n| Arc::new(crate::convert::owned_f32(n)));
        let mut specs = Vec::new();
        for (name, params) in &detectors {
            let n = name == "neg_label" && negatives.is_some();
            specs.push(spec_from_json(name, params, n)?);
        }
        let mut needs = Needs {
            features: false,
            logits: false,
            head: false,
            labels: false,
            negatives: false,
            ood_val: false,
            network: false,
        };
        for s in &specs {
            let n = s.needs();
            needs.features |= n.features;
            needs.logits |= n.logits;
            needs.head |= n.head;
            needs.labels |= n.labels;
            needs.negatives |= n.negatives;
            needs.network |= n.network;
        }
        if needs.network {
            return Err(value_err(format!(
                "detectors: {} score probe tensors that `ood extract --with` computes from the \
                 network; arrays cannot carry them (run `ood eval` on such feature files)",
                needers(&specs, |n| n.network)
            )));
        }
        if needs.negatives && negatives.is_none() {
            return Err(value_err(
                "negatives: neg_label needs negative-label embeddings (m, d): pass negatives=",
            ));
        }
        let mut head = match &head_view {
            None => None,
            Some(Err(p)) => Some(Head::load(p).map_err(core_err)?),
            Some(Ok((w, b))) => Some(head_from(w, b.as_ref())?),
        };
        if needs.head && head.is_none() {
            return Err(value_err(format!(
                "head: needed by {}: pass head=(weight, bias) or a head file",
                needers(&specs, |n| n.head)
            )));
        }
        let mut files = Manifest::default();
        if let Some(n) = &negatives {
            files.matrix("negatives", n.view());
        }
        if let Some(Err(p)) = &head_view {
            files.other_file("head", p).map_err(core_err)?;
        }
        // Fit data (and the head, when none was given: zeros of the fit data's shape).
        let (fit_data, given) = match &fit {
            SetView::Path(p) => {
                let f = FeatureFile::open(p).map_err(core_err)?;
                if needs.labels && !f.has_labels() {
                    return Err(value_err(format!(
                        "fit: {} has no labels, needed by {}",
                        p.display(),
                        needers(&specs, |n| n.labels)
                    )));
                }
                files.file("fit", p).map_err(core_err)?;
                let given = Given {
                    features: true,
                    logits: true,
                    head: head.is_some(),
                    classes: true,
                };
                if head.is_none() {
                    let (c, d) = (f.num_classes(), f.dim());
                    head = Some(
                        Head::new(Array2::zeros((c, d)), ndarray::Array1::zeros(c))
                            .map_err(core_err)?,
                    );
                }
                (Fit::File(f), given)
            }
            SetView::Arrays(x, z, y) => {
                for (missing, what, pick) in [
                    (
                        x.is_none(),
                        "features",
                        (|n: &Needs| n.features) as fn(&Needs) -> bool,
                    ),
                    (z.is_none() && head.is_none(), "logits", |n: &Needs| {
                        n.logits
                    }),
                    (y.is_none(), "labels", |n: &Needs| n.labels),
                ] {
                    if missing && pick(&needs) {
                        return Err(value_err(format!(
                            "fit: {what} needed by {}",
                            needers(&specs, pick)
                        )));
                    }
                }
                let (f, h, given) = fit_inputs(
                    "fit: ",
                    "the detectors",
                    needs,
                    x.as_ref(),
                    z.as_ref(),
                    y.clone(),
                    head.take(),
                )?;
                files.arrays("fit", &f);
                head = Some(h);
                (Fit::Memory(f), given)
            }
        };
        let head = head.expect("set above");
        let fit_val = match &fit_val {
            None => None,
            Some(SetView::Path(p)) => {
                files.file("fit_val", p).map_err(core_err)?;
                Some(Fit::File(FeatureFile::open(p).map_err(core_err)?))
            }
            Some(s) => Some(Fit::Memory(score_set(
                "fit_val", "fit_val", &mut files, s, &specs, needs, &head, given.head,
            )?)),
        };
        let id_test = score_set(
            "id", "id_test", &mut files, &id, &specs, needs, &head, given.head,
        )?;
        let mut ood_sets = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for (name, group, set) in &sets {
            if names.contains(&name.as_str()) {
                return Err(value_err(format!("ood: set name '{name}' is used twice")));
            }
            names.push(name);
            let role = format!("ood:{name}");
            let f = score_set(
                &format!("ood['{name}']"),
                &role,
                &mut files,
                set,
                &specs,
                needs,
                &head,
                given.head,
            )?;
            files.set_group(&role, *group);
            ood_sets.push(OodSet {
                name: name.clone(),
                group: *group,
                features: f,
            });
        }
        // The search's val pair; its OOD half is also GROOD's side input (its noise prototype).
        let val = match &sweep {
            Some((vi, vo)) => Some((
                score_set(
                    "val_id",
                    "sweep_val_id",
                    &mut files,
                    vi,
                    &specs,
                    needs,
                    &head,
                    given.head,
                )?,
                score_set(
                    "val_ood",
                    "sweep_val_ood",
                    &mut files,
                    vo,
                    &specs,
                    needs,
                    &head,
                    given.head,
                )?,
            )),
            None => None,
        };
        let input = BenchmarkInput {
            fit: fit_data.data(),
            fit_val: fit_val.as_ref().map(Fit::data),
            head: &head,
            id_test: &id_test,
            ood: &ood_sets,
            side: SideInputs {
                negatives: negatives.as_deref(),
                ood_val: val.as_ref().map(|(_, o)| o),
            },
        };
        let mut sweeps = Vec::new();
        let mut warnings = Vec::new();
        if let Some((val_id, val_ood)) = &val {
            let searched = evaluation::search(&specs, &input, val_id, val_ood, &mut |_, _| {})
                .map_err(|e| value_err(e.to_string()))?;
            specs = searched.detectors;
            sweeps = searched.sweeps;
            warnings = searched.warnings;
        }
        let result = benchmark::run(&input, &specs, convention, &mut |_| {}).map_err(core_err)?;
        let config = evaluation::config(
            "python: oodkit.evaluate",
            convention,
            &specs,
            &sweeps,
            &files,
            json!({}),
        );
        Ok(EvalResult {
            result,
            config,
            title: title.to_string(),
            warnings,
        })
    })?;
    Ok(result)
}

/// The result of `evaluate` (wrapped by `oodkit.EvaluationResult`).
#[pyclass(module = "oodkit._oodkit", frozen)]
pub struct EvalResult {
    result: BenchmarkResult,
    config: Value,
    title: String,
    warnings: Vec<String>,
}

#[pymethods]
impl EvalResult {
    /// Metric rows: per-dataset rows then near/far means, detector by detector (fractions).
    fn rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for r in &self.result.rows {
            let d = PyDict::new(py);
            d.set_item("detector", &r.detector)?;
            d.set_item("dataset", &r.dataset)?;
            d.set_item("group", r.group.map(|g| g.to_string()))?;
            d.set_item("is_mean", r.is_mean)?;
            d.set_item("auroc", r.auroc)?;
            d.set_item("fpr95", r.fpr95)?;
            d.set_item("aupr_in", r.aupr_in)?;
            d.set_item("aupr_out", r.aupr_out)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// The stable JSON result object (`ood eval`'s `results.json`), pretty-printed.
    fn to_json(&self) -> String {
        serde_json::to_string_pretty(&report::json(&self.result)).expect("JSON values serialise")
            + "\n"
    }

    /// The resolved configuration (detectors as run, sweep outcomes, input shapes and hashes)
    /// as JSON text (`ood eval`'s `config.json`).
    fn config_json(&self) -> String {
        serde_json::to_string_pretty(&self.config).expect("JSON values serialise") + "\n"
    }

    /// The CSV table (`ood eval`'s `results.csv`).
    fn to_csv(&self) -> String {
        report::csv(&self.result)
    }

    /// The terminal table `ood eval` prints.
    fn text_table(&self) -> String {
        report::text_table(&self.result)
    }

    /// The self-contained HTML report (`ood eval`'s `report.html`).
    fn to_html(&self) -> PyResult<String> {
        report::html(&self.title, &self.result, &self.config).map_err(core_err)
    }

    /// Warnings of the run (e.g. a parameter search that changed nothing).
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    /// Classifier accuracy on the ID test set, when it has labels.
    #[getter]
    fn id_accuracy(&self) -> Option<f64> {
        self.result.id_accuracy
    }

    /// The metric convention.
    #[getter]
    fn convention(&self) -> &'static str {
        self.result.convention.name()
    }

    /// The detectors as run: `[(name, params)]` (after the parameter search, when one ran).
    fn detectors<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for s in &self.result.detectors {
            out.append((s.name(), params_dict(py, s)?))?;
        }
        Ok(out)
    }

    /// Scores: `{detector: {"id": array, "ood": {set: array}}}` (copies).
    fn scores<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for s in &self.result.scores {
            let d = PyDict::new(py);
            d.set_item("id", s.id.clone().into_pyarray(py))?;
            let o = PyDict::new(py);
            for (name, a) in &s.ood {
                o.set_item(name, a.clone().into_pyarray(py))?;
            }
            d.set_item("ood", o)?;
            out.set_item(&s.detector, d)?;
        }
        Ok(out)
    }
}

/// Writes `text` to `path` atomically (temporary file + rename), as the CLI writes its reports.
#[pyfunction]
pub fn write_text_atomic(py: Python<'_>, path: PathBuf, text: &str) -> PyResult<()> {
    compute(py, None, || {
        ood_core::atomic_file::write_bytes_atomic(&path, text.as_bytes()).map_err(core_err)
    })
}
