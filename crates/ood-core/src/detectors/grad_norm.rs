//! GradNorm (Huang, Geng & Li, "On the Importance of Gradients for Detecting Distributional
//! Shifts in the Wild", NeurIPS 2021, arXiv:2110.00218, <https://arxiv.org/abs/2110.00218>);
//! OpenOOD key `gradnorm`.
//!
//! The loss is the KL divergence to the uniform distribution at temperature 1, `L = −Σ_c log p_c`
//! (up to a constant), and its gradient with respect to the last-layer weight is
//! `(C·p − 1) hᵀ`. Its L1 norm factorises:
//! `s = (Σ_c |C·p_c − 1|) · Σ_j |h_j|`, with `p = softmax(z)` from the given logits.
//! Higher = more in-distribution. No parameters (OpenOOD `gradnorm.yml`).
//!
//! This closed form is the true gradient, not an approximation: OpenOOD backpropagates only to the
//! fc weight, per sample, and gets `s / C` (its uniform targets carry `1/C`; same ranking). Checked
//! against the spec's section 9.4 vectors (factor and score) and against that per-sample PyTorch
//! autograd (`tests/data/posthoc_reference.py`, `tests/posthoc_golden.rs`). No backward pass is
//! needed. (The paper's ablation over deeper layers' parameters is not offered: the registry's
//! inference networks fold BatchNorm into the convolutions, so their parameters are not the
//! trained ones.)

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores, softmax};
use crate::error::Result;
use crate::features::{Features, FitData, Head};
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// L1 norm of the last-layer gradient of the KL divergence to the uniform distribution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GradNorm {}

#[derive(Debug)]
struct GradNormScorer {
    head: Head,
}

/// `Σ_c |C·p_c − 1|` for one row of logits.
fn factor(z: &[f32]) -> f64 {
    let c = z.len() as f64;
    softmax(z).iter().map(|p| (c * p - 1.0).abs()).sum()
}

impl Detector for GradNorm {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        check_fit_data(data, head, 0)?;
        Ok(Box::new(GradNormScorer { head: head.clone() }))
    }
}

impl Scorer for GradNormScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let s = x
            .logits
            .rows()
            .into_iter()
            .zip(x.embeddings.rows())
            .map(|(z, h)| {
                let l1: f64 = h.iter().map(|&v| (v as f64).abs()).sum();
                (factor(&z.to_vec()) * l1) as f32
            })
            .collect();
        check_scores("grad_norm", s)
    }
}

impl DetectorParams for GradNorm {
    const NAME: &'static str = "grad_norm";
    const ABOUT: &'static str =
        "L1 norm of the last-layer KL-to-uniform gradient (Huang et al., NeurIPS'21)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::tests::spec_logits;
    use ndarray::{Array2, array};

    #[test]
    fn grad_norm_matches_spec_vectors() {
        let (f, _) = spec_logits();
        for (r, want) in f
            .logits
            .rows()
            .into_iter()
            .zip([4.587284, 0.398672, 3.796261])
        {
            assert!((factor(&r.to_vec()) - want).abs() < 1e-6);
        }
        let h = array![[1.0f32, 0.0, 2.0], [0.5, 0.5, 0.5], [0.0, 3.0, 1.0]];
        let head = Head::new(Array2::zeros((4, 3)), Array1::zeros(4)).unwrap();
        let x = Features::new(h, f.logits.clone(), None).unwrap();
        let s = GradNorm {}
            .fit(&(&x).into(), &head)
            .unwrap()
            .score(&x)
            .unwrap();
        for (a, b) in s.iter().zip([13.761853, 0.598008, 15.185044]) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
