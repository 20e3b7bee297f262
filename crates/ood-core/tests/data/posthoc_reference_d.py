"""Reference scores for Relation, SSD, CARef, CADRef, LTS and OpenMax (det-d), on seeded random data.

Run from the repository root (writes posthoc_reference_d.json next to this file):

    /work/main/.venv/bin/python crates/ood-core/tests/data/posthoc_reference_d.py

Everything is recomputed here with NumPy (and scikit-learn for a cross-check) from the published
formulas, following OpenOOD's `relation` postprocessor (Neural Relation Graph), the SSD
authors' `eval_ssd.py` / `utils.py` (inspire-group/SSD) and the CADRef authors'
`ood_methods/CARef.py` / `CADRef.py` (LingAndZero/CADRef), the LTS authors' `lts.py`
(andrijazz/lts) and OpenOOD's `openmax` postprocessor (libMR's Weibull fit re-derived as the
maximum-likelihood estimate, solved with SciPy); `tests/posthoc_golden_d.rs` checks
oodkit against the JSON to 1e-4 relative. Inputs are rounded to 4 decimals so that the JSON holds
them exactly as float32.
"""

import json
import os

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp, softmax
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

rng = np.random.default_rng(20261208)
N_TRAIN, N_TEST, D, C = 300, 40, 16, 5


def r4(x):
    return np.round(np.asarray(x, dtype=np.float64), 4).astype(np.float32)


centres = rng.normal(0.0, 2.0, size=(C, D))
labels = np.arange(N_TRAIN) % C
rng.shuffle(labels)
train = r4(centres[labels] + rng.normal(0.0, 1.0, size=(N_TRAIN, D)) + 1.0)
test = r4(
    np.concatenate(
        [
            centres[rng.integers(0, C, 20)] + rng.normal(0.0, 1.0, size=(20, D)) + 1.0,
            rng.normal(0.0, 3.0, size=(20, D)),
        ]
    )
)
W = r4(rng.normal(0.0, 0.5, size=(C, D)))
b = r4(rng.normal(0.0, 0.5, size=C))
train_logits = r4(train.astype(np.float64) @ W.T.astype(np.float64) + b)
test_logits = r4(test.astype(np.float64) @ W.T.astype(np.float64) + b)

H = train.astype(np.float64)
T = test.astype(np.float64)
ZH = train_logits.astype(np.float64)
ZT = test_logits.astype(np.float64)

cases = []


def case(spec, scores):
    cases.append({"spec": spec, "scores": [float(f"{s:.9g}") for s in scores]})


# Relation (OpenOOD relation_postprocessor / Neural-Relation-Graph get_relation): features
# normalised by sqrt(||h||^2 + 1e-10), probabilities softmax(z); kernel
# rel = clamp(<f, f_t>, min=0) * <p, p_t>; edges with |rel| > thres kept;
# score = sum(sign(rel) * |rel|^pow).
# oodkit's `centre` (default) subtracts the mean score of the fit rows floor(i*N/m), i < m =
# min(N, 256), a constant shift; centre = false is OpenOOD's value.
def relation_raw(X, Z, pow_, thres):
    def normalize(x):
        return x / np.sqrt((x**2).sum(-1) + 1e-10)[:, None]

    f, ft = normalize(X), normalize(H)
    p, pt = softmax(Z, axis=1), softmax(ZH, axis=1)
    rel = np.clip(f @ ft.T, 0.0, None) * (p @ pt.T)
    # No edge may sit so close to the threshold that float32 rounding decides it (oodkit's
    # kernel, like OpenOOD's torch matmuls, is float32: errors of order 1e-7 here).
    margin = np.abs(rel - thres).min()
    assert margin > 2e-6, f"edge within {margin} of the threshold"
    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    rel32 = np.clip(f32(f) @ f32(ft).T, 0.0, None) * (f32(p) @ f32(pt).T)
    assert ((rel32 > thres) == (rel > thres)).all()
    mask = np.abs(rel) > thres
    rm = mask * rel
    return (np.sign(rm) * np.abs(rm) ** pow_).sum(-1)


def relation(pow_, thres, centre=True):
    s = relation_raw(T, ZT, pow_, thres)
    if centre:
        m = min(N_TRAIN, 256)
        rows = np.arange(m) * N_TRAIN // m
        s = s - relation_raw(H[rows], ZH[rows], pow_, thres).mean()
    return s


case({"name": "relation"}, relation(1, 0.03))
case({"name": "relation", "pow": 4.0}, relation(4, 0.03))
case({"name": "relation", "pow": 2.0, "threshold": 0.15}, relation(2, 0.15))
case({"name": "relation", "centre": False}, relation(1, 0.03, centre=False))
case({"name": "relation", "pow": 6.0, "centre": False}, relation(6, 0.03, centre=False))


# SSD (inspire-group/SSD eval_ssd.py get_eval_results + utils.get_scores_one_cluster /
# eval_ssd.get_scores_multi_cluster): normalise by ||h|| + 1e-10, standardise with the train mean
# and std (+ 1e-10), clusters (k-means, or the labels for a SupCE model), per-cluster mean and
# np.cov(bias=True) pseudo-inverted with np.linalg.pinv; the authors return the minimum distance
# (lower = ID); oodkit's score is its negation.
def splitmix64(seed):
    state = seed
    mask = (1 << 64) - 1

    def uniform():
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        return (z >> 11) * 2.0**-53

    return uniform


def kmeans(Y, k, seed, max_iter=100):
    # oodkit's documented deterministic k-means (k-means++ seeding from SplitMix64, then Lloyd).
    n = len(Y)
    u = splitmix64(seed)
    first = min(int(u() * n), n - 1)
    C = [Y[first].copy()]
    d2 = ((Y - Y[first]) ** 2).sum(1)
    for _ in range(1, k):
        target = u() * d2.sum()
        cum = np.cumsum(d2)
        above = np.nonzero(cum > target)[0]
        pick = above[0] if len(above) else np.nonzero(d2 > 0)[0][-1]
        C.append(Y[pick].copy())
        d2 = np.minimum(d2, ((Y - Y[pick]) ** 2).sum(1))
    C = np.array(C)

    def nearest(C):
        return np.argmin(((Y[:, None, :] - C[None, :, :]) ** 2).sum(-1), axis=1)

    assign = nearest(C)
    for _ in range(max_iter):
        for g in range(k):
            if (assign == g).any():
                C[g] = Y[assign == g].mean(0)
        nxt = nearest(C)
        if (nxt == assign).all():
            break
        assign = nxt
    return assign


def ssd_prepare():
    ftrain = H / (np.linalg.norm(H, axis=-1, keepdims=True) + 1e-10)
    ftest = T / (np.linalg.norm(T, axis=-1, keepdims=True) + 1e-10)
    m, s = np.mean(ftrain, axis=0, keepdims=True), np.std(ftrain, axis=0, keepdims=True)
    return (ftrain - m) / (s + 1e-10), (ftest - m) / (s + 1e-10)


def ssd_one_cluster():
    ftrain, ftest = ssd_prepare()
    mu = np.mean(ftrain, axis=0, keepdims=True)
    return -np.sum(
        (ftest - mu) * (np.linalg.pinv(np.cov(ftrain.T, bias=True)).dot((ftest - mu).T)).T,
        axis=-1,
    )


def ssd_multi_cluster(ypred):
    ftrain, ftest = ssd_prepare()
    xc = [ftrain[ypred == i] for i in np.unique(ypred)]
    for x in xc:  # well-conditioned: no pseudo-inverse cutoff comes into play
        ev = np.linalg.eigvalsh(np.cov(x.T, bias=True))
        assert ev.min() > 1e-3 * ev.max(), ev
    din = [
        np.sum(
            (ftest - np.mean(x, axis=0, keepdims=True))
            * (
                np.linalg.pinv(np.cov(x.T, bias=True)).dot(
                    (ftest - np.mean(x, axis=0, keepdims=True)).T
                )
            ).T,
            axis=-1,
        )
        for x in xc
    ]
    return -np.min(din, axis=0)


case({"name": "ssd"}, ssd_one_cluster())
std_train, _ = ssd_prepare()
k5 = kmeans(std_train, 5, 0)
# Independent check of the clustering: scikit-learn's k-means finds the same partition.
sk5 = KMeans(5, n_init=10, random_state=0).fit_predict(std_train)
assert adjusted_rand_score(k5, sk5) == 1.0, adjusted_rand_score(k5, sk5)
assert adjusted_rand_score(k5, labels) == 1.0, adjusted_rand_score(k5, labels)
case({"name": "ssd", "clusters": 5}, ssd_multi_cluster(k5))
k3 = kmeans(std_train, 3, 7)
print("k=3 cluster sizes", np.bincount(k3))
case({"name": "ssd", "clusters": 3, "seed": 7}, ssd_multi_cluster(k3))
case({"name": "ssd", "labels": True}, ssd_multi_cluster(labels))


# normalize = false, one cluster: OpenOOD's ssd postprocessor (its MDS with one class on the raw
# features: EmpiricalCovariance = np.cov(bias=True), pinv, -distance).
def openood_ssd():
    mu = H.mean(0)
    prec = np.linalg.pinv(np.cov(H.T, bias=True))
    c = T - mu
    return -np.einsum("ij,jk,ik->i", c, prec, c)


case({"name": "ssd", "normalize": False}, openood_ssd())


# CARef / CADRef (LingAndZero/CADRef ood_methods/CARef.py, CADRef.py, utils/get_stat.py):
# train features grouped by their *predicted* class (argmax of the logits), class means; CARef
# = -||mu_c - h||_1 / ||h||_1; CADRef splits dist = h - mu_c by sign(w_c) into the positive and
# negative parts, each / ||h||_1, and returns -(ep / S(z) + en / mean_train S).
def class_means_by_prediction():
    pred = ZH.argmax(1)
    return np.stack([H[pred == c].mean(0) for c in range(C)])


def caref():
    tm = class_means_by_prediction()[ZT.argmax(1)]
    return -np.abs(tm - T).sum(1) / np.abs(T).sum(1)


def logit_score(z, method):
    if method == "max_logit":
        return z.max(1)
    if method == "energy":
        return logsumexp(z, axis=1)
    p = softmax(z, axis=1)
    if method == "msp":
        return p.max(1)
    # gen (the authors' gen(): M = C // 10, at least 10; gamma 0.1; 1 / scores)
    m = max(z.shape[1] // 10, 10)
    top = np.sort(p, axis=1)[:, -m:]
    return 1.0 / np.sum(top**0.1 * (1 - top) ** 0.1, axis=1)


def cadref(method):
    W64 = W.astype(np.float64)
    cls = ZT.argmax(1)
    dist = T - class_means_by_prediction()[cls]
    sg = np.sign(W64[cls])
    ep = np.clip(dist * sg, 0, None).sum(1) / np.abs(T).sum(1)
    en = np.clip(dist * -sg, 0, None).sum(1) / np.abs(T).sum(1)
    global_mean = logit_score(ZH, method).mean()
    return -(ep / logit_score(ZT, method) + en / global_mean)


case({"name": "caref"}, caref())
case({"name": "cadref"}, cadref("energy"))
for method in ["max_logit", "msp", "gen"]:
    case({"name": "cadref", "logit_method": method}, cadref(method))


# LTS (andrijazz/lts lts.py + ood_eval.get_energy_score): x = relu(h); s1 = x.sum(1);
# k = n - int(np.round(n * p / 100)); s2 = sum of the top-k of x; s = (s1 / s2) ** 2;
# score = logsumexp(logits * s).
def lts(p):
    x = np.maximum(T, 0.0)
    n = x.shape[1]
    k = n - int(np.round(n * p / 100.0))
    s1 = x.sum(1)
    s2 = -np.sort(-x, axis=1)[:, :k].sum(1)
    assert (s2 > 0).all()
    return logsumexp(ZT * ((s1 / s2) ** 2)[:, None], axis=1)


case({"name": "lts"}, lts(95))
case({"name": "lts", "percentile": 65.0}, lts(65))
case({"name": "lts", "percentile": 80.0}, lts(80))


# OpenMax (OpenOOD openmax_postprocessor + libMR): reads only logits and labels. The fixture's
# random head leaves classes without a correctly predicted training row, so OpenMax gets its own
# logits (the "openmax" section): a head aligned with the class centres, same train/test rows.
# MAV_c = mean logits of the train rows labelled and predicted c; euclidean distances to it; tail
# = the 20 largest; libMR FitHigh: x = tail + 10000 - min(tail), two-parameter Weibull MLE (here
# solved for the shape k with brentq: sum x^k ln x / sum x^k - 1/k - mean ln x = 0, then
# lambda = mean(x^k)^(1/k)); w_score(d) = 1 - exp(-((d + 10000 - min tail) / lambda)^k).
# Score: omega = (alpha + 1 - i) / alpha for the top-alpha logits, modified = z (1 - w omega),
# unknown = sum(z - modified); OpenOOD's conf = -P(unknown); oodkit's default (log = true) is
# logsumexp(modified) - unknown.
W_om = r4(
    centres / np.linalg.norm(centres, axis=1, keepdims=True)
    + 0.2 * np.random.default_rng(5).normal(0.0, 0.5, size=(C, D))
)
om_train_logits = r4(H @ W_om.T.astype(np.float64))
om_test_logits = r4(T @ W_om.T.astype(np.float64))


def weibull_fit_high(tail):
    small = tail.min()
    lx = np.log(tail + 10000.0 - small)
    top, rng_ = lx.max(), lx.max() - lx.min()

    def g(k):
        w = np.exp(k * (lx - top))
        return (w * lx).sum() / w.sum() - 1.0 / k - lx.mean()

    k = brentq(g, 1.0 / rng_, 1e12 / rng_, xtol=1e-300, rtol=1e-15, maxiter=1000)
    log_lam = top + np.log(np.mean(np.exp(k * (lx - top)))) / k
    return small, k, log_lam


def openmax(tailsize, alpha, log):
    zh, zt = om_train_logits.astype(np.float64), om_test_logits.astype(np.float64)
    pred = zh.argmax(1)
    models = []
    for c in range(C):
        rows = zh[(pred == c) & (labels == c)]
        assert len(rows) >= 2
        mav = rows.mean(0)
        dist = np.linalg.norm(rows - mav, axis=1)
        models.append((mav, weibull_fit_high(np.sort(dist)[-tailsize:])))
    out = []
    for z in zt:
        ranked = z.argsort()[::-1][:alpha]
        omega = np.zeros(C)
        omega[ranked] = [(alpha + 1 - i) / alpha for i in range(1, alpha + 1)][: len(ranked)]
        mod = np.empty(C)
        for c, (mav, (small, k, log_lam)) in enumerate(models):
            d = np.linalg.norm(z - mav)
            w = -np.expm1(-np.exp(k * (np.log(d + 10000.0 - small) - log_lam)))
            mod[c] = z[c] * (1 - w * omega[c])
        unknown = (z - mod).sum()
        if log:
            out.append(logsumexp(mod) - unknown)
        else:
            out.append(-np.exp(unknown) / (np.exp(mod).sum() + np.exp(unknown)))
    return np.array(out)


om_cases = []
for spec, args in [
    ({"name": "openmax"}, (20, 3, True)),
    ({"name": "openmax", "log": False}, (20, 3, False)),
    ({"name": "openmax", "tailsize": 10, "alpha": 2}, (10, 2, True)),
]:
    om_cases.append({"spec": spec, "scores": [float(f"{s:.9g}") for s in openmax(*args)]})


def j4(x):  # the exact 4-decimal values the float32 inputs were rounded from
    return np.round(x.astype(np.float64), 4).tolist()


out = {
    "generator": "crates/ood-core/tests/data/posthoc_reference_d.py",
    "train": {
        "features": j4(train),
        "logits": j4(train_logits),
        "labels": labels.tolist(),
    },
    "test": {"features": j4(test), "logits": j4(test_logits)},
    "head": {"weight": j4(W), "bias": j4(b)},
    "cases": cases,
    "openmax": {
        "train_logits": j4(om_train_logits),
        "test_logits": j4(om_test_logits),
        "cases": om_cases,
    },
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "posthoc_reference_d.json")
with open(path, "w") as fh:
    json.dump(out, fh, separators=(",", ":"))
    fh.write("\n")
print(f"wrote {len(cases)} cases to {path}")
