//! The one error type of `ood-core`: every variant is something a user can act on.

use std::path::PathBuf;

/// Errors from fitting, scoring, metrics and the feature store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two arrays that must agree on a dimension do not.
    #[error("dimension mismatch in {what}: expected {expected}, got {got}")]
    DimensionMismatch {
        /// Which quantity disagrees (e.g. "feature dimension").
        what: String,
        /// The size required.
        expected: usize,
        /// The size found.
        got: usize,
    },
    /// A detector needs class labels and the fit data has none.
    #[error("detector {detector} needs labelled fit data, but the fit features have no labels")]
    MissingLabels {
        /// The detector's name.
        detector: String,
    },
    /// A detector needs a network computation ([`crate::probes::Probe`]) the features lack.
    #[error(
        "detector {detector} needs the network tensor '{tensor}', which these features lack: extract them with `ood extract --with {detector}` (`ood bench` computes it itself)"
    )]
    MissingProbe {
        /// The detector's name.
        detector: String,
        /// The tensor's name in feature files.
        tensor: String,
    },
    /// Not enough samples for the requested computation.
    #[error("too few samples for {what}: need at least {need}, got {got}")]
    TooFewSamples {
        /// What was being computed.
        what: String,
        /// The minimum needed.
        need: usize,
        /// How many there were.
        got: usize,
    },
    /// NaN or infinite values in an input or a result.
    #[error("non-finite value (NaN or infinite) in {what}")]
    NonFinite {
        /// Where the value was found.
        what: String,
    },
    /// A hyper-parameter is out of its valid range, or a name is unknown.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// A linear-algebra step failed (singular matrix, no convergence).
    #[error("linear algebra: {0}")]
    Linalg(String),
    /// Reading or writing a file failed.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error (shown in the message, so not chained as a source).
        cause: std::io::Error,
    },
    /// A file exists but its content is not what it should be.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A command was asked to write over one of its own inputs.
    #[error(
        "{output_arg} {} is the same file as {input_arg} {}: refusing to overwrite an input (choose another output path)",
        output.display(),
        input.display()
    )]
    OutputIsInput {
        /// The output argument (e.g. `--out`).
        output_arg: String,
        /// The output path as given.
        output: PathBuf,
        /// The input argument it collides with.
        input_arg: String,
        /// The input path as given.
        input: PathBuf,
    },
    /// Another process is writing the same output right now.
    #[error(
        "{}: another process is writing this output right now (its lock is held); wait for it or choose another output path",
        output.display()
    )]
    OutputLocked {
        /// The output path.
        output: PathBuf,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::DimensionMismatch`].
    pub fn dim(what: impl Into<String>, expected: usize, got: usize) -> Self {
        Error::DimensionMismatch {
            what: what.into(),
            expected,
            got,
        }
    }
    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }
    /// Shorthand for [`Error::Format`].
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
