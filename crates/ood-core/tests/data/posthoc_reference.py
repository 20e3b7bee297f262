#!/usr/bin/env python3
"""Reference scores for the post-hoc detectors, from the published formulas in NumPy/SciPy.

Writes `posthoc_reference.json` next to this file (atomically: temporary file + rename). The Rust
test `crates/ood-core/tests/posthoc_golden.rs` loads it and checks every case to 1e-4 relative.

Run:  /work/main/.venv/bin/python crates/ood-core/tests/data/posthoc_reference.py
(NumPy 2.4.6, SciPy 1.17.1, PyTorch 2.11.0 for grad_norm's autograd, when generated.)

Layout of the JSON:
  inputs: {<input name>: {head: {weight, bias}, sets: {<set name>: {features, logits, labels?}},
                          negatives?}}
  cases:  [{detector, params, input, fit, score, scores}]
Each case: build `DetectorSpec::from_name(detector, params)`, fit it on
`inputs[input].sets[fit]` with `inputs[input].head`, score `inputs[input].sets[score]`, compare
with `scores`. For `neg_label`, `inputs[input].negatives` fills `NegLabel::negatives`.

Adding a detector: write `def ref_<name>(...)` below from its formula and append cases in
`cases()`; the Rust test needs no change. All inputs are float32 (what the Rust side reads); the
references compute in float64 from those float32 values.

Conventions matched on purpose (see the spec, posthoc-and-metrics.md section 5):
* percentiles: np.percentile default ("linear" interpolation) over the flattened values;
* k = D - round_half_even(D * p / 100) (Python's round / np.round are half-to-even);
* ASH top-k tie order: value descending, then lower index first (stable argsort of -h);
* argmax: first maximum (np.argmax);
* KLM: scipy.stats.entropy (renormalises both arguments).
"""

import json
import os
import tempfile

import numpy as np
from scipy.special import logsumexp, softmax
from scipy.stats import entropy

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "posthoc_reference.json")


# ----------------------------------------------------------------------------- inputs


def f32(a):
    """Float32 of the value rounded to 4 decimals: the JSON holds the rounded decimal, and both
    sides turn it into the same float32 (decimal -> f64 -> f32)."""
    return np.asarray(np.round(np.asarray(a, dtype=np.float64), 4), dtype=np.float32)


def make_main(rng):
    """Labelled non-negative (post-ReLU-like) features, d = 16, c = 5."""
    c, d = 5, 16
    means = rng.uniform(0.0, 2.0, size=(c, d)) * (rng.uniform(size=(c, d)) < 0.5) * 2.0
    w = f32(means - means.mean(0) + 0.3 * rng.normal(size=(c, d)))
    b = f32(0.2 * rng.normal(size=c))

    def draw(n, classes, spread=1.0):
        y = rng.choice(classes, size=n)
        h = f32(np.maximum(means[y] + spread * rng.normal(size=(n, d)) - 0.3, 0.0))
        return h, y

    def pack(h, y=None):
        z = f32(f64(h) @ f64(w).T + f64(b))
        out = {"features": h, "logits": z}
        if y is not None:
            out["labels"] = np.asarray(y, dtype=np.int64)
        return out

    train_h, train_y = draw(200, np.arange(c))
    # ID val from classes 0..3 only, and no row predicted as class 4, so that KLM's one-hot
    # branch (no sample predicted as the class) is exercised.
    val_h, val_y = draw(160, np.arange(4))
    keep = np.argmax(val_h @ w.T + b, axis=1) != 4
    val_h, val_y = val_h[keep][:100], val_y[keep][:100]
    # Test: 20 ID-like rows, 6 broad rows, 4 sparse rows (few positive entries: ties among zeros
    # inside the ASH top-k for small p).
    id_h, _ = draw(20, np.arange(c))
    broad = f32(np.maximum(rng.normal(size=(6, d)), 0.0))
    sparse = f32(np.maximum(rng.normal(size=(4, d)) - 1.2, 0.0))
    sparse[:, 0] = np.maximum(sparse[:, 0], 0.5)  # never an all-zero row
    test_h = f32(np.concatenate([id_h, broad, sparse]))
    assert (test_h.sum(1) > 0).all()
    return {
        "head": {"weight": w, "bias": b},
        "sets": {
            "train": pack(train_h, train_y),
            "val": pack(val_h, val_y),
            "test": pack(test_h),
        },
    }


def make_clip(rng):
    """CLIP-style: image embeddings (n, 8), 4 ID-label text embeddings, 11 negatives."""
    d, c, m = 8, 4, 11
    text = f32(rng.normal(size=(c, d)))
    negatives = f32(rng.normal(size=(m, d)))
    img = f32(np.concatenate([text[rng.integers(0, c, 10)] + 0.7 * rng.normal(size=(10, d)),
                              rng.normal(size=(10, d))]))

    def pack(x):
        z = f32(100.0 * cos_matrix(x, text))  # CLIP-like logits; the scores use cosines only
        return {"features": x, "logits": z}

    return {
        "head": {"weight": text, "bias": np.zeros(c, dtype=np.float32)},
        "sets": {"fit": pack(img[:5]), "test": pack(img)},
        "negatives": negatives,
    }


# ----------------------------------------------------------------------------- helpers


def f64(a):
    return np.asarray(a, dtype=np.float64)


def lse_rows(z):
    return logsumexp(f64(z), axis=1)


def kept_count(d, p):
    return d - int(np.round(d * p / 100.0))


def top_k(h, k):
    return np.argsort(-h, kind="stable")[:k]


def cos_matrix(x, t):
    x, t = f64(x), f64(t)
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    tn = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    return xn @ tn.T


# ----------------------------------------------------------------------------- references


def ref_msp(head, fit, test):
    return softmax(f64(test["logits"]), axis=1).max(1)


def ref_max_logit(head, fit, test):
    return f64(test["logits"]).max(1)


def ref_energy(head, fit, test):
    return lse_rows(test["logits"])


def ref_gen(head, fit, test, gamma, m):
    """1 - p_i is computed as the sum of the other probabilities: for a confident row, 1 - p_max is
    below the float64 spacing near 1 and `1 - p` would lose most of its digits."""
    out = []
    for p in softmax(f64(test["logits"]), axis=1):
        rest = np.array([np.sum(np.delete(p, i)) for i in range(len(p))])
        order = np.argsort(p, kind="stable")[-m:]
        out.append(-np.sum(p[order] ** gamma * rest[order] ** gamma))
    return np.array(out)


def ref_klm(head, fit, test):
    c = head["weight"].shape[0]
    p_fit = softmax(f64(fit["logits"]), axis=1)
    pred = np.argmax(fit["logits"], axis=1)
    q = []
    for k in range(c):
        if (pred == k).sum() == 0:
            e = np.zeros(c)
            e[k] = 1.0
            q.append(e)
        else:
            q.append(p_fit[pred == k].mean(0))
    p = softmax(f64(test["logits"]), axis=1)
    return np.array([-min(entropy(pi, qk) for qk in q) for pi in p])


def ref_grad_norm(head, fit, test):
    """The true gradient, as OpenOOD's gradnorm_postprocessor.py computes it: per sample,
    autograd of mean(sum(-(1/C) * log_softmax(fc(h)))) with respect to fc.weight (float64, the
    logits recomputed from the head), L1 norm. oodkit's closed form (sum_c |C p_c - 1|) * ||h||_1
    is C times that (OpenOOD's targets carry 1/C; the ranking is the same), so the reference is
    C * autograd; the closed form on the given float32 logits is asserted equal to 1e-4."""
    import torch

    w = torch.tensor(f64(head["weight"]))
    b = torch.tensor(f64(head["bias"]))
    h = torch.tensor(f64(test["features"]))
    c = w.shape[0]
    out = []
    for i in range(h.shape[0]):
        fc_w = w.clone().requires_grad_(True)
        z = h[i:i + 1] @ fc_w.T + b
        targets = torch.ones_like(z) / c
        loss = torch.mean(torch.sum(-targets * torch.log_softmax(z, dim=-1), dim=-1))
        loss.backward()
        out.append(fc_w.grad.abs().sum().item())
    autograd = np.array(out)
    p = softmax(f64(test["logits"]), axis=1)
    closed = np.abs(c * p - 1).sum(1) * np.abs(f64(test["features"])).sum(1)
    assert np.allclose(autograd * c, closed, rtol=1e-4, atol=0), (autograd * c, closed)
    return autograd * c


def logits_of(head, h):
    return f64(h) @ f64(head["weight"]).T + f64(head["bias"])


def ref_react(head, fit, test, percentile):
    tau = np.percentile(f64(fit["features"]).ravel(), percentile)
    return logsumexp(logits_of(head, np.minimum(f64(test["features"]), tau)), axis=1)


def ref_ash(head, fit, test, percentile, variant):
    h = f64(test["features"])
    n, d = h.shape
    k = kept_count(d, percentile)
    out = np.zeros_like(h)
    for i in range(n):
        idx = top_k(h[i], k)
        s = h[i].sum()
        if variant == "b":
            out[i, idx] = s / k
        else:
            out[i, idx] = h[i, idx]
            if variant == "s":
                out[i] *= np.exp(s / out[i].sum())
    return logsumexp(logits_of(head, out), axis=1)


def ref_scale(head, fit, test, percentile):
    h = f64(test["features"])
    k = kept_count(h.shape[1], percentile)
    s_all = h.sum(1)
    s_top = np.array([row[top_k(row, k)].sum() for row in h])
    return logsumexp(logits_of(head, h * np.exp(s_all / s_top)[:, None]), axis=1)


def ref_dice(head, fit, test, percentile):
    mean = f64(fit["features"]).mean(0)
    w = f64(head["weight"])
    contrib = w * mean[None, :]
    theta = np.percentile(contrib, percentile)
    masked = w * (contrib > theta)
    z = f64(test["features"]) @ masked.T + f64(head["bias"])
    return logsumexp(z, axis=1)


def ref_she(head, fit, test, metric):
    h_fit = f64(fit["features"])
    pred = np.argmax(fit["logits"], axis=1)
    c = head["weight"].shape[0]
    m = np.stack([h_fit[(fit["labels"] == k) & (pred == k)].mean(0) for k in range(c)])
    h = f64(test["features"])
    t = m[np.argmax(test["logits"], axis=1)]
    if metric == "inner_product":
        return (h * t).sum(1)
    if metric == "euclidean":
        return -np.linalg.norm(h - t, axis=1)
    return (h * t).sum(1) / (np.linalg.norm(h, axis=1) * np.linalg.norm(t, axis=1))


def ref_fdbd(head, fit, test, distance_as_normalizer):
    w = f64(head["weight"])
    z = f64(test["logits"])
    h = f64(test["features"])
    top = np.argmax(test["logits"], axis=1)
    out = []
    for i in range(len(z)):
        c = top[i]
        terms = [abs(z[i, c] - z[i, j]) / np.linalg.norm(w[c] - w[j])
                 for j in range(z.shape[1]) if j != c]
        centre = f64(fit["features"]).mean(0) if distance_as_normalizer else 0.0
        out.append(sum(terms) / np.linalg.norm(h[i] - centre))
    return np.array(out)


def ref_mcm(head, fit, test, temperature):
    cos = cos_matrix(test["features"], head["weight"])
    return softmax(cos / temperature, axis=1).max(1)


def ref_neg_label(head, fit, test, negatives, temperature, groups, shuffle):
    """The paper formula (groups = 1) or the released grouping in identity order (shuffle off).
    With groups = 1 the order of the negatives does not matter, so shuffle may be on."""
    assert groups == 1 or not shuffle, "the ChaCha8 permutation is not reproduced here"
    pos = cos_matrix(test["features"], head["weight"]) / temperature
    m = negatives.shape[0]
    neg = cos_matrix(test["features"], negatives[: m - m % groups]) / temperature
    a = logsumexp(pos, axis=1)
    size = neg.shape[1] // groups
    s = np.zeros(len(pos))
    for g in range(groups):
        b = logsumexp(neg[:, g * size:(g + 1) * size], axis=1)
        s += np.exp(a - np.logaddexp(a, b))  # sum_i e^a / (sum_i e^a + sum_g e^b), stably
    return s / groups


# ----------------------------------------------------------------------------- cases


def cases(inputs):
    main, clip = inputs["main"], inputs["clip"]
    out = []

    def add(detector, params, fn, input_name="main", fit="train", score="test", **extra):
        inp = inputs[input_name]
        s = fn(inp["head"], inp["sets"][fit], inp["sets"][score], **extra, **params)
        assert np.all(np.isfinite(s)), (detector, params)
        out.append({"detector": detector, "params": params, "input": input_name, "fit": fit,
                    "score": score, "scores": [float(v) for v in s]})

    add("msp", {}, ref_msp)
    add("max_logit", {}, ref_max_logit)
    add("energy", {}, ref_energy)
    add("gen", {"gamma": 0.1, "m": 100}, ref_gen)
    add("gen", {"gamma": 0.5, "m": 3}, ref_gen)
    add("gen", {"gamma": 2.0, "m": 10}, ref_gen)
    add("klm", {}, ref_klm, fit="val")
    add("grad_norm", {}, ref_grad_norm)
    add("react", {"percentile": 90.0}, ref_react, fit="val")
    add("react", {"percentile": 99.0}, ref_react, fit="val")
    add("react", {"percentile": 37.5}, ref_react, fit="train")
    add("ash", {"percentile": 90.0, "variant": "b"}, ref_ash)
    add("ash", {"percentile": 65.0, "variant": "b"}, ref_ash)
    add("ash", {"percentile": 70.0, "variant": "p"}, ref_ash)
    add("ash", {"percentile": 80.0, "variant": "s"}, ref_ash)
    add("scale", {"percentile": 85.0}, ref_scale)
    add("scale", {"percentile": 65.0}, ref_scale)
    add("dice", {"percentile": 90.0}, ref_dice)
    add("dice", {"percentile": 70.0}, ref_dice)
    add("she", {"metric": "inner_product"}, ref_she)
    add("she", {"metric": "euclidean"}, ref_she)
    add("she", {"metric": "cosine"}, ref_she)
    add("fdbd", {"distance_as_normalizer": True}, ref_fdbd)
    add("fdbd", {"distance_as_normalizer": False}, ref_fdbd)
    add("mcm", {"temperature": 1.0}, ref_mcm, "clip", "fit")
    add("mcm", {"temperature": 0.01}, ref_mcm, "clip", "fit")
    neg = clip["negatives"]
    add("neg_label", {"temperature": 0.01, "groups": 1, "shuffle": True}, ref_neg_label, "clip",
        "fit", negatives=neg)
    add("neg_label", {"temperature": 0.01, "groups": 3, "shuffle": False}, ref_neg_label, "clip",
        "fit", negatives=neg)
    add("neg_label", {"temperature": 0.05, "groups": 2, "shuffle": False}, ref_neg_label, "clip",
        "fit", negatives=neg)
    return out


# ----------------------------------------------------------------------------- output


def to_json(x):
    if isinstance(x, dict):
        return {k: to_json(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        if x.dtype == np.float32:
            # Every float32 here is the float32 of a 4-decimal number (see f32): write that number.
            return np.round(x.astype(np.float64), 4).tolist()
        return x.tolist()
    return x


def main():
    rng = np.random.default_rng(20261123)
    inputs = {"main": make_main(rng), "clip": make_clip(rng)}
    doc = {"generator": "posthoc_reference.py", "numpy": np.__version__,
           "inputs": to_json(inputs), "cases": cases(inputs)}
    fd, tmp = tempfile.mkstemp(dir=HERE, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, OUT)
    print(f"wrote {OUT}: {len(doc['cases'])} cases")


if __name__ == "__main__":
    main()
