//! Energy score (Liu et al., "Energy-based Out-of-distribution Detection", NeurIPS 2020,
//! arXiv:2010.03759); OpenOOD key `ebo`.
//!
//! Score: `T · logsumexp(z / T)` (the negative free energy). Higher = more in-distribution.
//! Default `T = 1` (OpenOOD `ebo.yml`). Checked against the spec's section 9.4 vector
//! (3.194300, 1.742536, 4.718944).

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use crate::kernels::logits::energies_at;
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// Negative free energy with temperature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Energy {
    /// Temperature `T` (1 in the paper and OpenOOD).
    pub temperature: f32,
}

impl Default for Energy {
    fn default() -> Self {
        Energy { temperature: 1.0 }
    }
}

#[derive(Debug)]
struct EnergyScorer {
    temperature: f32,
    head: Head,
}

impl Detector for Energy {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::InvalidParameter(format!(
                "energy temperature must be > 0, got {}",
                self.temperature
            )));
        }
        check_fit_data(data, head, 0)?;
        Ok(Box::new(EnergyScorer {
            temperature: self.temperature,
            head: head.clone(),
        }))
    }
}

impl Scorer for EnergyScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        check_scores("energy", energies_at(x.logits.view(), self.temperature))
    }
}

impl DetectorParams for Energy {
    const NAME: &'static str = "energy";
    const ABOUT: &'static str = "negative free energy T·lse(z/T) (Liu et al., NeurIPS'20)";
    fn sweep(&self) -> Vec<Self> {
        vec![Energy { temperature: 1.0 }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::tests::spec_logits;

    #[test]
    fn energy_matches_spec_vector() {
        let (f, head) = spec_logits();
        let s = Energy::default()
            .fit(&(&f).into(), &head)
            .unwrap()
            .score(&f)
            .unwrap();
        for (a, b) in s.iter().zip([3.194300, 1.742536, 4.718944]) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
