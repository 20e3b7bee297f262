"""Feature extraction from a PyTorch model (pure Python; torch is imported only when called).

>>> feats = oodkit.torch.extract(model, loader)           # doctest: +SKIP
>>> det = oodkit.Detector("vim").fit(feats, head=oodkit.torch.head(model))   # doctest: +SKIP

:func:`extract` runs the model in eval mode without gradients and collects, per batch, the
penultimate features with a forward hook and the model's logits (its output). The result is the
mapping every oodkit function accepts (``Detector.fit``, ``FittedDetector.score``,
``oodkit.evaluate``, ``oodkit.save_features``).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Tuple, Union

import numpy as np

__all__ = ["extract", "head", "last_linear"]


def last_linear(model: Any) -> Tuple[str, Any]:
    """``(name, module)`` of the last ``torch.nn.Linear`` in ``model.named_modules()`` order:
    the classifier head of the usual image models."""
    import torch

    found = None
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            found = (name, m)
    if found is None:
        raise ValueError("model: no torch.nn.Linear found; pass layer= explicitly")
    return found


def _module(model: Any, layer: Union[str, Any]) -> Any:
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer not in modules:
            names = ", ".join(n for n in modules if n) or "none"
            raise ValueError(f"layer: model has no submodule {layer!r} (submodules: {names})")
        return modules[layer]
    return layer


def head(model: Any, layer: Union[str, Any, None] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(weight (c, d), bias (c))`` float32 of the classifier head: ``layer`` (a name or a
    module) or the last ``torch.nn.Linear``."""
    import torch

    m = last_linear(model)[1] if layer is None else _module(model, layer)
    with torch.no_grad():
        w = m.weight.detach().float().cpu().numpy()
        b = (
            m.bias.detach().float().cpu().numpy()
            if getattr(m, "bias", None) is not None
            else np.zeros(w.shape[0], np.float32)
        )
    return np.ascontiguousarray(w), np.ascontiguousarray(b)


def _split(batch: Any) -> Tuple[Any, Any]:
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    if isinstance(batch, dict):
        for k in ("image", "images", "pixel_values", "input", "x", "data"):
            if k in batch:
                y = next((batch[j] for j in ("label", "labels", "target", "y") if j in batch), None)
                return batch[k], y
        raise ValueError(f"loader: cannot find the inputs in a batch dict with keys {list(batch)}")
    return batch, None


def extract(
    model: Any,
    loader: Iterable[Any],
    layer: Union[str, Any, None] = None,
    *,
    device: Any = None,
    max_batches: Optional[int] = None,
) -> Dict[str, Any]:
    """Runs ``model`` over ``loader`` and returns ``{"features", "logits", "labels"}`` as NumPy
    arrays (float32 ``(n, d)``, float32 ``(n, c)``, int64 ``(n,)`` or None).

    ``layer``: where the penultimate features come from. ``None`` (default): the **input** of the
    last ``torch.nn.Linear`` (the classifier head), captured with a forward pre-hook, so that
    ``features @ W.T + b`` gives the logits. A name (``"avgpool"``) or a module: that module's
    **output**, flattened to ``(n, -1)``. ``loader`` yields ``(inputs, labels)`` pairs, bare
    input tensors, or dicts. The model runs in eval mode under ``torch.no_grad()`` on ``device``
    (default: the device of its first parameter); its training mode is restored afterwards and
    the hook is always removed.
    """
    import torch

    if layer is None:
        module, pre = last_linear(model)[1], True
    else:
        module, pre = _module(model, layer), False
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"layer: expected a submodule name or a torch.nn.Module, got {type(module).__name__}")
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    captured: Dict[str, Any] = {}

    if pre:

        def hook(_m: Any, args: Any) -> None:
            captured["x"] = args[0]

        handle = module.register_forward_pre_hook(hook)
    else:

        def hook(_m: Any, _args: Any, out: Any) -> None:  # type: ignore[misc]
            captured["x"] = out[0] if isinstance(out, (tuple, list)) else out

        handle = module.register_forward_hook(hook)
    was_training = model.training
    feats, logits, labels = [], [], []
    has_labels = True
    try:
        model.eval()
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                x, y = _split(batch)
                captured.clear()
                out = model(x.to(device))
                if isinstance(out, (tuple, list)):
                    out = out[0]
                elif isinstance(out, dict):
                    out = out["logits"]
                if "x" not in captured:
                    raise RuntimeError("layer: the hooked module did not run in the forward pass")
                feats.append(captured["x"].detach().flatten(1).float().cpu().numpy())
                logits.append(out.detach().flatten(1).float().cpu().numpy())
                if y is None:
                    has_labels = False
                elif has_labels:
                    labels.append(np.asarray(y.cpu() if hasattr(y, "cpu") else y).astype(np.int64).reshape(-1))
    finally:
        handle.remove()
        model.train(was_training)
    if not feats:
        raise ValueError("loader: yielded no batches")
    return {
        "features": np.ascontiguousarray(np.concatenate(feats)),
        "logits": np.ascontiguousarray(np.concatenate(logits)),
        "labels": np.concatenate(labels) if has_labels and labels else None,
    }
