//! The [`Network`] trait that every image model implements, weight loading from safetensors,
//! and feature [`extract`]ion into [`ood_core::Features`] (with a content-addressed cache).

use crate::data::{DataSpec, Interpolation, OnError, Preprocess, SampleIter};
use crate::error::{Error, Result};
use crate::models::torchscript::{self, TorchScriptOptions};
use ood_core::Features;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor, nn};

/// What a forward pass returns.
#[derive(Debug)]
pub struct Forward {
    /// Penultimate features `(n, d)`.
    pub features: Tensor,
    /// Logits `(n, c)`.
    pub logits: Tensor,
}

/// What a network expects as input: the one copy of its preprocessing convention.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputSpec {
    /// Square input size in pixels (32 for CIFAR models, 224 for ImageNet models).
    pub size: u32,
    /// Shorter side of an image before the centre crop to `size` (torchvision's `Resize(256)` for
    /// 224-px ImageNet models; `size` itself for 32-px CIFAR models).
    pub resize: u32,
    /// The filter of that resize.
    pub interpolation: Interpolation,
    /// Channel means after `x/255`.
    pub mean: [f32; 3],
    /// Channel standard deviations after `x/255`.
    pub std: [f32; 3],
}

impl InputSpec {
    /// A spec with the usual resize for `size`: `size` itself up to 64 px, `size · 8/7` above
    /// (256 for 224), bilinear.
    pub const fn new(size: u32, mean: [f32; 3], std: [f32; 3]) -> Self {
        InputSpec {
            size,
            resize: default_resize(size),
            interpolation: Interpolation::Bilinear,
            mean,
            std,
        }
    }

    /// The test-time preprocessing of this network for one kind of data: photographs
    /// (folders, archives, CIFAR batches, image lists) are resized to [`InputSpec::resize`] and
    /// centre-cropped to [`InputSpec::size`]; 28-px grayscale idx digits keep their size and are
    /// zero-padded to it (OpenOOD's MNIST-as-OOD convention for 32-px models).
    pub fn preprocess(&self, data: &DataSpec) -> Preprocess {
        let idx = matches!(data, DataSpec::Idx { .. });
        Preprocess {
            resize: (!idx).then_some(self.resize),
            interpolation: self.interpolation,
            crop: (!idx).then_some(self.size),
            pad: if idx {
                self.size.saturating_sub(28) / 2
            } else {
                0
            },
            mean: self.mean,
            std: self.std,
        }
    }
}

/// The `__metadata__` key of a weights file that records the input convention the network was
/// trained with ([`InputSpec::to_metadata`]): JSON `{"size": 28, "mean": [..], "std": [..]}`.
pub const INPUT_METADATA_KEY: &str = "ood.input";

impl InputSpec {
    /// The value of [`INPUT_METADATA_KEY`] for this spec (size, mean and std; the resize is the
    /// usual one for the size, bilinear).
    pub fn to_metadata(&self) -> String {
        serde_json::json!({"size": self.size, "mean": self.mean, "std": self.std}).to_string()
    }

    /// The spec a weights file records under [`INPUT_METADATA_KEY`], if any (f32 values
    /// round-trip exactly); a malformed record is an error naming the file.
    pub fn from_metadata(
        metadata: &BTreeMap<String, String>,
        file: &Path,
    ) -> Result<Option<InputSpec>> {
        let Some(text) = metadata.get(INPUT_METADATA_KEY) else {
            return Ok(None);
        };
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Record {
            size: u32,
            mean: [f32; 3],
            std: [f32; 3],
        }
        let bad = |reason: String| Error::Weights {
            path: file.to_path_buf(),
            reason: format!("metadata '{INPUT_METADATA_KEY}' = {text}: {reason}"),
        };
        let r: Record = serde_json::from_str(text).map_err(|e| {
            bad(format!(
                "expected {{\"size\": N, \"mean\": [3 numbers], \"std\": [3 numbers]}} ({e})"
            ))
        })?;
        if r.size == 0 || r.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(bad(
                "size must be positive and std finite and positive".into()
            ));
        }
        if r.mean.iter().any(|m| !m.is_finite()) {
            return Err(bad("mean must be finite".into()));
        }
        Ok(Some(InputSpec::new(r.size, r.mean, r.std)))
    }
}

/// The input size itself up to 64 px, `size · 8/7` above (torchvision's 256 for 224).
pub const fn default_resize(size: u32) -> u32 {
    if size > 64 { size * 8 / 7 } else { size }
}

/// An image classifier that exposes its penultimate features and its linear head.
pub trait Network: Send {
    /// Model name (e.g. `resnet20`).
    fn name(&self) -> String;
    /// Forward pass on normalised `(n, 3, h, w)` f32 images on [`Network::device`].
    /// `train = false` uses BN running statistics.
    fn forward_t(&self, images: &Tensor, train: bool) -> Forward;
    /// A copy of the final linear layer: `logits = features · weightᵀ + bias`.
    fn head(&self) -> Result<ood_core::Head>;
    /// Expected input size and normalisation.
    fn input_spec(&self) -> InputSpec;
    /// The device the parameters live on.
    fn device(&self) -> Device;
    /// What the logits depend on besides the weights file, as a hash for the cache key (CLIP:
    /// its class text embeddings); `None` for a network that is its weights.
    fn logits_key(&self) -> Option<String> {
        None
    }
    /// The network as a stem, residual stages and a pooled head, for probes that work inside it
    /// (RankFeat); `None` when the network does not expose its stages (TorchScript files, CLIP).
    fn staged(&self) -> Option<&dyn Staged> {
        None
    }
    /// Every convolution's raw output (before BatchNorm) of an eval-mode forward pass, in
    /// execution order, for probes that read them (Gram); `None` when the network does not
    /// expose them.
    fn conv_outputs(&self, x: &Tensor) -> Option<Vec<Tensor>> {
        let _ = x;
        None
    }
}

/// A network as `stem → stage 0 → … → stage K−1 → pool → head` (the residual stages of a
/// ResNet or the block groups of a WRN), in eval mode.
pub trait Staged {
    /// Number of stages `K`.
    fn num_stages(&self) -> usize;
    /// The stem's output (the input of stage 0) for normalised images.
    fn stem(&self, x: &Tensor) -> Tensor;
    /// Stage `i` on its input feature map.
    fn stage(&self, i: usize, x: &Tensor) -> Tensor;
    /// The logits of the last stage's output (what pooling and the head make of it).
    fn head_logits(&self, out: &Tensor) -> Tensor;
}

/// Model names [`load_network`] knows (the registry's, [`crate::models::KNOWN_MODELS`]).
pub use crate::models::KNOWN_MODELS;

/// Loads a network by name with weights from a file: the registry's [`crate::models::Arch`]
/// parses the name and loads the weights strictly (safetensors or a legacy `.th`; a file of
/// another architecture or depth is an error naming the tensors that do not fit).
///
/// Names: `resnet8` .. `resnet110` (He et al. CIFAR ResNets as akamaster released them),
/// `cifar_resnet18`, `cifar_resnet34` (OpenOOD `ResNet18_32x32`, CIFAR-10 normalisation), `wrn`
/// (any WRN-d-k with the OE/OpenOOD tensor names, OE normalisation), `resnet18`, `resnet34`,
/// `resnet50`, `resnet101` (torchvision layout, 224 px, ImageNet normalisation), and
/// `torchscript:FILE.pt`, a user's own network ([`crate::models::torchscript`], configured by
/// the file alone; `weights` is not read: see [`load_model`] for overrides).
pub fn load_network(name: &str, weights: &Path, device: Device) -> Result<Box<dyn Network>> {
    let weights = (!name.starts_with(torchscript::PREFIX)).then_some(weights);
    load_model(name, weights, &ModelOptions::default(), device)
}

/// The file a model name and an optional weights file designate: `FILE` of
/// `torchscript:FILE.pt` (which holds its weights, so `weights` must be `None`), else `weights`
/// (required). The returned flag says which command-line argument named it (`--model` or
/// `--weights`), for error messages and output guards.
pub fn model_file(name: &str, weights: Option<&Path>) -> Result<(PathBuf, &'static str)> {
    match (name.strip_prefix(torchscript::PREFIX), weights) {
        (Some(""), _) => Err(Error::Config(
            "--model torchscript: needs a file, e.g. torchscript:model.pt".into(),
        )),
        (Some(_), Some(w)) => Err(Error::Config(format!(
            "--weights {} is not used with --model {name}: the TorchScript file holds the weights",
            w.display()
        ))),
        (Some(file), None) => Ok((file.into(), "--model")),
        (None, Some(w)) => Ok((w.to_path_buf(), "--weights")),
        (None, None) => Err(Error::Config(format!(
            "--model {name} needs --weights FILE"
        ))),
    }
}

/// What a model needs besides its name and weights.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelOptions {
    /// Overrides of a TorchScript file's configuration.
    pub torchscript: TorchScriptOptions,
    /// `clip`: the class text embeddings (a safetensors file with the rows in tensor `weight`,
    /// e.g. from `ood neglabel mine --encoder clip`), which make CLIP a classifier
    /// ([`crate::clip::ClipClassifier`]).
    pub class_text: Option<PathBuf>,
}

/// Loads the model that `name` and `weights` designate (see [`model_file`] and
/// [`load_network`]; also `clip`, with [`ModelOptions::class_text`]). The options that do not
/// apply to `name` are refused (an error naming the first one given): the built-in
/// architectures' configuration is the registry's.
pub fn load_model(
    name: &str,
    weights: Option<&Path>,
    opts: &ModelOptions,
    device: Device,
) -> Result<Box<dyn Network>> {
    let (file, _) = model_file(name, weights)?;
    let text_flag = "--text-head";
    if name.starts_with(torchscript::PREFIX) {
        if opts.class_text.is_some() {
            return Err(Error::Config(format!(
                "{text_flag} applies to --model clip only, not to {name}"
            )));
        }
        return Ok(Box::new(torchscript::TorchScript::load(
            &file,
            &opts.torchscript,
            device,
        )?));
    }
    let ts_flag = opts.torchscript.first_given();
    if name == crate::clip::classifier::NAME {
        if let Some(flag) = ts_flag {
            return Err(Error::Config(format!(
                "{flag} applies to --model torchscript:FILE.pt only, not to {name}"
            )));
        }
        let Some(text) = &opts.class_text else {
            return Err(Error::Config(format!(
                "--model clip needs {text_flag} HEAD.safetensors (the class text embeddings, \
                 e.g. from `ood neglabel mine --encoder clip`)"
            )));
        };
        let head = ood_core::Head::load(text)?;
        return Ok(Box::new(crate::clip::ClipClassifier::load(
            &file, &head, device,
        )?));
    }
    if opts.class_text.is_some() {
        return Err(Error::Config(format!(
            "{text_flag} applies to --model clip only, not to {name}"
        )));
    }
    if let Some(flag) = ts_flag {
        return Err(Error::Config(format!(
            "{flag} applies to --model torchscript:FILE.pt only, not to {name}"
        )));
    }
    let arch = crate::models::Arch::parse(name)?;
    Ok(Box::new(arch.load(&file, device)?))
}

/// Copies every variable of `vs` from a weights file with the same tensor names: the one reader
/// ([`crate::models::common::read_weights`]: safetensors or a legacy `.th` pickle, any float
/// dtype, `module.` stripped, NaN refused) and the one strict copy
/// ([`crate::models::common::load_strict`]: missing, mis-shaped and unused tensors are errors
/// naming the file and the tensors). One exception, for starting a training run from a
/// classifier with fewer classes than the run's head (TagFog's extra outlier class): where the
/// file's `{head}.weight` / `{head}.bias` has fewer rows than the model's and is otherwise the
/// same shape, its rows are copied into the first rows of the head and the remaining rows keep
/// the model's fresh initialisation.
pub fn load_init(vs: &mut nn::VarStore, path: &Path, head: &str) -> Result<()> {
    let mut tensors = crate::models::common::read_weights(path)?;
    let vars = vs.variables();
    for name in [format!("{head}.weight"), format!("{head}.bias")] {
        let (Some(src), Some(dst)) = (tensors.get(&name), vars.get(&name)) else {
            continue;
        };
        let (s, d) = (src.size(), dst.size());
        if s.len() == d.len() && s[1..] == d[1..] && s[0] < d[0] {
            let merged = tch::no_grad(|| {
                let m = dst.detach().copy();
                m.narrow(0, 0, s[0]).copy_(&src.to_kind(m.kind()));
                m
            });
            tensors.insert(name, merged);
        }
    }
    crate::models::common::load_strict(vs, &tensors, path)
}

/// SHA-256 (hex) of a file, e.g. a weights file.
pub fn file_sha256(path: &Path) -> Result<String> {
    Ok(ood_core::hashing::sha256_file(path)?)
}

/// Options of [`extract`].
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Images per forward pass.
    pub batch_size: usize,
    /// Preprocessing applied to every image.
    pub preprocess: Preprocess,
    /// What to do with unreadable images.
    pub on_error: OnError,
    /// Arithmetic of the forward pass: float32, or bf16 autocast (convolutions and matrix
    /// products in bf16, fast on CPUs with AVX512-BF16/AMX and on GPUs; features are returned as
    /// float32 either way). bf16 features are cached under their own key.
    pub precision: crate::train::Precision,
    /// Network computations for detectors that need the network at score time (ODIN's
    /// perturbed logits, ...), stored as probe tensors ([`ood_core::probes`]); each costs extra
    /// forward and backward passes. Part of the cache key.
    pub probes: Vec<ood_core::probes::Probe>,
    /// The fit set's class Gaussians per layer, for probes that need them
    /// ([`ood_core::probes::Probe::needs_fit_statistics`]); their digest is part of the cache
    /// key of extractions with such probes.
    pub fit_statistics: Option<std::sync::Arc<ood_core::detectors::LayerGaussians>>,
}

impl ExtractOptions {
    /// The `layer` part of the cache key: `penultimate`, `@bf16` for bf16 (fp32 keeps the key it
    /// always had), then `+` and the probes' keys when there are probes, then `@fit=` and the
    /// fit statistics' digest when a probe needs them.
    pub fn layer_key(&self) -> String {
        let mut k = match self.precision {
            crate::train::Precision::Fp32 => "penultimate".to_string(),
            crate::train::Precision::Bf16 => "penultimate@bf16".to_string(),
        };
        if !self.probes.is_empty() {
            k.push('+');
            k.push_str(&ood_core::probes::probes_key(&self.probes));
        }
        if let Some(g) = self
            .fit_statistics
            .as_ref()
            .filter(|_| self.needs_fit_statistics())
        {
            k.push_str("@fit=");
            k.push_str(&g.digest()[..16]);
        }
        k
    }

    /// Whether a requested probe needs the fit set's statistics ([`Self::fit_statistics`]).
    pub fn needs_fit_statistics(&self) -> bool {
        self.probes.iter().any(|p| p.needs_fit_statistics())
    }
}

/// The result of [`extract`].
#[derive(Debug)]
pub struct Extraction {
    /// Features, logits and labels, in dataset order, with metadata `model`, `layer`,
    /// `preprocessing`, `num_skipped`.
    pub features: Features,
    /// Images skipped under [`OnError::Skip`]: the error message of each.
    pub skipped: Vec<String>,
}

/// One preprocessed image: label, (height, width), CHW values.
type Prepared = (i64, (u32, u32), Vec<f32>);

/// Runs `net` (eval mode, no gradients) over `samples` in order and collects penultimate
/// features, logits and labels. `progress` is called with the number of samples done after each
/// batch. Images are decoded and preprocessed in parallel within a batch; the output order is
/// the sample order.
pub fn extract(
    net: &dyn Network,
    samples: SampleIter,
    opts: &ExtractOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Extraction> {
    if opts.batch_size == 0 {
        return Err(Error::Config("batch size must be at least 1".into()));
    }
    for p in &opts.probes {
        p.validate()?;
    }
    if opts.needs_fit_statistics() && opts.fit_statistics.is_none() {
        return Err(Error::Config(
            "mahalanobis_ensemble's input preprocessing needs the class Gaussians of the fit set: \
             extract the fit set first (its layer_means) and pass it as the fit statistics \
             (`ood extract --fit-features FIT.safetensors`; `ood bench` does this by itself)"
                .into(),
        ));
    }
    let device = net.device();
    let mut feats: Vec<f32> = Vec::new();
    let mut logits: Vec<f32> = Vec::new();
    let mut labels: Vec<i64> = Vec::new();
    let mut skipped = Vec::new();
    let mut probes: Vec<ood_core::probes::Probe> = Vec::new();
    ood_core::probes::extend_unique(&mut probes, opts.probes.iter().copied());
    // Per probe, per part: values and width.
    let mut probe_values: Vec<Vec<(Vec<f32>, usize)>> = vec![Vec::new(); probes.len()];
    let ctx = crate::probes::ProbeContext {
        std: opts.preprocess.std,
        fit_statistics: opts.fit_statistics.as_deref(),
    };
    let (mut d, mut c) = (0usize, 0usize);
    let mut done = 0usize;
    let mut samples = samples.peekable();
    let mut batch = Vec::with_capacity(opts.batch_size);
    while samples.peek().is_some() {
        batch.clear();
        while batch.len() < opts.batch_size {
            match samples.next() {
                Some(s) => batch.push(s),
                None => break,
            }
        }
        let n_in = batch.len();
        let decoded: Vec<Result<Prepared>> = std::mem::take(&mut batch)
            .into_par_iter()
            .map(|s| {
                let s = s?;
                let label = s.label;
                let img = s.decode()?;
                let img = opts.preprocess.geometry(img);
                let (w, h) = img.dimensions();
                let mut v = Vec::with_capacity((3 * w * h) as usize);
                crate::data::preprocess::to_chw_normalized(
                    &img,
                    opts.preprocess.mean,
                    opts.preprocess.std,
                    &mut v,
                );
                Ok((label, (h, w), v))
            })
            .collect();
        let mut pix: Vec<f32> = Vec::new();
        let mut shape: Option<(u32, u32)> = None;
        let mut n = 0i64;
        for r in decoded {
            match r {
                Ok((label, hw, v)) => {
                    match shape {
                        None => shape = Some(hw),
                        Some(s) if s != hw => {
                            return Err(Error::Config(format!(
                                "images of different sizes in one batch ({}x{} and {}x{}): set a \
                                 resize and centre crop",
                                s.1, s.0, hw.1, hw.0
                            )));
                        }
                        _ => {}
                    }
                    labels.push(label);
                    pix.extend_from_slice(&v);
                    n += 1;
                }
                Err(e) => match opts.on_error {
                    OnError::Fail => return Err(e),
                    OnError::Skip => skipped.push(e.to_string()),
                },
            }
        }
        done += n_in;
        if let Some((h, w)) = shape {
            let x = Tensor::from_slice(&pix)
                .reshape([n, 3, i64::from(h), i64::from(w)])
                .to_device(device);
            let out = in_precision(opts.precision, device, || {
                tch::no_grad(|| net.forward_t(&x, false))
            });
            for (p, parts) in probes.iter().zip(probe_values.iter_mut()) {
                let ts = in_precision(opts.precision, device, || {
                    crate::probes::compute(net, &x, p, &ctx)
                })?;
                if parts.is_empty() {
                    parts.resize(ts.len(), (Vec::new(), 0));
                }
                for (t, (vals, k)) in ts.into_iter().zip(parts.iter_mut()) {
                    *k = t.size()[1] as usize;
                    vals.extend(Vec::<f32>::try_from(t.flatten(0, -1))?);
                }
            }
            let f = out
                .features
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous();
            let l = out
                .logits
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous();
            d = f.size()[1] as usize;
            c = l.size()[1] as usize;
            feats.extend(Vec::<f32>::try_from(f.flatten(0, -1))?);
            logits.extend(Vec::<f32>::try_from(l.flatten(0, -1))?);
        }
        progress(done);
    }
    let n = labels.len();
    if n == 0 {
        return Err(Error::Config(format!(
            "no images were extracted ({} skipped)",
            skipped.len()
        )));
    }
    let emb = ndarray::Array2::from_shape_vec((n, d), feats)
        .map_err(|e| Error::Config(format!("feature shape: {e}")))?;
    let lg = ndarray::Array2::from_shape_vec((n, c), logits)
        .map_err(|e| Error::Config(format!("logit shape: {e}")))?;
    let mut features = Features::new(emb, lg, Some(labels))?;
    for (p, parts) in probes.iter().zip(probe_values) {
        for (i, (vals, k)) in parts.into_iter().enumerate() {
            let a = ndarray::Array2::from_shape_vec((n, k), vals)
                .map_err(|e| Error::Config(format!("{} shape: {e}", p.tensor_name())))?;
            if p.multi_part() {
                features.set_probe_part(p, i, a)?;
            } else {
                features.set_probe(p, a)?;
            }
        }
    }
    let md = &mut features.metadata;
    md.insert("model".into(), net.name());
    md.insert("layer".into(), "penultimate".into());
    md.insert("preprocessing".into(), opts.preprocess.describe());
    md.insert("precision".into(), opts.precision.name().into());
    md.insert("num_skipped".into(), skipped.len().to_string());
    if !probes.is_empty() {
        md.insert(
            "probes".into(),
            serde_json::to_string(&probes).expect("probes serialise"),
        );
    }
    Ok(Extraction { features, skipped })
}

/// Runs `f` in the arithmetic of `precision` (bf16: under autocast on `device`).
fn in_precision<T>(precision: crate::train::Precision, device: Device, f: impl FnOnce() -> T) -> T {
    match precision {
        crate::train::Precision::Fp32 => f(),
        crate::train::Precision::Bf16 => crate::autocast::autocast(device, Kind::BFloat16, f),
    }
}

/// The content-addressed cache key of an extraction: SHA-256 over the model name, weights hash,
/// data fingerprint, preprocessing description and layer.
pub fn cache_key(
    model: &str,
    weights_sha256: &str,
    data_fingerprint: &str,
    preprocessing: &str,
    layer: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        model,
        weights_sha256,
        data_fingerprint,
        preprocessing,
        layer,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    crate::data::hex_string(&h.finalize())
}

/// The `layer` part of the cache key of `net`'s extraction with `opts`:
/// [`ExtractOptions::layer_key`], then `+text_head:` and [`Network::logits_key`] where the
/// logits depend on more than the weights (CLIP's class text embeddings).
pub fn layer_key(net: &dyn Network, opts: &ExtractOptions) -> String {
    let mut k = opts.layer_key();
    if let Some(extra) = net.logits_key() {
        k.push_str("+text_head:");
        k.push_str(&extra);
    }
    k
}

/// Result of [`extract_cached`].
#[derive(Debug, Clone)]
pub struct CachedExtraction {
    /// The feature file (`<cache_dir>/<key>.safetensors`).
    pub path: PathBuf,
    /// The cache key.
    pub key: String,
    /// True when an existing file was reused and nothing was computed.
    pub reused: bool,
    /// Images skipped (only when computed).
    pub skipped: Vec<String>,
}

/// Extracts features of `data` into `<cache_dir>/<key>.safetensors`, or reuses that file when it
/// exists (same model, weights, data, preprocessing and layer give the same key). The file is
/// written atomically and carries metadata `model`, `weights_sha256`, `dataset`, `data_spec`,
/// `data_sha256`, `layer`, `preprocessing`, `cache_key`.
pub fn extract_cached(
    cache_dir: &Path,
    net: &dyn Network,
    weights_sha256: &str,
    data: &DataSpec,
    opts: &ExtractOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<CachedExtraction> {
    let fp = data.fingerprint()?;
    let key = cache_key(
        &net.name(),
        weights_sha256,
        &fp,
        &opts.preprocess.describe(),
        &layer_key(net, opts),
    );
    let path = cache_dir.join(format!("{key}.safetensors"));
    if path.is_file() && ood_core::FeatureFile::open(&path).is_ok() {
        return Ok(CachedExtraction {
            path,
            key,
            reused: true,
            skipped: Vec::new(),
        });
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
    let mut ex = extract(net, data.samples()?, opts, progress)?;
    let md: &mut BTreeMap<String, String> = &mut ex.features.metadata;
    md.insert("weights_sha256".into(), weights_sha256.to_string());
    md.insert("dataset".into(), data.dataset_name());
    md.insert("data_spec".into(), data.to_spec_string());
    md.insert("data_sha256".into(), fp);
    md.insert("cache_key".into(), key.clone());
    ex.features.save(&path)?;
    Ok(CachedExtraction {
        path,
        key,
        reused: false,
        skipped: ex.skipped,
    })
}
