//! What each detector reads: penultimate features, logits, the head's weights, labels of the fit
//! data, negative labels. Front ends (the Python package, `ood list detectors`) use it to ask for
//! exactly the inputs a detector needs; the match is exhaustive, so a new detector must say what
//! it needs here.

use super::DetectorSpec;
use crate::probes::{Probe, extend_unique};
use serde::{Deserialize, Serialize};

/// The inputs a detector reads (fit and score alike, except `labels`, which only fitting reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needs {
    /// The `(n, d)` penultimate features (or image embeddings).
    pub features: bool,
    /// The `(n, c)` logits (given, or computed from the head).
    pub logits: bool,
    /// The head's weight and bias themselves (not only its shape).
    pub head: bool,
    /// Class labels of the fit data.
    pub labels: bool,
    /// Negative-label embeddings (`neg_label`'s `negatives`).
    pub negatives: bool,
    /// OOD validation features (`grood`'s noise prototype, [`crate::SideInputs::ood_val`]).
    pub ood_val: bool,
    /// Probe tensors the network computes at extraction ([`DetectorSpec::probes`]).
    pub network: bool,
}

impl Needs {
    const fn new(features: bool, logits: bool, head: bool, labels: bool) -> Needs {
        Needs {
            features,
            logits,
            head,
            labels,
            negatives: false,
            ood_val: false,
            network: false,
        }
    }

    /// The names of the needed inputs, in a fixed order (`features`, `logits`, `head`, `labels`,
    /// `negatives`, `ood_val`, `network`).
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.features, "features"),
            (self.logits, "logits"),
            (self.head, "head"),
            (self.labels, "labels"),
            (self.negatives, "negatives"),
            (self.ood_val, "ood_val"),
            (self.network, "network"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
    }
}

impl DetectorSpec {
    /// What this detector reads (see [`Needs`]).
    pub fn needs(&self) -> Needs {
        use DetectorSpec::*;
        match self {
            Msp(_) | MaxLogit(_) | Energy(_) | Gen(_) | Klm(_) => {
                Needs::new(false, true, false, false)
            }
            McDropout(_) => Needs::new(true, false, true, false),
            GradNorm(_) | NnGuide(_) | Relation(_) | Caref(_) | Lts(_) => {
                Needs::new(true, true, false, false)
            }
            React(_) | Vra(_) | Ash(_) | Scale(_) | Dice(_) | Mcm(_) | Residual(_) | Weiper(_) => {
                Needs::new(true, false, true, false)
            }
            Fdbd(_) | Vim(_) | Nci(_) | Cadref(_) => Needs::new(true, true, true, false),
            Neco(n) => Needs::new(true, n.max_logit, false, false),
            Ssd(s) => Needs::new(true, false, false, s.labels),
            She(_) => Needs::new(true, true, false, true),
            TempScaling(_) | Openmax(_) => Needs::new(false, true, false, true),
            Knn(_) | Cfood(_) => Needs::new(true, false, false, false),
            Mahalanobis(_) | Rmds(_) => Needs::new(true, false, false, true),
            Grood(g) => Needs {
                ood_val: g.noise == super::GroodNoise::ValOod,
                ..Needs::new(true, true, false, true)
            },
            NegLabel(_) => Needs {
                negatives: true,
                ..Needs::new(true, false, true, false)
            },
            Odin(_) | Iodin(_) | RankFeat(_) => Needs {
                network: true,
                ..Needs::new(false, false, false, false)
            },
            Gram(_) => Needs {
                network: true,
                ..Needs::new(false, true, false, true)
            },
            MahalanobisEnsemble(_) => Needs {
                network: true,
                ..Needs::new(false, false, false, true)
            },
            AdaScale(_) => Needs {
                network: true,
                ..Needs::new(true, false, true, false)
            },
        }
    }

    /// The probes of `specs` without repeats, in first-seen order; with `sweep`, also those of
    /// their search grids (what the validation sets of a parameter search need).
    pub fn probes_of(specs: &[DetectorSpec], sweep: bool) -> Vec<Probe> {
        Self::collect_probes(specs, sweep, DetectorSpec::probes)
    }

    /// `of` of `specs` (and of their grids with `sweep`) without repeats, in first-seen order.
    fn collect_probes(
        specs: &[DetectorSpec],
        sweep: bool,
        of: fn(&DetectorSpec) -> Vec<Probe>,
    ) -> Vec<Probe> {
        let mut out = Vec::new();
        for s in specs {
            let grid = if sweep { s.sweep() } else { Vec::new() };
            for d in std::iter::once(s).chain(&grid) {
                extend_unique(&mut out, of(d));
            }
        }
        out
    }

    /// The network computations this detector needs in its fit data (AdaSCALE's perturbed
    /// features of the ID val rows, Gram's statistics, the multi-layer Mahalanobis' layer
    /// means); empty for most.
    pub fn fit_probes(&self) -> Vec<Probe> {
        match self {
            DetectorSpec::AdaScale(d) => vec![d.probe()],
            DetectorSpec::Gram(d) => vec![d.probe()],
            DetectorSpec::MahalanobisEnsemble(_) => vec![Probe::LayerMeans],
            _ => Vec::new(),
        }
    }

    /// [`DetectorSpec::fit_probes`] of `specs` without repeats; with `sweep`, also those of their
    /// search grids.
    pub fn fit_probes_of(specs: &[DetectorSpec], sweep: bool) -> Vec<Probe> {
        Self::collect_probes(specs, sweep, DetectorSpec::fit_probes)
    }

    /// The network computations this detector scores ([`crate::probes`]): extraction must store
    /// them in the feature files of the sets it scores (empty for detectors that read only
    /// features, logits, the head, labels or negatives). [`DetectorSpec::fit_probes`] says what
    /// the fit data needs.
    pub fn probes(&self) -> Vec<Probe> {
        use DetectorSpec::*;
        match self {
            Odin(d) => vec![d.probe()],
            Iodin(d) => vec![d.probe()],
            RankFeat(_) => vec![Probe::RankFeat],
            AdaScale(d) => vec![d.probe()],
            Gram(d) => vec![d.probe()],
            MahalanobisEnsemble(d) => vec![d.probe()],
            _ => Vec::new(),
        }
    }
}

impl DetectorSpec {
    /// The detector's family, for listings: `logits` (the classifier's outputs only), `features`
    /// (penultimate features, with the head or labels where needed) or `vision-language` (CLIP
    /// image embeddings scored against label text embeddings) or `network` (numbers the network
    /// computes at extraction, [`DetectorSpec::probes`]).
    pub fn family(&self) -> &'static str {
        let n = self.needs();
        if n.network {
            "network"
        } else if n.negatives || matches!(self, DetectorSpec::Mcm(_)) {
            "vision-language"
        } else if !n.features {
            "logits"
        } else {
            "features"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_detector_reads_something_and_names_are_ordered() {
        for d in DetectorSpec::all_defaults() {
            let n = d.needs();
            assert!(n.features || n.logits || n.network, "{}", d.name());
            assert_eq!(n.network, !d.probes().is_empty(), "{}", d.name());
        }
        let n = DetectorSpec::from_name("neg_label", &[]).unwrap().needs();
        assert_eq!(n.names(), vec!["features", "head", "negatives"]);
        let n = DetectorSpec::from_name("mahalanobis", &[]).unwrap().needs();
        assert_eq!(n.names(), vec!["features", "labels"]);
    }
}
