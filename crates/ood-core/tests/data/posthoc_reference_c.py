"""Reference scores for VRA, NCI and NECO (det-c), on seeded random data.

Run from the repository root (writes posthoc_reference_c.json next to this file):

    /work/main/.venv/bin/python crates/ood-core/tests/data/posthoc_reference_c.py

Everything is recomputed here from the published formulas with NumPy and scikit-learn, following
OpenOOD's `vra` and `nci` postprocessors and the NECO authors' `ood_methods.neco` (StandardScaler
+ PCA); `tests/posthoc_golden_c.rs` checks oodkit against the JSON to 1e-4 relative.
Inputs are rounded to 4 decimals so that the JSON holds them exactly as float32.
"""

import json
import os

import numpy as np
from scipy.special import logsumexp
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

rng = np.random.default_rng(20261207)
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
ZT = test_logits.astype(np.float64)
W64, b64 = W.astype(np.float64), b.astype(np.float64)

cases = []


def case(spec, scores):
    cases.append({"spec": spec, "scores": [float(f"{s:.9g}") for s in scores]})


# VRA (OpenOOD vra_postprocessor: both thresholds are np.percentile of the flattened fit
# activations; features clipped to [low, high]; energy of the recomputed logits).
def vra(high, low):
    t_hi = np.percentile(H.flatten(), high)
    t_lo = np.percentile(H.flatten(), low)
    clipped = np.clip(T, t_lo, t_hi)
    return logsumexp(clipped @ W64.T + b64, axis=1)


case({"name": "vra"}, vra(90, 10))
case({"name": "vra", "percentile_high": 95.0, "percentile_low": 5.0}, vra(95, 5))
case({"name": "vra", "percentile_high": 85.0, "percentile_low": 15.0}, vra(85, 15))


# NCI (OpenOOD nci_postprocessor: predicted class from the logits, unnormalised head row,
# train mean; <w_c, h - mu> / ||h - mu|| + alpha * ||h||_1).
def nci(alpha):
    mu = H.mean(0)
    pred = ZT.argmax(1)
    c = T - mu
    return np.sum(W64[pred] * c, axis=1) / np.linalg.norm(c, axis=1) + alpha * np.abs(T).sum(1)


case({"name": "nci"}, nci(1e-4))
case({"name": "nci", "alpha": 0.1}, nci(0.1))


# NECO (authors' ood_methods.neco: StandardScaler and a full PCA fitted on the train features;
# ||first `dim` PCA coordinates|| / ||standardised feature||, times the max logit for ViT-type
# models).
def neco(dim, max_logit):
    ss = StandardScaler()
    train_std = ss.fit_transform(H)
    # svd_solver="full": an SVD of the standardised train matrix (scikit-learn >= 1.5 would
    # otherwise pick "covariance_eigh", the same route as oodkit, for N >> d).
    pca = PCA(D, svd_solver="full").fit(train_std)
    test_std = ss.transform(T)
    reduced = pca.transform(test_std)[:, :dim]
    score = np.linalg.norm(reduced, axis=1) / np.linalg.norm(test_std, axis=1)
    return score * ZT.max(-1) if max_logit else score


# Default dim: min(100, d / 2) = 8 for d = 16.
case({"name": "neco"}, neco(8, False))
case({"name": "neco", "dim": 4}, neco(4, False))
case({"name": "neco", "dim": 3, "max_logit": True}, neco(3, True))


def j4(x):  # the exact 4-decimal values the float32 inputs were rounded from
    return np.round(x.astype(np.float64), 4).tolist()


out = {
    "generator": "crates/ood-core/tests/data/posthoc_reference_c.py",
    "train": {
        "features": j4(train),
        "logits": j4(train_logits),
        "labels": labels.tolist(),
    },
    "test": {"features": j4(test), "logits": j4(test_logits)},
    "head": {"weight": j4(W), "bias": j4(b)},
    "cases": cases,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "posthoc_reference_c.json")
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(out, f, separators=(",", ":"))
os.replace(tmp, path)
print(f"wrote {path}: {len(cases)} cases")
