//! VRA: variational rectified activation (Xu, Lian, Liu & Tao, "VRA: Variational Rectified
//! Activation for Out-of-distribution Detection", NeurIPS 2023, arXiv:2302.11716,
//! <https://arxiv.org/abs/2302.11716>); OpenOOD key `vra`.
//!
//! Fit: `τ_lo`, `τ_hi` = the `p_lo`-th and `p_hi`-th percentiles of the **flattened** fit
//! activations (all `n·d` values), NumPy's default "linear" interpolation. OpenOOD fits on ID
//! **validation** features, like ReAct, so pass ID val as the fit data to reproduce it.
//!
//! Score: `lse(W · clip(h, τ_lo, τ_hi) + b)`: every activation below `τ_lo` is **raised** to
//! `τ_lo`, every activation above `τ_hi` is clipped to `τ_hi` (not zeroed), and the band in
//! between is left unchanged (no shift or rescaling); the logits are recomputed from the clipped
//! features with the head, and the score is their energy. Higher = more in-distribution.
//!
//! This is OpenOOD's `vra_postprocessor.py` (`feature.clip(min=threshold_low,
//! max=threshold_high)`, then `logsumexp` of `net.fc`), the form behind OpenOOD's VRA results.
//! The authors' code (github.com/zeroQiaoba/VRA, `models/resnet.py`, case `clip2`) differs in
//! three ways that this detector does **not** follow: activations below the lower threshold are
//! set to **0** (not raised), VRA+ adds a constant `λ` to the middle band (`λ = 0` for plain
//! VRA), and the thresholds are per-dimension quantiles (`torch.quantile(feat, q, dim=0)`, e.g.
//! `q1 = 0.6, q2 = 0.9` on CIFAR-10) or absolute values (ImageNet), not percentiles of all
//! activations.
//!
//! Defaults `p_hi = 90`, `p_lo = 10` (OpenOOD `vra.yml`); sweep `p_hi ∈ {85, 90, 95, 99}` ×
//! `p_lo ∈ {1, 5, 10, 15}`, 16 candidates in OpenOOD's order (`p_hi` varies fastest). Invalid:
//! a percentile outside `[0, 100]`, or `p_lo > p_hi` (OpenOOD would clip every activation to
//! `τ_hi`).
//!
//! The percentiles are exact and streamed, in constant memory (`kernels/percentile.rs`, shared
//! with ReAct); the energy is `lse` in f64 of the recomputed logits. Checked against NumPy
//! (`tests/data/posthoc_reference_c.py`, `tests/posthoc_golden_c.rs`) and by hand below.

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use crate::kernels::logits::energies;
use crate::kernels::percentile::feature_percentile;
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// VRA (OpenOOD form): clip activations to an ID percentile band, then energy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Vra {
    /// Upper percentile `p_hi` in `[0, 100]` of the fit activations: the upper clip threshold
    /// (90 in OpenOOD).
    pub percentile_high: f64,
    /// Lower percentile `p_lo` in `[0, p_hi]` of the fit activations: the lower clip threshold
    /// (10 in OpenOOD).
    pub percentile_low: f64,
}

impl Default for Vra {
    fn default() -> Self {
        Vra {
            percentile_high: 90.0,
            percentile_low: 10.0,
        }
    }
}

#[derive(Debug)]
struct VraScorer {
    low: f32,
    high: f32,
    head: Head,
}

impl Detector for Vra {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        for (name, p) in [
            ("percentile_high", self.percentile_high),
            ("percentile_low", self.percentile_low),
        ] {
            if !(0.0..=100.0).contains(&p) {
                return Err(Error::InvalidParameter(format!(
                    "vra {name} must be in [0, 100], got {p}"
                )));
            }
        }
        if self.percentile_low > self.percentile_high {
            return Err(Error::InvalidParameter(format!(
                "vra percentile_low ({}) must not exceed percentile_high ({})",
                self.percentile_low, self.percentile_high
            )));
        }
        check_fit_data(data, head, 1)?;
        let high = feature_percentile(data, self.percentile_high)? as f32;
        let low = feature_percentile(data, self.percentile_low)? as f32;
        Ok(Box::new(VraScorer {
            low,
            high,
            head: head.clone(),
        }))
    }
}

impl Scorer for VraScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let (lo, hi) = (self.low, self.high);
        let clipped = x.embeddings.mapv(|v| v.max(lo).min(hi));
        let z = self.head.logits(clipped.view())?;
        check_scores("vra", energies(&z))
    }
}

impl DetectorParams for Vra {
    const FITS_ON_VAL: bool = true;
    const NAME: &'static str = "vra";
    const ABOUT: &'static str = "energy after clipping to an ID-val activation percentile band (Xu et al., NeurIPS'23; OpenOOD form)";
    fn sweep(&self) -> Vec<Self> {
        let mut grid = Vec::new();
        for percentile_low in [1.0, 5.0, 10.0, 15.0] {
            for percentile_high in [85.0, 90.0, 95.0, 99.0] {
                grid.push(Vra {
                    percentile_high,
                    percentile_low,
                });
            }
        }
        grid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

    #[test]
    fn vra_clips_to_the_fit_percentile_band() {
        // Fit activations 0..=9 (10 values): the 90th percentile is 8.1, the 10th 0.9.
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.5, 0.0]).unwrap();
        let fit = Features::with_head(
            Array2::from_shape_vec((5, 2), (0..10).map(|v| v as f32).collect()).unwrap(),
            &head,
            None,
        )
        .unwrap();
        let test = Features::with_head(
            array![[20.0f32, 0.25], [2.0, 3.0], [-4.0, 9.0]],
            &head,
            None,
        )
        .unwrap();
        let s = Vra::default()
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&test)
            .unwrap();
        let lse = |a: f64, b: f64| (a.exp() + b.exp()).ln();
        // (20, .25) → (8.1, .9); (2, 3) unchanged; (−4, 9) → (.9, 8.1): raised, not zeroed.
        let want = [lse(8.1 + 0.5, 0.9), lse(2.5, 3.0), lse(0.9 + 0.5, 8.1)];
        for (a, b) in s.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn vra_rejects_bad_percentiles() {
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let fit = Features::with_head(array![[1.0f32, 2.0]], &head, None).unwrap();
        for (hi, lo, msg) in [
            (101.0, 10.0, "percentile_high must be in [0, 100], got 101"),
            (90.0, -1.0, "percentile_low must be in [0, 100], got -1"),
            (
                f64::NAN,
                10.0,
                "percentile_high must be in [0, 100], got NaN",
            ),
            (
                10.0,
                15.0,
                "percentile_low (15) must not exceed percentile_high (10)",
            ),
        ] {
            let e = Vra {
                percentile_high: hi,
                percentile_low: lo,
            }
            .fit(&(&fit).into(), &head)
            .err()
            .unwrap()
            .to_string();
            assert!(e.contains(msg), "{e}");
        }
    }
}
