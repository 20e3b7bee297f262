//! AdaSCALE: SCALE with a per-sample percentile set by how much the features move under a small
//! input perturbation (Regmi et al., "AdaSCALE: Adaptive Scaling for OOD Detection", 2025,
//! arXiv:2503.08023); OpenOOD keys `adascale_a` (`variant = "a"`) and `adascale_l`
//! (`variant = "l"`).
//!
//! The network part is the probe [`Probe::AdaScale`] (`ood extract --with ada_scale`, or
//! `ood bench` by itself): the penultimate features `h̃` of the input moved by `0.5 · sign(∇ₓ)`
//! on the fraction `o` of its elements with the **smallest** gradient magnitude, the gradient
//! being that of the predicted class's logit. It is needed on the fit data (ID **val**, as
//! OpenOOD fits it there) and on every scored set.
//!
//! With `d` the feature dimension, `k₁ = ⌊d·k1/100⌋`, `k₂ = ⌊d·k2/100⌋` and `T_k(h)` the indices
//! of the `k` largest entries of `h`: `Q(h, h̃) = Σ_{T_k₁(h)} relu(h̃) + λ Σ_{T_k₂(h)} |h − h̃|`.
//! Fit: the values `Q` of (at most `num_samples`, a seeded random subset of) the fit rows.
//! Score: `p = p_min + (1 − F(Q)) · (p_max − p_min)` with `F` their empirical CDF
//! (`#{Q_fit ≤ Q} / n`, statsmodels' `ECDF`), `k = d − round_half_even(d·p/100)`,
//! `s = Σ relu(h) / Σ_{T_k(relu h)} relu(h)`; variant `a`: `lse(W (h · e^s) + b)`, variant `l`:
//! `lse((W h + b) · s²)`. Higher = more in-distribution. An all-zero `relu(h)` (`0/0` in
//! OpenOOD) takes `s = 1`.
//!
//! Defaults (OpenOOD `adascale_a.yml`): `percentile = [75, 85]`, `k1 = 5`, `k2 = 1`,
//! `lambda = 10`, `o = 0.05`, `num_samples = 5000`; sweep: the 36 pairs `p_min < p_max` of
//! `{60, 65, …, 95, 99}` in OpenOOD's order, the rest fixed. OpenOOD draws the subset with an
//! unseeded `torch.randperm`; here `seed` picks it.

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores, logsumexp};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use crate::kernels::top_k::top_k_indices;
use crate::probes::Probe;
use ndarray::{Array1, ArrayView1};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// Activation scaling (`a`) or logit scaling (`l`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdaScaleVariant {
    /// AdaSCALE-A: features scaled by `e^s` before the head.
    A,
    /// AdaSCALE-L: logits scaled by `s²`.
    L,
}

/// Adaptive SCALE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaScale {
    /// Activation (`a`) or logit (`l`) scaling.
    pub variant: AdaScaleVariant,
    /// `[p_min, p_max]`, `0 < p_min ≤ p_max < 100` ([75, 85]).
    pub percentile: [f64; 2],
    /// Percent of the feature dimension whose largest activations sum the perturbed features (5).
    pub k1: f64,
    /// Percent of the feature dimension whose largest activations sum the feature shift (1).
    pub k2: f64,
    /// Weight `λ` of the feature shift (10).
    pub lambda: f64,
    /// Fraction of input elements perturbed by the probe (0.05).
    pub o: f64,
    /// At most this many fit rows define the empirical CDF (5000).
    pub num_samples: usize,
    /// Seed of the subset when the fit data has more rows.
    pub seed: u64,
}

impl Default for AdaScale {
    fn default() -> Self {
        AdaScale {
            variant: AdaScaleVariant::A,
            percentile: [75.0, 85.0],
            k1: 5.0,
            k2: 1.0,
            lambda: 10.0,
            o: 0.05,
            num_samples: 5000,
            seed: 0,
        }
    }
}

impl AdaScale {
    /// The network computation this detector reads (fit and score).
    pub fn probe(&self) -> Probe {
        Probe::AdaScale { o: self.o }
    }

    /// `(k₁, k₂)` for dimension `d`: `⌊d·k/100⌋`, as Python's `int()`.
    fn ks(&self, d: usize) -> (usize, usize) {
        let k = |p: f64| ((d as f64 * p / 100.0).floor() as usize).min(d);
        (k(self.k1), k(self.k2))
    }
}

/// `Q(h, h̃)` of one row.
fn sensitivity(
    h: ArrayView1<'_, f32>,
    ht: ArrayView1<'_, f32>,
    k1: usize,
    k2: usize,
    lambda: f64,
) -> f64 {
    let h = h.to_vec();
    let a: f64 = top_k_indices(&h, k1)
        .into_iter()
        .map(|i| ht[i].max(0.0) as f64)
        .sum();
    let b: f64 = top_k_indices(&h, k2)
        .into_iter()
        .map(|i| (h[i] - ht[i]).abs() as f64)
        .sum();
    a + lambda * b
}

#[derive(Debug)]
struct AdaScaleScorer {
    params: AdaScale,
    /// The fit rows' `Q`, sorted ascending.
    fitted: Vec<f64>,
    head: Head,
}

impl Detector for AdaScale {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        let [lo, hi] = self.percentile;
        if !(lo > 0.0 && lo <= hi && hi < 100.0) {
            return Err(Error::InvalidParameter(format!(
                "ada_scale percentile must be [p_min, p_max] with 0 < p_min <= p_max < 100, got {:?}",
                self.percentile
            )));
        }
        for (name, v) in [("k1", self.k1), ("k2", self.k2)] {
            if !(0.0..=100.0).contains(&v) {
                return Err(Error::InvalidParameter(format!(
                    "ada_scale {name} is a percent of the feature dimension in [0, 100], got {v}"
                )));
            }
        }
        if !(self.lambda >= 0.0 && self.lambda.is_finite()) {
            return Err(Error::InvalidParameter(format!(
                "ada_scale lambda must be finite and >= 0, got {}",
                self.lambda
            )));
        }
        if !(self.o > 0.0 && self.o <= 1.0) || self.num_samples == 0 {
            return Err(Error::InvalidParameter(format!(
                "ada_scale needs 0 < o <= 1 and num_samples >= 1, got o = {} and num_samples = {}",
                self.o, self.num_samples
            )));
        }
        check_fit_data(data, head, 1)?;
        let f = data.to_features()?;
        let ht = f.probe(&self.probe(), AdaScale::NAME)?;
        let (k1, k2) = self.ks(f.dim());
        let mut rows: Vec<usize> = (0..f.len()).collect();
        if rows.len() > self.num_samples {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed);
            rows = rand::seq::index::sample(&mut rng, f.len(), self.num_samples).into_vec();
        }
        let mut fitted: Vec<f64> = rows
            .into_iter()
            .map(|i| sensitivity(f.embeddings.row(i), ht.row(i), k1, k2, self.lambda))
            .collect();
        fitted.sort_by(f64::total_cmp);
        Ok(Box::new(AdaScaleScorer {
            params: self.clone(),
            fitted,
            head: head.clone(),
        }))
    }
}

impl Scorer for AdaScaleScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let p = &self.params;
        let ht = x.probe(&p.probe(), AdaScale::NAME)?;
        let d = x.dim();
        if ht.ncols() != d {
            return Err(Error::dim(
                format!("columns of '{}'", p.probe().tensor_name()),
                d,
                ht.ncols(),
            ));
        }
        let (k1, k2) = p.ks(d);
        let [lo, hi] = p.percentile;
        let n_fit = self.fitted.len() as f64;
        let mut out = Vec::with_capacity(x.len());
        for (i, h) in x.embeddings.rows().into_iter().enumerate() {
            let q = sensitivity(h, ht.row(i), k1, k2, p.lambda);
            let below = self.fitted.partition_point(|&v| v <= q) as f64;
            let pct = lo + (1.0 - below / n_fit) * (hi - lo);
            let k = d - ((d as f64 * pct / 100.0).round_ties_even() as usize).min(d);
            if k == 0 {
                return Err(Error::InvalidParameter(format!(
                    "ada_scale percentile {pct} keeps no activation of a {d}-dimensional feature (k = 0)"
                )));
            }
            let r: Vec<f32> = h.iter().map(|&v| v.max(0.0)).collect();
            let all: f64 = r.iter().map(|&v| v as f64).sum();
            let top: f64 = top_k_indices(&r, k).iter().map(|&j| r[j] as f64).sum();
            let s = if all == 0.0 { 1.0 } else { all / top };
            let z: Vec<f32> = match p.variant {
                AdaScaleVariant::A => {
                    let e = s.exp() as f32;
                    let scaled: Vec<f32> = h.iter().map(|&v| v * e).collect();
                    self.head
                        .logits(ndarray::ArrayView2::from_shape((1, d), &scaled).expect("one row"))?
                        .into_raw_vec_and_offset()
                        .0
                }
                AdaScaleVariant::L => {
                    let z = self.head.logits(h.insert_axis(ndarray::Axis(0)))?;
                    let f = (s * s) as f32;
                    z.iter().map(|&v| v * f).collect()
                }
            };
            out.push(logsumexp(&z) as f32);
        }
        check_scores(AdaScale::NAME, Array1::from(out))
    }
}

impl DetectorParams for AdaScale {
    const NAME: &'static str = "ada_scale";
    const ABOUT: &'static str = "SCALE with a per-sample percentile from the features' sensitivity to an input perturbation (Regmi et al., 2025)";
    const FITS_ON_VAL: bool = true;
    fn sweep(&self) -> Vec<Self> {
        let ps = [60.0, 65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0, 99.0];
        let mut out = Vec::new();
        for (i, &lo) in ps.iter().enumerate() {
            for &hi in &ps[i + 1..] {
                out.push(AdaScale {
                    percentile: [lo, hi],
                    ..self.clone()
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn ada_scale_matches_hand_computation() {
        // d = 20: k1 = 1, k2 = 0 (λ term empty). Fit rows' Q = relu(h̃) at argmax h: 1, 2, 3, 4.
        let d = 20;
        let head = Head::new(ndarray::Array2::eye(d), Array1::zeros(d)).unwrap();
        let row = |top: f32| {
            let mut h = vec![0.5f32; d];
            h[0] = top;
            h
        };
        let fit_h: Vec<f32> = (0..4).flat_map(|_| row(2.0)).collect();
        let mut fit = Features::with_head(
            ndarray::Array2::from_shape_vec((4, d), fit_h).unwrap(),
            &head,
            None,
        )
        .unwrap();
        let mut ht = fit.embeddings.clone();
        for (i, v) in [1.0f32, 2.0, 3.0, 4.0].into_iter().enumerate() {
            ht[[i, 0]] = v;
        }
        let det = AdaScale::default();
        fit.set_probe(&det.probe(), ht).unwrap();
        let sc = det.fit(&(&fit).into(), &head).unwrap();
        // Test row: Q = 2.5 → F = 2/4 → p = 75 + 0.5·10 = 80 → k = 20 − 16 = 4.
        let h = row(3.0);
        let mut x = Features::with_head(
            ndarray::Array2::from_shape_vec((1, d), h.clone()).unwrap(),
            &head,
            None,
        )
        .unwrap();
        let mut hp = x.embeddings.clone();
        hp[[0, 0]] = 2.5;
        x.set_probe(&det.probe(), hp).unwrap();
        let all = 3.0 + 19.0 * 0.5;
        let top = 3.0 + 3.0 * 0.5;
        let s: f64 = all / top;
        let z: Vec<f64> = h.iter().map(|&v| v as f64 * s.exp()).collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let want = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let got = sc.score(&x).unwrap()[0] as f64;
        assert!((got - want).abs() < 1e-4 * want, "{got} vs {want}");
        // Variant l: lse(h · s²).
        let l = AdaScale {
            variant: AdaScaleVariant::L,
            ..det.clone()
        };
        let got = l.fit(&(&fit).into(), &head).unwrap().score(&x).unwrap()[0] as f64;
        let z: Vec<f64> = h.iter().map(|&v| v as f64 * s * s).collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let want = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        assert!((got - want).abs() < 1e-4 * want, "{got} vs {want}");
        assert_eq!(det.sweep().len(), 36);
        assert_eq!(det.sweep()[0].percentile, [60.0, 65.0]);
        assert_eq!(det.sweep()[35].percentile, [95.0, 99.0]);
        let _ = array![0.0f32];
    }
}
