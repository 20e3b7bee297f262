//! [`Features`] and [`Head`]: the plain-number hand-off between a network and the detectors, and
//! their files.
//!
//! A feature file is safetensors with `features` `(n, d)` f32, `logits` `(n, c)` f32, optional
//! `labels` `(n)` i64, optional probe tensors `probe:KEY` `(n, k)` f32 (what a network computed
//! for a detector at extraction, [`crate::probes`]) and string metadata (model, weights hash,
//! dataset, split, layer, preprocessing). A head file holds `weight` `(c, d)` and `bias` `(c)`, so that
//! `logits = features · weightᵀ + bias`.
//!
//! [`FitData`] is what detectors fit on: features in memory, or a [`FeatureFile`] read in chunks of
//! rows so that statistics-based detectors never hold more than one chunk (plus what they keep).

use crate::error::{Error, Result};
use crate::probes::{Probe, TENSOR_PREFIX};
use crate::safetensors::{self, Dtype, SafeTensorsFile, TensorToWrite};
use ndarray::{Array1, Array2, ArrayView2, Axis, s};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Penultimate features, logits and optional labels of `n` samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// `(n, d)` penultimate features (or image embeddings for CLIP-style models).
    pub embeddings: Array2<f32>,
    /// `(n, c)` classifier logits.
    pub logits: Array2<f32>,
    /// `n` class labels, when known (`-1` conventionally marks OOD samples).
    pub labels: Option<Vec<i64>>,
    /// Probe tensors by [`Probe::tensor_name`]: `(n, k)` numbers the network computed for
    /// detectors that need it at score time (set with [`Features::set_probe`]).
    pub probes: BTreeMap<String, Array2<f32>>,
    /// Free-form string metadata (model, weights hash, dataset, split, layer, preprocessing).
    pub metadata: BTreeMap<String, String>,
}

fn check_finite<'a>(what: &str, values: impl IntoIterator<Item = &'a f32>) -> Result<()> {
    if values.into_iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::NonFinite {
            what: what.to_string(),
        })
    }
}

impl Features {
    /// Builds features, checking that row counts agree and every value is finite.
    pub fn new(
        embeddings: Array2<f32>,
        logits: Array2<f32>,
        labels: Option<Vec<i64>>,
    ) -> Result<Self> {
        let n = embeddings.nrows();
        if embeddings.ncols() == 0 || logits.ncols() == 0 {
            return Err(Error::InvalidParameter(format!(
                "features are ({n}, {}) and logits ({}, {}): zero-width features or logits hold nothing to score",
                embeddings.ncols(),
                logits.nrows(),
                logits.ncols()
            )));
        }
        if logits.nrows() != n {
            return Err(Error::dim("number of logit rows", n, logits.nrows()));
        }
        if let Some(l) = &labels
            && l.len() != n
        {
            return Err(Error::dim("number of labels", n, l.len()));
        }
        check_finite("features", embeddings.iter())?;
        check_finite("logits", logits.iter())?;
        Ok(Features {
            embeddings,
            logits,
            labels,
            probes: BTreeMap::new(),
            metadata: BTreeMap::new(),
        })
    }

    /// Stores the `(n, k)` values of `probe`, checking the row count and finiteness.
    pub fn set_probe(&mut self, probe: &Probe, values: Array2<f32>) -> Result<()> {
        self.insert_probe(probe.tensor_name(), values)
    }

    /// Stores a probe tensor under `name`, checking the row count and finiteness.
    fn insert_probe(&mut self, name: String, values: Array2<f32>) -> Result<()> {
        if values.nrows() != self.len() {
            return Err(Error::dim(
                format!("rows of '{name}'"),
                self.len(),
                values.nrows(),
            ));
        }
        check_finite(&name, values.iter())?;
        self.probes.insert(name, values);
        Ok(())
    }

    /// The parts `probe:KEY#NNN` of a probe stored as several tensors, in part order.
    fn parts_of(&self, probe: &Probe) -> impl Iterator<Item = &Array2<f32>> {
        let prefix = format!("{}#", probe.tensor_name());
        self.probes
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v)
    }

    /// Whether the features hold `probe`, as one tensor or as parts ([`Probe::part_name`]).
    pub fn has_probe(&self, probe: &Probe) -> bool {
        self.probes.contains_key(&probe.tensor_name()) || self.parts_of(probe).next().is_some()
    }

    /// The parts of a probe stored as several tensors ([`Probe::part_name`]), in part order, or
    /// [`Error::MissingProbe`] naming `detector` when there is none.
    pub fn probe_parts(&self, probe: &Probe, detector: &str) -> Result<Vec<ArrayView2<'_, f32>>> {
        let parts: Vec<ArrayView2<'_, f32>> = self.parts_of(probe).map(|v| v.view()).collect();
        if parts.is_empty() {
            return Err(Error::MissingProbe {
                detector: detector.to_string(),
                tensor: probe.part_name(0),
            });
        }
        Ok(parts)
    }

    /// Stores part `i` of a probe stored as several tensors ([`Probe::part_name`]).
    pub fn set_probe_part(&mut self, probe: &Probe, i: usize, values: Array2<f32>) -> Result<()> {
        self.insert_probe(probe.part_name(i), values)
    }

    /// The values of `probe`, or [`Error::MissingProbe`] naming `detector`.
    pub fn probe(&self, probe: &Probe, detector: &str) -> Result<ArrayView2<'_, f32>> {
        let name = probe.tensor_name();
        self.probes
            .get(&name)
            .map(|a| a.view())
            .ok_or_else(|| Error::MissingProbe {
                detector: detector.to_string(),
                tensor: name,
            })
    }

    /// Features whose logits are computed from a head: `logits = embeddings · Wᵀ + b`.
    pub fn with_head(
        embeddings: Array2<f32>,
        head: &Head,
        labels: Option<Vec<i64>>,
    ) -> Result<Self> {
        let logits = head.logits(embeddings.view())?;
        Features::new(embeddings, logits, labels)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.embeddings.nrows()
    }
    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Feature dimension `d`.
    pub fn dim(&self) -> usize {
        self.embeddings.ncols()
    }
    /// Number of classes `c` (logit columns).
    pub fn num_classes(&self) -> usize {
        self.logits.ncols()
    }

    /// Rows `[start, end)` as new features (labels and metadata follow).
    pub fn slice(&self, start: usize, end: usize) -> Features {
        Features {
            embeddings: self.embeddings.slice(s![start..end, ..]).to_owned(),
            logits: self.logits.slice(s![start..end, ..]).to_owned(),
            labels: self.labels.as_ref().map(|l| l[start..end].to_vec()),
            probes: self
                .probes
                .iter()
                .map(|(k, v)| (k.clone(), v.slice(s![start..end, ..]).to_owned()))
                .collect(),
            metadata: self.metadata.clone(),
        }
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Features {
        Features {
            embeddings: self.embeddings.select(Axis(0), indices),
            logits: self.logits.select(Axis(0), indices),
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            probes: self
                .probes
                .iter()
                .map(|(k, v)| (k.clone(), v.select(Axis(0), indices)))
                .collect(),
            metadata: self.metadata.clone(),
        }
    }

    /// Predicted class per row: the first maximum of the logits.
    pub fn predictions(&self) -> Vec<usize> {
        self.logits
            .rows()
            .into_iter()
            .map(|r| {
                argmax(
                    r.as_slice()
                        .expect("rows of a standard-layout array are contiguous"),
                )
            })
            .collect()
    }

    /// Classifier accuracy (fraction of rows whose first-maximum logit equals the label), when labelled.
    pub fn accuracy(&self) -> Option<f64> {
        let labels = self.labels.as_ref()?;
        if labels.is_empty() {
            return None;
        }
        let hits = self
            .predictions()
            .iter()
            .zip(labels)
            .filter(|&(&p, &l)| p as i64 == l)
            .count();
        Some(hits as f64 / labels.len() as f64)
    }

    /// Reads a feature file into memory (see the module doc for the layout).
    pub fn load(path: impl AsRef<Path>) -> Result<Features> {
        let file = FeatureFile::open(path)?;
        file.read_rows(0, file.len())
    }

    /// Writes a feature file atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let (n, d, c) = (self.len(), self.dim(), self.num_classes());
        let emb = self.embeddings.as_standard_layout();
        let lg = self.logits.as_standard_layout();
        let mut tensors = vec![
            TensorToWrite::f32(
                "features",
                vec![n, d],
                emb.as_slice().expect("standard layout"),
            ),
            TensorToWrite::f32(
                "logits",
                vec![n, c],
                lg.as_slice().expect("standard layout"),
            ),
        ];
        if let Some(l) = &self.labels {
            tensors.push(TensorToWrite::i64("labels", vec![n], l));
        }
        let probes: Vec<(&String, ndarray::CowArray<'_, f32, ndarray::Ix2>)> = self
            .probes
            .iter()
            .map(|(k, v)| (k, v.as_standard_layout()))
            .collect();
        for (k, v) in &probes {
            tensors.push(TensorToWrite::f32(
                k,
                vec![n, v.ncols()],
                v.as_slice().expect("standard layout"),
            ));
        }
        safetensors::write(path.as_ref(), &tensors, &self.metadata)
    }
}

/// Index of the first maximum (NaN-free input assumed; features are checked on construction).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Integer features or logits are almost always a mistake (labels or pixel values written under
/// the wrong name): refuse them instead of converting silently.
fn require_float(file: &SafeTensorsFile, name: &str) -> Result<()> {
    let t = file.info(name)?;
    if matches!(t.dtype, Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16) {
        Ok(())
    } else {
        Err(Error::format(
            file.path(),
            format!(
                "'{name}' is {}, expected floating point (F32, F64, F16 or BF16)",
                t.dtype.name()
            ),
        ))
    }
}

/// A feature file opened for chunked reading.
#[derive(Debug)]
pub struct FeatureFile {
    file: SafeTensorsFile,
    n: usize,
    d: usize,
    c: usize,
    has_labels: bool,
    /// Probe tensors: name and width.
    probes: Vec<(String, usize)>,
}

impl FeatureFile {
    /// Opens a feature file and checks its layout (no data is read yet).
    pub fn open(path: impl AsRef<Path>) -> Result<FeatureFile> {
        let file = SafeTensorsFile::open(path)?;
        let p = file.path().to_path_buf();
        let f = file.info("features")?;
        if f.shape.len() != 2 {
            return Err(Error::format(
                &p,
                format!("'features' must be 2-D (n, d), found shape {:?}", f.shape),
            ));
        }
        let (n, d) = (f.shape[0], f.shape[1]);
        let l = file.info("logits")?;
        if l.shape.len() != 2 || l.shape[0] != n {
            return Err(Error::format(
                &p,
                format!(
                    "'logits' must be ({n}, c) to match 'features', found shape {:?}",
                    l.shape
                ),
            ));
        }
        let c = l.shape[1];
        if d == 0 || c == 0 {
            return Err(Error::format(
                &p,
                format!(
                    "'features' is ({n}, {d}) and 'logits' ({n}, {c}): zero-width features or logits hold nothing to score"
                ),
            ));
        }
        for name in ["features", "logits"] {
            require_float(&file, name)?;
        }
        let has_labels = match file.tensors.get("labels") {
            Some(t) if t.shape != [n] => {
                return Err(Error::format(
                    &p,
                    format!("'labels' must have shape [{n}], found {:?}", t.shape),
                ));
            }
            Some(t) if !matches!(t.dtype, Dtype::I64 | Dtype::I32 | Dtype::U8) => {
                return Err(Error::format(
                    &p,
                    format!(
                        "'labels' is {}, expected integer class indices (I64, I32 or U8)",
                        t.dtype.name()
                    ),
                ));
            }
            Some(_) => true,
            None => false,
        };
        let mut probes = Vec::new();
        for (name, t) in &file.tensors {
            if !name.starts_with(TENSOR_PREFIX) {
                continue;
            }
            if t.shape.len() != 2 || t.shape[0] != n {
                return Err(Error::format(
                    &p,
                    format!(
                        "'{name}' must be ({n}, k) to match 'features', found shape {:?}",
                        t.shape
                    ),
                ));
            }
            require_float(&file, name)?;
            probes.push((name.clone(), t.shape[1]));
        }
        Ok(FeatureFile {
            file,
            n,
            d,
            c,
            has_labels,
            probes,
        })
    }
    /// Path of the file.
    pub fn path(&self) -> PathBuf {
        self.file.path().to_path_buf()
    }
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.n
    }
    /// True when the file has no rows.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.d
    }
    /// Number of logit columns.
    pub fn num_classes(&self) -> usize {
        self.c
    }
    /// Whether the file stores labels.
    pub fn has_labels(&self) -> bool {
        self.has_labels
    }
    /// The names of the probe tensors the file holds ([`crate::probes`]).
    pub fn probe_names(&self) -> impl Iterator<Item = &str> {
        self.probes.iter().map(|(n, _)| n.as_str())
    }
    /// The file's string metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.file.metadata
    }
    /// Reads only the `(n, d)` penultimate features of rows `[start, start + n)` (no logits, no
    /// labels); non-finite values are an error naming the file.
    pub fn read_embeddings(&self, start: usize, n: usize) -> Result<Array2<f32>> {
        let emb = self.file.read_rows_f32("features", start, n)?;
        if !emb.iter().all(|v| v.is_finite()) {
            return Err(Error::format(
                self.file.path(),
                format!(
                    "non-finite value (NaN or infinite) in features rows {start}..{}",
                    start + n
                ),
            ));
        }
        Ok(Array2::from_shape_vec((n, self.d), emb).expect("row read has n*d values"))
    }
    /// Reads rows `[start, start + n)`; non-finite values are an error naming the file.
    pub fn read_rows(&self, start: usize, n: usize) -> Result<Features> {
        let emb = self.file.read_rows_f32("features", start, n)?;
        let lg = self.file.read_rows_f32("logits", start, n)?;
        let labels = if self.has_labels {
            let all = self.file.read_i64("labels")?;
            Some(all[start..start + n].to_vec())
        } else {
            None
        };
        let embeddings = Array2::from_shape_vec((n, self.d), emb).expect("row read has n*d values");
        let logits = Array2::from_shape_vec((n, self.c), lg).expect("row read has n*c values");
        let mut f = Features::new(embeddings, logits, labels).map_err(|e| match e {
            Error::NonFinite { what } => Error::format(
                self.file.path(),
                format!("non-finite value (NaN or infinite) in {what}"),
            ),
            e => e,
        })?;
        for (name, k) in &self.probes {
            let v = self.file.read_rows_f32(name, start, n)?;
            if !v.iter().all(|x| x.is_finite()) {
                return Err(Error::format(
                    self.file.path(),
                    format!("non-finite value (NaN or infinite) in '{name}'"),
                ));
            }
            let v = Array2::from_shape_vec((n, *k), v).expect("row read has n*k values");
            f.probes.insert(name.clone(), v);
        }
        f.metadata = self.file.metadata.clone();
        Ok(f)
    }
}

/// What a detector is fitted on: in-memory features or a file read chunk by chunk.
#[derive(Debug, Clone, Copy)]
pub enum FitData<'a> {
    /// Features already in memory.
    Memory(&'a Features),
    /// A feature file, read in chunks.
    File(&'a FeatureFile),
}

impl<'a> From<&'a Features> for FitData<'a> {
    fn from(f: &'a Features) -> Self {
        FitData::Memory(f)
    }
}
impl<'a> From<&'a FeatureFile> for FitData<'a> {
    fn from(f: &'a FeatureFile) -> Self {
        FitData::File(f)
    }
}

/// Default rows per chunk when streaming from a file.
pub const DEFAULT_CHUNK_ROWS: usize = 16_384;

impl FitData<'_> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            FitData::Memory(f) => f.len(),
            FitData::File(f) => f.len(),
        }
    }
    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Feature dimension.
    pub fn dim(&self) -> usize {
        match self {
            FitData::Memory(f) => f.dim(),
            FitData::File(f) => f.dim(),
        }
    }
    /// Number of logit columns.
    pub fn num_classes(&self) -> usize {
        match self {
            FitData::Memory(f) => f.num_classes(),
            FitData::File(f) => f.num_classes(),
        }
    }
    /// Whether labels are present.
    pub fn has_labels(&self) -> bool {
        match self {
            FitData::Memory(f) => f.labels.is_some(),
            FitData::File(f) => f.has_labels(),
        }
    }
    /// Calls `f` on consecutive chunks of at most `rows` rows, in order.
    pub fn for_each_chunk(
        &self,
        rows: usize,
        mut f: impl FnMut(&Features) -> Result<()>,
    ) -> Result<()> {
        let rows = rows.max(1);
        match self {
            FitData::Memory(x) if x.len() <= rows => f(x),
            FitData::Memory(x) => {
                let mut start = 0;
                while start < x.len() {
                    let end = (start + rows).min(x.len());
                    f(&x.slice(start, end))?;
                    start = end;
                }
                Ok(())
            }
            FitData::File(file) => {
                let mut start = 0;
                while start < file.len() {
                    let n = rows.min(file.len() - start);
                    f(&file.read_rows(start, n)?)?;
                    start += n;
                }
                Ok(())
            }
        }
    }
    /// Like [`FitData::for_each_chunk`], but hands out only the `(rows, d)` penultimate features
    /// (a file is read without its logits and labels).
    pub fn for_each_embedding_chunk(
        &self,
        rows: usize,
        mut f: impl FnMut(ArrayView2<'_, f32>) -> Result<()>,
    ) -> Result<()> {
        let rows = rows.max(1);
        match self {
            FitData::Memory(x) => {
                let mut start = 0;
                while start < x.len() {
                    let end = (start + rows).min(x.len());
                    f(x.embeddings.slice(s![start..end, ..]))?;
                    start = end;
                }
                Ok(())
            }
            FitData::File(file) => {
                let mut start = 0;
                while start < file.len() {
                    let n = rows.min(file.len() - start);
                    f(file.read_embeddings(start, n)?.view())?;
                    start += n;
                }
                Ok(())
            }
        }
    }
    /// The first `n` rows (clamped to the length), borrowed when in memory and whole.
    pub fn first_rows(&self, n: usize) -> Result<std::borrow::Cow<'_, Features>> {
        let n = n.min(self.len());
        match self {
            FitData::Memory(f) if n == f.len() => Ok(std::borrow::Cow::Borrowed(*f)),
            FitData::Memory(f) => Ok(std::borrow::Cow::Owned(f.slice(0, n))),
            FitData::File(f) => Ok(std::borrow::Cow::Owned(f.read_rows(0, n)?)),
        }
    }
    /// All rows in memory (borrowed when they already are).
    pub fn to_features(&self) -> Result<std::borrow::Cow<'_, Features>> {
        match self {
            FitData::Memory(f) => Ok(std::borrow::Cow::Borrowed(*f)),
            FitData::File(f) => Ok(std::borrow::Cow::Owned(f.read_rows(0, f.len())?)),
        }
    }
}

/// The final linear layer: `logits = features · weightᵀ + bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// `(c, d)` weight.
    pub weight: Array2<f32>,
    /// `(c)` bias.
    pub bias: Array1<f32>,
}

impl Head {
    /// Builds a head, checking that the bias has one entry per weight row and all values are finite.
    pub fn new(weight: Array2<f32>, bias: Array1<f32>) -> Result<Head> {
        if bias.len() != weight.nrows() {
            return Err(Error::dim("head bias length", weight.nrows(), bias.len()));
        }
        check_finite("head weight", weight.iter())?;
        check_finite("head bias", bias.iter())?;
        Ok(Head { weight, bias })
    }
    /// Feature dimension `d`.
    pub fn dim(&self) -> usize {
        self.weight.ncols()
    }
    /// Number of classes `c`.
    pub fn num_classes(&self) -> usize {
        self.weight.nrows()
    }
    /// `x · Wᵀ + b` for `(n, d)` features.
    pub fn logits(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        if x.ncols() != self.dim() {
            return Err(Error::dim(
                "feature dimension (head input)",
                self.dim(),
                x.ncols(),
            ));
        }
        let mut z = crate::linalg::matmul_transb(x, self.weight.view());
        z += &self.bias;
        Ok(z)
    }
    /// Checks that features fit this head (same `d` and `c`).
    pub fn check(&self, x: &Features) -> Result<()> {
        if x.dim() != self.dim() {
            return Err(Error::dim(
                "feature dimension (features vs head)",
                self.dim(),
                x.dim(),
            ));
        }
        if x.num_classes() != self.num_classes() {
            return Err(Error::dim(
                "number of classes (logits vs head)",
                self.num_classes(),
                x.num_classes(),
            ));
        }
        Ok(())
    }
    /// Reads a head file (`weight` `(c, d)`, `bias` `(c)`).
    pub fn load(path: impl AsRef<Path>) -> Result<Head> {
        let f = SafeTensorsFile::open(path)?;
        let p = f.path().to_path_buf();
        let w = f.info("weight")?.clone();
        if w.shape.len() != 2 || w.shape[0] == 0 || w.shape[1] == 0 {
            return Err(Error::format(
                &p,
                format!(
                    "head 'weight' must be 2-D (c, d) with c, d >= 1, found {:?}",
                    w.shape
                ),
            ));
        }
        require_float(&f, "weight")?;
        if let Some(b) = f.tensors.get("bias") {
            if b.shape != [w.shape[0]] {
                return Err(Error::format(
                    &p,
                    format!(
                        "head 'bias' must have shape [{}] (one per class), found {:?}",
                        w.shape[0], b.shape
                    ),
                ));
            }
            require_float(&f, "bias")?;
        }
        let weight = Array2::from_shape_vec((w.shape[0], w.shape[1]), f.read_f32("weight")?)
            .expect("shape checked");
        let bias = match f.tensors.get("bias") {
            Some(_) => Array1::from(f.read_f32("bias")?),
            None => Array1::zeros(w.shape[0]),
        };
        Head::new(weight, bias).map_err(|e| Error::format(&p, e.to_string()))
    }
    /// Writes a head file atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let w = self.weight.as_standard_layout();
        safetensors::write(
            path.as_ref(),
            &[
                TensorToWrite::f32(
                    "weight",
                    vec![self.num_classes(), self.dim()],
                    w.as_slice().expect("standard layout"),
                ),
                TensorToWrite::f32("bias", vec![self.num_classes()], &self.bias.to_vec()),
            ],
            &BTreeMap::new(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn toy() -> (Features, Head) {
        let head = Head::new(
            array![[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
            array![0.0, 0.5, -1.0],
        )
        .unwrap();
        let f = Features::with_head(
            array![[1.0, 2.0], [3.0, -1.0], [0.0, 0.0]],
            &head,
            Some(vec![2, 0, 1]),
        )
        .unwrap();
        (f, head)
    }

    #[test]
    fn features_roundtrip_through_a_file() {
        let (mut f, head) = toy();
        f.metadata.insert("dataset".into(), "toy".into());
        assert_eq!(
            f.logits,
            array![[1.0, 2.5, 2.0], [3.0, -0.5, 1.0], [0.0, 0.5, -1.0]]
        );
        let dir = tempfile::tempdir().unwrap();
        f.save(dir.path().join("f.safetensors")).unwrap();
        head.save(dir.path().join("h.safetensors")).unwrap();
        assert_eq!(Features::load(dir.path().join("f.safetensors")).unwrap(), f);
        assert_eq!(Head::load(dir.path().join("h.safetensors")).unwrap(), head);
        let file = FeatureFile::open(dir.path().join("f.safetensors")).unwrap();
        let mut seen = vec![];
        FitData::from(&file)
            .for_each_chunk(2, |c| {
                seen.push(c.len());
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, vec![2, 1]);
    }

    #[test]
    fn probe_tensors_roundtrip_slice_and_are_checked() {
        let (mut f, _) = toy();
        let p = Probe::Odin {
            temperature: 10.0,
            epsilon: 0.0028,
        };
        assert!(f.set_probe(&p, Array2::zeros((2, 3))).is_err(), "row count");
        assert!(
            f.set_probe(&p, array![[f32::NAN], [0.0], [1.0]]).is_err(),
            "finite"
        );
        f.set_probe(&p, array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.safetensors");
        f.save(&path).unwrap();
        let file = FeatureFile::open(&path).unwrap();
        assert_eq!(
            file.probe_names().collect::<Vec<_>>(),
            ["probe:odin(T=10,eps=0.0028)"]
        );
        assert_eq!(Features::load(&path).unwrap(), f);
        let rows = file.read_rows(1, 2).unwrap();
        assert_eq!(
            rows.probe(&p, "odin").unwrap(),
            array![[3.0f32, 4.0], [5.0, 6.0]]
        );
        assert_eq!(
            f.select(&[2, 0]).probe(&p, "odin").unwrap(),
            array![[5.0f32, 6.0], [1.0, 2.0]]
        );
        // A probe tensor whose rows do not match the features is a format error naming it.
        let bad = dir.path().join("bad.safetensors");
        let z = [0.0f32; 4];
        safetensors::write(
            &bad,
            &[
                TensorToWrite::f32("features", vec![2, 1], &z[..2]),
                TensorToWrite::f32("logits", vec![2, 1], &z[..2]),
                TensorToWrite::f32("probe:odin(T=1,eps=0)", vec![4, 1], &z),
            ],
            &BTreeMap::new(),
        )
        .unwrap();
        let e = FeatureFile::open(&bad).unwrap_err().to_string();
        assert!(
            e.contains("probe:odin(T=1,eps=0)") && e.contains("(2, k)"),
            "{e}"
        );
    }

    #[test]
    fn features_accuracy_and_first_argmax() {
        let (f, _) = toy();
        assert_eq!(f.predictions(), vec![1, 0, 1]);
        assert!((f.accuracy().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }

    #[test]
    fn features_reject_nan_and_mismatched_rows() {
        assert!(matches!(
            Features::new(array![[f32::NAN]], array![[0.0]], None),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            Features::new(array![[1.0], [2.0]], array![[0.0]], None),
            Err(Error::DimensionMismatch { .. })
        ));
    }
}
