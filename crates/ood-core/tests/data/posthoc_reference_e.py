"""Reference scores for CF-OOD and GROOD (det-e), on seeded random data.

Run from the repository root (writes posthoc_reference_e.json next to this file):

    /work/main/.venv/bin/python crates/ood-core/tests/data/posthoc_reference_e.py

Both methods are re-implemented here from OpenOOD's code (main branch, December 2025), in float64:
`openood/postprocessors/cfood_postprocessor.py` with NumPy (its loops kept: a full sort of every
reference's distances, a scan of every grid column per query), and `openood/postprocessors/
grood.py` with PyTorch (`compute_ncc_loss` and the per-sample `torch.autograd.grad` of
`_compute_grad`; the closed form oodkit uses is checked against autograd here). The nearest
neighbour search is exact (OpenOOD's faiss IVF index is approximate). `tests/posthoc_golden_e.rs`
checks oodkit against the JSON to 1e-4 relative. Inputs are rounded to 4 decimals so that the
JSON holds them exactly as float32.

CF-OOD's random subsample (`torch.randperm` in OpenOOD, a seeded ChaCha8 draw in oodkit) cannot
be reproduced across the two: the cases use `alpha = 1` on the whole fit set and on a fixed
subset (every 10th row), which is what a subsample fits on.
"""

import json
import os

import numpy as np
import torch
import torch.nn.functional as F

rng = np.random.default_rng(20261209)
N_TRAIN, N_TEST, N_VAL, D, C = 300, 40, 30, 16, 5


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
ood_val = r4(rng.normal(0.0, 3.0, size=(N_VAL, D)) + 0.5)
# A head roughly aligned with the class centres: most, not all, fit rows correctly classified.
W = r4(centres / 4.0 + rng.normal(0.0, 0.3, size=(C, D)))
b = r4(rng.normal(0.0, 0.2, size=C))


def logits(x):
    return r4(x.astype(np.float64) @ W.T.astype(np.float64) + b)


train_logits, test_logits, val_logits = logits(train), logits(test), logits(ood_val)
H = train.astype(np.float64)
T = test.astype(np.float64)
V = ood_val.astype(np.float64)
pseudo = train_logits.astype(np.float64).argmax(1)
acc = (pseudo == labels).mean()
assert 0.6 < acc < 1.0, acc

cases = []


def case(spec, scores, fit="train"):
    cases.append({"spec": spec, "fit": fit, "scores": [float(f"{s:.9g}") for s in scores]})


# ---------------------------------------------------------------- CF-OOD (cfood_postprocessor.py)
def kgrid(n):
    kval = np.concatenate(
        (np.linspace(0.001, 0.1, 100), np.linspace(0.105, 0.5, 81), np.linspace(0.51, 0.99, 49))
    )
    kpos = np.array(kval * n - 1, dtype=int)
    keep = np.concatenate(([True], kpos[:-1] < kpos[1:]))
    return kval[keep], kpos[keep]


def cfood(fit, x, k):
    feats = fit / (np.linalg.norm(fit, axis=1, keepdims=True) + 1e-10)
    ref = feats  # alpha = 1
    n = ref.shape[0]
    kval, kpos = kgrid(n)
    knndst = np.zeros((n, len(kpos)))
    for i in range(n):
        dst = np.sum((ref[i] - ref) ** 2, axis=1)
        knndst[i, :] = np.sort(dst)[kpos + 1]
    feat = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-10)
    out = []
    for v in feat:
        dst = np.sum((v - ref) ** 2, axis=1)
        # No comparison may be so close that rounding decides it.
        margin = np.abs(knndst - dst[:, None]).min()
        assert margin > 1e-9, f"cfood comparison within {margin}"
        count = (knndst >= dst[:, None]).sum(axis=0) / float(n)
        pos = np.nonzero(count >= k)[0]
        out.append(kval[pos[0]] if len(pos) else 1.0)
    return -np.array(out)


subset = np.arange(0, N_TRAIN, 10)
for k in [0.01, 0.001, 0.05, 0.2, 0.6]:
    case({"name": "cfood", "alpha": 1.0, "k": k}, cfood(H, T, k))
for k in [0.01, 0.1, 0.5]:
    case({"name": "cfood", "alpha": 1.0, "k": k}, cfood(H[subset], T, k), fit="subset")

grids = {}
for n in [2, 3, 4, 10, 30, 99, 100, 101, 120, 300, 999, 1000, 4999, 5000, 10000, 50000, 128116]:
    kval, kpos = kgrid(n)
    # kval as the bits of its float64 values: JSON decimal parsers need not round-trip exactly.
    grids[str(n)] = {"kval_bits": kval.view(np.uint64).tolist(), "kpos": kpos.tolist()}


# ---------------------------------------------------------------- GROOD (grood.py)
torch.set_default_dtype(torch.float64)


def prototypes(fit, y):
    return torch.tensor(np.stack([fit[y == c].mean(0) for c in range(C)]))


def ncc_loss(feat, z, protos, noise):
    """OpenOOD's compute_ncc_loss (distance_loss, no_gradients False): CE(ncc, argmax z)."""
    pseudo_preds = torch.tensor(z).argmax(1)
    bsz = feat.shape[0]
    allp = torch.cat([protos, noise.view(1, -1)], dim=0)
    vec = (torch.tensor(feat).reshape(bsz, 1, -1) - allp).reshape(bsz, len(protos) + 1, -1)
    ncc = -1 * torch.norm(vec, dim=2)
    return F.cross_entropy(ncc, pseudo_preds, reduction="none"), pseudo_preds, ncc, vec


def grads(feat, z, protos, noise, keep=None):
    """Per-sample d loss / d noise by autograd (OpenOOD's _compute_grad), and the closed form."""
    protos = protos.clone().requires_grad_(True)
    noise = noise.clone().requires_grad_(True)
    loss, pseudo_preds, ncc, vec = ncc_loss(feat, z, protos, noise)
    out = []
    for i in range(len(feat)):
        if keep is not None and not keep[i]:
            continue
        g = torch.autograd.grad(loss[i], [noise, protos], retain_graph=True)[0]
        out.append(g.detach().numpy())
    auto = np.array(out)
    closed = (ncc.softmax(-1)[:, -1:] * F.normalize(vec[:, -1, :])).detach().numpy()
    if keep is not None:
        closed = closed[keep]
    assert np.allclose(auto, closed, rtol=1e-12, atol=1e-15), np.abs(auto - closed).max()
    return auto


def grood(x, zx, noise_from, n_noise=100):
    protos = prototypes(H, labels)
    if noise_from == "val_ood":
        noise = torch.tensor(V[:n_noise].mean(0))
    else:  # use_proto_mean
        noise = protos.mean(0)
    bank = grads(H, train_logits.astype(np.float64), protos, noise, keep=labels == pseudo)
    g = grads(x, zx, protos, noise)
    dist = ((g[:, None, :] - bank[None, :, :]) ** 2).sum(-1)
    return -dist.min(1)


ZT = test_logits.astype(np.float64)
case({"name": "grood", "noise": "val_ood", "n_noise": 100}, grood(T, ZT, "val_ood"))
case({"name": "grood", "noise": "val_ood", "n_noise": 10}, grood(T, ZT, "val_ood", 10))
case({"name": "grood", "noise": "class_mean", "n_noise": 100}, grood(T, ZT, "class_mean"))


def j4(x):  # the exact 4-decimal values the float32 inputs were rounded from
    return np.round(x.astype(np.float64), 4).tolist()


out = {
    "generator": "crates/ood-core/tests/data/posthoc_reference_e.py",
    "train": {"features": j4(train), "logits": j4(train_logits), "labels": labels.tolist()},
    "test": {"features": j4(test), "logits": j4(test_logits)},
    "ood_val": {"features": j4(ood_val), "logits": j4(val_logits)},
    "head": {"weight": j4(W), "bias": j4(b)},
    "subset": subset.tolist(),
    "cases": cases,
    "cfood_grids": grids,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "posthoc_reference_e.json")
with open(path, "w") as fh:
    json.dump(out, fh, separators=(",", ":"))
    fh.write("\n")
print(f"wrote {len(cases)} cases to {path} (fit accuracy {acc:.3f})")
for c in cases:
    s = np.array(c["scores"])
    print(c["spec"], c["fit"], "distinct", len(np.unique(s)), "range", s.min(), s.max())
