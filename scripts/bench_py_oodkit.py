"""In-process benchmark of the oodkit Python package (numbers in BENCHMARKS.md).

    .venv/bin/python scripts/bench_py_oodkit.py [--scores 1000000] [--bank 50000] [--queries 10000]
                                                 [--dim 512] [--k 50] [--reps 3]

1. oodkit.metrics vs scikit-learn on two sets of `--scores` float64 scores: OpenOOD's
   compute_all_metrics recipe (roc_curve of the OOD-positive negated scores for AUROC and FPR@95,
   precision_recall_curve + auc for AUPR-In and AUPR-Out), and roc_auc_score alone.
2. Detector("knn", k) fit + score vs faiss-cpu IndexFlatL2 (normalise, add, search) and vs
   pytorch-ood's KNN detector (fit_features + predict_features; scikit-learn NearestNeighbors),
   on seeded synthetic penultimate features (100-class Gaussian mixture through a ReLU), float32.
   pytorch-ood is optional (install it next to torch 2.11 with torchvision==0.26.0 pinned; plain
   `pip install pytorch-ood` upgrades torch).

All timings are wall clock, best of `--reps` (pytorch-ood: one run), same process, same threads
(rayon, OpenMP and BLAS default to one thread per core).
"""

import argparse
import os
import time

import numpy as np

import oodkit


def best(f, reps):
    times, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def load():
    return open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else "?"


def sklearn_openood(id_s, ood_s):
    from sklearn import metrics as skm

    conf = np.concatenate([id_s, ood_s])
    ood = np.r_[np.zeros(len(id_s)), np.ones(len(ood_s))]
    fpr, tpr, _ = skm.roc_curve(ood, -conf)
    p_in, r_in, _ = skm.precision_recall_curve(1 - ood, conf)
    p_out, r_out, _ = skm.precision_recall_curve(ood, -conf)
    return {
        "auroc": skm.auc(fpr, tpr),
        "fpr95": fpr[np.argmax(tpr >= 0.95)],
        "aupr_in": skm.auc(r_in, p_in),
        "aupr_out": skm.auc(r_out, p_out),
    }


def bench_metrics(n, reps):
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    id_s, ood_s = rng.normal(1.0, 1.0, n), rng.normal(0.0, 1.0, n)
    t_ok, m = best(lambda: oodkit.metrics(id_s, ood_s, "openood"), reps)
    t_sk, ref = best(lambda: sklearn_openood(id_s, ood_s), reps)
    y = np.r_[np.ones(n), np.zeros(n)]
    conf = np.concatenate([id_s, ood_s])
    t_auc, auc = best(lambda: skm.roc_auc_score(y, conf), reps)
    t_ok1, _ = best(lambda: oodkit.metrics(id_s, ood_s, "openood", threads=1), reps)
    id32, ood32 = id_s.astype(np.float32), ood_s.astype(np.float32)
    t_ok32, _ = best(lambda: oodkit.metrics(id32, ood32, "openood"), reps)
    diff = max(abs(m[k] - ref[k]) for k in ref)
    print(f"\n## metrics: 2 x {n:,} float64 scores (convention openood)")
    print(f"oodkit.metrics (4 metrics)                 {t_ok * 1000:9.1f} ms")
    print(f"oodkit.metrics, threads=1                  {t_ok1 * 1000:9.1f} ms")
    print(f"oodkit.metrics, float32 scores             {t_ok32 * 1000:9.1f} ms")
    print(f"scikit-learn OpenOOD recipe (4 metrics)    {t_sk * 1000:9.1f} ms   -> {t_sk / t_ok:6.1f}x")
    print(f"scikit-learn roc_auc_score (AUROC only)    {t_auc * 1000:9.1f} ms   -> {t_auc / t_ok:6.1f}x")
    print(f"max |oodkit - sklearn| over the 4 metrics: {diff:.2e}; AUROC diff {abs(m['auroc'] - auc):.2e}")


def features(rng, n, d, centres):
    y = rng.integers(0, len(centres), n)
    return np.maximum(centres[y] + rng.normal(size=(n, d)), 0.0).astype(np.float32)


def bench_knn(n_bank, n_q, d, k, reps):
    rng = np.random.default_rng(1)
    centres = rng.normal(0.0, 1.0, size=(100, d))
    bank, queries = features(rng, n_bank, d, centres), features(rng, n_q, d, centres)
    print(f"\n## knn: bank {n_bank:,} x {d}, {n_q:,} queries, k = {k}, float32")

    det = oodkit.Detector("knn", k=k)
    t_fit, fitted = best(lambda: det.fit(bank), reps)
    t_score, s_ok = best(lambda: fitted.score(queries), reps)
    print(f"oodkit Detector('knn')   fit {t_fit:7.3f} s   score {t_score:7.3f} s   total {t_fit + t_score:7.3f} s")

    import faiss

    def faiss_fit():
        b = bank.copy()
        faiss.normalize_L2(b)
        index = faiss.IndexFlatL2(d)
        index.add(b)
        return index

    def faiss_score(index):
        q = queries.copy()
        faiss.normalize_L2(q)
        dist, _ = index.search(q, k)
        return -dist[:, -1]

    t_ffit, index = best(faiss_fit, reps)
    t_fscore, s_f = best(lambda: faiss_score(index), reps)
    tot = t_fit + t_score
    print(f"faiss IndexFlatL2        fit {t_ffit:7.3f} s   score {t_fscore:7.3f} s   total "
          f"{t_ffit + t_fscore:7.3f} s   (oodkit {(t_ffit + t_fscore) / tot:.2f}x faster)")
    print(f"  max |oodkit - faiss| score: {np.max(np.abs(s_ok - s_f)):.2e}")

    try:
        import torch
        from pytorch_ood.detector import KNN
        import pytorch_ood
    except ImportError as e:
        print(f"pytorch-ood: not importable ({e}); skipped")
        return
    zb, zq = torch.from_numpy(bank), torch.from_numpy(queries)
    labels = torch.zeros(n_bank, dtype=torch.long)
    t = time.perf_counter()
    p = KNN(None, k=k).fit_features(zb, labels)
    t_pfit = time.perf_counter() - t
    t = time.perf_counter()
    s_p = p.predict_features(zq).numpy()
    t_pscore = time.perf_counter() - t
    print(f"pytorch-ood {pytorch_ood.__version__} KNN      fit {t_pfit:7.3f} s   score {t_pscore:7.3f} s   "
          f"total {t_pfit + t_pscore:7.3f} s   (oodkit {(t_pfit + t_pscore) / tot:.2f}x faster)")
    # pytorch-ood returns the k-th distance (outlier score); oodkit the negated squared one.
    print(f"  max |oodkit - (-d_pytorch_ood^2)|: {np.max(np.abs(s_ok + s_p.astype(np.float64) ** 2)):.2e}")


def main():
    a = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a.add_argument("--scores", type=int, default=1_000_000)
    a.add_argument("--bank", type=int, default=50_000)
    a.add_argument("--queries", type=int, default=10_000)
    a.add_argument("--dim", type=int, default=512)
    a.add_argument("--k", type=int, default=50)
    a.add_argument("--reps", type=int, default=3)
    a.add_argument("--skip-knn", action="store_true")
    args = a.parse_args()
    import sklearn

    print(f"oodkit {oodkit.__version__}, numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
          f"cores {os.cpu_count()}, load average before {load()}")
    bench_metrics(args.scores, args.reps)
    if not args.skip_knn:
        bench_knn(args.bank, args.queries, args.dim, args.k, args.reps)
    print(f"\nload average after {load()}")


if __name__ == "__main__":
    main()
