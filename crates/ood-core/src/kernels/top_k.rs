//! Top-k selection of activations (ASH, SCALE, LTS): how many activations a pruning percentile keeps,
//! and which ones.

use crate::error::{Error, Result};

/// `k = D − round_half_even(D·p/100)`; an `Err` when `p ∉ [0, 100]` or `k = 0`.
pub(crate) fn kept_count(method: &str, dim: usize, p: f64) -> Result<usize> {
    if !(0.0..=100.0).contains(&p) {
        return Err(Error::InvalidParameter(format!(
            "{method} percentile must be in [0, 100), got {p}"
        )));
    }
    let pruned = (dim as f64 * p / 100.0).round_ties_even() as usize;
    let k = dim.saturating_sub(pruned);
    if k == 0 {
        return Err(Error::InvalidParameter(format!(
            "{method} percentile {p} keeps no activation of a {dim}-dimensional feature (k = 0)"
        )));
    }
    Ok(k)
}

/// Indices of the `k` largest entries, value descending then index ascending (`-0.0 == +0.0`).
pub(crate) fn top_k_indices(h: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..h.len()).collect();
    let cmp = |&a: &usize, &b: &usize| {
        (h[b] + 0.0)
            .total_cmp(&(h[a] + 0.0))
            .then_with(|| a.cmp(&b))
    };
    if k < idx.len() {
        idx.select_nth_unstable_by(k, cmp);
        idx.truncate(k);
    }
    idx.sort_unstable_by(cmp);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_count_uses_round_half_even() {
        assert_eq!(kept_count("ash", 512, 90.0).unwrap(), 51);
        assert_eq!(kept_count("ash", 2048, 90.0).unwrap(), 205);
        // 10 · 65 / 100 = 6.5 rounds to 6 (half to even), so k = 4; 10 · 75 / 100 = 7.5 → 8, k = 2.
        assert_eq!(kept_count("ash", 10, 65.0).unwrap(), 4);
        assert_eq!(kept_count("ash", 10, 75.0).unwrap(), 2);
        assert!(kept_count("ash", 10, 96.0).is_err());
        assert!(kept_count("ash", 10, -1.0).is_err());
    }

    #[test]
    fn top_k_breaks_ties_by_lower_index() {
        assert_eq!(
            top_k_indices(&[0.0, 2.0, 0.0, 2.0, -0.0, 1.0], 4),
            vec![1, 3, 5, 0]
        );
        assert_eq!(top_k_indices(&[0.0, -0.0, 0.0], 2), vec![0, 1]);
        assert_eq!(top_k_indices(&[3.0, 1.0], 2), vec![0, 1]);
    }
}
