//! DICE: directed sparsification (Sun & Li, "DICE: Leveraging Sparsification for
//! Out-of-Distribution Detection", ECCV 2022, arXiv:2111.09805, <https://arxiv.org/abs/2111.09805>);
//! OpenOOD key `dice`.
//!
//! Fit: `m̄` = mean fit feature (OpenOOD: mean ID-**train** activation), contribution matrix
//! `V_{c,j} = W_{c,j} · m̄_j` `(C, D)`, `θ` = the `p`-th percentile of all `C·D` entries of `V`
//! (NumPy linear interpolation), mask `M = 1[V > θ]` (strict), so `p = 90` keeps about 10% of the
//! weights.
//!
//! Score: `lse((W ⊙ M) h + b)`. Higher = more in-distribution. Default `p = 90` (OpenOOD
//! `dice.yml`); no sweep (OpenOOD's APS is off for DICE and its mask is never recomputed).
//! The mean is accumulated in f64 while streaming the fit data in chunks.

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use crate::kernels::logits::energies;
use crate::kernels::moments::mean_feature;
use crate::kernels::percentile::percentile;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// Weight sparsification by contribution, then energy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dice {
    /// Sparsity percentile `p` in `[0, 100]` (90 in OpenOOD and the paper's CIFAR setting).
    pub percentile: f64,
}

impl Default for Dice {
    fn default() -> Self {
        Dice { percentile: 90.0 }
    }
}

#[derive(Debug)]
struct DiceScorer {
    masked: Head,
    head: Head,
}

impl Detector for Dice {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        if !(0.0..=100.0).contains(&self.percentile) {
            return Err(Error::InvalidParameter(format!(
                "dice percentile must be in [0, 100], got {}",
                self.percentile
            )));
        }
        check_fit_data(data, head, 1)?;
        let mean = mean_feature(data)?;
        let contrib: Array2<f32> = Array2::from_shape_fn(head.weight.raw_dim(), |(c, j)| {
            (head.weight[(c, j)] as f64 * mean[j]) as f32
        });
        let theta = percentile(self.percentile, |f| {
            contrib.iter().for_each(|&v| f(v));
            Ok(())
        })?;
        let mut weight = head.weight.clone();
        weight.zip_mut_with(&contrib, |w, &v| {
            if (v as f64) <= theta {
                *w = 0.0;
            }
        });
        Ok(Box::new(DiceScorer {
            masked: Head::new(weight, head.bias.clone())?,
            head: head.clone(),
        }))
    }
}

impl Scorer for DiceScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let z = self.masked.logits(x.embeddings.view())?;
        check_scores("dice", energies(&z))
    }
}

impl DetectorParams for Dice {
    const NAME: &'static str = "dice";
    const ABOUT: &'static str = "energy with contribution-sparsified weights (Sun & Li, ECCV'22)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn dice_masks_low_contributions() {
        // Mean feature [1, 2]; V = W ⊙ m̄ = [[1, 4], [3, -2]]; p = 50 over {-2, 1, 3, 4}: θ = 2,
        // so the mask keeps W[0][1] and W[1][0].
        let head = Head::new(array![[1.0f32, 2.0], [3.0, -1.0]], array![0.5, 0.0]).unwrap();
        let fit = Features::with_head(array![[0.0f32, 1.0], [2.0, 3.0]], &head, None).unwrap();
        let test = Features::with_head(array![[1.0f32, 1.0], [2.0, 0.5]], &head, None).unwrap();
        let s = Dice { percentile: 50.0 }
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&test)
            .unwrap();
        let lse = |a: f64, b: f64| (a.exp() + b.exp()).ln();
        // Masked W = [[0, 2], [3, 0]].
        let want = [lse(2.0 + 0.5, 3.0), lse(1.0 + 0.5, 6.0)];
        for (a, b) in s.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
