"""Whole-process timing of the commands that need no network (numbers in BENCHMARKS.md).

    .venv/bin/python scripts/bench_light.py [--ood target/release/ood ...] [--scores 1000000] [--reps 3]

`ood metrics --json` on two `.npy` files of `--scores` float64 scores each, against a Python
process that loads the same files and runs scikit-learn's version of OpenOOD's
`compute_all_metrics` (roc_curve for AUROC and FPR@95, precision_recall_curve + auc for AUPR-In
and AUPR-Out), interpreter start-up and imports included, as a user would run it. Also
`ood list detectors`. Each command runs `--reps` times, alternating; the best wall time and the
peak resident memory (GNU time's %M) are printed with the machine's load. Several `--ood`
binaries (e.g. an older build) are measured in the same run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

SKLEARN = r"""
import sys, numpy as np
from sklearn import metrics as skm
id_s, ood_s = np.load(sys.argv[1]), np.load(sys.argv[2])
conf = np.concatenate([id_s, ood_s])
ood = np.r_[np.zeros(len(id_s)), np.ones(len(ood_s))]
fpr, tpr, _ = skm.roc_curve(ood, -conf)
p_in, r_in, _ = skm.precision_recall_curve(1 - ood, conf)
p_out, r_out, _ = skm.precision_recall_curve(ood, -conf)
print({"auroc": skm.auc(fpr, tpr), "fpr95": fpr[np.argmax(tpr >= 0.95)],
       "aupr_in": skm.auc(r_in, p_in), "aupr_out": skm.auc(r_out, p_out)})
"""


def timed(cmd):
    """Runs cmd under GNU time; returns (wall s, peak RSS MiB, stdout). The wall time is taken
    around the whole process (GNU time adds about a millisecond); GNU time gives the peak RSS."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t = time.perf_counter()
        out = subprocess.run(
            ["/usr/bin/time", "-f", "%e %M", "-o", tf.name, *cmd],
            check=True,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t
        kib = tf.read().split()[-1]
    return wall, int(kib) / 1024, out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ood", action="append", help="ood binaries to time (default target/release/ood)")
    ap.add_argument("--scores", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    bins = a.ood or ["target/release/ood"]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        idp, oodp = os.path.join(d, "id.npy"), os.path.join(d, "ood.npy")
        np.save(idp, rng.normal(1.0, 1.0, a.scores))
        np.save(oodp, rng.normal(0.0, 1.0, a.scores))
        cmds = {f"{b} metrics": [b, "metrics", "--id", idp, "--ood", oodp, "--json"] for b in bins}
        cmds.update({f"{b} list detectors": [b, "list", "detectors"] for b in bins})
        cmds["python + scikit-learn (OpenOOD recipe)"] = [sys.executable, "-c", SKLEARN, idp, oodp]
        best = {k: (float("inf"), 0.0) for k in cmds}
        outputs = {}
        for _ in range(a.reps):
            for name, cmd in cmds.items():
                wall, mib, out = timed(cmd)
                if wall < best[name][0]:
                    best[name] = (wall, mib)
                outputs[name] = out
        print(f"load average {open('/proc/loadavg').read().split()[:3]}, {os.cpu_count()} cores, "
              f"2 x {a.scores:,} float64 scores, best of {a.reps}")
        sk = best["python + scikit-learn (OpenOOD recipe)"][0]
        for name, (wall, mib) in best.items():
            ratio = f"{sk / wall:5.1f}x scikit-learn" if "metrics" in name else ""
            print(f"{name:60s} {wall:7.3f} s  {mib:7.1f} MiB  {ratio}")
        for b in bins:
            m = json.loads(outputs[f"{b} metrics"])
            print(f"{b}: {m}")
        print("scikit-learn:", outputs["python + scikit-learn (OpenOOD recipe)"].strip())


if __name__ == "__main__":
    main()
