#!/usr/bin/env python3
"""PyTorch side of crates/ood-cli/tests/torchscript.rs (nothing is committed: the test runs this
script at test time into a temporary folder).

usage: gen_torchscript_parity.py OUT_DIR SHARED_ROOT PER_CLASS [PER_CLASS_R20]

Writes into OUT_DIR:
  images/<class>/<file>.jpg    the first PER_CLASS CIFAR-10 JPEG test images of each class (bytes as
                               in the tarball; sorted file names);
  images_r20/<class>/<file>.jpg the first PER_CLASS_R20 of each class (default 30);
  resnet18.pt, vit.pt          scripts/export_torchscript.py exports (torchvision resnet18 with 10
                               classes and timm vit_tiny_patch16_224 with 10 classes, random weights,
                               seed 0; the library's own preprocessing);
  resnet20.pt                  the akamaster ResNet-20 export of the shared safetensors weights;
  {resnet18,vit}_{features,logits}.npy  PyTorch (eager, the ORIGINAL library model, features taken
                               with a hook on its final linear layer) on images/, preprocessed by the
                               library's own PIL transforms (torchvision Resize(256)+CenterCrop(224);
                               timm create_transform), in folder order (class, then file name);
  cases/*.pt                   small modules for the error and contract tests (see the test).
"""
import io
import os
import sys
import tarfile

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_torchscript  # noqa: E402


def copy_images(tar_path, out, per_class):
    by_class = {}
    with tarfile.open(tar_path) as tf:
        members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".jpg")]
        for m in members:
            cls, name = m.name.split("/")[-2:]
            by_class.setdefault(cls, []).append((name, m))
        paths = []
        for cls in sorted(by_class):
            os.makedirs(os.path.join(out, cls), exist_ok=True)
            for name, m in sorted(by_class[cls], key=lambda t: t[0])[:per_class]:
                p = os.path.join(out, cls, name)
                with open(p, "wb") as f:
                    f.write(tf.extractfile(m).read())
                paths.append(p)
    return paths


def reference(model, head, transform, paths, out_prefix):
    captured = []
    hook = head.register_forward_pre_hook(lambda _m, inp: captured.append(inp[0].detach().clone()))
    model.eval()
    with torch.no_grad():
        x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
        logits = model(x)
    hook.remove()
    np.save(out_prefix + "_features.npy", captured[0].numpy().astype(np.float32))
    np.save(out_prefix + "_logits.npy", logits.numpy().astype(np.float32))


class SingleOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)).repeat(1, 4))


class Plain(nn.Module):
    """No oodkit_config(): preprocessing and head names come from flags."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)
        self.other = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor):
        f = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return f, self.fc(f)


class AsDict(Plain):
    config: str

    def __init__(self, features_key: str):
        super().__init__()
        self.key = features_key
        self.config = ('{"input_size": 32, "resize": 32, "mean": [0.5, 0.5, 0.5], '
                       '"std": [0.25, 0.25, 0.25], "head_weight": "fc.weight", "head_bias": "fc.bias"}')

    def forward(self, x: torch.Tensor):
        f = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return {self.key: f, "logits": self.fc(f)}

    @torch.jit.export
    def oodkit_config(self) -> str:
        return self.config


def write_cases(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    torch.jit.script(SingleOutput().eval()).save(os.path.join(out, "single_output.pt"))
    torch.jit.script(Plain().eval()).save(os.path.join(out, "plain.pt"))
    torch.jit.script(AsDict("features").eval()).save(os.path.join(out, "dict.pt"))
    torch.jit.script(AsDict("feats").eval()).save(os.path.join(out, "dict_bad_key.pt"))


def main():
    out, shared, per_class = sys.argv[1], sys.argv[2], int(sys.argv[3])
    per_class_r20 = int(sys.argv[4]) if len(sys.argv) > 4 else 30
    torch.set_num_threads(2)
    tar = os.path.join(shared, "data/cifar10-jpeg/cifar10_test_jpeg.tar.gz")
    paths = copy_images(tar, os.path.join(out, "images"), per_class)
    copy_images(tar, os.path.join(out, "images_r20"), per_class_r20)

    import timm
    import torchvision.transforms as T

    export_torchscript.main(["torchvision", "resnet18", "--num-classes", "10", "--seed", "0",
                             "--out", os.path.join(out, "resnet18.pt")])
    model, _ = export_torchscript.build_torchvision("resnet18", 10, 0)
    tv = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    reference(model, model.fc, tv, paths, os.path.join(out, "resnet18"))

    export_torchscript.main(["timm", "vit_tiny_patch16_224", "--num-classes", "10", "--seed", "0",
                             "--out", os.path.join(out, "vit.pt")])
    model, _ = export_torchscript.build_timm("vit_tiny_patch16_224", 10, 0, {})
    cfg = timm.data.resolve_data_config({}, model=model)
    reference(model, model.get_classifier(), timm.data.create_transform(**cfg), paths,
              os.path.join(out, "vit"))

    export_torchscript.main(["akamaster", "resnet20", "--out", os.path.join(out, "resnet20.pt"),
                             "--weights", os.path.join(
                                 shared, "models/akamaster-resnet-cifar10/resnet20-12fca82f.safetensors")])
    write_cases(os.path.join(out, "cases"))


if __name__ == "__main__":
    main()
