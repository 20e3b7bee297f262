//! MSP: maximum softmax probability (Hendrycks & Gimpel, "A Baseline for Detecting Misclassified
//! and Out-of-Distribution Examples in Neural Networks", ICLR 2017, arXiv:1610.02136).
//!
//! Score: `max_c softmax(z / T)_c`. Higher = more in-distribution. Default `T = 1` (OpenOOD `msp`);
//! a larger `T` gives ODIN's temperature scaling without the input perturbation.
//! Checked against the spec's section 9.4 vector (0.823411, 0.288651, 0.487266).

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores, softmax};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// Maximum softmax probability with temperature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Msp {
    /// Softmax temperature `T` (1 in the paper and in OpenOOD).
    pub temperature: f32,
}

impl Default for Msp {
    fn default() -> Self {
        Msp { temperature: 1.0 }
    }
}

#[derive(Debug)]
struct MspScorer {
    temperature: f32,
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
        Ok(Box::new(MspScorer {
            temperature: self.temperature,
            head: head.clone(),
        }))
    }
}

impl Scorer for MspScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let t = self.temperature;
        let s = x
            .logits
            .rows()
            .into_iter()
            .map(|r| {
                let scaled: Vec<f32> = r.iter().map(|&z| z / t).collect();
                softmax(&scaled).into_iter().fold(0.0f64, f64::max) as f32
            })
            .collect();
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
        let s = Msp::default()
            .fit(&(&f).into(), &head)
            .unwrap()
            .score(&f)
            .unwrap();
        for (a, b) in s.iter().zip([0.823411, 0.288651, 0.487266]) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
