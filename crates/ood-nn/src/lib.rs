//! # ood-nn: networks, data and extraction on libtorch (tch)
//!
//! Brief overview. Models load weights from safetensors (tensor names as in the PyTorch originals)
//! and expose penultimate features, logits and their classifier head. Data loaders turn local image
//! files into normalised tensors; extraction runs a model over a dataset and writes an
//! [`ood_core::Features`] file that the detectors of `ood-core` score.

pub mod align;
pub mod augment;
pub mod autocast;
pub mod benchmarks;
pub mod clip;
pub mod data;
pub mod demo;
pub mod device;
pub mod error;
pub mod jigsaw;
pub mod knn;
mod layers;
pub mod losses;
pub mod malloc;
pub mod models;
pub mod network;
pub mod probes;
pub mod text;
pub mod train;

pub use error::{Error, Result};
pub use network::{Forward, InputSpec, Network};
