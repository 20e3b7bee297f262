#!/usr/bin/env python3
"""Reference all-MiniLM-L6-v2 sentence encoder in plain PyTorch (eager), for parity and timing.

Independent of the Rust code: its own safetensors reader, its own BERT WordPiece tokenizer
(BertNormalizer: clean text, CJK spacing, lower-case, strip accents; BertPreTokenizer: whitespace
and punctuation split; greedy longest-match WordPiece with "##"), and the Hugging Face
`BertModel` forward written out with torch.nn.functional (eager attention with an additive
finfo.min padding mask, exact erf GELU), then sentence-transformers' mean pooling + L2 normalise.
`transformers`, `tokenizers` and `safetensors` are not installed in the venv, hence all by hand.

Usage (see BENCHMARKS.md):
  python scripts/bench_minilm_torch.py --model DIR --phrases LINES.txt --batch 32 --threads 2 \
      [--golden DIR] [--rust EMB.safetensors] [--repeat 3]
"""

import argparse
import json
import struct
import time
import unicodedata

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name.removeprefix("bert.")] = torch.from_numpy(arr.copy())
    return out, header.get("__metadata__", {})


# ---------------------------------------------------------------- tokenizer (HF BertTokenizer)
def _is_punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_control(ch):
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf")


def _is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_cjk(cp):
    return (
        0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F
    )


class WordPiece:
    def __init__(self, vocab_path, max_len):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        self.max_len = max_len
        self.cls, self.sep, self.unk = self.vocab["[CLS]"], self.vocab["[SEP]"], self.vocab["[UNK]"]

    def _normalize(self, text):
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                out.append(" ")
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        text = "".join(out).lower()
        text = unicodedata.normalize("NFD", text)
        return "".join(c for c in text if unicodedata.category(c) != "Mn")

    def _words(self, text):
        words = []
        for w in self._normalize(text).split():
            cur = ""
            for ch in w:
                if _is_punct(ch):
                    if cur:
                        words.append(cur)
                    words.append(ch)
                    cur = ""
                else:
                    cur += ch
            if cur:
                words.append(cur)
        return words

    def _pieces(self, word):
        if len(word) > 100:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.vocab:
                    found = self.vocab[sub]
                    break
                end -= 1
            if found is None:
                return [self.unk]
            ids.append(found)
            start = end
        return ids

    def encode(self, text):
        ids = [i for w in self._words(text) for i in self._pieces(w)]
        return [self.cls] + ids[: self.max_len - 2] + [self.sep]


# ---------------------------------------------------------------- model
class Bert:
    def __init__(self, model_dir):
        with open(f"{model_dir}/config.json") as f:
            self.cfg = json.load(f)
        self.w, _ = read_safetensors(f"{model_dir}/model.safetensors")
        self.eps = self.cfg["layer_norm_eps"]
        self.nh = self.cfg["num_attention_heads"]

    def _ln(self, x, p):
        w = self.w
        return F.layer_norm(x, x.shape[-1:], w[p + ".weight"], w[p + ".bias"], self.eps)

    def _lin(self, x, p):
        return F.linear(x, self.w[p + ".weight"], self.w[p + ".bias"])

    def forward(self, ids, mask):
        w = self.w
        b, t = ids.shape
        x = (
            F.embedding(ids, w["embeddings.word_embeddings.weight"])
            + w["embeddings.token_type_embeddings.weight"][0]
            + w["embeddings.position_embeddings.weight"][:t]
        )
        x = self._ln(x, "embeddings.LayerNorm")
        h = x.shape[-1]
        dh = h // self.nh
        add = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}"

            def heads(y):
                return y.view(b, t, self.nh, dh).transpose(1, 2)

            q = heads(self._lin(x, p + ".attention.self.query"))
            k = heads(self._lin(x, p + ".attention.self.key"))
            v = heads(self._lin(x, p + ".attention.self.value"))
            s = q @ k.transpose(-1, -2) / dh**0.5 + add
            ctx = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, h)
            a = self._ln(self._lin(ctx, p + ".attention.output.dense") + x, p + ".attention.output.LayerNorm")
            inter = F.gelu(self._lin(a, p + ".intermediate.dense"))
            x = self._ln(self._lin(inter, p + ".output.dense") + a, p + ".output.LayerNorm")
        return x


def encode(model, tok, sentences, batch):
    out = []
    with torch.inference_mode():
        for s in range(0, len(sentences), batch):
            seqs = [tok.encode(x) for x in sentences[s : s + batch]]
            t = max(len(q) for q in seqs)
            ids = torch.zeros(len(seqs), t, dtype=torch.long)
            mask = torch.zeros(len(seqs), t, dtype=torch.long)
            for r, q in enumerate(seqs):
                ids[r, : len(q)] = torch.tensor(q)
                mask[r, : len(q)] = 1
            hid = model.forward(ids, mask)
            m = mask[..., None].float()
            mean = (hid * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(F.normalize(mean, p=2, dim=1))
    return torch.cat(out).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--phrases", required=True, help="one phrase per line")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--golden", help="folder with golden_sentences.txt + golden_embeddings_5sentences.npy")
    ap.add_argument("--rust", help="safetensors with `embeddings` from the Rust encoder, same phrases")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = Bert(args.model)
    tok = WordPiece(f"{args.model}/vocab.txt", args.max_len)
    print(f"load: {time.perf_counter() - t0:.3f} s")

    if args.golden:
        with open(f"{args.golden}/golden_sentences.txt") as f:
            sents = [line.rstrip("\n") for line in f if line.strip()]
        want = np.load(f"{args.golden}/golden_embeddings_5sentences.npy")
        got = encode(model, tok, sents, 5)
        print(f"golden: max |torch - sentence-transformers| = {np.abs(got - want).max():.3e}")

    with open(args.phrases, encoding="utf-8") as f:
        phrases = [line.rstrip("\n") for line in f]
    encode(model, tok, phrases[: args.batch], args.batch)  # warm-up
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        emb = encode(model, tok, phrases, args.batch)
        times.append(time.perf_counter() - t0)
    tok_t0 = time.perf_counter()
    for p in phrases:
        tok.encode(p)
    tok_s = time.perf_counter() - tok_t0
    best = min(times)
    print(
        f"torch eager: {len(phrases)} phrases, batch {args.batch}, {args.threads} threads: "
        f"best {best:.3f} s ({len(phrases) / best:.0f} phrases/s), all runs "
        + ", ".join(f"{t:.3f}" for t in times)
        + f"; python tokenisation alone {tok_s:.3f} s"
    )
    if args.rust:
        tensors, meta = read_safetensors(args.rust)
        rust = tensors["embeddings"].numpy()
        assert rust.shape == emb.shape, (rust.shape, emb.shape)
        diff = np.abs(rust - emb).max()
        print(f"parity: max |rust - torch| over {emb.shape} = {diff:.3e}")
        if diff > 1e-4:
            raise SystemExit("parity FAILED (> 1e-4)")


if __name__ == "__main__":
    main()
