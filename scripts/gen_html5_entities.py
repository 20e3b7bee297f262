#!/usr/bin/env python3
"""Writes crates/ood-nn/src/text/data/html5_entities.tsv from Python's html.entities.html5 (the
table html.unescape uses): one `name<TAB>hex codepoints` line per entry, legacy names without `;`
included. Used by the CLIP tokenizer's text cleaning (src/text/clip_bpe.rs)."""
import html.entities
import pathlib

out = pathlib.Path(__file__).resolve().parent.parent / "crates/ood-nn/src/text/data/html5_entities.tsv"
rows = [k + "\t" + " ".join("%x" % ord(c) for c in v) for k, v in sorted(html.entities.html5.items())]
out.write_text("\n".join(rows) + "\n")
print(f"{len(rows)} entities -> {out}")
