//! Test-time preprocessing, matching torchvision on PIL images:
//! `Resize(S)` (shorter side to `S`, PIL bilinear, or bicubic, with its antialiasing support when
//! downscaling),
//! `CenterCrop(C)`, `Pad(P)` (zeros in pixel space), `ToTensor` (`x/255`), `Normalize(mean, std)`.
//!
//! The resize is a port of Pillow's `Resample.c` (`precompute_coeffs`, `normalize_coeffs_8bpc`,
//! horizontal then vertical 8-bit passes with 22-bit fixed-point coefficients), so a uint8 image
//! resized here equals `PIL.Image.resize(size, Image.BILINEAR)` pixel for pixel. Output sizes and
//! crop offsets follow torchvision: the longer side becomes `int(S * long / short)`, the crop
//! offset is `int(round((h - C) / 2))` with Python's round-half-to-even.

use image::RgbImage;
use tch::{Kind, Tensor};

/// The resampling filter of [`Preprocess::resize`] (Pillow's, bit-exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interpolation {
    /// `Image.BILINEAR` (torchvision's default).
    #[default]
    Bilinear,
    /// `Image.BICUBIC` (timm's ViTs, CLIP).
    Bicubic,
}

impl Interpolation {
    /// Parses `bilinear` or `bicubic`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bilinear" => Some(Interpolation::Bilinear),
            "bicubic" => Some(Interpolation::Bicubic),
            _ => None,
        }
    }

    /// `bilinear` or `bicubic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        }
    }
}

/// A preprocessing pipeline (see the module doc for the order of the steps).
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Resize the shorter side to this many pixels (with [`Preprocess::interpolation`]), when set.
    pub resize: Option<u32>,
    /// The filter of the resize.
    pub interpolation: Interpolation,
    /// Centre-crop to a square of this size, when set.
    pub crop: Option<u32>,
    /// Zero pixels added on each side after cropping.
    pub pad: u32,
    /// Channel means subtracted after `x/255`.
    pub mean: [f32; 3],
    /// Channel standard deviations divided by after subtracting the mean.
    pub std: [f32; 3],
}

impl Preprocess {
    /// Only `x/255` and normalisation.
    pub fn normalize_only(mean: [f32; 3], std: [f32; 3]) -> Self {
        Preprocess {
            resize: None,
            interpolation: Interpolation::Bilinear,
            crop: None,
            pad: 0,
            mean,
            std,
        }
    }

    /// A stable description, stored in feature-file metadata and cache keys.
    pub fn describe(&self) -> String {
        let mut s = String::from("rgb");
        if let Some(r) = self.resize {
            s += &format!(
                " > resize_shorter({r}, pil_{})",
                self.interpolation.as_str()
            );
        }
        if let Some(c) = self.crop {
            s += &format!(" > center_crop({c})");
        }
        if self.pad > 0 {
            s += &format!(" > zero_pad({})", self.pad);
        }
        s += &format!(
            " > x/255 > normalize(mean={:?}, std={:?})",
            self.mean, self.std
        );
        s
    }

    /// The geometric part (resize, crop, pad) on a uint8 image.
    pub fn geometry(&self, img: RgbImage) -> RgbImage {
        let mut img = img;
        if let Some(s) = self.resize {
            let (w, h) = img.dimensions();
            let (nw, nh) = shorter_side_size(w, h, s);
            if (nw, nh) != (w, h) {
                img = match self.interpolation {
                    Interpolation::Bilinear => resize_bilinear_pil(&img, nw, nh),
                    Interpolation::Bicubic => resize_bicubic_pil(&img, nw, nh),
                };
            }
        }
        if let Some(c) = self.crop {
            img = center_crop(&img, c, c);
        }
        if self.pad > 0 {
            img = zero_pad(&img, self.pad);
        }
        img
    }

    /// Output `(height, width)` of [`Preprocess::geometry`] for an input of `w` x `h`.
    pub fn output_size(&self, w: u32, h: u32) -> (u32, u32) {
        let (mut w, mut h) = (w, h);
        if let Some(s) = self.resize {
            (w, h) = shorter_side_size(w, h, s);
        }
        if let Some(c) = self.crop {
            (w, h) = (c, c);
        }
        (h + 2 * self.pad, w + 2 * self.pad)
    }

    /// Full pipeline: geometry, then `x/255` and normalisation into CHW `f32` values appended to
    /// `out`.
    pub fn apply_into(&self, img: RgbImage, out: &mut Vec<f32>) {
        let img = self.geometry(img);
        to_chw_normalized(&img, self.mean, self.std, out);
    }
}

/// torchvision's output size for `Resize(s)` with an int: shorter side `s`, longer side
/// `int(s * long / short)`.
pub fn shorter_side_size(w: u32, h: u32, s: u32) -> (u32, u32) {
    if w <= h {
        (s, (s as u64 * h as u64 / w.max(1) as u64) as u32)
    } else {
        ((s as u64 * w as u64 / h.max(1) as u64) as u32, s)
    }
}

/// `x/255` then `(x - mean) / std`, in `f32` as torchvision does, channel-major (CHW).
pub fn to_chw_normalized(img: &RgbImage, mean: [f32; 3], std: [f32; 3], out: &mut Vec<f32>) {
    let raw = img.as_raw();
    for (c, (&m, &s)) in mean.iter().zip(&std).enumerate() {
        out.extend(
            raw.chunks_exact(3)
                .map(|p| (f32::from(p[c]) / 255.0 - m) / s),
        );
    }
}

/// Centre crop as torchvision (`int(round((h - th) / 2))`, round half to even). Crops larger than
/// the image are zero-padded first, as torchvision does.
pub fn center_crop(img: &RgbImage, tw: u32, th: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if tw > w || th > h {
        // torchvision pads (left, top, right, bottom) = ((tw-w)//2, (th-h)//2, (tw-w+1)//2, (th-h+1)//2)
        let pl = tw.saturating_sub(w) / 2;
        let pt = th.saturating_sub(h) / 2;
        let nw = w.max(tw);
        let nh = h.max(th);
        let mut padded = RgbImage::new(nw, nh);
        image::imageops::replace(&mut padded, img, pl as i64, pt as i64);
        return center_crop(&padded, tw, th);
    }
    let top = ((h - th) as f64 / 2.0).round_ties_even() as u32;
    let left = ((w - tw) as f64 / 2.0).round_ties_even() as u32;
    image::imageops::crop_imm(img, left, top, tw, th).to_image()
}

/// Adds `pad` black pixels on every side.
pub fn zero_pad(img: &RgbImage, pad: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::new(w + 2 * pad, h + 2 * pad);
    image::imageops::replace(&mut out, img, pad as i64, pad as i64);
    out
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic filter (`a = -0.5`, support 2).
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's bilinear (triangle) filter (support 1).
fn triangle_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// Pillow's `precompute_coeffs` for the bilinear (triangle) filter, followed by
/// `normalize_coeffs_8bpc`: per output index, the first input index and the integer weights.
fn coeffs(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i32>)> {
    coeffs_with(in_size, out_size, 1.0, triangle_filter)
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for any Pillow filter of the given support.
fn coeffs_with(
    in_size: u32,
    out_size: u32,
    filter_support: f64,
    filter: fn(f64) -> f64,
) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter_support * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
            let mut w: Vec<f64> = (0..xmax.max(0))
                .map(|x| filter(((x + xmin) as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                for v in &mut w {
                    *v /= total;
                }
            }
            let k = w
                .iter()
                .map(|&v| {
                    let s = v * f64::from(1u32 << PRECISION_BITS);
                    if v < 0.0 {
                        (-0.5 + s) as i32
                    } else {
                        (0.5 + s) as i32
                    }
                })
                .collect();
            (xmin as usize, k)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    let v = v >> PRECISION_BITS;
    v.clamp(0, 255) as u8
}

/// `PIL.Image.resize((w, h), Image.BILINEAR)` on an RGB uint8 image, bit-exact.
pub fn resize_bilinear_pil(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    resize_pil(img, out_w, out_h, coeffs)
}

/// `PIL.Image.resize((w, h), Image.BICUBIC)` on an RGB uint8 image, bit-exact (CLIP's resize).
pub fn resize_bicubic_pil(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    resize_pil(img, out_w, out_h, |i, o| {
        coeffs_with(i, o, 2.0, bicubic_filter)
    })
}

type CoeffFn = fn(u32, u32) -> Vec<(usize, Vec<i32>)>;

fn resize_pil(img: &RgbImage, out_w: u32, out_h: u32, coeffs: CoeffFn) -> RgbImage {
    let (w, h) = img.dimensions();
    let src = img.as_raw();
    let half = 1i64 << (PRECISION_BITS - 1);
    // Horizontal pass (Pillow skips it when the width does not change).
    let (tmp, tw) = if out_w != w {
        let kx = coeffs(w, out_w);
        let mut tmp = vec![0u8; (out_w * h * 3) as usize];
        for y in 0..h as usize {
            let row = &src[y * w as usize * 3..(y + 1) * w as usize * 3];
            for (xx, (xmin, k)) in kx.iter().enumerate() {
                let mut ss = [half; 3];
                for (i, &kv) in k.iter().enumerate() {
                    let p = &row[(xmin + i) * 3..(xmin + i) * 3 + 3];
                    for (s, &v) in ss.iter_mut().zip(p) {
                        *s += i64::from(v) * i64::from(kv);
                    }
                }
                let o = (y * out_w as usize + xx) * 3;
                for (t, &s) in tmp[o..o + 3].iter_mut().zip(&ss) {
                    *t = clip8(s);
                }
            }
        }
        (tmp, out_w)
    } else {
        (src.to_vec(), w)
    };
    // Vertical pass.
    let out = if out_h != h {
        let ky = coeffs(h, out_h);
        let mut out = vec![0u8; (tw * out_h * 3) as usize];
        let stride = tw as usize * 3;
        for (yy, (ymin, k)) in ky.iter().enumerate() {
            for x in 0..stride {
                let mut ss = half;
                for (i, &kv) in k.iter().enumerate() {
                    ss += i64::from(tmp[(ymin + i) * stride + x]) * i64::from(kv);
                }
                out[yy * stride + x] = clip8(ss);
            }
        }
        out
    } else {
        tmp
    };
    RgbImage::from_raw(out_w, out_h, out).expect("buffer size matches the dimensions")
}

/// Normalised `(n, 3, side, side)` f32 tensor of `n` 8-bit RGB images stored `side × side × 3`
/// row-major one after the other: `(x / 255 − mean) / std` per channel.
pub fn normalized_tensor(pixels: &[u8], side: usize, mean: [f32; 3], std: [f32; 3]) -> Tensor {
    let s = side as i64;
    let n = (pixels.len() / (side * side * 3).max(1)) as i64;
    let x = Tensor::from_slice(pixels)
        .view([n, s, s, 3])
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
        / 255.0;
    let m = Tensor::from_slice(&mean).view([1, 3, 1, 1]);
    let sd = Tensor::from_slice(&std).view([1, 3, 1, 1]);
    ((x - m) / sd).contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_sizes_and_crop_offsets() {
        assert_eq!(shorter_side_size(64, 64, 32), (32, 32));
        assert_eq!(shorter_side_size(640, 480, 32), (42, 32));
        assert_eq!(shorter_side_size(300, 451, 32), (32, 48));
        // (5 - 2) / 2 = 1.5 rounds to 2; (4 - 2)/2 = 1; (3 - 2) / 2 = 0.5 rounds to 0.
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let c = center_crop(&img, 2, 2);
        assert_eq!(c.get_pixel(0, 0).0, [2, 0, 0]);
    }

    #[test]
    fn halving_a_constant_image_keeps_it_and_averages_pairs() {
        let img = RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 77]));
        let r = resize_bilinear_pil(&img, 4, 4);
        assert!(r.pixels().all(|p| p.0 == [200, 10, 77]));
        // Downscaling by 2 with Pillow's antialiased triangle: weights 1/8, 3/8, 3/8, 1/8.
        let row = RgbImage::from_fn(4, 1, |x, _| {
            image::Rgb([[0u8, 80, 160, 240][x as usize]; 3])
        });
        let r = resize_bilinear_pil(&row, 2, 1);
        // Output 0: centre 1.0, support 2, taps x = 0, 1, 2 with triangle weights 0.75, 0.75,
        // 0.25 (normalised by 1.75): 400/7 = 57.1 -> 57. Output 1: 1280/7 = 182.9 -> 183.
        let v0 = r.get_pixel(0, 0).0[0];
        let v1 = r.get_pixel(1, 0).0[0];
        assert_eq!((v0, v1), (57, 183));
    }

    #[test]
    fn pad_and_normalize() {
        let img = RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 51]));
        let p = zero_pad(&img, 1);
        assert_eq!(p.dimensions(), (3, 3));
        let mut v = Vec::new();
        to_chw_normalized(&p, [0.5; 3], [0.5; 3], &mut v);
        assert_eq!(v.len(), 27);
        assert_eq!(v[4], 1.0); // R centre
        assert_eq!(v[0], -1.0); // padded
        assert!((v[18 + 4] - (0.2 - 0.5) / 0.5).abs() < 1e-6);
    }
}
