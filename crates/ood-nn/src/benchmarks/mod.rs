//! Benchmarks as data: a [`Benchmark`] is a TOML manifest of named image sets, each with a role
//! (fit, ID test, near/far OOD, ...), a data spec relative to a data root, optional
//! preprocessing and an optional expected size. `ood bench NAME|FILE.toml` reads one, extracts
//! every set through the one extraction loop (with the content-addressed cache) and evaluates.
//!
//! ```toml
//! name = "cifar10-jpeg"                 # a short name (cache files and reports)
//! description = "..."                   # one paragraph for `ood bench --list`
//! layout = "..."                        # the folder layout it expects under --data-root
//! convention = "openood"                # openood | classic | hendrycks | knn (default openood)
//!
//! [[set]]
//! name = "cifar10_train"                # unique; the report's column name for OOD sets
//! role = "fit"                          # see Role
//! data = "tar:data/cifar10-jpeg/cifar10_train_jpeg.tar.gz"   # a DataSpec; relative paths are
//!                                       # relative to the data root
//! expect = 50000                        # optional: a different count is a warning
//! resize = 32                           # optional preprocessing overrides of the network's
//! crop = 32                             # own (InputSpec::preprocess): shorter side, centre
//! pad = 0                               # crop, zero padding; "none" turns a step off
//! ```
//!
//! A manifest may also say `data_root = "DIR"` (before the sets): its data paths are then
//! relative to `DIR`, itself relative to the manifest file, unless `--data-root` is given.
//! [`holdout::write_holdout`] (`ood holdout`) and [`crate::demo::export_data`] (`ood demo
//! --export-data`, the data of the built-in `fmnist-holdout`) write such manifests next to their
//! data.
//!
//! Exactly one `fit` and one `id` set; at least one `near`, `far` or `ood` set; at most one
//! `fit_val`, `val_id` and `val_ood` (the parameter search's pair, used when both are given).
//! `csid` sets are OpenOOD v1.5's covariate-shifted ID (ImageNet-V2/-C/-R): for full-spectrum
//! evaluation they join the ID test set.
//!
//! The built-ins ([`BUILTIN`]) are manifests embedded in the library (`benchmarks/*.toml`); each
//! runs end to end on a miniature of its layout in `crates/ood-cli/tests/` (`openood_layout.rs`,
//! `builtin_layouts.rs`, `fmnist_holdout.rs`).

pub mod holdout;

use crate::data::{DataSpec, Preprocess};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The built-in benchmarks: `(name, manifest text)`.
pub const BUILTIN: &[(&str, &str)] = &[
    ("cifar10-jpeg", include_str!("cifar10-jpeg.toml")),
    ("fmnist-holdout", include_str!("fmnist-holdout.toml")),
    ("openood-cifar10", include_str!("openood-cifar10.toml")),
    ("openood-cifar100", include_str!("openood-cifar100.toml")),
    (
        "openood-imagenet200",
        include_str!("openood-imagenet200.toml"),
    ),
    ("openood-imagenet", include_str!("openood-imagenet.toml")),
    ("knn-imagenet", include_str!("knn-imagenet.toml")),
    ("neglabel-imagenet", include_str!("neglabel-imagenet.toml")),
];

/// Other names of built-ins.
pub const ALIASES: &[(&str, &str)] = &[("cifar10", "cifar10-jpeg")];

/// What a set is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// ID training data the detectors fit on.
    Fit,
    /// ID validation data for the detectors that fit on it (ReAct, KLM, Residual in OpenOOD).
    FitVal,
    /// ID test set.
    Id,
    /// Covariate-shifted ID test set (full-spectrum evaluation).
    Csid,
    /// Near-OOD test set.
    Near,
    /// Far-OOD test set.
    Far,
    /// OOD test set reported without a group.
    Ood,
    /// ID validation set of the parameter search.
    ValId,
    /// OOD validation set of the parameter search.
    ValOod,
}

/// A preprocessing step given as a number or `"none"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Step {
    /// The step with this size.
    Size(u32),
    /// `"none"`: the step is skipped.
    Off(Off),
}

/// The word `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Off {
    /// No such step.
    None,
}

impl Step {
    fn get(self) -> Option<u32> {
        match self {
            Step::Size(n) => Some(n),
            Step::Off(_) => None,
        }
    }
}

/// One image set of a benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetDef {
    /// Unique name.
    pub name: String,
    /// What the set is for.
    pub role: Role,
    /// Data spec ([`DataSpec::parse`]); relative paths are relative to the data root.
    pub data: String,
    /// Expected number of images (a different count is a warning).
    #[serde(default)]
    pub expect: Option<usize>,
    /// Shorter side before the crop, overriding the network's.
    #[serde(default)]
    pub resize: Option<Step>,
    /// Centre crop, overriding the network's.
    #[serde(default)]
    pub crop: Option<Step>,
    /// Zero padding, overriding the network's.
    #[serde(default)]
    pub pad: Option<u32>,
}

/// A benchmark manifest (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Benchmark {
    /// Short name.
    pub name: String,
    /// One paragraph.
    #[serde(default)]
    pub description: String,
    /// The folder layout expected under the data root.
    #[serde(default)]
    pub layout: String,
    /// Metric convention: `openood` (default), `classic`, `hendrycks`, `knn`.
    #[serde(default = "default_convention")]
    pub convention: String,
    /// The folder the data paths are relative to, itself relative to the manifest file (e.g.
    /// `"."` for a manifest written next to its data by `ood holdout`). Without it, paths are
    /// relative to `--data-root`. `--data-root`, when given, wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_root: Option<String>,
    /// The sets, in report order.
    #[serde(rename = "set")]
    pub sets: Vec<SetDef>,
    /// `data_root` resolved against the manifest file's folder (set by [`Benchmark::load`]).
    #[serde(skip)]
    pub resolved_root: Option<PathBuf>,
}

fn default_convention() -> String {
    "openood".into()
}

impl Benchmark {
    /// Parses and checks a manifest; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Benchmark> {
        let b: Benchmark = toml::from_str(text)
            .map_err(|e| Error::Config(format!("benchmark manifest {origin}: {e}")))?;
        b.check()
            .map_err(|e| Error::Config(format!("benchmark manifest {origin}: {e}")))?;
        Ok(b)
    }

    /// A built-in by name (or alias), or a manifest file (a name ending in `.toml`, or any path
    /// that exists).
    pub fn load(name_or_file: &str) -> Result<Benchmark> {
        let name = ALIASES
            .iter()
            .find(|(a, _)| *a == name_or_file)
            .map_or(name_or_file, |(_, n)| n);
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name) {
            return Benchmark::from_toml(text, &format!("built-in '{name}'"));
        }
        let path = Path::new(name_or_file);
        if name_or_file.ends_with(".toml") || path.is_file() {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let mut b = Benchmark::from_toml(&text, &path.display().to_string())?;
            b.resolved_root = b
                .data_root
                .as_deref()
                .map(|r| holdout::manifest_root(path, r));
            return Ok(b);
        }
        Err(Error::Config(format!(
            "unknown benchmark '{name_or_file}' (built-in: {}; or a manifest FILE.toml)",
            BUILTIN
                .iter()
                .map(|(n, _)| *n)
                .chain(ALIASES.iter().map(|(a, _)| *a))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// Every built-in, parsed.
    pub fn builtins() -> Result<Vec<Benchmark>> {
        BUILTIN
            .iter()
            .map(|(n, t)| Benchmark::from_toml(t, &format!("built-in '{n}'")))
            .collect()
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(format!(
                "name '{}' must be non-empty ASCII letters, digits, '.', '_' or '-'",
                self.name
            ));
        }
        self.convention
            .parse::<ood_core::metrics::Convention>()
            .map_err(|e| format!("convention: {e}"))?;
        let count = |r: Role| self.sets.iter().filter(|s| s.role == r).count();
        for (role, lo, hi) in [
            (Role::Fit, 1, 1),
            (Role::Id, 1, 1),
            (Role::FitVal, 0, 1),
            (Role::ValId, 0, 1),
            (Role::ValOod, 0, 1),
        ] {
            let n = count(role);
            if n < lo || n > hi {
                return Err(format!(
                    "needs {} '{}' set{}, has {n}",
                    if lo == hi {
                        format!("exactly {lo}")
                    } else {
                        format!("at most {hi}")
                    },
                    role_name(role),
                    if hi == 1 { "" } else { "s" }
                ));
            }
        }
        if count(Role::Near) + count(Role::Far) + count(Role::Ood) == 0 {
            return Err("needs at least one 'near', 'far' or 'ood' set".into());
        }
        if (count(Role::ValId) == 1) != (count(Role::ValOod) == 1) {
            return Err("'val_id' and 'val_ood' go together".into());
        }
        let mut names: Vec<&str> = self.sets.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("set name '{}' is used twice", w[0]));
        }
        for s in &self.sets {
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(format!(
                    "set name '{}' must be non-empty ASCII letters, digits, '.', '_' or '-'",
                    s.name
                ));
            }
            DataSpec::parse(&s.data).map_err(|e| format!("set '{}': {e}", s.name))?;
        }
        Ok(())
    }

    /// The sets with one role, in manifest order.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &SetDef> {
        self.sets.iter().filter(move |s| s.role == role)
    }

    /// The one set with `role` (fit, id), if any.
    pub fn one(&self, role: Role) -> Option<&SetDef> {
        self.with_role(role).next()
    }
}

/// The manifest spelling of a role.
pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Fit => "fit",
        Role::FitVal => "fit_val",
        Role::Id => "id",
        Role::Csid => "csid",
        Role::Near => "near",
        Role::Far => "far",
        Role::Ood => "ood",
        Role::ValId => "val_id",
        Role::ValOod => "val_ood",
    }
}

impl SetDef {
    /// The set's data spec with relative paths resolved against `root`.
    pub fn data_spec(&self, root: &Path) -> Result<DataSpec> {
        Ok(DataSpec::parse(&self.data)?.relative_to(root))
    }

    /// The network's preprocessing for this data with the set's overrides.
    pub fn preprocess(&self, spec: &crate::network::InputSpec, data: &DataSpec) -> Preprocess {
        let mut p = spec.preprocess(data);
        if let Some(r) = self.resize {
            p.resize = r.get();
        }
        if let Some(c) = self.crop {
            p.crop = c.get();
        }
        if let Some(pad) = self.pad {
            p.pad = pad;
        }
        p
    }
}

/// Checks, before any work, that every set's files exist (image lists: every line parses, and
/// every listed image exists, else one error with the count and the first few missing paths), and
/// returns each set's image count when it is known without decoding (image lists), for the size
/// check. [`check_labels`] checks the ID lists' labels once the network is known.
pub fn check_files<'a>(bench: &'a Benchmark, root: &Path) -> Result<Checked<'a>> {
    let mut counts = Vec::with_capacity(bench.sets.len());
    for s in &bench.sets {
        let data = s.data_spec(root)?;
        let mut must = data.input_files();
        match &data {
            DataSpec::Folder(p) | DataSpec::ImgList { root: p, .. } => must.push(p.clone()),
            _ => {}
        }
        for f in must {
            if !f.exists() {
                return Err(Error::Config(format!(
                    "benchmark {}: set '{}': {} not found (give --data-root, the folder that \
                     holds it{})",
                    bench.name,
                    s.name,
                    f.display(),
                    if bench.layout.is_empty() {
                        String::new()
                    } else {
                        format!("; expected layout: {}", bench.layout)
                    }
                )));
            }
        }
        counts.push(match &data {
            DataSpec::ImgList { list, root } => Some(check_imglist(&s.name, list, root)?),
            _ => None,
        });
    }
    Ok(Checked {
        bench,
        root: root.to_path_buf(),
        counts,
    })
}

/// A benchmark whose files [`check_files`] found, over its data root: what [`extract`] takes, so
/// the files are checked once, before any work.
#[derive(Debug, Clone)]
pub struct Checked<'a> {
    /// The benchmark.
    pub bench: &'a Benchmark,
    /// The data root.
    pub root: PathBuf,
    /// Each set's image count when known without decoding (image lists).
    pub counts: Vec<Option<usize>>,
}

/// Every line of an image list parses and every image it lists exists: else one error naming
/// the line, or with the count and the first five missing paths. Returns the number of entries.
fn check_imglist(set: &str, list: &Path, root: &Path) -> Result<usize> {
    let entries = crate::data::imglist_entries(list)
        .map_err(|e| Error::Config(format!("set '{set}': {e}")))?;
    let n = entries.len();
    let missing: Vec<PathBuf> = entries
        .iter()
        .map(|(_, rel, _)| root.join(rel))
        .filter(|p| !p.is_file())
        .collect();
    if !missing.is_empty() {
        let first: Vec<String> = missing
            .iter()
            .take(5)
            .map(|p| p.display().to_string())
            .collect();
        return Err(Error::Config(format!(
            "set '{set}': {} of the {n} images listed in {} are missing under {}, e.g. {}",
            missing.len(),
            list.display(),
            root.display(),
            first.join(", ")
        )));
    }
    Ok(n)
}

/// The roles whose sets are ID data: their labels are classes of the network.
const ID_ROLES: [Role; 5] = [Role::Fit, Role::FitVal, Role::Id, Role::Csid, Role::ValId];

/// Checks, once the network is known and before any extraction, that every label of the ID
/// sets' image lists (fit, fit_val, id, csid, val_id) is one of the network's `classes`
/// (`0..classes`): else one error naming the set, the list file, the first line whose label is
/// outside and how many are. (OOD sets' labels, `-1` in OpenOOD's lists, are not read.)
pub fn check_labels(checked: &Checked<'_>, classes: usize) -> Result<()> {
    for s in checked
        .bench
        .sets
        .iter()
        .filter(|s| ID_ROLES.contains(&s.role))
    {
        let DataSpec::ImgList { list, .. } = s.data_spec(&checked.root)? else {
            continue;
        };
        let entries = crate::data::imglist_entries(&list)
            .map_err(|e| Error::Config(format!("set '{}': {e}", s.name)))?;
        let outside: Vec<&(usize, String, i64)> = entries
            .iter()
            .filter(|(_, _, l)| usize::try_from(*l).map_or(true, |l| l >= classes))
            .collect();
        if let Some((line, rel, label)) = outside.first() {
            return Err(Error::Config(format!(
                "benchmark {}: set '{}' ({}): line {line} ('{rel}') has label {label}, outside \
                 the network's {classes} classes (labels 0 to {}); {} of its {} lines are outside",
                checked.bench.name,
                s.name,
                list.display(),
                classes.saturating_sub(1),
                outside.len(),
                entries.len()
            )));
        }
    }
    Ok(())
}

/// The warning for a set whose size differs from the manifest's `expect`.
pub fn size_warning(bench: &Benchmark, set: &SetDef, got: usize) -> Option<String> {
    match set.expect {
        Some(want) if want != got => Some(format!(
            "benchmark {}: set '{}' has {got} images, the benchmark defines {want}",
            bench.name, set.name
        )),
        _ => None,
    }
}

/// One extracted set of a benchmark run.
#[derive(Debug, Clone)]
pub struct ExtractedSet {
    /// The set.
    pub set: SetDef,
    /// Its feature file in the cache.
    pub path: PathBuf,
    /// True when the cache already held it.
    pub reused: bool,
}

/// What [`extract`] reports while it works.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Extraction of a set begins.
    Start(&'a SetDef),
    /// Images done in the current set.
    Images(usize),
    /// The set is done (`reused`: taken from the cache).
    Done(&'a SetDef, &'a Path, bool),
    /// A warning (a set whose size differs from the benchmark's).
    Warning(&'a str),
}

/// What the network computes for `detectors` on each role's sets: their probes on the scored
/// sets, their search grids' probes on the val pair when `sweep`, and what their fits read on
/// the set they fit on (ID val for the detectors that fit there when the benchmark has a
/// fit-val set, as OpenOOD; else the fit set).
pub fn probe_plan(
    detectors: &[ood_core::DetectorSpec],
    sweep: bool,
    has_fit_val: bool,
) -> impl Fn(Role) -> Vec<ood_core::probes::Probe> + use<> {
    use ood_core::DetectorSpec;
    let score = DetectorSpec::probes_of(detectors, false);
    let val = DetectorSpec::probes_of(detectors, true);
    let (on_val, on_fit): (Vec<DetectorSpec>, Vec<DetectorSpec>) = detectors
        .iter()
        .cloned()
        .partition(DetectorSpec::fits_on_val);
    let val_fit = DetectorSpec::fit_probes_of(&on_val, sweep);
    let mut fit = DetectorSpec::fit_probes_of(&on_fit, sweep);
    if !has_fit_val {
        ood_core::probes::extend_unique(&mut fit, val_fit.iter().copied());
    }
    move |r: Role| match r {
        Role::FitVal => val_fit.clone(),
        Role::Fit => fit.clone(),
        Role::ValId | Role::ValOod if !sweep => Vec::new(),
        Role::ValId | Role::ValOod => val.clone(),
        _ => score.clone(),
    }
}

/// How [`extract`] extracts.
pub struct ExtractPlan<'a> {
    /// Images per forward pass.
    pub batch_size: usize,
    /// Also extract the covariate-shifted ID (`csid`) sets.
    pub full_spectrum: bool,
    /// The network computations ([`ood_core::probes`]) each role's sets need (e.g. the
    /// detectors' probes for the scored sets, their search grids' for the val pair).
    pub probes: &'a dyn Fn(Role) -> Vec<ood_core::probes::Probe>,
}

/// Extracts every set a run needs (all but `csid` unless `plan.full_spectrum`) with `net` into
/// the content-addressed cache ([`crate::network::extract_cached`]), for a benchmark whose files
/// [`check_files`] found. `weights_sha256` identifies the network's weights in the cache key.
pub fn extract(
    checked: &Checked<'_>,
    net: &dyn crate::network::Network,
    weights_sha256: &str,
    cache: &Path,
    plan: &ExtractPlan<'_>,
    progress: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<ExtractedSet>> {
    let (bench, root, counts) = (checked.bench, &checked.root, &checked.counts);
    for (s, n) in bench.sets.iter().zip(counts) {
        if let Some(w) = n.and_then(|n| size_warning(bench, s, n)) {
            progress(Event::Warning(&w));
        }
    }
    let spec = net.input_spec();
    let mut out = Vec::new();
    // The fit set first: probes that follow its class Gaussians (the multi-layer Mahalanobis'
    // input preprocessing) are computed on the other sets from its layer means.
    let mut order: Vec<(&SetDef, &Option<usize>)> = bench.sets.iter().zip(counts).collect();
    order.sort_by_key(|(s, _)| s.role != Role::Fit);
    let mut fit_statistics: Option<std::sync::Arc<ood_core::detectors::LayerGaussians>> = None;
    for (s, &listed) in order {
        if s.role == Role::Csid && !plan.full_spectrum {
            continue;
        }
        let data = s.data_spec(root)?;
        let probes = (plan.probes)(s.role);
        if fit_statistics.is_none() && probes.iter().any(|p| p.needs_fit_statistics()) {
            let fit = out
                .iter()
                .find(|e: &&ExtractedSet| e.set.role == Role::Fit)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "set '{}' needs the fit set's class Gaussians (mahalanobis_ensemble), \
                         but benchmark {} has no fit set",
                        s.name, bench.name
                    ))
                })?;
            let f = ood_core::FeatureFile::open(&fit.path)?;
            fit_statistics = Some(std::sync::Arc::new(
                ood_core::detectors::LayerGaussians::fit(&(&f).into(), f.num_classes())?,
            ));
        }
        let opts = crate::network::ExtractOptions {
            batch_size: plan.batch_size,
            preprocess: s.preprocess(&spec, &data),
            on_error: crate::data::OnError::Fail,
            precision: Default::default(),
            probes,
            fit_statistics: fit_statistics.clone(),
        };
        progress(Event::Start(s));
        let ex =
            crate::network::extract_cached(cache, net, weights_sha256, &data, &opts, &mut |n| {
                progress(Event::Images(n))
            })
            .map_err(|e| {
                Error::Config(format!("set '{}' ({}): {e}", s.name, data.to_spec_string()))
            })?;
        if listed.is_none() {
            let rows = ood_core::FeatureFile::open(&ex.path)?.len();
            if let Some(w) = size_warning(bench, s, rows) {
                progress(Event::Warning(&w));
            }
        }
        progress(Event::Done(s, &ex.path, ex.reused));
        out.push(ExtractedSet {
            set: s.clone(),
            path: ex.path,
            reused: ex.reused,
        });
    }
    Ok(out)
}

/// The evaluation inputs of an extracted benchmark: fit, fit-val, ID test (joined with the
/// covariate-shifted ID sets when they were extracted: full-spectrum evaluation, the joined file
/// written into `cache`), OOD sets with their groups; and the parameter search's pair, when the
/// benchmark has one.
pub fn file_inputs(
    sets: &[ExtractedSet],
    head: &Path,
    cache: &Path,
    negatives: Option<PathBuf>,
) -> Result<(ood_core::evaluation::FileInputs, Option<(PathBuf, PathBuf)>)> {
    use ood_core::benchmark::Group;
    let path = |r: Role| {
        sets.iter()
            .find(|e| e.set.role == r)
            .map(|e| e.path.clone())
    };
    let need = |r: Role| {
        path(r).ok_or_else(|| Error::Config(format!("no '{}' set was extracted", role_name(r))))
    };
    let csid: Vec<&ExtractedSet> = sets.iter().filter(|e| e.set.role == Role::Csid).collect();
    let id = need(Role::Id)?;
    let id = if csid.is_empty() {
        id
    } else {
        let parts: Vec<PathBuf> = std::iter::once(id)
            .chain(csid.iter().map(|e| e.path.clone()))
            .collect();
        join_features(&parts, cache)?
    };
    let ood = sets
        .iter()
        .filter_map(|e| {
            let g = match e.set.role {
                Role::Near => Some(Group::Near),
                Role::Far => Some(Group::Far),
                Role::Ood => None,
                _ => return None,
            };
            Some((e.set.name.clone(), g, e.path.clone()))
        })
        .collect();
    let val = path(Role::ValId).zip(path(Role::ValOod));
    Ok((
        ood_core::evaluation::FileInputs {
            fit: need(Role::Fit)?,
            fit_val: path(Role::FitVal),
            head: head.to_path_buf(),
            id,
            ood,
            negatives,
        },
        val,
    ))
}

/// Concatenates feature files row-wise into `<cache>/joined-<hash of the parts' names>.safetensors`
/// (the ID test set of full-spectrum evaluation), reused when present.
fn join_features(parts: &[PathBuf], cache: &Path) -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.display().to_string().as_bytes());
        h.update([0]);
    }
    let out = cache.join(format!(
        "joined-{}.safetensors",
        &crate::data::hex_string(&h.finalize())[..32]
    ));
    if out.is_file() {
        return Ok(out);
    }
    let fs: Vec<ood_core::Features> = parts
        .iter()
        .map(ood_core::Features::load)
        .collect::<std::result::Result<_, _>>()?;
    let cat = |f: &dyn Fn(&ood_core::Features) -> ndarray::ArrayView2<'_, f32>| {
        let views: Vec<_> = fs.iter().map(f).collect();
        ndarray::concatenate(ndarray::Axis(0), &views)
            .map_err(|e| Error::Config(format!("joining ID sets: {e}")))
    };
    let emb = cat(&|f| f.embeddings.view())?;
    let logits = cat(&|f| f.logits.view())?;
    let labels: Option<Vec<i64>> = fs
        .iter()
        .map(|f| f.labels.clone())
        .collect::<Option<Vec<_>>>()
        .map(|v| v.concat());
    let mut joined = ood_core::Features::new(emb, logits, labels)?;
    // Probe tensors that every part holds are joined too.
    for name in fs[0].probes.keys() {
        if fs.iter().all(|f| f.probes.contains_key(name)) {
            let t = cat(&|f| f.probes[name].view())?;
            joined.probes.insert(name.clone(), t);
        }
    }
    joined.metadata.insert(
        "joined".into(),
        parts
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    joined.save(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_names_itself() {
        for (name, text) in BUILTIN {
            let b = Benchmark::from_toml(text, name).unwrap();
            assert_eq!(&b.name, name);
            assert!(!b.description.is_empty() && !b.layout.is_empty(), "{name}");
        }
        assert_eq!(Benchmark::load("cifar10").unwrap().name, "cifar10-jpeg");
    }

    #[test]
    fn manifests_are_checked() {
        let base = |sets: &str| format!("name = \"t\"\n{sets}");
        let set = |n: &str, r: &str| {
            format!("[[set]]\nname = \"{n}\"\nrole = \"{r}\"\ndata = \"folder:x\"\n")
        };
        let ok = base(&(set("a", "fit") + &set("b", "id") + &set("c", "far")));
        let b = Benchmark::from_toml(&ok, "t").unwrap();
        assert_eq!(b.convention, "openood");
        for (text, want) in [
            (
                base(&(set("a", "fit") + &set("c", "far"))),
                "exactly 1 'id'",
            ),
            (base(&(set("a", "fit") + &set("b", "id"))), "at least one"),
            (
                base(&(set("a", "fit") + &set("b", "id") + &set("b", "far"))),
                "used twice",
            ),
            (
                base(&(set("a", "fit") + &set("b", "id") + &set("c", "far") + &set("d", "val_id"))),
                "go together",
            ),
            (
                base(&(set("a", "fit") + &set("b", "id") + &set("c", "side"))),
                "unknown variant",
            ),
            (
                ok.replace("name = \"t\"", "name = \"t\"\nconvention = \"sklearn\""),
                "convention",
            ),
        ] {
            let e = Benchmark::from_toml(&text, "t").unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        let e = Benchmark::load("nope").unwrap_err().to_string();
        assert!(
            e.contains("openood-cifar10") && e.contains("cifar10"),
            "{e}"
        );
    }

    #[test]
    fn imglist_entries_are_checked_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("img")).unwrap();
        std::fs::write(dir.path().join("img/a.png"), b"x").unwrap();
        std::fs::write(dir.path().join("list.txt"), "a.png 0\nb.png 1\nc.png 1\n").unwrap();
        let e = check_imglist("s", &dir.path().join("list.txt"), &dir.path().join("img"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2 of the 3 images") && e.contains("b.png"),
            "{e}"
        );
        std::fs::write(dir.path().join("list.txt"), "a.png 0\n").unwrap();
        assert_eq!(
            check_imglist("s", &dir.path().join("list.txt"), &dir.path().join("img")).unwrap(),
            1
        );
        // A malformed line is an error naming it, before any work too.
        std::fs::write(dir.path().join("list.txt"), "a.png 0\n\na.png zero\n").unwrap();
        let e = check_imglist("s", &dir.path().join("list.txt"), &dir.path().join("img"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("set 's'") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn id_list_labels_must_be_the_networks_classes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("img")).unwrap();
        std::fs::write(d.join("img/a.png"), b"x").unwrap();
        std::fs::write(d.join("fit.txt"), "a.png 0\na.png 9\n").unwrap();
        std::fs::write(d.join("id.txt"), "a.png 1\n\na.png 10\na.png 12\n").unwrap();
        // OOD lists' labels (-1 in OpenOOD) are not classes.
        std::fs::write(d.join("ood.txt"), "a.png -1\n").unwrap();
        let set = |n: &str, r: &str, l: &str| {
            format!("[[set]]\nname = \"{n}\"\nrole = \"{r}\"\ndata = \"imglist:{l}.txt@img\"\n")
        };
        let text = format!(
            "name = \"t\"\n{}{}{}",
            set("a", "fit", "fit"),
            set("b", "id", "id"),
            set("c", "far", "ood")
        );
        let b = Benchmark::from_toml(&text, "t").unwrap();
        let checked = check_files(&b, d).unwrap();
        let e = check_labels(&checked, 10).unwrap_err().to_string();
        assert!(
            e.contains("set 'b'")
                && e.contains("id.txt")
                && e.contains("line 3 ('a.png') has label 10")
                && e.contains("10 classes (labels 0 to 9); 2 of its 3 lines"),
            "{e}"
        );
        check_labels(&checked, 13).unwrap();
        std::fs::write(d.join("id.txt"), "a.png -1\n").unwrap();
        let e = check_labels(&checked, 13).unwrap_err().to_string();
        assert!(e.contains("line 1 ('a.png') has label -1"), "{e}");
    }
}
