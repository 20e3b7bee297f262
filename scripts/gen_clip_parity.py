#!/usr/bin/env python3
"""Reference outputs of Hugging Face transformers' CLIPModel / CLIPTokenizer for tests/clip_parity.rs.

usage: gen_clip_parity.py OUT_DIR BPE_VOCAB_GZ [--full]

Writes into OUT_DIR (nothing is committed: the test runs this script at test time):
  model/config.json, model/model.safetensors  a RANDOMLY initialised CLIPModel (seed 0), every
      parameter perturbed so LayerNorms, biases and logit_scale are non-trivial; small config
      (vision width 64, 2 layers, 4 heads, patch 8, image 32; text width 48, 2 layers, 4 heads) or,
      with --full, the ViT-B/16 sizes (used by the #[ignore]d test);
  images/*.png  random RGB images of several sizes;
  reference.safetensors  pixel_values (CLIP preprocessing done with PIL bicubic + centre crop +
      CLIP mean/std at the model's size, and at 224 for the first image: pixels224), input_ids,
      image_features / text_features (projected, unnormalised), logits_per_image;
  tokens.json  [{"text", "ids"}] from transformers' CLIPTokenizer built from the same BPE file.
"""
import gzip
import json
import os
import random
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def build_tokenizer(bpe_gz, out_dir):
    merges = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = merges[1:49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    vf = os.path.join(out_dir, "vocab.json")
    mf = os.path.join(out_dir, "merges.txt")
    with open(vf, "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(mf, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.write("\n".join(" ".join(m) for m in merges) + "\n")
    return CLIPTokenizer(vf, mf)


def strings():
    base = [
        "a photo of a dog", "the nice cat", "This is a red photo", "A Photo Of An AIRPLANE.",
        "hello, world!", "don't stop believin'", "it's we're they've I'm you'll he'd",
        "what?!?! no... yes;; maybe: (ok) [x] {y} <z>", "e-mail: someone@example.com #tag $5 100%",
        "3.14159 is pi, 42 is the answer, 1,000,000", "snake_case and kebab-case and CamelCase",
        "naïve café résumé", "Straße über Größe", "日本語のテキスト", "中文文本测试",
        "emoji 😀🐶🚀 party", "Ελληνικά κείμενο", "русский текст", "עברית", "العربية",
        "tabs\tand\nnewlines\r\nand   many    spaces", "  leading and trailing  ", "",
        "a", "!", "...", "''", "\"quoted\"", "mixed123numbers456", "x" * 50,
        "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
        "a" + " b" * 100, "the quick brown fox jumps over the lazy dog " * 10,
        "Ünïcödé wïth äccents everywhere", "ﬁne ligature", "full-width ＡＢＣ", "café (NFD)",
        "polar bear", "great white shark", "German shepherd dog", "tabby, tabby cat",
        "African elephant, Loxodonta africana", "jack-o'-lantern", "T-shirt", "CD player",
    ]
    rng = random.Random(0)
    alphabet = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                " .,;:!?'\"-()[]/&@#%*+=_éèüöñçßøåæ")
    words = ("the a photo of dog cat car plane ship bird frog horse deer truck nice this is"
             " small large red green blue running sitting old new tiny giant").split()
    for i in range(260):
        if i % 2 == 0:
            n = rng.randint(1, 40 if i % 10 else 300)
            base.append("".join(rng.choice(alphabet) for _ in range(n)))
        else:
            n = rng.randint(1, 12 if i % 9 else 120)
            base.append(" ".join(rng.choice(words) for _ in range(n)))
    return base


def preprocess(img, size):
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - MEAN) / STD
    return x.transpose(2, 0, 1)


def main():
    out, bpe = sys.argv[1], sys.argv[2]
    full = "--full" in sys.argv
    torch.manual_seed(0)
    os.makedirs(os.path.join(out, "model"), exist_ok=True)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    tok = build_tokenizer(bpe, out)
    texts = strings()
    cases = []
    for t in texts:
        ids = tok(t, padding="max_length", max_length=77, truncation=True)["input_ids"]
        cases.append({"text": t, "ids": ids})
    with open(os.path.join(out, "tokens.json"), "w", encoding="utf-8") as f:
        json.dump({"cases": cases}, f, ensure_ascii=False)

    if full:
        config = CLIPConfig(
            text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                             num_attention_heads=8),
            vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                               num_attention_heads=12, image_size=224, patch_size=16),
            projection_dim=512)
    else:
        config = CLIPConfig(
            text_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                             num_attention_heads=4),
            vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, image_size=32, patch_size=8),
            projection_dim=32)
    model = CLIPModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(1.7)
            else:
                p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(os.path.join(out, "model"), safe_serialization=True)

    rng = np.random.default_rng(0)
    size = config.vision_config.image_size
    pixels = []
    pixels224 = None
    for i, (w, h) in enumerate([(300, 200), (37, 61), (32, 32), (50, 33)]):
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr, "RGB")
        img.save(os.path.join(out, "images", f"img{i}.png"))
        pixels.append(preprocess(img, size))
        if i == 0:
            pixels224 = preprocess(img, 224)
    pixel_values = torch.from_numpy(np.stack(pixels))
    chosen = [0, 1, 2, 11, 13, 15, 20, 33]
    input_ids = torch.tensor([cases[i]["ids"] for i in chosen], dtype=torch.int64)
    with torch.no_grad():
        o = model(input_ids=input_ids, pixel_values=pixel_values)
        img_f = model.get_image_features(pixel_values=pixel_values)
        txt_f = model.get_text_features(input_ids=input_ids)
        if not torch.is_tensor(img_f):
            img_f = img_f.pooler_output
            txt_f = txt_f.pooler_output
    save_file({
        "pixel_values": pixel_values.contiguous(),
        "pixels224": torch.from_numpy(np.ascontiguousarray(pixels224)),
        "input_ids": input_ids,
        "image_features": img_f.contiguous(),
        "text_features": txt_f.contiguous(),
        "logits_per_image": o.logits_per_image.contiguous(),
    }, os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "chosen.json"), "w") as f:
        json.dump(chosen, f)


if __name__ == "__main__":
    main()
