//! The registry: the one closed list of post-hoc detectors.
//!
//! Adding a detector means writing one file (params struct with the paper's defaults, `Detector`
//! impl, a hand-computed unit test) and adding one line to the `registry!` call below. The
//! conformance suite (`tests/conformance.rs`) then runs it automatically.

use crate::detector::Detector;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod ash;
pub mod dice;
pub mod energy;
pub mod fdbd;
pub mod r#gen;
pub mod grad_norm;
pub mod klm;
pub mod knn;
pub mod mahalanobis;
pub mod max_logit;
pub mod mcm;
pub mod msp;
pub mod needs;
pub mod neg_label;
pub mod nn_guide;
pub mod react;
pub mod residual;
pub mod rmds;
pub mod scale;
pub mod she;
pub mod vim;

pub use ash::{Ash, AshVariant};
pub use dice::Dice;
pub use energy::Energy;
pub use fdbd::Fdbd;
pub use r#gen::Gen;
pub use grad_norm::GradNorm;
pub use klm::Klm;
pub use knn::Knn;
pub use mahalanobis::Mahalanobis;
pub use max_logit::MaxLogit;
pub use mcm::Mcm;
pub use msp::Msp;
pub use needs::Needs;
pub use neg_label::NegLabel;
pub use nn_guide::NnGuide;
pub use react::ReAct;
pub use residual::Residual;
pub use rmds::Rmds;
pub use scale::Scale;
pub use she::{She, SheMetric};
pub use vim::Vim;

/// What every registered detector's params struct provides besides [`Detector`].
pub trait DetectorParams:
    Detector + Default + Clone + Serialize + for<'de> Deserialize<'de> + 'static
{
    /// The registry name (snake_case, used on the command line).
    const NAME: &'static str;
    /// One line: what the method is and where it comes from.
    const ABOUT: &'static str;
    /// The automatic-parameter-search grid (OpenOOD's `postprocessor_sweep`), in OpenOOD's
    /// candidate order (first listed parameter varies fastest). Empty: nothing to tune.
    fn sweep(&self) -> Vec<Self> {
        Vec::new()
    }
    /// True for detectors that OpenOOD fits on ID **validation** data (ReAct, KLM, Residual);
    /// runners pass ID val to them when it is available, else the fit data.
    const FITS_ON_VAL: bool = false;
}

macro_rules! registry {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        /// Every detector, as data: `{"name": "knn", "k": 50}` in JSON.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "name", rename_all = "snake_case")]
        pub enum DetectorSpec {
            $(
                #[doc = concat!("See [`", stringify!($ty), "`].")]
                $variant($ty),
            )*
        }

        impl DetectorSpec {
            /// The detector behind this spec.
            pub fn as_detector(&self) -> &dyn Detector {
                match self { $(DetectorSpec::$variant(d) => d,)* }
            }
            /// Registry name.
            pub fn name(&self) -> &'static str {
                match self { $(DetectorSpec::$variant(_) => <$ty as DetectorParams>::NAME,)* }
            }
            /// One-line description.
            pub fn about(&self) -> &'static str {
                match self { $(DetectorSpec::$variant(_) => <$ty as DetectorParams>::ABOUT,)* }
            }
            /// Whether OpenOOD fits this detector on ID validation data.
            pub fn fits_on_val(&self) -> bool {
                match self { $(DetectorSpec::$variant(_) => <$ty as DetectorParams>::FITS_ON_VAL,)* }
            }
            /// Every detector with its default (paper) parameters, in registry order.
            pub fn all_defaults() -> Vec<DetectorSpec> {
                vec![$(DetectorSpec::$variant(<$ty>::default()),)*]
            }
            /// The search grid of this detector (empty when it has nothing to tune).
            pub fn sweep(&self) -> Vec<DetectorSpec> {
                match self { $(DetectorSpec::$variant(d) => d.sweep().into_iter().map(DetectorSpec::$variant).collect(),)* }
            }
        }
    };
}

registry! {
    Msp(Msp),
    MaxLogit(MaxLogit),
    Energy(Energy),
    Gen(Gen),
    Klm(Klm),
    GradNorm(GradNorm),
    React(ReAct),
    Ash(Ash),
    Scale(Scale),
    Dice(Dice),
    She(She),
    Fdbd(Fdbd),
    Mcm(Mcm),
    NegLabel(NegLabel),
    Knn(Knn),
    Mahalanobis(Mahalanobis),
    Rmds(Rmds),
    Vim(Vim),
    Residual(Residual),
    NnGuide(NnGuide),
}

impl DetectorParams for Msp {
    const NAME: &'static str = "msp";
    const ABOUT: &'static str = "maximum softmax probability (Hendrycks & Gimpel, ICLR'17)";
}
impl DetectorParams for MaxLogit {
    const NAME: &'static str = "max_logit";
    const ABOUT: &'static str = "maximum logit (Hendrycks et al., ICML'22)";
}
impl DetectorParams for Energy {
    const NAME: &'static str = "energy";
    const ABOUT: &'static str = "negative free energy T·lse(z/T) (Liu et al., NeurIPS'20)";
    fn sweep(&self) -> Vec<Self> {
        vec![Energy { temperature: 1.0 }]
    }
}

impl DetectorParams for Gen {
    const NAME: &'static str = "gen";
    const ABOUT: &'static str = "generalized entropy of the top-M softmax (Liu et al., CVPR'23)";
    fn sweep(&self) -> Vec<Self> {
        let gammas = [0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0];
        let ms = [10, 50, 100, 200, 500, 1000];
        ms.iter()
            .flat_map(|&m| gammas.iter().map(move |&gamma| Gen { gamma, m }))
            .collect()
    }
}
impl DetectorParams for Klm {
    const FITS_ON_VAL: bool = true;
    const NAME: &'static str = "klm";
    const ABOUT: &'static str =
        "KL matching to class-mean softmax, fit on ID val (Hendrycks et al., ICML'22)";
}
impl DetectorParams for GradNorm {
    const NAME: &'static str = "grad_norm";
    const ABOUT: &'static str =
        "L1 norm of the last-layer KL-to-uniform gradient (Huang et al., NeurIPS'21)";
}
impl DetectorParams for ReAct {
    const FITS_ON_VAL: bool = true;
    const NAME: &'static str = "react";
    const ABOUT: &'static str =
        "energy after clipping at an ID-val activation percentile (Sun et al., NeurIPS'21)";
    fn sweep(&self) -> Vec<Self> {
        [85.0, 90.0, 95.0, 99.0]
            .into_iter()
            .map(|percentile| ReAct { percentile })
            .collect()
    }
}
impl DetectorParams for Ash {
    const NAME: &'static str = "ash";
    const ABOUT: &'static str =
        "energy after activation shaping, ASH-B by default (Djurisic et al., ICLR'23)";
    fn sweep(&self) -> Vec<Self> {
        [65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0]
            .into_iter()
            .map(|percentile| Ash {
                percentile,
                ..self.clone()
            })
            .collect()
    }
}
impl DetectorParams for Scale {
    const NAME: &'static str = "scale";
    const ABOUT: &'static str =
        "energy after exp(S_all/S_top-k) feature scaling (Xu et al., ICLR'24)";
    fn sweep(&self) -> Vec<Self> {
        [65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0]
            .into_iter()
            .map(|percentile| Scale { percentile })
            .collect()
    }
}
impl DetectorParams for Dice {
    const NAME: &'static str = "dice";
    const ABOUT: &'static str = "energy with contribution-sparsified weights (Sun & Li, ECCV'22)";
}
impl DetectorParams for She {
    const NAME: &'static str = "she";
    const ABOUT: &'static str =
        "simplified Hopfield energy to class patterns (Zhang et al., ICLR'23)";
}
impl DetectorParams for Fdbd {
    const NAME: &'static str = "fdbd";
    const ABOUT: &'static str = "feature distance to decision boundaries (Liu & Qin, ICML'24)";
    fn sweep(&self) -> Vec<Self> {
        [true, false]
            .into_iter()
            .map(|distance_as_normalizer| Fdbd {
                distance_as_normalizer,
            })
            .collect()
    }
}
impl DetectorParams for Mcm {
    const NAME: &'static str = "mcm";
    const ABOUT: &'static str = "max softmax of CLIP image-label cosines (Ming et al., NeurIPS'22)";
}
impl DetectorParams for NegLabel {
    const NAME: &'static str = "neg_label";
    const ABOUT: &'static str =
        "CLIP score against ID and mined negative labels; needs negatives (Jiang et al., ICLR'24)";
}
impl DetectorParams for Knn {
    const NAME: &'static str = "knn";
    const ABOUT: &'static str =
        "negated k-th squared distance to normalised ID features (Sun et al., ICML'22)";
    fn sweep(&self) -> Vec<Self> {
        self.sweep_grid()
    }
}

impl DetectorParams for Mahalanobis {
    const NAME: &'static str = "mahalanobis";
    const ABOUT: &'static str = "class-conditional Mahalanobis distance, shared covariance (Lee et al., NeurIPS'18); normalize=true is ReweightOOD's scorer";
}
impl DetectorParams for Rmds {
    const NAME: &'static str = "rmds";
    const ABOUT: &'static str =
        "relative Mahalanobis distance against a background Gaussian (Ren et al., 2021)";
}
impl DetectorParams for Vim {
    const NAME: &'static str = "vim";
    const ABOUT: &'static str =
        "energy minus scaled residual norm outside the principal subspace (Wang et al., CVPR'22)";
    fn sweep(&self) -> Vec<Self> {
        self.sweep_grid()
    }
}
impl DetectorParams for Residual {
    const FITS_ON_VAL: bool = true;
    const NAME: &'static str = "residual";
    const ABOUT: &'static str = "negated residual norm outside the principal subspace, fitted on ID val (Wang et al., CVPR'22)";
}
impl DetectorParams for NnGuide {
    const NAME: &'static str = "nn_guide";
    const ABOUT: &'static str =
        "energy times mean similarity to a confidence-weighted ID bank (Park et al., ICCV'23)";
}

impl DetectorSpec {
    /// The registry names, in order.
    pub fn names() -> Vec<&'static str> {
        Self::all_defaults().iter().map(|d| d.name()).collect()
    }

    /// The default spec of `name` with `key=value` overrides. Values parse as JSON (numbers,
    /// booleans, strings, lists) and fall back to plain strings. Unknown names and unknown or
    /// ill-typed parameters are errors that list what is valid.
    pub fn from_name(name: &str, params: &[(String, String)]) -> Result<DetectorSpec> {
        let default = Self::all_defaults()
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| {
                Error::InvalidParameter(format!(
                    "unknown detector '{name}' (known: {})",
                    Self::names().join(", ")
                ))
            })?;
        let mut obj = serde_json::to_value(&default).expect("specs serialise");
        let map = obj
            .as_object_mut()
            .expect("a tagged enum serialises to an object");
        for (k, v) in params {
            if k == "name" || !map.contains_key(k) {
                let known: Vec<&str> = map
                    .keys()
                    .filter(|k| *k != "name")
                    .map(String::as_str)
                    .collect();
                return Err(Error::InvalidParameter(format!(
                    "detector '{name}' has no parameter '{k}' (parameters: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            let parsed =
                serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.clone()));
            map.insert(k.clone(), parsed);
        }
        serde_json::from_value(obj)
            .map_err(|e| Error::InvalidParameter(format!("detector '{name}': {e}")))
    }

    /// Parameters as a JSON object (without the name).
    pub fn params(&self) -> serde_json::Map<String, Value> {
        let mut v = serde_json::to_value(self).expect("specs serialise");
        let m = v.as_object_mut().expect("object");
        m.remove("name");
        m.clone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::features::{Features, Head};
    use ndarray::{Array1, Array2, array};

    /// The spec's section 9.4 logits, as features whose embeddings equal the logits under an
    /// identity head.
    pub(crate) fn spec_logits() -> (Features, Head) {
        let z = array![
            [3.0f32, 1.0, 0.2, -1.0],
            [0.5, 0.4, 0.3, 0.2],
            [-2.0, 4.0, 4.0, 1.0]
        ];
        let head = Head::new(Array2::eye(4), Array1::zeros(4)).unwrap();
        (Features::with_head(z, &head, None).unwrap(), head)
    }

    #[test]
    fn registry_names_are_unique_and_parse_params() {
        let names = DetectorSpec::names();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        let d = DetectorSpec::from_name("msp", &[("temperature".into(), "1000".into())]).unwrap();
        assert_eq!(
            d,
            DetectorSpec::Msp(Msp {
                temperature: 1000.0
            })
        );
        let e = DetectorSpec::from_name("msp", &[("k".into(), "3".into())])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no parameter 'k'") && e.contains("temperature"),
            "{e}"
        );
        let e = DetectorSpec::from_name("nope", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown detector 'nope'") && e.contains("msp"),
            "{e}"
        );
        let e = DetectorSpec::from_name("msp", &[("temperature".into(), "hot".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("detector 'msp'"), "{e}");
    }
}
