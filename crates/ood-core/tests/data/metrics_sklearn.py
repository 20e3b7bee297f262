"""Generates metrics_sklearn.json: random, tie-heavy score sets with their reference metrics.

Run from this directory with the project venv (numpy + scikit-learn 1.9.1):

    /work/main/.venv/bin/python metrics_sklearn.py

Scores are ID-high and float32 (written as exact decimal float32 values). For each case it records:

* auroc: sklearn roc_auc_score (ID positive).
* OpenOOD compute_all_metrics (as described in spec section 1.3/1.4, re-derived here):
  openood_fpr = FPR at the first point with TPR >= 0.95 of roc_curve(y_ood, -s) (drop_intermediate
  on); openood_fpr_no_drop the same with drop_intermediate=False; aupr_in = auc(recall, precision)
  of precision_recall_curve(y_id, s); aupr_out the same with (y_ood, -s).
* legacy_fpr (OpenOOD before 2023-08): roc_curve(y_id, s), first TPR >= 0.95; classic_fpr the same
  without the drop step.
* Hendrycks fpr_and_fdr_at_recall (re-written from the rule in spec 1.7) and
  average_precision_score for ap_in (y_id, s) and ap_out (y_ood, -s).
* KNN-OOD cal_metric FPR / AUIN / AUOUT (re-written from the rule in spec 1.7 as a per-sample walk
  with tie collapsing, independent of the Rust block-based code).

The script first checks its own formulas against the spec's golden vectors A-G (section 9).
"""

import json
import os

import numpy as np
from sklearn import metrics as skm


def labels(id_s, ood_s):
    s = np.concatenate([id_s, ood_s]).astype(np.float64)
    y_id = np.concatenate([np.ones(len(id_s)), np.zeros(len(ood_s))]).astype(int)
    return s, y_id


def first_tpr(y, score, drop):
    fpr, tpr, _ = skm.roc_curve(y, score, drop_intermediate=drop)
    return float(fpr[np.argmax(tpr >= 0.95)])


def trapezoid_aupr(y, score):
    p, r, _ = skm.precision_recall_curve(y, score)
    return float(skm.auc(r, p))


def hendrycks_fpr(id_s, ood_s, level=0.95):
    s, y = labels(id_s, ood_s)
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    ends = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y, dtype=np.float64)[ends]
    fps = 1 + ends - tps
    recall = tps / tps[-1]
    last = int(np.searchsorted(tps, tps[-1]))
    rec = np.r_[recall[last::-1], 1.0]
    fp = np.r_[fps[last::-1], 0.0]
    cut = int(np.argmin(np.abs(rec - level)))
    return float(fp[cut] / len(ood_s))


def knn_metrics(id_s, ood_s):
    known = np.sort(np.asarray(id_s, dtype=np.float64))
    novel = np.sort(np.asarray(ood_s, dtype=np.float64))
    nk, nn = len(known), len(novel)
    tau = known[round(0.05 * nk)]
    fpr95 = float(np.sum(novel > tau) / nn)
    # Walk the pooled sorted samples from the bottom, removing one sample at a time; the state
    # after removing j samples is (ID left, OOD left). OOD goes first only when strictly smaller.
    pooled = sorted([(v, 1) for v in novel] + [(v, 0) for v in known], key=lambda t: (t[0], t[1]))
    tp = [nk]
    fp = [nn]
    for v, is_ood in pooled:
        tp.append(tp[-1] - (1 - is_ood))
        fp.append(fp[-1] - is_ood)
    values = [v for v, _ in pooled]
    # A state that splits a block of equal values takes the state after the block.
    for j in range(len(values) - 1, 0, -1):
        if values[j] == values[j - 1]:
            tp[j] = tp[j + 1]
            fp[j] = fp[j + 1]
    tp = np.array(tp, dtype=np.float64)
    fp = np.array(fp, dtype=np.float64)
    tpr = np.r_[1.0, tp / nk, 0.0]
    fpr = np.r_[1.0, fp / nn, 0.0]
    d_in = tp + fp
    keep = np.r_[True, d_in > 0, True]
    pin = np.r_[0.5, np.divide(tp, d_in, out=np.zeros_like(tp), where=d_in > 0), 0.0]
    auin = -np.trapezoid(pin[keep], tpr[keep])
    d_out = (nk - tp) + (nn - fp)
    keep = np.r_[True, d_out > 0, True]
    pout = np.r_[0.0, np.divide(nn - fp, d_out, out=np.zeros_like(fp), where=d_out > 0), 0.5]
    auout = np.trapezoid(pout[keep], (1.0 - fpr)[keep])
    return fpr95, float(auin), float(auout)


def all_metrics(id_s, ood_s):
    s, y_id = labels(id_s, ood_s)
    y_ood = 1 - y_id
    knn = knn_metrics(id_s, ood_s)
    return {
        "auroc": float(skm.roc_auc_score(y_id, s)),
        "openood_fpr": first_tpr(y_ood, -s, True),
        "openood_fpr_no_drop": first_tpr(y_ood, -s, False),
        "legacy_fpr": first_tpr(y_id, s, True),
        "classic_fpr": first_tpr(y_id, s, False),
        "aupr_in": trapezoid_aupr(y_id, s),
        "aupr_out": trapezoid_aupr(y_ood, -s),
        "hendrycks_fpr": hendrycks_fpr(id_s, ood_s),
        "ap_in": float(skm.average_precision_score(y_id, s)),
        "ap_out": float(skm.average_precision_score(y_ood, -s)),
        "knn_fpr": knn[0],
        "knn_auin": knn[1],
        "knn_auout": knn[2],
    }


def check_spec_vectors():
    """Spec section 9: (case, id, ood) -> golden numbers (6 decimals)."""
    a_id = [0.95, 0.91, 0.88, 0.86, 0.83, 0.80, 0.78, 0.74, 0.71, 0.69, 0.66, 0.62, 0.58, 0.55,
            0.51, 0.47, 0.42, 0.37, 0.30, 0.22]
    a_ood = [0.89, 0.76, 0.64, 0.60, 0.53, 0.49, 0.45, 0.40, 0.38, 0.35, 0.33, 0.28, 0.26, 0.24,
             0.20, 0.18, 0.15, 0.12, 0.08, 0.05]
    b_id = [5, 5, 5, 4, 4, 4, 4, 3, 3, 3, 2, 2, 2, 1, 1, 0]
    b_ood = [4, 3, 3, 2, 2, 2, 1, 1, 1, 0, 0, 0]
    d_id = [0.97, 0.93, 0.90, 0.84, 0.79, 0.72, 0.66, 0.61, 0.43, 0.35]
    d_ood = [0.91, 0.86, 0.81, 0.75, 0.70, 0.68, 0.64, 0.59, 0.57, 0.54, 0.52, 0.50, 0.48, 0.46,
             0.44, 0.41, 0.39, 0.37, 0.33, 0.31, 0.29, 0.27, 0.25, 0.23, 0.21, 0.19, 0.17, 0.14,
             0.11, 0.06]
    cases = {
        "A": (a_id, a_ood, [0.65, 0.81, 0.781585, 0.829161, 0.65, 0.55, 0.55, 0.70, 0.791474, 0.833883, 0.55, 0.756585, 0.804161]),
        "B": (b_id, b_ood, [0.8125, 0.755208, 0.831496, 0.692917, 0.8125, 1.0, 1.0, 0.75, 0.792610, 0.635833, 0.5, 0.737746, 0.567917]),
        "C": (list(range(17, 37)), list(range(1, 21)), [0.2, 0.98, 0.981237, 0.981237, 0.15, 0.2, 0.15, 0.15, 0.977071, 0.977071, 0.1, 0.956237, 0.956237]),
        "D": (d_id, d_ood, [0.7, 0.813333, 0.626021, 0.929426, 0.7, 0.6, 0.6, 0.6, 0.644560, 0.930884, 0.6, 0.576021, 0.912759]),
        "E": ([0.5] * 8, [0.5] * 8, [1.0, 0.5, 0.75, 0.75, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.0, 0.25, 0.25]),
        "F": ([0.9, 0.8, 0.7, 0.6, 0.55], [0.5, 0.4, 0.3, 0.2, 0.1], [0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.9, 0.9]),
        "G": ([0.5, 0.4, 0.3, 0.2, 0.1], [0.9, 0.8, 0.7, 0.6, 0.55], [1.0, 0.0, 0.304365, 0.304365, 1.0, 1.0, 1.0, 1.0, 0.354365, 0.354365, 1.0, 0.304365, 0.304365]),
    }
    keys = ["openood_fpr", "auroc", "aupr_in", "aupr_out", "openood_fpr_no_drop", "legacy_fpr",
            "classic_fpr", "hendrycks_fpr", "ap_in", "ap_out", "knn_fpr", "knn_auin", "knn_auout"]
    for name, (i, o, want) in cases.items():
        got = all_metrics(np.float32(i), np.float32(o))
        for k, w in zip(keys, want):
            assert abs(got[k] - w) <= 1e-6, (name, k, got[k], w)


def main():
    check_spec_vectors()
    rng = np.random.default_rng(20261123)
    f32 = np.float32
    cases = []

    def add(name, id_s, ood_s):
        id_s = np.asarray(id_s, dtype=f32)
        ood_s = np.asarray(ood_s, dtype=f32)
        entry = {"name": name, "id": [float(v) for v in id_s], "ood": [float(v) for v in ood_s]}
        entry.update(all_metrics(id_s, ood_s))
        cases.append(entry)

    # Integer-valued scores with heavy ties, various balances.
    add("int6_50x40", rng.integers(1, 7, 50), rng.integers(0, 5, 40))
    add("int4_7x300", rng.integers(0, 4, 7), rng.integers(0, 3, 300))
    add("int11_500x20", rng.integers(3, 11, 500), rng.integers(0, 8, 20))
    add("int3_200x200", rng.integers(0, 3, 200), rng.integers(0, 3, 200))
    # Rounded Gaussians (ties across the classes), negative values included.
    add("gauss2dp_400x300", np.round(rng.normal(1.0, 1.0, 400), 2), np.round(rng.normal(0.0, 1.0, 300), 2))
    add("gauss1dp_30x700", np.round(rng.normal(0.5, 1.0, 30), 1), np.round(rng.normal(0.0, 1.0, 700), 1))
    # Continuous float32, essentially no ties.
    add("cont_250x150", rng.normal(0.3, 1.0, 250), rng.normal(0.0, 1.2, 150))
    # OOD scored higher than ID (inverted detector).
    add("inverted_60x80", rng.integers(0, 10, 60), rng.integers(5, 15, 80))
    # Tiny sets.
    add("one_vs_one", [0.25], [0.75])
    add("one_vs_five_tied", [2.0], [2.0, 2.0, 1.0, 3.0, 2.0])
    # Tied-pair diagonal runs around the 95% point (drop step), N_ood a multiple of 20.
    add("pairs_runs_40x40", list(range(10, 50)), list(range(0, 40)))
    add("pair_blocks_60x60", np.repeat(np.arange(30), 2) + 25, np.repeat(np.arange(30), 2))
    # KNN-OOD's round-half-even index: 0.05 * N_id = 0.5, 1.5, 2.5, 3.5(000000000000004).
    for n in (10, 30, 50, 70, 90):
        add(f"knn_round_{n}x25", rng.integers(0, 6, n), rng.integers(0, 5, 25))
    out = {
        "generator": "metrics_sklearn.py",
        "sklearn": __import__("sklearn").__version__,
        "numpy": np.__version__,
        "cases": cases,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics_sklearn.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, path)
    print(f"wrote {len(cases)} cases to {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
