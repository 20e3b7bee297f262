"""Markdown tables of the hold-out-class evidence run (scripts/holdout_evidence).

    python3 scripts/holdout_evidence_table.py DIR      # DIR as given to scripts/holdout_evidence

Reads DIR/bench-<model>.json (`ood bench --json`), DIR/runs/<model>/state.json (epochs, images per
second) and DIR/train-<model>.err (wall time, peak RSS). Standard library only.
"""

import json
import os
import re
import sys

MODELS = ["ce", "ce-ft", "oe", "mixoe"]
LABEL = {"ce": "CE (from scratch)", "ce-ft": "CE +fine-tune (control)", "oe": "OE +fine-tune",
         "mixoe": "MixOE +fine-tune"}
SHOWN = ["msp", "max_logit", "energy", "knn", "vim", "mahalanobis"]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def near_rows(bench):
    return {r["detector"]: r for r in bench["rows"] if r["dataset"] == "nearood"}


def main(d):
    benches = {m: load(os.path.join(d, f"bench-{m}.json")) for m in MODELS}
    models = [m for m in MODELS if benches[m]]
    print("| model | epochs | wall time | img/s | peak RSS | ID accuracy | "
          + " | ".join(f"{s} AUROC / FPR@95" for s in SHOWN) + " | best AUROC |")
    print("|---|---|---|---|---|---|" + "---|" * len(SHOWN) + "---|")
    for m in models:
        rows = near_rows(benches[m])
        st = load(os.path.join(d, "runs", m, "state.json"))
        wall, rss, ips, epochs = "—", "—", "—", "—"
        err = os.path.join(d, f"train-{m}.err")
        if os.path.exists(err):
            t = open(err).read()
            w = re.search(r"in ([0-9.]+) s", t)
            r = re.search(r"Maximum resident set size \(kbytes\): (\d+)", t)
            wall = f"{float(w.group(1)):.0f} s" if w else "—"
            rss = f"{int(r.group(1)) / 1e6:.1f} GB" if r else "—"
        if st:
            logs = st["logs"]
            epochs = str(len(logs))
            n = sum(l["images_per_second"] * l["seconds"] for l in logs)
            ips = f"{n / sum(l['seconds'] for l in logs):.0f}"
        cells = []
        for s in SHOWN:
            r = rows.get(s)
            cells.append(f"{100 * r['auroc']:.2f} / {100 * r['fpr95']:.2f}" if r else "—")
        best = max(rows.items(), key=lambda kv: kv[1]["auroc"])
        print(f"| {LABEL[m]} | {epochs} | {wall} | {ips} | {rss} | "
              f"{100 * benches[m]['id_accuracy']:.2f} % | " + " | ".join(cells)
              + f" | {100 * best[1]['auroc']:.2f} ({best[0]}) |")
    print()
    print("| detector | " + " | ".join(LABEL[m] for m in models) + " |")
    print("|---|" + "---|" * len(models))
    dets = sorted(set().union(*(near_rows(benches[m]).keys() for m in models)))
    for det in dets:
        cells = []
        for m in models:
            r = near_rows(benches[m]).get(det)
            cells.append(f"{100 * r['auroc']:.2f} / {100 * r['fpr95']:.2f}" if r else "skipped")
        print(f"| {det} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "holdout-evidence")
