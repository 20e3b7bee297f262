"""Reference scores for WeiPer+KLD (det-weiper), on seeded random data and seeded noise.

Run from the repository root (writes posthoc_reference_f.json next to this file):

    /work/main/.venv/bin/python crates/ood-core/tests/data/posthoc_reference_f.py

A NumPy/PyTorch (float64) re-implementation of the authors' code, github.com/mgranz/weiper:
`Weiper/OpenOOD/openood/postprocessors/weiper_kldiv/utils.py` (`calculate_weiper_space`,
`batch_histogram` with `bins_min_max` and `probability=True`, `UniformKernel`, `kldiv`,
`calculate_WeiPerKLDiv_score`) and `weiper_kldiv_postprocessor.py` (`setup` with
`exact_minmax`: one scalar min/max per space over the training set; the training density is the
mean of the per-sample densities). The perturbation noise eta ((n_repeats * C, D), row
i * C + c) is drawn HERE and written to the fixture; `tests/posthoc_golden_f.rs` feeds it to
oodkit's `Weiper::fit_with_noise`, so the check covers everything after the draw (normalising
and scaling the noise, ranges, histograms, smoothing, KL, perturbed MSP). A case with
`n_repeats = r` uses the first r * C noise rows. Inputs are rounded to 4 decimals so that the
JSON holds them exactly as float32; the noise is rounded to 4 decimals (read as float64).

The authors draw a fresh perturbation per batch (the fitted `W_tilde` reaches
`calculate_WeiPerKLDiv_score` only as an unused keyword): here, as in oodkit, one noise serves
the fit and every test sample (a single batch in the authors' code behaves the same way).
"""

import json
import os

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
torch.set_grad_enabled(False)
rng = np.random.default_rng(20261209)
N_TRAIN, N_TEST, D, C, R_MAX = 300, 40, 20, 4, 100


def r4(x):
    return np.round(np.asarray(x, dtype=np.float64), 4).astype(np.float32)


centres = rng.normal(1.0, 1.5, size=(C, D))
labels = np.arange(N_TRAIN) % C
rng.shuffle(labels)
# Post-ReLU-like features (exact zeros included); the OOD half of the test set is wider, so some
# of its values fall outside the training ranges and are dropped from its histograms.
train = r4(np.maximum(centres[labels] + rng.normal(0.0, 1.0, size=(N_TRAIN, D)), 0.0))
test = r4(
    np.maximum(
        np.concatenate(
            [
                centres[rng.integers(0, C, 20)] + rng.normal(0.0, 1.0, size=(20, D)),
                rng.normal(0.5, 3.0, size=(20, D)),
            ]
        ),
        0.0,
    )
)
W = r4(rng.normal(0.0, 0.5, size=(C, D)))
b = r4(rng.normal(0.0, 0.5, size=C))
train_logits = r4(train.astype(np.float64) @ W.T.astype(np.float64) + b)
test_logits = r4(test.astype(np.float64) @ W.T.astype(np.float64) + b)
noise = np.round(rng.normal(0.0, 1.0, size=(R_MAX * C, D)), 4)

H = torch.tensor(train.astype(np.float64))
T = torch.tensor(test.astype(np.float64))
Wt = torch.tensor(W.astype(np.float64))
bt = torch.tensor(b.astype(np.float64))


def weiper_space(n_repeats, delta):
    """calculate_weiper_space: W + delta * normalize(eta) * ||w_c||, bias repeated; repeat-major."""
    eta = torch.tensor(noise[: n_repeats * C])
    perts = [
        delta * F.normalize(eta[i * C : (i + 1) * C], dim=1) * Wt.norm(dim=1)[:, None]
        for i in range(n_repeats)
    ]
    weight = torch.cat([Wt + p for p in perts], dim=0)
    bias = torch.cat([bt for _ in range(n_repeats)], dim=0)
    return lambda x: x @ weight.T + bias


def linspace(start, stop, num):
    steps = torch.arange(num) / (num - 1)
    return start + steps * (stop - start)


def density(latents, lo, hi, n_bins):
    """calculate_density -> batch_histogram(l.T, bins_min_max=(lo, hi), probability=True):
    per sample, the share of its coordinates in each of n_bins bins between the training min
    and max (+1e-8); the two outer bins (-inf, lo) and [hi + 1e-8, inf) are dropped after the
    division by the total. (n_bins, n_samples)."""
    samples = latents.T  # (n_dims, n_samples)
    bins = linspace(lo, hi + 1e-8, n_bins + 1)[:, None].repeat(1, samples.shape[1])
    bins = torch.cat([bins, torch.ones(1, bins.shape[-1]) * np.inf], dim=0)
    bins = torch.cat([-torch.ones(1, bins.shape[-1]) * np.inf, bins], dim=0)
    dens = torch.logical_and(samples[None] < bins[1:, None], samples[None] >= bins[:-1, None])
    dens = dens.to(torch.float64).mean(dim=1)
    return dens[1:-1] / dens.sum(dim=0)[None], bins


def edge_margin(latents, lo, hi, n_bins):
    """Smallest distance of a value to an interior bin edge (oodkit's edges differ from these
    by at most 1e-8, so no value may sit that close)."""
    edges = linspace(lo, hi + 1e-8, n_bins + 1)[1:-1]
    if len(edges) == 0:
        return np.inf
    return (latents.reshape(-1, 1) - edges[None]).abs().min().item()


def uniform_kernel(dim, k):
    """UniformKernel: a diagonal Conv1d over the bins, 'same' padding, replicate mode."""
    conv = torch.nn.Conv1d(dim, dim, k, padding="same", padding_mode="replicate")
    conv.weight.data = torch.zeros_like(conv.weight.data)
    conv.weight.data[range(dim), range(dim)] = torch.ones(dim, k) / k
    conv.bias.data = torch.zeros_like(conv.bias)
    return lambda dens: conv(dens.T).T


def kldiv(p, q, eps, kernel):
    """kldiv(symmetric=True): only the sample densities q are smoothed; both get eps and are
    normalised; KL(p, q) + KL(q, p)."""
    q_ = kernel(q) + eps
    p_ = p + eps
    p_ = p_ / p_.sum(dim=0)
    q_ = q_ / q_.sum(dim=0)
    q_p = q_.log()[:, None] - p_.log()[..., None]
    return (-(p_[..., None] * q_p).sum(dim=0) - (q_[:, None] * (-q_p)).sum(dim=0))[0]


def weiper(spec):
    p = dict(DEFAULT, **spec)
    r, nb = p["n_repeats"], p["n_bins"]
    space = weiper_space(r, p["perturbation_distance"])
    lat_w = space(H)
    lo_z, hi_z = H.min(), H.max()
    lo_w, hi_w = lat_w.min(), lat_w.max()
    train_z = density(H, lo_z, hi_z, nb)[0].mean(dim=-1)[:, None]
    train_w = density(lat_w, lo_w, hi_w, nb)[0].mean(dim=-1)[:, None]
    test_w = space(T)
    for lat, lo, hi in [(H, lo_z, hi_z), (T, lo_z, hi_z), (lat_w, lo_w, hi_w), (test_w, lo_w, hi_w)]:
        m = edge_margin(lat, lo, hi, nb)
        assert m > 5e-8, f"{spec}: a value within {m} of a bin edge"
    q_z = density(T, lo_z, hi_z, nb)[0]
    q_w = density(test_w, lo_w, hi_w, nb)[0]
    u = kldiv(train_z, q_z, p["epsilon"], uniform_kernel(N_TEST, p["smoothing"]))
    u_w = kldiv(train_w, q_w, p["epsilon_perturbed"], uniform_kernel(N_TEST, p["smoothing_perturbed"]))
    # calculate_weiper_pred: mean over repeats of each repeat's max softmax.
    msp = torch.stack(
        [test_w[:, i * C : (i + 1) * C].softmax(dim=-1).max(dim=-1)[0] for i in range(r)], dim=-1
    ).mean(dim=-1)
    return (-(u + p["lambda_1"] * u_w - p["lambda_2"] * msp)).numpy()


DEFAULT = {
    "n_repeats": 100,
    "perturbation_distance": 1.8,
    "n_bins": 100,
    "lambda_1": 2.5,
    "lambda_2": 0.1,
    "smoothing": 4,
    "smoothing_perturbed": 15,
    "epsilon": 0.01,
    "epsilon_perturbed": 0.025,
}

SPECS = [
    {},
    {"n_bins": 60, "lambda_1": 1.0, "lambda_2": 0.25, "smoothing": 8, "smoothing_perturbed": 25},
    {"perturbation_distance": 2.4, "n_bins": 80, "lambda_1": 0.1, "lambda_2": 5.0,
     "smoothing": 40, "smoothing_perturbed": 40},
    # Few repeats and bins, an even width (asymmetric padding), a width above n_bins.
    {"n_repeats": 3, "n_bins": 7, "smoothing": 2, "smoothing_perturbed": 9,
     "epsilon": 0.05, "epsilon_perturbed": 0.001, "lambda_2": 1.0},
]

cases = []
for spec in SPECS:
    scores = weiper(spec)
    assert np.all(np.isfinite(scores))
    cases.append({"spec": dict(name="weiper", **spec), "scores": [float(f"{s:.9g}") for s in scores]})

# Sanity: the default separates the wide OOD half from the ID half.
s = np.array(cases[0]["scores"])
assert s[:20].mean() > s[20:].mean(), s


def j4(x):  # the exact 4-decimal values the float32 inputs were rounded from
    return np.round(x.astype(np.float64), 4).tolist()


out = {
    "head": {"weight": j4(W), "bias": j4(b)},
    "train": {"features": j4(train), "logits": j4(train_logits)},
    "test": {"features": j4(test), "logits": j4(test_logits)},
    "noise": noise.tolist(),
    "cases": cases,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "posthoc_reference_f.json")
with open(path, "w") as fh:
    json.dump(out, fh, separators=(",", ":"))
print(f"wrote {path}: {len(cases)} cases")
