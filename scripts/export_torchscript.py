#!/usr/bin/env python3
"""Exports an image classifier to a TorchScript file that `ood extract` / `ood bench` run with
`--model torchscript:FILE.pt`.

The file follows oodkit's TorchScript contract (README, "Your own model (TorchScript)"):
  * `forward(x)` takes a normalised (n, 3, size, size) float32 batch and returns the tuple
    `(features (n, d), logits (n, c))`, features being the input of the final linear layer;
  * the final linear layer is the submodule `head` (parameters `head.weight` (c, d), `head.bias` (c));
  * `oodkit_config()` returns a JSON string: the preprocessing (`input_size`, `resize`,
    `interpolation`, `mean`, `std`), the head's parameter names and where the model came from.

usage:
  export_torchscript.py torchvision NAME --out F.pt [--seed S | --state-dict SD.pth] [--num-classes C]
  export_torchscript.py timm NAME --out F.pt [--seed S | --state-dict SD.pth] [--model-kwargs JSON]
  export_torchscript.py akamaster resnet20|resnet32|resnet44|resnet56 --weights W.safetensors --out F.pt

Common options: --head MODULE (the final linear layer, e.g. fc, heads.head, classifier.1; default:
the library's classifier, else the last nn.Linear), --input-size/--resize/--interpolation/--mean/--std
(default: the library's own preprocessing for that model), --trace (trace the network instead of
scripting it; used anyway when scripting fails).

Without --state-dict the weights are the library's random initialisation after torch.manual_seed(S)
(S = 0 by default; nothing is downloaded). Needs torch, and torchvision or timm for those sources.
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn as nn

FORMAT = "oodkit-torchscript-1"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class OodkitModel(nn.Module):
    """`forward` -> (features, logits); the head is the submodule `head`."""

    config: str

    def __init__(self, body: nn.Module, head: nn.Linear, config: str):
        super().__init__()
        self.body = body
        self.head = head
        self.config = config

    def forward(self, x: torch.Tensor):
        features = self.body(x)
        return features, self.head(features)

    @torch.jit.export
    def oodkit_config(self) -> str:
        return self.config


class FirstOutput(nn.Module):
    """Keeps the first element of a network that returns (features, logits) itself."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def split_head(model: nn.Module, head_name):
    """Removes the final linear layer (named, or the last nn.Linear) from `model`: returns
    (model with nn.Identity in its place, the linear layer, its name)."""
    if head_name is None:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            sys.exit("export_torchscript: the model has no nn.Linear; give --head")
        head_name = linears[-1]
    head = model.get_submodule(head_name)
    if not isinstance(head, nn.Linear):
        sys.exit(f"export_torchscript: --head {head_name} is a {type(head).__name__}, not nn.Linear")
    parent_name, _, attr = head_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Identity())
    return model, head, head_name


def build_torchvision(name, num_classes, seed):
    import torchvision

    torch.manual_seed(seed)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    pre = {"input_size": 224, "resize": 256, "interpolation": "bilinear",
           "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    try:  # the preprocessing torchvision publishes for this architecture's weights
        t = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        pre = {"input_size": int(t.crop_size[0]), "resize": int(t.resize_size[0]),
               "interpolation": t.interpolation.value, "mean": list(t.mean), "std": list(t.std)}
    except Exception:  # noqa: BLE001 (no published weights: ImageNet defaults)
        pass
    return model, pre


def build_timm(name, num_classes, seed, model_kwargs):
    import timm

    torch.manual_seed(seed)
    kwargs = dict(model_kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = timm.create_model(name, pretrained=False, **kwargs)
    cfg = timm.data.resolve_data_config({}, model=model)
    size = int(cfg["input_size"][-1])
    pre = {"input_size": size, "resize": int(math.floor(size / cfg["crop_pct"])),
           "interpolation": cfg["interpolation"], "mean": list(cfg["mean"]), "std": list(cfg["std"])}
    return model, pre


def timm_head_name(model):
    head = model.get_classifier()
    for n, m in model.named_modules():
        if m is head and isinstance(m, nn.Linear):
            return n
    return None


def build_akamaster(name, weights):
    """The akamaster CIFAR ResNet (the definition of scripts/bench_extract_torch.py)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_extract_torch import ResNet, read_safetensors

    depths = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56}
    if name not in depths:
        sys.exit(f"export_torchscript: akamaster models are {', '.join(depths)}, not {name}")
    net = ResNet((depths[name] - 2) // 6)
    state = read_safetensors(weights)
    missing, unexpected = net.load_state_dict(state, strict=False)
    real_missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if real_missing or unexpected:
        sys.exit(f"export_torchscript: {weights}: missing {real_missing}, unexpected {unexpected}")
    head = net.linear
    net.linear = nn.Identity()
    pre = {"input_size": 32, "resize": 32, "interpolation": "bilinear",
           "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    return FirstOutput(net), head, pre


def to_torchscript(body, size, trace):
    body.eval()
    if not trace:
        try:
            return torch.jit.script(body)
        except Exception as e:  # noqa: BLE001 (many models are traceable but not scriptable)
            print(f"export_torchscript: scripting failed ({str(e).splitlines()[0]}); tracing",
                  file=sys.stderr)
    with torch.no_grad():
        return torch.jit.trace(body, torch.randn(2, 3, size, size), check_trace=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", choices=["torchvision", "timm", "akamaster"])
    ap.add_argument("name", help="architecture, e.g. resnet18, vit_tiny_patch16_224, resnet20")
    ap.add_argument("--out", required=True, help="the .pt file to write")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    ap.add_argument("--state-dict", help="weights to load (torch.save'd state dict or .safetensors)")
    ap.add_argument("--weights", help="akamaster: the .safetensors weights")
    ap.add_argument("--num-classes", type=int)
    ap.add_argument("--model-kwargs", default="{}", help="timm: extra create_model arguments (JSON)")
    ap.add_argument("--head", help="module name of the final linear layer")
    ap.add_argument("--input-size", type=int)
    ap.add_argument("--resize", type=int, help="shorter side before the centre crop")
    ap.add_argument("--interpolation", choices=["bilinear", "bicubic"])
    ap.add_argument("--mean", help="a,b,c")
    ap.add_argument("--std", help="a,b,c")
    ap.add_argument("--trace", action="store_true", help="trace instead of script")
    a = ap.parse_args(argv)

    if a.source == "akamaster":
        if not a.weights:
            sys.exit("export_torchscript: akamaster needs --weights W.safetensors")
        body, head, pre = build_akamaster(a.name, a.weights)
        origin = {"source": "akamaster", "name": a.name, "weights": os.path.basename(a.weights)}
    else:
        if a.source == "torchvision":
            model, pre = build_torchvision(a.name, a.num_classes, a.seed)
            head_name = a.head
        else:
            model, pre = build_timm(a.name, a.num_classes, a.seed, json.loads(a.model_kwargs))
            head_name = a.head or timm_head_name(model)
        if a.state_dict:
            if a.state_dict.endswith(".safetensors"):
                from safetensors.torch import load_file
                state = load_file(a.state_dict)
            else:
                state = torch.load(a.state_dict, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        body, head, head_name = split_head(model, head_name)
        origin = {"source": a.source, "name": a.name, "head_module": head_name,
                  "weights": os.path.basename(a.state_dict) if a.state_dict else f"random, seed {a.seed}"}

    for key in ["input_size", "resize", "interpolation"]:
        if getattr(a, key) is not None:
            pre[key] = getattr(a, key)
    if a.input_size is not None and a.resize is None:
        pre["resize"] = a.input_size if a.input_size <= 64 else a.input_size * 8 // 7
    for key in ["mean", "std"]:
        if getattr(a, key) is not None:
            pre[key] = [float(v) for v in getattr(a, key).split(",")]
    if pre["interpolation"] not in ("bilinear", "bicubic"):
        sys.exit(f"export_torchscript: interpolation {pre['interpolation']!r} is not supported by "
                 "oodkit (bilinear, bicubic); give --interpolation")

    config = {"format": FORMAT, **pre, "head_weight": "head.weight", "head_bias": "head.bias",
              "origin": origin, "torch": torch.__version__}
    size = pre["input_size"]
    scripted_body = to_torchscript(body, size, a.trace)
    head.eval()
    module = torch.jit.script(OodkitModel(scripted_body, head, json.dumps(config)))
    module.eval()
    with torch.no_grad():  # the contract, checked before anything is written
        f, logits = module(torch.randn(2, 3, size, size))
        assert f.dim() == 2 and logits.shape == (2, head.out_features), (f.shape, logits.shape)
    tmp = a.out + ".tmp"
    module.save(tmp)
    os.replace(tmp, a.out)
    print(f"export_torchscript: wrote {a.out} ({a.source} {a.name}: features {f.shape[1]}, "
          f"classes {logits.shape[1]}, input {size} px, resize {pre['resize']} "
          f"{pre['interpolation']})", file=sys.stderr)


if __name__ == "__main__":
    main()
