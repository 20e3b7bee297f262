//! i-ODIN: ODIN whose perturbation moves only the one input element with the largest gradient
//! magnitude (OpenOOD `iodin_postprocessor.py`); OpenOOD key `iodin`.
//!
//! The network part is the probe [`Probe::Iodin`]: per image, the element (channel and pixel)
//! of the normalised input with the largest `|∇ₓ CE(f(x)/T, argmax f(x))|` (the first on ties,
//! as `torch.argmax`) is moved by `ε · sign / σ` against the gradient, every other element is
//! unchanged, and the logits of that input are stored. The score is ODIN's:
//! `max softmax(f(x̃) / T)`, as log-odds by default (`log = false`: OpenOOD's probability).
//!
//! Defaults `T = 1000`, `ε = 0.0014` (OpenOOD `iodin.yml`), sweep as ODIN's. Nothing is fitted.
//! Like [`super::odin`], the gradient is divided by the preprocessing's own std.

use super::DetectorParams;
use super::odin::{fit_perturbed, perturbed_grid};
use crate::detector::{Detector, Scorer};
use crate::error::Result;
use crate::features::{FitData, Head};
use crate::probes::Probe;
use serde::{Deserialize, Serialize};

/// ODIN with a one-element perturbation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Iodin {
    /// Temperature `T` of the perturbation's loss and of the score's softmax (1000).
    pub temperature: f64,
    /// Perturbation step `ε` in `[0, 1]` pixel units (0.0014).
    pub epsilon: f64,
    /// Output the log-odds `ln(p / (1 − p))` instead of `p` (same ranking, no saturation).
    pub log: bool,
}

impl Default for Iodin {
    fn default() -> Self {
        Iodin {
            temperature: 1000.0,
            epsilon: 0.0014,
            log: true,
        }
    }
}

impl Iodin {
    /// The network computation this detector scores.
    pub fn probe(&self) -> Probe {
        Probe::Iodin {
            temperature: self.temperature,
            epsilon: self.epsilon,
        }
    }
}

impl Detector for Iodin {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        fit_perturbed(
            Self::NAME,
            self.probe(),
            self.temperature,
            self.epsilon,
            self.log,
            data,
            head,
        )
    }
}

impl DetectorParams for Iodin {
    const NAME: &'static str = "iodin";
    const ABOUT: &'static str =
        "ODIN with the perturbation on the single input element of largest gradient (OpenOOD)";
    fn sweep(&self) -> Vec<Self> {
        perturbed_grid(self.log)
            .into_iter()
            .map(|(temperature, epsilon, log)| Iodin {
                temperature,
                epsilon,
                log,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::tests::spec_logits;

    #[test]
    fn iodin_reads_its_own_probe_not_odin_s() {
        let (mut f, head) = spec_logits();
        let d = Iodin {
            temperature: 1.0,
            log: false,
            ..Iodin::default()
        };
        let odin = Probe::Odin {
            temperature: 1.0,
            epsilon: 0.0014,
        };
        f.set_probe(&odin, f.logits.clone()).unwrap();
        let sc = d.fit(&(&f).into(), &head).unwrap();
        assert!(
            sc.score(&f)
                .unwrap_err()
                .to_string()
                .contains("probe:iodin")
        );
        f.set_probe(&d.probe(), f.logits.clone()).unwrap();
        let s = sc.score(&f).unwrap();
        assert!((s[0] as f64 - 0.823411).abs() < 1e-6, "{}", s[0]);
    }
}
