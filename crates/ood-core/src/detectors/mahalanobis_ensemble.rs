//! Multi-layer Mahalanobis with input preprocessing: Lee, Lee, Lee & Shin, "A Simple Unified
//! Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018,
//! arXiv:1807.03888 (the full method; the single-layer score without preprocessing is
//! [`Mahalanobis`](crate::detectors::Mahalanobis)); OpenOOD key `mds_ensemble`
//! (`mds_ensemble_postprocessor.py`, feature type `mean`, no dimension reduction).
//!
//! The network part is two probes. On the fit data, [`Probe::LayerMeans`]: for every layer `l`
//! (the stem's output, then every stage's output) the channel means `z_l` (the spatial mean of
//! the feature map). On every scored set, [`Probe::MdsEnsemble`]: per layer, the channel means of
//! the input moved by `ε` against the sign of the gradient of its Mahalanobis distance to the
//! closest class, `x̃ = x − ε · sign(∇ₓ ½ (z_l − μ_{l,ĉ})ᵀ P_l (z_l − μ_{l,ĉ})) / σ` (one backward
//! pass per layer). That step needs the class Gaussians of the fit set, so the scored sets are
//! extracted after the fit set ([`LayerGaussians::fit`] on its layer means; `ood bench` orders
//! this by itself, `ood extract --with mahalanobis_ensemble --fit-features FIT` by hand). With
//! `epsilon = 0` nothing is perturbed and the scored sets carry [`Probe::LayerMeans`] too.
//!
//! Fit (ID train with labels): per layer, class means `μ_{l,c}` and the shared MLE covariance
//! (÷N) of the class-centred layer means, `P_l` its pseudo-inverse (the same statistics as
//! [`Mahalanobis`](crate::detectors::Mahalanobis), `kernels/class_stats.rs`).
//! Score: `s = Σ_{l ∈ layers} α_l · max_c −½ (z̃_l − μ_{l,c})ᵀ P_l (z̃_l − μ_{l,c})`. Higher = more
//! in-distribution.
//!
//! Parameters: `epsilon` (OpenOOD `noise: 0.0014`; its grid has that one value, so no sweep);
//! `layers` (indices into the probe's layers, `0` = the stem; `None` = all of them); `alpha`
//! (one weight per used layer; `None` = 1 each). Lee et al. fit `α` by logistic regression on
//! validation ID vs OOD (OpenOOD's `alpha_list: null` path, `LogisticRegressionCV`); that fit is
//! not built in: pass its weights as `alpha`. OpenOOD's shipped config uses only its first
//! feature (the stem, `layers = [0]`) with `α = [1]`.
//!
//! Differences from OpenOOD's code: the step is divided by the input's per-channel
//! normalisation std (Lee et al.'s code), where OpenOOD divides by a fixed 0.5 ("here we use the
//! default value of 0.5"), so `ε` means the same thing for every dataset and as in `odin`; the
//! loss is the sum over the batch (OpenOOD: the mean), which changes no sign. The pseudo-inverse
//! cutoff is [`Mahalanobis`](crate::detectors::Mahalanobis)'s.

use super::DetectorParams;
use crate::detector::{Detector, Scorer, check_fit_data, check_input, check_scores};
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use crate::kernels::class_stats::{fit_class_stats, pinv_rtol, sq_mahalanobis};
use crate::linalg::pinvh;
use crate::probes::Probe;
use ndarray::{Array1, Array2, ArrayView2};
use serde::{Deserialize, Serialize};

/// Multi-layer class-conditional Mahalanobis score with input preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MahalanobisEnsemble {
    /// Input-preprocessing step `ε` in `[0, 1]` pixel units (0.0014; 0 = no preprocessing).
    pub epsilon: f64,
    /// The layers scored (`0` = stem, `i + 1` = stage `i`); `None` = every layer.
    pub layers: Option<Vec<usize>>,
    /// One weight per scored layer; `None` = 1 each.
    pub alpha: Option<Vec<f64>>,
}

impl Default for MahalanobisEnsemble {
    fn default() -> Self {
        MahalanobisEnsemble {
            epsilon: 0.0014,
            layers: None,
            alpha: None,
        }
    }
}

impl MahalanobisEnsemble {
    /// The network computation the scored sets need: [`Probe::MdsEnsemble`], or
    /// [`Probe::LayerMeans`] when `epsilon = 0`.
    pub fn probe(&self) -> Probe {
        if self.epsilon == 0.0 {
            Probe::LayerMeans
        } else {
            Probe::MdsEnsemble {
                epsilon: self.epsilon,
            }
        }
    }

    /// The layers scored, checked against the `available` ones, and their weights.
    fn resolve(&self, available: usize) -> Result<(Vec<usize>, Vec<f64>)> {
        let layers = self
            .layers
            .clone()
            .unwrap_or_else(|| (0..available).collect());
        if layers.is_empty() {
            return Err(Error::InvalidParameter(
                "mahalanobis_ensemble layers must name at least one layer".into(),
            ));
        }
        if let Some(&l) = layers.iter().find(|&&l| l >= available) {
            return Err(Error::InvalidParameter(format!(
                "mahalanobis_ensemble layer {l} does not exist: the network has {available} \
                 layers (0 = stem, 1.. = its stages)"
            )));
        }
        let alpha = self
            .alpha
            .clone()
            .unwrap_or_else(|| vec![1.0; layers.len()]);
        if alpha.len() != layers.len() {
            return Err(Error::InvalidParameter(format!(
                "mahalanobis_ensemble alpha has {} weights for {} layers",
                alpha.len(),
                layers.len()
            )));
        }
        if let Some(a) = alpha.iter().find(|a| !a.is_finite()) {
            return Err(Error::InvalidParameter(format!(
                "mahalanobis_ensemble alpha must be finite, got {a}"
            )));
        }
        Ok((layers, alpha))
    }
}

/// One layer's class Gaussians: means of the classes with fit rows and the shared precision.
#[derive(Debug, Clone)]
pub struct LayerGaussian {
    /// `(m, d)` means of the `m` classes that have fit rows (absolute coordinates).
    pub means: Array2<f64>,
    /// `(d, d)` pseudo-inverse of the shared within-class covariance.
    pub precision: Array2<f64>,
    /// The global fit mean (origin of the centred coordinates used for distances).
    origin: Array1<f64>,
    /// `means − origin`.
    centres: Array2<f64>,
}

impl LayerGaussian {
    /// `(n,)` `max_c −½ (z − μ_c)ᵀ P (z − μ_c)` of the rows of `z`.
    fn score(&self, z: ArrayView2<'_, f32>) -> Array1<f64> {
        let mut h = z.mapv(|v| v as f64);
        h -= &self.origin;
        let d = sq_mahalanobis(h.view(), self.centres.view(), self.precision.view());
        d.rows()
            .into_iter()
            .map(|r| -0.5 * r.iter().copied().fold(f64::INFINITY, f64::min))
            .collect()
    }
}

/// The class Gaussians of every layer of [`Probe::LayerMeans`] (what the network side needs to
/// compute [`Probe::MdsEnsemble`], and what the detector scores against).
#[derive(Debug, Clone)]
pub struct LayerGaussians {
    layers: Vec<LayerGaussian>,
}

impl LayerGaussians {
    /// Fits every layer's class means and shared precision on the [`Probe::LayerMeans`] parts
    /// of labelled fit data for a `num_classes`-way classifier.
    pub fn fit(data: &FitData<'_>, num_classes: usize) -> Result<LayerGaussians> {
        const NAME: &str = MahalanobisEnsemble::NAME;
        if !data.has_labels() {
            return Err(Error::MissingLabels {
                detector: NAME.into(),
            });
        }
        let mut labels: Vec<i64> = Vec::with_capacity(data.len());
        let mut parts: Vec<Vec<f32>> = Vec::new();
        let mut widths: Vec<usize> = Vec::new();
        data.for_each_chunk(4096, |f| {
            let ps = f.probe_parts(&Probe::LayerMeans, NAME)?;
            if widths.is_empty() {
                widths = ps.iter().map(|p| p.ncols()).collect();
                parts = vec![Vec::new(); ps.len()];
            } else if ps.len() != widths.len() {
                return Err(Error::dim(
                    "mahalanobis_ensemble layers",
                    widths.len(),
                    ps.len(),
                ));
            }
            for (p, v) in ps.iter().zip(parts.iter_mut()) {
                v.extend(p.iter().copied());
            }
            labels.extend(f.labels.as_ref().expect("labelled").iter().copied());
            Ok(())
        })?;
        let n = labels.len();
        let layers = parts
            .into_iter()
            .zip(&widths)
            .map(|(v, &d)| {
                let z = Array2::from_shape_vec((n, d), v).expect("rows of one width");
                // The class statistics kernel reads features against a head's shape: a zero
                // head of this layer's width and the classifier's class count.
                let head = Head::new(Array2::zeros((num_classes, d)), Array1::zeros(num_classes))?;
                let f = Features::with_head(z, &head, Some(labels.clone()))?;
                let st = fit_class_stats(&(&f).into(), &head, false, NAME)?;
                let precision = pinvh(st.within.view(), Some(pinv_rtol(d)))?;
                let centres = &st.means - &st.global_mean;
                Ok(LayerGaussian {
                    means: st.means,
                    precision,
                    origin: st.global_mean,
                    centres,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LayerGaussians { layers })
    }

    /// The layers, stem first.
    pub fn layers(&self) -> &[LayerGaussian] {
        &self.layers
    }

    /// SHA-256 of every layer's means and precision (little-endian f64 bytes): identifies the
    /// fit statistics in cache keys of extractions that depend on them.
    pub fn digest(&self) -> String {
        let mut bytes = Vec::new();
        for l in &self.layers {
            for v in l.means.iter().chain(l.precision.iter()) {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        crate::hashing::sha256_bytes(&bytes)
    }
}

#[derive(Debug)]
struct EnsembleScorer {
    probe: Probe,
    gaussians: LayerGaussians,
    layers: Vec<usize>,
    alpha: Vec<f64>,
    head: Head,
}

impl Detector for MahalanobisEnsemble {
    fn fit(&self, data: &FitData<'_>, head: &Head) -> Result<Box<dyn Scorer>> {
        self.probe().validate()?;
        check_fit_data(data, head, 1)?;
        let gaussians = LayerGaussians::fit(data, head.num_classes())?;
        let (layers, alpha) = self.resolve(gaussians.layers.len())?;
        Ok(Box::new(EnsembleScorer {
            probe: self.probe(),
            gaussians,
            layers,
            alpha,
            head: head.clone(),
        }))
    }
}

impl Scorer for EnsembleScorer {
    fn score(&self, x: &Features) -> Result<Array1<f32>> {
        check_input(x, &self.head)?;
        let parts = x.probe_parts(&self.probe, MahalanobisEnsemble::NAME)?;
        let g = &self.gaussians.layers;
        if parts.len() != g.len()
            || parts
                .iter()
                .zip(g)
                .any(|(p, l)| p.ncols() != l.means.ncols())
        {
            return Err(Error::InvalidParameter(format!(
                "mahalanobis_ensemble: the scored '{}' parts do not have the fitted layers' shapes",
                self.probe.tensor_name()
            )));
        }
        let mut total = Array1::<f64>::zeros(x.len());
        for (&l, &a) in self.layers.iter().zip(&self.alpha) {
            total.scaled_add(a, &g[l].score(parts[l]));
        }
        check_scores(MahalanobisEnsemble::NAME, total.mapv(|v| v as f32))
    }
}

impl DetectorParams for MahalanobisEnsemble {
    const NAME: &'static str = "mahalanobis_ensemble";
    const ABOUT: &'static str = "multi-layer class-conditional Mahalanobis on channel means with input preprocessing (Lee et al., NeurIPS'18; OpenOOD mds_ensemble)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// Two layers, two classes: layer 0 is 1-D, layer 1 the 2-D toy of `class_stats`.
    fn fit_data() -> (Features, Head) {
        let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
        let emb = array![[1.0f32, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0]];
        let mut f = Features::with_head(emb, &head, Some(vec![0, 0, 1, 1])).unwrap();
        f.set_probe_part(
            &Probe::LayerMeans,
            0,
            array![[0.0f32], [2.0], [10.0], [12.0]],
        )
        .unwrap();
        f.set_probe_part(
            &Probe::LayerMeans,
            1,
            array![[1.0f32, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0]],
        )
        .unwrap();
        (f, head)
    }

    #[test]
    fn ensemble_matches_hand_computation() {
        let (fit, head) = fit_data();
        // Layer 0: μ = 1, 11; σ² = 1 → P = 1. Layer 1: μ = (2,0), (0,2); Σ = diag(.5,.5), P = 2I.
        let det = MahalanobisEnsemble {
            epsilon: 0.0,
            layers: None,
            alpha: Some(vec![2.0, 0.5]),
        };
        let sc = det.fit(&(&fit).into(), &head).unwrap();
        let mut x = Features::with_head(array![[0.0f32, 0.0], [0.0, 0.0]], &head, None).unwrap();
        x.set_probe_part(&Probe::LayerMeans, 0, array![[4.0f32], [11.0]])
            .unwrap();
        x.set_probe_part(&Probe::LayerMeans, 1, array![[1.0f32, 1.0], [0.0, 2.0]])
            .unwrap();
        let s = sc.score(&x).unwrap();
        // Row 0: layer 0 −½·9, layer 1 −½·4 → 2·(−4.5) + 0.5·(−2) = −10. Row 1: 0.
        assert!((s[0] + 10.0).abs() < 1e-5 && s[1].abs() < 1e-6, "{s}");
        // One layer only, default weight.
        let one = MahalanobisEnsemble {
            epsilon: 0.0,
            layers: Some(vec![1]),
            alpha: None,
        };
        let s = one.fit(&(&fit).into(), &head).unwrap().score(&x).unwrap();
        assert!((s[0] + 2.0).abs() < 1e-6, "{s}");
        // The default scores the perturbed probe, which these features lack.
        let sc = MahalanobisEnsemble::default()
            .fit(&(&fit).into(), &head)
            .unwrap();
        let e = sc.score(&x).err().unwrap().to_string();
        assert!(e.contains("mds_ensemble(eps=0.0014)"), "{e}");
    }

    #[test]
    fn bad_layers_alpha_and_missing_fit_probe_are_errors() {
        let (fit, head) = fit_data();
        for (det, needle) in [
            (
                MahalanobisEnsemble {
                    layers: Some(vec![2]),
                    ..Default::default()
                },
                "layer 2 does not exist",
            ),
            (
                MahalanobisEnsemble {
                    alpha: Some(vec![1.0]),
                    ..Default::default()
                },
                "1 weights for 2 layers",
            ),
            (
                MahalanobisEnsemble {
                    epsilon: f64::NAN,
                    ..Default::default()
                },
                "epsilon",
            ),
        ] {
            let e = det.fit(&(&fit).into(), &head).err().unwrap().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let bare = Features::with_head(fit.embeddings.clone(), &head, fit.labels.clone()).unwrap();
        let e = MahalanobisEnsemble::default()
            .fit(&(&bare).into(), &head)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("layer_means"), "{e}");
        let g = LayerGaussians::fit(&(&fit).into(), 2).unwrap();
        assert_eq!(g.layers().len(), 2);
        assert_eq!(g.digest().len(), 64);
        assert_ne!(
            g.digest(),
            LayerGaussians::fit(&(&bare_with_shift(&fit)).into(), 2)
                .unwrap()
                .digest()
        );
    }

    /// `fit` with layer 0 shifted by 1 (different statistics, different digest).
    fn bare_with_shift(fit: &Features) -> Features {
        let mut f = fit.clone();
        let p0 = fit.probe_parts(&Probe::LayerMeans, "t").unwrap()[0].mapv(|v| v + 1.0);
        f.set_probe_part(&Probe::LayerMeans, 0, p0).unwrap();
        f
    }
}
