//! # ood-core: post-hoc OOD detection on plain numbers
//!
//! Brief overview. A network (in `ood-nn`) turns images into [`Features`]: penultimate features
//! `(n, d)`, logits `(n, c)` and optional labels, plus its final linear layer as a [`Head`]. A
//! [`Detector`] is hyper-parameters; [`Detector::fit`] sees in-distribution fit data ([`FitData`],
//! in memory or streamed from a file) and returns a [`Scorer`]. A scorer gives one score per
//! sample, and **higher always means more in-distribution**. [`metrics`] turns ID scores and OOD
//! scores into AUROC, FPR@95 and AUPR under a named convention. [`DetectorSpec`] is the registry of
//! every detector.
//!
//! ```
//! use ood_core::{DetectorSpec, Features, Head};
//! use ndarray::array;
//! let head = Head::new(array![[1.0f32, 0.0], [0.0, 1.0]], array![0.0, 0.0]).unwrap();
//! let train = Features::with_head(array![[4.0f32, 0.0], [0.0, 4.0]], &head, Some(vec![0, 1])).unwrap();
//! let test = Features::with_head(array![[3.0f32, 0.1], [0.2, 0.3]], &head, None).unwrap();
//! let energy = DetectorSpec::from_name("energy", &[]).unwrap();
//! let scorer = energy.as_detector().fit(&(&train).into(), &head).unwrap();
//! let s = scorer.score(&test).unwrap();
//! assert!(s[0] > s[1]); // the confident sample looks more in-distribution
//! ```

pub mod atomic_file;
pub mod benchmark;
pub mod detector;
pub mod detectors;
pub mod error;
pub mod evaluation;
pub mod features;
pub mod hashing;
pub(crate) mod kernels;
pub mod linalg;
pub mod metrics;
pub mod neg_mining;
pub mod probes;
pub mod projection;
pub mod report;
pub mod safetensors;
pub mod scores;
pub mod synthetic;

pub use detector::{Detector, Scorer, SideInputs};
pub use detectors::DetectorSpec;
pub use error::{Error, Result};
pub use features::{FeatureFile, Features, FitData, Head};
