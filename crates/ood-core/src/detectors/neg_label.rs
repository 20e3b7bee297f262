//! NegLabel (Jiang, Liu, Wang, Sun, Han & Liu, "Negative Label Guided OOD Detection with
//! Pretrained Vision-Language Models", ICLR 2024, arXiv:2403.20078,
//! <https://arxiv.org/abs/2403.20078>); reference code XueJiang16/NegLabel.
//!
//! Inputs: for CLIP-style models the [`Features::embeddings`] are the image embeddings `(n, d)`,
//! the [`Head`] weight rows are the ID-label text embeddings `(C, d)` (bias ignored), and
//! the mined negative-label text embeddings `(M, d)` in the mined order (selected nouns, then
//! selected adjectives, each by ascending η-quantile; spec 7.3) are a side input of
//! [`Detector::fit_with`] ([`SideInputs::negatives`]), data and not a hyper-parameter, read
//! e.g. from a safetensors file with [`NegLabel::load_negatives`] (one `(M, d)` tensor named
//! `negatives`). `fit` without them returns an `Err`.
//!
//! Score, with `a_i = cos(x, e_i)/τ` for ID labels and `ā_j = cos(x, ẽ_j)/τ` for negatives
//! (all embeddings L2-normalised, `τ = 0.01`, i.e. the ×100 logit scale):
//! * `groups = 1` — the paper formula `S = Σ_i e^{a_i} / (Σ_i e^{a_i} + Σ_j e^{ā_j})` (not the
//!   released code's `ngroup = 1` branch, which lacks the softmax; spec 7.4);
//! * `groups = G > 1` — the released code: drop the **last** `M mod G` negatives (before any
//!   permutation), permute the rest, cut them into `G` contiguous groups of equal size, and average
//!   `S_g` (the formula above restricted to group `g`) over the groups.
//!
//! Higher = more in-distribution. Defaults `τ = 0.01`, `groups = 100` (released config),
//! `shuffle = true`, `seed = 0`, `log = true`. No sweep.
//!
//! `log = true` (the default) outputs `ln S` instead of `S`: the same ranking, hence the same
//! AUROC/FPR/AUPR as the exact `S`, but without the ties of `S` rounded to f32. Where the ID
//! cosines exceed the negatives' by more than ~0.17 (×100 → `S > 1 − 6e-8`), `S` rounds to
//! exactly 1.0 in f32 for most confident samples, ID and OOD alike, and FPR@95 degenerates to
//! 100% (seen on a MiniLM-aligned CIFAR-10 ResNet: 93% of ID and 80% of Tiny-ImageNet scores were
//! 1.0). `ln S ≈ −(1 − S)` keeps full relative precision there. `log = false` outputs `S` itself,
//! the paper's and the released code's value, for parity with their score files.
//!
//! Traps handled:
//! * The permutation is a Fisher–Yates shuffle driven by `rand_chacha::ChaCha8Rng` seeded with
//!   `seed`; it is deterministic but **cannot reproduce** the reference's CUDA `torch.randperm`,
//!   so grouped scores differ slightly from the released code (spec 10.8). `shuffle = false` keeps
//!   the mined order (used by the tests and the spec's "identity order" vectors).
//! * Values `×100` overflow f32 `exp`; everything is computed in f64 as
//!   `S_g = σ(lse(a) − lse(ā_g))` (a logistic of a log-sum-exp difference), never forming the
//!   exponentials.
//! * Cosine matrices are computed in blocks of rows, so memory stays bounded for `M ≈ 10,500`.
//!
//! Checked against the spec's section 9.4 vectors (G = 1 and G = 3 in identity order).

use super::DetectorParams;
use crate::detector::{Detector, Scorer, SideInputs, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use crate::kernels::cosine::{for_each_cosine_block, normalized_columns};
use crate::safetensors::{self, SafeTensorsFile, TensorToWrite};
use ndarray::{Array1, Array2, Axis};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Negative-label guided score for CLIP-style embeddings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NegLabel {
    /// Temperature `τ` on cosines (0.01, i.e. CLIP's ×100 logit scale).
    pub temperature: f64,
    /// Number of negative groups `G` (100 in the released code; 1 = the paper formula).
    pub groups: usize,
    /// Permute the negatives before grouping (true in the released code).
    pub shuffle: bool,
    /// Seed of the ChaCha8 permutation (the reference seeds `torch.randperm` with 0).
    pub seed: u64,
    /// Output `ln S` (same ranking as `S`, no f32 saturation at 1.0) instead of `S`.
    pub log: bool,
}

impl Default for NegLabel {
    fn default() -> Self {
        NegLabel {
            temperature: 0.01,
            groups: 100,
            shuffle: true,
            seed: 0,
            log: true,
        }
    }
}

impl NegLabel {
    /// Name of the tensor holding the negative-label embeddings in a negatives file.
    pub const NEGATIVES_TENSOR: &'static str = "negatives";

    /// Reads negative-label text embeddings `(M, d)` from a safetensors file with one 2-D f32
    /// (or f16/bf16) tensor named [`NegLabel::NEGATIVES_TENSOR`], for [`SideInputs::negatives`].
    pub fn load_negatives(path: impl AsRef<Path>) -> Result<Arc<Array2<f32>>> {
        let file = SafeTensorsFile::open(path)?;
        let info = file.info(Self::NEGATIVES_TENSOR)?;
        if info.shape.len() != 2 {
            return Err(Error::format(
                file.path(),
                format!(
                    "'{}' must be 2-D (m, d), found shape {:?}",
                    Self::NEGATIVES_TENSOR,
                    info.shape
                ),
            ));
        }
        let shape = (info.shape[0], info.shape[1]);
        let values = file.read_f32(Self::NEGATIVES_TENSOR)?;
        let neg = Array2::from_shape_vec(shape, values).map_err(|e| {
            Error::format(file.path(), format!("'negatives' has the wrong size: {e}"))
        })?;
        if neg.iter().any(|v| !v.is_finite()) {
            return Err(Error::format(
                file.path(),
                "non-finite value (NaN or infinite) in 'negatives'",
            ));
        }
        Ok(Arc::new(neg))
    }

    /// Writes negative-label embeddings `(M, d)` to a safetensors file (atomically) in the
    /// layout [`NegLabel::load_negatives`] reads.
    pub fn save_negatives(negatives: &Array2<f32>, path: impl AsRef<Path>) -> Result<()> {
        let v = negatives.as_standard_layout();
        safetensors::write(
            path.as_ref(),
            &[TensorToWrite::f32(
                Self::NEGATIVES_TENSOR,
                vec![negatives.nrows(), negatives.ncols()],
                v.as_slice().expect("standard layout"),
            )],
            &BTreeMap::new(),
        )
    }
}

/// `log Σ exp(v / τ)` in f64.
fn lse_scaled(v: &[f64], temperature: f64) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max) / temperature;
    m + v
        .iter()
        .map(|&c| (c / temperature - m).exp())
        .sum::<f64>()
        .ln()
}

/// The NegLabel score of one sample from its cosines: `pos` against the ID labels, `neg` against
/// the negatives **already dropped and ordered**, cut into `groups` contiguous groups of equal size
/// (`neg.len()` must be a multiple of `groups`).
pub(crate) fn neg_label_from_cosines(
    pos: &[f64],
    neg: &[f64],
    groups: usize,
    temperature: f64,
) -> f64 {
    group_logit_gaps(pos, neg, groups, temperature)
        .map(|d| {
            // σ(d), stable for large |d|.
            if d >= 0.0 {
                1.0 / (1.0 + (-d).exp())
            } else {
                let e = d.exp();
                e / (1.0 + e)
            }
        })
        .sum::<f64>()
        / groups as f64
}

/// `ln` of [`neg_label_from_cosines`], accurate at both ends: near `S = 1` as
/// `ln(1 − mean_g σ(−d_g))` with `log1p` (the complements `σ(−d_g)` are tiny but exact), else as
/// a log-sum-exp of `ln σ(d_g)` (`−ln(1 + e^{−d})`, stable both ways) minus `ln G`.
pub(crate) fn ln_neg_label_from_cosines(
    pos: &[f64],
    neg: &[f64],
    groups: usize,
    temperature: f64,
) -> f64 {
    let gaps: Vec<f64> = group_logit_gaps(pos, neg, groups, temperature).collect();
    let sigmoid = |d: f64| {
        if d >= 0.0 {
            1.0 / (1.0 + (-d).exp())
        } else {
            let e = d.exp();
            e / (1.0 + e)
        }
    };
    let complement = gaps.iter().map(|&d| sigmoid(-d)).sum::<f64>() / groups as f64;
    if complement <= 0.5 {
        return (-complement).ln_1p();
    }
    let ln_sig: Vec<f64> = gaps
        .iter()
        .map(|&d| {
            if d >= 0.0 {
                -(-d).exp().ln_1p()
            } else {
                d - d.exp().ln_1p()
            }
        })
        .collect();
    lse_scaled(&ln_sig, 1.0) - (groups as f64).ln()
}

/// Per group `g`: `d_g = lse(a) − lse(ā_g)`, so that `S_g = σ(d_g)`.
fn group_logit_gaps<'a>(
    pos: &[f64],
    neg: &'a [f64],
    groups: usize,
    temperature: f64,
) -> impl Iterator<Item = f64> + 'a {
    assert!(
        groups > 0 && neg.len().is_multiple_of(groups),
        "groups divide the negatives"
    );
    let a = lse_scaled(pos, temperature);
    neg.chunks(neg.len() / groups)
        .map(move |g| a - lse_scaled(g, temperature))
}

/// The kept negatives' row indices: the first `M − M mod G` in mined order, then permuted.
pub(crate) fn negative_order(m: usize, groups: usize, shuffle: bool, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..m - m % groups).collect();
    if shuffle {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    }
    order
}

#[derive(Debug)]
struct NegLabelScorer {
    temperature: f64,
    groups: usize,
    log: bool,
    /// `(d, C)` normalised ID-label embeddings.
    labels_t: Array2<f64>,
    /// `(d, M')` normalised kept negatives, in group order.
    negatives_t: Array2<f64>,
    head: Head,
}

impl Detector for NegLabel {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        self.fit_with(data, head, &SideInputs::default())
    }

    fn fit_with(
        &self,
        data: &FitData<'_>,
        head: &Head,
        side: &SideInputs<'_>,
    ) -> Result<Box<dyn Scorer>> {
        let negatives = side.negatives.ok_or_else(|| {
            Error::InvalidParameter(
                "neg_label needs the negative-label text embeddings (m, d) as a side input of \
                 fit (SideInputs::negatives; the CLI reads them from --negatives)"
                    .into(),
            )
        })?;
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::InvalidParameter(format!(
                "neg_label temperature must be > 0, got {}",
                self.temperature
            )));
        }
        if negatives.ncols() != head.dim() {
            return Err(Error::dim(
                "negative-label embedding dimension (negatives vs head)",
                head.dim(),
                negatives.ncols(),
            ));
        }
        let m = negatives.nrows();
        if self.groups == 0 || self.groups > m {
            return Err(Error::InvalidParameter(format!(
                "neg_label groups must be in 1..={m} (the number of negatives), got {}",
                self.groups
            )));
        }
        if negatives.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "negative-label embeddings".into(),
            });
        }
        check_fit_data(data, head, 0)?;
        let order = negative_order(m, self.groups, self.shuffle, self.seed);
        let kept = negatives.select(Axis(0), &order);
        Ok(Box::new(NegLabelScorer {
            temperature: self.temperature,
            groups: self.groups,
            log: self.log,
            labels_t: normalized_columns(head.weight.view()),
            negatives_t: normalized_columns(kept.view()),
            head: head.clone(),
        }))
    }
}

impl Scorer for NegLabelScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let mut out = Array1::<f32>::zeros(x.len());
        let labels = [&self.labels_t, &self.negatives_t];
        for_each_cosine_block(x.embeddings.view(), &labels, |start, cos| {
            for (i, (pos, neg)) in cos[0].rows().into_iter().zip(cos[1].rows()).enumerate() {
                let pos = pos.as_slice().expect("fresh array rows are contiguous");
                let neg = neg.as_slice().expect("fresh array rows are contiguous");
                let s = if self.log {
                    ln_neg_label_from_cosines(pos, neg, self.groups, self.temperature)
                } else {
                    neg_label_from_cosines(pos, neg, self.groups, self.temperature)
                };
                out[start + i] = s as f32;
            }
        });
        check_scores("neg_label", out)
    }
}

impl DetectorParams for NegLabel {
    const NAME: &'static str = "neg_label";
    const ABOUT: &'static str =
        "CLIP score against ID and mined negative labels; needs negatives (Jiang et al., ICLR'24)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    const POS: [[f64; 3]; 2] = [[0.30, 0.22, 0.18], [0.20, 0.21, 0.19]];
    const NEG: [[f64; 7]; 2] = [
        [0.15, 0.16, 0.14, 0.17, 0.12, 0.13, 0.29],
        [0.24, 0.25, 0.20, 0.23, 0.22, 0.26, 0.18],
    ];

    #[test]
    fn neg_label_matches_spec_vectors() {
        for (i, want) in [0.731124, 0.006393].into_iter().enumerate() {
            let s = neg_label_from_cosines(&POS[i], &NEG[i], 1, 0.01);
            assert!((s - want).abs() < 1e-6, "G=1 row {i}: {s} vs {want}");
        }
        // G = 3 in identity order: 7 mod 3 = 1, so the last negative is dropped.
        let order = negative_order(7, 3, false, 0);
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5]);
        for (i, want) in [0.999999, 0.063970].into_iter().enumerate() {
            let neg: Vec<f64> = order.iter().map(|&j| NEG[i][j]).collect();
            let s = neg_label_from_cosines(&POS[i], &neg, 3, 0.01);
            assert!((s - want).abs() < 1e-6, "G=3 row {i}: {s} vs {want}");
        }
    }

    #[test]
    fn neg_label_shuffle_is_a_seeded_permutation_of_the_kept_prefix() {
        let a = negative_order(10, 3, true, 7);
        assert_eq!(a, negative_order(10, 3, true, 7));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..9).collect::<Vec<_>>());
        assert_ne!(a, negative_order(10, 3, true, 8));
    }

    #[test]
    fn neg_label_end_to_end_on_embeddings() {
        // d = 2. ID labels e0 = [1, 0], e1 = [0, 2]; negatives along [1, 1], [1, -1], [-1, 0].
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 2.0]], array![0.0, 0.0]).unwrap();
        let negatives = Arc::new(array![[1.0f32, 1.0], [3.0, -3.0], [-1.0, 0.0]]);
        let x = Features::with_head(array![[0.8f32, 0.6], [0.6, -0.8]], &head, None).unwrap();
        let r = std::f64::consts::FRAC_1_SQRT_2;
        let cos = [
            ([0.8, 0.6], [1.4 * r, 0.2 * r, -0.8]),
            ([0.6, -0.8], [-0.2 * r, 1.4 * r, -0.6]),
        ];
        let fit = |groups, shuffle, negatives: Option<Arc<Array2<f32>>>| {
            NegLabel {
                temperature: 0.1,
                groups,
                shuffle,
                seed: 3,
                log: false,
            }
            .fit_with(
                &(&x).into(),
                &head,
                &SideInputs {
                    negatives: negatives.as_deref(),
                    ..SideInputs::default()
                },
            )
        };
        let s = fit(1, true, Some(negatives.clone()))
            .unwrap()
            .score(&x)
            .unwrap();
        for (got, (p, n)) in s.iter().zip(&cos) {
            let want = neg_label_from_cosines(p, n, 1, 0.1);
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        // G = 2, identity order: the third negative is dropped, groups {0}, {1}.
        let s = fit(2, false, Some(negatives.clone()))
            .unwrap()
            .score(&x)
            .unwrap();
        for (got, (p, n)) in s.iter().zip(&cos) {
            let want = neg_label_from_cosines(p, &n[..2], 2, 0.1);
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        let e = fit(1, true, None)
            .err()
            .expect("missing negatives")
            .to_string();
        assert!(e.contains("negative-label"), "{e}");
        assert!(fit(4, true, Some(negatives.clone())).is_err());
        assert!(fit(0, true, Some(negatives)).is_err());
        assert!(fit(1, true, Some(Arc::new(Array2::zeros((3, 5))))).is_err());
    }

    #[test]
    fn neg_label_negatives_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("negatives.safetensors");
        let neg = array![[1.0f32, 2.0, 3.0], [-0.5, 0.25, 0.0]];
        NegLabel::save_negatives(&neg, &path).unwrap();
        assert_eq!(*NegLabel::load_negatives(&path).unwrap(), neg);
        let e = NegLabel::load_negatives(dir.path().join("missing.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.safetensors"), "{e}");
    }

    #[test]
    fn neg_label_log_form_is_ln_of_the_score_and_does_not_saturate() {
        for groups in [1, 7] {
            for i in 0..2 {
                let neg: Vec<f64> = NEG[i][..7 / groups * groups].to_vec();
                let s = neg_label_from_cosines(&POS[i], &neg, groups, 0.01);
                let l = ln_neg_label_from_cosines(&POS[i], &neg, groups, 0.01);
                assert!(
                    (l - s.ln()).abs() < 1e-12 * s.ln().abs().max(1.0),
                    "{l} vs ln {s}"
                );
            }
        }
        // ID cosine 0.55 vs negatives at 0.23 (τ = 0.01): S = 1 − 1.3e-14 rounds to 1.0 in f32
        // for both samples, the log form keeps them apart in f32.
        let (a, b) = ([0.55], [0.50]);
        let neg = [0.23; 4];
        assert_eq!(neg_label_from_cosines(&a, &neg, 1, 0.01) as f32, 1.0);
        assert_eq!(neg_label_from_cosines(&b, &neg, 1, 0.01) as f32, 1.0);
        let (la, lb) = (
            ln_neg_label_from_cosines(&a, &neg, 1, 0.01) as f32,
            ln_neg_label_from_cosines(&b, &neg, 1, 0.01) as f32,
        );
        assert!(la > lb && lb < 0.0, "{la} {lb}");
        let want = -(4.0f64 * (-32.0f64).exp()).ln_1p();
        assert!(
            (la as f64 - want).abs() < 1e-6 * want.abs(),
            "{la} vs {want}"
        );
        // Grouped, near 1: 100 groups each with S_g = 1 − e^{−d_g}; the mean is exact.
        let pos = [0.55];
        let neg: Vec<f64> = (0..200).map(|j| 0.20 + 0.0001 * j as f64).collect();
        let l = ln_neg_label_from_cosines(&pos, &neg, 100, 0.01);
        let want = -(0..100)
            .map(|g| {
                let lse = |v: &[f64]| {
                    let m = v.iter().cloned().fold(f64::MIN, f64::max);
                    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
                };
                let grp: Vec<f64> = neg[2 * g..2 * g + 2].iter().map(|c| c / 0.01).collect();
                (-(55.0 - lse(&grp))).exp()
            })
            .sum::<f64>()
            / 100.0;
        assert!(
            l < 0.0 && (l - want).abs() < 1e-9 * want.abs(),
            "{l} vs {want}"
        );
        // Far below: ln S ≈ d, finite where S underflows to 0.
        let l = ln_neg_label_from_cosines(&[0.1], &[0.95], 1, 1e-4);
        assert!((l - (0.1 - 0.95) / 1e-4).abs() < 1e-6, "{l}");
    }

    #[test]
    fn neg_label_survives_large_scaled_cosines() {
        // τ = 1e-4 puts exponents near 1e4: naive f64 exp would overflow.
        let s = neg_label_from_cosines(&[0.9, 0.1], &[0.5, 0.95], 1, 1e-4);
        assert!(s.is_finite() && s < 1e-200);
        let s = neg_label_from_cosines(&[0.99], &[0.5], 1, 1e-4);
        assert!((s - 1.0).abs() < 1e-12);
    }
}
