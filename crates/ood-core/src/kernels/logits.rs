//! Row-wise functions of logit matrices.
//!
//! [`energies`] is the energy score `lse(z)` of every row of a logit matrix, computed with
//! [`logsumexp`]. Used by the detectors that reshape features or weights and then score the
//! recomputed logits with energy: [`ReAct`](crate::detectors::ReAct),
//! [`Vra`](crate::detectors::Vra), [`Dice`](crate::detectors::Dice),
//! [`Ash`](crate::detectors::Ash) and [`Scale`](crate::detectors::Scale).

use crate::detector::logsumexp;
use ndarray::{Array1, Array2, ArrayView2};

/// `lse` of every row of a logit matrix.
pub(crate) fn energies(z: &Array2<f32>) -> Array1<f32> {
    energies_at(z.view(), 1.0)
}

/// `T · lse(z / T)` of every row (Energy with a temperature, RankFeat).
pub(crate) fn energies_at(z: ArrayView2<'_, f32>, t: f32) -> Array1<f32> {
    z.rows()
        .into_iter()
        .map(|r| {
            let scaled: Vec<f32> = r.iter().map(|&v| v / t).collect();
            (t as f64 * logsumexp(&scaled)) as f32
        })
        .collect()
}
