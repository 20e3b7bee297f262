//! Arguments of the commands that need no network (clap derive structs only), and the option
//! structs that the network commands share with them.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// `ood` as the light binary sees it: only the commands that run on cached numbers.
#[derive(Debug, Parser)]
#[command(name = "ood", version, about, long_about = None)]
pub struct LightCli {
    /// What to do.
    #[command(subcommand)]
    pub command: LightCommand,
}

impl LightCommand {
    /// The `--device` the command asks for (`cpu` for the commands without one).
    pub fn device(&self) -> &str {
        match self {
            LightCommand::Score(a) => &a.device,
            LightCommand::Eval(a) => &a.device,
            _ => "cpu",
        }
    }
}

/// The commands that need no network and no libtorch.
#[derive(Debug, Subcommand)]
pub enum LightCommand {
    /// List detectors with their parameters, defaults and search-grid sizes.
    List {
        /// What to list.
        #[arg(value_parser = ["detectors"], default_value = "detectors")]
        what: String,
    },
    /// Score one feature file with one detector; writes one f32 per row (higher = more ID).
    Score(ScoreArgs),
    /// Evaluate detectors on cached features: per-dataset table, near/far means, CSV, JSON, HTML.
    Eval(EvalArgs),
    /// Write a small seeded synthetic benchmark (feature files + head) and evaluate every detector
    /// on it: a self-contained run that needs nothing but this binary.
    Example(ExampleArgs),
    /// Compute AUROC, FPR@95, AUPR-In and AUPR-Out from two score files (higher = more ID).
    Metrics {
        /// In-distribution scores: a 1-D float32/float64 `.npy` or text, one number per line.
        #[arg(long)]
        id: PathBuf,
        /// OOD scores, same formats.
        #[arg(long)]
        ood: PathBuf,
        /// Which code base's FPR@95 and AUPR definitions to follow (AUROC is the same in all).
        #[arg(long, value_enum, default_value_t = ConventionArg::Openood)]
        convention: ConventionArg,
        /// Print one JSON object (fractions) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `ood score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Detector name (see `ood list detectors`).
    #[arg(long)]
    pub detector: String,
    /// Parameter override `key=value` (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// In-distribution fit features (safetensors: features, logits[, labels]).
    #[arg(long)]
    pub fit: PathBuf,
    /// Classifier head file (weight (c,d), bias (c)).
    #[arg(long)]
    pub head: PathBuf,
    /// Features to score.
    #[arg(long)]
    pub input: PathBuf,
    /// Negative-label embeddings for `neg_label` (safetensors tensor `negatives` (M, d)).
    #[arg(long)]
    pub negatives: Option<PathBuf>,
    /// Output `.npy` file (f32, one score per row of --input).
    #[arg(long)]
    pub out: PathBuf,
    /// Where the KNN detector searches: cpu (the built-in exact search), or cuda / cuda:N
    /// (libtorch: bf16-screened products with exact f32 re-ranking, the same results; `ood`
    /// hands the command to `ood-net` for it).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `ood eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// In-distribution fit features (OpenOOD: ID train).
    #[arg(long)]
    pub fit: PathBuf,
    /// ID validation features; detectors that OpenOOD fits on ID val (ReAct, KLM, Residual) use it.
    #[arg(long)]
    pub fit_val: Option<PathBuf>,
    /// Classifier head file.
    #[arg(long)]
    pub head: PathBuf,
    /// ID test features.
    #[arg(long)]
    pub id: PathBuf,
    /// Near-OOD set `NAME=FILE` (repeatable).
    #[arg(long, value_name = "NAME=FILE")]
    pub near: Vec<String>,
    /// Far-OOD set `NAME=FILE` (repeatable).
    #[arg(long, value_name = "NAME=FILE")]
    pub far: Vec<String>,
    /// Ungrouped OOD set `NAME=FILE` (repeatable).
    #[arg(long, value_name = "NAME=FILE")]
    pub ood: Vec<String>,
    /// Detectors, parameter search and outputs.
    #[command(flatten)]
    pub run: RunArgs,
    /// Where the KNN detector searches: cpu (the built-in exact search), or cuda / cuda:N
    /// (libtorch: bf16-screened products with exact f32 re-ranking, the same results; `ood`
    /// hands the command to `ood-net` for it).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Which detectors run, with which parameters, under which metric convention.
#[derive(Debug, Args)]
pub struct DetectorArgs {
    /// Comma-separated detector names, or `all`.
    #[arg(long, default_value = "all")]
    pub detectors: String,
    /// Parameter override `DETECTOR.KEY=VALUE` (repeatable), e.g. `knn.k=100`.
    #[arg(long = "param", value_name = "DETECTOR.KEY=VALUE")]
    pub params: Vec<String>,
    /// Metric convention: openood (v1.5: OOD positive), classic (ID positive, exact),
    /// hendrycks (NegLabel/MCM: argmin rule, average precision), knn (KNN-OOD code).
    /// (Default: openood; `ood bench`: the benchmark's.)
    #[arg(long, value_enum)]
    pub convention: Option<ConventionArg>,
}

/// Options shared by every command that runs a benchmark.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Which detectors, with which parameters, under which convention.
    #[command(flatten)]
    pub select: DetectorArgs,
    /// Tune each detector by OpenOOD's automatic parameter search on --val-id / --val-ood.
    #[arg(long, requires_all = ["val_id", "val_ood"])]
    pub sweep: bool,
    /// ID validation features for --sweep.
    #[arg(long)]
    pub val_id: Option<PathBuf>,
    /// OOD validation features for --sweep; also what `grood` averages its noise prototype
    /// from (with or without --sweep).
    #[arg(long)]
    pub val_ood: Option<PathBuf>,
    /// Negative-label text embeddings (safetensors tensor `negatives` (M, d)) for `neg_label`;
    /// written by `ood neglabel mine`. Without it, `--detectors all` leaves neg_label out.
    #[arg(long)]
    pub negatives: Option<PathBuf>,
    /// Folder for results.csv, results.json, config.json and report.html.
    #[arg(long, default_value = "ood-results")]
    pub out_dir: PathBuf,
    /// Also write the JSON result object to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `ood example`.
#[derive(Debug, Args)]
pub struct ExampleArgs {
    /// Folder for the generated feature files and the results.
    #[arg(long, default_value = "ood-example")]
    pub out_dir: PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Comma-separated detector names, or `all`.
    #[arg(long, default_value = "all")]
    pub detectors: String,
}

/// A whole number of at least 1 (batch sizes, epochs, grids): 0 is refused by the parser, with
/// clap's usage error and exit code 2, instead of failing (or panicking) deep inside a run.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}")),
    }
}

/// `--convention`: which code base's FPR@95 and AUPR definitions to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConventionArg {
    /// OpenOOD v1.5: OOD positive.
    Openood,
    /// ID positive, exact.
    Classic,
    /// NegLabel/MCM: argmin rule, average precision.
    Hendrycks,
    /// The KNN-OOD code.
    Knn,
}

impl From<ConventionArg> for ood_core::metrics::Convention {
    fn from(c: ConventionArg) -> Self {
        use ood_core::metrics::Convention;
        match c {
            ConventionArg::Openood => Convention::Openood,
            ConventionArg::Classic => Convention::Classic,
            ConventionArg::Hendrycks => Convention::Hendrycks,
            ConventionArg::Knn => Convention::Knn,
        }
    }
}
