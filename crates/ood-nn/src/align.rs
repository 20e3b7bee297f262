//! Anchor alignment on frozen features: TagFog's projection head `g` and its anchor loss `L_CI`
//! (spec training-methods.md 1.4–1.5), trained on cached penultimate features of a classifier.
//!
//! `g = Linear(d → 2d) → BatchNorm1d(2d) → ReLU → Linear(2d → a)`, `z = n(g(f))`, and for a sample
//! of ID class `y < K`: `a = −log softmax_c(⟨z, t_c⟩ / τ)[y]` over the `K` L2-normalised textual
//! anchors `t_c`; samples with `y ≥ K` (TagFog's jigsaw class) contribute 0 but count in the mean,
//! exactly as in TagFog. The encoder `f` stays frozen here (full TagFog training moves it too):
//! this is what puts any classifier's features into a text encoder's space, so that NegLabel and
//! MCM can score a CIFAR model with the real MiniLM (`ood align`, `ood bench --align`).
//!
//! Training: Adam on mini-batches, seeded shuffling and initialisation, BatchNorm in training
//! mode; the exported [`Projection`] folds the BatchNorm's running statistics into the first
//! linear layer, so `Projection::apply` equals the network in eval mode.

use crate::error::{Error, Result};
use crate::losses::tagfog;
use ndarray::{Array1, Array2, ArrayView2};
use ood_core::evaluation::FileInputs;
use ood_core::projection::{Linear, Projection};
use ood_core::{atomic_file, hashing};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Reads text anchors `(K, A)`: tensor `weight` (a head, a `neglabel mine` file) or `embeddings`
/// (an `embed-text` file), 2-D, finite f32.
pub fn load_anchors(path: &Path) -> Result<Array2<f32>> {
    let bad = |reason: String| Error::Data {
        path: path.to_path_buf(),
        reason,
    };
    let f = ood_core::safetensors::SafeTensorsFile::open(path)?;
    let Some(name) = ["weight", "embeddings"]
        .into_iter()
        .find(|n| f.tensors.contains_key(*n))
    else {
        return Err(bad(
            "no `weight` or `embeddings` tensor (expected ID class text embeddings)".into(),
        ));
    };
    let shape = f.tensors[name].shape.clone();
    if shape.len() != 2 || shape[0] == 0 || shape[1] == 0 {
        return Err(bad(format!(
            "tensor {name} has shape {shape:?}, expected (classes, dim)"
        )));
    }
    let v = f.read_f32(name)?;
    if !v.iter().all(|x| x.is_finite()) {
        return Err(bad(format!("tensor {name} holds NaN or infinite values")));
    }
    Ok(Array2::from_shape_vec((shape[0], shape[1]), v).expect("shape from header"))
}

/// Hyper-parameters of [`fit_projection`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlignConfig {
    /// Passes over the features.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Anchor-loss temperature τ_ci (TagFog: 0.1).
    pub temperature: f64,
    /// Seed for initialisation and shuffling.
    pub seed: u64,
}

impl Default for AlignConfig {
    fn default() -> Self {
        AlignConfig {
            epochs: 20,
            batch_size: 256,
            lr: 1e-3,
            temperature: 0.1,
            seed: 0,
        }
    }
}

/// TagFog's `L_CI` ([`tagfog::anchor_alignment`]) on raw rows: `z` `(b, a)` and `anchors`
/// `(K, a)` are L2-normalised first; `y` is int64 `(b)`, rows with `y ≥ K` count as 0.
pub fn anchor_loss(z: &Tensor, anchors: &Tensor, y: &Tensor, temperature: f64) -> Tensor {
    tagfog::anchor_alignment(&normalize(z), &normalize(anchors), y, temperature)
}

fn normalize(x: &Tensor) -> Tensor {
    x / x
        .norm_scalaropt_dim(2, [-1].as_slice(), true)
        .clamp_min(1e-12)
}

fn tensor2(a: ArrayView2<'_, f32>) -> Tensor {
    let v: Vec<f32> = a.iter().copied().collect();
    Tensor::from_slice(&v).view([a.nrows() as i64, a.ncols() as i64])
}

fn array2(t: &Tensor) -> Result<Array2<f32>> {
    let s = t.size();
    let v: Vec<f32> = Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().view([-1]))
        .map_err(|e| Error::Config(format!("tensor copy: {e}")))?;
    Ok(Array2::from_shape_vec((s[0] as usize, s[1] as usize), v).expect("sizes match"))
}

fn array1(t: &Tensor) -> Result<Array1<f32>> {
    let v: Vec<f32> = Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous())
        .map_err(|e| Error::Config(format!("tensor copy: {e}")))?;
    Ok(Array1::from(v))
}

/// The fitted projection and the mean anchor loss of every epoch.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The projection (BatchNorm folded in), ready for [`Projection::apply`].
    pub projection: Projection,
    /// Mean `L_CI` per epoch.
    pub epoch_losses: Vec<f64>,
    /// Share of training rows whose nearest anchor (cosine) is their class, after training.
    pub train_anchor_accuracy: f64,
}

/// Trains TagFog's projection head on frozen `features` `(n, d)` with class `labels` so that the
/// normalised output points at the row of `anchors` `(K, a)` of its class. `progress` is called
/// after each epoch with `(epoch, mean loss)`.
pub fn fit_projection(
    features: ArrayView2<'_, f32>,
    labels: &[i64],
    anchors: ArrayView2<'_, f32>,
    cfg: &AlignConfig,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<Fitted> {
    let (n, d) = features.dim();
    let k = anchors.nrows();
    if labels.len() != n {
        return Err(Error::Config(format!(
            "{} labels for {n} feature rows",
            labels.len()
        )));
    }
    if n < 2 || k == 0 || cfg.batch_size < 2 || cfg.epochs == 0 {
        return Err(Error::Config(format!(
            "alignment needs at least 2 rows, 1 anchor, batch size >= 2 and 1 epoch (got {n} rows, {k} anchors, batch {}, {} epochs)",
            cfg.batch_size, cfg.epochs
        )));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l < 0 || l as usize >= k) {
        return Err(Error::Config(format!(
            "label {bad} has no anchor (there are {k} anchors)"
        )));
    }
    if !(cfg.temperature > 0.0 && cfg.lr > 0.0) {
        return Err(Error::Config(
            "temperature and learning rate must be > 0".into(),
        ));
    }
    tch::manual_seed(cfg.seed as i64);
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let g = tagfog::projection(&root, d as i64, anchors.ncols() as i64);
    let x = tensor2(features);
    let y = Tensor::from_slice(labels);
    let t = tensor2(anchors);
    let mut opt = nn::Adam::default()
        .build(&vs, cfg.lr)
        .map_err(|e| Error::Config(format!("optimizer: {e}")))?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<i64> = (0..n as i64).collect();
    let mut epoch_losses = Vec::with_capacity(cfg.epochs);
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut count) = (0.0, 0usize);
        // Batches of at least 2 rows (BatchNorm in training mode needs 2): a last single row is
        // dropped for this epoch.
        for chunk in order.chunks(cfg.batch_size).filter(|c| c.len() >= 2) {
            let idx = Tensor::from_slice(chunk);
            let loss = anchor_loss(
                &g.forward_t(&x.index_select(0, &idx), true),
                &t,
                &y.index_select(0, &idx),
                cfg.temperature,
            );
            opt.backward_step(&loss);
            sum += loss.double_value(&[]) * chunk.len() as f64;
            count += chunk.len();
        }
        let mean = sum / count as f64;
        if !mean.is_finite() {
            return Err(Error::Config(format!(
                "anchor loss became non-finite in epoch {}",
                epoch + 1
            )));
        }
        epoch_losses.push(mean);
        progress(epoch + 1, mean);
    }
    // Fold eval-mode BatchNorm into the first linear layer: y = γ (W x + b − μ)/√(σ² + ε) + β.
    let _guard = tch::no_grad_guard();
    let vars = vs.variables();
    let var = |name: &str| vars.get(name).expect("variable of tagfog::projection");
    let scale = var("1.weight") / (var("1.running_var") + 1e-5).sqrt();
    let w1 = var("0.weight") * scale.unsqueeze(1);
    let b1 = (var("0.bias") - var("1.running_mean")) * &scale + var("1.bias");
    let projection = Projection::new(vec![
        Linear {
            weight: array2(&w1)?,
            bias: array1(&b1)?,
        },
        Linear {
            weight: array2(var("3.weight"))?,
            bias: array1(var("3.bias"))?,
        },
    ])
    .map_err(|e| Error::Config(format!("fitted projection: {e}")))?;
    let z = projection
        .apply(features)
        .map_err(|e| Error::Config(e.to_string()))?;
    let tn = ood_core::linalg::normalize_rows(anchors);
    let sims = ood_core::linalg::matmul_transb(z.view(), tn.view());
    let hits = sims
        .rows()
        .into_iter()
        .zip(labels)
        .filter(|(r, l)| ood_core::features::argmax(r.as_slice().expect("row")) as i64 == **l)
        .count();
    Ok(Fitted {
        projection,
        epoch_losses,
        train_anchor_accuracy: hits as f64 / n as f64,
    })
}

/// Fits a projection of the labelled features in `fit` to the anchors in `anchors`
/// ([`load_anchors`]) and writes it to `out`, with the fit's record in `out.config.json`
/// (both atomically); returns the record. `progress` gets each epoch's mean `L_CI`.
pub fn fit_and_save(
    fit: &Path,
    anchors: &Path,
    out: &Path,
    cfg: &AlignConfig,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<serde_json::Value> {
    let features = ood_core::Features::load(fit)?;
    let Some(labels) = features.labels.clone() else {
        return Err(Error::Data {
            path: fit.to_path_buf(),
            reason: "the fit features have no labels (alignment needs the class of every row)"
                .into(),
        });
    };
    let t = load_anchors(anchors)?;
    let fitted = fit_projection(features.embeddings.view(), &labels, t.view(), cfg, progress)?;
    let summary = serde_json::json!({
        "tool": "oodkit",
        "version": env!("CARGO_PKG_VERSION"),
        "command": "align",
        "config": cfg,
        "fit": {"path": fit.display().to_string(), "sha256": hashing::sha256_file(fit)?, "rows": features.len(), "dim": features.dim()},
        "anchors": {"path": anchors.display().to_string(), "sha256": hashing::sha256_file(anchors)?, "classes": t.nrows(), "dim": t.ncols()},
        "epoch_losses": fitted.epoch_losses,
        "train_anchor_accuracy": fitted.train_anchor_accuracy,
    });
    let mut proj = fitted.projection;
    proj.metadata.insert("config".into(), summary.to_string());
    proj.save(out)?;
    atomic_file::write_bytes_atomic(
        &out.with_extension("config.json"),
        (serde_json::to_string_pretty(&summary).expect("JSON values serialise") + "\n").as_bytes(),
    )?;
    Ok(summary)
}

/// `ood bench --align`: every feature file of `inputs` projected with `projection` into the text
/// space of `negatives` (its `weight` = the ID label embeddings, which become the head; logit
/// scale 100, CLIP's), each written once into `cache` under a name keyed by both files' hashes.
pub fn project_inputs(
    inputs: &FileInputs,
    projection: &Path,
    negatives: &Path,
    cache: &Path,
) -> Result<FileInputs> {
    let proj = Projection::load(projection)?;
    let anchors = load_anchors(negatives)?;
    let tag = format!(
        "{}-{}",
        &hashing::sha256_file(projection)?[..12],
        &hashing::sha256_file(negatives)?[..12]
    );
    let project = |src: &Path| -> Result<PathBuf> {
        let stem = src
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("features");
        let out = cache.join(format!("aligned-{tag}-{stem}.safetensors"));
        if !out.exists() {
            let f = ood_core::Features::load(src)?;
            proj.project_features(&f, anchors.view(), 100.0)?
                .save(&out)?;
        }
        Ok(out)
    };
    Ok(FileInputs {
        fit: project(&inputs.fit)?,
        fit_val: None,
        head: negatives.to_path_buf(),
        id: project(&inputs.id)?,
        ood: inputs
            .ood
            .iter()
            .map(|(n, g, p)| Ok((n.clone(), *g, project(p)?)))
            .collect::<Result<_>>()?,
        negatives: Some(negatives.to_path_buf()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn anchor_loss_matches_direct_formula() {
        // Direct evaluation: rows 0 and 1 are ID (classes 1 and 0), row 2 is a jigsaw view (y = K).
        let z = [[1.0f64, 2.0, 0.5], [-1.0, 0.0, 1.0], [3.0, 1.0, 1.0]];
        let t = [[0.0f64, 1.0, 0.0], [1.0, 1.0, 1.0]];
        let y = [1i64, 0, 2];
        let tau = 0.1;
        let n = |v: &[f64; 3]| {
            let s = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            [v[0] / s, v[1] / s, v[2] / s]
        };
        let mut want = 0.0;
        for i in 0..2 {
            let zi = n(&z[i]);
            let logits: Vec<f64> = t
                .iter()
                .map(|tc| {
                    let tc = n(tc);
                    (zi[0] * tc[0] + zi[1] * tc[1] + zi[2] * tc[2]) / tau
                })
                .collect();
            let lse = logits.iter().map(|l| l.exp()).sum::<f64>().ln();
            want += lse - logits[y[i] as usize];
        }
        want /= 3.0; // the jigsaw row counts in the mean
        let zt = Tensor::from_slice(&z.concat())
            .view([3, 3])
            .to_kind(Kind::Float);
        let tt = Tensor::from_slice(&t.concat())
            .view([2, 3])
            .to_kind(Kind::Float);
        let got = anchor_loss(&zt, &tt, &Tensor::from_slice(&y), tau).double_value(&[]);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn fit_aligns_clusters_through_the_folded_projection() {
        // Three Gaussian clusters in 4-d, three anchors in 5-d.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        use rand::Rng;
        let centres = array![
            [2.0f32, 0.0, 0.0, 1.0],
            [0.0, 2.0, 0.0, 1.0],
            [0.0, 0.0, 2.0, 1.0]
        ];
        let n = 300;
        let mut x = Array2::<f32>::zeros((n, 4));
        let mut labels = Vec::new();
        for i in 0..n {
            let c = i % 3;
            labels.push(c as i64);
            for j in 0..4 {
                x[[i, j]] = centres[[c, j]] + rng.gen_range(-0.5f32..0.5);
            }
        }
        let anchors = array![
            [1.0f32, 0.2, 0.0, 0.0, 0.1],
            [0.0, 1.0, 0.3, 0.0, 0.0],
            [0.1, 0.0, 0.0, 1.0, 0.5]
        ];
        let cfg = AlignConfig {
            epochs: 15,
            batch_size: 32,
            lr: 1e-2,
            ..AlignConfig::default()
        };
        let f = fit_projection(x.view(), &labels, anchors.view(), &cfg, &mut |_, _| {}).unwrap();
        let l = &f.epoch_losses;
        assert!(l[l.len() - 1] < 0.5 * l[0], "losses {l:?}");
        assert!(
            f.train_anchor_accuracy > 0.95,
            "{}",
            f.train_anchor_accuracy
        );
        assert_eq!(f.projection.input_dim(), 4);
        assert_eq!(f.projection.output_dim(), 5);
        // Same seed, same result.
        let g = fit_projection(x.view(), &labels, anchors.view(), &cfg, &mut |_, _| {}).unwrap();
        assert_eq!(f.projection.layers, g.projection.layers);
        // Bad labels are an error, not a panic.
        let mut bad = labels.clone();
        bad[0] = 3;
        assert!(fit_projection(x.view(), &bad, anchors.view(), &cfg, &mut |_, _| {}).is_err());
    }
}
