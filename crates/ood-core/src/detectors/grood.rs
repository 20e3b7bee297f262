//! GROOD: gradient-based OOD detection from nearest-centroid gradients (ElAraby, Sahoo,
//! Pequignot, Novello & Paull, "GROOD: Gradient-Aware Out-of-Distribution Detection",
//! arXiv:2312.14427, <https://arxiv.org/abs/2312.14427>); OpenOOD key `grood`. Pinned from
//! OpenOOD's `openood/postprocessors/grood.py` with its `configs/postprocessors/grood.yaml`
//! defaults (main branch of December 2025): `use_val_ood = True`, `no_gradients = False`,
//! `use_direct_grad = False`, `use_cosine = False`, `k = 1`, `sampling_ratio = 1`,
//! `n_noise_samples = 100`.
//!
//! Fit (labelled ID train, with its logits):
//! 1. class prototypes `p_c`: the mean fit feature of every class `c`;
//! 2. the noise prototype `p_N`: the mean of the first `n_noise` rows of the **OOD validation**
//!    features ([`SideInputs::ood_val`]; `noise = "val_ood"`, the default), or the mean of the
//!    class prototypes (`noise = "class_mean"`, OpenOOD's `use_proto_mean`), which needs no OOD
//!    data;
//! 3. for a feature `f` with pseudo label `ŷ = argmax z` the nearest-centroid logits are
//!    `ncc_j = −‖f − p_j‖` over the class prototypes and the noise prototype, the loss is
//!    `CE(ncc, ŷ)`, and its gradient with respect to `p_N` is, in closed form,
//!    `g(f) = softmax(ncc)_N · (f − p_N) / ‖f − p_N‖` (∂ncc_N/∂p_N is the unit vector from
//!    `p_N` to `f`, ∂CE/∂ncc_N = softmax(ncc)_N because `ŷ` is never the noise class; so `g`
//!    does not depend on `ŷ`). OpenOOD gets it from `torch.autograd.grad`;
//!    `tests/data/posthoc_reference_e.py` checks the closed form against autograd;
//! 4. the bank: `g` of every fit row whose label equals its pseudo label.
//!
//! Score: `s(x) = −min_b ‖g(x) − b‖²`, the negated squared L2 distance from the sample's gradient
//! to the nearest bank gradient (OpenOOD: `index.search(grads, 1)` on a faiss L2 index). Higher =
//! more in-distribution.
//!
//! Defaults: `noise = "val_ood"`, `n_noise = 100`. No sweep: OpenOOD's `grood.yaml` grid (`lam`,
//! `k`, `n_noise_samples`, `sampling_ratio`, `use_gaussian_noise`, `use_val_ood`) changes no
//! score in OpenOOD's own search, which runs `setup` once and then only `set_hyperparam`: the
//! noise and sampling options act in `setup`, `lam` only feeds the synthetic-OOD option (off),
//! and `k` is never read by the one-neighbour search.
//!
//! OOD validation data is a side input of the fit ([`Detector::fit_with`]), data and not a
//! hyper-parameter; plain [`Detector::fit`] with the default `noise = "val_ood"` is an error that
//! says so. Runners pass it where the run has OOD validation features (the parameter search's
//! OOD-val set of `ood bench`, `ood eval --val-ood`).
//!
//! Differences from OpenOOD:
//! * exact nearest-neighbour search: OpenOOD indexes the bank with faiss `IndexIVFFlat`
//!   (`nlist = 4·√(training batches)` cells, `nprobe = 4`), an approximate search that can
//!   return a farther neighbour; this is the exact minimum, the intended quantity.
//! * the noise prototype averages exactly the first `n_noise` OOD-val rows; OpenOOD averages
//!   whole batches until it has at least `n_noise_samples` rows (so up to a batch more). All
//!   rows are used when there are fewer than `n_noise`.
//! * a class with no fit row is left out of the prototypes; OpenOOD keeps its zero-initialised
//!   prototype, a spurious class at the origin.
//! * f64 arithmetic throughout (OpenOOD: float32); the bank is held in f64.
//!
//! The score is a squared distance between gradients whose size is `softmax(ncc)_N ≤ 1`, which
//! is tiny for samples far closer to a class prototype than to the noise prototype; it is
//! computed in f64 and only rounded to f32 at the end (float32 keeps it down to about `1e-38`).
//!
//! Cost: two streamed passes over the fit data (prototypes, then gradients); memory is the bank,
//! `8·N_correct·d` bytes. Scoring is f64 GEMM tiles of query gradients against bank blocks.
//! Checked against a NumPy/PyTorch re-implementation of OpenOOD's code
//! (`tests/data/posthoc_reference_e.py`, `tests/posthoc_golden_e.rs`) and by hand below.

use super::DetectorParams;
use crate::detector::{Detector, Scorer, SideInputs, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{DEFAULT_CHUNK_ROWS, Features, FitData, Head};
use crate::kernels::neighbours::{sq_dists_f64, sq_norms_f64};
use ndarray::{Array1, Array2, ArrayView2, Axis, s};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Where GROOD's noise prototype comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroodNoise {
    /// The mean of the first `n_noise` OOD validation features (OpenOOD's `use_val_ood`).
    #[default]
    ValOod,
    /// The mean of the class prototypes (OpenOOD's `use_proto_mean`): no OOD data needed.
    ClassMean,
}

/// Nearest-centroid-loss gradients with respect to a noise prototype, matched to the nearest
/// correctly classified ID gradient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grood {
    /// Source of the noise prototype: `val_ood` (OOD validation features, a side input) or
    /// `class_mean`.
    pub noise: GroodNoise,
    /// How many OOD validation rows (the first ones) the noise prototype averages (100, as
    /// OpenOOD's `n_noise_samples`).
    pub n_noise: usize,
}

impl Default for Grood {
    fn default() -> Self {
        Grood {
            noise: GroodNoise::ValOod,
            n_noise: 100,
        }
    }
}

/// Query rows per scoring block, and the most f64 values of one distance tile.
const QUERY_BLOCK: usize = 256;
const TILE: usize = 1 << 22;

/// The prototypes and the gradient of the loss at a feature.
#[derive(Debug)]
struct Prototypes {
    /// `(m, d)` means of the classes that have fit rows.
    classes: Array2<f64>,
    class_norms: Vec<f64>,
    /// `(d)` noise prototype.
    noise: Array1<f64>,
}

impl Prototypes {
    /// `(rows, d)` gradients `g(f)` of the rows of `x` (see the module doc).
    fn gradients(&self, x: ArrayView2<'_, f32>) -> Array2<f64> {
        let mut y = x.as_standard_layout().mapv(|v| v as f64);
        let yn = sq_norms_f64(y.view());
        let dist = sq_dists_f64(y.view(), &yn, self.classes.view(), &self.class_norms);
        let (d, m) = (y.ncols(), dist.ncols());
        let noise = self.noise.as_slice().expect("fresh array");
        y.as_slice_mut()
            .expect("standard layout")
            .par_chunks_mut(d)
            .zip(dist.as_slice().expect("fresh array").par_chunks(m))
            .for_each(|(row, d2)| {
                row.iter_mut().zip(noise).for_each(|(v, &p)| *v -= p);
                let dn = row.iter().map(|v| v * v).sum::<f64>().sqrt();
                // ncc = (−‖f − p_c‖)_c ‖ (−‖f − p_N‖); softmax at the noise entry.
                let ncc = d2.iter().map(|&v| -v.sqrt()).chain(std::iter::once(-dn));
                let top = ncc.clone().fold(f64::NEG_INFINITY, f64::max);
                let lse = top + ncc.map(|v| (v - top).exp()).sum::<f64>().ln();
                let p_noise = (-dn - lse).exp();
                let scale = if dn > 0.0 { p_noise / dn } else { 0.0 };
                row.iter_mut().for_each(|v| *v *= scale);
            });
        y
    }
}

#[derive(Debug)]
struct GroodScorer {
    protos: Prototypes,
    /// `(N_correct, d)` gradients of the correctly classified fit rows.
    bank: Array2<f64>,
    bank_norms: Vec<f64>,
    head: Head,
}

const NEEDS_OOD_VAL: &str = "grood needs OOD validation features for its noise prototype \
    (SideInputs::ood_val: `ood eval --val-ood`, the OOD-val set of `ood bench`), or set \
    noise=class_mean";

impl Detector for Grood {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        self.fit_with(data, head, &SideInputs::default())
    }

    fn fit_with(
        &self,
        data: &FitData<'_>,
        head: &Head,
        side: &SideInputs<'_>,
    ) -> Result<Box<dyn Scorer>> {
        if self.n_noise == 0 {
            return Err(Error::InvalidParameter(
                "grood n_noise (OOD validation rows averaged) must be >= 1, got 0".into(),
            ));
        }
        check_fit_data(data, head, 1)?;
        if !data.has_labels() {
            return Err(Error::MissingLabels {
                detector: "grood".into(),
            });
        }
        let (d, c) = (data.dim(), head.num_classes());
        let ood_val = match self.noise {
            GroodNoise::ValOod => {
                let v = side
                    .ood_val
                    .ok_or_else(|| Error::InvalidParameter(NEEDS_OOD_VAL.into()))?;
                if v.is_empty() {
                    return Err(Error::TooFewSamples {
                        what: "grood noise prototype (OOD validation rows)".into(),
                        need: 1,
                        got: 0,
                    });
                }
                if v.dim() != d {
                    return Err(Error::dim(
                        "feature dimension (grood OOD validation features vs fit data)",
                        d,
                        v.dim(),
                    ));
                }
                Some(v)
            }
            GroodNoise::ClassMean => None,
        };
        // Pass 1: class prototypes.
        let mut counts = vec![0usize; c];
        let mut sums = Array2::<f64>::zeros((c, d));
        data.for_each_chunk(DEFAULT_CHUNK_ROWS, |chunk| {
            let labels = chunk.labels.as_ref().ok_or_else(|| Error::MissingLabels {
                detector: "grood".into(),
            })?;
            for (row, &l) in chunk.embeddings.rows().into_iter().zip(labels) {
                if l < 0 || l as usize >= c {
                    return Err(Error::InvalidParameter(format!(
                        "grood: fit label {l} is outside 0..{c} (the head has {c} classes)"
                    )));
                }
                counts[l as usize] += 1;
                sums.row_mut(l as usize)
                    .zip_mut_with(&row, |s, &v| *s += v as f64);
            }
            Ok(())
        })?;
        let kept: Vec<usize> = (0..c).filter(|&k| counts[k] > 0).collect();
        let mut classes = Array2::<f64>::zeros((kept.len(), d));
        for (i, &k) in kept.iter().enumerate() {
            classes
                .row_mut(i)
                .assign(&(&sums.row(k) / counts[k] as f64));
        }
        let noise = match ood_val {
            Some(v) => {
                let rows = self.n_noise.min(v.len());
                v.embeddings
                    .slice(s![..rows, ..])
                    .mapv(|x| x as f64)
                    .mean_axis(Axis(0))
                    .expect("at least one row")
            }
            None => classes.mean_axis(Axis(0)).expect("at least one class"),
        };
        let protos = Prototypes {
            class_norms: sq_norms_f64(classes.view()),
            classes,
            noise,
        };
        // Pass 2: gradients of the correctly classified fit rows.
        let mut bank: Vec<f64> = Vec::new();
        data.for_each_chunk(DEFAULT_CHUNK_ROWS, |chunk| {
            let labels = chunk.labels.as_ref().ok_or_else(|| Error::MissingLabels {
                detector: "grood".into(),
            })?;
            let g = protos.gradients(chunk.embeddings.view());
            for ((row, &l), p) in g.rows().into_iter().zip(labels).zip(chunk.predictions()) {
                if l == p as i64 {
                    bank.extend(row.iter());
                }
            }
            Ok(())
        })?;
        if bank.is_empty() {
            return Err(Error::TooFewSamples {
                what: "grood gradient bank (fit rows whose label is the head's prediction)".into(),
                need: 1,
                got: 0,
            });
        }
        let bank = Array2::from_shape_vec((bank.len() / d, d), bank).expect("whole rows");
        Ok(Box::new(GroodScorer {
            bank_norms: sq_norms_f64(bank.view()),
            bank,
            protos,
            head: head.clone(),
        }))
    }
}

impl Scorer for GroodScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let nb = self.bank.nrows();
        let bb = (TILE / QUERY_BLOCK).min(nb);
        let mut out = Array1::<f32>::zeros(x.len());
        let out_slice = out.as_slice_mut().expect("fresh array");
        for (bi, o) in out_slice.chunks_mut(QUERY_BLOCK).enumerate() {
            let r0 = bi * QUERY_BLOCK;
            let g = self
                .protos
                .gradients(x.embeddings.slice(s![r0..r0 + o.len(), ..]));
            let gn = sq_norms_f64(g.view());
            let mut best = vec![f64::INFINITY; o.len()];
            let mut b0 = 0;
            while b0 < nb {
                let b1 = (b0 + bb).min(nb);
                let dist = sq_dists_f64(
                    g.view(),
                    &gn,
                    self.bank.slice(s![b0..b1, ..]),
                    &self.bank_norms[b0..b1],
                );
                for (b, row) in best.iter_mut().zip(dist.rows()) {
                    *b = row.iter().copied().fold(*b, f64::min);
                }
                b0 = b1;
            }
            for (o, b) in o.iter_mut().zip(best) {
                *o = -b as f32;
            }
        }
        check_scores("grood", out)
    }
}

impl DetectorParams for Grood {
    const NAME: &'static str = "grood";
    const ABOUT: &'static str = "negated distance from the nearest-centroid-loss gradient w.r.t. an OOD-val noise prototype to the nearest correctly classified ID gradient (ElAraby et al., OpenOOD GROOD)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// Two classes in 2-D: fit rows (1, 0), (3, 0) of class 0 and (0, 2) of class 1, an identity
    /// head (logits = features), so the prototypes are (2, 0) and (0, 2) and all three rows are
    /// correctly classified.
    fn toy() -> (Features, Head) {
        let head = Head::new(Array2::eye(2), Array1::zeros(2)).unwrap();
        let fit = Features::with_head(
            array![[1.0f32, 0.0], [3.0, 0.0], [0.0, 2.0]],
            &head,
            Some(vec![0, 0, 1]),
        )
        .unwrap();
        (fit, head)
    }

    /// `g(f)` by hand: distances to the prototypes and the noise prototype, softmax of their
    /// negatives at the noise entry, times the unit vector from the noise prototype.
    fn grad(f: [f64; 2], protos: &[[f64; 2]], noise: [f64; 2]) -> [f64; 2] {
        let dist = |p: [f64; 2]| ((f[0] - p[0]).powi(2) + (f[1] - p[1]).powi(2)).sqrt();
        let dn = dist(noise);
        let z: f64 = protos.iter().map(|&p| (-dist(p)).exp()).sum::<f64>() + (-dn).exp();
        let s = (-dn).exp() / z;
        [s * (f[0] - noise[0]) / dn, s * (f[1] - noise[1]) / dn]
    }

    #[test]
    fn grood_matches_hand_computation() {
        let (fit, head) = toy();
        let protos = [[2.0, 0.0], [0.0, 2.0]];
        // OOD val rows (−2, −2), (0, −2) and a third that n_noise = 2 leaves out: p_N = (−1, −2).
        let val = Features::with_head(
            array![[-2.0f32, -2.0], [0.0, -2.0], [50.0, 50.0]],
            &head,
            None,
        )
        .unwrap();
        let noise = [-1.0, -2.0];
        let q = Features::with_head(array![[2.0f32, 1.0], [-1.0, -1.0]], &head, None).unwrap();
        let det = Grood {
            noise: GroodNoise::ValOod,
            n_noise: 2,
        };
        let s = det
            .fit_with(
                &(&fit).into(),
                &head,
                &SideInputs {
                    ood_val: Some(&val),
                    ..SideInputs::default()
                },
            )
            .unwrap()
            .score(&q)
            .unwrap();
        let bank: Vec<[f64; 2]> = [[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]
            .iter()
            .map(|&f| grad(f, &protos, noise))
            .collect();
        let want = |f: [f64; 2]| {
            let g = grad(f, &protos, noise);
            -bank
                .iter()
                .map(|b| (g[0] - b[0]).powi(2) + (g[1] - b[1]).powi(2))
                .fold(f64::INFINITY, f64::min)
        };
        for (a, w) in s.iter().zip([want([2.0, 1.0]), want([-1.0, -1.0])]) {
            assert!(
                (*a as f64 - w).abs() <= 1e-6 * w.abs().max(1e-12),
                "{a} vs {w}"
            );
        }
        // The OOD-like query sits next to the noise prototype: its gradient is large.
        assert!(s[1] < s[0], "{s}");
        // noise = class_mean: p_N = (1, 1), no OOD data needed.
        let s = Grood {
            noise: GroodNoise::ClassMean,
            n_noise: 100,
        }
        .fit(&(&fit).into(), &head)
        .unwrap()
        .score(&q)
        .unwrap();
        let bank: Vec<[f64; 2]> = [[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]
            .iter()
            .map(|&f| grad(f, &protos, [1.0, 1.0]))
            .collect();
        let g = grad([2.0, 1.0], &protos, [1.0, 1.0]);
        let w = -bank
            .iter()
            .map(|b| (g[0] - b[0]).powi(2) + (g[1] - b[1]).powi(2))
            .fold(f64::INFINITY, f64::min);
        assert!((s[0] as f64 - w).abs() <= 1e-6 * w.abs(), "{} vs {w}", s[0]);
    }

    #[test]
    fn grood_bank_keeps_only_correctly_classified_rows() {
        // A fourth fit row labelled 1 but predicted 0 (logits = features: (4, 0.5)) joins the
        // prototypes, not the bank: scoring it is not a zero distance.
        let head = Head::new(Array2::eye(2), Array1::zeros(2)).unwrap();
        let fit = Features::with_head(
            array![[1.0f32, 0.0], [3.0, 0.0], [0.0, 2.0], [4.0, 0.5]],
            &head,
            Some(vec![0, 0, 1, 1]),
        )
        .unwrap();
        let sc = Grood {
            noise: GroodNoise::ClassMean,
            n_noise: 100,
        }
        .fit(&(&fit).into(), &head)
        .unwrap();
        let s = sc.score(&fit).unwrap();
        assert!(s[0].abs() < 1e-12 && s[2].abs() < 1e-12, "{s}");
        assert!(s[3] < -1e-6, "{s}");
    }

    #[test]
    fn grood_errors() {
        let (fit, head) = toy();
        let e = Grood::default()
            .fit(&(&fit).into(), &head)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("grood needs OOD validation features") && e.contains("noise=class_mean"),
            "{e}"
        );
        let e = Grood {
            n_noise: 0,
            ..Grood::default()
        }
        .fit(&(&fit).into(), &head)
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("n_noise"), "{e}");
        let unlabelled = Features::with_head(fit.embeddings.clone(), &head, None).unwrap();
        let e = Grood {
            noise: GroodNoise::ClassMean,
            n_noise: 100,
        }
        .fit(&(&unlabelled).into(), &head)
        .err()
        .unwrap();
        assert!(matches!(e, Error::MissingLabels { .. }), "{e}");
        let wide = Features::new(Array2::zeros((2, 3)), Array2::zeros((2, 2)), None).unwrap();
        let e = Grood::default()
            .fit_with(
                &(&fit).into(),
                &head,
                &SideInputs {
                    ood_val: Some(&wide),
                    ..SideInputs::default()
                },
            )
            .err()
            .unwrap();
        assert!(matches!(e, Error::DimensionMismatch { .. }), "{e}");
        // Every fit row misclassified: an empty bank.
        let wrong =
            Features::with_head(fit.embeddings.clone(), &head, Some(vec![1, 1, 0])).unwrap();
        let e = Grood {
            noise: GroodNoise::ClassMean,
            n_noise: 100,
        }
        .fit(&(&wrong).into(), &head)
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("grood gradient bank"), "{e}");
        assert!(
            crate::DetectorSpec::from_name("grood", &[("noise".into(), "nope".into())]).is_err()
        );
        assert_eq!(
            crate::DetectorSpec::from_name("grood", &[("noise".into(), "class_mean".into())])
                .unwrap(),
            crate::DetectorSpec::Grood(Grood {
                noise: GroodNoise::ClassMean,
                n_noise: 100
            })
        );
    }
}
