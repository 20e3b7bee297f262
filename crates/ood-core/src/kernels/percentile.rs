//! Exact NumPy-style percentiles of a streamed multiset of f32 values.
//!
//! [`percentile`] reproduces NumPy's `percentile(values, p)` with the default "linear" method
//! without holding the values: two streaming passes build a 65,536-bucket histogram of the high
//! 16 bits of an order-preserving key of each f32 ([`key`]), then a histogram of the low 16 bits
//! inside the one or two buckets that hold the needed order statistics (memory: a few histograms,
//! about 1.5 MiB, whatever the number of values). [`feature_percentile`] applies it to every
//! feature value of the fit data. Used by [`ReAct`](crate::detectors::ReAct) (clip threshold over
//! the fit activations), [`Vra`](crate::detectors::Vra) (its two clip thresholds) and
//! [`Dice`](crate::detectors::Dice) (threshold over the contribution matrix).

use crate::error::{Error, Result};
use crate::features::{DEFAULT_CHUNK_ROWS, FitData};

/// Order-preserving map from an f32 to a u32 (`-0.0` is mapped like `+0.0`).
fn key(v: f32) -> u32 {
    let b = (v + 0.0).to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

fn unkey(k: u32) -> f32 {
    if k & 0x8000_0000 != 0 {
        f32::from_bits(k & 0x7fff_ffff)
    } else {
        f32::from_bits(!k)
    }
}

/// Finds the bucket holding the element of rank `r` (0-based) and the rank inside that bucket.
fn locate(hist: &[u64], mut r: u64) -> (usize, u64) {
    for (i, &c) in hist.iter().enumerate() {
        if r < c {
            return (i, r);
        }
        r -= c;
    }
    unreachable!("rank is below the total count")
}

/// NumPy `percentile(values, p)` with the default "linear" method, exact, over a multiset that
/// `visit` streams (it is called twice and must produce the same values both times). Memory is
/// independent of the number of values. Errors on an empty multiset, a `p` outside `[0, 100]` or
/// a non-finite value.
pub(crate) fn percentile<F>(p: f64, mut visit: F) -> Result<f64>
where
    F: FnMut(&mut dyn FnMut(f32)) -> Result<()>,
{
    if !(0.0..=100.0).contains(&p) {
        return Err(Error::InvalidParameter(format!(
            "percentile must be in [0, 100], got {p}"
        )));
    }
    let mut hist = vec![0u64; 1 << 16];
    let mut n = 0u64;
    let mut finite = true;
    visit(&mut |v| {
        finite &= v.is_finite();
        hist[(key(v) >> 16) as usize] += 1;
        n += 1;
    })?;
    if !finite {
        return Err(Error::NonFinite {
            what: "values of a percentile".into(),
        });
    }
    if n == 0 {
        return Err(Error::TooFewSamples {
            what: "percentile".into(),
            need: 1,
            got: 0,
        });
    }
    // NumPy's `_compute_virtual_index` for alpha = beta = 1, then its index clipping.
    let q = p / 100.0;
    let vi = n as f64 * q + (1.0 - q) - 1.0;
    let (lo, hi, gamma) = if vi >= (n - 1) as f64 {
        (n - 1, n - 1, 0.0)
    } else if vi < 0.0 {
        (0, 0, 0.0)
    } else {
        let f = vi.floor();
        (f as u64, f as u64 + 1, vi - f)
    };
    let (b_lo, r_lo) = locate(&hist, lo);
    let (b_hi, r_hi) = locate(&hist, hi);
    let mut h_lo = vec![0u64; 1 << 16];
    let mut h_hi = vec![0u64; 1 << 16];
    visit(&mut |v| {
        let k = key(v);
        let b = (k >> 16) as usize;
        if b == b_lo {
            h_lo[(k & 0xffff) as usize] += 1;
        }
        if b == b_hi {
            h_hi[(k & 0xffff) as usize] += 1;
        }
    })?;
    let a = unkey(((b_lo as u32) << 16) | locate(&h_lo, r_lo).0 as u32) as f64;
    let b = unkey(((b_hi as u32) << 16) | locate(&h_hi, r_hi).0 as u32) as f64;
    // NumPy's `_lerp`.
    let diff = b - a;
    Ok(if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    })
}

/// The percentile of every feature value of the fit data, streamed in chunks.
pub(crate) fn feature_percentile(data: &FitData<'_>, p: f64) -> Result<f64> {
    percentile(p, |f| {
        data.for_each_chunk(DEFAULT_CHUNK_ROWS, |chunk| {
            chunk.embeddings.iter().for_each(|&v| f(v));
            Ok(())
        })
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pct(values: &[f32], p: f64) -> f64 {
        percentile(p, |f| {
            values.iter().for_each(|&v| f(v));
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn react_percentile_matches_numpy_linear() {
        // np.percentile([3, 1, 4, 1, 5, 9, 2, 6], p) for p = 0, 10, 50, 90, 100, 37.5.
        let v = [3.0f32, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        for (p, want) in [
            (0.0, 1.0),
            (10.0, 1.0),
            (50.0, 3.5),
            (90.0, 6.9),
            (100.0, 9.0),
            (37.5, 2.625),
        ] {
            assert!((pct(&v, p) - want).abs() < 1e-12, "p={p}: {}", pct(&v, p));
        }
        // Negative values, zeros of both signs, values sharing a high-16-bit bucket.
        let w = [-2.5f32, -0.0, 0.0, 1.0, 1.0000001, -1e-30, 7.25];
        assert!((pct(&w, 50.0) - 0.0).abs() < 1e-12);
        assert!((pct(&w, 75.0) - (1.0 + 0.5 * 1.1920928955078125e-7)).abs() < 1e-12);
        assert!((pct(&w, 80.0) - (1.0 + 0.8 * 1.1920928955078125e-7)).abs() < 1e-12);
        assert!((pct(&w, 5.0) - (-2.5 + 0.3 * 2.5)).abs() < 1e-9);
        assert!((pct(&[4.0], 90.0) - 4.0).abs() < 1e-12);
        assert!(percentile(50.0, |_| Ok(())).is_err());
        assert!(
            percentile(101.0, |f| {
                f(1.0);
                Ok(())
            })
            .is_err()
        );
    }

    /// NumPy's linear percentile by sorting everything (the definition).
    pub(crate) fn naive(values: &[f32], p: f64) -> f64 {
        let mut v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let q = p / 100.0;
        let vi = n as f64 * q + (1.0 - q) - 1.0;
        if vi >= (n - 1) as f64 {
            return v[n - 1];
        }
        let lo = vi.floor();
        let (a, b, g) = (v[lo as usize], v[lo as usize + 1], vi - lo);
        if g >= 0.5 {
            b - (b - a) * (1.0 - g)
        } else {
            a + (b - a) * g
        }
    }

    #[test]
    fn react_percentile_matches_sorting_on_random_multisets() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for trial in 0..25 {
            let n = rng.gen_range(1..400);
            // Mixtures of ReLU zeros, duplicates, negatives, tiny and large magnitudes.
            let values: Vec<f32> = (0..n)
                .map(|_| match rng.gen_range(0..5) {
                    0 => 0.0,
                    1 => rng.gen_range(-3.0f32..3.0),
                    2 => (rng.gen_range(0..4) as f32) * 0.25,
                    3 => rng.gen_range(0.0f32..1e-3),
                    _ => rng.gen_range(-1e4f32..1e4),
                })
                .collect();
            for p in [
                0.0,
                1.0,
                50.0,
                85.0,
                90.0,
                99.0,
                100.0,
                rng.gen_range(0.0..100.0),
            ] {
                let (got, want) = (pct(&values, p), naive(&values, p));
                assert!(
                    got == want || (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                    "trial {trial}, n {n}, p {p}: {got} vs {want}"
                );
            }
        }
    }
}
