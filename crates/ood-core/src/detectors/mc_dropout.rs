//! MC dropout: the maximum softmax of logits averaged over stochastic dropout passes (Gal &
//! Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016, arXiv:1506.02142); OpenOOD key
//! `dropout` (`DropoutNet` + `dropout_postprocessor.py`).
//!
//! OpenOOD applies the dropout to the penultimate features only, `z_t = W·drop_t(h) + b`, so
//! no network pass is needed: this detector reads the features and the head. Score:
//! `max softmax(mean_t z_t)` over `passes` passes, as log-odds by default (`log = false`:
//! OpenOOD's probability). Each pass keeps each feature with probability `1 − p` and scales the
//! kept ones by `1/(1 − p)`.
//!
//! OpenOOD calls `F.dropout2d` on the 2-D `(n, d)` feature matrix; PyTorch warns that 2-D input
//! is deprecated there and drops single features, as `F.dropout` (checked on torch 2.11): the
//! same as here.
//!
//! Randomness: each sample's masks come from a ChaCha8 stream seeded by `seed` and the SHA-256 of
//! the sample's feature bytes, so a sample scores the same in any batch, file or order (OpenOOD
//! draws from the global torch generator). Defaults `p = 0.5`, `passes = 5` (OpenOOD
//! `dropout.yml`), no search.

use super::DetectorParams;
use super::msp::msp_scores;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Maximum softmax of the mean logits over dropout passes on the penultimate features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McDropout {
    /// Drop probability `p ∈ [0, 1)` (0.5).
    pub p: f64,
    /// Number of stochastic passes (5).
    pub passes: usize,
    /// Seed of the masks.
    pub seed: u64,
    /// Output the log-odds `ln(p / (1 − p))` instead of the probability (same ranking).
    pub log: bool,
}

impl Default for McDropout {
    fn default() -> Self {
        McDropout {
            p: 0.5,
            passes: 5,
            seed: 0,
            log: true,
        }
    }
}

#[derive(Debug)]
struct McDropoutScorer {
    params: McDropout,
    head: Head,
}

impl Detector for McDropout {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        if !(0.0..1.0).contains(&self.p) || self.passes == 0 {
            return Err(Error::InvalidParameter(format!(
                "mc_dropout needs 0 <= p < 1 and passes >= 1, got p = {} and passes = {}",
                self.p, self.passes
            )));
        }
        check_fit_data(data, head, 0)?;
        if self.log && head.num_classes() < 2 {
            return Err(Error::InvalidParameter(
                "mc_dropout log=true needs at least two classes".into(),
            ));
        }
        Ok(Box::new(McDropoutScorer {
            params: self.clone(),
            head: head.clone(),
        }))
    }
}

impl McDropoutScorer {
    /// The mask stream of one sample: seeded by `seed` and its feature bytes.
    fn rng(&self, h: ndarray::ArrayView1<'_, f32>) -> rand_chacha::ChaCha8Rng {
        let mut hasher = Sha256::new();
        hasher.update(self.params.seed.to_le_bytes());
        for v in h {
            hasher.update(v.to_le_bytes());
        }
        rand_chacha::ChaCha8Rng::from_seed(hasher.finalize().into())
    }
}

impl Scorer for McDropoutScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let p = &self.params;
        let keep = (1.0 / (1.0 - p.p)) as f32;
        let mut rngs: Vec<_> = x
            .embeddings
            .rows()
            .into_iter()
            .map(|h| self.rng(h))
            .collect();
        let mut sum = Array2::<f64>::zeros((x.len(), self.head.num_classes()));
        let mut dropped = x.embeddings.clone();
        for _ in 0..p.passes {
            for ((h, mut out), rng) in x
                .embeddings
                .rows()
                .into_iter()
                .zip(dropped.rows_mut())
                .zip(rngs.iter_mut())
            {
                out.iter_mut().zip(h).for_each(|(o, &v)| {
                    *o = if rng.r#gen::<f64>() >= p.p {
                        v * keep
                    } else {
                        0.0
                    }
                });
            }
            let z = self.head.logits(dropped.view())?;
            sum.zip_mut_with(&z, |s, &v| *s += v as f64);
        }
        let mean = sum.mapv(|v| (v / p.passes as f64) as f32);
        check_scores(McDropout::NAME, msp_scores(mean.view(), 1.0, p.log))
    }
}

impl DetectorParams for McDropout {
    const NAME: &'static str = "mc_dropout";
    const ABOUT: &'static str = "max softmax of logits averaged over dropout passes on the features (Gal & Ghahramani, ICML'16)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::Msp;
    use ndarray::array;

    fn toy() -> (Features, Head) {
        let head = Head::new(
            array![[1.0f32, -1.0], [0.5, 2.0], [0.0, 1.0]],
            array![0.1, -0.2, 0.3],
        )
        .unwrap();
        let f = Features::with_head(array![[1.0f32, 2.0], [3.0, -1.0], [0.5, 0.5]], &head, None)
            .unwrap();
        (f, head)
    }

    #[test]
    fn mc_dropout_without_dropout_is_msp() {
        let (f, head) = toy();
        let d = McDropout {
            p: 0.0,
            ..McDropout::default()
        };
        let got = d.fit(&(&f).into(), &head).unwrap().score(&f).unwrap();
        let want = Msp::default()
            .fit(&(&f).into(), &head)
            .unwrap()
            .score(&f)
            .unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn mc_dropout_one_pass_is_the_msp_of_a_masked_feature_and_is_order_free() {
        // One pass, d = 2: each sample's logits are W·(2·m ⊙ h) + b for one of the 4 masks m.
        let (f, head) = toy();
        let d = McDropout {
            passes: 1,
            log: false,
            ..McDropout::default()
        };
        let sc = d.fit(&(&f).into(), &head).unwrap();
        let s = sc.score(&f).unwrap();
        let msp = |z: Vec<f32>| {
            let m = z.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let e: Vec<f64> = z.iter().map(|&v| (v as f64 - m).exp()).collect();
            e.iter().cloned().fold(0.0, f64::max) / e.iter().sum::<f64>()
        };
        for (i, h) in f.embeddings.rows().into_iter().enumerate() {
            let options: Vec<f64> = [[0.0f32, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]]
                .iter()
                .map(|m| {
                    let x = array![h[0] * m[0], h[1] * m[1]];
                    msp((0..3)
                        .map(|c| head.weight.row(c).dot(&x) + head.bias[c])
                        .collect())
                })
                .collect();
            let v = s[i] as f64;
            assert!(
                options.iter().any(|o| (v - o).abs() < 1e-6),
                "row {i}: {v} is none of {options:?}"
            );
        }
        // The same samples in another order and batch score the same.
        let rev = sc.score(&f.select(&[2, 1, 0])).unwrap();
        assert_eq!(rev.to_vec(), vec![s[2], s[1], s[0]]);
        // Element-wise masks with many passes approach the undropped logits' MSP.
        let many = McDropout {
            passes: 20000,
            log: false,
            ..McDropout::default()
        };
        let got = many.fit(&(&f).into(), &head).unwrap().score(&f).unwrap();
        let exact = Msp {
            log: false,
            ..Msp::default()
        }
        .fit(&(&f).into(), &head)
        .unwrap()
        .score(&f)
        .unwrap();
        for (a, b) in got.iter().zip(&exact) {
            assert!((a - b).abs() < 0.02, "{a} vs {b}");
        }
    }
}
