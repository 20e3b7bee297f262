//! `fit` and the fitted detector: the inputs a detector needs, resolved from what the caller
//! gave, then [`ood_core::Detector::fit`] and [`ood_core::Scorer::score`].
//!
//! Missing inputs a detector does not read are filled with zeros of the right shape (the core's
//! [`Features`] always has features and logits, and [`Head`] is always present): no features for
//! a logit-only detector gives placeholder zero features, no logits and no head gives zero logits, no head
//! gives a zero head of the fit data's shape. A missing dimension (no features and no head, no
//! logits, head or labels) is a single placeholder column: the core rejects zero-width data. A detector that reads an input that is missing is an
//! error naming the argument ([`ood_core::detectors::Needs`]).

use crate::convert::{Mat, MatView, Vec1, VecView, owned_f32, vec_f32};
use crate::{check_threads, compute, core_err, params_dict, spec_from_json, value_err};
use ndarray::{Array1, Array2};
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use ood_core::detectors::Needs;
use ood_core::{DetectorSpec, Features, FitData, Head, Scorer, SideInputs};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;

/// Which inputs were given by the caller (the rest were filled in).
#[derive(Debug, Clone, Copy, Default)]
pub struct Given {
    /// Penultimate features.
    pub features: bool,
    /// Logits (as given; without them, computed from a given head or zeros).
    pub logits: bool,
    /// The head.
    pub head: bool,
    /// The class count (from logits, head or labels; else a placeholder of 1).
    pub classes: bool,
}

/// Builds a head from a weight and an optional bias (zeros when absent).
pub fn head_from(w: &MatView<'_>, b: Option<&VecView<'_>>) -> PyResult<Head> {
    let weight = owned_f32(w);
    let bias = match b {
        Some(b) => vec_f32(b),
        None => Array1::zeros(weight.nrows()),
    };
    Head::new(weight, bias).map_err(|e| value_err(format!("head: {e}")))
}

/// The rows of the data: from the features, else the logits.
fn rows(p: &str, x: Option<&MatView<'_>>, z: Option<&MatView<'_>>) -> PyResult<usize> {
    match (x, z) {
        (Some(x), Some(z)) if x.dim().0 != z.dim().0 => Err(value_err(format!(
            "{p}logits: {} rows, but features has {} (one row of logits per sample)",
            z.dim().0,
            x.dim().0
        ))),
        (Some(x), _) => Ok(x.dim().0),
        (None, Some(z)) => Ok(z.dim().0),
        (None, None) => Err(value_err(format!(
            "{p}features: missing (give the penultimate features, or at least logits for \
             logit-based detectors)"
        ))),
    }
}

/// Resolves fit data and head. `who` names the detector(s) in messages, `p` prefixes argument
/// names (empty for `Detector.fit`, the set's name for `evaluate`).
#[allow(clippy::too_many_arguments)]
pub fn fit_inputs(
    p: &str,
    who: &str,
    needs: Needs,
    x: Option<&MatView<'_>>,
    z: Option<&MatView<'_>>,
    labels: Option<Vec<i64>>,
    head: Option<Head>,
) -> PyResult<(Features, Head, Given)> {
    let n = rows(p, x, z)?;
    if let Some(len) = labels.as_ref().map(Vec::len).filter(|&len| len != n) {
        return Err(value_err(format!(
            "{p}labels: {len} labels for {n} samples"
        )));
    }
    if needs.features && x.is_none() {
        return Err(value_err(format!(
            "{p}features: {who} needs the penultimate features"
        )));
    }
    if needs.head && head.is_none() {
        return Err(value_err(format!(
            "head: {who} needs the classifier head: pass head=(weight, bias)"
        )));
    }
    if needs.labels && labels.is_none() {
        return Err(value_err(format!(
            "{p}labels: {who} needs the class labels of the fit data"
        )));
    }
    let d = match (x, &head) {
        (Some(x), Some(h)) if x.dim().1 != h.dim() => {
            return Err(value_err(format!(
                "{p}features: {} columns, but the head's weight is ({}, {}) (features · weightᵀ)",
                x.dim().1,
                h.num_classes(),
                h.dim()
            )));
        }
        (Some(x), _) => x.dim().1,
        (None, Some(h)) => h.dim(),
        // No features and no head: a one-column placeholder (the core rejects zero-width data).
        (None, None) => 1,
    };
    let given = Given {
        classes: z.is_some() || head.is_some() || labels.is_some(),
        features: x.is_some(),
        logits: z.is_some(),
        head: head.is_some(),
    };
    let emb = x.map(owned_f32).unwrap_or_else(|| Array2::zeros((n, d)));
    let logits = match (z, &head) {
        (Some(z), Some(h)) if z.dim().1 != h.num_classes() => {
            return Err(value_err(format!(
                "{p}logits: {} columns, but the head has {} classes",
                z.dim().1,
                h.num_classes()
            )));
        }
        (Some(z), _) => owned_f32(z),
        (None, Some(h)) => h.logits(emb.view()).map_err(core_err)?,
        (None, None) if needs.logits => {
            return Err(value_err(format!(
                "{p}logits: {who} needs logits: pass logits=, or head=(weight, bias) to compute them"
            )));
        }
        (None, None) => {
            // The class count is only a shape here; labels (for Mahalanobis, RMDS) set it, else
            // one placeholder column.
            let c = labels
                .as_ref()
                .and_then(|l| l.iter().max())
                .map_or(1, |&m| (m.max(0) + 1) as usize);
            Array2::zeros((n, c))
        }
    };
    let head = match head {
        Some(h) => h,
        None => Head::new(
            Array2::zeros((logits.ncols(), d)),
            Array1::zeros(logits.ncols()),
        )
        .map_err(core_err)?,
    };
    let f = Features::new(emb, logits, labels).map_err(|e| value_err(format!("{p}{e}")))?;
    Ok((f, head, given))
}

/// Resolves data to score against a fitted head (`d` features, `c` classes).
pub fn score_inputs(
    p: &str,
    who: &str,
    needs: Needs,
    x: Option<&MatView<'_>>,
    z: Option<&MatView<'_>>,
    head: &Head,
    head_given: bool,
) -> PyResult<Features> {
    let n = rows(p, x, z)?;
    let (d, c) = (head.dim(), head.num_classes());
    // Features a detector does not read, and that no logits are computed from, are not used.
    let x = if !needs.features && (z.is_some() || !head_given) {
        None
    } else {
        x
    };
    if needs.features && x.is_none() {
        return Err(value_err(format!(
            "{p}features: {who} needs the penultimate features"
        )));
    }
    if let Some(cols) = x.map(|x| x.dim().1).filter(|&cols| cols != d) {
        return Err(value_err(format!(
            "{p}features: {cols} columns, but the detector was fitted on {d}"
        )));
    }
    let emb = x.map(owned_f32).unwrap_or_else(|| Array2::zeros((n, d)));
    let logits = match z {
        Some(z) if z.dim().1 != c => {
            return Err(value_err(format!(
                "{p}logits: {} columns, but the detector was fitted with {c} classes",
                z.dim().1
            )));
        }
        Some(z) => owned_f32(z),
        None if head_given => head.logits(emb.view()).map_err(core_err)?,
        None if needs.logits => {
            return Err(value_err(format!(
                "{p}logits: {who} needs logits: pass logits= (they cannot be computed: it was \
                 fitted without a head)"
            )));
        }
        None => Array2::zeros((n, c)),
    };
    Features::new(emb, logits, None).map_err(|e| value_err(format!("{p}{e}")))
}

/// A fitted detector (`oodkit.Detector.fit` returns it wrapped in `oodkit.FittedDetector`).
///
/// It keeps its fit inputs: pickling stores the detector and those inputs, and unpickling fits
/// again (the fit is deterministic, so the scores are bit-for-bit the same).
#[pyclass(module = "oodkit._oodkit", frozen)]
pub struct Fitted {
    spec: DetectorSpec,
    /// NegLabel's negatives (the side input of its fit).
    negatives: Option<Arc<ndarray::Array2<f32>>>,
    /// OOD validation features (GROOD's side input), kept for pickling.
    ood_val: Option<Features>,
    scorer: Box<dyn Scorer>,
    data: Features,
    head: Head,
    given: Given,
}

/// `fit(name, params_json, features, logits, labels, weight, bias, negatives, ood_val, threads)`.
#[pyfunction]
#[pyo3(signature = (name, params_json, features = None, logits = None, labels = None,
                    weight = None, bias = None, negatives = None, ood_val = None, threads = None))]
#[allow(clippy::too_many_arguments)]
pub fn fit(
    py: Python<'_>,
    name: &str,
    params_json: &str,
    features: Option<Mat<'_>>,
    logits: Option<Mat<'_>>,
    labels: Option<PyReadonlyArray1<'_, i64>>,
    weight: Option<Mat<'_>>,
    bias: Option<Vec1<'_>>,
    negatives: Option<Mat<'_>>,
    ood_val: Option<Mat<'_>>,
    threads: Option<i64>,
) -> PyResult<Fitted> {
    let threads = check_threads(threads)?;
    let (x, z) = (
        features.as_ref().map(Mat::view),
        logits.as_ref().map(Mat::view),
    );
    let (w, b) = (
        weight.as_ref().map(Mat::view),
        bias.as_ref().map(Vec1::view),
    );
    let neg = negatives.as_ref().map(Mat::view);
    let val = ood_val.as_ref().map(Mat::view);
    let labels = labels.map(|l| l.as_array().to_vec());
    if b.is_some() && w.is_none() {
        return Err(value_err("head: a bias without a weight"));
    }
    compute(py, threads, move || {
        let negatives = neg.as_ref().map(|n| Arc::new(owned_f32(n)));
        let spec = spec_from_json(name, params_json, negatives.is_some())?;
        let needs = spec.needs();
        if needs.negatives && neg.is_none() {
            return Err(value_err(format!(
                "negatives: detector '{name}' needs negative-label embeddings (m, d): \
                 Detector('{name}', negatives=...)"
            )));
        }
        if needs.ood_val && val.is_none() {
            return Err(value_err(format!(
                "ood_val: detector '{name}' needs OOD validation features (m, d): \
                 fit(..., ood_val=...)"
            )));
        }
        // Only the features are read (GROOD's noise prototype); the logits are a placeholder.
        let ood_val = val
            .as_ref()
            .map(|v| {
                let e = owned_f32(v);
                let z = ndarray::Array2::zeros((e.nrows(), 1));
                Features::new(e, z, None).map_err(core_err)
            })
            .transpose()?;
        let head = w.as_ref().map(|w| head_from(w, b.as_ref())).transpose()?;
        let who = format!("detector '{name}'");
        let (data, head, given) =
            fit_inputs("", &who, needs, x.as_ref(), z.as_ref(), labels, head)?;
        let scorer = spec
            .as_detector()
            .fit_with(
                &FitData::Memory(&data),
                &head,
                &SideInputs {
                    negatives: negatives.as_deref(),
                    ood_val: ood_val.as_ref(),
                },
            )
            .map_err(core_err)?;
        Ok(Fitted {
            spec,
            negatives,
            ood_val,
            scorer,
            data,
            head,
            given,
        })
    })
}

#[pymethods]
impl Fitted {
    /// Registry name of the detector.
    #[getter]
    fn name(&self) -> &'static str {
        self.spec.name()
    }

    /// Resolved parameters (a new dict).
    #[getter]
    fn params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        params_dict(py, &self.spec)
    }

    /// Feature dimension `d` of the fit data (0 when fitted on logits only).
    #[getter]
    fn n_features(&self) -> usize {
        if self.given.features || self.given.head {
            self.head.dim()
        } else {
            0
        }
    }

    /// Number of classes `c` (logit columns) of the fit data.
    #[getter]
    fn n_classes(&self) -> usize {
        if self.given.classes {
            self.head.num_classes()
        } else {
            0
        }
    }

    /// Number of fit samples.
    #[getter]
    fn n_fit(&self) -> usize {
        self.data.len()
    }

    /// Scores `(n,)` float32, higher = more in-distribution.
    #[pyo3(signature = (features = None, logits = None, threads = None))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        features: Option<Mat<'_>>,
        logits: Option<Mat<'_>>,
        threads: Option<i64>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let threads = check_threads(threads)?;
        let (x, z) = (
            features.as_ref().map(Mat::view),
            logits.as_ref().map(Mat::view),
        );
        let s = compute(py, threads, || {
            let who = format!("detector '{}'", self.spec.name());
            let f = score_inputs(
                "",
                &who,
                self.spec.needs(),
                x.as_ref(),
                z.as_ref(),
                &self.head,
                self.given.head,
            )?;
            self.scorer.score(&f).map_err(core_err)
        })?;
        Ok(s.into_pyarray(py))
    }

    /// What pickling stores: the detector and the given fit inputs (copies).
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("name", self.spec.name())?;
        d.set_item(
            "params_json",
            serde_json::Value::Object(self.spec.params()).to_string(),
        )?;
        let g = self.given;
        d.set_item(
            "features",
            g.features
                .then(|| self.data.embeddings.clone().into_pyarray(py)),
        )?;
        d.set_item(
            "logits",
            g.logits.then(|| self.data.logits.clone().into_pyarray(py)),
        )?;
        d.set_item(
            "labels",
            self.data
                .labels
                .as_ref()
                .map(|l| PyArray1::from_vec(py, l.clone())),
        )?;
        d.set_item(
            "weight",
            g.head.then(|| self.head.weight.clone().into_pyarray(py)),
        )?;
        d.set_item(
            "bias",
            g.head.then(|| self.head.bias.clone().into_pyarray(py)),
        )?;
        let neg = self.negatives.as_ref().map(|a| (**a).clone());
        d.set_item("negatives", neg.map(|a| a.into_pyarray(py)))?;
        let val = self.ood_val.as_ref().map(|f| f.embeddings.clone());
        d.set_item("ood_val", val.map(|a| a.into_pyarray(py)))?;
        Ok(d)
    }
}
