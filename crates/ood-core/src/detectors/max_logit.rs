//! MaxLogit (Hendrycks et al., "Scaling Out-of-Distribution Detection for Real-World Settings",
//! ICML 2022, arXiv:1911.11132); OpenOOD key `mls`.
//!
//! Score: `max_c z_c`. Higher = more in-distribution. No hyper-parameters.
//! Checked against the spec's section 9.4 vector (3, 0.5, 4).

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::Result;
use crate::features::{Features, FitData, Head};
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// Maximum logit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaxLogit {}

#[derive(Debug)]
struct MaxLogitScorer {
    head: Head,
}

impl Detector for MaxLogit {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        check_fit_data(data, head, 0)?;
        Ok(Box::new(MaxLogitScorer { head: head.clone() }))
    }
}

impl Scorer for MaxLogitScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let s = x
            .logits
            .rows()
            .into_iter()
            .map(|r| r.iter().copied().fold(f32::NEG_INFINITY, f32::max))
            .collect();
        check_scores("max_logit", s)
    }
}

impl DetectorParams for MaxLogit {
    const NAME: &'static str = "max_logit";
    const ABOUT: &'static str = "maximum logit (Hendrycks et al., ICML'22)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::tests::spec_logits;

    #[test]
    fn max_logit_matches_spec_vector() {
        let (f, head) = spec_logits();
        let s = MaxLogit::default()
            .fit(&(&f).into(), &head)
            .unwrap()
            .score(&f)
            .unwrap();
        assert_eq!(s.to_vec(), vec![3.0, 0.5, 4.0]);
    }
}
