//! MSP: maximum softmax probability (Hendrycks & Gimpel, "A Baseline for Detecting Misclassified
//! and Out-of-Distribution Examples in Neural Networks", ICLR 2017, arXiv:1610.02136).
//!
//! Score: `max_c softmax(z / T)_c`. Higher = more in-distribution. Default `T = 1` (OpenOOD `msp`);
//! a larger `T` gives ODIN's temperature scaling without the input perturbation.
//! Checked against the spec's section 9.4 vector (0.823411, 0.288651, 0.487266).
//!
//! `log = true` (the default) outputs the log-odds `ln(p / (1 − p))` of that probability `p`
//! instead, computed from the logits without forming `p` ([`max_softmax_log_odds`]): the same
//! ranking, hence the same AUROC, FPR and AUPR, but a confident classifier's scores no longer
//! round to 1 (on a head scaled ×10, MSP's AUROC in f32 is 0.770 where the exact value is
//! 0.844). `log = false` outputs `p` as OpenOOD does (use it to compare score values).

use super::DetectorParams;
use crate::detector::{
    Detector, Scorer, check_fit_data, check_input, check_scores, max_softmax_log_odds, softmax,
};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use ndarray::{Array1, ArrayView2};
use serde::{Deserialize, Serialize};

/// Maximum softmax probability with temperature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Msp {
    /// Softmax temperature `T` (1 in the paper and in OpenOOD).
    pub temperature: f32,
    /// Output the log-odds `ln(p / (1 − p))` instead of `p` (same ranking, no saturation).
    pub log: bool,
}

impl Default for Msp {
    fn default() -> Self {
        Msp {
            temperature: 1.0,
            log: true,
        }
    }
}

#[derive(Debug)]
struct MspScorer {
    temperature: f32,
    log: bool,
    head: Head,
}

impl Detector for Msp {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::InvalidParameter(format!(
                "msp temperature must be > 0, got {}",
                self.temperature
            )));
        }
        check_fit_data(data, head, 0)?;
        if self.log && head.num_classes() < 2 {
            return Err(Error::InvalidParameter(
                "msp log=true needs at least two classes (with one, p = 1 for every sample)".into(),
            ));
        }
        Ok(Box::new(MspScorer {
            temperature: self.temperature,
            log: self.log,
            head: head.clone(),
        }))
    }
}

/// MSP of every row of `logits` at temperature `t`: the probability, or its log-odds when `log`
/// (MSP and temperature scaling).
pub(crate) fn msp_scores(logits: ArrayView2<'_, f32>, t: f64, log: bool) -> Array1<f32> {
    logits
        .rows()
        .into_iter()
        .map(|r| {
            if log {
                max_softmax_log_odds(r.iter().map(|&z| z as f64), t) as f32
            } else {
                // f64 division rounded to f32 equals f32 division (53 ≥ 2·24 + 2 bits).
                let scaled: Vec<f32> = r.iter().map(|&z| (z as f64 / t) as f32).collect();
                softmax(&scaled).into_iter().fold(0.0f64, f64::max) as f32
            }
        })
        .collect()
}

impl Scorer for MspScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let s = msp_scores(x.logits.view(), self.temperature as f64, self.log);
        check_scores("msp", s)
    }
}

impl DetectorParams for Msp {
    const NAME: &'static str = "msp";
    const ABOUT: &'static str = "maximum softmax probability (Hendrycks & Gimpel, ICLR'17)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::tests::spec_logits;

    #[test]
    fn msp_matches_spec_vector() {
        let (f, head) = spec_logits();
        let want = [0.823411f64, 0.288651, 0.487266];
        let exact = Msp {
            log: false,
            ..Msp::default()
        };
        let s = exact.fit(&(&f).into(), &head).unwrap().score(&f).unwrap();
        for (a, b) in s.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
        // The default log form is ln(p / (1 − p)) of the same values.
        let s = Msp::default()
            .fit(&(&f).into(), &head)
            .unwrap()
            .score(&f)
            .unwrap();
        for (a, b) in s.iter().zip(want) {
            let lo = (b / (1.0 - b)).ln();
            assert!((*a as f64 - lo).abs() < 1e-5, "{a} vs {lo}");
        }
    }

    #[test]
    fn msp_log_form_keeps_confident_samples_apart() {
        // Logit gaps 40 and 50: p = 1 − 4e-18 and 1 − 2e-22 are both 1.0 in f64 and f32.
        let head = Head::new(
            ndarray::array![[1.0f32, 0.0], [0.0, 1.0]],
            ndarray::array![0.0, 0.0],
        )
        .unwrap();
        let f =
            Features::with_head(ndarray::array![[40.0f32, 0.0], [50.0, 0.0]], &head, None).unwrap();
        let exact = Msp {
            log: false,
            ..Msp::default()
        };
        let p = exact.fit(&(&f).into(), &head).unwrap().score(&f).unwrap();
        assert_eq!(p[0], p[1], "the probability saturates");
        let s = Msp::default()
            .fit(&(&f).into(), &head)
            .unwrap()
            .score(&f)
            .unwrap();
        assert!(
            (s[0] - 40.0).abs() < 1e-5 && (s[1] - 50.0).abs() < 1e-5,
            "{s:?}"
        );
    }
}
