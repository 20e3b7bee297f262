//! OpenMax: Bendale & Boult, "Towards Open Set Deep Networks", CVPR 2016, arXiv:1511.06233,
//! <https://arxiv.org/abs/1511.06233>; OpenOOD key `openmax` (`openmax_postprocessor.py`, with
//! libMR's `MR.fit_high` / `w_score`).
//!
//! Fit (labelled ID-**train** data, logits only): for every class `c`, the mean activation vector
//! `MAV_c` = mean logit vector of the fit rows labelled `c` **and** predicted `c`; their
//! Euclidean distances `‖z − MAV_c‖₂` to it; a Weibull model of the `tailsize` largest of them,
//! fitted as libMR's `FitHigh` does: the tail `t` is translated to `x = t + 10000 − min(t)` and
//! the two-parameter Weibull maximum-likelihood estimate (shape `k`, scale `λ`; libMR's
//! `weibull_fit`, a port of MATLAB's `wblfit`) is taken; `w_c(d) = 1 − exp(−((d + 10000 −
//! min t)/λ)^k)`.
//!
//! Score of logits `z`: the `alpha` largest logits get weights `ω = (alpha + 1 − r)/alpha` by
//! rank `r = 1..alpha` (others 0); `z'_c = z_c (1 − ω_c w_c(‖z − MAV_c‖₂))`, the unknown logit
//! `u = Σ_c (z_c − z'_c)`, and OpenOOD's confidence is `−P(unknown) = −e^u / (Σ_c e^{z'_c} + e^u)`.
//! With `log = true` (default) the score is the log-odds `ln Σ_c e^{z'_c} − u =
//! −ln(P/(1 − P))` instead: the same ranking and metrics, but `P(unknown)` of a confident ID
//! sample (below 1e-38) would round to 0 in float32 and tie; `log = false` gives OpenOOD's value.
//! Higher = more in-distribution.
//!
//! Defaults from OpenOOD's `OpenMax` postprocessor: `tailsize = 20`, `alpha = 3` (its
//! `weibull_alpha`), Euclidean distance. No sweep (`openmax.yml` has none).
//!
//! Differences from OpenOOD/libMR: the Weibull MLE is solved to machine precision (bisection on
//! the profile-likelihood equation of `σ = 1/k` in libMR's normalised log units) where libMR's
//! `wdfzero` stops at `1e-6`; a class with no correctly predicted fit row, or whose tail holds
//! fewer than two distinct distances, is an `Err` naming it (libMR fails silently). Computed in
//! f64. Checked against NumPy/SciPy (`tests/data/posthoc_reference_d.py`, where the Weibull MLE
//! is solved for `k` directly with `scipy.optimize.brentq`; `tests/posthoc_golden_d.rs`) and by
//! hand below.

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{DEFAULT_CHUNK_ROWS, Features, FitData, Head};
use crate::kernels::predicted_means::{Rows, predicted_class_means};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// Weibull-recalibrated logits with an extra "unknown" class (OpenMax).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenMax {
    /// Largest distances per class that the Weibull is fitted to (20 in OpenOOD).
    pub tailsize: usize,
    /// Number of top-ranked classes that are recalibrated (3 in OpenOOD).
    pub alpha: usize,
    /// Return the log-odds of "not unknown" (default) instead of OpenOOD's `−P(unknown)`.
    pub log: bool,
}

impl Default for OpenMax {
    fn default() -> Self {
        OpenMax {
            tailsize: 20,
            alpha: 3,
            log: true,
        }
    }
}

/// libMR's `translate_amount`.
const TRANSLATE: f64 = 10000.0;

/// A fitted libMR-style Weibull: `w(d) = 1 − exp(−exp((ln(d + shift) − μ) / σ))`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Weibull {
    /// `10000 − min(tail)`.
    shift: f64,
    /// `ln λ`.
    mu: f64,
    /// `1 / k`.
    sigma: f64,
}

impl Weibull {
    /// Maximum-likelihood fit to the tail (libMR `FitHigh` with the whole tail).
    fn fit_high(tail: &[f64]) -> Option<Weibull> {
        let small = tail.iter().copied().fold(f64::INFINITY, f64::min);
        let shift = TRANSLATE - small;
        let y: Vec<f64> = tail.iter().map(|&t| (t + shift).ln()).collect();
        let ymax = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let ymin = y.iter().copied().fold(f64::INFINITY, f64::min);
        let range = ymax - ymin;
        if range.is_nan() || range <= 0.0 {
            return None;
        }
        // Normalised log data in [−1, 0] (libMR's x0); the smallest-extreme-value MLE of σ solves
        // h(σ) = Σ w y / Σ w − σ − ȳ = 0 with w = exp(y/σ): h > 0 near 0, h(1) ≤ 0.
        let x: Vec<f64> = y.iter().map(|&v| (v - ymax) / range).collect();
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let h = |s: f64| {
            let (mut sw, mut swx) = (0.0, 0.0);
            for &v in &x {
                let w = (v / s).exp();
                sw += w;
                swx += w * v;
            }
            swx / sw - s - mean
        };
        let (mut lo, mut hi) = (1e-12f64, 1.0f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if h(mid) > 0.0 {
                lo = mid;
            } else {
                hi = mid;
            }
            if hi - lo <= f64::EPSILON * hi {
                break;
            }
        }
        let s = 0.5 * (lo + hi);
        // μ = σ ln(mean exp(x/σ)) in normalised units, then back to log units.
        let m = (x.iter().map(|&v| (v / s).exp()).sum::<f64>() / n).ln() * s;
        Some(Weibull {
            shift,
            mu: ymax + range * m,
            sigma: s * range,
        })
    }

    /// libMR's `w_score` (the Weibull CDF at the translated distance).
    fn w_score(&self, d: f64) -> f64 {
        let x = d + self.shift;
        if x < 0.0 {
            return 0.0;
        }
        -(-((x.ln() - self.mu) / self.sigma).exp()).exp_m1()
    }
}

#[derive(Debug)]
struct OpenMaxScorer {
    /// `(c, c)` mean activation vectors.
    mavs: Array2<f64>,
    models: Vec<Weibull>,
    alpha: usize,
    log: bool,
    head: Head,
}

impl Detector for OpenMax {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        if self.tailsize < 2 || self.alpha == 0 {
            return Err(Error::InvalidParameter(format!(
                "openmax tailsize must be >= 2 and alpha >= 1, got tailsize = {}, alpha = {}",
                self.tailsize, self.alpha
            )));
        }
        check_fit_data(data, head, 1)?;
        if !data.has_labels() {
            return Err(Error::MissingLabels {
                detector: "openmax".into(),
            });
        }
        let c = head.num_classes();
        let correct = |chunk: &Features, i: usize, pred: usize| -> Result<bool> {
            let labels = chunk.labels.as_ref().ok_or_else(|| Error::MissingLabels {
                detector: "openmax".into(),
            })?;
            Ok(labels[i] == pred as i64)
        };
        let mavs = predicted_class_means(data, head, Rows::Logits, correct, |k| {
            format!(
                "openmax mean activation vector of class {k} (fit samples both labelled and \
                 predicted {k}; fit on labelled ID-train data where every class has a correct \
                 prediction)"
            )
        })?;
        // Second pass: the distances of the correct rows to their class's MAV.
        let mut dists: Vec<Vec<f64>> = vec![Vec::new(); c];
        data.for_each_chunk(DEFAULT_CHUNK_ROWS, |chunk| {
            for (i, (pred, z)) in chunk
                .predictions()
                .into_iter()
                .zip(chunk.logits.rows())
                .enumerate()
            {
                if correct(chunk, i, pred)? {
                    dists[pred].push(distance(z.iter().copied(), &mavs.row(pred)));
                }
            }
            Ok(())
        })?;
        let models = dists
            .into_iter()
            .enumerate()
            .map(|(k, mut d)| {
                d.sort_by(|a, b| b.total_cmp(a));
                d.truncate(self.tailsize);
                Weibull::fit_high(&d).ok_or_else(|| Error::TooFewSamples {
                    what: format!(
                        "openmax Weibull tail of class {k} (distinct distances of correctly \
                         predicted fit samples)"
                    ),
                    need: 2,
                    got: d.len().min(1),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(OpenMaxScorer {
            mavs,
            models,
            alpha: self.alpha,
            log: self.log,
            head: head.clone(),
        }))
    }
}

/// `‖z − m‖₂` in f64.
fn distance(z: impl Iterator<Item = f32>, m: &ndarray::ArrayView1<'_, f64>) -> f64 {
    z.zip(m.iter())
        .map(|(a, &b)| (a as f64 - b).powi(2))
        .sum::<f64>()
        .sqrt()
}

impl Scorer for OpenMaxScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let s = x
            .logits
            .rows()
            .into_iter()
            .map(|z| {
                let c = z.len();
                // Ranks by logit, largest first (stable: lower index first on ties).
                let mut order: Vec<usize> = (0..c).collect();
                order.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
                let mut omega = vec![0.0f64; c];
                for (r, &k) in order.iter().take(self.alpha).enumerate() {
                    omega[k] = (self.alpha - r) as f64 / self.alpha as f64;
                }
                let mut known = Vec::with_capacity(c);
                let mut unknown = 0.0f64;
                for k in 0..c {
                    let zk = z[k] as f64;
                    let w = if omega[k] > 0.0 {
                        self.models[k].w_score(distance(z.iter().copied(), &self.mavs.row(k)))
                    } else {
                        0.0
                    };
                    let modified = zk * (1.0 - w * omega[k]);
                    known.push(modified);
                    unknown += zk - modified;
                }
                let m = known.iter().copied().fold(unknown, f64::max);
                let lse_known = known.iter().map(|&v| (v - m).exp()).sum::<f64>().ln() + m;
                let log_odds = lse_known - unknown;
                if self.log {
                    log_odds as f32
                } else {
                    // −P(unknown) = −1 / (1 + e^{log-odds}).
                    (-1.0 / (1.0 + log_odds.exp())) as f32
                }
            })
            .collect();
        check_scores("openmax", s)
    }
}

impl DetectorParams for OpenMax {
    const NAME: &'static str = "openmax";
    const ABOUT: &'static str =
        "Weibull-recalibrated logits with an unknown class (Bendale & Boult, CVPR'16)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn weibull_mle_solves_the_likelihood_equations() {
        // At the MLE of a two-parameter Weibull, with k = 1/σ and x the translated data:
        // Σ x^k ln x / Σ x^k − 1/k − mean ln x = 0 and λ^k = mean x^k.
        let tail = [3.0, 2.5, 2.2, 2.0, 1.7, 1.1, 0.4];
        let w = Weibull::fit_high(&tail).unwrap();
        let k = 1.0 / w.sigma;
        let lx: Vec<f64> = tail.iter().map(|&t| (t + w.shift).ln()).collect();
        let top = lx.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let wts: Vec<f64> = lx.iter().map(|&l| (k * (l - top)).exp()).collect();
        let sw: f64 = wts.iter().sum();
        let eq = wts.iter().zip(&lx).map(|(a, l)| a * l).sum::<f64>() / sw
            - 1.0 / k
            - lx.iter().sum::<f64>() / lx.len() as f64;
        assert!(eq.abs() < 1e-9, "{eq}");
        let mu = top + (sw / lx.len() as f64).ln() / k;
        assert!((mu - w.mu).abs() < 1e-9);
        // The smallest tail value sits at the translation 10000: w_score rises through the tail.
        assert!(w.shift == 10000.0 - 0.4);
        assert!(w.w_score(0.4) < w.w_score(2.0) && w.w_score(2.0) < w.w_score(3.0));
        assert!(Weibull::fit_high(&[1.0, 1.0]).is_none());
    }

    #[test]
    fn openmax_recalibrates_the_top_classes() {
        // Two classes, identity head on logits. Class 0 rows (4, 0), (5, 0), (6, 0): MAV (5, 0),
        // distances 1, 0, 1; class 1 rows (0, 3), (0, 4), (0, 8): MAV (0, 5), distances 2, 1, 3.
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let fit = Features::with_head(
            array![
                [4.0f32, 0.0],
                [5.0, 0.0],
                [6.0, 0.0],
                [0.0, 3.0],
                [0.0, 4.0],
                [0.0, 8.0]
            ],
            &head,
            Some(vec![0, 0, 0, 1, 1, 1]),
        )
        .unwrap();
        let test = Features::with_head(array![[5.0f32, 1.0]], &head, None).unwrap();
        let om = OpenMax {
            tailsize: 20,
            alpha: 2,
            log: true,
        };
        let s = om.fit(&(&fit).into(), &head).unwrap().score(&test).unwrap();
        // By hand from the fitted models: z = (5, 1); ω = (1, 1/2).
        let m0 = Weibull::fit_high(&[1.0, 1.0, 0.0]).unwrap();
        let m1 = Weibull::fit_high(&[3.0, 2.0, 1.0]).unwrap();
        let w0 = m0.w_score(1.0);
        let w1 = m1.w_score(41f64.sqrt());
        let (k0, k1) = (5.0 * (1.0 - w0), 1.0 * (1.0 - 0.5 * w1));
        let u = 5.0 - k0 + 1.0 - k1;
        let want = (k0.exp() + k1.exp()).ln() - u;
        assert!((s[0] as f64 - want).abs() < 1e-5, "{} vs {want}", s[0]);
        let p = OpenMax { log: false, ..om }
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&test)
            .unwrap();
        let want_p = -u.exp() / (k0.exp() + k1.exp() + u.exp());
        assert!((p[0] as f64 - want_p).abs() < 1e-6, "{} vs {want_p}", p[0]);
    }
}
