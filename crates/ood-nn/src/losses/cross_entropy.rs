//! Cross-entropy: `mean_i −log softmax(z_i)[y_i]`.

use tch::{Reduction, Tensor};

/// Mean cross-entropy of logits `(n, c)` against labels `(n)`.
pub fn loss(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.cross_entropy_loss::<Tensor>(labels, None, Reduction::Mean, -100, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_matches_hand_computation() {
        // z = [[2, 0], [0, 0]], y = [0, 1]: (log(1+e^-2) + log 2) / 2
        let z = Tensor::from_slice(&[2.0f32, 0.0, 0.0, 0.0]).view([2, 2]);
        let y = Tensor::from_slice(&[0i64, 1]);
        let want = ((1.0f64 + (-2.0f64).exp()).ln() + 2f64.ln()) / 2.0;
        assert!((loss(&z, &y).double_value(&[]) - want).abs() < 1e-6);
    }
}
