"""Bad input raises ValueError/TypeError naming the argument and the problem; a Rust panic raises
RuntimeError and the interpreter keeps running."""

import subprocess
import sys

import numpy as np
import pytest

import oodkit


def raises(exc, *words):
    class Ctx:
        def __enter__(self):
            self.cm = pytest.raises(exc)
            self.info = self.cm.__enter__()
            return self.info

        def __exit__(self, *a):
            r = self.cm.__exit__(*a)
            msg = str(self.info.value)
            for w in words:
                assert w in msg, f"{w!r} not in {msg!r}"
            return r

    return Ctx()


@pytest.fixture
def fitted(data):
    return oodkit.Detector("vim").fit(data.fit, head=(data.weight, data.bias))


def test_unknown_detector_and_parameters():
    with raises(ValueError, "unknown detector 'nope'", "knn", "msp"):
        oodkit.Detector("nope")
    with raises(ValueError, "no parameter 'kk'", "alpha, k, seed"):
        oodkit.Detector("knn", kk=3)
    with raises(ValueError, "detector 'knn'"):
        oodkit.Detector("knn", k="many")
    with raises(ValueError, "detector 'knn'"):
        oodkit.Detector("knn", k=-1)
    with raises(TypeError, "parameter k=", "object"):
        oodkit.Detector("knn", k=object())
    with raises(TypeError, "name"):
        oodkit.Detector(3)
    with raises(ValueError, "negatives", "only neg_label"):
        oodkit.Detector("knn", negatives=np.ones((3, 2)))


def test_shape_dtype_nan_empty(data, fitted):
    det = oodkit.Detector("knn", k=5)
    with raises(ValueError, "features", "2-D", "(600,)"):
        det.fit(data.fit[:, 0])
    with raises(TypeError, "features", "dtype"):
        det.fit(data.fit.astype(np.complex64))
    with raises(TypeError, "features", "dtype <U"):
        det.fit([["a", "b"]])
    with raises(TypeError, "features", "bool"):
        det.fit(data.fit > 0)
    bad = data.fit.copy()
    bad[3, 2] = np.nan
    with raises(ValueError, "non-finite", "features"):
        det.fit(bad)
    with raises(ValueError, "features", "empty"):
        det.fit(np.zeros((0, 4), np.float32))
    with raises(ValueError, "logits", "rows"):
        oodkit.Detector("msp").fit(data.fit, np.zeros((5, 6), np.float32))
    with raises(ValueError, "labels", "labels for 600 samples"):
        oodkit.Detector("mahalanobis").fit(data.fit, labels=data.labels[:10])
    with raises(TypeError, "labels", "integer"):
        oodkit.Detector("mahalanobis").fit(data.fit, labels=data.labels.astype(float))
    with raises(ValueError, "features", "23 columns", "fitted on 24"):
        fitted.score(data.test[:, :23])
    with raises(ValueError, "logits", "columns"):
        fitted.score(data.test, np.zeros((len(data.test), 3), np.float32))
    x = data.test.copy()
    x[0, 0] = np.inf
    with raises(ValueError, "non-finite", "features"):
        fitted.score(x)
    with raises(ValueError, "head", "columns"):
        oodkit.Detector("vim").fit(data.fit[:, :10], head=(data.weight, data.bias))
    with raises(ValueError, "too few samples", "knn bank"):
        oodkit.Detector("knn", k=1000).fit(data.fit)


def test_missing_inputs_are_named(data):
    with raises(ValueError, "head", "vim", "head=(weight, bias)"):
        oodkit.Detector("vim").fit(data.fit)
    with raises(ValueError, "labels", "mahalanobis"):
        oodkit.Detector("mahalanobis").fit(data.fit, head=(data.weight, data.bias))
    with raises(ValueError, "logits", "msp"):
        oodkit.Detector("msp").fit(data.fit)
    with raises(ValueError, "features", "knn"):
        oodkit.Detector("knn").fit(logits=data.fit)
    with raises(ValueError, "negatives", "neg_label"):
        oodkit.Detector("neg_label").fit(data.fit, head=(data.weight, data.bias))
    with raises(ValueError, "features", "missing"):
        oodkit.Detector("knn").fit()
    fitted = oodkit.Detector("msp").fit(logits=data.fit)
    with raises(ValueError, "logits", "msp", "without a head"):
        fitted.score(data.test)


def test_metrics_errors():
    with raises(ValueError, "non-finite", "id scores"):
        oodkit.metrics([1.0, np.nan], [0.0])
    with raises(ValueError, "non-finite", "ood scores"):
        oodkit.metrics([1.0], [np.inf])
    with raises(ValueError, "id_scores", "empty"):
        oodkit.metrics([], [1.0])
    with raises(ValueError, "ood_scores", "1-D"):
        oodkit.metrics([1.0], [[1.0, 2.0]])
    with raises(ValueError, "unknown metric convention", "openood"):
        oodkit.metrics([1.0], [0.0], convention="sklearn")
    with raises(TypeError, "id_scores", "dtype"):
        oodkit.metrics(["a"], [0.0])
    with raises(ValueError, "threads", ">= 1"):
        oodkit.metrics([1.0], [0.0], threads=0)
    with raises(TypeError, "threads"):
        oodkit.metrics([1.0], [0.0], threads="2")


def test_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        oodkit.load_features(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with raises(ValueError, "junk.safetensors"):
        oodkit.load_features(tmp_path / "junk.safetensors")
    with raises(TypeError, "path"):
        oodkit.load_features(3)
    with raises(ValueError, "logits", "head="):
        oodkit.save_features(tmp_path / "x.safetensors", np.ones((2, 2)))


def test_torch_tensor_that_requires_grad():
    torch = pytest.importorskip("torch")
    x = torch.ones(4, 3, requires_grad=True)
    with raises(TypeError, "features", "detach"):
        oodkit.Detector("knn", k=1).fit(x)


def test_rust_panic_is_a_python_exception():
    with raises(RuntimeError, "Rust panic", "deliberate panic"):
        oodkit._oodkit._panic_for_tests()
    with raises(RuntimeError, "Rust panic", "worker"):
        oodkit._oodkit._panic_for_tests(2)
    assert oodkit.metrics([1.0], [0.0])["auroc"] == 1.0  # still working
    # And in a fresh interpreter: the process exits normally after catching it.
    code = ("import oodkit\ntry:\n    oodkit._oodkit._panic_for_tests()\nexcept RuntimeError:\n"
            "    print('caught')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "caught", r.stderr[-2000:]
