//! KLM: KL matching (Hendrycks et al., "Scaling Out-of-Distribution Detection for Real-World
//! Settings", ICML 2022, arXiv:1911.11132, <https://arxiv.org/abs/1911.11132>); OpenOOD key `klm`.
//!
//! Fit: on in-distribution **validation** data (OpenOOD's `setup` reads `id_loader_dict['val']`,
//! spec 5.13 and 10.6), `q_c` = mean softmax over the fit samples whose **predicted** class
//! (first arg-max of the logits) is `c`; a class that no sample is predicted as gets the one-hot
//! vector `e_c`. Labels are not used.
//!
//! Score: `−min_c KL(p ‖ q_c)` with `p = softmax(z)` and the natural log, where KL is SciPy's
//! `entropy(p, q)`: both arguments are renormalised to sum to 1 first; terms with `p_i = 0` are 0
//! and terms with `p_i > 0, q_i = 0` are `+∞`. Higher = more in-distribution. No parameters.
//!
//! Traps handled: a one-hot `q_c` gives `KL = +∞` for every non-one-hot `p`, so such classes never
//! win the minimum (as in SciPy); if every class is at `+∞` the score is non-finite and scoring
//! returns [`Error::NonFinite`] rather than `−∞`. Everything is computed in f64. The fit streams
//! over the fit data in chunks (memory `O(C²)`). Scoring uses `KL(p‖q) = Σ p log p − Σ p log q`
//! with one GEMM per block of rows for the templates with full support (so `C = 1000` costs a
//! matrix product, not `n·C²` logarithms) and the exact SciPy rule for templates with zeros;
//! tiny negative rounding results are clamped to 0.
//!
//! Confident classifiers: when `1 − p_top` is below f64's resolution, `ln p` and `ln q` computed
//! from rounded probabilities are 0 at the top class and the KL divergences (all ≈ 1e-160 for a
//! logit gap of 380) lose their ranking. Here `ln p_i = z_i − z_top − log1p(Σ_{j≠top} e^{z_j −
//! z_top})` comes straight from the logits, and a template's largest entry gets
//! `ln q_k = log1p(−Σ_{j≠k} q_j)` from its other (accurate) entries, so every KL keeps its
//! relative precision. `log = true` (the default) outputs `−ln KL_min` instead of `−KL_min` (the
//! same ranking; the natural score rounds to −0 in f32 below 1e-45); `log = false` outputs
//! `−KL_min` as OpenOOD does. An exact 0 divergence is scored as `−ln(f64::MIN_POSITIVE)`.

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{DEFAULT_CHUNK_ROWS, Features, FitData, Head, argmax};
use crate::linalg::matmul_f64;
use ndarray::{Array1, Array2, s};
use serde::{Deserialize, Serialize};

/// KL matching to class-conditional mean softmax vectors. Fit it on ID **validation** data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Klm {
    /// Output `−ln KL_min` instead of `−KL_min` (same ranking, no saturation).
    pub log: bool,
}

impl Default for Klm {
    fn default() -> Self {
        Klm { log: true }
    }
}

/// `ln softmax(z)` in f64, accurate at the arg-max even when `1 − p_top` is below 1e-16.
pub(crate) fn log_softmax(z: &[f32]) -> Vec<f64> {
    let t = argmax(z);
    let zt = z[t] as f64;
    let rest: f64 = z
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != t)
        .map(|(_, &v)| (v as f64 - zt).exp())
        .sum();
    let l = rest.ln_1p();
    z.iter().map(|&v| v as f64 - zt - l).collect()
}

#[derive(Debug)]
struct KlmScorer {
    log: bool,
    /// `(c, c)`: row `c` is the renormalised `q_c`.
    templates: Array2<f64>,
    /// `(c, f)`: column `k` is `log q` of the `k`-th template with full support (every entry > 0).
    log_full_t: Array2<f64>,
    /// Classes whose template has a zero entry (e.g. one-hot): scored pair by pair.
    partial: Vec<usize>,
    head: Head,
}

/// Rows per block when scoring (bounds the `(rows, c)` intermediate matrices).
const BLOCK_ROWS: usize = 1024;

/// SciPy `entropy(p, q)`: KL divergence after renormalising both vectors.
pub(crate) fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let sp: f64 = p.iter().sum();
    let sq: f64 = q.iter().sum();
    p.iter()
        .zip(q)
        .map(|(&pi, &qi)| {
            let (pi, qi) = (pi / sp, qi / sq);
            if pi == 0.0 {
                0.0
            } else if qi == 0.0 {
                f64::INFINITY
            } else {
                pi * (pi / qi).ln()
            }
        })
        .sum()
}

impl Detector for Klm {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        check_fit_data(data, head, 1)?;
        let c = head.num_classes();
        let mut sums = Array2::<f64>::zeros((c, c));
        let mut counts = vec![0usize; c];
        data.for_each_chunk(DEFAULT_CHUNK_ROWS, |chunk| {
            for r in chunk.logits.rows() {
                let v = r.to_vec();
                let k = argmax(&v);
                counts[k] += 1;
                let mut row = sums.row_mut(k);
                for (s, lp) in row.iter_mut().zip(log_softmax(&v)) {
                    *s += lp.exp();
                }
            }
            Ok(())
        })?;
        for (k, &n) in counts.iter().enumerate() {
            let mut row = sums.row_mut(k);
            if n == 0 {
                row.fill(0.0);
                row[k] = 1.0;
            } else {
                row /= n as f64;
            }
        }
        if sums.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "klm class-mean softmax".into(),
            });
        }
        for mut row in sums.rows_mut() {
            let t: f64 = row.sum();
            row /= t;
        }
        let (full, partial): (Vec<usize>, Vec<usize>) =
            (0..c).partition(|&k| sums.row(k).iter().all(|&q| q > 0.0));
        // ln q, with the largest entry of each template from the sum of the others (it may lie
        // within rounding of 1, where `q.ln()` would be 0).
        let log_q = |k: usize, i: usize| {
            let row = sums.row(k);
            let top = row
                .iter()
                .enumerate()
                .fold(0, |b, (j, &v)| if v > row[b] { j } else { b });
            if i == top {
                let others: f64 = row
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != top)
                    .map(|(_, v)| v)
                    .sum();
                (-others).ln_1p()
            } else {
                row[i].ln()
            }
        };
        let log_full_t = Array2::from_shape_fn((c, full.len()), |(i, k)| log_q(full[k], i));
        Ok(Box::new(KlmScorer {
            log: self.log,
            templates: sums,
            log_full_t,
            partial,
            head: head.clone(),
        }))
    }
}

impl Scorer for KlmScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let (n, c) = (x.len(), self.head.num_classes());
        let mut out = Array1::<f32>::zeros(n);
        let mut start = 0;
        while start < n {
            let end = (start + BLOCK_ROWS).min(n);
            let rows = end - start;
            let mut p = Array2::<f64>::zeros((rows, c));
            let mut neg_entropy = vec![0.0f64; rows];
            for ((mut dst, z), h) in p
                .rows_mut()
                .into_iter()
                .zip(x.logits.slice(s![start..end, ..]).rows())
                .zip(neg_entropy.iter_mut())
            {
                let lp = log_softmax(&z.to_vec());
                *h = lp.iter().map(|&l| l.exp() * l).sum();
                dst.iter_mut().zip(&lp).for_each(|(d, &l)| *d = l.exp());
            }
            // KL(p ‖ q) = Σ p log p − Σ p log q for full-support templates: one GEMM per block.
            let cross = matmul_f64(p.view(), self.log_full_t.view());
            for (i, pr) in p.rows().into_iter().enumerate() {
                let neg_entropy = neg_entropy[i];
                let mut best = cross
                    .row(i)
                    .iter()
                    .map(|&cr| (neg_entropy - cr).max(0.0))
                    .fold(f64::INFINITY, f64::min);
                let ps = pr.as_slice().expect("fresh array rows are contiguous");
                for &k in &self.partial {
                    let q = self.templates.row(k);
                    best = best.min(kl_divergence(ps, q.as_slice().expect("contiguous rows")));
                }
                out[start + i] = if self.log {
                    -best.max(f64::MIN_POSITIVE).ln() as f32
                } else {
                    -best as f32
                };
            }
            start = end;
        }
        check_scores("klm", out)
    }
}

impl DetectorParams for Klm {
    const FITS_ON_VAL: bool = true;
    const NAME: &'static str = "klm";
    const ABOUT: &'static str =
        "KL matching to class-mean softmax, fit on ID val (Hendrycks et al., ICML'22)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn klm_matches_hand_computation() {
        // Three classes; fit rows predicted 0, 0 and 1; class 2 is never predicted (one-hot).
        let head = Head::new(Array2::eye(3), Array1::zeros(3)).unwrap();
        let fit = Features::with_head(
            array![[2.0f32, 0.0, 0.0], [1.0, 0.0, 0.5], [0.0, 3.0, 1.0]],
            &head,
            None,
        )
        .unwrap();
        let test =
            Features::with_head(array![[0.5f32, 0.2, 0.1], [0.0, 0.0, 0.0]], &head, None).unwrap();
        let s = Klm { log: false }
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&test)
            .unwrap();
        let sm = |v: [f64; 3]| {
            let e: Vec<f64> = v.iter().map(|x| x.exp()).collect();
            let t: f64 = e.iter().sum();
            e.into_iter().map(|x| x / t).collect::<Vec<_>>()
        };
        let (a, b, c) = (
            sm([2.0, 0.0, 0.0]),
            sm([1.0, 0.0, 0.5]),
            sm([0.0, 3.0, 1.0]),
        );
        let q0: Vec<f64> = (0..3).map(|i| (a[i] + b[i]) / 2.0).collect();
        let kl =
            |p: &[f64], q: &[f64]| -> f64 { p.iter().zip(q).map(|(x, y)| x * (x / y).ln()).sum() };
        for (row, got) in [[0.5, 0.2, 0.1], [0.0, 0.0, 0.0]].iter().zip(s.iter()) {
            let p = sm(*row);
            let want = -kl(&p, &q0).min(kl(&p, &c));
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        // The default log form is −ln KL of the same divergences.
        let l = Klm::default()
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&test)
            .unwrap();
        for (a, b) in l.iter().zip(s.iter()) {
            let want = -(-(*b as f64)).ln();
            assert!(
                (*a as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
                "{a} vs {want}"
            );
        }
        // The one-hot template of class 2 gives +inf and never wins.
        assert!(kl_divergence(&[0.5, 0.5, 0.0], &[0.0, 0.0, 1.0]).is_infinite());
        // SciPy renormalises both arguments.
        let k1 = kl_divergence(&[1.0, 3.0], &[2.0, 2.0]);
        let k2 = kl_divergence(&[0.25, 0.75], &[0.5, 0.5]);
        assert!((k1 - k2).abs() < 1e-15 && (k2 - 0.130812035941137).abs() < 1e-12);
    }

    #[test]
    fn klm_keeps_confident_samples_apart() {
        // Logit gaps near 300: 1 − p ≈ 1e-130 rounds away in f64, the divergences are ≈ 1e-130.
        let head = Head::new(Array2::eye(2), Array1::zeros(2)).unwrap();
        let fit = Features::with_head(array![[300.0f32, 0.0], [310.0, 0.0]], &head, None).unwrap();
        let test = Features::with_head(array![[290.0f32, 0.0], [320.0, 0.0]], &head, None).unwrap();
        let s = Klm::default()
            .fit(&(&fit).into(), &head)
            .unwrap()
            .score(&test)
            .unwrap();
        // q_0 = (1 − a, a) with a = (e^-300 + e^-310)/2; p = (1 − e^-g, e^-g):
        // KL ≈ e^-g (ln e^-g − ln a) + (a − e^-g) = e^-g (−g − ln a − 1) + a.
        let ln_a = -300.0 + ((1.0 + (-10.0f64).exp()) / 2.0).ln();
        for (got, g) in s.iter().zip([290.0f64, 320.0]) {
            let t = (-g - ln_a).exp(); // e^-g / a
            let kl_over_a = t * (-g - ln_a - 1.0) + 1.0;
            let want = -(ln_a + kl_over_a.ln());
            assert!(
                (*got as f64 - want).abs() < 1e-3,
                "gap {g}: {got} vs {want}"
            );
        }
        assert!(s[0] != s[1]);
    }
}
