//! Shared numerical kernels: the building blocks that several detectors use.
//!
//! Each module holds one kernel and its unit tests; the detector files in
//! [`crate::detectors`] keep only the detectors.
//! * [`neighbours`]: exact blocked nearest-neighbour search (KNN, NNGuide).
//! * [`percentile`]: exact streamed NumPy-style percentiles (ReAct, DICE, VRA).
//! * [`logits`]: row-wise energies of logit matrices (ReAct, DICE, ASH, SCALE, VRA).
//! * [`moments`]: streamed mean and covariance of unlabelled features (DICE, fDBD, NCI, NECO).
//! * [`class_stats`]: streamed class means and covariances, squared Mahalanobis distances
//!   (Mahalanobis, RMDS).
//! * [`residual_space`]: the ViM residual space (ViM, Residual).
//! * [`top_k`]: how many and which activations a pruning percentile keeps (ASH, SCALE).
//! * [`cosine`]: blocked cosine similarities against label embeddings (MCM, NegLabel).
//! * [`predicted_means`]: streamed mean features per predicted class (SHE, CARef, CADRef).

pub(crate) mod class_stats;
pub(crate) mod cosine;
pub(crate) mod logits;
pub(crate) mod moments;
pub(crate) mod neighbours;
pub(crate) mod percentile;
pub(crate) mod predicted_means;
pub(crate) mod residual_space;
pub(crate) mod top_k;
