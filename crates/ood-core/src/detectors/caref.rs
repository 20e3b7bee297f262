//! CARef: class-aware relative feature error (Ling, Chang, Zhao, Zhao, Chow & Deng, "CADRef:
//! Robust Out-of-Distribution Detection via Class-Aware Decoupled Relative Feature Leveraging",
//! CVPR 2025, arXiv:2503.00325, <https://arxiv.org/abs/2503.00325>; the paper's first method,
//! authors' code `LingAndZero/CADRef` `ood_methods/CARef.py`). Not in OpenOOD.
//!
//! Fit (ID-train, no labels): `μ_c` = mean feature of the fit rows **predicted** `c` (first
//! arg-max of their logits; the authors' `get_features` groups by prediction, not by label).
//!
//! Score with `ĉ = argmax z`: `s(h) = −‖h − μ_ĉ‖₁ / ‖h‖₁`, the relative L1 error to the
//! predicted class's mean feature. Higher = more in-distribution. No hyper-parameters, no sweep.
//! [`Cadref`](super::Cadref) decouples this error by the sign of the class weights.
//!
//! Differences from the authors' code: a class that no fit row is predicted as has no mean (the
//! authors' `mean` of an empty tensor is NaN): that is an `Err` naming the class, as SHE does.
//! A zero feature (`‖h‖₁ = 0`) has no relative error: scoring is an `Err`. Fit streams the data
//! (`kernels/predicted_means.rs`); scores are computed in f64. Checked against NumPy
//! (`tests/data/posthoc_reference_d.py`, `tests/posthoc_golden_d.rs`) and by hand below.

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data};
use crate::error::Result;
use crate::features::{Features, FitData, Head};
use crate::kernels::predicted_means::{Rows, predicted_class_means, score_by_prediction};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// Relative L1 distance to the mean feature of the predicted class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Caref {}

#[derive(Debug)]
struct CarefScorer {
    /// `(c, d)` mean fit feature per predicted class.
    means: Array2<f64>,
    head: Head,
}

/// The error message of a class that no fit row is predicted as.
pub(crate) fn empty_class(detector: &str, k: usize) -> String {
    format!(
        "{detector} mean feature of class {k} (fit samples predicted {k}; fit on ID-train data \
         where the classifier predicts every class)"
    )
}

impl Detector for Caref {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        check_fit_data(data, head, 1)?;
        let means = predicted_class_means(
            data,
            head,
            Rows::Features,
            |_, _, _| Ok(true),
            |k| empty_class("caref", k),
        )?;
        Ok(Box::new(CarefScorer {
            means,
            head: head.clone(),
        }))
    }
}

impl Scorer for CarefScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        score_by_prediction(x, &self.head, "caref", |c, h, _| {
            let (mut err, mut l1) = (0.0f64, 0.0f64);
            for (&v, &m) in h.iter().zip(self.means.row(c)) {
                err += (v as f64 - m).abs();
                l1 += (v as f64).abs();
            }
            -err / l1
        })
    }
}

impl DetectorParams for Caref {
    const NAME: &'static str = "caref";
    const ABOUT: &'static str =
        "relative L1 error to the predicted class's mean feature (Ling et al., CVPR'25)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn caref_matches_hand_computation() {
        // Identity head: predictions are the larger coordinate. Fit rows (2, 0), (4, 1) → class
        // 0, mean (3, 0.5); (0, 2), (1, 3) → class 1, mean (0.5, 2.5).
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let fit = Features::with_head(
            array![[2.0f32, 0.0], [4.0, 1.0], [0.0, 2.0], [1.0, 3.0]],
            &head,
            None,
        )
        .unwrap();
        // (3, 1): class 0, |0| + |0.5| = 0.5 over 4 → −0.125. (−1, 2): class 1,
        // |−1.5| + |−0.5| = 2 over 3 → −2/3.
        let test = Features::with_head(array![[3.0f32, 1.0], [-1.0, 2.0]], &head, None).unwrap();
        let s = Caref {}
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&test)
            .unwrap();
        assert!(
            (s[0] + 0.125).abs() < 1e-7 && (s[1] + 2.0 / 3.0).abs() < 1e-7,
            "{s}"
        );
        // No fit row predicted 1: an error naming the class.
        let only0 = Features::with_head(array![[2.0f32, 0.0]], &head, None).unwrap();
        let e = Caref {}
            .fit(&(&only0).into(), &head)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("caref mean feature of class 1"), "{e}");
        // A zero feature has no relative error.
        let sc = Caref {}.fit(&(&fit).into(), &head).unwrap();
        let zero = Features::with_head(array![[0.0f32, 0.0]], &head, None).unwrap();
        assert!(sc.score(&zero).is_err());
    }
}
