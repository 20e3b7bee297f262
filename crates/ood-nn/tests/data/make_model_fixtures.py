"""Generates the parity fixtures of crates/ood-nn/tests/model_parity.rs.

Run from the repository root with the project venv (torch 2.11; torchvision is not needed):
    .venv/bin/python crates/ood-nn/tests/data/make_model_fixtures.py

The reference networks below are plain-torch re-statements of the official definitions:
  * OpenOOD `openood/networks/resnet18_32x32.py` (ResNet18_32x32, BasicBlock; ResNet-34 = 3-4-6-3),
  * OpenOOD `openood/networks/wrn.py` == Outlier Exposure `CIFAR/models/wrn.py` (WideResNet),
  * torchvision `torchvision/models/resnet.py` (ResNet, BasicBlock, Bottleneck v1.5), which OpenOOD's
    ImageNet-200 `ResNet18_224x224` subclasses.
Module attribute names are kept so that `state_dict()` names equal the originals'.

Weights are NOT committed (ResNet-101 alone is 170 MB). Every parameter and buffer (except
`num_batches_tracked`) is set by a closed formula that the Rust test reproduces with the same libtorch:
tensors are taken in sorted-name order, t = position, v = sin(arange(numel, f64) * 1.37 + t * 0.71), then
  dim >= 2 (conv / linear weight): v * 2 / sqrt(fan_in)      (variance 2 / fan_in, He-like)
  *.running_mean: 0.1 v;   *.running_var: 1 + 0.25 v;   other 1-d *.weight (BN): 1 + 0.2 v;   *.bias: 0.1 v
all computed in float64 and cast to float32. The input is sin(arange(n*3*h*w, f64) * 0.913 + 0.5) reshaped to
(n, 3, h, w), cast to float32. Outputs (eval mode): `<arch>.features`, `<arch>.logits` in
model_parity.safetensors, the state_dict names/shapes in model_names.json, and the full state_dict of the
small WRN-16-1 (with num_batches_tracked, as PyTorch saves it) in wrn16_1_weights.safetensors so the Rust
loader is exercised on a real PyTorch file. For cifar_resnet18 also one training-mode pass (logits with batch
statistics, and bn1's running mean / var afterwards).
"""

import json
import math
import os
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------- OpenOOD ResNet18_32x32
class CifarBasicBlock(nn.Module):
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
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, num_blocks, num_classes):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], 1)
        self.layer2 = self._make_layer(128, num_blocks[1], 2)
        self.layer3 = self._make_layer(256, num_blocks[2], 2)
        self.layer4 = self._make_layer(512, num_blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def _make_layer(self, planes, n, stride):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(CifarBasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        feature = self.avgpool(out).view(out.size(0), -1)
        return feature, self.fc(feature)


# ---------------------------------------------------------------- OE / OpenOOD WideResNet
class WrnBlock(nn.Module):
    def __init__(self, cin, cout, stride, drop):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.droprate = drop
        self.equalInOut = cin == cout
        self.convShortcut = (not self.equalInOut) and nn.Conv2d(cin, cout, 1, stride, 0, bias=False) or None

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        if self.equalInOut:
            out = self.relu2(self.bn2(self.conv1(out)))
        else:
            out = self.relu2(self.bn2(self.conv1(x)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        if not self.equalInOut:
            return torch.add(self.convShortcut(x), out)
        return torch.add(x, out)


class NetworkBlock(nn.Module):
    def __init__(self, n, cin, cout, stride, drop):
        super().__init__()
        self.layer = nn.Sequential(*[WrnBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, drop) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth, num_classes, widen, drop=0.0):
        super().__init__()
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        self.nChannels = ch[3]

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        feature = out.view(-1, self.nChannels)
        return feature, self.fc(feature)


# ---------------------------------------------------------------- torchvision ResNet
class TvBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class TvBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, 1, 0, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class TvResNet(nn.Module):
    def __init__(self, block, layers, num_classes):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        feature = torch.flatten(self.avgpool(x), 1)
        return feature, self.fc(feature)


# ---------------------------------------------------------------- deterministic weights
def formula_fill(model):
    sd = model.state_dict()
    names = sorted(k for k in sd if not k.endswith("num_batches_tracked"))
    with torch.no_grad():
        for t, name in enumerate(names):
            p = sd[name]
            v = torch.sin(torch.arange(p.numel(), dtype=torch.float64) * 1.37 + t * 0.71)
            if p.dim() >= 2:
                fan_in = p.shape[1] * math.prod(p.shape[2:])
                v = v * (2.0 / math.sqrt(fan_in))
            elif name.endswith("running_mean"):
                v = v * 0.1
            elif name.endswith("running_var"):
                v = v * 0.25 + 1.0
            elif name.endswith("weight"):
                v = v * 0.2 + 1.0
            elif name.endswith("bias"):
                v = v * 0.1
            else:
                raise ValueError(name)
            p.copy_(v.to(torch.float32).reshape(p.shape))
    return names


def formula_input(n, h, w):
    x = torch.sin(torch.arange(n * 3 * h * w, dtype=torch.float64) * 0.913 + 0.5)
    return x.to(torch.float32).reshape(n, 3, h, w)


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        b = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


ARCHS = [
    # name, constructor, input (n, h, w)
    ("cifar_resnet18", lambda: CifarResNet([2, 2, 2, 2], 10), (2, 32, 32)),
    ("cifar_resnet34", lambda: CifarResNet([3, 4, 6, 3], 10), (2, 32, 32)),
    ("wrn40_2", lambda: WideResNet(40, 10, 2, 0.3), (2, 32, 32)),
    ("wrn16_1", lambda: WideResNet(16, 10, 1, 0.0), (2, 32, 32)),
    ("resnet18", lambda: TvResNet(TvBasicBlock, [2, 2, 2, 2], 7), (2, 64, 64)),
    ("resnet50", lambda: TvResNet(TvBottleneck, [3, 4, 6, 3], 7), (2, 64, 64)),
    ("resnet101", lambda: TvResNet(TvBottleneck, [3, 4, 23, 3], 7), (2, 64, 64)),
]


def main():
    torch.set_num_threads(1)
    outputs, names = {}, {}
    for arch, ctor, (n, h, w) in ARCHS:
        model = ctor().eval()
        formula_fill(model)
        names[arch] = {k: list(v.shape) for k, v in model.state_dict().items()}
        with torch.no_grad():
            feat, logits = model(formula_input(n, h, w))
        outputs[f"{arch}.features"] = feat
        outputs[f"{arch}.logits"] = logits
        print(f"{arch}: features {tuple(feat.shape)} max|f| {feat.abs().max():.4g}, logits max|z| {logits.abs().max():.4g}")
        if arch == "cifar_resnet18":
            # one training-mode pass: batch statistics in BN, running stats updated (momentum 0.1)
            model.train()
            with torch.no_grad():
                _, tlogits = model(formula_input(n, h, w))
            outputs[f"{arch}.train_logits"] = tlogits
            outputs[f"{arch}.bn1.running_mean_after"] = model.bn1.running_mean.clone()
            outputs[f"{arch}.bn1.running_var_after"] = model.bn1.running_var.clone()
            model.eval()
        if arch == "wrn16_1":
            write_safetensors(os.path.join(HERE, "wrn16_1_weights.safetensors"), model.state_dict())
    write_safetensors(os.path.join(HERE, "model_parity.safetensors"), outputs)
    tmp = os.path.join(HERE, "model_names.json.tmp")
    with open(tmp, "w") as f:
        json.dump(names, f, indent=0, sort_keys=True)
    os.replace(tmp, os.path.join(HERE, "model_names.json"))


if __name__ == "__main__":
    main()
