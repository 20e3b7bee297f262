//! ReweightOOD (Regmi et al., CVPR-W 2024) loss, as coded in `openood/trainers/reweightood_trainer.py`
//! (spec training-methods.md 3.2).
//!
//! With `S = Z·Zᵀ` over the `N` L2-normalised views and only the pairs `i < j`, positives
//! `P = {y_i = y_j}`, negatives `N = {y_i ≠ y_j}`, and weights computed on **detached** similarities,
//! `w_p(s) = σ(c_w − m_w·s)`, `w_n(s) = σ(m_b·s − c_b)`:
//!
//! `L = ELU( LSE_{P}[ −w_p·s/τ ] + LSE_{N}[ w_n·s/τ ] )` (one log-sum-exp over each whole pair set).
//!
//! The projection head is `Linear(d→d) → ReLU → Linear(d→128)` (no BatchNorm, spec 3.1), saved
//! under `proj.*`; at test time the embedding is the normalised penultimate feature, not the head.
//!
//! Needs: as SupCon ([`super::supcon`]): two views per image, this projection head and the
//! online linear probe exported as the classifier head. Recipe: SupCon's ([`recipe`]), which is
//! ReweightOOD's own CIFAR configuration (spec 3.3).

use super::{ForwardFn, Method, Needs, StepLoss, supcon};
use crate::train::TrainConfig;
use tch::{Kind, Tensor, nn};

/// The method's `--method` name.
pub const NAME: &str = "reweightood";

/// The method's name in messages.
pub const TITLE: &str = "ReweightOOD";

/// What ReweightOOD needs: as SupCon.
pub const NEEDS: Needs = supcon::NEEDS;

/// ReweightOOD's CIFAR recipe (`train_reweightood.yml`, spec 3.3): the contrastive recipe of
/// [`supcon::recipe`] (100 epochs, batch 512, SGD Nesterov 0.9, weight decay 1e-4, lr 0.1, 10
/// warm-up epochs, cosine to `lr · 10⁻³`) with this loss and [`Params::default`].
pub fn recipe() -> TrainConfig {
    TrainConfig {
        method: Method::reweightood(),
        ..supcon::recipe()
    }
}

/// One step: the ReweightOOD loss of the normalised projections of both views `x`, plus the
/// probe's cross-entropy ([`supcon::step_with_probe`]).
pub fn step(
    forward: &ForwardFn<'_>,
    x: &Tensor,
    y: &Tensor,
    extra: &super::Extra<'_>,
    p: &Params,
) -> StepLoss {
    supcon::step_with_probe(forward, x, y, extra, |z| loss(z, y, p))
}

/// ReweightOOD hyper-parameters (defaults of `train_reweightood.yml`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// Temperature τ.
    pub tau: f64,
    /// Negative-weight slope m_b.
    pub m_b: f64,
    /// Negative-weight offset c_b.
    pub c_b: f64,
    /// Positive-weight slope m_w.
    pub m_w: f64,
    /// Positive-weight offset c_w.
    pub c_w: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            tau: 0.1,
            m_b: 5.0,
            c_b: 4.0,
            m_w: 2.0,
            c_w: 1.0,
        }
    }
}

/// Width of the training embedding.
pub const EMBED_DIM: i64 = 128;

/// Projection head `Linear(d→d) → ReLU → Linear(d→128)`.
pub fn projection(vs: &nn::Path, d: i64) -> nn::Sequential {
    nn::seq()
        .add(nn::linear(vs / "0", d, d, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs / "2", d, EMBED_DIM, Default::default()))
}

/// Positive-pair weight `σ(c_w − m_w·s)`.
pub fn positive_weight(s: &Tensor, p: &Params) -> Tensor {
    (s * -p.m_w + p.c_w).sigmoid()
}

/// Negative-pair weight `σ(m_b·s − c_b)`.
pub fn negative_weight(s: &Tensor, p: &Params) -> Tensor {
    (s * p.m_b - p.c_b).sigmoid()
}

/// ReweightOOD loss of L2-normalised embeddings `z` `(n, d)` with labels `(n)`.
///
/// An empty negative set (a batch of one class) gives `LSE = −∞` and the loss `−1`, as in the
/// reference.
pub fn loss(z: &Tensor, labels: &Tensor, p: &Params) -> Tensor {
    let n = z.size()[0];
    let s = z.matmul(&z.tr());
    let iu = Tensor::triu_indices(n, n, 1, (Kind::Int64, z.device()));
    let (r, c) = (iu.get(0), iu.get(1));
    let sv = s.index(&[Some(&r), Some(&c)]);
    let same = labels
        .index_select(0, &r)
        .eq_tensor(&labels.index_select(0, &c));
    let sp = sv.masked_select(&same);
    let sn = sv.masked_select(&same.logical_not());
    let wp = positive_weight(&sp.detach(), p);
    let wn = negative_weight(&sn.detach(), p);
    let lp = (-(wp * &sp) / p.tau).logsumexp([0], false);
    let ln = ((wn * &sn) / p.tau).logsumexp([0], false);
    (lp + ln).elu()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_match_the_spec_table() {
        let p = Params::default();
        let s = Tensor::from_slice(&[-1.0f32, -0.5, 0.0, 0.5, 0.8, 1.0]);
        let wp = Vec::<f32>::try_from(positive_weight(&s, &p)).unwrap();
        let wn = Vec::<f32>::try_from(negative_weight(&s, &p)).unwrap();
        let want_p = [0.953, 0.881, 0.731, 0.500, 0.354, 0.269];
        let want_n = [0.0001, 0.0015, 0.018, 0.182, 0.500, 0.731];
        for i in 0..6 {
            assert!(
                (wp[i] as f64 - want_p[i]).abs() < 6e-4,
                "w_p[{i}] = {}",
                wp[i]
            );
            assert!(
                (wn[i] as f64 - want_n[i]).abs() < 6e-4,
                "w_n[{i}] = {}",
                wn[i]
            );
        }
    }
}
