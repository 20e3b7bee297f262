"""Golden values for crates/ood-nn/tests/golden_losses.rs (spec training-methods.md 1.5, 2.4, 3.2, 3.8.1).

Independent PyTorch implementations of the training losses on small deterministic tensors. The inputs are
defined by closed formulas (computed in float64, cast to float32) that the Rust test reproduces exactly.
Run: .venv/bin/python scripts/golden_losses.py  -> prints the numbers stored in the test.
"""
import math

import torch
import torch.nn.functional as F


def grid(rows, cols, a, b, c):
    """x[i, j] = sin(a*i + b*j + c), float64 then float32 (same formula in the Rust test)."""
    return torch.tensor(
        [[math.sin(a * i + b * j + c) for j in range(cols)] for i in range(rows)], dtype=torch.float64
    ).float()


def supcon(z, y, tau, tau_base):
    # Khosla et al. reference ("all" mode), as in TagFog losses.SupConLoss.
    n = z.shape[0]
    mask = torch.eq(y.view(-1, 1), y.view(1, -1)).float()
    logits = z @ z.T / tau
    logits = logits - logits.max(dim=1, keepdim=True)[0].detach()
    self_mask = 1 - torch.eye(n)
    mask = mask * self_mask
    exp_logits = torch.exp(logits) * self_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return (-(tau / tau_base) * mean_log_prob_pos).mean()


def reweightood(z, y, tau=0.1, mb=5.0, cb=4.0, mw=2.0, cw=1.0):
    s = z @ z.T
    n = z.shape[0]
    iu = torch.triu_indices(n, n, offset=1)
    sv = s[iu[0], iu[1]]
    same = (y[iu[0]] == y[iu[1]])
    sp, sn = sv[same], sv[~same]
    wp = torch.sigmoid(-(mw * sp.detach() - cw))
    wn = torch.sigmoid(mb * sn.detach() - cb)
    lp = torch.logsumexp(-wp * sp / tau, dim=0)
    ln = torch.logsumexp(wn * sn / tau, dim=0)
    return F.elu(lp + ln)


def tagfog(logits, z, anchors, y, k, tau_ci=0.1, tau_sup=0.1, tau_base=0.07, alpha=1.0, beta=1.0):
    ce = F.cross_entropy(logits, y)
    # L_CI: cross-entropy over the K anchors for ID views, 0 for jigsaw views, mean over all views.
    a = z @ anchors.T / tau_ci
    per = -a.log_softmax(1)
    onehot = torch.zeros(z.shape[0], k)
    idm = y < k
    onehot[idm, y[idm]] = 1.0
    ci = (onehot * per).sum(1).mean()
    sc = supcon(z, y, tau_sup, tau_base)
    return ce, ci, sc, ce + alpha * ci + beta * sc


def mixoe(z_id, y, z_mix, lam, beta, k):
    ce = F.cross_entropy(z_id, y)
    soft = lam * F.one_hot(y, k).float() + (1 - lam) / k
    mix = (-(soft * z_mix.log_softmax(1)).sum(1)).mean()
    return ce, mix, ce + beta * mix


def main():
    torch.set_printoptions(precision=10)
    # SupCon / ReweightOOD: 8 views (B = 4, two views each), d = 5, labels [0,1,2,0 | 0,1,2,0].
    z = F.normalize(grid(8, 5, 0.9, 1.7, 0.3), dim=1)
    y = torch.tensor([0, 1, 2, 0, 0, 1, 2, 0])
    print("supcon tau=0.1 base=0.07:", repr(supcon(z, y, 0.1, 0.07).item()))
    print("supcon tau=0.5 base=0.5:", repr(supcon(z, y, 0.5, 0.5).item()))
    print("reweightood defaults:", repr(reweightood(z, y).item()))
    print("reweightood tau=1 :", repr(reweightood(z, y, tau=1.0).item()))
    # TagFog: K = 3 ID classes + class 3 = jigsaw; 8 views; d = 6; 4 logits.
    k = 3
    yt = torch.tensor([0, 1, 3, 2, 0, 1, 3, 2])
    logits = grid(8, 4, 0.6, 1.1, 0.2) * 3.0
    zt = F.normalize(grid(8, 6, 0.8, 0.5, 1.0), dim=1)
    anchors = F.normalize(grid(3, 6, 1.3, 0.4, 2.0), dim=1)
    ce, ci, sc, tot = tagfog(logits, zt, anchors, yt, k)
    print("tagfog ce ci sc total:", repr(ce.item()), repr(ci.item()), repr(sc.item()), repr(tot.item()))
    # MixOE: B = 4, K = 3, lambda = 0.3, beta = 5.
    zi = grid(4, 3, 0.7, 1.9, 0.1) * 2.0
    zm = grid(4, 3, 1.2, 0.3, 0.5) * 2.0
    ym = torch.tensor([0, 2, 1, 2])
    ce, mix, tot = mixoe(zi, ym, zm, 0.3, 5.0, 3)
    print("mixoe ce mix total:", repr(ce.item()), repr(mix.item()), repr(tot.item()))


if __name__ == "__main__":
    main()
