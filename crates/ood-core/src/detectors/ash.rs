//! ASH: activation shaping (Djurisic, Bozanic, Ashok & Liu, "Extremely Simple Activation Shaping
//! for Out-of-Distribution Detection", ICLR 2023, arXiv:2209.09858,
//! <https://arxiv.org/abs/2209.09858>); OpenOOD key `ash` (which uses ASH-B).
//!
//! With `D` the feature dimension, `k = D − round_half_even(D · p / 100)` (e.g. `D = 512, p = 90`
//! gives `k = 51`; `D = 2048` gives 205), `S = Σ_j h_j`, and the top-`k` entries of `h`:
//! * `b` (default, OpenOOD): the top-`k` entries become `S / k`, the rest 0;
//! * `p`: the top-`k` entries are kept, the rest 0;
//! * `s`: prune as `p`, then multiply the pruned vector by `exp(S / S_pruned)`;
//! * `rand`: the top-`k` entries are replaced by Uniform(0, 10) draws, the rest 0.
//!
//! Score: `lse(W h' + b)`. Higher = more in-distribution. Defaults `p = 90`, variant `b`
//! (OpenOOD `ash.yml`); sweep `p ∈ {65, 70, 75, 80, 85, 90, 95}` (same variant).
//!
//! Traps handled:
//! * Tie order of the top-`k` (implementation-defined in PyTorch): here the order is value
//!   descending, then **lower feature index first** (so among tied zeros the first indices are
//!   kept); `-0.0` equals `+0.0`. The golden reference uses `argsort(-h, kind="stable")`.
//! * `k = 0` (for `p` close to 100) is an `Err`, not a division by zero.
//! * ASH-S on an all-zero feature vector: `S / S_pruned` is `0/0`; the shaped vector is the zero
//!   vector (it is zero whatever the factor). A zero `S_pruned` with non-zero entries (only possible
//!   with negative features) gives a non-finite score and an `Err`.
//! * ASH-rand is deterministic: each row's draws come from a ChaCha8 generator seeded with `seed`
//!   and a hash of the row's bits, so scores do not depend on batch composition or order. It
//!   cannot reproduce PyTorch's `rand_like` draws.
//!
//! OpenOOD applies ASH to the pooled penultimate vector (viewed as `D×1×1`), which is what this
//! file does: it needs no fit statistics. Features are expected to be non-negative (post-ReLU).

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::Result;
use crate::features::{Features, FitData, Head};
use crate::kernels::logits::energies;
use crate::kernels::top_k::{kept_count, top_k_indices};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Which activation-shaping rule to apply to the top-`k` activations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AshVariant {
    /// ASH-B: binarise the top-`k` to `S / k` (OpenOOD's choice).
    #[default]
    B,
    /// ASH-P: prune all but the top-`k`.
    P,
    /// ASH-S: prune, then scale by `exp(S_before / S_after)`.
    S,
    /// ASH-rand: top-`k` replaced by Uniform(0, 10) draws (seeded, see the module doc).
    Rand,
}

/// Activation shaping, then energy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ash {
    /// Pruning percentile `p` in `[0, 100)` (90 in OpenOOD).
    pub percentile: f64,
    /// Shaping rule (`b` in OpenOOD).
    pub variant: AshVariant,
    /// Seed of the `rand` variant (unused by the others).
    pub seed: u64,
}

impl Default for Ash {
    fn default() -> Self {
        Ash {
            percentile: 90.0,
            variant: AshVariant::B,
            seed: 0,
        }
    }
}

fn row_seed(seed: u64, row: &[f32]) -> u64 {
    // FNV-1a over the bits of the row, mixed with the seed.
    let mut hsh: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for v in row {
        for byte in (v + 0.0).to_bits().to_le_bytes() {
            hsh ^= byte as u64;
            hsh = hsh.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hsh
}

/// Shapes one feature vector in place of `out`.
fn shape(variant: AshVariant, seed: u64, h: &[f32], k: usize, out: &mut [f32]) {
    let top = top_k_indices(h, k);
    let total: f64 = h.iter().map(|&v| v as f64).sum();
    out.fill(0.0);
    match variant {
        AshVariant::B => {
            let fill = (total / k as f64) as f32;
            for &i in &top {
                out[i] = fill;
            }
        }
        AshVariant::P | AshVariant::S => {
            for &i in &top {
                out[i] = h[i];
            }
            if variant == AshVariant::S && out.iter().any(|&v| v != 0.0) {
                let kept: f64 = top.iter().map(|&i| h[i] as f64).sum();
                let factor = (total / kept).exp() as f32;
                out.iter_mut().for_each(|v| *v *= factor);
            }
        }
        AshVariant::Rand => {
            let mut rng = ChaCha8Rng::seed_from_u64(row_seed(seed, h));
            for &i in &top {
                out[i] = rng.gen_range(0.0f32..10.0);
            }
        }
    }
}

#[derive(Debug)]
struct AshScorer {
    k: usize,
    variant: AshVariant,
    seed: u64,
    head: Head,
}

impl Detector for Ash {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        let k = kept_count("ash", head.dim(), self.percentile)?;
        check_fit_data(data, head, 0)?;
        Ok(Box::new(AshScorer {
            k,
            variant: self.variant,
            seed: self.seed,
            head: head.clone(),
        }))
    }
}

impl Scorer for AshScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let mut shaped = Array2::<f32>::zeros(x.embeddings.raw_dim());
        for (h, mut out) in x.embeddings.rows().into_iter().zip(shaped.rows_mut()) {
            let h = h.to_vec();
            shape(
                self.variant,
                self.seed,
                &h,
                self.k,
                out.as_slice_mut().expect("fresh array rows are contiguous"),
            );
        }
        let z = self.head.logits(shaped.view())?;
        check_scores("ash", energies(&z))
    }
}

impl DetectorParams for Ash {
    const NAME: &'static str = "ash";
    const ABOUT: &'static str =
        "energy after activation shaping, ASH-B by default (Djurisic et al., ICLR'23)";
    fn sweep(&self) -> Vec<Self> {
        [65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0]
            .into_iter()
            .map(|percentile| Ash {
                percentile,
                ..self.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn ash_variants_match_hand_computation() {
        // D = 4, p = 50: k = 2. h = [1, 3, 0, 2]: top-2 = indices 1, 3; S = 6.
        let w = array![
            [1.0f32, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 1.0],
            [0.0, 0.0, 1.0, 0.0]
        ];
        let head = Head::new(w, array![0.0, 0.0, 0.5]).unwrap();
        let x = Features::with_head(array![[1.0f32, 3.0, 0.0, 2.0]], &head, None).unwrap();
        let lse = |z: [f64; 3]| z.iter().map(|v| v.exp()).sum::<f64>().ln();
        let run = |variant| {
            Ash {
                percentile: 50.0,
                variant,
                seed: 0,
            }
            .fit(&(&x).into(), &head)
            .unwrap()
            .score(&x)
            .unwrap()[0] as f64
        };
        // B: h' = [0, 3, 0, 3] → z = [0, 6, 0.5].
        assert!((run(AshVariant::B) - lse([0.0, 6.0, 0.5])).abs() < 1e-5);
        // P: h' = [0, 3, 0, 2] → z = [0, 5, 0.5].
        assert!((run(AshVariant::P) - lse([0.0, 5.0, 0.5])).abs() < 1e-5);
        // S: h' = [0, 3, 0, 2] · exp(6/5) → z = [0, 5·e^1.2, 0.5].
        let e = (1.2f64).exp();
        assert!((run(AshVariant::S) - lse([0.0, 5.0 * e, 0.5])).abs() < 1e-4);
        // rand: the same row gives the same draws; the draws lie in [0, 10).
        let r = run(AshVariant::Rand);
        assert_eq!(r, run(AshVariant::Rand));
        assert!(r > lse([0.0, 0.0, 0.5]) && r < lse([0.0, 20.0, 0.5]));
    }

    #[test]
    fn ash_s_of_a_zero_vector_is_zero() {
        let head = Head::new(array![[1.0f32, 1.0], [0.0, 1.0]], array![0.0, 1.0]).unwrap();
        let x = Features::with_head(array![[0.0f32, 0.0]], &head, None).unwrap();
        let s = Ash {
            percentile: 50.0,
            variant: AshVariant::S,
            seed: 0,
        }
        .fit(&(&x).into(), &head)
        .unwrap()
        .score(&x)
        .unwrap();
        assert!((s[0] as f64 - (1.0 + 1f64.exp()).ln()).abs() < 1e-6);
    }
}
