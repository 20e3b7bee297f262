//! Training augmentation on normalised image tensors, seeded by the caller's RNG.
//!
//! * The CIFAR recipe: pad (with the normalised black value) and random crop, horizontal flip.
//! * The SimCLR-style chain of the contrastive references (CIDER / ReweightOOD / TagFog, spec
//!   training-methods.md 1.6 and 3.3): `RandomResizedCrop(S, scale (0.2, 1), ratio (3/4, 4/3))`
//!   → `RandomHorizontalFlip(0.5)` → with p = 0.8 `ColorJitter(0.4, 0.4, 0.4, 0.1)` →
//!   `RandomGrayscale(0.2)`. The colour operations follow torchvision's tensor implementation
//!   (`torchvision.transforms.functional` on float images in [0, 1]; the references apply the
//!   PIL versions to 8-bit images, which differ only by 8-bit rounding): brightness, contrast
//!   and saturation are clamped blends with black, the grayscale mean and the grayscale image,
//!   hue is a shift in torchvision's HSV space, the four are applied in a random order with
//!   factors drawn uniformly, and grayscale uses the ITU-R 601 weights (0.2989, 0.587, 0.114).
//!   The crop is resized back with antialiased bilinear interpolation as torchvision's
//!   `resized_crop` does. Images are de-normalised to [0, 1] first and re-normalised after.

use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Random crop + flip augmentation for small images, or the SimCLR chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Pixels of padding before the random crop (4 for CIFAR; 0 disables cropping). Unused
    /// with [`Augment::simclr`].
    pub crop_padding: i64,
    /// Random horizontal flip with probability 1/2.
    pub horizontal_flip: bool,
    /// Per-channel value used for padding, in normalised units (black: `-mean/std`).
    pub pad_value: [f32; 3],
    /// The SimCLR-style chain instead of pad-and-crop (the contrastive recipes').
    #[serde(default)]
    pub simclr: Option<Simclr>,
}

impl Augment {
    /// The CIFAR recipe (padding 4, flip) for images normalised with `mean` / `std`.
    pub fn cifar(mean: [f32; 3], std: [f32; 3]) -> Augment {
        Augment {
            crop_padding: 4,
            horizontal_flip: true,
            pad_value: [0, 1, 2].map(|c| -mean[c] / std[c]),
            simclr: None,
        }
    }

    /// The contrastive references' SimCLR chain, with a flip, for images normalised with
    /// `mean` / `std`.
    pub fn simclr(mean: [f32; 3], std: [f32; 3]) -> Augment {
        Augment {
            simclr: Some(Simclr::reference(mean, std)),
            ..Augment::cifar(mean, std)
        }
    }
}

/// Parameters of the SimCLR-style chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Simclr {
    /// Crop area as a fraction of the image, `[min, max]`.
    pub scale: [f64; 2],
    /// Crop aspect ratio `[min, max]` (sampled log-uniformly).
    pub ratio: [f64; 2],
    /// Probability of the colour jitter.
    pub jitter_p: f64,
    /// Brightness factor range `1 ± brightness`.
    pub brightness: f64,
    /// Contrast factor range `1 ± contrast`.
    pub contrast: f64,
    /// Saturation factor range `1 ± saturation`.
    pub saturation: f64,
    /// Hue shift range `± hue` (fraction of the colour circle).
    pub hue: f64,
    /// Probability of converting to grayscale.
    pub grayscale_p: f64,
    /// Normalisation mean of the images (to work in [0, 1]).
    pub mean: [f32; 3],
    /// Normalisation std of the images.
    pub std: [f32; 3],
}

impl Simclr {
    /// The references' values: scale (0.2, 1), ratio (3/4, 4/3), jitter (0.4, 0.4, 0.4, 0.1)
    /// with p 0.8, grayscale p 0.2.
    pub fn reference(mean: [f32; 3], std: [f32; 3]) -> Simclr {
        Simclr {
            scale: [0.2, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
            grayscale_p: 0.2,
            mean,
            std,
        }
    }
}

/// Augments a batch `(n, 3, h, w)` of normalised images, one independent draw per image.
pub fn augment_batch(x: &Tensor, aug: &Augment, rng: &mut impl Rng) -> Tensor {
    match &aug.simclr {
        Some(s) => simclr_batch(x, s, aug.horizontal_flip, rng),
        None => pad_crop_flip(x, aug, rng),
    }
}

fn pad_crop_flip(x: &Tensor, aug: &Augment, rng: &mut impl Rng) -> Tensor {
    let (n, h, w) = (x.size()[0], x.size()[2], x.size()[3]);
    let p = aug.crop_padding;
    let padded = if p > 0 {
        let pad = Tensor::from_slice(&aug.pad_value)
            .view([1, 3, 1, 1])
            .to_device(x.device());
        let base = pad.expand([n, 3, h + 2 * p, w + 2 * p], false).contiguous();
        base.narrow(2, p, h).narrow(3, p, w).copy_(x);
        base
    } else {
        x.shallow_clone()
    };
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (dy, dx) = if p > 0 {
            (rng.gen_range(0..=2 * p), rng.gen_range(0..=2 * p))
        } else {
            (0, 0)
        };
        let mut xi = padded.get(i).narrow(1, dy, h).narrow(2, dx, w);
        if aug.horizontal_flip && rng.r#gen::<bool>() {
            xi = xi.flip([2]);
        }
        out.push(xi);
    }
    Tensor::stack(&out, 0)
}

/// torchvision's `RandomResizedCrop.get_params`: `(top, left, height, width)` of a crop of an
/// `h × w` image (ten tries, then the centre crop with the ratio clamped to `ratio`).
pub fn resized_crop_params(
    h: i64,
    w: i64,
    scale: [f64; 2],
    ratio: [f64; 2],
    rng: &mut impl Rng,
) -> (i64, i64, i64, i64) {
    let area = (h * w) as f64;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.gen_range(scale[0]..=scale[1]);
        let aspect = rng.gen_range(lr0..=lr1).exp();
        let cw = (target * aspect).sqrt().round() as i64;
        let ch = (target / aspect).sqrt().round() as i64;
        if 0 < cw && cw <= w && 0 < ch && ch <= h {
            let top = rng.gen_range(0..=h - ch);
            let left = rng.gen_range(0..=w - cw);
            return (top, left, ch, cw);
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (ch, cw) = if in_ratio < ratio[0] {
        ((w as f64 / ratio[0]).round() as i64, w)
    } else if in_ratio > ratio[1] {
        (h, (h as f64 * ratio[1]).round() as i64)
    } else {
        (h, w)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

/// Crops `x` `(3, h, w)` to `(top, left, ch, cw)` and resizes it back to `h × w` with
/// antialiased bilinear interpolation (`torchvision.transforms.functional.resized_crop`).
pub fn resized_crop(x: &Tensor, top: i64, left: i64, ch: i64, cw: i64) -> Tensor {
    let (h, w) = (x.size()[1], x.size()[2]);
    x.narrow(1, top, ch)
        .narrow(2, left, cw)
        .unsqueeze(0)
        .internal_upsample_bilinear2d_aa([h, w], false, None, None)
        .squeeze_dim(0)
}

/// ITU-R 601 luma of `(…, 3, h, w)` images in [0, 1], keeping a channel dimension of 1.
pub fn grayscale(x: &Tensor) -> Tensor {
    let w = Tensor::from_slice(&[0.2989f32, 0.587, 0.114])
        .view([3, 1, 1])
        .to_device(x.device());
    (x * w).sum_dim_intlist([-3i64].as_slice(), true, Kind::Float)
}

fn blend(a: &Tensor, b: &Tensor, ratio: f64) -> Tensor {
    (a * ratio + b * (1.0 - ratio)).clamp(0.0, 1.0)
}

/// `adjust_brightness`: `clamp(f·x)`.
pub fn adjust_brightness(x: &Tensor, f: f64) -> Tensor {
    (x * f).clamp(0.0, 1.0)
}

/// `adjust_contrast`: blend with the mean of the grayscale image.
pub fn adjust_contrast(x: &Tensor, f: f64) -> Tensor {
    let mean = grayscale(x).mean_dim([-3i64, -2, -1].as_slice(), true, Kind::Float);
    blend(x, &mean, f)
}

/// `adjust_saturation`: blend with the grayscale image.
pub fn adjust_saturation(x: &Tensor, f: f64) -> Tensor {
    blend(x, &grayscale(x), f)
}

/// torchvision's `_rgb2hsv` of a `(3, h, w)` image in [0, 1].
pub fn rgb_to_hsv(x: &Tensor) -> Tensor {
    let (r, g, b) = (x.get(0), x.get(1), x.get(2));
    let maxc = x.amax([0i64].as_slice(), false);
    let minc = x.amin([0i64].as_slice(), false);
    let distinct = maxc.eq_tensor(&minc).logical_not();
    let cr = &maxc - &minc;
    let ones = maxc.ones_like();
    let s = &cr / maxc.where_self(&distinct, &ones);
    let div = cr.where_self(&distinct, &ones);
    let rc = (&maxc - &r) / &div;
    let gc = (&maxc - &g) / &div;
    let bc = (&maxc - &b) / &div;
    let is_r = maxc.eq_tensor(&r);
    let is_g = maxc.eq_tensor(&g);
    let not_r = is_r.logical_not();
    let hr = is_r.to_kind(Kind::Float) * (&bc - &gc);
    let hg = is_g.logical_and(&not_r).to_kind(Kind::Float) * (&rc - &bc + 2.0);
    let hb = is_g.logical_not().logical_and(&not_r).to_kind(Kind::Float) * (&gc - &rc + 4.0);
    let h = ((hr + hg + hb) / 6.0 + 1.0).fmod(1.0);
    Tensor::stack(&[h, s, maxc], 0)
}

/// torchvision's `_hsv2rgb` of a `(3, h, w)` HSV image.
pub fn hsv_to_rgb(x: &Tensor) -> Tensor {
    let (h, s, v) = (x.get(0), x.get(1), x.get(2));
    let i = (&h * 6.0).floor();
    let f = &h * 6.0 - &i;
    let i = i.to_kind(Kind::Int).remainder(6);
    let one_minus = |t: Tensor| -t + 1.0;
    let p = (&v * one_minus(s.shallow_clone())).clamp(0.0, 1.0);
    let q = (&v * one_minus(&s * &f)).clamp(0.0, 1.0);
    let t = (&v * one_minus(&s * one_minus(f.shallow_clone()))).clamp(0.0, 1.0);
    let pick = |choices: [&Tensor; 6]| {
        let mut out = v.zeros_like();
        for (k, c) in choices.into_iter().enumerate() {
            out += i.eq(k as i64).to_kind(Kind::Float) * c;
        }
        out
    };
    Tensor::stack(
        &[
            pick([&v, &q, &p, &p, &t, &v]),
            pick([&t, &v, &v, &q, &p, &p]),
            pick([&p, &p, &t, &v, &v, &q]),
        ],
        0,
    )
}

/// `adjust_hue`: shift the hue by `f` (in [-0.5, 0.5]) in HSV space.
pub fn adjust_hue(x: &Tensor, f: f64) -> Tensor {
    let hsv = rgb_to_hsv(x);
    let h = (hsv.get(0) + f).remainder(1.0);
    hsv_to_rgb(&Tensor::stack(&[h, hsv.get(1), hsv.get(2)], 0))
}

/// One colour-jitter draw: the order of the four operations and their factors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    /// Operation order: 0 brightness, 1 contrast, 2 saturation, 3 hue.
    pub order: [usize; 4],
    /// Brightness, contrast, saturation factors and hue shift.
    pub factors: [f64; 4],
}

impl Jitter {
    /// Draws as `ColorJitter.get_params`: a random order, factors uniform in `1 ± b/c/s` and
    /// the hue shift uniform in `± hue`.
    pub fn draw(s: &Simclr, rng: &mut impl Rng) -> Jitter {
        let mut order = [0, 1, 2, 3];
        order.shuffle(rng);
        let mut f = |r: f64| rng.gen_range((1.0 - r).max(0.0)..=1.0 + r);
        let (b, c, sat) = (f(s.brightness), f(s.contrast), f(s.saturation));
        let hue = rng.gen_range(-s.hue..=s.hue);
        Jitter {
            order,
            factors: [b, c, sat, hue],
        }
    }

    /// Applies the draw to a `(3, h, w)` image in [0, 1].
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let mut x = x.shallow_clone();
        for &op in &self.order {
            let f = self.factors[op];
            x = match op {
                0 => adjust_brightness(&x, f),
                1 => adjust_contrast(&x, f),
                2 => adjust_saturation(&x, f),
                _ => adjust_hue(&x, f),
            };
        }
        x
    }
}

fn simclr_batch(x: &Tensor, s: &Simclr, flip: bool, rng: &mut impl Rng) -> Tensor {
    let (n, h, w) = (x.size()[0], x.size()[2], x.size()[3]);
    let dev = x.device();
    let mean = Tensor::from_slice(&s.mean).view([3, 1, 1]).to_device(dev);
    let std = Tensor::from_slice(&s.std).view([3, 1, 1]).to_device(dev);
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let xi = x.get(i) * &std + &mean;
        let (top, left, ch, cw) = resized_crop_params(h, w, s.scale, s.ratio, rng);
        let mut xi = resized_crop(&xi, top, left, ch, cw);
        if flip && rng.r#gen::<bool>() {
            xi = xi.flip([2]);
        }
        if rng.r#gen::<f64>() < s.jitter_p {
            xi = Jitter::draw(s, rng).apply(&xi);
        }
        if rng.r#gen::<f64>() < s.grayscale_p {
            xi = grayscale(&xi).expand([3, h, w], false);
        }
        out.push((xi - &mean) / &std);
    }
    Tensor::stack(&out, 0)
}
