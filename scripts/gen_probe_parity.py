#!/usr/bin/env python3
"""PyTorch side of crates/ood-cli/tests/network_probes.rs (nothing is committed: the test runs this
script at test time into a temporary folder).

usage: gen_probe_parity.py OUT_DIR SHARED_ROOT PER_CLASS

Writes into OUT_DIR:
  images/<class>/<file>.jpg   the first PER_CLASS CIFAR-10 JPEG test images of each class;
  <key>.npy                   for every ODIN and i-ODIN setting of OpenOOD's grid
                              (T in 1, 10, 100, 1000; eps in 0.0014, 0.0028), the logits f(x~) of
                              the perturbed images, (n, 10) float32, folder order (class, then
                              file name); key as oodkit names the probe, e.g. odin(T=1000,eps=0.0014);
  rankfeat.npy                RankFeat's fused logits (n, 10): OpenOOD's rankfeat_postprocessor.py
                              (accelerate=False, exact SVD) with layer3 as "block 4" and layer2 as
                              "block 3" of the 3-stage CIFAR ResNet;
  adascale(o=0.05).npy        AdaSCALE's perturbed penultimate features (n, 64): OpenOOD's
                              adascale_postprocessor.py (gradient of the predicted logit, the 5% of
                              elements with the smallest |gradient| moved by 0.5 * sign);
  layer_means#NNN.npy         the channel means of layer NNN (0 = the stem's output, then
                              layer1..layer3), (n, channels): OpenOOD mds_ensemble's `mean`
                              feature type of the 4 features its ResNet returns;
  mds_ensemble(eps=0.0014)#NNN.npy
                              the channel means of layer NNN after Lee et al.'s input
                              preprocessing (mds_ensemble_postprocessor.py's
                              compute_Mahalanobis_score) with class means and the shared
                              precision (sklearn EmpiricalCovariance: MLE covariance of the
                              class-centred layer means, pinvh) fitted on the same n images with
                              their folder labels; the step divided by the normalisation std as
                              Lee et al.'s code (OpenOOD divides by 0.5);
  gram(powers=1..5)#NNN.npy   Gram's statistics of convolution NNN (execution order, forward hooks on
                              every nn.Conv2d as OpenOOD's FeatureExtractor): G_p of
                              gram_postprocessor.py for p = 1..5, concatenated, (n, 5 * channels).

The network is the akamaster ResNet-20 (eager PyTorch, scripts/bench_extract_torch.py's definition,
the shared safetensors weights); images are PIL-decoded, x/255, normalised with ImageNet mean/std
as the akamaster models expect. The perturbation is OpenOOD's code (odin_postprocessor.py,
iodin_postprocessor.py) re-typed: nn.CrossEntropyLoss() (mean) on output / T against the argmax,
sign of the input gradient with zero as +1, divided by the normalisation std, data - eps * step;
i-ODIN masks the step to the element of largest |gradient| per image.
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_extract_torch import ResNet, read_safetensors  # noqa: E402
from gen_torchscript_parity import copy_images  # noqa: E402

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


class Logits(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)[1]


def perturbed(net, data, temperature, noise, one_element):
    data = data.clone().requires_grad_(True)
    output = net(data)
    labels = output.detach().argmax(axis=1)
    loss = nn.CrossEntropyLoss()(output / temperature, labels)
    loss.backward()
    grad = data.grad.detach()
    gradient = (torch.ge(grad, 0).float() - 0.5) * 2
    for c in range(3):
        gradient[:, c] = gradient[:, c] / STD[c]
    if one_element:
        b = grad.shape[0]
        idx = torch.argmax(grad.abs().view(b, -1), dim=1, keepdim=True)
        mask = torch.zeros_like(grad.view(b, -1), dtype=torch.uint8)
        mask.scatter_(1, idx, 1)
        gradient = gradient * mask.view_as(grad)
    with torch.no_grad():
        return net(torch.add(data.detach(), gradient, alpha=-noise))


def without_rank1(feat):
    b, c, h, w = feat.size()
    feat = feat.view(b, c, h * w)
    u, s, v = torch.linalg.svd(feat, full_matrices=False)
    feat = feat - s[:, 0:1].unsqueeze(2) * u[:, :, 0:1].bmm(v[:, 0:1, :])
    return feat.view(b, c, h, w)


@torch.no_grad()
def rankfeat(body, x):
    out = F.relu(body.bn1(body.conv1(x)))
    block3 = body.layer2(body.layer1(out))
    block4 = body.layer3(block3)
    head = lambda f: body.linear(F.avg_pool2d(f, f.size()[3]).flatten(1))  # noqa: E731
    logits1 = head(without_rank1(block4))
    logits2 = head(body.layer3(without_rank1(block3)))
    return (logits1 + logits2) / 2


def adascale_features(body, x, o):
    data = x.clone().requires_grad_(True)
    feature, output = body(data)
    labels = output.detach().argmax(dim=1)
    score = output[torch.arange(len(labels)), labels]
    score.backward(torch.ones_like(labels, dtype=score.dtype))
    grad = data.grad.detach()
    b, c, h, w = data.shape
    n_pixels = int(c * h * w * o)
    abs_grad = abs(grad).view(b, c * h * w)
    _, topk_indices = torch.topk(abs_grad, n_pixels, dim=1, largest=False)
    mask = torch.zeros_like(abs_grad, dtype=torch.uint8)
    mask.scatter_(1, topk_indices, 1)
    mask = mask.view(b, c, h, w)
    with torch.no_grad():
        return body(x + grad.sign() * mask * 0.5)[0]


@torch.no_grad()
def gram_statistics(body, x, powers):
    maps = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: maps.append(o))
             for m in body.modules() if isinstance(m, nn.Conv2d)]
    body(x)
    for h in hooks:
        h.remove()

    def g_p(ob, p):
        temp = ob.detach() ** p
        temp = temp.reshape(temp.shape[0], temp.shape[1], -1)
        temp = torch.matmul(temp, temp.transpose(dim0=2, dim1=1)).sum(dim=2)
        return (temp.sign() * torch.abs(temp) ** (1 / p)).reshape(temp.shape[0], -1)

    return [torch.cat([g_p(f, p) for p in range(1, powers + 1)], dim=1) for f in maps]


def layer_outputs(body, x):
    out = F.relu(body.bn1(body.conv1(x)))
    maps = [out]
    for layer in [body.layer1, body.layer2, body.layer3]:
        out = layer(out)
        maps.append(out)
    return maps


def layer_mean(body, x, l):
    out = F.relu(body.bn1(body.conv1(x)))
    for layer in [body.layer1, body.layer2, body.layer3][:l]:
        out = layer(out)
    return out.mean(dim=(2, 3))


def class_gaussian(z, labels, classes):
    z = z.astype(np.float64)
    means = np.stack([z[labels == c].mean(axis=0) for c in range(classes)])
    centred = z - means[labels]
    cov = centred.T @ centred / len(z)
    return means, np.linalg.pinv(cov, hermitian=True)


def mds_perturbed(body, x, l, means, precision, eps):
    mu = torch.from_numpy(means.astype(np.float32))
    prec = torch.from_numpy(precision.astype(np.float32))
    data = x.clone().requires_grad_(True)
    feat = layer_mean(body, data, l)
    zero_f = feat.detach().unsqueeze(1) - mu.unsqueeze(0)
    gaussian_score = -0.5 * ((zero_f @ prec) * zero_f).sum(dim=2)
    pred = gaussian_score.max(1)[1]
    zero_f = feat - mu.index_select(0, pred)
    loss = torch.mean(0.5 * ((zero_f @ prec) * zero_f).sum(dim=1))
    loss.backward()
    gradient = (torch.ge(data.grad.data, 0).float() - 0.5) * 2
    for c in range(3):
        gradient[:, c] = gradient[:, c] / STD[c]
    with torch.no_grad():
        return layer_mean(body, torch.add(x, gradient, alpha=-eps), l)


def main():
    out, shared, per_class = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(2)
    tar = os.path.join(shared, "data/cifar10-jpeg/cifar10_test_jpeg.tar.gz")
    paths = copy_images(tar, os.path.join(out, "images"), per_class)
    body = ResNet(3)
    state = read_safetensors(
        os.path.join(shared, "models/akamaster-resnet-cifar10/resnet20-12fca82f.safetensors"))
    missing, unexpected = body.load_state_dict(state, strict=False)
    assert not [k for k in missing if not k.endswith("num_batches_tracked")] and not unexpected
    net = Logits(body).eval()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    x = torch.stack([
        torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0)
        .permute(2, 0, 1) for p in paths])
    x = (x - mean) / std
    for name, one in [("odin", False), ("iodin", True)]:
        for eps in [0.0014, 0.0028]:
            for t in [1, 10, 100, 1000]:
                z = perturbed(net, x, float(t), eps, one).numpy().astype(np.float32)
                np.save(os.path.join(out, f"{name}(T={t},eps={eps}).npy"), z)
    np.save(os.path.join(out, "rankfeat.npy"), rankfeat(body, x).numpy().astype(np.float32))
    for i, g in enumerate(gram_statistics(body, x, 5)):
        np.save(os.path.join(out, f"gram(powers=1..5)#{i:03d}.npy"), g.numpy().astype(np.float32))
    labels = np.repeat(np.arange(10), per_class)
    with torch.no_grad():
        means = [m.mean(dim=(2, 3)).numpy() for m in layer_outputs(body, x)]
    for i, z in enumerate(means):
        np.save(os.path.join(out, f"layer_means#{i:03d}.npy"), z.astype(np.float32))
        mu, prec = class_gaussian(z, labels, 10)
        moved = mds_perturbed(body, x, i, mu, prec, 0.0014)
        np.save(os.path.join(out, f"mds_ensemble(eps=0.0014)#{i:03d}.npy"),
                moved.numpy().astype(np.float32))
    np.save(os.path.join(out, "adascale(o=0.05).npy"),
            adascale_features(body, x, 0.05).numpy().astype(np.float32))


if __name__ == "__main__":
    main()
