"""Writes the tiny .npy fixtures read by ood_core::scores tests (run with the project venv):

    /work/main/.venv/bin/python make_npy.py

Valid files hold the scores [1.5, -2.0, 3.25, 0.1] (0.1 rounded to the file's dtype).
"""

import os

import numpy as np
from numpy.lib import format as npf

HERE = os.path.dirname(os.path.abspath(__file__))
VALUES = [1.5, -2.0, 3.25, 0.1]


def save(name, arr, version=None):
    path = os.path.join(HERE, name)
    with open(path, "wb") as f:
        npf.write_array(f, arr, version=version, allow_pickle=False)


save("f32_v1.npy", np.array(VALUES, dtype="<f4"), (1, 0))
save("f64_v1.npy", np.array(VALUES, dtype="<f8"), (1, 0))
save("f32_v2.npy", np.array(VALUES, dtype="<f4"), (2, 0))
save("f64_v3.npy", np.array(VALUES, dtype="<f8"), (3, 0))
save("empty_f32.npy", np.zeros(0, dtype="<f4"), (1, 0))
# np.save of a float32 vector: the Rust writer must reproduce these bytes exactly.
np.save(os.path.join(HERE, "np_save_f32.npy"), np.array(VALUES, dtype=np.float32))
# Rejected: big-endian, integer dtype, 2-D, scalar, NaN inside, f64 overflowing f32.
save("f32_big_endian.npy", np.array(VALUES, dtype=">f4"), (1, 0))
save("i64.npy", np.array([1, 2, 3], dtype="<i8"), (1, 0))
save("f32_2d.npy", np.array([VALUES, VALUES], dtype="<f4"), (1, 0))
save("f32_scalar.npy", np.array(1.0, dtype="<f4"), (1, 0))
save("f32_nan.npy", np.array([1.0, np.nan, 2.0], dtype="<f4"), (1, 0))
save("f64_overflow.npy", np.array([1.0, 1e300], dtype="<f8"), (1, 0))
# Truncated data section (header says 4 values, 3 present).
with open(os.path.join(HERE, "f32_v1.npy"), "rb") as f:
    data = f.read()
with open(os.path.join(HERE, "f32_truncated.npy"), "wb") as f:
    f.write(data[:-4])
print(sorted(os.listdir(HERE)))
