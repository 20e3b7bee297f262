//! Command-line arguments (clap derive structs only).

use clap::{Args, Parser, Subcommand};
use ood_cli::light::args::{DetectorArgs, LightCommand, RunArgs, positive};
use std::path::PathBuf;

/// Out-of-distribution detection for image classifiers.
#[derive(Debug, Parser)]
#[command(name = "ood", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The commands that need no network (`ood_cli::light`).
    #[command(flatten)]
    Light(LightCommand),
    /// The embedded default: train a small ResNet on Fashion-MNIST (6 classes held in, 4 held out
    /// as near OOD) on the CPU, extract features of ID and real far-OOD sets (digits, textures,
    /// photos, jigsaw), run every detector, print the table and write the HTML report.
    Demo(DemoArgs),
    /// Extract penultimate features and logits of a network over a dataset.
    Extract(ExtractArgs),
    /// Run a real benchmark end to end: extract (cached) features of every set, then every detector.
    Bench(BenchArgs),
    /// Train TagFog's projection head on frozen features so that they point at their class's text
    /// embedding (anchor loss L_CI): puts a classifier's features into a text encoder's space.
    Align(AlignArgs),
    /// Embed lines of text with a sentence encoder (e.g. all-MiniLM-L6-v2): row i of the output is
    /// line i of the input (empty lines included), unit-norm, as tensor `embeddings` (n, d) f32.
    EmbedText(EmbedTextArgs),
    /// NegLabel negative labels: `ood neglabel mine` picks WordNet words far from the ID labels.
    Neglabel {
        /// What to do.
        #[command(subcommand)]
        command: NeglabelCommand,
    },
    /// Train a classifier (ce, oe, mixoe, supcon, reweightood, tagfog) on a labelled image set;
    /// writes `model.safetensors` (loadable by `ood extract` / `ood bench`), `head.safetensors`,
    /// `train.config.json` and a per-epoch checkpoint for `--resume`.
    Train(TrainArgs),
    /// Write TagFog's jigsaw fake outliers (tiles shuffled, seeded) as PNGs under
    /// `OUT/jigsaw/`, readable back as `folder:OUT` (e.g. by `ood train --outliers`).
    Jigsaw(JigsawArgs),
    /// MixOE's hold-out-class benchmark of a labelled dataset: some classes held out of training,
    /// their test images the near-OOD set. Writes images, OpenOOD imglists (train/val/test/near)
    /// and `benchmark.toml` for `ood bench DIR/benchmark.toml`; train with
    /// `ood train --data imglist:DIR/train.txt@DIR`.
    Holdout(HoldoutArgs),
}

/// Subcommands of `ood neglabel`.
#[derive(Debug, clap::Subcommand)]
pub enum NeglabelCommand {
    /// Mine negative labels from WordNet 3.0 (NegLabel, ICLR 2024): embed the ID labels ("the
    /// nice LABEL") and every noun/adjective candidate, keep per part of speech the 15% whose
    /// 0.95-quantile cosine to the ID labels is lowest. Writes OUT (safetensors: `negatives`
    /// (M, d) for `--negatives`, `weight` (C, d) + `bias` = 0 so the same file is the `--head` of
    /// `ood eval`), OUT with extension .tsv (the chosen words) and OUT.config.json.
    Mine(NeglabelMineArgs),
}

/// Arguments of `ood neglabel mine`.
#[derive(Debug, clap::Args)]
pub struct NeglabelMineArgs {
    /// ID class names, one per line (UTF-8, no empty lines).
    #[arg(long, value_name = "ID_LABELS.txt")]
    pub labels: PathBuf,
    /// Text encoder: minilm (sentence-transformers folder) or clip (HF CLIPModel safetensors).
    #[arg(long, value_enum)]
    pub encoder: TextEncoderArg,
    /// minilm: the model folder (default $OOD_MINILM_DIR); clip: the `model.safetensors` of a
    /// Hugging Face CLIPModel (required; `config.json` beside it is used when present).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// CLIP BPE vocabulary `bpe_simple_vocab_16e6.txt.gz` (default $OOD_CLIP_BPE).
    #[arg(long)]
    pub bpe: Option<PathBuf>,
    /// WordNet 3.0 database folder with data.noun and data.adj.
    #[arg(long, default_value = "/usr/share/wordnet")]
    pub wordnet: PathBuf,
    /// Fraction of each part of speech kept.
    #[arg(long, default_value_t = 0.15)]
    pub fraction: f64,
    /// Quantile of a candidate's cosines to the ID labels that ranks it.
    #[arg(long, default_value_t = 0.95)]
    pub percentile: f64,
    /// Use only the first N candidates of each part of speech (quick runs and tests).
    #[arg(long, value_name = "N", value_parser = positive)]
    pub max_per_pos: Option<usize>,
    /// Also store every candidate's embedding (`candidates`), quantile (`candidate_q`) and the
    /// selected indices (`selected`), and write OUT with extension .candidates.tsv.
    #[arg(long)]
    pub save_candidates: bool,
    /// Output safetensors file.
    #[arg(long, value_name = "NEG.safetensors")]
    pub out: PathBuf,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 256, value_parser = positive)]
    pub batch_size: usize,
    /// Torch intra-op threads (default: torch's choice).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub threads: Option<i32>,
    /// `cpu` or `cuda` / `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Arguments of `ood embed-text`.
#[derive(Debug, clap::Args)]
pub struct EmbedTextArgs {
    /// Sentence-transformers folder: `config.json`, `tokenizer.json`, `model.safetensors`.
    #[arg(long)]
    pub encoder: PathBuf,
    /// Input text file, one sentence per line (UTF-8).
    #[arg(long = "in", value_name = "LINES.txt")]
    pub input: PathBuf,
    /// Output safetensors file (written atomically).
    #[arg(long, value_name = "EMB.safetensors")]
    pub out: PathBuf,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = 64, value_parser = positive)]
    pub batch_size: usize,
    /// Torch intra-op threads (default: torch's choice).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub threads: Option<i32>,
    /// `cpu` or `cuda` / `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `ood demo`.
#[derive(Debug, Args)]
#[command(after_long_help = DEMO_HELP)]
pub struct DemoArgs {
    /// Folder for the trained model, feature files (`features/`) and results (`results/`).
    #[arg(long, default_value = "ood-demo")]
    pub out_dir: PathBuf,
    /// Reduced sizes (500 training and 100 test images per class, 300 per OOD set): CI and tests.
    #[arg(long)]
    pub quick: bool,
    /// Write the built-in benchmark's sets (sizes and seed as for the run: `--quick`, `--seed`)
    /// as PNGs and OpenOOD imglists into this new folder, with `benchmark.toml`, and exit without
    /// training: the data of `ood bench fmnist-holdout --data-root DIR`.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["train", "test", "near", "far", "ood", "json"])]
    pub export_data: Option<PathBuf>,
    /// Also run the detectors that need the network at score time (odin, iodin, rank_feat,
    /// ada_scale, gram): their probes are computed during extraction, which then takes about
    /// ten times longer (BENCHMARKS.md). Without it they are left out of `--detectors all`.
    #[arg(long)]
    pub with_network: bool,
    /// Training epochs.
    #[arg(long, default_value_t = 4, value_parser = positive)]
    pub epochs: usize,
    /// Seed for the data subsets, crops, jigsaw, initialisation and training order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// akamaster ResNet depth (6n+2: 8, 14, 20, ...).
    #[arg(long, default_value_t = 8)]
    pub depth: usize,
    /// libtorch intra-op threads (default: libtorch's choice, one per core).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub threads: Option<i32>,
    /// Your own labelled training images (class = sub-folder), e.g. folder:DIR; replaces the
    /// built-in Fashion-MNIST benchmark (needs --test and at least one --near/--far/--ood).
    #[arg(long, value_name = "SPEC", requires = "test")]
    pub train: Option<String>,
    /// Your own labelled ID test images, same classes as --train.
    #[arg(long, value_name = "SPEC", requires = "train")]
    pub test: Option<String>,
    /// Your own near-OOD set `NAME=SPEC` (repeatable).
    #[arg(long, value_name = "NAME=SPEC")]
    pub near: Vec<String>,
    /// Your own far-OOD set `NAME=SPEC` (repeatable).
    #[arg(long, value_name = "NAME=SPEC")]
    pub far: Vec<String>,
    /// Your own ungrouped OOD set `NAME=SPEC` (repeatable).
    #[arg(long, value_name = "NAME=SPEC")]
    pub ood: Vec<String>,
    /// Image side for your own data (shorter side resized, centre crop); the built-in benchmark
    /// is 28x28.
    #[arg(long, default_value_t = 32, value_parser = positive)]
    pub side: usize,
    #[command(flatten)]
    pub run: DemoRunArgs,
}

/// The benchmark options of `ood demo` (as `ood eval`, without the parameter search).
#[derive(Debug, Args)]
pub struct DemoRunArgs {
    #[command(flatten)]
    pub select: DetectorArgs,
    /// Also write the JSON result object (as `ood bench --json`) to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

const DEMO_HELP: &str = "\
The built-in benchmark needs only what `bash scripts/setup` installs: Fashion-MNIST from the Debian
package dataset-fashion-mnist (ID: t-shirt/top, trouser, pullover, sandal, sneaker, bag; near OOD:
the test images of dress, coat, shirt, ankle boot, never trained on), and far OOD: scikit-learn's
handwritten digits upsampled to 28x28, crops of scikit-image's textures and photos (copied by the
setup from their PyPI wheels into .deps/demo; $OOD_DEMO_DATA names another folder), and 4x4
jigsaw-shuffled ID test images.

Your own data instead:
  ood demo --train folder:my/train --test folder:my/test --near similar=folder:my/near \\
           --far noise=folder:my/noise --side 32 --epochs 10

Writes OUT_DIR/features/{model,head,<set>}.safetensors, OUT_DIR/results/{results.csv,
results.json,config.json,report.html}. model.safetensors records its input (28 px, the training
set's channel mean and std), which `ood bench` and `ood extract` read.

The same sets as files, for your own networks (the built-in benchmark fmnist-holdout):
  ood demo --export-data fmnist-holdout        # PNGs + OpenOOD imglists, no training
  ood bench fmnist-holdout --data-root fmnist-holdout --model resnet8 \\
           --weights ood-demo/features/model.safetensors   # the demo's numbers
";

/// Arguments of `ood extract`.
#[derive(Debug, Args)]
#[command(after_long_help = EXTRACT_HELP)]
pub struct ExtractArgs {
    /// Model name: resnet20..56 (akamaster), cifar_resnet18/34, wrn, resnet18/34/50/101 (torchvision),
    /// clip (Hugging Face CLIPModel safetensors; features = image embeddings; needs --text-head),
    /// torchscript:FILE.pt (your own model, see the TorchScript options).
    #[arg(long)]
    pub model: String,
    /// Weights file (safetensors, tensor names of the PyTorch original); not used by
    /// torchscript:FILE.pt, required otherwise.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Data source, KIND:PATH (see below).
    #[arg(long, value_name = "SPEC")]
    pub data: String,
    /// Output feature file (safetensors: features, logits, labels, metadata). The resolved
    /// configuration and input hashes go to `<out>.config.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the network's classifier head (safetensors `weight` (C, d), `bias` (C)) here,
    /// as `ood eval --head` / `ood score --head` read it.
    #[arg(long, value_name = "FILE")]
    pub head_out: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256, value_parser = positive)]
    pub batch_size: usize,
    /// Forward-pass arithmetic: fp32, or bf16 autocast (fast on CPUs with AVX512-BF16/AMX and on
    /// GPUs; features differ from fp32 by bf16 rounding, see BENCHMARKS.md).
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    pub precision: PrecisionArg,
    /// Also compute what these detectors need from the network at score time (comma-separated
    /// names, e.g. `odin,iodin`, or `network` for every such detector), stored as probe tensors
    /// in the feature file; `--param DETECTOR.KEY=VALUE` sets their parameters.
    #[arg(long = "with", value_name = "DETECTORS")]
    pub with: Option<String>,
    /// Parameter of a `--with` detector, `DETECTOR.KEY=VALUE` (repeatable).
    #[arg(long = "param", value_name = "DETECTOR.KEY=VALUE", requires = "with")]
    pub params: Vec<String>,
    /// With `--with`: also the probes of those detectors' search grids (for the validation
    /// files of `ood eval --sweep`).
    #[arg(long, requires = "with")]
    pub with_sweep: bool,
    /// With `--with mahalanobis_ensemble`: the fit set's feature file (extracted with
    /// `--with mahalanobis_ensemble`, which stores its layer means), whose class Gaussians the
    /// input preprocessing follows. Without it, only the layer means are stored (what the fit set
    /// itself needs).
    #[arg(long, value_name = "FIT.safetensors", requires = "with")]
    pub fit_features: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// What to do with an unreadable image: fail (stop, naming the file) or skip (count it).
    #[arg(long, value_enum, default_value_t = OnErrorArg::Fail)]
    pub on_error: OnErrorArg,
    /// Resize the shorter side to N pixels (PIL bilinear), or `none`. Default: the model's input
    /// size (32), or none for idx data.
    #[arg(long, value_name = "N|none")]
    pub resize: Option<String>,
    /// Centre-crop to N x N, or `none`. Default: the model's input size, or none for idx data.
    #[arg(long, value_name = "N|none")]
    pub crop: Option<String>,
    /// Zero pixels added on each side after cropping. Default: 0, or (input - 28) / 2 for idx
    /// data (MNIST-style 28x28 padded to 32x32).
    #[arg(long)]
    pub pad: Option<u32>,
    /// Torch CPU threads (default: libtorch's choice).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub threads: Option<i32>,
    /// `--model clip` only: the ID-label text embeddings (`weight` (C, d)), e.g. the output of
    /// `ood neglabel mine --encoder clip`; the logits are CLIP's zero-shot logits against them.
    #[arg(long, value_name = "HEAD.safetensors")]
    pub text_head: Option<PathBuf>,
    #[command(flatten)]
    pub torchscript: TorchScriptArgs,
}

/// Options of `--model torchscript:FILE.pt`; each overrides what the file's `oodkit_config()`
/// says (`scripts/export_torchscript.py` writes it).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "TorchScript models (--model torchscript:FILE.pt)")]
pub struct TorchScriptArgs {
    /// Name of the head weight (classes, features) among the module's parameters, e.g. fc.weight.
    #[arg(long, value_name = "NAME")]
    pub head_weight: Option<String>,
    /// Name of the head bias (classes), e.g. fc.bias (none: zero bias).
    #[arg(long, value_name = "NAME", requires = "head_weight")]
    pub head_bias: Option<String>,
    /// Square input size in pixels (the centre crop; the resize is then N up to 64, else N*8/7).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub input_size: Option<u32>,
    /// Normalisation mean per channel after x/255.
    #[arg(long, value_name = "R,G,B", value_parser = triple)]
    pub mean: Option<[f32; 3]>,
    /// Normalisation standard deviation per channel after x/255.
    #[arg(long, value_name = "R,G,B", value_parser = triple)]
    pub std: Option<[f32; 3]>,
    /// Resize filter (Pillow's, bit-exact).
    #[arg(long, value_parser = interpolation)]
    pub interpolation: Option<ood_nn::data::Interpolation>,
}

impl TorchScriptArgs {
    /// The library's options.
    pub fn options(&self) -> ood_nn::models::torchscript::TorchScriptOptions {
        ood_nn::models::torchscript::TorchScriptOptions {
            head_weight: self.head_weight.clone(),
            head_bias: self.head_bias.clone(),
            input_size: self.input_size,
            interpolation: self.interpolation,
            mean: self.mean,
            std: self.std,
        }
    }
}

/// Parses `a,b,c` into three finite numbers.
fn triple(s: &str) -> Result<[f32; 3], String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("expected three numbers a,b,c, got '{s}'"))?;
    match <[f32; 3]>::try_from(v) {
        Ok(t) if t.iter().all(|x| x.is_finite()) => Ok(t),
        _ => Err(format!("expected three finite numbers a,b,c, got '{s}'")),
    }
}

/// Parses a resize filter name.
fn interpolation(s: &str) -> Result<ood_nn::data::Interpolation, String> {
    ood_nn::data::Interpolation::parse(s)
        .ok_or_else(|| format!("expected bilinear or bicubic, got '{s}'"))
}

/// The data-spec part of `ood extract --help`.
const EXTRACT_HELP: &str = "\
Data specs (--data):
  folder:DIR                 folder-per-class tree DIR/<class>/*.{jpg,jpeg,png}
  tar:FILE                   the same inside a .tar or .tar.gz (class = parent directory)
  cifar10-jpeg:FILE          alias of tar: (e.g. cifar10_test_jpeg.tar.gz)
  idx:IMAGES[,LABELS]        MNIST-style idx files, .gz or raw (grayscale -> 3 channels)
  cifar10-bin:F[,F...]       CIFAR-10 binary batches (data_batch_*.bin, test_batch.bin)
  cifar100-bin:F[,F...]      CIFAR-100 binary files (train.bin, test.bin; fine labels)
  tin-val:FILE               Tiny-ImageNet-200 val images in an archive (labels from
                             val_annotations.txt, index in sorted wnids.txt)
  tin-test:FILE              Tiny-ImageNet-200 test images in an archive (label -1)
  imglist:LIST@ROOT          OpenOOD benchmark_imglist file: '<relative path> <label>' per line,
                             paths relative to ROOT (absolute paths rejected)

Order: folder trees class-major then path; Tiny-ImageNet by file name; idx, CIFAR batches and
image lists in file order. Preprocessing: decode to RGB, resize shorter side (PIL bilinear,
antialiased when downscaling), centre crop, zero pad, x/255, normalise with the model's mean/std.

Examples:
  ood extract --model resnet20 --weights resnet20-12fca82f.safetensors \\
      --data cifar10-jpeg:cifar10_test_jpeg.tar.gz --out cifar10_test.safetensors
  ood extract --model resnet20 --weights resnet20-12fca82f.safetensors \\
      --data idx:t10k-images-idx3-ubyte.gz,t10k-labels-idx1-ubyte.gz --out mnist.safetensors
";

/// `ood bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A built-in benchmark (`ood bench --list`: cifar10-jpeg alias cifar10, fmnist-holdout,
    /// openood-cifar10, openood-cifar100, openood-imagenet200, openood-imagenet, knn-imagenet,
    /// neglabel-imagenet) or a manifest FILE.toml (e.g. from `ood holdout` or
    /// `ood demo --export-data`).
    #[arg(required_unless_present = "list")]
    pub benchmark: Option<String>,
    /// List the built-in benchmarks with the folder layout each expects, and exit.
    #[arg(long)]
    pub list: bool,
    /// Full-spectrum evaluation (OpenOOD v1.5 FS-OOD): the covariate-shifted ID sets (`csid`)
    /// join the ID test set.
    #[arg(long)]
    pub full_spectrum: bool,
    /// `--model clip` only: the ID-label text embeddings (`weight` (C, d)), e.g. from
    /// `ood neglabel mine --encoder clip`.
    #[arg(long, value_name = "HEAD.safetensors")]
    pub text_head: Option<PathBuf>,
    /// Model name: resnet20..56 (akamaster), cifar_resnet18/34, wrn, resnet18/34/50/101 (torchvision),
    /// torchscript:FILE.pt (your own model, see the TorchScript options).
    #[arg(long, default_value = "resnet20")]
    pub model: String,
    /// Weights file (safetensors or .th); not used by torchscript:FILE.pt, required otherwise.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The folder the benchmark's data paths are relative to (default: $OOD_DATA_ROOT, else
    /// ../shared).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Content-addressed feature cache.
    #[arg(long, default_value = ".ood-cache")]
    pub cache_dir: PathBuf,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256, value_parser = positive)]
    pub batch_size: usize,
    /// libtorch intra-op threads (default: libtorch's choice).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub threads: Option<i32>,
    /// Also score NegLabel and MCM in a text encoder's space: a projection file from `ood align`,
    /// or `auto` to fit one (default `ood align` settings, cached) on the fit features. Needs
    /// `--negatives NEG.safetensors` from `ood neglabel mine` (its `weight` = ID label embeddings).
    #[arg(long, value_name = "PROJ.safetensors|auto")]
    pub align: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub torchscript: TorchScriptArgs,
}

/// Arguments of `ood align`.
#[derive(Debug, clap::Args)]
pub struct AlignArgs {
    /// Labelled fit features (e.g. the CIFAR-10 train features `ood bench` caches).
    #[arg(long)]
    pub fit: PathBuf,
    /// Text embeddings of the ID classes, one row per class in label order: a safetensors file
    /// with tensor `weight` (an `ood neglabel mine` output or a head file) or `embeddings` (an
    /// `ood embed-text` output, e.g. of class descriptions).
    #[arg(long, value_name = "TEXT.safetensors")]
    pub anchors: PathBuf,
    /// Output projection (safetensors `proj.0.*`, `proj.2.*`), written atomically with
    /// `.config.json` beside it.
    #[arg(long, value_name = "PROJ.safetensors")]
    pub out: PathBuf,
    /// Passes over the features.
    #[arg(long, default_value_t = 20, value_parser = positive)]
    pub epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 256, value_parser = positive)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Anchor-loss temperature (TagFog: 0.1).
    #[arg(long, default_value_t = 0.1)]
    pub temperature: f64,
    /// Seed (initialisation and shuffling).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Arguments of `ood train`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = TRAIN_HELP)]
pub struct TrainArgs {
    /// Training method.
    #[arg(long, value_parser = ood_nn::losses::NAMES)]
    pub method: String,
    /// Network: resnet8/14/20/32/44/56 (akamaster), cifar_resnet18/34 (OpenOOD), wrn (WRN-40-2).
    #[arg(long, default_value = "resnet20")]
    pub model: String,
    /// Labelled training images, KIND:PATH as for `ood extract` (e.g.
    /// tar:cifar10_train_jpeg.tar.gz).
    #[arg(long, value_name = "SPEC")]
    pub data: String,
    /// Auxiliary outliers (oe, mixoe), or TagFog's fake outliers (e.g. `folder:DIR` written by
    /// `ood jigsaw`); tagfog without it makes jigsaws of the training images itself.
    #[arg(long, value_name = "SPEC")]
    pub outliers: Option<String>,
    /// TagFog: text anchors of the ID classes in label order (safetensors `embeddings` or
    /// `weight` (K, A), e.g. from `ood embed-text`).
    #[arg(long, value_name = "TEXT.safetensors", conflicts_with = "descriptions")]
    pub anchors: Option<PathBuf>,
    /// TagFog: class descriptions, one `class: sentence` line per class in label order, embedded
    /// with MiniLM (`--encoder`); `cifar10` or `fashion_mnist` name the built-in files.
    #[arg(long, value_name = "FILE.txt|cifar10|fashion_mnist")]
    pub descriptions: Option<String>,
    /// Sentence-encoder folder for --descriptions (default $OOD_MINILM_DIR).
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    /// Initial weights (fine-tuning, e.g. MixOE or OE from a CE model.safetensors); tensor names
    /// and shapes must match the network, except that a K-class head starts TagFog's (K+1)-class
    /// head (its extra row keeps the fresh initialisation).
    #[arg(long, value_name = "WEIGHTS.safetensors")]
    pub init: Option<PathBuf>,
    /// Epochs (default: the method's recipe, see below).
    #[arg(long, value_parser = positive)]
    pub epochs: Option<usize>,
    /// ID images per step (default: the method's recipe).
    #[arg(long, value_parser = positive)]
    pub batch_size: Option<usize>,
    /// Peak learning rate (default: the method's recipe).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Weight decay (default: the method's recipe).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Linear warm-up epochs (default: the method's recipe).
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    /// Optimiser: sgd (the recipes') or adamw (β 0.9/0.999, decoupled weight decay).
    #[arg(long, value_parser = ["sgd", "adamw"], default_value = "sgd")]
    pub optimizer: String,
    /// MixOE mixing: mixup or cutmix.
    #[arg(long, value_parser = ["mixup", "cutmix"], default_value = "mixup")]
    pub mix: String,
    /// TagFog without --outliers: jigsaws per training image (2 in TagFog's CIFAR-10 recipe).
    #[arg(long, default_value_t = ood_nn::losses::tagfog::JIGSAW_PER_IMAGE, value_parser = positive)]
    pub jigsaw_per_image: usize,
    /// Jigsaw grid (4 = 4x4 tiles).
    #[arg(long, default_value_t = ood_nn::losses::tagfog::JIGSAW_GRID, value_parser = positive)]
    pub grid: usize,
    /// Augmentation: auto (the method's recipe: simclr for supcon, reweightood and tagfog, cifar
    /// otherwise), cifar (pad 4 + random crop, flip), simclr (random resized crop 0.2-1, flip,
    /// colour jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale p 0.2), or none.
    #[arg(long, value_parser = ["auto", "cifar", "simclr", "none"], default_value = "auto")]
    pub augment: String,
    /// Disable augmentation (same as --augment none).
    #[arg(long)]
    pub no_augment: bool,
    /// Seed (initialisation, shuffling, augmentation, jigsaws).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use only the first N training images (and N outliers): smoke runs. Folder trees are
    /// class-major, so the first N may hold few classes: see --sample.
    #[arg(long, value_name = "N", value_parser = positive)]
    pub limit: Option<usize>,
    /// Train on a seeded random subset of N of the (--limit) training images (and N outliers),
    /// kept in file order: a small run over every class.
    #[arg(long, value_name = "N", value_parser = positive)]
    pub sample: Option<usize>,
    /// Torch intra-op threads (default: torch's choice).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub threads: Option<i32>,
    /// `cpu` or `cuda` / `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Forward/loss precision: fp32, or bf16 autocast on the device (as
    /// `torch.autocast(dtype=torch.bfloat16)`; weights and optimiser state stay float32).
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    pub precision: PrecisionArg,
    /// Keep convolution weights and input batches channels-last (NHWC) while training; usually
    /// faster on CUDA with bf16.
    #[arg(long)]
    pub channels_last: bool,
    /// Output folder (model, head, config, checkpoint).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Continue from the checkpoint in --out-dir (same settings required).
    #[arg(long)]
    pub resume: bool,
}

/// The recipe part of `ood train --help`.
const TRAIN_HELP: &str = "\
Recipes (defaults; each can be overridden):
  ce           100 epochs, batch 128, SGD Nesterov lr 0.1, wd 5e-4, cosine to 1e-6 (OpenOOD)
  oe           fine-tune 10 epochs, batch 128 + 256 outliers, lr 1e-3, wd 5e-4, weight 0.5 (OE)
  mixoe        fine-tune 10 epochs, batch 32 + 32 outliers, lr 1e-3, wd 1e-5, alpha 1, beta 1
  supcon       100 epochs, batch 512 (2 views), SGD Nesterov lr 0.1, wd 1e-4, 10 warm-up epochs,
               cosine to lr/1000, tau 0.1, base tau 0.07; a linear probe on detached features
               is trained alongside and exported as the classifier head
  reweightood  as supcon with the ReweightOOD loss (tau 0.1, m_b 5, c_b 4, m_w 2, c_w 1); score it
               with mahalanobis on normalised features
  tagfog       200 epochs, batch 512 (2 views), SGD lr 0.05 momentum 0.9, wd 1e-4, 10 warm-up
               epochs, cosine (the reference uses step decay at 150/180); K+1-way head, anchor and
               SupCon terms; the exported head keeps the K ID classes only
All methods use random crop (pad 4) + horizontal flip; the contrastive ones apply it twice.

Examples:
  ood train --method ce --model resnet20 --data tar:cifar10_train_jpeg.tar.gz --out-dir runs/ce
  ood train --method tagfog --model resnet20 --data tar:cifar10_train_jpeg.tar.gz \\
      --descriptions cifar10 --out-dir runs/tagfog
  ood bench cifar10 --model resnet20 --weights runs/tagfog/model.safetensors
";

/// Arguments of `ood jigsaw`.
#[derive(Debug, clap::Args)]
pub struct JigsawArgs {
    /// Source images, KIND:PATH as for `ood extract`.
    #[arg(long, value_name = "SPEC")]
    pub data: String,
    /// Output folder (must not exist or be empty): `OUT/jigsaw/000001.png`... plus
    /// `OUT/jigsaw.config.json`.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Tiles per side.
    #[arg(long, default_value_t = 4, value_parser = positive)]
    pub grid: usize,
    /// Jigsaws per image (full passes over the images, as TagFog's generator).
    #[arg(long, default_value_t = 1, value_parser = positive)]
    pub per_image: usize,
    /// Seed of the tile permutations.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use only the first N images.
    #[arg(long, value_name = "N", value_parser = positive)]
    pub limit: Option<usize>,
}

/// Arguments of `ood holdout`.
#[derive(Debug, clap::Args)]
pub struct HoldoutArgs {
    /// Labelled source, KIND:PATH as for `ood extract` (a folder or archive per class, imglist,
    /// idx, CIFAR batches); also the test images unless --test is given.
    #[arg(long, value_name = "SPEC")]
    pub data: String,
    /// A separate labelled test source with the same classes.
    #[arg(long, value_name = "SPEC")]
    pub test: Option<String>,
    /// A separate labelled validation source with the same classes.
    #[arg(long, value_name = "SPEC")]
    pub val: Option<String>,
    /// Classes to hold out: a number (50) or a fraction of the classes (0.25), drawn with --seed.
    #[arg(long, value_name = "N|FRACTION", default_value = "0.25")]
    pub holdout: ood_nn::benchmarks::holdout::HoldoutCount,
    /// The held-out classes by name (or label number) instead of a draw (comma-separated).
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// Per class, the fraction of --data's images that become test images (without --test).
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Per class, the fraction of the remaining training images kept for validation (without
    /// --val).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Seed of the class draw and the per-class splits.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Parses the process arguments.
pub fn parse() -> Cli {
    Cli::parse()
}

/// `--on-error`: what to do with an unreadable image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnErrorArg {
    /// Stop, naming the file.
    Fail,
    /// Skip it and count it.
    Skip,
}

impl From<OnErrorArg> for ood_nn::data::OnError {
    fn from(o: OnErrorArg) -> Self {
        match o {
            OnErrorArg::Fail => ood_nn::data::OnError::Fail,
            OnErrorArg::Skip => ood_nn::data::OnError::Skip,
        }
    }
}

/// `--precision`: the arithmetic of the forward pass (and loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    /// Float32 throughout.
    Fp32,
    /// bf16 autocast.
    Bf16,
}

impl From<PrecisionArg> for ood_nn::train::Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Fp32 => ood_nn::train::Precision::Fp32,
            PrecisionArg::Bf16 => ood_nn::train::Precision::Bf16,
        }
    }
}

/// `ood neglabel mine --encoder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TextEncoderArg {
    /// A sentence-transformers MiniLM folder.
    Minilm,
    /// A Hugging Face CLIPModel safetensors file.
    Clip,
}

/// The command-line spelling of a [`clap::ValueEnum`] value (for configs and messages).
pub fn value_name<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}
