"""Decode every STRIDE-th JPEG member of a tar(.gz) with Pillow (`Image.open(f).convert("RGB")`) and
write the results for crates/ood-nn/tests/jpeg_exact.rs: per image, little-endian u32 name length,
the UTF-8 name, u32 width, u32 height, then width*height*3 RGB bytes.

    .venv/bin/python scripts/pillow_decode_tar.py ARCHIVE STRIDE OUT
"""

import io
import struct
import sys
import tarfile

from PIL import Image


def main() -> None:
    archive, stride, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    k = 0
    with tarfile.open(archive) as tar, open(out, "wb") as f:
        for m in tar:
            if not m.isfile() or not m.name.lower().endswith((".jpg", ".jpeg")):
                continue
            take = k % stride == 0
            k += 1
            if not take:
                continue
            img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
            name = m.name.encode()
            f.write(struct.pack("<I", len(name)) + name + struct.pack("<II", *img.size))
            f.write(img.tobytes())


if __name__ == "__main__":
    main()
