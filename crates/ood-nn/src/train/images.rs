//! Image sets read into memory for training: every image of a [`DataSpec`] brought to one size
//! as 8-bit RGB, with its label, and seeded random subsets of them.

use crate::data::{DataSpec, Preprocess};
use crate::error::{Error, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;

/// Images of one set as 8-bit RGB `n × side × side × 3` and their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// Pixels.
    pub pixels: Vec<u8>,
    /// Labels (`-1` when unknown).
    pub labels: Vec<i64>,
}

impl Images {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// A seeded random subset of `n` images (all when there are fewer), in their original order;
    /// the images are `side × side`.
    pub fn subsample(self, n: usize, side: usize, seed: u64) -> Images {
        if self.len() <= n {
            return self;
        }
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        idx.truncate(n);
        idx.sort_unstable();
        let size = side * side * 3;
        Images {
            pixels: idx
                .iter()
                .flat_map(|&i| self.pixels[i * size..(i + 1) * size].iter().copied())
                .collect(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}

/// Reads the first `limit` images of `spec` as `side × side` RGB: idx data (28x28) are zero
/// padded to `side`, other images get their shorter side resized to `side` (PIL bilinear) and a
/// centre crop, as `ood extract` does by default. An empty set is an error.
pub fn read_images(spec: &DataSpec, side: u32, limit: Option<usize>) -> Result<Images> {
    let pre = if matches!(spec, DataSpec::Idx { .. }) {
        Preprocess {
            resize: None,
            interpolation: Default::default(),
            crop: None,
            pad: side.saturating_sub(28) / 2,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    } else {
        Preprocess {
            resize: Some(side),
            interpolation: Default::default(),
            crop: Some(side),
            pad: 0,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    };
    let data_err = |reason: String| Error::Data {
        path: spec.to_spec_string().into(),
        reason,
    };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for s in spec.samples()?.take(limit.unwrap_or(usize::MAX)) {
        let s = s?;
        let name = s.name.clone();
        let label = s.label;
        let img = pre.geometry(s.decode()?);
        if img.dimensions() != (side, side) {
            return Err(data_err(format!(
                "image {name} is {}x{} after preprocessing, expected {side}x{side}",
                img.width(),
                img.height()
            )));
        }
        pixels.extend_from_slice(img.as_raw());
        labels.push(label);
    }
    if labels.is_empty() {
        return Err(data_err("no images".into()));
    }
    Ok(Images { pixels, labels })
}
