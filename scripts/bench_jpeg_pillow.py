"""Pillow's side of the JPEG decode benchmark (BENCHMARKS.md, "JPEG decoding"), to set beside
crates/ood-nn/examples/jpeg_bench.rs: `Image.open(BytesIO(b)).convert("RGB")` on the first N CIFAR-10
JPEG test images and the 300 DTD-subset images, all read into memory first; median of 3 passes.

    .venv/bin/python scripts/bench_jpeg_pillow.py [N]
"""

import io
import os
import sys
import tarfile
import time

import PIL
from PIL import Image


def members(path, limit):
    out = []
    with tarfile.open(path) as tar:
        for m in tar:
            if m.isfile() and m.name.lower().endswith(".jpg"):
                out.append(tar.extractfile(m).read())
                if len(out) == limit:
                    break
    return out


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    root = os.environ.get("OOD_DATA_ROOT", os.path.join(os.path.dirname(__file__), "../../shared"))
    sets = [
        ("cifar10-test", os.path.join(root, "data/cifar10-jpeg/cifar10_test_jpeg.tar.gz"), n),
        ("dtd-subset10", os.path.join(root, "data/dtd-subset10/dtd10_30perclass_jpeg.tar"), None),
    ]
    for name, path, limit in sets:
        files = members(path, limit)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            px = 0
            for b in files:
                im = Image.open(io.BytesIO(b)).convert("RGB")
                px += im.width * im.height
            times.append(time.perf_counter() - t)
        s = sorted(times)[1]
        print(f"{name}: Pillow {PIL.__version__}: {len(files)} images in {s:.3f} s, "
              f"{len(files) / s:.0f} img/s, {px / s / 1e6:.1f} Mpx/s")


if __name__ == "__main__":
    main()
