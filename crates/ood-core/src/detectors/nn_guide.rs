//! NNGuide: Park, Jung & Teoh, "Nearest Neighbor Guidance for Out-of-Distribution Detection",
//! ICCV 2023, arXiv:2309.14888; OpenOOD key `nnguide`.
//!
//! Fit: the bank is the first fit rows, taken in whole loader batches of `batch_size` as OpenOOD
//! does (batches are appended until `#batches · batch_size > ⌊alpha·N⌋`, so the bank has
//! `min(N, (⌊alpha·N⌋ / batch_size + 1) · batch_size)` rows: 600 for CIFAR-10, 13,000 for
//! ImageNet-1K). Bank vectors `g_i = ĥ_i · lse(z_i)` with `ĥ = h/‖h‖`.
//! Score: `s(h) = mean of the K largest ⟨ĥ, g_i⟩ × lse(z)`. Higher = more in-distribution.
//!
//! Defaults from OpenOOD `nnguide.yml`: `K = 100`, `alpha = 0.01`, batch size 200 (OpenOOD's
//! evaluation batch size); APS is off there, so no sweep. Spec traps handled:
//! * the bank depends on the fit rows' order (OpenOOD's train loader order);
//! * `K` larger than the bank is capped at the bank size (faiss would average its `−3.4e38`
//!   fillers for missing neighbours), so small fit sets still work;
//! * OpenOOD's normaliser `x/‖x‖ + 1e-10` adds `1e-10` per component; its effect on the inner
//!   products is below f32 resolution and we use plain `x/‖x‖`.
//!
//! The exact inner-product search is the blocked GEMM + top-k of `kernels/neighbours.rs`
//! (largest inner products). Checked against NumPy + faiss `IndexFlatIP`
//! (`tests/data/posthoc_reference_b.py`).

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores, logsumexp};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use crate::kernels::neighbours::{Bank, Metric, Tiles, search_smallest};
use crate::linalg::normalize_rows;
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// Nearest-neighbour guidance: energy scaled by the mean similarity to a confidence-weighted bank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NnGuide {
    /// Number of neighbours `K` (100); capped at the bank size.
    pub k: usize,
    /// Fraction of the fit set that sets the bank size (0.01).
    pub alpha: f64,
    /// Loader batch size that rounds the bank up (200, OpenOOD's evaluation batch size).
    pub batch_size: usize,
}

impl Default for NnGuide {
    fn default() -> Self {
        NnGuide {
            k: 100,
            alpha: 0.01,
            batch_size: 200,
        }
    }
}

impl NnGuide {
    /// Bank size for `n` fit rows (see the module doc).
    pub fn bank_size(&self, n: usize) -> usize {
        let target = (self.alpha * n as f64).floor() as usize;
        n.min((target / self.batch_size.max(1) + 1).saturating_mul(self.batch_size.max(1)))
    }
}

#[derive(Debug)]
struct NnGuideScorer {
    bank: Bank,
    k: usize,
    head: Head,
}

impl Detector for NnGuide {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        if self.k == 0 || self.batch_size == 0 {
            return Err(Error::InvalidParameter(format!(
                "nn_guide k and batch_size must be >= 1, got k = {}, batch_size = {}",
                self.k, self.batch_size
            )));
        }
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(Error::InvalidParameter(format!(
                "nn_guide alpha must be in (0, 1], got {}",
                self.alpha
            )));
        }
        check_fit_data(data, head, 1)?;
        let m = self.bank_size(data.len());
        let rows = data.first_rows(m)?;
        let mut g = normalize_rows(rows.embeddings.view());
        for (mut r, z) in g.rows_mut().into_iter().zip(rows.logits.rows()) {
            let conf = logsumexp(&z.to_vec()) as f32;
            r.mapv_inplace(|v| v * conf);
        }
        Ok(Box::new(NnGuideScorer {
            bank: Bank::from_rows(g.view()),
            k: self.k.min(m),
            head: head.clone(),
        }))
    }
}

impl Scorer for NnGuideScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let q = normalize_rows(x.embeddings.view());
        let k = self.k;
        let guide = search_smallest(
            q.view(),
            &self.bank,
            k,
            Metric::NegInnerProduct,
            Tiles::default(),
            1,
            |sorted, out| {
                out[0] = (-sorted.iter().map(|&v| v as f64).sum::<f64>() / k as f64) as f32;
            },
        );
        let s = x
            .logits
            .rows()
            .into_iter()
            .zip(guide.column(0))
            .map(|(z, &g)| (g as f64 * logsumexp(&z.to_vec())) as f32)
            .collect();
        check_scores("nn_guide", s)
    }
}

impl DetectorParams for NnGuide {
    const NAME: &'static str = "nn_guide";
    const ABOUT: &'static str =
        "energy times mean similarity to a confidence-weighted ID bank (Park et al., ICCV'23)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

    #[test]
    fn nn_guide_bank_size_follows_openood_batches() {
        let d = NnGuide::default();
        assert_eq!(d.bank_size(50_000), 600);
        assert_eq!(d.bank_size(1_281_167), 13_000);
        assert_eq!(d.bank_size(60), 60);
        assert_eq!(
            NnGuide {
                batch_size: 2,
                alpha: 0.5,
                ..d
            }
            .bank_size(8),
            6
        );
    }

    #[test]
    fn nn_guide_matches_hand_computation() {
        // Identity head, zero bias; bank = all 3 rows (alpha 1, batch 1 → min(3, 4) = 3).
        let head = Head::new(Array2::eye(2), Array1::zeros(2)).unwrap();
        let fit = Features::with_head(array![[2.0f32, 0.0], [0.0, 1.0], [3.0, 4.0]], &head, None)
            .unwrap();
        let t = Features::with_head(array![[1.0f32, 0.0]], &head, None).unwrap();
        let det = NnGuide {
            k: 2,
            alpha: 1.0,
            batch_size: 1,
        };
        let s = det.fit(&(&fit).into(), &head).unwrap().score(&t).unwrap();
        let lse = |a: f64, b: f64| a.max(b) + (1.0 + (-(a - b).abs()).exp()).ln();
        // ⟨ĥ, g_i⟩ = ĥ_i[0] · lse(z_i): 1·lse(2,0), 0·lse(0,1), .6·lse(3,4).
        let ips = [lse(2.0, 0.0), 0.0, 0.6 * lse(3.0, 4.0)];
        let mut top = ips.to_vec();
        top.sort_by(|a, b| b.total_cmp(a));
        let want = (top[0] + top[1]) / 2.0 * lse(1.0, 0.0);
        assert!((s[0] as f64 - want).abs() < 1e-5, "{s} vs {want}");
        // K above the bank size is capped (mean of all 3).
        let s3 = NnGuide { k: 100, ..det }
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&t)
            .unwrap();
        let want3 = ips.iter().sum::<f64>() / 3.0 * lse(1.0, 0.0);
        assert!((s3[0] as f64 - want3).abs() < 1e-5, "{s3} vs {want3}");
    }
}
