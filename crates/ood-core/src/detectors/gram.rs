//! Gram: deviations of Gram-matrix statistics of every convolution from the per-class ranges
//! seen on the training data (Sastry & Oore, "Detecting Out-of-Distribution Examples with Gram
//! Matrices", ICML 2020, arXiv:1912.12510); OpenOOD key `gram`.
//!
//! The network part is the probe [`Probe::Gram`] (`ood extract --with gram`, or `ood bench` by
//! itself), needed on the fit data and on every scored set: per convolution `l` (raw output
//! before BatchNorm, execution order) and power `p ∈ 1..=P`, the vector
//! `G_{l,p} = sign(r)·|r|^{1/p}`, `r` = row sums of `Fᵖ(Fᵖ)ᵀ` of the `(channels, h·w)` map `F`.
//!
//! Fit, on labelled ID-train data (OpenOOD: the train set, ground-truth labels): per class, a
//! seeded random `⌊0.1·L⌋` of its `L` rows is held out (OpenOOD draws them with an unseeded
//! `random.sample`), the others give `min_{l,p,c}` and `max_{l,p,c}` per channel; the held-out
//! rows of every class give layer `l`'s normaliser `η_l` = mean over them of
//! `Σ_p δ(min_{l,p,c}, max_{l,p,c}, G_{l,p})`, with
//! `δ(m, M, x) = Σ_j relu(m_j − x_j)/|m_j + 10⁻⁶| + relu(x_j − M_j)/|M_j + 10⁻⁶|`.
//! Score with `ĉ = argmax z` and `π = max softmax(z)`:
//! `s = −(Σ_l Σ_p δ(min_{l,p,ĉ}, max_{l,p,ĉ}, G_{l,p}) / η_l) / π`. Higher = more
//! in-distribution; a sample inside every range scores exactly 0, so such samples tie by
//! construction (as in the paper). Defaults `powers = 5` (OpenOOD `gram.yml`; its grid has one
//! candidate), `seed = 0`. Every class needs a fit row, and the held-out rows must leave some
//! layer's range (else `η_l = 0` and the score is undefined: an error naming the layer).

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores, softmax};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head, argmax};
use crate::probes::Probe;
use ndarray::{Array1, ArrayView1};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// Gram-matrix deviation from per-class ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gram {
    /// Powers `1..=powers` of the feature maps (5).
    pub powers: u32,
    /// Seed of the per-class held-out split.
    pub seed: u64,
}

impl Default for Gram {
    fn default() -> Self {
        Gram { powers: 5, seed: 0 }
    }
}

impl Gram {
    /// The network computation this detector reads (fit and score).
    pub fn probe(&self) -> Probe {
        Probe::Gram {
            powers: self.powers,
        }
    }
}

/// `δ(m, M, x)`.
fn delta(min: &[f32], max: &[f32], x: ArrayView1<'_, f32>) -> f64 {
    let mut d = 0.0f64;
    for ((&m, &mx), &v) in min.iter().zip(max).zip(x) {
        let (m, mx, v) = (m as f64, mx as f64, v as f64);
        d += (m - v).max(0.0) / (m + 1e-6).abs() + (v - mx).max(0.0) / (mx + 1e-6).abs();
    }
    d
}

#[derive(Debug)]
struct GramScorer {
    probe: Probe,
    powers: usize,
    /// Per layer: width (powers · channels), then per class `(min, max)` of that width.
    ranges: Vec<Vec<(Vec<f32>, Vec<f32>)>>,
    /// `η_l` per layer.
    norms: Vec<f64>,
    head: Head,
}

impl GramScorer {
    /// `Σ_p δ` of one row's layer-`l` values against class `c`'s ranges.
    fn layer_delta(&self, l: usize, c: usize, x: ArrayView1<'_, f32>) -> f64 {
        let (min, max) = &self.ranges[l][c];
        let ch = min.len() / self.powers;
        (0..self.powers)
            .map(|p| {
                let r = p * ch..(p + 1) * ch;
                delta(&min[r.clone()], &max[r.clone()], x.slice(ndarray::s![r]))
            })
            .sum()
    }
}

impl Detector for Gram {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        if self.powers == 0 {
            return Err(Error::InvalidParameter(
                "gram powers must be at least 1".into(),
            ));
        }
        check_fit_data(data, head, 1)?;
        if !data.has_labels() {
            return Err(Error::MissingLabels {
                detector: Gram::NAME.into(),
            });
        }
        let c = head.num_classes();
        let probe = self.probe();
        // Labels first: the held-out split is drawn per class.
        let mut labels = Vec::with_capacity(data.len());
        data.for_each_chunk(4096, |f| {
            labels.extend(f.labels.as_ref().expect("labelled").iter().copied());
            Ok(())
        })?;
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); c];
        for (i, &y) in labels.iter().enumerate() {
            if y < 0 || y as usize >= c {
                return Err(Error::InvalidParameter(format!(
                    "gram: fit row {i} has label {y}, outside 0..{c}"
                )));
            }
            by_class[y as usize].push(i);
        }
        let mut held_out = vec![false; labels.len()];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed);
        for (k, rows) in by_class.iter().enumerate() {
            if rows.is_empty() {
                return Err(Error::InvalidParameter(format!(
                    "gram: class {k} has no fit row (every class needs its ranges)"
                )));
            }
            let m = rows.len() / 10;
            for j in rand::seq::index::sample(&mut rng, rows.len(), m) {
                held_out[rows[j]] = true;
            }
        }
        // Ranges from the kept rows.
        let mut ranges: Vec<Vec<(Vec<f32>, Vec<f32>)>> = Vec::new();
        let mut start = 0usize;
        data.for_each_chunk(4096, |f| {
            let parts = f.probe_parts(&probe, Gram::NAME)?;
            if ranges.is_empty() {
                for part in &parts {
                    if part.ncols() % self.powers as usize != 0 {
                        return Err(Error::InvalidParameter(format!(
                            "gram: a '{}' part has {} columns, not a multiple of powers = {}",
                            probe.tensor_name(),
                            part.ncols(),
                            self.powers
                        )));
                    }
                    let w = part.ncols();
                    ranges.push(vec![
                        (vec![f32::INFINITY; w], vec![f32::NEG_INFINITY; w]);
                        c
                    ]);
                }
            } else if parts.len() != ranges.len() {
                return Err(Error::dim("gram layers", ranges.len(), parts.len()));
            }
            for r in 0..f.len() {
                let i = start + r;
                if held_out[i] {
                    continue;
                }
                let y = labels[i] as usize;
                for (part, layer) in parts.iter().zip(ranges.iter_mut()) {
                    let (min, max) = &mut layer[y];
                    for ((lo, hi), &v) in min.iter_mut().zip(max.iter_mut()).zip(part.row(r)) {
                        *lo = lo.min(v);
                        *hi = hi.max(v);
                    }
                }
            }
            start += f.len();
            Ok(())
        })?;
        let mut scorer = GramScorer {
            probe,
            powers: self.powers as usize,
            ranges,
            norms: Vec::new(),
            head: head.clone(),
        };
        // Normalisers from the held-out rows.
        let layers = scorer.ranges.len();
        let mut sums = vec![0.0f64; layers];
        let mut count = 0usize;
        let mut start = 0usize;
        data.for_each_chunk(4096, |f| {
            let parts = f.probe_parts(&probe, Gram::NAME)?;
            for r in 0..f.len() {
                let i = start + r;
                if !held_out[i] {
                    continue;
                }
                count += 1;
                for (l, part) in parts.iter().enumerate() {
                    sums[l] += scorer.layer_delta(l, labels[i] as usize, part.row(r));
                }
            }
            start += f.len();
            Ok(())
        })?;
        if count == 0 {
            return Err(Error::TooFewSamples {
                what: "gram's held-out rows (10% of each class: a class needs 10 fit rows)".into(),
                need: 10,
                got: labels.len(),
            });
        }
        scorer.norms = sums.iter().map(|s| s / count as f64).collect();
        if let Some(l) = scorer
            .norms
            .iter()
            .position(|&n| n <= 0.0 || !n.is_finite())
        {
            return Err(Error::InvalidParameter(format!(
                "gram: the held-out fit rows never leave layer {l}'s ranges, so its normaliser is 0"
            )));
        }
        Ok(Box::new(scorer))
    }
}

impl Scorer for GramScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let parts = x.probe_parts(&self.probe, Gram::NAME)?;
        if parts.len() != self.ranges.len()
            || parts
                .iter()
                .zip(&self.ranges)
                .any(|(p, r)| p.ncols() != r[0].0.len())
        {
            return Err(Error::InvalidParameter(format!(
                "gram: the scored '{}' parts do not have the fitted layers' shapes",
                self.probe.tensor_name()
            )));
        }
        let s: Array1<f32> = x
            .logits
            .rows()
            .into_iter()
            .enumerate()
            .map(|(i, z)| {
                let z = z.to_vec();
                let c = argmax(&z);
                let conf = softmax(&z)[c];
                let dev: f64 = parts
                    .iter()
                    .enumerate()
                    .map(|(l, p)| self.layer_delta(l, c, p.row(i)) / self.norms[l])
                    .sum();
                (-dev / conf) as f32
            })
            .collect();
        check_scores(Gram::NAME, s)
    }
}

impl DetectorParams for Gram {
    const NAME: &'static str = "gram";
    const ABOUT: &'static str = "deviation of per-layer Gram-matrix statistics from per-class training ranges, over MSP (Sastry & Oore, ICML'20)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn gram_matches_hand_computation() {
        // One layer, powers = 1, one channel, one class; 20 fit rows with G = 1..=20: the
        // seeded held-out pair is found, ranges come from the other 18 rows.
        let head = Head::new(array![[1.0f32]], array![0.0]).unwrap();
        let emb = ndarray::Array2::from_shape_fn((20, 1), |(i, _)| i as f32);
        let mut fit = Features::with_head(emb.clone(), &head, Some(vec![0; 20])).unwrap();
        // A seed whose held-out pair includes an end of the range (so that η > 0).
        let seed = (0..100u64)
            .find(|&s| {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s);
                let held = rand::seq::index::sample(&mut rng, 20, 2).into_vec();
                held.contains(&0) || held.contains(&19)
            })
            .unwrap();
        let det = Gram { powers: 1, seed };
        let g = emb.mapv(|v| v + 1.0);
        fit.set_probe_part(&det.probe(), 0, g.clone()).unwrap();
        let sc = det.fit(&(&fit).into(), &head).unwrap();
        // Recompute the split as the fit does.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let held: Vec<usize> = rand::seq::index::sample(&mut rng, 20, 2).into_vec();
        let kept: Vec<f64> = (0..20)
            .filter(|i| !held.contains(i))
            .map(|i| i as f64 + 1.0)
            .collect();
        let lo = kept.iter().cloned().fold(f64::MAX, f64::min);
        let hi = kept.iter().cloned().fold(f64::MIN, f64::max);
        let d =
            |v: f64| (lo - v).max(0.0) / (lo + 1e-6).abs() + (v - hi).max(0.0) / (hi + 1e-6).abs();
        let eta = held.iter().map(|&i| d(i as f64 + 1.0)).sum::<f64>() / 2.0;
        assert!(eta > 0.0, "the held-out rows leave the range: {held:?}");
        // One class: π = 1. A test row at G = 30 scores −δ(30)/η, one inside scores 0.
        let mut x = Features::with_head(array![[0.0f32], [0.0]], &head, None).unwrap();
        x.set_probe_part(&det.probe(), 0, array![[30.0f32], [lo as f32]])
            .unwrap();
        let s = sc.score(&x).unwrap();
        let want = -d(30.0) / eta;
        assert!(
            (s[0] as f64 - want).abs() < 1e-5 * want.abs(),
            "{} vs {want}",
            s[0]
        );
        assert_eq!(s[1], 0.0);
    }
}
