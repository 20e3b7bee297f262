//! Probes: numbers a network computes for a detector besides the penultimate features and the
//! logits (ODIN's perturbed logits, ...). House rule 1: detectors see numbers, not networks.
//! The network side (`ood-nn`) computes each requested probe during extraction and stores it in
//! the feature file as an `(n, k)` f32 tensor named [`Probe::tensor_name`]; the detector that
//! asked for it ([`crate::DetectorSpec::probes`]) reads it from [`crate::Features::probe`].
//!
//! A probe is data, keyed by its parameters: ODIN at `T = 1000, ε = 0.0014` and at
//! `T = 1, ε = 0.0028` are two probes, two tensors, two cache keys.

use serde::{Deserialize, Serialize};

/// The prefix of probe tensor names in feature files.
pub const TENSOR_PREFIX: &str = "probe:";

/// One network computation a detector needs at score time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum Probe {
    /// ODIN's input perturbation (Liang et al., ICLR 2018; OpenOOD `odin_postprocessor.py`):
    /// the logits `f(x̃)` of `x̃ = x − ε · sign(∇ₓ CE(f(x)/T, ŷ)) / σ`, `ŷ = argmax f(x)`, where
    /// `x` is the normalised input, `σ` the per-channel std of its normalisation (so `ε` is in
    /// units of `[0, 1]` pixel values) and a zero gradient counts as positive. `(n, c)`.
    Odin {
        /// Temperature `T` of the loss whose gradient gives the perturbation.
        temperature: f64,
        /// Step `ε` in `[0, 1]` pixel units.
        epsilon: f64,
    },
    /// i-ODIN (OpenOOD `iodin_postprocessor.py`): ODIN's step applied to the one input element
    /// (pixel and channel) with the largest `|∇ₓ|` per image, the rest unchanged. `(n, c)`.
    Iodin {
        /// Temperature `T` of the loss whose gradient gives the perturbation.
        temperature: f64,
        /// Step `ε` in `[0, 1]` pixel units.
        epsilon: f64,
    },
    /// RankFeat (Song et al., NeurIPS 2022; OpenOOD `rankfeat_postprocessor.py`): the mean of two
    /// logit vectors, each computed after removing the rank-1 component `s₁u₁v₁ᵀ` (exact SVD)
    /// of a `(channels, h·w)` feature map: the last stage's output (then pooled and fed to the
    /// head), and the second-to-last stage's output (then through the last stage, pooled, fed to
    /// the head). OpenOOD's "block 4" and "block 3" of a 4-stage ResNet; the last two of the 3
    /// stages of a CIFAR ResNet or WRN. `(n, c)`.
    RankFeat,
    /// AdaSCALE (Regmi et al., 2025; OpenOOD `adascale_postprocessor.py`): the penultimate
    /// features of `x + 0.5 · sign(∇ₓ z_ŷ) · mask`, where `z_ŷ` is the predicted class's logit and
    /// `mask` selects the `⌊o · c·h·w⌋` elements of smallest `|∇ₓ z_ŷ|` per image (normalised
    /// input units, as OpenOOD). `(n, d)`.
    AdaScale {
        /// Fraction of input elements perturbed.
        o: f64,
    },
    /// Gram matrices (Sastry & Oore, ICML 2020; OpenOOD `gram_postprocessor.py`): for every
    /// convolution's output `F` (`(channels, h·w)`, the raw convolution before BatchNorm, in
    /// execution order) and every power `p ∈ 1..=powers`, the row sums of `Fᵖ(Fᵖ)ᵀ` taken to the
    /// signed `1/p`-th power: `(n, channels)` per layer and power. Stored as one tensor per layer,
    /// [`Probe::part_name`] `i`, `(n, powers · channels)` (power-major).
    Gram {
        /// The largest power (OpenOOD: 5, powers 1..=5).
        powers: u32,
    },
    /// Per-layer channel means (Lee et al., NeurIPS 2018; OpenOOD `mds_ensemble`'s `mean`
    /// feature type): the spatial mean of the stem's output (part 0) and of every stage's output
    /// (part `i + 1` for stage `i`), `(n, channels)` per part. What the multi-layer Mahalanobis
    /// detector fits its class Gaussians on, and scores when it perturbs nothing (`ε = 0`).
    LayerMeans,
    /// Lee et al.'s input preprocessing for the multi-layer Mahalanobis score: for every layer
    /// `l` of [`Probe::LayerMeans`], the channel means of layer `l` at
    /// `x̃ = x − ε · sign(∇ₓ ½ (z_l − μ_{l,ĉ})ᵀ P_l (z_l − μ_{l,ĉ})) / σ`, with `z_l` the layer's
    /// channel means, `ĉ` its closest class and `(μ_l, P_l)` the class means and shared precision
    /// fitted on the fit set's layer means (so extraction needs them first: a two-phase
    /// extraction). A zero gradient counts as positive. Parts as [`Probe::LayerMeans`].
    MdsEnsemble {
        /// Step `ε` in `[0, 1]` pixel units (OpenOOD: 0.0014).
        epsilon: f64,
    },
}

impl Probe {
    /// Checks the parameters before any network work: `T` finite and `> 0`, `ε` finite and
    /// `≥ 0`, `0 < o ≤ 1`, `powers ≥ 1`. The error names the probe and the parameter.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |what: String| {
            Err(crate::Error::InvalidParameter(format!(
                "{} ({}): {what}",
                self.method(),
                self.key()
            )))
        };
        match *self {
            Probe::Odin {
                temperature,
                epsilon,
            }
            | Probe::Iodin {
                temperature,
                epsilon,
            } => {
                if !(temperature > 0.0 && temperature.is_finite()) {
                    return bad(format!(
                        "temperature must be finite and > 0, got {temperature}"
                    ));
                }
                if !(epsilon >= 0.0 && epsilon.is_finite()) {
                    return bad(format!("epsilon must be finite and >= 0, got {epsilon}"));
                }
            }
            Probe::AdaScale { o } if !(o > 0.0 && o <= 1.0) => {
                return bad(format!("o must be in (0, 1], got {o}"));
            }
            Probe::Gram { powers: 0 } => return bad("powers must be at least 1".into()),
            Probe::MdsEnsemble { epsilon } if !(epsilon >= 0.0 && epsilon.is_finite()) => {
                return bad(format!("epsilon must be finite and >= 0, got {epsilon}"));
            }
            _ => {}
        }
        Ok(())
    }

    /// A short stable key naming the probe and its parameters, e.g. `odin(T=1000,eps=0.0014)`
    /// (part of tensor names and cache keys; `{}` formatting of f64 round-trips).
    pub fn key(&self) -> String {
        match self {
            Probe::Odin {
                temperature,
                epsilon,
            } => format!("odin(T={temperature},eps={epsilon})"),
            Probe::Iodin {
                temperature,
                epsilon,
            } => format!("iodin(T={temperature},eps={epsilon})"),
            Probe::RankFeat => "rankfeat".into(),
            Probe::AdaScale { o } => format!("adascale(o={o})"),
            Probe::Gram { powers } => format!("gram(powers=1..{powers})"),
            Probe::LayerMeans => "layer_means".into(),
            Probe::MdsEnsemble { epsilon } => format!("mds_ensemble(eps={epsilon})"),
        }
    }

    /// The name of the probe's tensor in a feature file: `probe:` + [`Probe::key`].
    pub fn tensor_name(&self) -> String {
        format!("{TENSOR_PREFIX}{}", self.key())
    }

    /// Whether the probe is stored as several tensors (parts), not one.
    pub fn multi_part(&self) -> bool {
        matches!(
            self,
            Probe::Gram { .. } | Probe::LayerMeans | Probe::MdsEnsemble { .. }
        )
    }

    /// Whether computing the probe needs class statistics of the fit set first
    /// ([`Probe::MdsEnsemble`]: its perturbation follows the closest class Gaussian).
    pub fn needs_fit_statistics(&self) -> bool {
        matches!(self, Probe::MdsEnsemble { .. })
    }

    /// The name of part `i` of a probe stored as several tensors ([`Probe::Gram`],
    /// [`Probe::LayerMeans`], [`Probe::MdsEnsemble`]: one per layer): [`Probe::tensor_name`] + `#` + `i` in three digits, so names sort in part order.
    pub fn part_name(&self, i: usize) -> String {
        format!("{}#{i:03}", self.tensor_name())
    }

    /// The method whose network computation this is (`odin`, `iodin`, `rank_feat`,
    /// `ada_scale`, `gram`, `mahalanobis_ensemble`), for messages.
    pub fn method(&self) -> &'static str {
        match self {
            Probe::Odin { .. } => "odin",
            Probe::Iodin { .. } => "iodin",
            Probe::RankFeat => "rank_feat",
            Probe::AdaScale { .. } => "ada_scale",
            Probe::Gram { .. } => "gram",
            Probe::LayerMeans | Probe::MdsEnsemble { .. } => "mahalanobis_ensemble",
        }
    }
}

/// Appends to `out` the probes of `more` it does not hold yet, in order.
pub fn extend_unique(out: &mut Vec<Probe>, more: impl IntoIterator<Item = Probe>) {
    for p in more {
        if !out.contains(&p) {
            out.push(p);
        }
    }
}

/// The cache-key suffix of a set of probes: their keys, sorted and deduplicated, joined by `+`
/// (empty for none, so extractions without probes keep their keys).
pub fn probes_key(probes: &[Probe]) -> String {
    let mut keys: Vec<String> = probes.iter().map(Probe::key).collect();
    keys.sort();
    keys.dedup();
    keys.join("+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_parameters_and_sort() {
        let a = Probe::Odin {
            temperature: 1000.0,
            epsilon: 0.0014,
        };
        let b = Probe::Iodin {
            temperature: 1.0,
            epsilon: 0.0028,
        };
        assert_eq!(a.key(), "odin(T=1000,eps=0.0014)");
        assert_eq!(a.tensor_name(), "probe:odin(T=1000,eps=0.0014)");
        assert_eq!(
            probes_key(&[a, b, a]),
            "iodin(T=1,eps=0.0028)+odin(T=1000,eps=0.0014)"
        );
        assert_eq!(probes_key(&[]), "");
        let j = serde_json::to_string(&a).unwrap();
        assert_eq!(
            j,
            r#"{"name":"odin","temperature":1000.0,"epsilon":0.0014}"#
        );
        assert_eq!(serde_json::from_str::<Probe>(&j).unwrap(), a);
        // Parameters the network side cannot run with are errors naming them, not panics.
        assert!(a.validate().is_ok() && b.validate().is_ok());
        for (p, needle) in [
            (Probe::AdaScale { o: 2.0 }, "o must be"),
            (Probe::AdaScale { o: -0.1 }, "o must be"),
            (Probe::Gram { powers: 0 }, "powers"),
            (Probe::MdsEnsemble { epsilon: -1.0 }, "epsilon"),
            (
                Probe::Odin {
                    temperature: 0.0,
                    epsilon: 0.1,
                },
                "temperature",
            ),
            (
                Probe::Iodin {
                    temperature: 1.0,
                    epsilon: f64::NAN,
                },
                "epsilon",
            ),
        ] {
            let e = p.validate().unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains(p.method()), "{e}");
        }
    }
}
