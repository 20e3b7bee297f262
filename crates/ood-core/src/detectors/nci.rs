//! NCI: neural-collapse inspired score (Liu & Qin, "Detecting Out-of-distribution through the
//! Lens of Neural Collapse", CVPR 2025, arXiv:2311.01479, <https://arxiv.org/abs/2311.01479>);
//! OpenOOD key `nci`.
//!
//! Fit: `μ_G` = mean fit feature (OpenOOD: the ID-**train** mean) and the head weights `W`.
//!
//! Score with `ĉ = argmax z` (the predicted class; first maximum):
//! `s(h) = ⟨w_ĉ, h − μ_G⟩ / ‖h − μ_G‖₂ + α ‖h‖₁`, where `w_ĉ` is row `ĉ` of the head's weight
//! as it is (not normalised, as in OpenOOD's `nci_postprocessor.py`): the projection of the
//! centred feature's direction onto the predicted class's weight ("proximity" to the class
//! vertex of the collapsed simplex), plus an `L1`-norm filter term. Higher = more
//! in-distribution.
//!
//! Default `α = 1e-4` (OpenOOD `nci.yml`); sweep `α ∈ {1e-4, 1e-3, 1e-2, 1e-1}`. `α` must be
//! finite and `≥ 0`. A feature equal to `μ_G` has no direction: its score is non-finite and
//! scoring is an `Err`. Computed in f64 from the given logits (for `ĉ`) and features.
//! Checked against NumPy (`tests/data/posthoc_reference_c.py`, `tests/posthoc_golden_c.rs`)
//! and by hand below.

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head, argmax};
use crate::kernels::moments::mean_feature;
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// Cosine-like alignment of the centred feature with the predicted class weight, plus `α‖h‖₁`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Nci {
    /// Weight `α ≥ 0` of the `L1`-norm term (1e-4 in OpenOOD).
    pub alpha: f64,
}

impl Default for Nci {
    fn default() -> Self {
        Nci { alpha: 1e-4 }
    }
}

#[derive(Debug)]
struct NciScorer {
    alpha: f64,
    /// `μ_G`, the mean fit feature.
    centre: Array1<f64>,
    head: Head,
}

impl Detector for Nci {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        if !(self.alpha >= 0.0 && self.alpha.is_finite()) {
            return Err(Error::InvalidParameter(format!(
                "nci alpha must be finite and >= 0, got {}",
                self.alpha
            )));
        }
        check_fit_data(data, head, 1)?;
        Ok(Box::new(NciScorer {
            alpha: self.alpha,
            centre: mean_feature(data)?,
            head: head.clone(),
        }))
    }
}

impl Scorer for NciScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let s = x
            .logits
            .rows()
            .into_iter()
            .zip(x.embeddings.rows())
            .map(|(z, h)| {
                let top = argmax(&z.to_vec());
                let w = self.head.weight.row(top);
                let (mut dot, mut sq, mut l1) = (0.0f64, 0.0f64, 0.0f64);
                for ((&v, &m), &wj) in h.iter().zip(&self.centre).zip(w) {
                    let c = v as f64 - m;
                    dot += wj as f64 * c;
                    sq += c * c;
                    l1 += (v as f64).abs();
                }
                (dot / sq.sqrt() + self.alpha * l1) as f32
            })
            .collect();
        check_scores("nci", s)
    }
}

impl DetectorParams for Nci {
    const NAME: &'static str = "nci";
    const ABOUT: &'static str = "alignment of the centred feature with the predicted class weight plus an L1 norm term (Liu & Qin, CVPR'25)";
    fn sweep(&self) -> Vec<Self> {
        [1e-4, 1e-3, 1e-2, 1e-1]
            .into_iter()
            .map(|alpha| Nci { alpha })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn nci_matches_hand_computation() {
        // W rows w0 = [2, 0], w1 = [0, 1]; fit mean μ = [1, 1].
        let head = Head::new(array![[2.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let fit = Features::with_head(array![[0.0f32, 0.0], [2.0, 2.0]], &head, None).unwrap();
        // h = [4, -3]: z = [8, −3], ĉ = 0; h − μ = [3, −4], ‖·‖ = 5; ⟨w0, h − μ⟩ = 6;
        // ‖h‖₁ = 7. h = [1, 3]: z = [2, 3], ĉ = 1; h − μ = [0, 2]; ⟨w1, ·⟩ = 2, ‖·‖ = 2; ‖h‖₁ = 4.
        let test = Features::with_head(array![[4.0f32, -3.0], [1.0, 3.0]], &head, None).unwrap();
        for (alpha, want) in [(1e-4, [1.2 + 7e-4, 1.0 + 4e-4]), (0.5, [4.7, 3.0])] {
            let s = Nci { alpha }
                .fit(&(&fit).into(), &head)
                .unwrap()
                .score(&test)
                .unwrap();
            for (a, b) in s.iter().zip(want) {
                assert!((*a as f64 - b).abs() < 1e-6, "alpha {alpha}: {a} vs {b}");
            }
        }
        // A feature at the mean has no direction.
        let at_mean = Features::with_head(array![[1.0f32, 1.0]], &head, None).unwrap();
        let sc = Nci::default().fit(&(&fit).into(), &head).unwrap();
        assert!(sc.score(&at_mean).is_err());
    }

    #[test]
    fn nci_rejects_bad_alpha() {
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let fit = Features::with_head(array![[1.0f32, 2.0]], &head, None).unwrap();
        for alpha in [-0.1, f64::NAN, f64::INFINITY] {
            let e = Nci { alpha }
                .fit(&(&fit).into(), &head)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("nci alpha must be finite and >= 0"), "{e}");
        }
    }
}
