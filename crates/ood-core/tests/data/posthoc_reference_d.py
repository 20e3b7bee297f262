"""Reference scores for Relation (det-d), on seeded random data.

Run from the repository root (writes posthoc_reference_d.json next to this file):

    /work/main/.venv/bin/python crates/ood-core/tests/data/posthoc_reference_d.py

Everything is recomputed here with NumPy from the published formulas, following OpenOOD's
`relation` postprocessor (Neural Relation Graph); `tests/posthoc_golden_d.rs` checks
oodkit against the JSON to 1e-4 relative. Inputs are rounded to 4 decimals so that the JSON holds
them exactly as float32.
"""

import json
import os

import numpy as np
from scipy.special import softmax

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
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "posthoc_reference_d.json")
with open(path, "w") as fh:
    json.dump(out, fh, separators=(",", ":"))
    fh.write("\n")
print(f"wrote {len(cases)} cases to {path}")
