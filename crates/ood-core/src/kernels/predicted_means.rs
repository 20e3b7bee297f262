//! Streamed per-class mean features, grouped by the **predicted** class (the first arg-max of
//! each fit row's logits), over the rows a detector selects (SHE: rows whose label is also their
//! prediction; CARef/CADRef: every row), or the mean logit vectors (OpenMax). One pass, one chunk in memory, sums in f64.
//! [`score_by_prediction`] is the matching scoring loop: each query row with its predicted class.

use crate::detector::{check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{DEFAULT_CHUNK_ROWS, Features, FitData, Head};
use ndarray::{Array1, Array2, ArrayView1};

/// Checks `x` against `head` and scores every row as `score(predicted class, features,
/// logits)` in f64; the scores must be finite (an error named `detector` otherwise).
pub(crate) fn score_by_prediction(
    x: &Features,
    head: &Head,
    detector: &str,
    score: impl Fn(usize, ArrayView1<'_, f32>, ArrayView1<'_, f32>) -> f64,
) -> Result<Array1<f32>> {
    check_input(x, head)?;
    let s = x
        .predictions()
        .into_iter()
        .zip(x.embeddings.rows())
        .zip(x.logits.rows())
        .map(|((c, h), z)| score(c, h, z) as f32)
        .collect();
    check_scores(detector, s)
}

/// What [`predicted_class_means`] averages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rows {
    /// The `(n, d)` features.
    Features,
    /// The `(n, c)` logits (OpenMax's mean activation vectors).
    Logits,
}

/// `(c, width)` mean fit feature (or logit vector, `rows`) of every predicted class over the rows
/// for which `keep(chunk, row, predicted class)` is true (it may also read the row, e.g. to
/// accumulate logit statistics, or fail). A class with no kept row is an error `what(class)`
/// explains.
pub(crate) fn predicted_class_means(
    data: &FitData<'_>,
    head: &Head,
    rows: Rows,
    mut keep: impl FnMut(&Features, usize, usize) -> Result<bool>,
    what: impl Fn(usize) -> String,
) -> Result<Array2<f64>> {
    let c = head.num_classes();
    let width = match rows {
        Rows::Features => head.dim(),
        Rows::Logits => c,
    };
    let mut sums = Array2::<f64>::zeros((c, width));
    let mut counts = vec![0usize; c];
    data.for_each_chunk(DEFAULT_CHUNK_ROWS, |chunk| {
        let values = match rows {
            Rows::Features => &chunk.embeddings,
            Rows::Logits => &chunk.logits,
        };
        for (i, (pred, h)) in chunk
            .predictions()
            .into_iter()
            .zip(values.rows())
            .enumerate()
        {
            if keep(chunk, i, pred)? {
                counts[pred] += 1;
                let mut row = sums.row_mut(pred);
                row.iter_mut().zip(h).for_each(|(s, &v)| *s += v as f64);
            }
        }
        Ok(())
    })?;
    if let Some(k) = counts.iter().position(|&n| n == 0) {
        return Err(Error::TooFewSamples {
            what: what(k),
            need: 1,
            got: 0,
        });
    }
    for (k, &n) in counts.iter().enumerate() {
        let mut row = sums.row_mut(k);
        row /= n as f64;
    }
    Ok(sums)
}
