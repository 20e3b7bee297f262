//! MCM: maximum concept matching (Ming, Cai, Gu, Sun, Li & Li, "Delving into Out-of-Distribution
//! Detection with Vision-Language Representations", NeurIPS 2022, arXiv:2211.13445,
//! <https://arxiv.org/abs/2211.13445>); OpenOOD key `mcm`.
//!
//! For CLIP-style models the [`Features::embeddings`] are the image embeddings `(n, d)` and the
//! [`Head`] weight rows are the ID-label text embeddings `(C, d)` (the head bias is ignored; it is
//! 0 for a zero-shot head).
//!
//! Score: `s_i = cos(x, t_i)` (both L2-normalised), `S = max_i softmax(s / τ)_i`. Higher = more
//! in-distribution. Default `τ = 1` on raw cosines (the MCM paper's `--T` default and OpenOOD
//! `mcm.yml`; OpenOOD lists `τ ∈ {0.01, 1, 10}` but its APS is off, so there is no sweep here).
//! Checked against the spec's section 9.4 vectors (τ = 1 and τ = 0.01). Computed in f64 with a
//! stable softmax. A zero vector is normalised as PyTorch's `F.normalize` does (norm clamped at
//! 1e-12), so its cosines are 0.
//!
//! `log = true` (the default) outputs the log-odds `ln(S / (1 − S))` instead of `S` (same
//! ranking; at CLIP's `τ = 0.01` a cosine gap of 0.4 already puts `1 − S` below f32's
//! resolution, so `S` itself ties confident images). `log = false` outputs `S` as OpenOOD does.
//!
//! The text side (one prompt `"a photo of a <class>"` in MCM, an 80-template ensemble in OpenOOD) is
//! whatever produced the head; this file sees only the numbers.

use super::DetectorParams;
use crate::detector::{
    Detector, Scorer, check_fit_data, check_input, check_scores, max_softmax_log_odds,
};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use crate::kernels::cosine::{for_each_cosine_block, normalized_columns};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// Maximum softmax of the image–label cosine similarities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mcm {
    /// Softmax temperature `τ` applied to raw cosines (1 in MCM and OpenOOD).
    pub temperature: f64,
    /// Output the log-odds `ln(S / (1 − S))` instead of `S` (same ranking, no saturation).
    pub log: bool,
}

impl Default for Mcm {
    fn default() -> Self {
        Mcm {
            temperature: 1.0,
            log: true,
        }
    }
}

/// `max_i softmax(cos / τ)_i` for one sample's cosines, in f64.
pub(crate) fn mcm_from_cosines(cos: &[f64], temperature: f64) -> f64 {
    let m = cos.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = cos.iter().map(|&c| ((c - m) / temperature).exp()).sum();
    1.0 / sum
}

#[derive(Debug)]
struct McmScorer {
    temperature: f64,
    log: bool,
    /// `(d, C)` normalised ID-label embeddings.
    labels_t: Array2<f64>,
    head: Head,
}

impl Detector for Mcm {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::InvalidParameter(format!(
                "mcm temperature must be > 0, got {}",
                self.temperature
            )));
        }
        check_fit_data(data, head, 0)?;
        if self.log && head.num_classes() < 2 {
            return Err(Error::InvalidParameter(
                "mcm log=true needs at least two labels (with one, S = 1 for every image)".into(),
            ));
        }
        Ok(Box::new(McmScorer {
            temperature: self.temperature,
            log: self.log,
            labels_t: normalized_columns(head.weight.view()),
            head: head.clone(),
        }))
    }
}

impl Scorer for McmScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let mut out = Array1::<f32>::zeros(x.len());
        for_each_cosine_block(x.embeddings.view(), &[&self.labels_t], |start, cos| {
            for (i, r) in cos[0].rows().into_iter().enumerate() {
                let r = r.as_slice().expect("fresh array rows are contiguous");
                out[start + i] = if self.log {
                    max_softmax_log_odds(r.iter().copied(), self.temperature) as f32
                } else {
                    mcm_from_cosines(r, self.temperature) as f32
                };
            }
        });
        check_scores("mcm", out)
    }
}

impl DetectorParams for Mcm {
    const NAME: &'static str = "mcm";
    const ABOUT: &'static str = "max softmax of CLIP image-label cosines (Ming et al., NeurIPS'22)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn mcm_matches_spec_vectors() {
        let pos = [[0.30, 0.22, 0.18], [0.20, 0.21, 0.19]];
        for (t, want) in [(1.0, [0.355867, 0.336672]), (0.01, [0.999659, 0.665241])] {
            for (c, w) in pos.iter().zip(want) {
                let s = mcm_from_cosines(c, t);
                assert!((s - w).abs() < 1e-6, "τ={t}: {s} vs {w}");
            }
        }
    }

    #[test]
    fn mcm_end_to_end_uses_cosines_of_embeddings() {
        // Text embeddings e0 = [2, 0], e1 = [1, 1] (normalised inside); image [3, 4] has cosines
        // 0.6 and 7/(5√2).
        let head = Head::new(array![[2.0f32, 0.0], [1.0, 1.0]], array![0.0, 0.0]).unwrap();
        let x = Features::with_head(array![[3.0f32, 4.0], [0.0, 0.0]], &head, None).unwrap();
        let exact = Mcm {
            temperature: 0.5,
            log: false,
        };
        let s = exact.fit(&(&x).into(), &head).unwrap().score(&x).unwrap();
        let c = [0.6, 7.0 / (5.0 * 2f64.sqrt())];
        let want = (c[1] / 0.5).exp() / ((c[0] / 0.5).exp() + (c[1] / 0.5).exp());
        assert!((s[0] as f64 - want).abs() < 1e-6, "{} vs {want}", s[0]);
        // The zero image has cosines 0, 0: a flat softmax.
        assert!((s[1] - 0.5).abs() < 1e-7);
        // The default log form: ln(S / (1 − S)) = (c1 − c0) / τ here; 0 for the flat softmax.
        let log = Mcm {
            temperature: 0.5,
            log: true,
        };
        let l = log.fit(&(&x).into(), &head).unwrap().score(&x).unwrap();
        assert!((l[0] as f64 - (c[1] - c[0]) / 0.5).abs() < 1e-6, "{}", l[0]);
        assert_eq!(l[1], 0.0);
    }
}
