"""Golden values for crates/ood-nn/tests/golden_augment.rs: torchvision 0.26's tensor colour
operations and resized crop on one fixed image.

torchvision is not part of the project's environment; to regenerate:
    pip download --no-deps torchvision==0.26.0 -d /tmp/tv
    pip install --no-deps --target /tmp/tvlib /tmp/tv/torchvision-*.whl
    PYTHONPATH=/tmp/tvlib .venv/bin/python scripts/golden_augment.py \
        > crates/ood-nn/tests/fixtures/augment_torchvision.json
"""
import json
import math

import torch
import torchvision
import torchvision.transforms.functional as F

# x[c, i, j] = (sin(1.3 c + 0.7 i + 0.45 j + 0.2) + 1) / 2 in [0, 1], 3 x 6 x 7, plus a gray pixel
# and a saturated one to exercise the HSV edge cases.
C, H, W = 3, 6, 7
x = torch.tensor([[[(math.sin(1.3 * c + 0.7 * i + 0.45 * j + 0.2) + 1) / 2 for j in range(W)]
                   for i in range(H)] for c in range(C)], dtype=torch.float64).float()
x[:, 0, 0] = 0.5
x[:, 5, 6] = torch.tensor([1.0, 0.0, 0.0])


def flat(t):
    return [round(v, 7) for v in t.flatten().tolist()]


out = {
    "torchvision": torchvision.__version__,
    "brightness_1.3": flat(F.adjust_brightness(x, 1.3)),
    "contrast_0.7": flat(F.adjust_contrast(x, 0.7)),
    "contrast_1.4": flat(F.adjust_contrast(x, 1.4)),
    "saturation_0.6": flat(F.adjust_saturation(x, 0.6)),
    "saturation_1.35": flat(F.adjust_saturation(x, 1.35)),
    "hue_0.08": flat(F.adjust_hue(x, 0.08)),
    "hue_-0.1": flat(F.adjust_hue(x, -0.1)),
    "grayscale": flat(F.rgb_to_grayscale(x, num_output_channels=1)),
    # resized_crop(top 1, left 2, height 4, width 3) back to 6 x 7, bilinear, antialias.
    "resized_crop_1_2_4_3": flat(F.resized_crop(x, 1, 2, 4, 3, [H, W],
                                                interpolation=F.InterpolationMode.BILINEAR,
                                                antialias=True)),
    # ColorJitter order hue, saturation, brightness, contrast with fixed factors.
    "jitter_3_2_0_1": flat(F.adjust_contrast(F.adjust_brightness(
        F.adjust_saturation(F.adjust_hue(x, -0.05), 1.2), 0.8), 1.1)),
}
print("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in out.items()) + "\n}")
