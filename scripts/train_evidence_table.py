"""Markdown tables of the equal-budget training comparison (scripts/train_evidence).

    python3 scripts/train_evidence_table.py DIR        # DIR as given to scripts/train_evidence

Reads DIR/runs/<method>/state.json (per-epoch seconds and images per second), DIR/train-<method>.err
(wall time, peak RSS), DIR/bench-<method>.json (`ood bench --json`) and, for the contrastive
methods, DIR/bench-<method>-norm.json (Mahalanobis on L2-normalised features, their papers' score);
DIR/bench-base.json is the released network without fine-tuning. Standard library only.
"""

import json
import os
import re
import sys

METHODS = ["base", "ce", "oe", "mixoe", "supcon", "reweightood", "tagfog"]
LABEL = {"base": "none (released)", "ce": "CE", "oe": "OE", "mixoe": "MixOE", "supcon": "SupCon",
         "reweightood": "ReweightOOD", "tagfog": "TagFog"}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def by_detector(bench):
    out = {}
    for r in bench["rows"]:
        if r["dataset"] in ("nearood", "farood"):
            out.setdefault(r["detector"], {})[r["dataset"]] = r
    return out


def main(d):
    benches = {m: load(os.path.join(d, f"bench-{m}.json")) for m in METHODS}
    methods = [m for m in METHODS if benches[m]]
    print("| method | epochs | wall time | ID img/s | peak RSS | ID accuracy | best near AUROC | best far AUROC |")
    print("|---|---|---|---|---|---|---|---|")
    for m in methods:
        b = benches[m]
        rows = by_detector(b)
        best_near = max(rows.items(), key=lambda kv: kv[1]["nearood"]["auroc"])
        best_far = max(rows.items(), key=lambda kv: kv[1]["farood"]["auroc"])
        st = load(os.path.join(d, "runs", m, "state.json"))
        err = os.path.join(d, f"train-{m}.err")
        wall, rss = "—", "—"
        if os.path.exists(err):
            t = open(err).read()
            w = re.search(r"in ([0-9.]+) s", t)
            r = re.search(r"Maximum resident set size \(kbytes\): (\d+)", t)
            wall = f"{float(w.group(1)):.0f} s" if w else "—"
            rss = f"{int(r.group(1)) / 1e6:.1f} GB" if r else "—"
        ips = "—"
        epochs = "0"
        if st:
            logs = st["logs"]
            epochs = str(len(logs))
            n = sum(l["images_per_second"] * l["seconds"] for l in logs)
            ips = f"{n / sum(l['seconds'] for l in logs):.0f}"
        print(f"| {LABEL[m]} | {epochs} | {wall} | {ips} | {rss} | {100 * b['id_accuracy']:.2f} % | "
              f"{100 * best_near[1]['nearood']['auroc']:.2f} ({best_near[0]}) | "
              f"{100 * best_far[1]['farood']['auroc']:.2f} ({best_far[0]}) |")
    dets = list(by_detector(benches[methods[0]]).keys())
    extra = {}
    for m in ("supcon", "reweightood"):
        nb = load(os.path.join(d, f"bench-{m}-norm.json"))
        if nb:
            extra[m] = by_detector(nb).get("mahalanobis")
    for group, metric, title in [("nearood", "auroc", "near-OOD AUROC (Tiny-ImageNet test)"),
                                 ("nearood", "fpr95", "near-OOD FPR@95"),
                                 ("farood", "auroc", "far-OOD AUROC (mean of MNIST, notMNIST, Fashion-MNIST, DTD subset)"),
                                 ("farood", "fpr95", "far-OOD FPR@95 (mean)")]:
        print()
        print(f"**{title}**, %:")
        print()
        print("| detector | " + " | ".join(LABEL[m] for m in methods) + " |")
        print("|---|" + "---|" * len(methods))
        for det in dets + ["mahalanobis normalize=true"]:
            cells = []
            for m in methods:
                if det == "mahalanobis normalize=true":
                    r = extra.get(m)
                else:
                    r = by_detector(benches[m]).get(det)
                cells.append(f"{100 * r[group][metric]:.2f}" if r else "")
            if any(cells):
                print(f"| {det} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
