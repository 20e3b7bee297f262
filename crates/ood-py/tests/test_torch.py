"""oodkit.torch.extract on a small real model: an MLP trained for a few seconds on scikit-learn's
bundled 8x8 digits (ID), scored against noise images (OOD)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("sklearn.datasets")

import oodkit  # noqa: E402
import oodkit.torch  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
            torch.nn.Linear(64, 32), torch.nn.ReLU())
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.body(x))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    x, y = datasets.load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[:1200]), y[:1200]).backward()
        opt.step()
    return net, x, y


def loader(x, y=None, bs=128):
    ds = torch.utils.data.TensorDataset(x) if y is None else torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(ds, batch_size=bs)


def test_extract_features_logits_labels(trained):
    net, x, y = trained
    net.train()
    out = oodkit.torch.extract(net, loader(x[1200:], y[1200:]))
    assert not net._forward_pre_hooks and not net.fc._forward_pre_hooks  # hook removed
    assert net.training  # mode restored
    f, z, lab = out["features"], out["logits"], out["labels"]
    assert f.shape == (597, 32) and z.shape == (597, 10) and f.dtype == z.dtype == np.float32
    assert np.array_equal(lab, y[1200:].numpy())
    w, b = oodkit.torch.head(net)
    assert w.shape == (10, 32) and b.shape == (10,)
    assert np.allclose(f @ w.T + b, z, atol=1e-4)
    with torch.no_grad():
        assert np.allclose(net(x[1200:]).numpy(), z, atol=1e-6)
    assert (z.argmax(1) == lab).mean() > 0.85
    # A named layer: that module's output, flattened.
    by_name = oodkit.torch.extract(net, loader(x[1200:]), layer="body")
    assert np.allclose(by_name["features"], f) and by_name["labels"] is None
    with pytest.raises(ValueError, match="no submodule 'nope'"):
        oodkit.torch.extract(net, loader(x[:10]), layer="nope")


def test_detectors_separate_digits_from_noise(trained):
    net, x, y = trained
    g = torch.Generator().manual_seed(1)
    noise = torch.rand(300, 1, 8, 8, generator=g)
    train = oodkit.torch.extract(net, loader(x[:1200], y[:1200]))
    test = oodkit.torch.extract(net, loader(x[1200:], y[1200:]))
    ood = oodkit.torch.extract(net, loader(noise))
    r = oodkit.evaluate(train, test, {"far": {"noise": ood}}, head=net.fc,
                        detectors=["msp", "knn", "vim", "mahalanobis"])
    auroc = {row["detector"]: row["auroc"] for row in r.rows if row["dataset"] == "noise"}
    assert r.id_accuracy > 0.85
    assert max(auroc.values()) > 0.9, auroc
    # The head can also be given as a torch.nn.Linear to Detector.fit.
    s = oodkit.Detector("vim").fit(train, head=net.fc).score(test)
    assert np.array_equal(s, r.scores["vim"]["id"])
