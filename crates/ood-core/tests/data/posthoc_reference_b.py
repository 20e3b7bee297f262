"""Reference scores for the statistics / nearest-neighbour detectors (det-b), on seeded random data.

Run from the repository root (writes posthoc_reference_b.json next to this file):

    /work/main/.venv/bin/python crates/ood-core/tests/data/posthoc_reference_b.py

Everything is recomputed here from the published formulas with NumPy, scikit-learn and faiss-cpu,
following the OpenOOD postprocessors (knn, mds, rmds, vim, residual, nnguide) and ReweightOOD's
scorer; `tests/posthoc_golden_b.rs` checks oodkit against the JSON to 1e-4 relative.
Inputs are rounded to 4 decimals so that the JSON holds them exactly as float32.
"""

import json
import os

import faiss
import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp
from sklearn.covariance import EmpiricalCovariance

rng = np.random.default_rng(20261123)
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
Z = train_logits.astype(np.float64)
ZT = test_logits.astype(np.float64)
W64, b64 = W.astype(np.float64), b.astype(np.float64)
RTOL = D * np.finfo(np.float32).eps  # oodkit's pinvh cutoff (SciPy's rule at float32 precision)


def normalizer(x):  # OpenOOD's quirk: epsilon added after dividing
    return x / np.linalg.norm(x, axis=-1, keepdims=True) + 1e-10


cases = []


def case(spec, scores):
    cases.append({"spec": spec, "scores": [float(f"{s:.9g}") for s in scores]})


# KNN (OpenOOD knn_postprocessor: faiss IndexFlatL2 on normalised float32 features).
index = faiss.IndexFlatL2(D)
index.add(np.ascontiguousarray(normalizer(train).astype(np.float32)))
for k in (1, 5, 50):
    dist, _ = index.search(np.ascontiguousarray(normalizer(test).astype(np.float32)), k)
    case({"name": "knn", "k": k}, -dist[:, -1])


# MDS / ReweightOOD / RMDS (OpenOOD mds, rmds; ReweightOOD scorer = MDS on h/||h||).
def class_stats(h):
    means = np.stack([h[labels == c].mean(0) for c in range(C)])
    ec = EmpiricalCovariance(assume_centered=False).fit(h - means[labels])
    prec = np.linalg.pinv(ec.covariance_, rcond=RTOL, hermitian=True)
    return means, prec


def mds(h, t):
    means, prec = class_stats(h)
    d = np.stack([np.einsum("ij,jk,ik->i", t - m, prec, t - m) for m in means], axis=1)
    return -d.min(1), d


case({"name": "mahalanobis"}, mds(H, T)[0])
unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
case({"name": "mahalanobis", "normalize": True}, mds(unit(H), unit(T))[0])

_, dc = mds(H, T)
mu0 = H.mean(0)
ec0 = EmpiricalCovariance(assume_centered=False).fit(H - mu0)
prec0 = np.linalg.pinv(ec0.covariance_, rcond=RTOL, hermitian=True)
d0 = np.einsum("ij,jk,ik->i", T - mu0, prec0, T - mu0)
case({"name": "rmds"}, d0 - dc.min(1))


# ViM and Residual (OpenOOD vim / residual postprocessors; eigh instead of eig).
def residual_space(h, dim):
    u = -np.linalg.pinv(W64) @ b64
    ec = EmpiricalCovariance(assume_centered=True).fit(h - u)
    vals, vecs = np.linalg.eigh(ec.covariance_)
    ns = vecs[:, np.argsort(-vals)[dim:]]
    return u, ns


for dim in (8, 4):
    u, ns = residual_space(H, dim)
    vlogit_train = np.linalg.norm((H - u) @ ns, axis=-1)
    alpha = Z.max(-1).mean() / vlogit_train.mean()
    vim = logsumexp(ZT, axis=-1) - alpha * np.linalg.norm((T - u) @ ns, axis=-1)
    case({"name": "vim", "dim": dim}, vim)
    case({"name": "residual", "dim": dim}, -np.linalg.norm((T - u) @ ns, axis=-1))
# Default dim: the ViM paper's rule gives d/2 = 8 for d = 16.
case({"name": "vim"}, cases[-4]["scores"])


# NNGuide (OpenOOD nnguide_postprocessor: bank = whole loader batches until
# #batches * batch_size > floor(alpha * N); faiss IndexFlatIP; mean of top-K times energy).
def nnguide(k, alpha, batch_size):
    target = int(N_TRAIN * alpha)
    nb = 0
    while True:
        nb += 1
        if nb * batch_size > target:
            break
    m = min(N_TRAIN, nb * batch_size)
    g = normalizer(train[:m]).astype(np.float32) * logsumexp(Z[:m], axis=-1)[:, None].astype(np.float32)
    ip = faiss.IndexFlatIP(D)
    ip.add(np.ascontiguousarray(g.astype(np.float32)))
    kk = min(k, m)
    sims, _ = ip.search(np.ascontiguousarray(normalizer(test).astype(np.float32)), kk)
    return sims.mean(1) * logsumexp(ZT, axis=-1)


case({"name": "nn_guide", "k": 10, "alpha": 0.1, "batch_size": 8}, nnguide(10, 0.1, 8))
case({"name": "nn_guide"}, nnguide(100, 0.01, 200))


# Temperature scaling (OpenOOD temp_scaling): T minimising the mean NLL of the labelled fit
# logits, here by SciPy's bounded Brent search on ln T (OpenOOD approximates it with LBFGS);
# score = max softmax(z / T), or its log-odds -logsumexp_{j != top}((z_j - z_top) / T).
def temp_nll(log_t):
    t = np.exp(log_t)
    return np.mean(logsumexp(Z / t, axis=1) - Z[np.arange(N_TRAIN), labels] / t)


fit_t = np.exp(
    minimize_scalar(
        temp_nll, bounds=(np.log(1e-3), np.log(1e3)), method="bounded", options={"xatol": 1e-9}
    ).x
)
top = ZT.argmax(1)
case({"name": "temp_scaling", "log": False}, np.exp(ZT / fit_t - logsumexp(ZT / fit_t, axis=1, keepdims=True)).max(1))
rest = np.where(np.arange(C)[None, :] == top[:, None], -np.inf, (ZT - ZT.max(1, keepdims=True)) / fit_t)
case({"name": "temp_scaling"}, -logsumexp(rest, axis=1))
print(f"temp_scaling: T = {fit_t:.6f}")

def j4(x):  # the exact 4-decimal values the float32 inputs were rounded from
    return np.round(x.astype(np.float64), 4).tolist()


out = {
    "generator": "crates/ood-core/tests/data/posthoc_reference_b.py",
    "train": {
        "features": j4(train),
        "logits": j4(train_logits),
        "labels": labels.tolist(),
    },
    "test": {"features": j4(test), "logits": j4(test_logits)},
    "head": {"weight": j4(W), "bias": j4(b)},
    "cases": cases,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "posthoc_reference_b.json")
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(out, f, separators=(",", ":"))
os.replace(tmp, path)
print(f"wrote {path}: {len(cases)} cases")
