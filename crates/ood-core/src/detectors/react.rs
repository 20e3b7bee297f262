//! ReAct: rectified activations (Sun, Guo & Li, "ReAct: Out-of-distribution Detection With
//! Rectified Activations", NeurIPS 2021, arXiv:2111.12797, <https://arxiv.org/abs/2111.12797>);
//! OpenOOD key `react`.
//!
//! Fit: `τ` = the `p`-th percentile of the **flattened** fit activations (all `n·d` values), with
//! NumPy's default "linear" interpolation. OpenOOD fits on ID **validation** features (spec 5.5
//! and 10.6), so pass ID val as the fit data to reproduce it.
//!
//! Score: `lse(W · min(h, τ) + b)` (upper clip only; the logits are recomputed from the clipped
//! features with the head). Higher = more in-distribution.
//!
//! Defaults `p = 90` (OpenOOD `react.yml`); sweep `p ∈ {85, 90, 95, 99}`.
//!
//! Memory: the percentile is exact and computed without holding the `n·d` values. Two streaming
//! passes over the fit data build a 65,536-bucket histogram of the high 16 bits of an
//! order-preserving key of each f32, then a histogram of the low 16 bits inside the one or two
//! buckets that hold the needed order statistics (memory: a few histograms, about 1.5 MiB,
//! whatever `n·d` is; the kernel is `kernels/percentile.rs`). Checked against NumPy
//! `percentile` in the golden test and by hand in the unit tests.

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use crate::kernels::logits::energies;
use crate::kernels::percentile::feature_percentile;
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// ReAct: clip activations at a percentile of the ID activations, then energy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReAct {
    /// Percentile `p` in `[0, 100]` of the fit activations used as the clip threshold (90 in
    /// OpenOOD; the paper's default).
    pub percentile: f64,
}

impl Default for ReAct {
    fn default() -> Self {
        ReAct { percentile: 90.0 }
    }
}

#[derive(Debug)]
struct ReActScorer {
    threshold: f32,
    head: Head,
}

impl Detector for ReAct {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        if !(0.0..=100.0).contains(&self.percentile) {
            return Err(Error::InvalidParameter(format!(
                "react percentile must be in [0, 100], got {}",
                self.percentile
            )));
        }
        check_fit_data(data, head, 1)?;
        let threshold = feature_percentile(data, self.percentile)? as f32;
        Ok(Box::new(ReActScorer {
            threshold,
            head: head.clone(),
        }))
    }
}

impl Scorer for ReActScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let t = self.threshold;
        let clipped = x.embeddings.mapv(|v| v.min(t));
        let z = self.head.logits(clipped.view())?;
        check_scores("react", energies(&z))
    }
}

impl DetectorParams for ReAct {
    const FITS_ON_VAL: bool = true;
    const NAME: &'static str = "react";
    const ABOUT: &'static str =
        "energy after clipping at an ID-val activation percentile (Sun et al., NeurIPS'21)";
    fn sweep(&self) -> Vec<Self> {
        [85.0, 90.0, 95.0, 99.0]
            .into_iter()
            .map(|percentile| ReAct { percentile })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::DEFAULT_CHUNK_ROWS;
    use crate::kernels::percentile::tests::{naive, pct};
    use ndarray::{Array2, array};

    #[test]
    fn react_streams_a_multi_chunk_feature_file() {
        // More rows than one chunk: the two streaming passes must see every chunk.
        let n = DEFAULT_CHUNK_ROWS + 500;
        let head = Head::new(array![[1.0f32, -1.0], [0.5, 2.0]], array![0.0, 0.1]).unwrap();
        let emb = Array2::from_shape_fn((n, 2), |(i, j)| ((i * 7 + j * 13) % 1000) as f32 / 100.0);
        let fit = Features::with_head(emb, &head, None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fit.safetensors");
        fit.save(&path).unwrap();
        let file = crate::features::FeatureFile::open(&path).unwrap();
        let all: Vec<f32> = fit.embeddings.iter().copied().collect();
        let from_file = feature_percentile(&(&file).into(), 90.0).unwrap();
        assert_eq!(from_file, pct(&all, 90.0));
        assert_eq!(from_file, naive(&all, 90.0));
        let test = fit.slice(0, 5);
        let a = ReAct::default().fit(&(&fit).into(), &head).unwrap();
        let b = ReAct::default().fit(&(&file).into(), &head).unwrap();
        assert_eq!(a.score(&test).unwrap(), b.score(&test).unwrap());
    }

    #[test]
    fn react_clips_at_the_fit_percentile() {
        // Fit activations 0..=9 (10 values): the 90th percentile is 8.1.
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.5, 0.0]).unwrap();
        let fit = Features::with_head(
            Array2::from_shape_vec((5, 2), (0..10).map(|v| v as f32).collect()).unwrap(),
            &head,
            None,
        )
        .unwrap();
        let test = Features::with_head(array![[20.0f32, 1.0], [2.0, 3.0]], &head, None).unwrap();
        let s = ReAct::default()
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&test)
            .unwrap();
        let lse = |a: f64, b: f64| (a.exp() + b.exp()).ln();
        let want = [lse(8.1 + 0.5, 1.0), lse(2.5, 3.0)];
        for (a, b) in s.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
