//! The SimCLR augmentation's colour operations and resized crop against torchvision 0.26's tensor
//! implementation (golden values from `scripts/golden_augment.py`), and the random draws'
//! ranges and frequencies.

use ood_nn::augment::{
    self, Augment, Jitter, Simclr, adjust_brightness, adjust_contrast, adjust_hue,
    adjust_saturation, grayscale, resized_crop, resized_crop_params,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

const GOLDEN: &str = include_str!("fixtures/augment_torchvision.json");

/// The script's image: `(sin(1.3c + 0.7i + 0.45j + 0.2) + 1) / 2`, 3 × 6 × 7, with a gray pixel
/// at (0, 0) and pure red at (5, 6).
fn image() -> Tensor {
    let mut v = Vec::new();
    for c in 0..3 {
        for i in 0..6 {
            for j in 0..7 {
                let mut p = (((1.3 * c as f64 + 0.7 * i as f64 + 0.45 * j as f64 + 0.2).sin()
                    + 1.0)
                    / 2.0) as f32;
                if i == 0 && j == 0 {
                    p = 0.5;
                }
                if i == 5 && j == 6 {
                    p = if c == 0 { 1.0 } else { 0.0 };
                }
                v.push(p);
            }
        }
    }
    Tensor::from_slice(&v).view([3, 6, 7])
}

fn check(name: &str, got: &Tensor) {
    let golden: serde_json::Value = serde_json::from_str(GOLDEN).unwrap();
    let want: Vec<f64> = golden[name]
        .as_array()
        .unwrap_or_else(|| panic!("{name} missing"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let got: Vec<f32> = Vec::try_from(got.flatten(0, -1)).unwrap();
    assert_eq!(got.len(), want.len(), "{name}: size");
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (f64::from(*g) - w).abs() < 2e-6,
            "{name}[{k}]: got {g}, torchvision {w}"
        );
    }
}

#[test]
fn colour_operations_match_torchvision() {
    let x = image();
    check("brightness_1.3", &adjust_brightness(&x, 1.3));
    check("contrast_0.7", &adjust_contrast(&x, 0.7));
    check("contrast_1.4", &adjust_contrast(&x, 1.4));
    check("saturation_0.6", &adjust_saturation(&x, 0.6));
    check("saturation_1.35", &adjust_saturation(&x, 1.35));
    check("hue_0.08", &adjust_hue(&x, 0.08));
    check("hue_-0.1", &adjust_hue(&x, -0.1));
    check("grayscale", &grayscale(&x));
    let j = Jitter {
        order: [3, 2, 0, 1],
        factors: [0.8, 1.1, 1.2, -0.05],
    };
    check("jitter_3_2_0_1", &j.apply(&x));
}

#[test]
fn resized_crop_matches_torchvision() {
    check("resized_crop_1_2_4_3", &resized_crop(&image(), 1, 2, 4, 3));
}

#[test]
fn hue_shift_round_trips() {
    let x = image();
    let back = adjust_hue(&adjust_hue(&x, 0.2), -0.2);
    let err = (back - &x).abs().max().double_value(&[]);
    assert!(err < 1e-5, "hue +0.2 then -0.2 differs by {err}");
}

#[test]
fn crop_draws_respect_scale_and_ratio() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let s = Simclr::reference([0.5; 3], [0.25; 3]);
    let mut areas = Vec::new();
    for _ in 0..2000 {
        let (t, l, h, w) = resized_crop_params(32, 32, s.scale, s.ratio, &mut rng);
        assert!(
            t >= 0 && l >= 0 && t + h <= 32 && l + w <= 32,
            "{t} {l} {h} {w}"
        );
        let a = (h * w) as f64 / 1024.0;
        // Rounding of the sides moves the area a little outside [0.2, 1].
        assert!((0.17..=1.0).contains(&a), "area {a}");
        let r = w as f64 / h as f64;
        assert!((0.65..=1.55).contains(&r), "ratio {r}");
        areas.push(a);
    }
    let mean = areas.iter().sum::<f64>() / areas.len() as f64;
    // Uniform area in [0.2, 1] has mean 0.6; draws that do not fit are retried, trimming large
    // areas slightly.
    assert!((0.5..0.62).contains(&mean), "mean crop area {mean}");
}

#[test]
fn simclr_batch_is_seeded_normalised_and_varied() {
    let mean = [0.4914f32, 0.4822, 0.4465];
    let std = [0.2470f32, 0.2435, 0.2616];
    let aug = Augment::simclr(mean, std);
    let raw = image()
        .unsqueeze(0)
        .upsample_bilinear2d([32, 32], false, None, None)
        .repeat([64, 1, 1, 1]);
    let m = Tensor::from_slice(&mean).view([1, 3, 1, 1]);
    let s = Tensor::from_slice(&std).view([1, 3, 1, 1]);
    let x = (&raw - &m) / &s;
    let a = augment::augment_batch(&x, &aug, &mut ChaCha8Rng::seed_from_u64(5));
    let b = augment::augment_batch(&x, &aug, &mut ChaCha8Rng::seed_from_u64(5));
    let c = augment::augment_batch(&x, &aug, &mut ChaCha8Rng::seed_from_u64(6));
    assert_eq!(a.size(), vec![64, 3, 32, 32]);
    assert!(a.equal(&b), "same seed, same views");
    assert!(!a.equal(&c), "another seed, other views");
    // Back in [0, 1] after de-normalising.
    let px = &a * &s + &m;
    assert!(px.min().double_value(&[]) >= -1e-5 && px.max().double_value(&[]) <= 1.0 + 1e-5);
    // About 20 % grayscale views (equal channels).
    let mut n_gray = 0;
    for i in 0..64 {
        let v = px.get(i);
        let d = (v.get(0) - v.get(1)).abs().max().double_value(&[])
            + (v.get(1) - v.get(2)).abs().max().double_value(&[]);
        if d < 1e-5 {
            n_gray += 1;
        }
    }
    assert!((4..=24).contains(&n_gray), "{n_gray} of 64 grayscale views");
    let spread = a.std_dim([0i64].as_slice(), false, false).mean(Kind::Float);
    assert!(spread.double_value(&[]) > 0.1, "views vary");
}
