//! A projection head that maps penultimate features into a text encoder's embedding space.
//!
//! TagFog (spec training-methods.md 1.4–1.5) trains a projection MLP `g` on top of the image
//! encoder so that `n(g(f(x)))` is pulled towards the class's *textual anchor*, the frozen text
//! embedding of the class. Once such a head exists, image embeddings and text embeddings live in
//! one space and the vision-language scores (NegLabel, MCM) apply to any classifier: that is how
//! `ood bench cifar10 --align` scores NegLabel/MCM without CLIP, with the real MiniLM text encoder.
//!
//! The file format follows the PyTorch module names of TagFog's `nn.Sequential(Linear, ReLU,
//! Linear)` head: `proj.0.weight (h, d)`, `proj.0.bias (h)`, `proj.2.weight (a, h)`,
//! `proj.2.bias (a)` (a single `proj.0.*` pair is a linear projection). [`Projection::apply`]
//! returns L2-normalised rows, as the anchor loss sees them.

use crate::error::{Error, Result};
use crate::features::Features;
use crate::linalg::{matmul_transb, normalize_rows};
use crate::safetensors::{self, SafeTensorsFile, TensorToWrite};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use std::collections::BTreeMap;
use std::path::Path;

/// One linear layer, `y = x · Wᵀ + b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    /// `(out, in)` weight.
    pub weight: Array2<f32>,
    /// `(out)` bias.
    pub bias: Array1<f32>,
}

/// A projection MLP: linear layers with ReLU between them, then L2 normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// The layers, first to last.
    pub layers: Vec<Linear>,
    /// Free-form metadata written with the file (training config, anchors hash...).
    pub metadata: BTreeMap<String, String>,
}

impl Projection {
    /// Builds a projection, checking that consecutive layer shapes chain and values are finite.
    pub fn new(layers: Vec<Linear>) -> Result<Projection> {
        if layers.is_empty() {
            return Err(Error::InvalidParameter(
                "a projection needs at least one layer".into(),
            ));
        }
        for (i, l) in layers.iter().enumerate() {
            if l.bias.len() != l.weight.nrows() {
                return Err(Error::dim(
                    format!("projection layer {i} bias length"),
                    l.weight.nrows(),
                    l.bias.len(),
                ));
            }
            if i > 0 && layers[i - 1].weight.nrows() != l.weight.ncols() {
                return Err(Error::dim(
                    format!("projection layer {i} input width"),
                    layers[i - 1].weight.nrows(),
                    l.weight.ncols(),
                ));
            }
            if !l.weight.iter().chain(l.bias.iter()).all(|v| v.is_finite()) {
                return Err(Error::NonFinite {
                    what: format!("projection layer {i}"),
                });
            }
        }
        Ok(Projection {
            layers,
            metadata: BTreeMap::new(),
        })
    }

    /// Input width (the feature dimension).
    pub fn input_dim(&self) -> usize {
        self.layers[0].weight.ncols()
    }

    /// Output width (the text embedding dimension).
    pub fn output_dim(&self) -> usize {
        self.layers[self.layers.len() - 1].weight.nrows()
    }

    /// Projects rows of features and L2-normalises them (a zero row stays zero).
    pub fn apply(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        if x.ncols() != self.input_dim() {
            return Err(Error::dim(
                "feature dimension (projection input)",
                self.input_dim(),
                x.ncols(),
            ));
        }
        let mut h = x.to_owned();
        for (i, l) in self.layers.iter().enumerate() {
            h = matmul_transb(h.view(), l.weight.view()) + l.bias.view().insert_axis(Axis(0));
            if i + 1 < self.layers.len() {
                h.mapv_inplace(|v| v.max(0.0));
            }
        }
        Ok(normalize_rows(h.view()))
    }

    /// Features whose embeddings are the projected, normalised embeddings; logits are
    /// `scale · cos(z, t_c)` against `anchors` (rows = ID class text embeddings), like CLIP's
    /// zero-shot logits; labels and metadata are kept.
    pub fn project_features(
        &self,
        f: &Features,
        anchors: ArrayView2<'_, f32>,
        scale: f32,
    ) -> Result<Features> {
        if anchors.ncols() != self.output_dim() {
            return Err(Error::dim(
                "anchor dimension (projection output)",
                self.output_dim(),
                anchors.ncols(),
            ));
        }
        let z = self.apply(f.embeddings.view())?;
        let t = normalize_rows(anchors);
        let logits = matmul_transb(z.view(), t.view()) * scale;
        let mut out = Features::new(z, logits, f.labels.clone())?;
        out.metadata = f.metadata.clone();
        out.metadata
            .insert("layer".into(), "projection (anchor-aligned)".into());
        Ok(out)
    }

    /// Reads `proj.{0,2,4...}.weight/bias` from a safetensors file.
    pub fn load(path: impl AsRef<Path>) -> Result<Projection> {
        let path = path.as_ref();
        let file = SafeTensorsFile::open(path)?;
        let mut layers = Vec::new();
        let mut k = 0;
        while let Ok(info) = file.info(&format!("proj.{k}.weight")) {
            let shape = info.shape.clone();
            if shape.len() != 2 {
                return Err(Error::format(
                    path,
                    format!("proj.{k}.weight has shape {shape:?}, expected 2-D"),
                ));
            }
            let w = file.read_f32(&format!("proj.{k}.weight"))?;
            let b = file.read_f32(&format!("proj.{k}.bias"))?;
            layers.push(Linear {
                weight: Array2::from_shape_vec((shape[0], shape[1]), w)
                    .expect("shape checked by the reader"),
                bias: Array1::from(b),
            });
            k += 2;
        }
        if layers.is_empty() {
            return Err(Error::format(
                path,
                "no proj.0.weight tensor: not a projection file",
            ));
        }
        let mut p = Projection::new(layers).map_err(|e| Error::format(path, e.to_string()))?;
        p.metadata = file.metadata.clone();
        Ok(p)
    }

    /// Writes the projection atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let names: Vec<(String, String)> = (0..self.layers.len())
            .map(|i| {
                (
                    format!("proj.{}.weight", 2 * i),
                    format!("proj.{}.bias", 2 * i),
                )
            })
            .collect();
        let weights: Vec<Vec<f32>> = self
            .layers
            .iter()
            .map(|l| l.weight.iter().copied().collect())
            .collect();
        let mut tensors = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            tensors.push(TensorToWrite::f32(
                &names[i].0,
                vec![l.weight.nrows(), l.weight.ncols()],
                &weights[i],
            ));
            tensors.push(TensorToWrite::f32(
                &names[i].1,
                vec![l.bias.len()],
                l.bias.as_slice().expect("owned 1-D array"),
            ));
        }
        safetensors::write(path.as_ref(), &tensors, &self.metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn two_layer() -> Projection {
        Projection::new(vec![
            Linear {
                weight: array![[1.0, 0.0], [0.0, -1.0], [1.0, 1.0]],
                bias: array![0.0, 0.5, -1.0],
            },
            Linear {
                weight: array![[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]],
                bias: array![0.0, 1.0],
            },
        ])
        .unwrap()
    }

    #[test]
    fn apply_is_mlp_with_relu_then_normalise() {
        let p = two_layer();
        // x = (2, 1): h = relu(2, -0.5, 2) = (2, 0, 2); y = (2, 0 + 6 + 1) = (2, 7).
        let z = p.apply(array![[2.0f32, 1.0]].view()).unwrap();
        let n = (4.0f32 + 49.0).sqrt();
        assert!((z[[0, 0]] - 2.0 / n).abs() < 1e-6 && (z[[0, 1]] - 7.0 / n).abs() < 1e-6);
        assert!(p.apply(array![[1.0f32, 2.0, 3.0]].view()).is_err());
    }

    #[test]
    fn save_load_roundtrip_and_projected_logits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.safetensors");
        let p = two_layer();
        p.save(&path).unwrap();
        let q = Projection::load(&path).unwrap();
        assert_eq!(p.layers, q.layers);
        let f = Features::new(array![[2.0f32, 1.0]], array![[0.0f32]], Some(vec![1])).unwrap();
        let anchors = array![[1.0f32, 0.0], [0.0, 2.0]];
        let g = q.project_features(&f, anchors.view(), 10.0).unwrap();
        let n = (53.0f32).sqrt();
        assert!((g.logits[[0, 0]] - 20.0 / n).abs() < 1e-5);
        assert!((g.logits[[0, 1]] - 70.0 / n).abs() < 1e-5);
        assert_eq!(g.labels, Some(vec![1]));
        let bad = dir.path().join("bad.safetensors");
        f.save(&bad).unwrap();
        let e = Projection::load(&bad).unwrap_err().to_string();
        assert!(e.contains("not a projection file"), "{e}");
    }
}
