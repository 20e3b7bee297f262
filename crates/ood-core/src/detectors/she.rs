//! SHE: simplified Hopfield energy (Zhang, Fu, Yang, Wang & Zhang, "Out-of-Distribution Detection
//! based on In-Distribution Data Patterns Memorization with Modern Hopfield Energy", ICLR 2023,
//! <https://openreview.net/forum?id=KkazG4lgKL>); OpenOOD key `she`.
//!
//! Fit (labelled ID-**train** data): `m_c` = mean feature over the fit samples with label `c`
//! **and** predicted class (first arg-max of the logits) `c`.
//!
//! Score with `ĉ = argmax z` (first maximum):
//! * `inner_product` (default, OpenOOD `she.yml`): `⟨h, m_ĉ⟩`;
//! * `euclidean`: `−‖h − m_ĉ‖₂`;
//! * `cosine`: `cos(h, m_ĉ)`.
//!
//! Higher = more in-distribution. No sweep.
//!
//! Traps handled: OpenOOD gives a NaN pattern (mean of nothing) for a class with no correctly
//! classified fit sample; here that is an `Err` naming the class. Labels outside `0..C` (e.g. `-1`
//! for OOD) never match a prediction and are ignored. The fit streams over the data in chunks;
//! the means are accumulated in f64.

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use crate::kernels::predicted_means::{Rows, predicted_class_means, score_by_prediction};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// How a feature is compared with the stored pattern of its predicted class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SheMetric {
    /// `⟨h, m_ĉ⟩` (OpenOOD default).
    #[default]
    InnerProduct,
    /// `−‖h − m_ĉ‖₂`.
    Euclidean,
    /// Cosine similarity of `h` and `m_ĉ`.
    Cosine,
}

/// Simplified Hopfield energy with class patterns of correctly classified ID-train samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct She {
    /// Comparison of a feature with its predicted class's pattern (`inner_product` in OpenOOD).
    pub metric: SheMetric,
}

#[derive(Debug)]
struct SheScorer {
    metric: SheMetric,
    /// `(c, d)` stored patterns.
    patterns: Array2<f64>,
    head: Head,
}

impl Detector for She {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        check_fit_data(data, head, 1)?;
        if !data.has_labels() {
            return Err(Error::MissingLabels {
                detector: "she".into(),
            });
        }
        let c = head.num_classes();
        let patterns = predicted_class_means(
            data,
            head,
            Rows::Features,
            |chunk, i, pred| {
                let labels = chunk.labels.as_ref().ok_or_else(|| Error::MissingLabels {
                    detector: "she".into(),
                })?;
                if i == 0
                    && let Some(&l) = labels.iter().find(|&&l| l < 0 || l as usize >= c)
                {
                    return Err(Error::InvalidParameter(format!(
                        "she: fit label {l} is outside 0..{c} (the head has {c} classes)"
                    )));
                }
                Ok(labels[i] == pred as i64)
            },
            |k| {
                format!(
                    "she pattern of class {k} (fit samples both labelled and predicted {k}; \
                     fit on labelled ID-train data where every class has a correct prediction)"
                )
            },
        )?;
        Ok(Box::new(SheScorer {
            metric: self.metric,
            patterns,
            head: head.clone(),
        }))
    }
}

impl Scorer for SheScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        score_by_prediction(x, &self.head, "she", |c, h, _| {
            let m = self.patterns.row(c);
            match self.metric {
                SheMetric::InnerProduct => h.iter().zip(m).map(|(&a, &b)| a as f64 * b).sum(),
                SheMetric::Euclidean => -h
                    .iter()
                    .zip(m)
                    .map(|(&a, &b)| (a as f64 - b).powi(2))
                    .sum::<f64>()
                    .sqrt(),
                SheMetric::Cosine => {
                    let dot: f64 = h.iter().zip(m).map(|(&a, &b)| a as f64 * b).sum();
                    let nh = h.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
                    let nm = m.iter().map(|&b| b * b).sum::<f64>().sqrt();
                    // PyTorch's cosine_similarity clamps each norm at eps = 1e-8.
                    dot / (nh.max(1e-8) * nm.max(1e-8))
                }
            }
        })
    }
}

impl DetectorParams for She {
    const NAME: &'static str = "she";
    const ABOUT: &'static str =
        "simplified Hopfield energy to class patterns (Zhang et al., ICLR'23)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn toy() -> (Features, Head) {
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        // Predictions 0, 0, 1, 1; labels 0, 1, 1, 1: the second row is misclassified.
        let fit = Features::with_head(
            array![[2.0f32, 0.0], [3.0, 1.0], [0.0, 4.0], [1.0, 2.0]],
            &head,
            Some(vec![0, 1, 1, 1]),
        )
        .unwrap();
        (fit, head)
    }

    #[test]
    fn she_matches_hand_computation() {
        let (fit, head) = toy();
        // m_0 = [2, 0]; m_1 = mean([0, 4], [1, 2]) = [0.5, 3].
        let test = Features::with_head(array![[1.0f32, 0.5], [1.0, 2.0]], &head, None).unwrap();
        let score = |metric| {
            She { metric }
                .fit(&(&fit).into(), &head)
                .unwrap()
                .score(&test)
                .unwrap()
        };
        let s = score(SheMetric::InnerProduct);
        assert!(
            (s[0] - 2.0).abs() < 1e-6 && (s[1] - 6.5).abs() < 1e-6,
            "{s}"
        );
        let s = score(SheMetric::Euclidean);
        assert!((s[0] + 1.25f32.sqrt()).abs() < 1e-6 && (s[1] + 1.25f32.sqrt()).abs() < 1e-6);
        let s = score(SheMetric::Cosine);
        let want1 = 6.5 / (5.0f32.sqrt() * 9.25f32.sqrt());
        assert!((s[0] - 2.0 / (1.25f32.sqrt() * 2.0)).abs() < 1e-6 && (s[1] - want1).abs() < 1e-6);
    }

    #[test]
    fn she_rejects_a_class_without_correct_samples() {
        let (fit, head) = toy();
        let bad = Features::new(
            fit.embeddings.clone(),
            fit.logits.clone(),
            Some(vec![1, 1, 0, 0]),
        )
        .unwrap();
        let e = She::default()
            .fit(&(&bad).into(), &head)
            .err()
            .expect("no correct sample of class 0")
            .to_string();
        assert!(e.contains("class 0"), "{e}");
        let unlabelled = Features::new(fit.embeddings.clone(), fit.logits.clone(), None).unwrap();
        assert!(matches!(
            She::default().fit(&(&unlabelled).into(), &head),
            Err(Error::MissingLabels { .. })
        ));
    }

    /// Issue 12: labels outside the head's classes were silently dropped (mahalanobis and rmds
    /// reject them); now she says so too.
    #[test]
    fn she_rejects_labels_outside_the_classes() {
        let (fit, head) = toy();
        for bad_label in [-1i64, 2, 99] {
            let mut labels = fit.labels.clone().unwrap();
            labels[3] = bad_label;
            let bad =
                Features::new(fit.embeddings.clone(), fit.logits.clone(), Some(labels)).unwrap();
            let e = She::default()
                .fit(&(&bad).into(), &head)
                .err()
                .expect("label out of range")
                .to_string();
            assert!(
                e.contains(&format!("fit label {bad_label} is outside 0..2")),
                "{e}"
            );
        }
    }
}
