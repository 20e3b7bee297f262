#!/usr/bin/env python3
"""Generates crates/ood-nn/tests/data/clip_bpe_fixture.json: open_clip's CLIP tokenizer output
(context 77) for a few hundred strings, the reference for src/text/clip_bpe.rs.

open_clip's tokenizer.py needs `ftfy` and `regex`, which the project venv does not have; install
them aside and run the tokenizer straight from the wheel (not the package __init__, which would
import timm/huggingface):

  .venv/bin/pip download --no-deps open_clip_torch==3.3.0 -d /tmp/oc
  python3 -m zipfile -e /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl /tmp/oc/x
  .venv/bin/pip install --target /tmp/ocdeps ftfy regex
  PYTHONPATH=/tmp/ocdeps .venv/bin/python scripts/gen_clip_bpe_fixture.py /tmp/oc/x/open_clip

Each case records `ids` (open_clip exactly, with ftfy) and `ftfy_changes`: whether the ids differ
when ftfy.fix_text is skipped (the Rust tokenizer has no ftfy; it must match where this is false).
"""

import importlib.util
import json
import pathlib
import sys

import ftfy

root = pathlib.Path(__file__).resolve().parent.parent
oc_dir = pathlib.Path(sys.argv[1])
spec = importlib.util.spec_from_file_location("oc_tokenizer", oc_dir / "tokenizer.py")
tok_mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tok_mod)
tok = tok_mod.SimpleTokenizer(str(oc_dir / "bpe_simple_vocab_16e6.txt.gz"))

# The same tokenizer with ftfy.fix_text replaced by the identity.
tok_mod_noftfy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tok_mod_noftfy)
tok_mod_noftfy.ftfy = type("NoFtfy", (), {"fix_text": staticmethod(lambda s: s)})
tok_noftfy = tok_mod_noftfy.SimpleTokenizer(str(oc_dir / "bpe_simple_vocab_16e6.txt.gz"))

cases = [
    "", "   ", "a photo of a cat.", "a photo of a {}.", "A PHOTO OF A DOG!", "tabby cat",
    "It's a dog's life, isn't it? I'LL see; we'd've gone.", "they're here, you've won, I'm ok",
    "x=1+2*3/4-5; (a) [b] {c} <d> 'e' \"f\" `g` ~h ^i |j \\k",
    "3.14159 is pi, 2,000,000 people, 007, 1st 2nd 3rd 4th", "covid-19 r2-d2 c-3po mp3 h2o",
    "snake_case and kebab-case and camelCase", "...!!!???---___",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;single&#39; &#x263A; &nbsp;x",
    "&amp;amp; double escaped", "tom &amp jerry", "&copy 2024 &notit;",
    "tabs\tand\nnew\r\nlines   and   spaces", "\u00a0non-breaking\u2003em space\u3000ideographic",
    "café naïve résumé façade Ångström", "ÜBER GROSS straße", "Ελληνικά γράμματα ΣΊΣΥΦΟΣ",
    "Привет, мир! Москва", "東京タワーと富士山", "北京欢迎你", "한국어 텍스트", "עברית ערבית عربي",
    "हिन्दी भाषा", "ไทย ภาษา", "emoji 🐱🐶🚀 and ❤️ and 👍🏽", "math ∑∫√∞ ≤ ≥ ≠ ±",
    "symbols © ® ™ § ¶ † ‡ • … ‰", "currency $5 €10 £20 ¥30 ₹40", "a—b–c-d", "fractions ½ ¼ ¾",
    "superscripts x² y³ and subscripts H₂O", "accents: e\u0301 (combining) vs é (precomposed)",
    "zero\u200bwidth\u200cjoin\u200d", "control\x07chars\x1fhere",
    "“curly quotes” and ‘single’ ones", "ligature ﬁnance ﬂow", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "mojibake cafÃ© and â€œquotesâ€\x9d",
    "a photo of the number: \"3\".", "a bad photo of a airplane.", "a origami automobile.",
    "itap of a bird.", "a photo of the large deer.", "art of the frog.", "a tattoo of the horse.",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    " ".join(["word"] * 100), " ".join(f"token{i}" for i in range(60)),
    "<start_of_text> inside <end_of_text> text", "<START_OF_TEXT>upper",
]
wordnet = pathlib.Path("/usr/share/wordnet/index.noun")
if wordnet.exists():
    lemmas = [line.split(" ", 1)[0] for line in wordnet.read_text().splitlines() if not line.startswith(" ")]
    cases += [lemmas[i].replace("_", " ") for i in range(0, len(lemmas), max(1, len(lemmas) // 200))][:200]
    cases += [f"a photo of a {lemmas[i].replace('_', ' ')}." for i in range(7, len(lemmas), len(lemmas) // 40)][:40]

out = []
for text in cases:
    ids = tok([text])[0].tolist()
    ids_noftfy = tok_noftfy([text])[0].tolist()
    out.append({
        "text": text,
        "ids": ids,
        "ftfy_changes": ids != ids_noftfy,
        "ftfy_text_changes": ftfy.fix_text(text) != text,
    })
path = root / "crates/ood-nn/tests/data/clip_bpe_fixture.json"
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps({
    "generator": "scripts/gen_clip_bpe_fixture.py",
    "open_clip_tokenizer": "open_clip_torch 3.3.0 SimpleTokenizer(clean='lower'), context 77",
    "ftfy_version": ftfy.__version__,
    "vocab_size": tok.vocab_size,
    "cases": out,
}, ensure_ascii=False, indent=0))
n_ftfy = sum(c["ftfy_changes"] for c in out)
print(f"{len(out)} cases ({n_ftfy} where ftfy changes the ids) -> {path}")
