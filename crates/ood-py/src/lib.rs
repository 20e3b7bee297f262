//! # ood-py: the native half of the `oodkit` Python package
//!
//! PyO3 bindings of [`ood_core`], built by maturin into the extension module `oodkit._oodkit`
//! (one abi3 wheel for CPython >= 3.9). The pure-Python half (`python/oodkit/`) turns array-likes
//! into float32/float64 NumPy arrays, checks argument shapes and names, and wraps these functions
//! in the public API (`oodkit.metrics`, `oodkit.Detector`, `oodkit.evaluate`, ...). Nothing here
//! reimplements a metric or a detector: every number comes from `ood-core`.
//!
//! House rules of this crate:
//! * the GIL is released around every computation (`compute`), which runs on the global rayon
//!   pool or on a pool of `threads` workers;
//! * a Rust panic never unwinds into the interpreter: `compute` catches it and raises
//!   `RuntimeError` (PyO3 would raise `PanicException`, a `BaseException`);
//! * [`ood_core::Error`] becomes `ValueError` (bad input), `FileNotFoundError`/`OSError` (I/O) or
//!   `RuntimeError` (linear algebra), with the core's message.
//!
//! Arrays arrive as borrowed NumPy views of any memory order (`Mat`); they are read in logical
//! (row-major) order, so a Fortran-ordered array is never read transposed. Score vectors for the
//! metrics are used in place when contiguous; feature matrices are copied once into the owned
//! row-major `f32` arrays that [`ood_core::Features`] holds.

mod convert;
mod eval;
mod fitted;

use convert::{Mat, Vec1, owned_f32, scores_f64};
use ood_core::DetectorSpec;
use ood_core::metrics::{Convention, evaluate_f64};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rayon::ThreadPool;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock};

/// Converts a core error into the Python exception a user expects.
pub(crate) fn core_err(e: ood_core::Error) -> PyErr {
    use ood_core::Error as E;
    match &e {
        E::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(e.to_string())
        }
        E::Io { .. } => PyOSError::new_err(e.to_string()),
        E::Linalg(_) => PyRuntimeError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// A `ValueError` with `msg`.
pub(crate) fn value_err(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// Thread pools by size, built on first use and kept (building one costs about a millisecond).
fn pool(threads: usize) -> PyResult<Arc<ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("oodkit-{i}"))
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start {threads} threads: {e}")))?,
    );
    pools.insert(threads, p.clone());
    Ok(p)
}

/// Checks a `threads=` argument: `None` (the global pool, one thread per core) or `>= 1`.
pub(crate) fn check_threads(threads: Option<i64>) -> PyResult<Option<usize>> {
    match threads {
        None => Ok(None),
        Some(t) if t >= 1 => Ok(Some(t as usize)),
        Some(t) => Err(value_err(format!(
            "threads must be a positive number of threads or None, got {t}"
        ))),
    }
}

/// Runs `f` with the GIL released, on `threads` workers (or the global pool), turning a panic
/// into `RuntimeError` instead of unwinding into the interpreter.
pub(crate) fn compute<T, F>(py: Python<'_>, threads: Option<usize>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> PyResult<T> + Send,
{
    let pool = threads.map(pool).transpose()?;
    let out = py.detach(move || {
        catch_unwind(AssertUnwindSafe(move || match pool {
            Some(p) => p.install(f),
            None => f(),
        }))
    });
    match out {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".to_string());
            Err(PyRuntimeError::new_err(format!(
                "internal error in oodkit (Rust panic: {msg}); the interpreter is unaffected, \
                 please report this with the inputs that caused it"
            )))
        }
    }
}

/// `metrics(id_scores, ood_scores, convention, threads)`: AUROC, FPR@95, AUPR-In and AUPR-Out
/// as a dict of floats (fractions). float32 inputs are ranked in float32, float64 inputs (or a
/// mix) in float64.
#[pyfunction]
#[pyo3(signature = (id_scores, ood_scores, convention = "openood", threads = None))]
fn metrics<'py>(
    py: Python<'py>,
    id_scores: Vec1<'py>,
    ood_scores: Vec1<'py>,
    convention: &str,
    threads: Option<i64>,
) -> PyResult<Bound<'py, PyDict>> {
    let convention: Convention = convention.parse().map_err(core_err)?;
    let threads = check_threads(threads)?;
    let (id, ood) = (id_scores.view(), ood_scores.view());
    let m = compute(py, threads, || {
        // Both paths rank by exact f64 values (f32 widens exactly): the same blocks, the same
        // metrics as the pooled f32 sort of `ood metrics`, and faster on large inputs.
        let r = match (id.as_f32(), ood.as_f32()) {
            (Some(a), Some(b)) => {
                let (a, b) = (a.as_standard_layout(), b.as_standard_layout());
                evaluate_f64(
                    a.as_slice().expect("standard layout"),
                    b.as_slice().expect("standard layout"),
                    convention,
                )
            }
            _ => evaluate_f64(&scores_f64(&id), &scores_f64(&ood), convention),
        };
        r.map_err(core_err)
    })?;
    let d = PyDict::new(py);
    d.set_item("auroc", m.auroc)?;
    d.set_item("fpr95", m.fpr95)?;
    d.set_item("aupr_in", m.aupr_in)?;
    d.set_item("aupr_out", m.aupr_out)?;
    d.set_item("convention", convention.name())?;
    Ok(d)
}

/// `conventions()`: `{name: one-line description}` of every metric convention.
#[pyfunction]
fn conventions(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for c in Convention::ALL {
        d.set_item(c.name(), c.about())?;
    }
    Ok(d)
}

/// Parameters of a spec as a Python dict (via JSON, so nested values keep their types).
pub(crate) fn params_dict<'py>(
    py: Python<'py>,
    spec: &DetectorSpec,
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::Value::Object(spec.params()).to_string();
    py.import("json")?.call_method1("loads", (text,))
}

/// `detectors()`: one dict per registered detector: `name`, `about`, `params` (the defaults),
/// `needs` (which of features, logits, head, labels, negatives, network it reads), `family`
/// (logits, features, network, vision-language), `fits_on_val` and `sweep` (the
/// parameter-search grid, a list of parameter dicts).
#[pyfunction]
fn detectors(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let out = PyList::empty(py);
    for spec in DetectorSpec::all_defaults() {
        let d = PyDict::new(py);
        d.set_item("name", spec.name())?;
        d.set_item("about", spec.about())?;
        d.set_item("params", params_dict(py, &spec)?)?;
        d.set_item("needs", spec.needs().names())?;
        d.set_item("family", spec.family())?;
        d.set_item("fits_on_val", spec.fits_on_val())?;
        let grid = PyList::empty(py);
        for g in spec.sweep() {
            grid.append(params_dict(py, &g)?)?;
        }
        d.set_item("sweep", grid)?;
        out.append(d)?;
    }
    Ok(out)
}

/// `resolve_detector(name, params)`: validates a detector name and `{key: json_text}` overrides
/// and returns `(name, resolved params as JSON text)`. Unknown names or parameters and
/// ill-typed values raise `ValueError` listing what is valid.
#[pyfunction]
fn resolve_detector(name: &str, params: Vec<(String, String)>) -> PyResult<(String, String)> {
    let spec = DetectorSpec::from_name(name, &params).map_err(core_err)?;
    Ok((
        spec.name().to_string(),
        serde_json::Value::Object(spec.params()).to_string(),
    ))
}

/// Builds the spec of `name` with resolved `params_json` (as returned by [`resolve_detector`]);
/// `has_negatives` says whether negative labels were given (only `neg_label` takes them, as a
/// side input of its fit).
pub(crate) fn spec_from_json(
    name: &str,
    params_json: &str,
    has_negatives: bool,
) -> PyResult<DetectorSpec> {
    let v: serde_json::Value = serde_json::from_str(params_json)
        .map_err(|e| value_err(format!("detector parameters are not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| value_err("detector parameters must be a JSON object"))?;
    let params: Vec<(String, String)> = obj
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    let spec = DetectorSpec::from_name(name, &params).map_err(core_err)?;
    if has_negatives && !matches!(spec, DetectorSpec::NegLabel(_)) {
        return Err(value_err(format!(
            "negatives: only neg_label uses negative labels, not '{name}'"
        )));
    }
    Ok(spec)
}

/// `load_features(path)`: `(features, logits, labels or None, metadata)` of a feature file.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn load_features<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
) -> PyResult<(
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Option<Bound<'py, PyAny>>,
    Bound<'py, PyDict>,
)> {
    use numpy::IntoPyArray;
    let f = compute(py, None, || {
        ood_core::Features::load(&path).map_err(core_err)
    })?;
    let meta = PyDict::new(py);
    for (k, v) in &f.metadata {
        meta.set_item(k, v)?;
    }
    Ok((
        f.embeddings.into_pyarray(py).into_any(),
        f.logits.into_pyarray(py).into_any(),
        f.labels
            .map(|l| numpy::PyArray1::from_vec(py, l).into_any()),
        meta,
    ))
}

/// `save_features(path, features, logits, labels, metadata)`: writes a feature file atomically
/// (the CLI's format).
#[pyfunction]
#[pyo3(signature = (path, features, logits, labels = None, metadata = None))]
fn save_features(
    py: Python<'_>,
    path: std::path::PathBuf,
    features: Mat<'_>,
    logits: Mat<'_>,
    labels: Option<numpy::PyReadonlyArray1<'_, i64>>,
    metadata: Option<Vec<(String, String)>>,
) -> PyResult<()> {
    let (x, z) = (features.view(), logits.view());
    let labels = labels.map(|l| l.as_array().to_vec());
    compute(py, None, move || {
        let mut f =
            ood_core::Features::new(owned_f32(&x), owned_f32(&z), labels).map_err(core_err)?;
        f.metadata = metadata.unwrap_or_default().into_iter().collect();
        f.save(&path).map_err(core_err)
    })
}

/// `load_head(path)`: `(weight (c, d), bias (c))` of a head file.
#[pyfunction]
fn load_head(
    py: Python<'_>,
    path: std::path::PathBuf,
) -> PyResult<(Bound<'_, PyAny>, Bound<'_, PyAny>)> {
    use numpy::IntoPyArray;
    let h = compute(py, None, || ood_core::Head::load(&path).map_err(core_err))?;
    Ok((
        h.weight.into_pyarray(py).into_any(),
        h.bias.into_pyarray(py).into_any(),
    ))
}

/// `save_head(path, weight, bias)`: writes a head file atomically.
#[pyfunction]
fn save_head(
    py: Python<'_>,
    path: std::path::PathBuf,
    weight: Mat<'_>,
    bias: Vec1<'_>,
) -> PyResult<()> {
    let (w, b) = (weight.view(), bias.view());
    compute(py, None, move || {
        let head = ood_core::Head::new(owned_f32(&w), convert::vec_f32(&b)).map_err(core_err)?;
        head.save(&path).map_err(core_err)
    })
}

/// `head_logits(features, weight, bias)`: `features · weightᵀ + bias` as the core computes it
/// (the logits `Detector.fit` derives from a head).
#[pyfunction]
#[pyo3(signature = (features, weight, bias = None))]
fn head_logits<'py>(
    py: Python<'py>,
    features: Mat<'_>,
    weight: Mat<'_>,
    bias: Option<Vec1<'_>>,
) -> PyResult<Bound<'py, numpy::PyArray2<f32>>> {
    use numpy::IntoPyArray;
    let (x, w, b) = (
        features.view(),
        weight.view(),
        bias.as_ref().map(Vec1::view),
    );
    let z = compute(py, None, move || {
        let head = fitted::head_from(&w, b.as_ref())?;
        head.logits(owned_f32(&x).view())
            .map_err(|e| value_err(format!("features: {e}")))
    })?;
    Ok(z.into_pyarray(py))
}

/// `load_negatives(path)`: `neg_label`'s negative-label embeddings `(m, d)` from a safetensors
/// file (tensor `negatives`, as `ood neglabel mine` writes).
#[pyfunction]
fn load_negatives(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Bound<'_, PyAny>> {
    use numpy::IntoPyArray;
    let n = compute(py, None, || {
        ood_core::detectors::NegLabel::load_negatives(&path).map_err(core_err)
    })?;
    Ok(Arc::unwrap_or_clone(n).into_pyarray(py).into_any())
}

/// `save_negatives(path, negatives)`: writes negative-label embeddings `(m, d)`.
#[pyfunction]
fn save_negatives(py: Python<'_>, path: std::path::PathBuf, negatives: Mat<'_>) -> PyResult<()> {
    let n = negatives.view();
    compute(py, None, move || {
        ood_core::detectors::NegLabel::save_negatives(&owned_f32(&n), &path).map_err(core_err)
    })
}

/// Panics inside [`compute`] (on a worker thread when `threads` is given): the test that a Rust
/// panic surfaces as `RuntimeError` and leaves the interpreter running.
#[pyfunction]
#[pyo3(signature = (threads = None))]
fn _panic_for_tests(py: Python<'_>, threads: Option<i64>) -> PyResult<()> {
    let threads = check_threads(threads)?;
    compute(py, threads, || {
        if threads.is_some() {
            rayon::join(|| panic!("deliberate panic on a worker"), || ());
        }
        panic!("deliberate panic")
    })
}

/// The extension module `oodkit._oodkit`.
#[pymodule]
fn _oodkit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(metrics, m)?)?;
    m.add_function(wrap_pyfunction!(conventions, m)?)?;
    m.add_function(wrap_pyfunction!(detectors, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_detector, m)?)?;
    m.add_function(wrap_pyfunction!(load_features, m)?)?;
    m.add_function(wrap_pyfunction!(save_features, m)?)?;
    m.add_function(wrap_pyfunction!(load_head, m)?)?;
    m.add_function(wrap_pyfunction!(save_head, m)?)?;
    m.add_function(wrap_pyfunction!(head_logits, m)?)?;
    m.add_function(wrap_pyfunction!(load_negatives, m)?)?;
    m.add_function(wrap_pyfunction!(save_negatives, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(fitted::fit, m)?)?;
    m.add_class::<fitted::Fitted>()?;
    m.add_function(wrap_pyfunction!(eval::evaluate, m)?)?;
    m.add_class::<eval::EvalResult>()?;
    m.add_function(wrap_pyfunction!(eval::write_text_atomic, m)?)?;
    Ok(())
}
