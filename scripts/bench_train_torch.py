"""PyTorch eager side of the training-throughput benchmark (BENCHMARKS.md, "Training throughput").

The same CE step as crates/ood-nn/examples/train_throughput.rs, written the usual PyTorch way:
per-epoch shuffle, random crop (padding 4) + horizontal flip of each image of the batch, forward,
F.cross_entropy, zero_grad, backward, torch.optim.SGD (momentum 0.9, Nesterov, weight decay 5e-4,
PyTorch's default foreach implementation), cosine learning rate set per step, and `loss.item()`
each step (the Rust loop reads the loss each step too). Random 32x32 inputs, two epochs of
`steps` batches; the second epoch's images per second is the figure. Optional bf16 autocast
(`torch.autocast(device, dtype=torch.bfloat16)`) and channels-last. Prints one JSON line.

    .venv/bin/python scripts/bench_train_torch.py --model resnet20 --batch 128 --steps 20 --threads 2
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "crates", "ood-nn", "tests", "data"))
from bench_extract_torch import ResNet  # noqa: E402  (akamaster ResNet-20/56, as ood-nn's)
from make_model_fixtures import CifarResNet  # noqa: E402  (OpenOOD ResNet18_32x32, as ood-nn's)


def augment(x, gen, pad=4):
    n, c, h, w = x.shape
    padded = x.new_zeros(n, c, h + 2 * pad, w + 2 * pad)
    padded[:, :, pad:pad + h, pad:pad + w] = x
    offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen).tolist()
    flips = torch.rand(n, generator=gen).lt(0.5).tolist()
    out = []
    for i in range(n):
        dy, dx = offs[i]
        xi = padded[i, :, dy:dy + h, dx:dx + w]
        if flips[i]:
            xi = xi.flip(2)
        out.append(xi)
    return torch.stack(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet20", choices=["resnet20", "cifar_resnet18"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--malloc-tuned", action="store_true",
                    help="label only: the caller set MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    n = a.batch * a.steps
    images = torch.randn(n, 3, 32, 32)
    labels = torch.randint(0, 10, (n,))
    model = (ResNet(3) if a.model == "resnet20" else CifarResNet([2, 2, 2, 2], 10)).to(dev)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    lr0, lr_min, epochs = 0.1, 1e-6, 2
    opt = torch.optim.SGD(model.parameters(), lr=lr0, momentum=0.9, nesterov=True, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    total = epochs * a.steps
    rates = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        for step in range(a.steps):
            idx = order[step * a.batch:(step + 1) * a.batch]
            x = augment(images.index_select(0, idx), gen).to(dev)
            y = labels.index_select(0, idx).to(dev)
            if a.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
                _, logits = model(x)
                loss = F.cross_entropy(logits, y)
            loss_v = loss.item()
            opt.zero_grad(set_to_none=False)
            loss.backward()
            t = epoch * a.steps + step
            for g in opt.param_groups:
                g["lr"] = lr_min + 0.5 * (lr0 - lr_min) * (1 + math.cos(math.pi * t / total))
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - t0))
    print(json.dumps({
        "impl": f"PyTorch {torch.__version__} eager",
        "model": a.model,
        "batch": a.batch,
        "steps": a.steps,
        "threads": torch.get_num_threads(),
        "device": a.device,
        "precision": a.precision,
        "channels_last": a.channels_last,
        "malloc_tuned": a.malloc_tuned,
        "warmup_epoch_images_per_second": rates[0],
        "images_per_second": rates[1],
        "final_loss": loss_v,
    }))


if __name__ == "__main__":
    main()
