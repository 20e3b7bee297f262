"""oodkit.metrics against scikit-learn (and the reference formulas of the other conventions, as in
crates/ood-core/tests/data/metrics_sklearn.py) on random and heavily tied scores."""

import numpy as np
import pytest

import oodkit

skm = pytest.importorskip("sklearn.metrics")


def _labels(id_s, ood_s):
    s = np.concatenate([id_s, ood_s]).astype(np.float64)
    y_id = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))].astype(int)
    return s, y_id


def _first_tpr(y, score, drop):
    fpr, tpr, _ = skm.roc_curve(y, score, drop_intermediate=drop)
    return float(fpr[np.argmax(tpr >= 0.95)])


def _aupr(y, score):
    p, r, _ = skm.precision_recall_curve(y, score)
    return float(skm.auc(r, p))


def _hendrycks_fpr(id_s, ood_s, level=0.95):
    s, y = _labels(id_s, ood_s)
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    ends = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y, dtype=np.float64)[ends]
    fps = 1 + ends - tps
    recall = tps / tps[-1]
    last = int(np.searchsorted(tps, tps[-1]))
    rec = np.r_[recall[last::-1], 1.0]
    fp = np.r_[fps[last::-1], 0.0]
    return float(fp[int(np.argmin(np.abs(rec - level)))] / len(ood_s))


def sklearn_metrics(id_s, ood_s, convention):
    s, y_id = _labels(id_s, ood_s)
    y_ood = 1 - y_id
    auroc = float(skm.roc_auc_score(y_id, s))
    if convention == "openood":  # OpenOOD v1.5 compute_all_metrics
        return auroc, _first_tpr(y_ood, -s, True), _aupr(y_id, s), _aupr(y_ood, -s)
    if convention == "classic":
        return auroc, _first_tpr(y_id, s, False), _aupr(y_id, s), _aupr(y_ood, -s)
    if convention == "hendrycks":
        return (auroc, _hendrycks_fpr(id_s, ood_s),
                float(skm.average_precision_score(y_id, s)),
                float(skm.average_precision_score(y_ood, -s)))
    raise ValueError(convention)


def cases():
    rng = np.random.default_rng(7)
    yield "random f64", rng.normal(1.0, 1.0, 3000), rng.normal(0.0, 1.0, 2000)
    yield "random f32", rng.normal(1.0, 1.0, 3000).astype(np.float32), rng.normal(size=1500).astype(np.float32)
    yield "ties 0..9", rng.integers(0, 10, 4000).astype(np.float64), rng.integers(0, 7, 3000).astype(np.float64)
    yield "ties 3 values f32", rng.integers(0, 3, 500).astype(np.float32), rng.integers(0, 3, 700).astype(np.float32)
    yield "all equal", np.full(100, 0.5), np.full(80, 0.5)
    yield "separated", np.linspace(1, 2, 50), np.linspace(-1, 0, 60)
    yield "small", np.array([0.9, 0.1]), np.array([0.5])
    yield "f64-only ties", 1.0 + rng.integers(0, 4, 300) * 1e-12, 1.0 + rng.integers(0, 4, 200) * 1e-12


@pytest.mark.parametrize("convention", ["openood", "classic", "hendrycks"])
@pytest.mark.parametrize("case", list(cases()), ids=lambda c: c[0])
def test_equals_sklearn(case, convention):
    _, id_s, ood_s = case
    m = oodkit.metrics(id_s, ood_s, convention=convention)
    want = sklearn_metrics(id_s, ood_s, convention)
    got = (m["auroc"], m["fpr95"], m["aupr_in"], m["aupr_out"])
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert m["convention"] == convention


def test_knn_convention_runs_and_shares_auroc():
    rng = np.random.default_rng(3)
    a, b = rng.normal(1, 1, 500), rng.normal(0, 1, 400)
    aurocs = {c: oodkit.metrics(a, b, c)["auroc"] for c in oodkit.conventions()}
    assert set(aurocs) == {"openood", "classic", "hendrycks", "knn"}
    assert len(set(aurocs.values())) == 1


def test_inputs_of_any_layout_and_type():
    rng = np.random.default_rng(5)
    a, b = rng.normal(1, 1, 1000), rng.normal(0, 1, 800)
    want = oodkit.metrics(a, b)
    big = np.zeros(2000)
    big[::2] = a
    assert oodkit.metrics(big[::2], b) == want          # strided view
    assert oodkit.metrics(a.tolist(), list(b)) == want  # lists
    assert oodkit.metrics(a[::-1].copy()[::-1], b, threads=1) == want
    ints = oodkit.metrics(np.arange(10), np.arange(5) - 2)
    assert ints["auroc"] == pytest.approx(skm.roc_auc_score(np.r_[np.ones(10), np.zeros(5)],
                                                            np.r_[np.arange(10), np.arange(5) - 2]))
    # float32 scores are ranked in float32: the same numbers as their exact float64 widening.
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    assert oodkit.metrics(a32, b32) == oodkit.metrics(a32.astype(np.float64), b32.astype(np.float64))
    assert oodkit.metrics(a32, b32.astype(np.float64)) == oodkit.metrics(a32, b32)


def test_torch_scores():
    torch = pytest.importorskip("torch")
    a, b = torch.linspace(0, 1, 100), torch.linspace(-1, 0.5, 50)
    assert oodkit.metrics(a, b) == oodkit.metrics(a.numpy(), b.numpy())
