//! A seeded synthetic benchmark in feature space, for examples, the CLI's `example` command and
//! tests: `c` classes of non-negative (post-ReLU-like) Gaussian features, a linear head fitted to
//! the class means, a *near* OOD set drawn from a held-out class mean that lies between the ID
//! classes, and a *far* OOD set with a different, low-activation profile.
//!
//! It exercises every detector family (logit-, activation- and distance-based) on data with a
//! known ordering: near OOD is harder than far OOD. It is not a substitute for real data.

use crate::features::{Features, Head};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A generated benchmark.
#[derive(Debug, Clone)]
pub struct SyntheticBenchmark {
    /// Classifier head.
    pub head: Head,
    /// ID train (labelled).
    pub train: Features,
    /// ID validation (labelled).
    pub val: Features,
    /// ID test (labelled).
    pub test: Features,
    /// Near OOD (a held-out class).
    pub near: Features,
    /// Far OOD (a different activation profile).
    pub far: Features,
}

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    // Box–Muller: two uniforms to one standard normal.
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.r#gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Generates the benchmark: `classes` ID classes in `dim` dimensions, `per_class` train samples per
/// class (val and test get half as many each), OOD sets as large as the test set.
pub fn generate(seed: u64, classes: usize, dim: usize, per_class: usize) -> SyntheticBenchmark {
    assert!(
        classes >= 2 && dim > classes && per_class >= 2,
        "synthetic benchmark needs >= 2 classes, dim > classes, >= 2 per class"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Class means: a strong "own" block of coordinates plus shared background activation.
    let means: Vec<Vec<f32>> = (0..=classes)
        .map(|c| {
            (0..dim)
                .map(|j| {
                    let own = if j % (classes + 1) == c { 1.0 } else { 0.0 };
                    own + 0.6 + 0.3 * rng.r#gen::<f32>()
                })
                .collect()
        })
        .collect();
    // The held-out class (index `classes`) is moved towards the ID means' average: near OOD.
    let avg: Vec<f32> = (0..dim)
        .map(|j| means[..classes].iter().map(|m| m[j]).sum::<f32>() / classes as f32)
        .collect();
    let held: Vec<f32> = means[classes]
        .iter()
        .zip(&avg)
        .map(|(a, b)| 0.5 * a + 0.5 * b)
        .collect();
    let sample = |rng: &mut ChaCha8Rng, mean: &[f32], scale: f32| -> Vec<f32> {
        mean.iter()
            .map(|&m| (m + scale * normal(rng)).max(0.0))
            .collect()
    };
    // Head: nearest-class-mean linear classifier, logits_c = 2⟨μ_c, x⟩ − ‖μ_c‖², scaled down.
    let weight = Array2::from_shape_fn((classes, dim), |(c, j)| 0.5 * means[c][j]);
    let bias = Array1::from_shape_fn(classes, |c| {
        -0.25 * means[c].iter().map(|v| v * v).sum::<f32>()
    });
    let head = Head::new(weight, bias).expect("generated head is finite and consistent");
    let id_set = |rng: &mut ChaCha8Rng, per: usize| {
        let mut rows = Vec::with_capacity(per * classes * dim);
        let mut labels = Vec::with_capacity(per * classes);
        for i in 0..per * classes {
            let c = i % classes;
            rows.extend(sample(rng, &means[c], 1.0));
            labels.push(c as i64);
        }
        let x = Array2::from_shape_vec((per * classes, dim), rows).expect("rows * dim values");
        Features::with_head(x, &head, Some(labels)).expect("generated features are finite")
    };
    let train = id_set(&mut rng, per_class);
    let val = id_set(&mut rng, per_class.div_ceil(2));
    let test = id_set(&mut rng, per_class.div_ceil(2));
    let n_ood = test.len();
    let near_rows: Vec<f32> = (0..n_ood)
        .flat_map(|_| sample(&mut rng, &held, 1.0))
        .collect();
    let near = Features::with_head(
        Array2::from_shape_vec((n_ood, dim), near_rows).expect("shape"),
        &head,
        Some(vec![-1; n_ood]),
    )
    .expect("finite");
    let far_mean: Vec<f32> = (0..dim).map(|_| 0.5 + 0.8 * rng.r#gen::<f32>()).collect();
    let far_rows: Vec<f32> = (0..n_ood)
        .flat_map(|_| sample(&mut rng, &far_mean, 0.8))
        .collect();
    let far = Features::with_head(
        Array2::from_shape_vec((n_ood, dim), far_rows).expect("shape"),
        &head,
        Some(vec![-1; n_ood]),
    )
    .expect("finite");
    SyntheticBenchmark {
        head,
        train,
        val,
        test,
        near,
        far,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_benchmark_is_deterministic_and_near_is_harder_than_far() {
        let a = generate(7, 6, 64, 100);
        let b = generate(7, 6, 64, 100);
        assert_eq!(a.test, b.test);
        assert_eq!(a.train.len(), 600);
        assert_eq!(a.test.len(), 300);
        assert_eq!(a.near.len(), 300);
        let acc = a.test.accuracy().unwrap();
        assert!(
            acc > 0.8 && acc < 0.99,
            "accuracy {acc}: the benchmark should be learnable but not trivial"
        );
        let msp = crate::DetectorSpec::from_name("msp", &[]).unwrap();
        let s = msp.as_detector().fit(&(&a.train).into(), &a.head).unwrap();
        let (id, near, far) = (
            s.score(&a.test).unwrap(),
            s.score(&a.near).unwrap(),
            s.score(&a.far).unwrap(),
        );
        let near_auroc =
            crate::metrics::auroc(id.as_slice().unwrap(), near.as_slice().unwrap()).unwrap();
        let far_auroc =
            crate::metrics::auroc(id.as_slice().unwrap(), far.as_slice().unwrap()).unwrap();
        assert!(
            near_auroc > 0.7 && near_auroc < far_auroc,
            "near {near_auroc}, far {far_auroc}"
        );
    }
}
