//! RankFeat: remove the rank-1 component of the deepest feature maps (Song, Sebe & Wang,
//! "RankFeat: Rank-1 Feature Removal for Out-of-distribution Detection", NeurIPS 2022,
//! arXiv:2209.08590); OpenOOD key `rankfeat`.
//!
//! The network part is the probe [`Probe::RankFeat`] (computed by `ood-nn` at extraction:
//! `ood extract --with rank_feat`, or `ood bench` by itself): the mean of the logits after
//! removing `s₁u₁v₁ᵀ` (exact SVD, OpenOOD's `accelerate = False`) from the last stage's
//! `(channels, h·w)` feature map, and of those after removing it from the second-to-last stage's
//! map and running the last stage. This detector scores those logits as OpenOOD does:
//! `T · lse(z / T)`. Higher = more in-distribution.
//!
//! Default `T = 1` (OpenOOD `rankfeat.yml`, which has no search). Nothing is fitted. Needs a
//! network whose stages oodkit knows (the registry's ResNets and WRN), not a TorchScript file.
//! Checked against a PyTorch re-implementation of OpenOOD's code on ResNet-20 and CIFAR-10
//! images (`ood-cli/tests/network_probes.rs`).

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use crate::kernels::logits::energies_at;
use crate::probes::Probe;
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// Energy of the rank-1-removed logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RankFeat {
    /// Temperature `T` of the energy (1).
    pub temperature: f32,
}

impl Default for RankFeat {
    fn default() -> Self {
        RankFeat { temperature: 1.0 }
    }
}

#[derive(Debug)]
struct RankFeatScorer {
    temperature: f32,
    head: Head,
}

impl Detector for RankFeat {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::InvalidParameter(format!(
                "rank_feat temperature must be > 0, got {}",
                self.temperature
            )));
        }
        check_fit_data(data, head, 0)?;
        Ok(Box::new(RankFeatScorer {
            temperature: self.temperature,
            head: head.clone(),
        }))
    }
}

impl Scorer for RankFeatScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let z = x.probe(&Probe::RankFeat, RankFeat::NAME)?;
        if z.ncols() != self.head.num_classes() {
            return Err(Error::dim(
                format!("columns of '{}'", Probe::RankFeat.tensor_name()),
                self.head.num_classes(),
                z.ncols(),
            ));
        }
        check_scores(RankFeat::NAME, energies_at(z, self.temperature))
    }
}

impl DetectorParams for RankFeat {
    const NAME: &'static str = "rank_feat";
    const ABOUT: &'static str = "energy of logits after removing the rank-1 part of the deepest feature maps (Song et al., NeurIPS'22)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::tests::spec_logits;

    #[test]
    fn rank_feat_is_the_energy_of_its_probe() {
        // Probe logits = the spec's vector: the energy vector (3.194300, 1.742536, 4.718944).
        let (mut f, head) = spec_logits();
        f.set_probe(&Probe::RankFeat, f.logits.clone()).unwrap();
        f.logits.fill(0.0);
        let s = RankFeat::default()
            .fit(&(&f).into(), &head)
            .unwrap()
            .score(&f)
            .unwrap();
        for (a, b) in s.iter().zip([3.194300f64, 1.742536, 4.718944]) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
