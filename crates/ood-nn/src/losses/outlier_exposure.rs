//! Outlier Exposure (Hendrycks, Mazeika & Dietterich, "Deep Anomaly Detection with Outlier
//! Exposure", ICLR 2019, arXiv:1812.04606).
//!
//! Loss: `CE(f(x), y) + λ · mean_o [ −(1/K) Σ_k log softmax(f(x_o))_k ]`, i.e. cross-entropy to the
//! uniform distribution on auxiliary outliers (equivalently `−mean_k z_k + lse(z)`), λ = 0.5 in the
//! OE CIFAR recipe (spec training-methods.md 4.2).

use tch::{Kind, Tensor};

/// Mean cross-entropy from the uniform distribution over the `K` classes to `softmax(z)`.
pub fn uniform_ce(logits: &Tensor) -> Tensor {
    (-logits
        .log_softmax(-1, Kind::Float)
        .mean_dim(-1, false, Kind::Float))
    .mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_ce_matches_hand_computation() {
        // z = [1, 0, 0]: lse = ln(e + 2); mean_k z_k = 1/3
        let z = Tensor::from_slice(&[1.0f32, 0.0, 0.0]).view([1, 3]);
        let want = (1f64.exp() + 2.0).ln() - 1.0 / 3.0;
        assert!((uniform_ce(&z).double_value(&[]) - want).abs() < 1e-6);
        // Uniform logits reach the minimum ln K.
        let u = Tensor::zeros([4, 5], (Kind::Float, tch::Device::Cpu));
        assert!((uniform_ce(&u).double_value(&[]) - 5f64.ln()).abs() < 1e-6);
    }
}
