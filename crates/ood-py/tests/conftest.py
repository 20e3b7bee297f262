"""Shared fixtures: seeded synthetic features written as the CLI's files, and the reference
scorer (`ood score`, or the ood-core example `score_file` that runs the same library path)."""

import os
import pathlib
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

import oodkit

ROOT = pathlib.Path(__file__).resolve().parents[3]


def make_data(seed=0, n_fit=600, n_test=200, d=24, c=6):
    """Class clusters through a ReLU (non-negative, like penultimate features), a head that
    roughly separates them, labels, an ID/OOD test set and negative-label embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.0, size=(c, d))
    y = rng.integers(0, c, n_fit)
    fit = np.maximum(centres[y] + rng.normal(size=(n_fit, d)), 0.0)
    w = 0.3 * centres + 0.05 * rng.normal(size=(c, d))
    b = 0.1 * rng.normal(size=c)
    y_test = rng.integers(0, c, n_test // 2)
    id_test = np.maximum(centres[y_test] + rng.normal(size=(n_test // 2, d)), 0.0)
    ood_test = np.maximum(rng.normal(0.5, 2.0, size=(n_test - n_test // 2, d)), 0.0)
    test = np.vstack([id_test, ood_test])
    negatives = rng.normal(size=(400, d))
    f32 = np.float32
    return SimpleNamespace(
        fit=fit.astype(f32),
        labels=y.astype(np.int64),
        test=test.astype(f32),
        id_test=id_test.astype(f32),
        id_labels=y_test.astype(np.int64),
        ood_test=ood_test.astype(f32),
        weight=w.astype(f32),
        bias=b.astype(f32),
        negatives=negatives.astype(f32),
    )


@pytest.fixture(scope="session")
def data():
    return make_data()


@pytest.fixture(scope="session")
def files(data, tmp_path_factory):
    """The data as the CLI's files: fit (with labels), test, head, negatives."""
    d = tmp_path_factory.mktemp("features")
    head = (data.weight, data.bias)
    oodkit.save_head(d / "head.safetensors", *head)
    oodkit.save_features(d / "fit.safetensors", data.fit, labels=data.labels, head=head,
                         metadata={"dataset": "synthetic", "split": "fit"})
    oodkit.save_features(d / "test.safetensors", data.test, head=head)
    oodkit.save_features(d / "id.safetensors", data.id_test, labels=data.id_labels, head=head)
    oodkit.save_features(d / "ood.safetensors", data.ood_test, head=head)
    oodkit.save_negatives(d / "neg.safetensors", data.negatives)
    return SimpleNamespace(
        dir=d,
        fit=d / "fit.safetensors",
        test=d / "test.safetensors",
        id=d / "id.safetensors",
        ood=d / "ood.safetensors",
        head=d / "head.safetensors",
        neg=d / "neg.safetensors",
    )


def _target_dir():
    return pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")


class Reference:
    """Scores a feature file with `ood score` (when the binary is built: `cargo test` builds it)
    or with the ood-core example `score_file` (same calls: FeatureFile fit, Head::load,
    Features::load, Scorer::score)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.kind, self.cmd = self._find()

    def _find(self):
        forced = os.environ.get("OODKIT_REFERENCE")  # "ood" or "example"
        ood = os.environ.get("OOD_BIN")
        candidates = [pathlib.Path(ood)] if ood else [
            _target_dir() / "debug" / "ood", _target_dir() / "release" / "ood"]
        if forced != "example":
            for c in candidates:
                if c.is_file() and os.access(c, os.X_OK):
                    r = subprocess.run([str(c), "--version"], capture_output=True)
                    if r.returncode == 0:
                        return "ood score", [str(c), "score"]
            if forced == "ood":
                pytest.fail("OODKIT_REFERENCE=ood but no runnable ood binary was found")
        cargo = shutil.which("cargo")
        if cargo is None:
            pytest.skip("neither an ood binary nor cargo is available for the reference scores")
        subprocess.run([cargo, "build", "-q", "-p", "ood-core", "--example", "score_file"],
                       cwd=ROOT, check=True)
        return "score_file example", [str(_target_dir() / "debug" / "examples" / "score_file")]

    def score(self, name, files, params=None, negatives=None):
        out = self.tmp / f"{name}.npy"
        params = params or {}
        if self.kind == "ood score":
            args = self.cmd + ["--detector", name, "--fit", str(files.fit), "--head",
                               str(files.head), "--input", str(files.test), "--out", str(out)]
            for k, v in params.items():
                args += ["--param", f"{k}={v}"]
            if negatives:
                args += ["--negatives", str(negatives)]
        else:
            args = self.cmd + [name, str(files.fit), str(files.head), str(files.test), str(out)]
            if negatives:
                args += ["--negatives", str(negatives)]
            args += [f"{k}={v}" for k, v in params.items()]
        r = subprocess.run(args, capture_output=True, text=True)
        assert r.returncode == 0, f"{self.kind} failed for {name}: {r.stderr}"
        return np.load(out)


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    return Reference(tmp_path_factory.mktemp("reference"))
