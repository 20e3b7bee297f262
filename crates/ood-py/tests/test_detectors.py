"""Every detector through the Python API equals the same detector through the library path the
CLI uses (`ood score`), bit for bit; pickling; array layouts; partial inputs; threads; GIL."""

import copy
import pickle
import threading
import time

import numpy as np
import pytest

import oodkit

# Network detectors (odin, iodin) score probe tensors of `ood extract --with` files, which
# arrays do not carry: every other detector is checked here.
ALL = [d["name"] for d in oodkit.detectors() if d["family"] != "network"]


def fit_kwargs(name, files):
    if name == "grood":  # its default fits on OOD validation features (test_evaluate.py has them)
        return {"noise": "class_mean"}
    return {"negatives": files.neg} if name == "neg_label" else {}


def test_registry_lists_every_detector_with_needs():
    ds = oodkit.detectors()
    assert len(ds) == 40 and len(set(ALL)) == 34
    by = {d["name"]: d for d in ds}
    assert by["knn"]["params"] == {"k": 50, "alpha": 1.0, "seed": 0}
    assert by["knn"]["needs"] == ["features"]
    assert by["msp"]["needs"] == ["logits"]
    assert by["temp_scaling"]["needs"] == ["logits", "labels"]
    assert by["mahalanobis"]["needs"] == ["features", "labels"]
    assert by["vim"]["needs"] == ["features", "logits", "head"]
    assert by["neg_label"]["needs"] == ["features", "head", "negatives"]
    assert by["odin"]["needs"] == ["network"] and by["odin"]["family"] == "network"
    assert by["knn"]["family"] == "features" and by["msp"]["family"] == "logits"
    assert by["react"]["fits_on_val"] and not by["knn"]["fits_on_val"]
    assert [g["k"] for g in by["knn"]["sweep"]] == [50, 100, 200, 500, 1000]
    for d in ds:
        assert d["about"] and isinstance(d["params"], dict)


@pytest.mark.parametrize("name", ALL)
def test_detector_equals_library_path(name, files, reference):
    fit = oodkit.load_features(files.fit)
    test = oodkit.load_features(files.test)
    det = oodkit.Detector(name, **fit_kwargs(name, files))
    got = det.fit(fit, head=oodkit.load_head(files.head)).score(test)
    params = {k: v for k, v in fit_kwargs(name, files).items() if k != "negatives"}
    want = reference.score(name, files, params,
                           negatives=files.neg if name == "neg_label" else None)
    assert got.dtype == np.float32 and got.shape == (len(test["features"]),)
    assert np.array_equal(got, want), (reference.kind, np.max(np.abs(got - want)))


def test_parameters_reach_the_library(files, reference):
    for name, params in [("knn", {"k": 7}), ("react", {"percentile": 85.0}),
                         ("energy", {"temperature": 2.5}), ("vim", {"dim": 5})]:
        fit = oodkit.load_features(files.fit)
        got = oodkit.Detector(name, **params).fit(fit, head=files.head).score(
            oodkit.load_features(files.test))
        assert np.array_equal(got, reference.score(name, files, params)), name


@pytest.mark.parametrize("name", ALL)
def test_pickle_round_trip_is_bit_exact(name, data, files):
    det = oodkit.Detector(name, **fit_kwargs(name, files))
    fitted = det.fit(data.fit, labels=data.labels, head=(data.weight, data.bias))
    before = fitted.score(data.test)
    restored = pickle.loads(pickle.dumps(fitted))
    assert restored.name == name and restored.params == fitted.params
    assert np.array_equal(restored.score(data.test), before)
    assert np.array_equal(copy.deepcopy(fitted).score(data.test), before)
    assert pickle.loads(pickle.dumps(det)) == det


def test_pickle_keeps_given_logits(data):
    # Logits that are not features @ W.T + b must survive the round trip as given.
    z = oodkit.head_logits(data.fit, (data.weight, data.bias)) + 0.25
    fitted = oodkit.Detector("vim").fit(data.fit, z, head=(data.weight, data.bias))
    r = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(r.score(data.test), fitted.score(data.test))


def test_memory_layouts_and_dtypes_agree(data):
    head = (data.weight, data.bias)
    fitted = oodkit.Detector("vim").fit(data.fit, head=head)
    want = fitted.score(data.test)
    big = np.zeros((data.test.shape[0], 2 * data.test.shape[1]), np.float32)
    big[:, ::2] = data.test
    for x in [np.asfortranarray(data.test), data.test.astype(np.float64),
              np.asfortranarray(data.test.astype(np.float64)), big[:, ::2],
              data.test.astype(">f4"), data.test.tolist()]:
        assert np.array_equal(fitted.score(x), want)
    # A Fortran-ordered array is never read transposed: a non-square case where it would show.
    f = np.asfortranarray(data.fit)
    assert np.array_equal(oodkit.Detector("vim").fit(f, head=head).score(data.test), want)
    # Fortran-ordered head weight.
    fw = (np.asfortranarray(data.weight), data.bias)
    assert np.array_equal(oodkit.Detector("vim").fit(data.fit, head=fw).score(data.test), want)


def test_torch_tensors_are_accepted(data):
    torch = pytest.importorskip("torch")
    fitted = oodkit.Detector("knn", k=5).fit(torch.from_numpy(data.fit))
    want = fitted.score(data.test)
    assert np.array_equal(fitted.score(torch.from_numpy(data.test)), want)
    assert np.array_equal(fitted.score(torch.from_numpy(data.test).t().contiguous().t()), want)
    assert np.array_equal(fitted.score(torch.from_numpy(data.test).double()), want)


def test_only_the_inputs_a_detector_reads(data):
    head = (data.weight, data.bias)
    z_fit = oodkit.head_logits(data.fit, head)
    z_test = oodkit.head_logits(data.test, head)
    # Logit-only detectors: no features, no head.
    msp = oodkit.Detector("msp").fit(logits=z_fit).score(logits=z_test)
    full = oodkit.Detector("msp").fit(data.fit, head=head).score(data.test)
    assert np.array_equal(msp, full)
    # Feature-only KNN: no logits, no head.
    knn = oodkit.Detector("knn", k=10).fit(data.fit).score(data.test)
    assert np.array_equal(knn, oodkit.Detector("knn", k=10).fit(data.fit, head=head).score(data.test))
    # Mahalanobis: features and labels; the class count comes from the labels.
    m = oodkit.Detector("mahalanobis").fit(data.fit, labels=data.labels).score(data.test)
    mh = oodkit.Detector("mahalanobis").fit(data.fit, labels=data.labels, head=head)
    assert np.array_equal(m, mh.score(data.test))
    # A mapping from load_features / oodkit.torch.extract works as the data argument.
    d = {"features": data.fit, "logits": z_fit, "labels": data.labels}
    assert np.array_equal(oodkit.Detector("she").fit(d).score(data.test, z_test),
                          oodkit.Detector("she").fit(data.fit, labels=data.labels, head=head).score(data.test))


@pytest.mark.parametrize("name", ALL)
def test_scores_do_not_depend_on_the_thread_count(name, files):
    from conftest import make_data

    d = make_data(seed=3, n_fit=3000, n_test=1000, d=96, c=12)
    det = oodkit.Detector(name, **fit_kwargs(name, files)) if name != "neg_label" else \
        oodkit.Detector(name, negatives=np.random.default_rng(0).normal(size=(300, 96)))
    args = dict(labels=d.labels, head=(d.weight, d.bias))
    a = det.fit(d.fit, threads=1, **args).score(d.test, threads=1)
    assert np.array_equal(a, det.fit(d.fit, threads=2, **args).score(d.test, threads=2))
    assert np.array_equal(a, det.fit(d.fit, **args).score(d.test))


def test_gil_is_released_while_scoring():
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(20000, 128)).astype(np.float32)
    queries = rng.normal(size=(6000, 128)).astype(np.float32)
    fitted = oodkit.Detector("knn", k=50).fit(bank)
    t = threading.Thread(target=fitted.score, args=(queries,), kwargs={"threads": 1})
    start = time.perf_counter()
    t.start()
    ticks = 0
    while t.is_alive():
        ticks += 1  # runs only while the scoring thread does not hold the GIL
    elapsed = time.perf_counter() - start
    t.join()
    assert elapsed > 0.05, "the scoring call was too short to tell"
    assert ticks > 10000, (ticks, elapsed)


def test_repr_and_properties(data):
    det = oodkit.Detector("knn", k=7)
    assert repr(det) == "Detector('knn', alpha=1.0, k=7, seed=0)"
    assert det.needs == ["features"]
    f = det.fit(data.fit)
    assert (f.n_features, f.n_classes) == (24, 0)
    assert "n_fit=600" in repr(f)
    assert det.get_params() == {"alpha": 1.0, "k": 7, "seed": 0}
