"""PyTorch side of the feature-extraction benchmark (see BENCHMARKS.md, "Feature extraction").

Times akamaster ResNet-20/56 CPU inference (eval, no_grad, float32) on the first N CIFAR-10 JPEG
test images with a fixed batch size and thread count, mirroring
crates/ood-nn/examples/extract_bench.rs. Images are decoded with Pillow once, before timing.

    PYTHONPATH=<dir with Pillow> .venv/bin/python scripts/bench_extract_torch.py \
        --data-root ../shared --n 10000 --batch-size 256 --threads 2
"""
import argparse
import io
import json
import os
import statistics
import struct
import tarfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image


class Block(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if (stride != 1 or cin != planes) else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        s = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + s)


class ResNet(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for stage, planes in enumerate([16, 32, 64]):
            blocks = []
            for i in range(n):
                blocks.append(Block(cin, planes, 2 if stage > 0 and i == 0 else 1))
                cin = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        feat = F.avg_pool2d(out, out.size()[3]).flatten(1)
        return feat, self.linear(feat)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(body[a:b], dtype=np.float32).reshape(v["shape"]).copy())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tar = os.path.join(a.data_root, "data/cifar10-jpeg/cifar10_test_jpeg.tar.gz")
    order = open(os.path.join(a.data_root, "data/cifar10-jpeg/cifar10_test_order.txt")).read().split()
    t = time.perf_counter()
    with tarfile.open(tar) as tf:
        members = {m.name: m for m in tf.getmembers() if m.isfile()}
        imgs = [np.asarray(Image.open(io.BytesIO(tf.extractfile(members[name]).read())).convert("RGB"))
                for name in order[: a.n]]
    decode_s = time.perf_counter() - t
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = ((x - mean) / std).contiguous()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, n {a.n}, "
          f"batch {a.batch_size}, PIL decode+read {decode_s:.2f} s")
    for depth, fname in [(20, "resnet20-12fca82f"), (56, "resnet56-4bfd9763")]:
        net = ResNet((depth - 2) // 6)
        net.load_state_dict(read_safetensors(os.path.join(
            a.data_root, f"models/akamaster-resnet-cifar10/{fname}.safetensors")), strict=False)
        net.eval()
        times = []
        with torch.no_grad():
            net(x[: a.batch_size])  # warm-up
            for _ in range(a.repeats):
                t = time.perf_counter()
                for i in range(0, a.n, a.batch_size):
                    net(x[i:i + a.batch_size])
                times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(f"resnet{depth}: inference median {med:.2f} s over {a.repeats} runs, {a.n / med:.0f} img/s")


if __name__ == "__main__":
    main()
