//! ODIN: temperature scaling plus input perturbation (Liang, Li & Srikant, "Enhancing The
//! Reliability of Out-of-distribution Image Detection in Neural Networks", ICLR 2018,
//! arXiv:1706.02690); OpenOOD key `odin`.
//!
//! The network part is a probe ([`Probe::Odin`], computed by `ood-nn` at extraction:
//! `ood extract --with odin`, or `ood bench` by itself): the logits `f(x̃)` of the input moved
//! by `ε` against the sign of the gradient of `CE(f(x)/T, argmax f(x))`, per channel divided by
//! the normalisation std. This detector scores those numbers: `max softmax(f(x̃) / T)`, as
//! OpenOOD's `odin_postprocessor.py`. Higher = more in-distribution.
//!
//! `log = true` (the default) outputs the log-odds `ln(p / (1 − p))` of that probability, as
//! `msp` does: at `T = 1` a confident network's `p` rounds to 1 in float32 and loses its ranking;
//! `log = false` outputs `p` as OpenOOD does.
//!
//! Defaults `T = 1000`, `ε = 0.0014` (OpenOOD `odin.yml`); sweep `T ∈ {1, 10, 100, 1000}` ×
//! `ε ∈ {0.0014, 0.0028}` (`T` varies fastest). Nothing is fitted. One difference from OpenOOD:
//! the gradient is divided by the std the images were actually normalised with (the network's
//! preprocessing), not by a table keyed by the ID dataset's name (OpenOOD falls back to 0.5 for
//! datasets not in its table), so `ε` is always in `[0, 1]` pixel units.
//! Checked against a PyTorch re-implementation of OpenOOD's code on ResNet-20 and CIFAR-10
//! images (`ood-cli/tests/network_probes.rs`).

use super::DetectorParams;
use super::msp::msp_scores;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use crate::probes::Probe;
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// Maximum softmax of the perturbed input's logits at temperature `T`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Odin {
    /// Temperature `T` of the perturbation's loss and of the score's softmax (1000).
    pub temperature: f64,
    /// Perturbation step `ε` in `[0, 1]` pixel units (0.0014).
    pub epsilon: f64,
    /// Output the log-odds `ln(p / (1 − p))` instead of `p` (same ranking, no saturation).
    pub log: bool,
}

impl Default for Odin {
    fn default() -> Self {
        Odin {
            temperature: 1000.0,
            epsilon: 0.0014,
            log: true,
        }
    }
}

impl Odin {
    /// The network computation this detector scores.
    pub fn probe(&self) -> Probe {
        Probe::Odin {
            temperature: self.temperature,
            epsilon: self.epsilon,
        }
    }
}

/// Checks ODIN-style parameters and builds the scorer of a perturbed-logits probe (ODIN, i-ODIN).
pub(crate) fn fit_perturbed(
    name: &'static str,
    probe: Probe,
    temperature: f64,
    epsilon: f64,
    log: bool,
    data: &FitData<'_>,
    head: &Head,
) -> Result<Box<dyn Scorer>> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::InvalidParameter(format!(
            "{name} temperature must be finite and > 0, got {temperature}"
        )));
    }
    if !(epsilon >= 0.0 && epsilon.is_finite()) {
        return Err(Error::InvalidParameter(format!(
            "{name} epsilon must be finite and >= 0, got {epsilon}"
        )));
    }
    check_fit_data(data, head, 0)?;
    if log && head.num_classes() < 2 {
        return Err(Error::InvalidParameter(format!(
            "{name} log=true needs at least two classes (with one, p = 1 for every sample)"
        )));
    }
    Ok(Box::new(PerturbedMspScorer {
        name,
        probe,
        temperature,
        log,
        head: head.clone(),
    }))
}

#[derive(Debug)]
struct PerturbedMspScorer {
    name: &'static str,
    probe: Probe,
    temperature: f64,
    log: bool,
    head: Head,
}

impl Scorer for PerturbedMspScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let z = x.probe(&self.probe, self.name)?;
        if z.ncols() != self.head.num_classes() {
            return Err(Error::dim(
                format!("columns of '{}'", self.probe.tensor_name()),
                self.head.num_classes(),
                z.ncols(),
            ));
        }
        check_scores(self.name, msp_scores(z, self.temperature, self.log))
    }
}

impl Detector for Odin {
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

/// OpenOOD's ODIN grid: `T ∈ {1, 10, 100, 1000}` (fastest) × `ε ∈ {0.0014, 0.0028}`.
pub(crate) fn perturbed_grid(log: bool) -> Vec<(f64, f64, bool)> {
    [0.0014, 0.0028]
        .into_iter()
        .flat_map(|e| [1.0, 10.0, 100.0, 1000.0].map(|t| (t, e, log)))
        .collect()
}

impl DetectorParams for Odin {
    const NAME: &'static str = "odin";
    const ABOUT: &'static str = "max softmax of the input perturbed against the loss gradient, temperature T (Liang et al., ICLR'18)";
    fn sweep(&self) -> Vec<Self> {
        perturbed_grid(self.log)
            .into_iter()
            .map(|(temperature, epsilon, log)| Odin {
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
    fn odin_scores_the_probe_at_its_temperature() {
        // The probe's logits are the spec's vector; at T = 1 with log = false the score is the
        // spec's MSP (0.823411, 0.288651, 0.487266), and the plain logits are not read.
        let (mut f, head) = spec_logits();
        let d = Odin {
            temperature: 1.0,
            epsilon: 0.0014,
            log: false,
        };
        let z = f.logits.clone();
        f.logits.fill(0.0);
        f.set_probe(&d.probe(), z.clone()).unwrap();
        let s = d.fit(&(&f).into(), &head).unwrap().score(&f).unwrap();
        for (a, b) in s.iter().zip([0.823411f64, 0.288651, 0.487266]) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
        // At T = 1000 the log-odds of row 0 is −ln Σ_{j≠0} exp((z_j − 3)/1000).
        f.set_probe(&Odin::default().probe(), z).unwrap();
        let s = Odin::default()
            .fit(&(&f).into(), &head)
            .unwrap()
            .score(&f)
            .unwrap();
        let want = -[-2.0f64, -2.8, -4.0]
            .iter()
            .map(|v| (v / 1000.0).exp())
            .sum::<f64>()
            .ln();
        assert!((s[0] as f64 - want).abs() < 1e-5, "{} vs {want}", s[0]);
    }

    #[test]
    fn odin_without_its_probe_names_the_tensor_and_the_command() {
        let (f, head) = spec_logits();
        let e = Odin::default()
            .fit(&(&f).into(), &head)
            .unwrap()
            .score(&f)
            .unwrap_err()
            .to_string();
        assert!(e.contains("probe:odin(T=1000,eps=0.0014)"), "{e}");
        assert!(e.contains("ood extract --with odin"), "{e}");
    }

    #[test]
    fn odin_grid_is_openood_s() {
        let g = Odin::default().sweep();
        assert_eq!(g.len(), 8);
        assert_eq!((g[0].temperature, g[0].epsilon), (1.0, 0.0014));
        assert_eq!((g[1].temperature, g[1].epsilon), (10.0, 0.0014));
        assert_eq!((g[7].temperature, g[7].epsilon), (1000.0, 0.0028));
    }
}
