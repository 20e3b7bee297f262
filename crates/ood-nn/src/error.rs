//! The one error type of `ood-nn`.

use std::path::PathBuf;

/// Errors from models, data loading, extraction and training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from libtorch.
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    /// An error from `ood-core` (feature files, shapes, detectors).
    #[error(transparent)]
    Core(#[from] ood_core::Error),
    /// Reading or writing a file failed.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error (shown in the message, so not chained as a source).
        cause: std::io::Error,
    },
    /// A weights file is missing tensors, has wrong shapes, or cannot be parsed.
    #[error("{}: {reason}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A data file or image is missing, corrupt or of an unexpected layout.
    #[error("{}: {reason}", path.display())]
    Data {
        /// The file (or archive member).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A configuration value is invalid or a name is unknown.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }
}
