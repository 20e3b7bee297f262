//! Temperature scaling: Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural
//! Networks", ICML 2017, arXiv:1706.04599; OpenOOD key `temp_scaling`.
//!
//! Fit (ID **validation** data with labels, as OpenOOD's `setup` reads `id_loader_dict['val']`):
//! the temperature `T` that minimises the mean negative log-likelihood
//! `NLL(T) = mean_i [lse(z_i / T) − z_{i,y_i} / T]`. OpenOOD runs `LBFGS(lr = 0.01,
//! max_iter = 50)` from `T = 1.5`, which approximates that minimiser; here it is found exactly:
//! in `β = 1/T` the NLL is convex (`NLL''(β) = mean_i Var_{softmax(βz_i)}(z_i) ≥ 0`), so the zero
//! of `NLL'(β) = mean_i (E_{softmax(βz_i)}[z_i] − z_{i,y_i})` is found by bisection on `ln β` over
//! `T ∈ [1e-3, 1e3]` (60 halvings, f64). When every fit sample is classified correctly the NLL
//! keeps falling as `T → 0` and has no minimiser: `T` then stops at the bound `1e-3`, and the
//! scores are MSP at that sharp temperature.
//!
//! Score: `max_c softmax(z / T)_c`, higher = more in-distribution. `log = true` (the default)
//! outputs its log-odds `ln(p / (1 − p))` instead (same ranking, never saturates; see
//! [`Msp`](super::Msp)); `log = false` outputs `p` as OpenOOD does. No sweep (OpenOOD has none).
//! Checked against SciPy's bounded scalar minimiser (`tests/data/posthoc_reference_b.py`).

use super::DetectorParams;
use super::msp::msp_scores;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{DEFAULT_CHUNK_ROWS, Features, FitData, Head};
use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// MSP at the temperature that minimises the NLL of the (validation) fit data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TempScaling {
    /// Output the log-odds `ln(p / (1 − p))` instead of `p` (same ranking, no saturation).
    pub log: bool,
}

impl Default for TempScaling {
    fn default() -> Self {
        TempScaling { log: true }
    }
}

/// The range searched for `T`.
const T_MIN: f64 = 1e-3;
const T_MAX: f64 = 1e3;

/// `d NLL / d β` at `β` over the labelled logits `(z_i, y_i)`: `mean_i (E_p[z_i] − z_{i,y_i})`
/// with `p = softmax(β z_i)`.
fn nll_slope(logits: &[(Vec<f32>, usize)], beta: f64) -> f64 {
    let total: f64 = logits
        .iter()
        .map(|(z, y)| {
            let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64 * beta;
            let (mut sum, mut weighted) = (0.0f64, 0.0f64);
            for &v in z {
                let e = (v as f64 * beta - m).exp();
                sum += e;
                weighted += e * v as f64;
            }
            let expected = weighted / sum;
            expected - z[*y] as f64
        })
        .sum();
    total / logits.len() as f64
}

/// The NLL-minimising temperature of the labelled logits, within `[T_MIN, T_MAX]`.
pub(crate) fn fit_temperature(logits: &[(Vec<f32>, usize)]) -> f64 {
    // The slope increases with β (convexity): find its zero on ln β.
    let (mut lo, mut hi) = ((1.0 / T_MAX).ln(), (1.0 / T_MIN).ln());
    if nll_slope(logits, lo.exp()) >= 0.0 {
        return T_MAX;
    }
    if nll_slope(logits, hi.exp()) <= 0.0 {
        return T_MIN;
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if nll_slope(logits, mid.exp()) < 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    1.0 / (0.5 * (lo + hi)).exp()
}

#[derive(Debug)]
struct TempScalingScorer {
    temperature: f64,
    log: bool,
    head: Head,
}

impl Detector for TempScaling {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        check_fit_data(data, head, 1)?;
        let missing = || Error::MissingLabels {
            detector: Self::NAME.into(),
        };
        if !data.has_labels() {
            return Err(missing());
        }
        let c = head.num_classes();
        if c < 2 {
            return Err(Error::InvalidParameter(
                "temp_scaling needs at least two classes".into(),
            ));
        }
        let mut labelled = Vec::with_capacity(data.len());
        data.for_each_chunk(DEFAULT_CHUNK_ROWS, |chunk| {
            let labels = chunk.labels.as_ref().ok_or_else(missing)?;
            for (row, &l) in chunk.logits.rows().into_iter().zip(labels) {
                if l < 0 || l as usize >= c {
                    return Err(Error::InvalidParameter(format!(
                        "temp_scaling: fit label {l} is outside 0..{c} (the head has {c} classes)"
                    )));
                }
                labelled.push((row.to_vec(), l as usize));
            }
            Ok(())
        })?;
        Ok(Box::new(TempScalingScorer {
            temperature: fit_temperature(&labelled),
            log: self.log,
            head: head.clone(),
        }))
    }
}

impl Scorer for TempScalingScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let s = msp_scores(x.logits.view(), self.temperature, self.log);
        check_scores(TempScaling::NAME, s)
    }
}

impl DetectorParams for TempScaling {
    const NAME: &'static str = "temp_scaling";
    const ABOUT: &'static str =
        "MSP at the NLL-fitted temperature (Guo et al., ICML'17); fit on ID validation data";
    const FITS_ON_VAL: bool = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::logsumexp;

    /// Brute-force NLL on a fine grid of `ln T`.
    fn nll(logits: &[(Vec<f32>, usize)], t: f64) -> f64 {
        logits
            .iter()
            .map(|(z, y)| {
                let s: Vec<f32> = z.iter().map(|&v| (v as f64 / t) as f32).collect();
                logsumexp(&s) - z[*y] as f64 / t
            })
            .sum::<f64>()
            / logits.len() as f64
    }

    #[test]
    fn fitted_temperature_minimises_the_nll() {
        // Over-confident logits: half the samples are labelled with the second-best class.
        let logits: Vec<(Vec<f32>, usize)> = (0..40)
            .map(|i| {
                let z = vec![
                    6.0 + (i % 7) as f32 * 0.5,
                    2.0 + (i % 3) as f32,
                    -(i % 5) as f32,
                ];
                (z, if i % 2 == 0 { 0 } else { 1 })
            })
            .collect();
        let t = fit_temperature(&logits);
        let best = (0..4000)
            .map(|k| (-3.0 + k as f64 * 0.0015).exp())
            .min_by(|a, b| nll(&logits, *a).total_cmp(&nll(&logits, *b)))
            .unwrap();
        assert!(t > 1.0, "over-confident logits need T > 1, got {t}");
        assert!((t.ln() - best.ln()).abs() < 2e-3, "{t} vs grid {best}");
    }

    #[test]
    fn separable_fit_data_stops_at_the_lower_bound() {
        let logits = vec![(vec![5.0f32, 0.0], 0usize), (vec![0.0, 3.0], 1)];
        assert_eq!(fit_temperature(&logits), T_MIN);
    }
}
