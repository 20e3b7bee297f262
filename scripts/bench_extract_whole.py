"""Whole-process feature extraction, `ood extract` against a PyTorch eager script doing the same
work (numbers in BENCHMARKS.md, "Feature extraction").

    .venv/bin/python scripts/bench_extract_whole.py [--ood target/release/ood] [--threads 2]
        [--batch 256] [--reps 2] [--models resnet20,resnet56,cifar_resnet18,resnet50]

Each model runs as two whole processes, alternating, best of `--reps`:
- `ood extract --model M --weights W --data tar:ARCHIVE --out F --batch-size B --threads T`
- this script with `--peer`: Python start-up, `import torch`, the same network in plain PyTorch
  (eval, no_grad, float32), the same archive read in order with `tarfile`, Pillow decoding (and,
  for 224-px models, Pillow's bilinear resize of the shorter side to 256 and a centre crop),
  normalisation, batches of B, features and logits written with `np.save`.
Then the two feature matrices are compared (max |difference|, and relative to the largest
feature). ResNet-20/56 use the released akamaster weights and the 10,000 CIFAR-10 JPEG test
images; cifar_resnet18 (OpenOOD's ResNet18_32x32) the same images with seeded random weights;
resnet50 (torchvision layout) seeded random weights on the 300 DTD images (300-640 px).
"""

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CIFAR = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def models(root):
    """name -> (weights or None for seeded random, archive, input size, mean/std)."""
    aka = os.path.join(root, "models/akamaster-resnet-cifar10")
    cifar = os.path.join(root, "data/cifar10-jpeg/cifar10_test_jpeg.tar.gz")
    return {
        "resnet20": (os.path.join(aka, "resnet20-12fca82f.safetensors"), cifar, 32, IMAGENET),
        "resnet56": (os.path.join(aka, "resnet56-4bfd9763.safetensors"), cifar, 32, IMAGENET),
        "cifar_resnet18": (None, cifar, 32, CIFAR),
        "resnet50": (None, os.path.join(root, "data/dtd-subset10/dtd10_30perclass_jpeg.tar"), 224, IMAGENET),
    }


def build(name):
    import torch.nn as nn
    import torch.nn.functional as F

    if name in ("resnet20", "resnet56"):
        sys.path.insert(0, HERE)
        from bench_extract_torch import ResNet

        return ResNet((int(name[6:]) - 2) // 6)

    class Basic(nn.Module):  # OpenOOD ResNet18_32x32 block
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != planes:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class Bottleneck(nn.Module):  # torchvision v1.5
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = None
            if stride != 1 or cin != planes * 4:
                self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = F.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return F.relu(out + (x if self.downsample is None else self.downsample(x)))

    class Net(nn.Module):
        def __init__(self, block, counts, stem224, exp):
            super().__init__()
            if stem224:
                self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            else:
                self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.stem224 = stem224
            cin = 64
            for s, (n, planes) in enumerate(zip(counts, [64, 128, 256, 512])):
                blocks = []
                for i in range(n):
                    blocks.append(block(cin, planes, 2 if s > 0 and i == 0 else 1))
                    cin = planes * exp
                setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
            self.fc = nn.Linear(512 * exp, 10)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            if self.stem224:
                out = F.max_pool2d(out, 3, 2, 1)
            out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
            feat = F.adaptive_avg_pool2d(out, 1).flatten(1)
            return feat, self.fc(feat)

    if name == "cifar_resnet18":
        return Net(Basic, [2, 2, 2, 2], False, 1)
    return Net(Bottleneck, [3, 4, 6, 3], True, 4)


def read_safetensors(path):
    import torch

    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    return {k: torch.from_numpy(np.frombuffer(body[v["data_offsets"][0]:v["data_offsets"][1]], dtype=np.float32)
                                .reshape(v["shape"]).copy())
            for k, v in header.items() if k != "__metadata__"}


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for k, t in tensors.items():
        b = t.detach().float().contiguous().numpy().tobytes()
        header[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def random_weights(name, path):
    """Seeded random weights with non-trivial BatchNorm statistics, in the model's tensor names."""
    import torch

    torch.manual_seed(0)
    net = build(name)
    sd = {}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_var"):
            v = torch.rand_like(v) + 0.5
        elif k.endswith("running_mean") or (k.endswith("bias") and "bn" in k):
            v = torch.randn_like(v) * 0.1
        elif "bn" in k or "shortcut.1" in k or "downsample.1" in k:
            v = torch.rand_like(v) * 0.5 + 0.5
        sd[k] = v
    write_safetensors(path, sd)


def peer(name, weights, archive, size, threads, batch, out):
    """The PyTorch eager process: what `ood extract` does, in plain PyTorch + Pillow."""
    import torch
    from PIL import Image

    torch.set_num_threads(threads)
    (mean, std) = models("")[name][3]
    net = build(name)
    net.load_state_dict(read_safetensors(weights), strict=False)
    net.eval()
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    feats, logits, pending = [], [], []

    def flush():
        x = torch.from_numpy(np.stack(pending)).permute(0, 3, 1, 2).float().div_(255)
        with torch.no_grad():
            f, z = net((x - mean) / std)
        feats.append(f.numpy())
        logits.append(z.numpy())
        pending.clear()

    with tarfile.open(archive, "r|*") as tf:
        for m in tf:
            if not m.isfile() or not m.name.lower().endswith((".jpg", ".jpeg", ".png")):
                continue
            img = Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB")
            if size > 64:
                w, h = img.size  # torchvision Resize(256): the longer side truncated
                nw, nh = (256, 256 * h // w) if w <= h else (256 * w // h, 256)
                img = img.resize((nw, nh), Image.BILINEAR)
                w, h = img.size
                left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
                img = img.crop((left, top, left + size, top + size))
            pending.append(np.asarray(img))
            if len(pending) == batch:
                flush()
    if pending:
        flush()
    np.save(out + ".features.npy", np.concatenate(feats))
    np.save(out + ".logits.npy", np.concatenate(logits))


def read_tensor(path, name):
    """One tensor of an `ood extract` output file (features, logits: F32; labels: I64)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        v = header[name]
        f.seek(8 + n + v["data_offsets"][0])
        raw = f.read(v["data_offsets"][1] - v["data_offsets"][0])
    return np.frombuffer(raw, dtype={"F32": np.float32, "I64": np.int64}[v["dtype"]]).reshape(v["shape"])


def weights_real(name):
    return name in ("resnet20", "resnet56")


def timed(cmd, env=None):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ood", default="target/release/ood")
    ap.add_argument("--data-root", default=os.path.join(HERE, "..", "..", "shared"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--models", default="resnet20,resnet56,cifar_resnet18,resnet50")
    ap.add_argument("--bf16", action="store_true", help="also time `ood extract --precision bf16`")
    ap.add_argument("--peer", nargs=3, metavar=("MODEL", "WEIGHTS", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    table = models(a.data_root)
    if a.peer:
        name, weights, out = a.peer
        _, archive, size, _ = table[name]
        peer(name, weights, archive, size, a.threads, a.batch, out)
        return
    print(f"load average {open('/proc/loadavg').read().split()[:3]}, {os.cpu_count()} cores, "
          f"threads {a.threads}, batch {a.batch}, best of {a.reps} whole processes, alternating")
    with tempfile.TemporaryDirectory() as d:
        for name in a.models.split(","):
            weights, archive, size, _ = table[name]
            if weights is None:
                weights = os.path.join(d, f"{name}.safetensors")
                random_weights(name, weights)
            out = os.path.join(d, f"{name}.ood.safetensors")
            ood = [a.ood, "extract", "--model", name, "--weights", weights, "--data", f"tar:{archive}",
                   "--out", out, "--batch-size", str(a.batch), "--threads", str(a.threads)]
            py = [sys.executable, os.path.abspath(__file__), "--data-root", a.data_root, "--threads",
                  str(a.threads), "--batch", str(a.batch), "--peer", name, weights, os.path.join(d, name)]
            out16 = os.path.join(d, f"{name}.bf16.safetensors")
            ood16 = [x if x != out else out16 for x in ood] + ["--precision", "bf16"]
            runs = {"fp32": (ood, out), **({"bf16": (ood16, out16)} if a.bf16 else {})}
            t = {k: [] for k in [*runs, "py"]}
            for _ in range(a.reps):
                for k, (cmd, o) in runs.items():
                    for p in (o, o + ".config.json"):
                        if os.path.exists(p):
                            os.remove(p)
                    t[k].append(timed(cmd))
                t["py"].append(timed(py))
            f_py = np.load(os.path.join(d, name) + ".features.npy")
            z_py = np.load(os.path.join(d, name) + ".logits.npy")
            for k, (_, o) in runs.items():
                f_ood = read_tensor(o, "features")
                z_ood = read_tensor(o, "logits")
                diff = np.abs(f_ood - f_py).max()
                agree = (z_ood.argmax(1) == z_py.argmax(1)).mean()
                labels = read_tensor(o, "labels")
                acc = f", accuracy {100 * (z_ood.argmax(1) == labels).mean():.2f}% (PyTorch fp32 " \
                      f"{100 * (z_py.argmax(1) == labels).mean():.2f}%)" if weights_real(name) else ""
                print(f"{name:15s} {k} {len(f_ood):6d} images  ood {min(t[k]):7.2f} s  PyTorch eager fp32 "
                      f"{min(t['py']):7.2f} s  {min(t['py']) / min(t[k]):5.2f}x  features max |diff| {diff:.2e} "
                      f"({diff / np.abs(f_py).max():.1e} of the largest), top-1 agreement {100 * agree:.2f}%{acc}",
                      flush=True)


if __name__ == "__main__":
    main()
