//! The registry: the one closed list of post-hoc detectors.
//!
//! Adding a detector means writing one file (params struct with the paper's defaults, `Detector`
//! impl, its [`DetectorParams`] registry metadata and search grid, a hand-computed unit test) and
//! adding one line to the `registry!` call below. The conformance suite
//! (`tests/conformance.rs`) then runs it automatically.

use crate::detector::Detector;
use crate::error::{Error, Result};
use crate::features::{Features, FitData, Head};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod ada_scale;
pub mod ash;
pub mod cadref;
pub mod caref;
pub mod cfood;
pub mod dice;
pub mod energy;
pub mod fdbd;
pub mod r#gen;
pub mod grad_norm;
pub mod gram;
pub mod grood;
pub mod iodin;
pub mod klm;
pub mod knn;
pub mod lts;
pub mod mahalanobis;
pub mod mahalanobis_ensemble;
pub mod max_logit;
pub mod mc_dropout;
pub mod mcm;
pub mod msp;
pub mod nci;
pub mod neco;
pub mod needs;
pub mod neg_label;
pub mod nn_guide;
pub mod odin;
pub mod openmax;
pub mod rank_feat;
pub mod react;
pub mod relation;
pub mod residual;
pub mod rmds;
pub mod scale;
pub mod she;
pub mod ssd;
pub mod temp_scaling;
pub mod vim;
pub mod vra;
pub mod weiper;

pub use ada_scale::{AdaScale, AdaScaleVariant};
pub use ash::{Ash, AshVariant};
pub use cadref::{Cadref, LogitMethod};
pub use caref::Caref;
pub use cfood::Cfood;
pub use dice::Dice;
pub use energy::Energy;
pub use fdbd::Fdbd;
pub use r#gen::Gen;
pub use grad_norm::GradNorm;
pub use gram::Gram;
pub use grood::{Grood, GroodNoise};
pub use iodin::Iodin;
pub use klm::Klm;
pub use knn::Knn;
pub use lts::Lts;
pub use mahalanobis::Mahalanobis;
pub use mahalanobis_ensemble::{LayerGaussian, LayerGaussians, MahalanobisEnsemble};
pub use max_logit::MaxLogit;
pub use mc_dropout::McDropout;
pub use mcm::Mcm;
pub use msp::Msp;
pub use nci::Nci;
pub use neco::Neco;
pub use needs::Needs;
pub use neg_label::NegLabel;
pub use nn_guide::NnGuide;
pub use odin::Odin;
pub use openmax::OpenMax;
pub use rank_feat::RankFeat;
pub use react::ReAct;
pub use relation::Relation;
pub use residual::Residual;
pub use rmds::Rmds;
pub use scale::Scale;
pub use she::{She, SheMetric};
pub use ssd::Ssd;
pub use temp_scaling::TempScaling;
pub use vim::Vim;
pub use vra::Vra;
pub use weiper::Weiper;

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
    /// True for detectors that OpenOOD fits on ID **validation** data (ReAct, VRA, KLM, Residual);
    /// runners pass ID val to them when it is available, else the fit data.
    const FITS_ON_VAL: bool = false;
    /// The ID-val and OOD-val scores of every candidate of a search grid at once, for detectors
    /// with a faster way than fitting each candidate (KNN: one bank, one neighbour search for
    /// every `k`). The results must equal fitting each candidate on `fit`. `None`: fit each.
    fn grid_val_scores(
        grid: &[Self],
        fit: &FitData<'_>,
        head: &Head,
        val_id: &Features,
        val_ood: &Features,
    ) -> Option<Vec<GridScores>> {
        let _ = (grid, fit, head, val_id, val_ood);
        None
    }
}

/// The validation scores (ID-val, OOD-val) of one search candidate, or why it failed.
pub type GridScores = Result<(ndarray::Array1<f32>, ndarray::Array1<f32>)>;

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
            /// [`DetectorParams::grid_val_scores`] of a grid of one detector's specs.
            pub fn grid_val_scores(
                grid: &[DetectorSpec],
                fit: &FitData<'_>,
                head: &Head,
                val_id: &Features,
                val_ood: &Features,
            ) -> Option<Vec<GridScores>> {
                match grid.first()? {
                    $(DetectorSpec::$variant(_) => {
                        let typed: Vec<$ty> = grid
                            .iter()
                            .map(|d| match d {
                                DetectorSpec::$variant(x) => Some(x.clone()),
                                #[allow(unreachable_patterns)]
                                _ => None,
                            })
                            .collect::<Option<_>>()?;
                        <$ty as DetectorParams>::grid_val_scores(&typed, fit, head, val_id, val_ood)
                    })*
                }
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
    TempScaling(TempScaling),
    MaxLogit(MaxLogit),
    Energy(Energy),
    Gen(Gen),
    Klm(Klm),
    GradNorm(GradNorm),
    React(ReAct),
    Ash(Ash),
    Scale(Scale),
    Lts(Lts),
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
    Vra(Vra),
    Nci(Nci),
    Neco(Neco),
    Odin(Odin),
    Iodin(Iodin),
    RankFeat(RankFeat),
    AdaScale(AdaScale),
    Gram(Gram),
    MahalanobisEnsemble(MahalanobisEnsemble),
    McDropout(McDropout),
    Relation(Relation),
    Ssd(Ssd),
    Caref(Caref),
    Cadref(Cadref),
    Openmax(OpenMax),
    Weiper(Weiper),
    Cfood(Cfood),
    Grood(Grood),
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
        for (k, v) in params {
            let map = obj
                .as_object_mut()
                .expect("a tagged enum serialises to an object");
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
            let default_value = map.insert(k.clone(), parsed).unwrap_or(Value::Null);
            // Check each override on its own, so the error names the parameter and its value.
            if let Err(e) = serde_json::from_value::<DetectorSpec>(obj.clone()) {
                let e = e.to_string();
                return Err(Error::InvalidParameter(format!(
                    "detector '{name}': parameter '{k}' cannot be '{v}' ({}; default {default_value})",
                    e.split(" at line").next().unwrap_or_default()
                )));
            }
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
                temperature: 1000.0,
                log: true
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
        // Issue 12: a bad value names the parameter, the value and the default.
        for (det, k, v) in [
            ("knn", "k", "abc"),
            ("knn", "k", "-3"),
            ("react", "percentile", "NaN"),
            ("msp", "temperature", "hot"),
        ] {
            let e = DetectorSpec::from_name(det, &[(k.into(), v.into())])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("parameter '{k}' cannot be '{v}'")) && e.contains("default"),
                "{e}"
            );
        }
    }
}
