//! fDBD: feature distance to decision boundaries (Liu & Qin, "Fast Decision Boundary based
//! Out-of-Distribution Detector", ICML 2024, arXiv:2312.11536, <https://arxiv.org/abs/2312.11536>);
//! OpenOOD key `fdbd`.
//!
//! Fit: `μ_train` = mean fit feature (OpenOOD: ID-**train** mean) and the pairwise weight
//! distances `‖w_i − w_j‖₂` of the head.
//!
//! Score with `ĉ = argmax z` (first maximum):
//! `s = [ Σ_{c≠ĉ} |z_ĉ − z_c| / ‖w_ĉ − w_c‖₂ ] / ‖h − μ_train‖₂` when `distance_as_normalizer` is
//! true (default, OpenOOD `fdbd.yml`), otherwise the same sum divided by `‖h‖₂`. The `c = ĉ`
//! term is 0. Higher = more in-distribution. Sweep `distance_as_normalizer ∈ {true, false}`.
//!
//! Traps handled: two identical head rows make `‖w_i − w_j‖ = 0`; that is an `Err` at fit time
//! rather than an infinite score. A feature equal to the normaliser centre gives a non-finite
//! score and an `Err`. Computed in f64 from the given logits.

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head, argmax};
use crate::kernels::moments::mean_feature;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// Logit distance to the decision boundaries, normalised by the feature's distance to the mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fdbd {
    /// Divide by `‖h − μ_train‖` (true, OpenOOD default) or by `‖h‖` (false).
    pub distance_as_normalizer: bool,
}

impl Default for Fdbd {
    fn default() -> Self {
        Fdbd {
            distance_as_normalizer: true,
        }
    }
}

#[derive(Debug)]
struct FdbdScorer {
    /// Subtracted before the norm: the train mean, or zeros.
    centre: Array1<f64>,
    /// `(c, c)` pairwise `‖w_i − w_j‖`, 1 on the diagonal.
    weight_distance: Array2<f64>,
    head: Head,
}

impl Detector for Fdbd {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        check_fit_data(data, head, 1)?;
        let centre = if self.distance_as_normalizer {
            mean_feature(data)?
        } else {
            Array1::zeros(head.dim())
        };
        let c = head.num_classes();
        let w = &head.weight;
        let mut dist = Array2::<f64>::ones((c, c));
        for i in 0..c {
            for j in 0..c {
                if i == j {
                    continue;
                }
                let d = w
                    .row(i)
                    .iter()
                    .zip(w.row(j))
                    .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                if d == 0.0 {
                    return Err(Error::InvalidParameter(format!(
                        "fdbd: head rows {i} and {j} are identical, so the decision boundary \
                         between classes {i} and {j} is undefined"
                    )));
                }
                dist[(i, j)] = d;
            }
        }
        Ok(Box::new(FdbdScorer {
            centre,
            weight_distance: dist,
            head: head.clone(),
        }))
    }
}

impl Scorer for FdbdScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let s = x
            .logits
            .rows()
            .into_iter()
            .zip(x.embeddings.rows())
            .map(|(z, h)| {
                let z = z.to_vec();
                let top = argmax(&z);
                let zt = z[top] as f64;
                let sum: f64 = z
                    .iter()
                    .enumerate()
                    .filter(|&(c, _)| c != top)
                    .map(|(c, &v)| (zt - v as f64).abs() / self.weight_distance[(top, c)])
                    .sum();
                let norm = h
                    .iter()
                    .zip(&self.centre)
                    .map(|(&a, &m)| (a as f64 - m).powi(2))
                    .sum::<f64>()
                    .sqrt();
                (sum / norm) as f32
            })
            .collect();
        check_scores("fdbd", s)
    }
}

impl DetectorParams for Fdbd {
    const NAME: &'static str = "fdbd";
    const ABOUT: &'static str = "feature distance to decision boundaries (Liu & Qin, ICML'24)";
    fn sweep(&self) -> Vec<Self> {
        [true, false]
            .into_iter()
            .map(|distance_as_normalizer| Fdbd {
                distance_as_normalizer,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn fdbd_matches_hand_computation() {
        // W rows w0 = [1, 0], w1 = [0, 1], w2 = [1, 1]: ‖w0−w1‖ = √2, ‖w0−w2‖ = 1, ‖w1−w2‖ = 1.
        let head = Head::new(
            array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]],
            array![0.0, 0.0, -1.5],
        )
        .unwrap();
        let fit = Features::with_head(array![[0.0f32, 0.0], [2.0, 2.0]], &head, None).unwrap();
        // h = [3, 1]: z = [3, 1, 2.5], ĉ = 0; sum = 2/√2 + 0.5/1; μ = [1, 1], ‖h − μ‖ = 2.
        let test = Features::with_head(array![[3.0f32, 1.0]], &head, None).unwrap();
        let sum = 2.0 / 2f64.sqrt() + 0.5;
        for (normalizer, want) in [(true, sum / 2.0), (false, sum / 10f64.sqrt())] {
            let s = Fdbd {
                distance_as_normalizer: normalizer,
            }
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&test)
            .unwrap();
            assert!((s[0] as f64 - want).abs() < 1e-6, "{} vs {want}", s[0]);
        }
        let twin = Head::new(array![[1.0f32, 0.0], [1.0, 0.0]], array![0.0, 1.0]).unwrap();
        let f = Features::with_head(array![[1.0f32, 0.0]], &twin, None).unwrap();
        assert!(Fdbd::default().fit(&(&f).into(), &twin).is_err());
    }
}
