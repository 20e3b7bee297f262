"""oodkit: post-hoc out-of-distribution detection on cached features, with a Rust core.

The same detectors, metrics, feature files and HTML report as the ``ood`` command line tool, from
Python. Scores are always **higher = more in-distribution**.

>>> import numpy as np, oodkit
>>> rng = np.random.default_rng(0)
>>> train = rng.normal(3.0, 1.0, size=(500, 16))            # ID features
>>> det = oodkit.Detector("knn", k=10).fit(train)
>>> s_id = det.score(rng.normal(3.0, 1.0, size=(100, 16)))   # more ID
>>> s_ood = det.score(rng.normal(-3.0, 1.0, size=(100, 16))) # something else
>>> oodkit.metrics(s_id, s_ood)["auroc"]
1.0

Arrays may be float32 or float64 NumPy arrays in any memory order, or anything NumPy can convert
(lists, CPU ``torch.Tensor``); features are used as float32, as ``ood`` does. The GIL is
released while fitting, scoring and computing metrics; ``threads=`` picks the number of worker
threads (default: one per core). ``import oodkit`` never imports torch or pandas.
"""

from __future__ import annotations

import json as _json
import os as _os
import warnings as _warnings
from collections.abc import Mapping as _Mapping
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _oodkit

__version__: str = _oodkit.__version__

__all__ = [
    "Detector",
    "FittedDetector",
    "EvaluationResult",
    "metrics",
    "conventions",
    "detectors",
    "evaluate",
    "load_features",
    "save_features",
    "load_head",
    "save_head",
    "head_logits",
    "load_negatives",
    "save_negatives",
    "__version__",
]

ArrayLike = Any
PathLike = Union[str, "_os.PathLike[str]"]
#: A classifier head: ``(weight, bias)``, a weight alone, a head file, a mapping with ``weight``
#: and ``bias``, or an object with ``.weight``/``.bias`` (e.g. ``torch.nn.Linear``).
HeadLike = Any


# --------------------------------------------------------------------------------------------
# Argument conversion: every error names the argument.


def _asarray(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception as e:  # e.g. a torch tensor that requires grad or lives on a GPU
        hint = ""
        if hasattr(x, "detach") and hasattr(x, "cpu"):
            hint = " (for a torch tensor: x.detach().cpu())"
        raise TypeError(
            f"{name}: cannot convert {type(x).__name__} to a NumPy array: {e}{hint}"
        ) from e


def _floats(x: ArrayLike, name: str, ndim: int, f32: bool = False) -> np.ndarray:
    """A float32/float64 NumPy array of rank ``ndim`` (float32 when ``f32``), not empty."""
    a = _asarray(x, name)
    kind = a.dtype.kind
    if kind == "b" or kind not in "iuf":
        raise TypeError(
            f"{name}: expected a float32 or float64 array, got dtype {a.dtype}"
        )
    if a.ndim != ndim:
        raise ValueError(
            f"{name}: expected a {ndim}-D array, got shape {tuple(a.shape)}"
        )
    if a.size == 0 or a.shape[0] == 0:
        raise ValueError(f"{name}: empty (shape {tuple(a.shape)})")
    if f32:
        target = np.dtype(np.float32)
    elif kind == "f" and a.dtype.itemsize <= 4:
        target = np.dtype(np.float32)
    else:
        target = np.dtype(np.float64)
    if a.dtype != target:  # also fixes non-native byte order
        a = a.astype(target)
    return a


def _labels(y: ArrayLike, name: str = "labels") -> Optional[np.ndarray]:
    if y is None:
        return None
    a = _asarray(y, name)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class labels, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {tuple(a.shape)}")
    return a.astype(np.int64, copy=False)


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, _os.PathLike))


def _head(head: HeadLike) -> Optional[Tuple[np.ndarray, Optional[np.ndarray]]]:
    """``(weight, bias)`` arrays from any accepted head form (None stays None)."""
    if head is None:
        return None
    if _is_path(head):
        return load_head(head)
    if isinstance(head, _Mapping):
        w, b = head.get("weight"), head.get("bias")
    elif isinstance(head, tuple) and len(head) == 2:
        w, b = head
    elif hasattr(head, "weight") and not isinstance(head, np.ndarray):
        w, b = head.weight, getattr(head, "bias", None)
        w = w.detach() if hasattr(w, "detach") else w
        b = b.detach() if (b is not None and hasattr(b, "detach")) else b
    else:
        w, b = head, None
    if w is None:
        raise TypeError("head: no weight found")
    w = _floats(w.cpu() if hasattr(w, "cpu") else w, "head weight", 2)
    if b is not None:
        b = _floats(b.cpu() if hasattr(b, "cpu") else b, "head bias", 1)
    return w, b


def _param_json(detector: str, key: str, value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    try:
        return _json.dumps(value)
    except TypeError:
        raise TypeError(
            f"detector '{detector}': parameter {key}={value!r}: expected a number, bool, "
            f"string, list or None, got {type(value).__name__}"
        ) from None


def _check_threads(threads: Optional[int]) -> Optional[int]:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads: expected an int or None, got {type(threads).__name__}")
    if threads < 1:
        raise ValueError(f"threads: must be >= 1, got {threads}")
    return int(threads)


# --------------------------------------------------------------------------------------------
# Metrics


def metrics(
    id_scores: ArrayLike,
    ood_scores: ArrayLike,
    convention: str = "openood",
    *,
    threads: Optional[int] = None,
) -> Dict[str, Any]:
    """AUROC, FPR@95, AUPR-In and AUPR-Out of ID scores against OOD scores (higher = more ID).

    Returns ``{"auroc", "fpr95", "aupr_in", "aupr_out", "convention"}`` with fractions in [0, 1].
    ``convention`` picks the FPR@95/AUPR definitions (``oodkit.conventions()``): ``"openood"``
    (OpenOOD v1.5: OOD positive, scikit-learn's ``roc_curve`` drop step, trapezoidal AUPR),
    ``"classic"``, ``"hendrycks"`` or ``"knn"``; AUROC is the same in all of them. Exact: ties
    count one half, float32 scores are ranked in float32 and float64 in float64. Contiguous
    arrays are read in place (no copy). NaN, infinity or an empty array raise ``ValueError``.
    """
    if not isinstance(convention, str):
        raise TypeError(f"convention: expected a string, got {type(convention).__name__}")
    a = _floats(id_scores, "id_scores", 1)
    b = _floats(ood_scores, "ood_scores", 1)
    return _oodkit.metrics(a, b, convention, _check_threads(threads))


def conventions() -> Dict[str, str]:
    """``{name: description}`` of the metric conventions."""
    return _oodkit.conventions()


def detectors() -> List[Dict[str, Any]]:
    """Every detector: ``name``, ``about``, ``params`` (defaults), ``needs`` (which of
    ``features``, ``logits``, ``head``, ``labels``, ``negatives``, ``ood_val``, ``network`` it
    reads; ``ood_val``: OOD validation features, which ``evaluate`` passes from its sweep pair),
    ``family`` (``logits``, ``features``, ``network``: probe tensors that ``ood extract --with``
    computes, not available from arrays; ``vision-language``), ``fits_on_val`` (OpenOOD fits it
    on ID validation data) and ``sweep`` (its parameter-search grid).
    ``pandas.DataFrame(oodkit.detectors())`` makes it a table."""
    return _oodkit.detectors()


def head_logits(features: ArrayLike, head: HeadLike) -> np.ndarray:
    """``features @ weight.T + bias`` in float32, computed as the core computes logits."""
    h = _head(head)
    return _oodkit.head_logits(_floats(features, "features", 2), h[0], h[1])


# --------------------------------------------------------------------------------------------
# Detectors


def _data_args(features, logits, labels, name: str = "features"):
    """Lets ``features`` be a mapping from ``load_features`` (or ``oodkit.torch.extract``)."""
    if isinstance(features, _Mapping):
        d = features
        features = d.get("features")
        logits = d.get("logits") if logits is None else logits
        labels = d.get("labels") if labels is None else labels
    return features, logits, labels


class Detector:
    """A post-hoc OOD detector: a registry name and hyper-parameters (``oodkit.detectors()``).

    ``Detector("knn", k=50)``; unknown names, unknown parameters and ill-typed values raise
    ``ValueError`` listing what is valid. ``neg_label`` takes its negative-label embeddings as
    ``negatives=`` (an ``(m, d)`` array). :meth:`fit` returns a :class:`FittedDetector`.
    """

    def __init__(self, name: str, /, **params: Any) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name: expected a detector name (str), got {type(name).__name__}")
        negatives = params.pop("negatives", None)
        if _is_path(negatives):
            negatives = load_negatives(negatives)
        pairs = [(k, _param_json(name, k, v)) for k, v in params.items()]
        self._name, self._params_json = _oodkit.resolve_detector(name, pairs)
        self._negatives = (
            None if negatives is None else _floats(negatives, "negatives", 2, f32=True)
        )
        if self._negatives is not None and self._name != "neg_label":
            raise ValueError(f"negatives: only neg_label uses negative labels, not '{name}'")

    @property
    def name(self) -> str:
        """Registry name."""
        return self._name

    @property
    def params(self) -> Dict[str, Any]:
        """Resolved parameters (defaults filled in)."""
        return _json.loads(self._params_json)

    @property
    def needs(self) -> List[str]:
        """Which inputs the detector reads (see ``oodkit.detectors()``)."""
        return next(d["needs"] for d in _oodkit.detectors() if d["name"] == self._name)

    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        """scikit-learn style: the parameters (``negatives`` included for ``neg_label``)."""
        p = self.params
        if self._negatives is not None:
            p["negatives"] = self._negatives
        return p

    def fit(
        self,
        features: ArrayLike = None,
        logits: ArrayLike = None,
        labels: ArrayLike = None,
        head: HeadLike = None,
        *,
        ood_val: ArrayLike = None,
        threads: Optional[int] = None,
    ) -> "FittedDetector":
        """Fits on in-distribution data and returns the fitted detector.

        ``features`` ``(n, d)``: penultimate features (or a mapping with ``features``, ``logits``,
        ``labels``, as :func:`load_features` returns). ``logits`` ``(n, c)``: computed from
        ``head`` when not given. ``labels`` ``(n,)`` integers: for detectors that need them
        (mahalanobis, rmds, she). ``head``: the classifier's last layer ``(weight (c, d),
        bias (c))`` (or a head file, or a ``torch.nn.Linear``), needed by detectors that use its
        weights (react, ash, scale, dice, fdbd, vim, residual, mcm, neg_label). Inputs a detector
        does not read may be left out; one it reads raises ``ValueError`` naming it.
        ``ood_val`` ``(m, d)``: OOD validation features (or a mapping with ``features``), the side
        input of ``grood`` (its noise prototype); other detectors ignore it.
        """
        features, logits, labels = _data_args(features, logits, labels)
        if ood_val is not None:
            ood_val = _floats(_data_args(ood_val, None, None)[0], "ood_val", 2)
        x = None if features is None else _floats(features, "features", 2)
        z = None if logits is None else _floats(logits, "logits", 2)
        y = _labels(labels)
        h = _head(head)
        native = _oodkit.fit(
            self._name,
            self._params_json,
            x,
            z,
            y,
            None if h is None else h[0],
            None if h is None else h[1],
            self._negatives,
            ood_val,
            _check_threads(threads),
        )
        return FittedDetector(self, native)

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.params.items())
        if self._negatives is not None:
            args += f", negatives=<{self._negatives.shape[0]}x{self._negatives.shape[1]}>"
        return f"Detector({self._name!r}{args})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detector):
            return NotImplemented
        same_neg = (self._negatives is None and other._negatives is None) or (
            self._negatives is not None
            and other._negatives is not None
            and np.array_equal(self._negatives, other._negatives)
        )
        return self._name == other._name and self.params == other.params and same_neg

    __hash__ = None  # type: ignore[assignment]


def _refit(detector: Detector, state: Dict[str, Any]) -> "FittedDetector":
    """Unpickling: fits ``detector`` again on the stored inputs (deterministic, bit-for-bit)."""
    native = _oodkit.fit(
        detector._name,
        detector._params_json,
        state["features"],
        state["logits"],
        state["labels"],
        state["weight"],
        state["bias"],
        detector._negatives,
        state.get("ood_val"),
        None,
    )
    return FittedDetector(detector, native)


class FittedDetector:
    """A fitted detector: :meth:`score` maps features to scores, higher = more in-distribution.

    Pickles (and deep-copies) by storing the detector with its fit inputs; unpickling fits again,
    which is deterministic (also across thread counts), so scores after a round trip are
    bit-for-bit the same. The pickle is as large as the fit data, and the fitted detector keeps a
    float32 copy of the fit data for it.
    """

    def __init__(self, detector: Detector, native: Any) -> None:
        self._detector = detector
        self._native = native

    @property
    def detector(self) -> Detector:
        """The unfitted detector (name and parameters)."""
        return self._detector

    @property
    def name(self) -> str:
        """Registry name."""
        return self._detector.name

    @property
    def params(self) -> Dict[str, Any]:
        """Resolved parameters."""
        return self._detector.params

    @property
    def n_features(self) -> int:
        """Feature dimension ``d`` seen in fit (0 when fitted without features)."""
        return self._native.n_features

    @property
    def n_classes(self) -> int:
        """Number of classes ``c`` seen in fit."""
        return self._native.n_classes

    def score(
        self,
        features: ArrayLike = None,
        logits: ArrayLike = None,
        *,
        threads: Optional[int] = None,
    ) -> np.ndarray:
        """Scores ``(n,)`` float32, higher = more in-distribution.

        ``features`` ``(n, d)`` (or a mapping with ``features``/``logits``); ``logits`` ``(n, c)``
        are computed from the head given to :meth:`Detector.fit` when not given.
        """
        features, logits, _ = _data_args(features, logits, None)
        x = None if features is None else _floats(features, "features", 2)
        z = None if logits is None else _floats(logits, "logits", 2)
        return self._native.score(x, z, _check_threads(threads))

    def __reduce__(self):
        return (_refit, (self._detector, self._native.state()))

    def __repr__(self) -> str:
        return f"FittedDetector({self._detector!r}, n_fit={self._native.n_fit})"


# --------------------------------------------------------------------------------------------
# Feature files


def load_features(path: PathLike) -> Dict[str, Any]:
    """Reads a feature file (safetensors: ``features`` (n, d) f32, ``logits`` (n, c) f32,
    optional ``labels`` (n) i64, string metadata) into ``{"features", "logits", "labels",
    "metadata"}``; ``labels`` is None when the file has none."""
    if not _is_path(path):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    x, z, y, meta = _oodkit.load_features(_os.fspath(path))
    return {"features": x, "logits": z, "labels": y, "metadata": meta}


def save_features(
    path: PathLike,
    features: ArrayLike,
    logits: ArrayLike = None,
    labels: ArrayLike = None,
    *,
    head: HeadLike = None,
    metadata: Optional[Dict[str, str]] = None,
) -> None:
    """Writes a feature file in the format of ``ood extract`` (atomically). ``features`` may be a
    mapping as :func:`load_features` returns; ``logits`` are computed from ``head`` when not
    given; ``metadata`` values are written as strings."""
    if not _is_path(path):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    if isinstance(features, _Mapping):
        metadata = features.get("metadata") if metadata is None else metadata
    features, logits, labels = _data_args(features, logits, labels)
    x = _floats(features, "features", 2)
    if logits is None:
        if head is None:
            raise ValueError("logits: give logits= or head= to compute them")
        z = head_logits(x, head)
    else:
        z = _floats(logits, "logits", 2)
    meta = None if metadata is None else [(str(k), str(v)) for k, v in metadata.items()]
    _oodkit.save_features(_os.fspath(path), x, z, _labels(labels), meta)


def load_head(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Reads a head file: ``(weight (c, d), bias (c))`` float32."""
    if not _is_path(path):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    return _oodkit.load_head(_os.fspath(path))


def save_head(path: PathLike, weight: ArrayLike, bias: ArrayLike = None) -> None:
    """Writes a head file (``weight`` (c, d), ``bias`` (c), zeros when not given)."""
    if not _is_path(path):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    w = _floats(weight, "weight", 2)
    b = np.zeros(w.shape[0], np.float32) if bias is None else _floats(bias, "bias", 1)
    _oodkit.save_head(_os.fspath(path), w, b)


def load_negatives(path: PathLike) -> np.ndarray:
    """Reads ``neg_label``'s negative-label embeddings ``(m, d)`` (the ``negatives`` tensor of a
    safetensors file, as ``ood neglabel mine`` writes)."""
    if not _is_path(path):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    return _oodkit.load_negatives(_os.fspath(path))


def save_negatives(path: PathLike, negatives: ArrayLike) -> None:
    """Writes negative-label embeddings ``(m, d)`` in the format :func:`load_negatives` reads."""
    if not _is_path(path):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    _oodkit.save_negatives(_os.fspath(path), _floats(negatives, "negatives", 2, f32=True))


# --------------------------------------------------------------------------------------------
# Evaluation


def _set(x: Any, name: str):
    """A data set for ``evaluate``: a path, or ``(features, logits, labels)`` arrays."""
    if x is None:
        raise ValueError(f"{name}: missing")
    if _is_path(x):
        return _os.fspath(x)
    if isinstance(x, _Mapping):
        unknown = set(x) - {"features", "logits", "labels", "metadata"}
        if unknown:
            raise ValueError(
                f"{name}: unknown keys {sorted(unknown)} (expected features, logits, labels)"
            )
        f, z, y = x.get("features"), x.get("logits"), x.get("labels")
    elif isinstance(x, tuple):
        if not 1 <= len(x) <= 3:
            raise ValueError(f"{name}: expected (features, logits, labels), got {len(x)} items")
        f, z, y = (tuple(x) + (None, None))[:3]
    else:
        f, z, y = x, None, None
    if f is None and z is None:
        raise ValueError(f"{name}: needs features or logits")
    return (
        None if f is None else _floats(f, f"{name}: features", 2),
        None if z is None else _floats(z, f"{name}: logits", 2),
        _labels(y, f"{name}: labels"),
    )


def _is_set(x: Any) -> bool:
    return not isinstance(x, _Mapping) or bool({"features", "logits"} & set(x))


def _ood_sets(ood: Any) -> List[Tuple[str, Optional[str], Any]]:
    if not isinstance(ood, _Mapping) or not ood:
        raise TypeError(
            "ood: expected a non-empty dict, e.g. {'near': {'tin': ...}, 'far': {'mnist': ...}} "
            "or {'mnist': ...}"
        )
    out = []
    for key, value in ood.items():
        if key in ("near", "far") and not _is_set(value):
            for name, s in value.items():
                out.append((str(name), key, _set(s, f"ood['{key}']['{name}']")))
        else:
            out.append((str(key), None, _set(value, f"ood['{key}']")))
    return out


def _detector_list(detectors: Any, negatives: Any) -> List[Detector]:
    if isinstance(detectors, (str, Detector)) or not isinstance(detectors, (_Mapping, Sequence)):
        detectors = [detectors]
    if isinstance(detectors, _Mapping):
        items = [Detector(n, **(p or {})) for n, p in detectors.items()]
    else:
        items = []
        for d in detectors:
            if isinstance(d, Detector):
                items.append(d)
            elif isinstance(d, str) and d.strip() == "all":
                # Network detectors (odin, iodin) score probe tensors that only `ood extract
                # --with` computes; "all" means the detectors that arrays can feed.
                items.extend(
                    Detector(x["name"])
                    for x in _oodkit.detectors()
                    if (x["name"] != "neg_label" or negatives is not None)
                    and x["family"] != "network"
                )
            elif isinstance(d, str):
                items.extend(Detector(n.strip()) for n in d.split(",") if n.strip())
            else:
                raise TypeError(
                    f"detectors: expected names, Detector objects or 'all', got {type(d).__name__}"
                )
    if not items:
        raise ValueError("detectors: empty")
    return items


class EvaluationResult:
    """The result of :func:`evaluate`: metric rows, scores and the ``ood eval`` reports."""

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def rows(self) -> List[Dict[str, Any]]:
        """One dict per (detector, dataset) plus the near/far mean rows (``is_mean``); metrics are
        fractions."""
        return self._native.rows()

    @property
    def table(self) -> Any:
        """The rows as a pandas DataFrame when pandas is installed, else a list of dicts."""
        rows = self.rows
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows)

    @property
    def id_accuracy(self) -> Optional[float]:
        """Classifier accuracy on the ID test set (when it has labels)."""
        return self._native.id_accuracy

    @property
    def convention(self) -> str:
        """The metric convention."""
        return self._native.convention

    @property
    def detectors(self) -> List[Tuple[str, Dict[str, Any]]]:
        """The detectors as run (after the parameter search, when one ran)."""
        return self._native.detectors()

    @property
    def scores(self) -> Dict[str, Dict[str, Any]]:
        """``{detector: {"id": array, "ood": {set: array}}}``."""
        return self._native.scores()

    @property
    def config(self) -> Dict[str, Any]:
        """The resolved configuration: detectors, sweep outcomes, input shapes and hashes."""
        return _json.loads(self._native.config_json())

    @property
    def warnings(self) -> List[str]:
        """Warnings of the run (also issued with :mod:`warnings`)."""
        return self._native.warnings

    def to_json(self, path: Optional[PathLike] = None) -> str:
        """The JSON result (``ood eval``'s ``results.json``); written to ``path`` when given."""
        text = self._native.to_json()
        if path is not None:
            _oodkit.write_text_atomic(_os.fspath(path), text)
        return text

    def to_csv(self, path: Optional[PathLike] = None) -> str:
        """The CSV table (``results.csv``); written to ``path`` when given."""
        text = self._native.to_csv()
        if path is not None:
            _oodkit.write_text_atomic(_os.fspath(path), text)
        return text

    def to_html(self, path: Optional[PathLike] = None) -> str:
        """The self-contained HTML report of ``ood eval`` (ranked overview, ROC curves,
        histograms, every metric, the configuration). Written to ``path`` when given; returns
        the HTML."""
        text = self._native.to_html()
        if path is not None:
            _oodkit.write_text_atomic(_os.fspath(path), text)
        return text

    def __str__(self) -> str:
        return self._native.text_table()

    def __repr__(self) -> str:
        n = len({r["detector"] for r in self.rows})
        return f"<EvaluationResult: {n} detectors, convention {self.convention}>"


def evaluate(
    fit: Any,
    id: Any,
    ood: Any,
    head: HeadLike = None,
    *,
    detectors: Any = "all",
    fit_val: Any = None,
    negatives: ArrayLike = None,
    convention: str = "openood",
    sweep: bool = False,
    val_id: Any = None,
    val_ood: Any = None,
    threads: Optional[int] = None,
    title: str = "oodkit evaluation",
) -> EvaluationResult:
    """``ood eval`` from Python: fit every detector once on ``fit``, score ``id`` and every OOD set,
    compute the metrics with OpenOOD-style near/far means (unweighted over sets).

    Data sets (``fit``, ``id``, each OOD set, ``fit_val``, ``val_id``, ``val_ood``) are feature file
    paths, mappings ``{"features", "logits", "labels"}`` (what :func:`load_features` and
    ``oodkit.torch.extract`` return), ``(features, logits, labels)`` tuples or a features array.
    ``ood``: ``{"near": {name: set}, "far": {name: set}}``, or ``{name: set}`` for ungrouped sets.
    ``head``: ``(weight, bias)``, a head file, or a ``torch.nn.Linear``. ``detectors``: ``"all"``
    (every detector; ``neg_label`` only with ``negatives``), comma-separated names, a list of
    names or :class:`Detector` objects, or ``{name: {param: value}}``. ``fit_val``: ID validation
    data for the detectors OpenOOD fits on it (react, klm, residual). ``sweep=True`` runs OpenOOD's
    parameter search on ``val_id`` vs ``val_ood`` first; ``val_ood`` is then also what ``grood``
    averages its noise prototype from (without it, ``grood`` is reported skipped unless given
    ``noise="class_mean"``).
    """
    threads = _check_threads(threads)
    if not isinstance(convention, str):
        raise TypeError(f"convention: expected a string, got {type(convention).__name__}")
    if _is_path(negatives):
        negatives = load_negatives(negatives)
    neg = None if negatives is None else _floats(negatives, "negatives", 2, f32=True)
    items = _detector_list(detectors, neg)
    if neg is None:  # Detector("neg_label", negatives=...) in the list brings its own
        neg = next((d._negatives for d in items if d._negatives is not None), None)
    dets = [(d.name, d._params_json) for d in items]
    if _is_path(head):
        h: Any = _os.fspath(head)
    else:
        h = _head(head)
    sw = None
    if sweep:
        if val_id is None or val_ood is None:
            raise ValueError("sweep: the parameter search needs val_id= and val_ood=")
        sw = (_set(val_id, "val_id"), _set(val_ood, "val_ood"))
    native = _oodkit.evaluate(
        _set(fit, "fit"),
        _set(id, "id"),
        _ood_sets(ood),
        dets,
        h,
        None if fit_val is None else _set(fit_val, "fit_val"),
        neg,
        convention,
        sw,
        threads,
        title,
    )
    result = EvaluationResult(native)
    for w in result.warnings:
        _warnings.warn(w, stacklevel=2)
    return result


def __getattr__(name: str) -> Any:
    # `oodkit.torch` is imported on first use; it imports torch only when its functions run.
    if name == "torch":
        import importlib

        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'oodkit' has no attribute {name!r}")
