"""faiss-cpu IndexFlatL2 side of the KNN benchmark (see BENCHMARKS.md).

Usage: .venv/bin/python scripts/bench_knn_faiss.py DIR [--k 50] [--reps 3]

DIR is what `cargo run --release -p ood-core --example knn_bench -- --dir DIR` wrote: bank.npy,
queries.npy and rust_topk.npy. Normalises both sets with OpenOOD's `x/||x|| + 1e-10`, builds an
exact IndexFlatL2, times `search` (best of reps), and compares faiss's k smallest squared distances
with oodkit's (max absolute difference over every query and every rank).
"""

import argparse
import os
import time

import faiss
import numpy as np


def normalizer(x):
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 0.0) + 1e-10


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    bank = np.load(os.path.join(a.dir, "bank.npy"))
    queries = np.load(os.path.join(a.dir, "queries.npy"))
    bank_n = np.ascontiguousarray(normalizer(bank).astype(np.float32))
    q_n = np.ascontiguousarray(normalizer(queries).astype(np.float32))
    index = faiss.IndexFlatL2(bank_n.shape[1])
    index.add(bank_n)
    times, cpu = [], []
    for _ in range(a.reps):
        c = time.process_time()
        t = time.perf_counter()
        D, _ = index.search(q_n, a.k)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    best = min(times)
    n, d = bank_n.shape
    nq = q_n.shape[0]
    print(
        f"faiss {faiss.__version__} IndexFlatL2: bank {n}x{d}, {nq} queries, k={a.k}, "
        f"omp threads {faiss.omp_get_max_threads()}"
    )
    print(
        f"  search, best of {a.reps}: {best:.3f} s (all: {[round(t, 3) for t in times]}) "
        f"= {2 * n * nq * d / best / 1e9:.1f} GFLOP/s effective"
    )
    print(f"  search CPU time (user+sys, all threads), best of {a.reps}: {min(cpu):.2f} s")
    print(f"  mean score {float(-D[:, -1].mean()):.6f}")
    rust = os.path.join(a.dir, "rust_topk.npy")
    if os.path.exists(rust):
        R = np.load(rust)
        if R.shape == D.shape:
            diff = np.abs(R - D)
            print(
                f"  vs oodkit top-{a.k} squared distances: max |diff| {diff.max():.3e}, "
                f"max |diff| at rank k {diff[:, -1].max():.3e}"
            )
        else:
            print(f"  rust_topk.npy has shape {R.shape}, faiss {D.shape}: not compared")


if __name__ == "__main__":
    main()
