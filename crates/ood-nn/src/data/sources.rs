//! The data sources behind [`DataSpec`].

use super::{Pixels, RawSample};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// A stream of samples in dataset order. Errors for single samples (unreadable file) are
/// reported in place; the stream continues after them where it can.
pub type SampleIter = Box<dyn Iterator<Item = Result<RawSample>> + Send>;

/// What to do with an image that cannot be read or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop with an error naming the file (the default).
    #[default]
    Fail,
    /// Skip the image and count it.
    Skip,
}

/// A local dataset. See [`DataSpec::parse`] for the text form.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSpec {
    /// A folder-per-class image tree (`DIR/<class>/.../*.{jpg,jpeg,png}`).
    Folder(PathBuf),
    /// A `.tar` or `.tar.gz` archive holding a folder-per-class image tree (the class is the
    /// image's parent directory).
    Tar(PathBuf),
    /// MNIST-style idx files (`.gz` or raw): images `(n, rows, cols)` u8, optional labels.
    Idx {
        /// The images file (`*-images-idx3-ubyte[.gz]`).
        images: PathBuf,
        /// The labels file (`*-labels-idx1-ubyte[.gz]`); without it labels are `-1`.
        labels: Option<PathBuf>,
    },
    /// CIFAR binary batches (`data_batch_*.bin`, `test_batch.bin` for CIFAR-10: 1 label byte +
    /// 3072 planar RGB bytes per record; CIFAR-100 `train.bin`/`test.bin`: coarse and fine
    /// label bytes, the fine label is used).
    CifarBin {
        /// Batch files, read in the given order.
        files: Vec<PathBuf>,
        /// 10 or 100.
        classes: u32,
    },
    /// Tiny-ImageNet-200 validation images inside a `.tar[.gz]` (or an extracted folder is not
    /// supported: use `imglist`), labelled from `val/val_annotations.txt` and `wnids.txt`.
    TinVal(PathBuf),
    /// Tiny-ImageNet-200 test images inside a `.tar[.gz]` (unlabelled: `-1`).
    TinTest(PathBuf),
    /// An OpenOOD `benchmark_imglist` file: `<relative path> <label>` per line, split at the
    /// first space, paths relative to `root`.
    ImgList {
        /// The list file.
        list: PathBuf,
        /// The folder the paths are relative to.
        root: PathBuf,
    },
}

fn data_err(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
    Error::Data {
        path: path.into(),
        reason: reason.into(),
    }
}

fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".jpg", ".jpeg", ".png"].iter().any(|e| lower.ends_with(e))
}

/// Opens a file, transparently gunzipping it when it starts with the gzip magic bytes.
fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read + Send>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(|e| Error::io(path, e))?;
    drop(f);
    let f = BufReader::new(std::fs::File::open(path).map_err(|e| Error::io(path, e))?);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(f)))
    } else {
        Ok(Box::new(f))
    }
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn member_name(entry: &tar::Entry<'_, Box<dyn Read + Send>>) -> Option<String> {
    let p = entry.path().ok()?;
    let s = p.to_string_lossy().into_owned();
    Some(s.trim_start_matches("./").to_string())
}

/// Contents of archive members kept by [`scan_tar`], by member name.
type KeptMembers = HashMap<String, Vec<u8>>;

/// First pass over an archive: all regular member names and the contents of the members for
/// which `keep` is true.
fn scan_tar(path: &Path, keep: &dyn Fn(&str) -> bool) -> Result<(Vec<String>, KeptMembers)> {
    let mut ar = tar::Archive::new(open_maybe_gz(path)?);
    let mut names = Vec::new();
    let mut kept = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let entries = ar
        .entries()
        .map_err(|e| data_err(path, format!("not a readable tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| data_err(path, format!("corrupt tar archive: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let Some(name) = member_name(&entry) else {
            continue;
        };
        if !seen.insert(name.clone()) {
            return Err(data_err(
                path,
                format!(
                    "member '{name}' appears twice in the archive (appended with tar -r?): \
                     which copy is meant is ambiguous; rebuild the archive with one copy"
                ),
            ));
        }
        if keep(&name) {
            let mut buf = Vec::new();
            entry
                .read_to_end(&mut buf)
                .map_err(|e| data_err(path.join(&name), format!("cannot read member: {e}")))?;
            kept.insert(name.clone(), buf);
        }
        names.push(name);
    }
    Ok((names, kept))
}

/// Second pass: streams the members of `plan` (member name, label) in plan order from a
/// background thread. Members that arrive out of order are held until their turn (an archive
/// already in plan order, like the CIFAR-10 JPEG tarballs, holds nothing).
fn stream_tar(path: &Path, plan: Vec<(String, i64)>) -> SampleIter {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<RawSample>>(256);
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let index: HashMap<&str, usize> = plan
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.as_str(), i))
            .collect();
        let mut next = 0usize;
        let mut held: BTreeMap<usize, RawSample> = BTreeMap::new();
        let mut run = || -> Result<()> {
            let mut ar = tar::Archive::new(open_maybe_gz(&path)?);
            let entries = ar
                .entries()
                .map_err(|e| data_err(&path, format!("not a readable tar archive: {e}")))?;
            for entry in entries {
                let mut entry =
                    entry.map_err(|e| data_err(&path, format!("corrupt tar archive: {e}")))?;
                let Some(name) = member_name(&entry) else {
                    continue;
                };
                let Some(&i) = index.get(name.as_str()) else {
                    continue;
                };
                let mut buf = Vec::new();
                let sample = match entry.read_to_end(&mut buf) {
                    Ok(_) => Ok(RawSample {
                        name: name.clone(),
                        label: plan[i].1,
                        pixels: Pixels::Encoded(buf),
                    }),
                    Err(e) => Err(data_err(
                        path.join(&name),
                        format!("cannot read archive member: {e}"),
                    )),
                };
                if i == next {
                    if tx.send(sample).is_err() {
                        return Ok(());
                    }
                    next += 1;
                    while let Some(s) = held.remove(&next) {
                        if tx.send(Ok(s)).is_err() {
                            return Ok(());
                        }
                        next += 1;
                    }
                } else {
                    match sample {
                        Ok(s) => {
                            held.insert(i, s);
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return Ok(());
                        }
                    }
                }
            }
            if next < plan.len() {
                return Err(data_err(
                    &path,
                    format!("archive member '{}' vanished between passes", plan[next].0),
                ));
            }
            Ok(())
        };
        if let Err(e) = run() {
            let _ = tx.send(Err(e));
        }
    });
    Box::new(rx.into_iter())
}

/// Class name of an image path: its parent directory's name.
fn parent_class(name: &str) -> Option<String> {
    let p = Path::new(name);
    p.parent()?
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
}

/// The plan of an archive's images: a folder-per-class tree ([`folder_plan`]), or, when every
/// image sits at the archive's root, an unlabelled set (label `-1`, member order by name). A mix
/// of both is an error: the root images would have no class.
fn archive_plan(path: &Path, names: Vec<String>) -> Result<ClassPlan<String>> {
    let images: Vec<String> = names.into_iter().filter(|n| is_image_name(n)).collect();
    let at_root: Vec<&String> = images.iter().filter(|n| !n.contains('/')).collect();
    if at_root.is_empty() {
        return Ok(folder_plan(images));
    }
    if at_root.len() == images.len() {
        let mut plan: Vec<(String, i64)> = images.into_iter().map(|n| (n, -1)).collect();
        plan.sort();
        return Ok((Vec::new(), plan));
    }
    Err(data_err(
        path,
        format!(
            "{} of its {} images sit at the archive's root with no class folder (e.g. '{}'): \
             put them in a class folder, or archive them on their own as an unlabelled set",
            at_root.len(),
            images.len(),
            at_root[0]
        ),
    ))
}

/// Sorted classes and the (member, label) plan, class-major then path.
fn folder_plan(names: impl IntoIterator<Item = String>) -> ClassPlan<String> {
    class_plan(
        names
            .into_iter()
            .filter(|n| is_image_name(n))
            .filter_map(|n| parent_class(&n).map(|c| (c, n)))
            .collect(),
    )
}

/// Sorted class names and the `(item, label)` plan of a labelled source.
type ClassPlan<T> = (Vec<String>, Vec<(T, i64)>);

/// Sorts `(class, item)` pairs class-major, then numbers the classes in sorted order.
fn class_plan<T: Ord>(mut items: Vec<(String, T)>) -> ClassPlan<T> {
    items.sort();
    let mut classes: Vec<String> = items.iter().map(|(c, _)| c.clone()).collect();
    classes.dedup();
    let plan = items
        .into_iter()
        .map(|(c, n)| {
            let label = classes.binary_search(&c).unwrap_or(0) as i64;
            (n, label)
        })
        .collect();
    (classes, plan)
}

/// Every image file under `dir`, for a folder-per-class tree.
///
/// Symbolic links are followed, to files and to directories (a class folder may be a link to
/// images elsewhere), but each real directory is read once: a link to a directory already
/// visited, or to a directory that contains `dir` itself (`up -> ..`, `loop -> .`), is skipped,
/// so no image is listed twice and no link cycle can make the walk endless. A link whose target
/// is missing is listed when its name is an image's (reading it then fails, or is skipped with
/// `--on-error skip`). Entries are visited in sorted order, so the result does not depend on the
/// file system's order. Paths are kept as the OS gives them (names need not be UTF-8).
fn walk_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let root = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    let mut visited = std::collections::HashSet::new();
    visited.insert(root.clone());
    walk_dir(dir, &root, &mut visited, out)
}

fn walk_dir(
    dir: &Path,
    root: &Path,
    visited: &mut std::collections::HashSet<PathBuf>,
    out: &mut Vec<PathBuf>,
) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut entries = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let ft = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
        entries.push((entry.path(), ft));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, ft) in entries {
        let is_dir = ft.is_dir() || (ft.is_symlink() && p.is_dir());
        if is_dir {
            let real = std::fs::canonicalize(&p).map_err(|e| Error::io(&p, e))?;
            // A link back to the tree's root or one of its ancestors would walk it again.
            if root.starts_with(&real) || !visited.insert(real.clone()) {
                continue;
            }
            walk_dir(&p, root, visited, out)?;
        } else if is_image_name(&p.file_name().unwrap_or_default().to_string_lossy()) {
            out.push(p);
        }
    }
    Ok(())
}

/// Sorted classes and the (file, label) plan of a folder tree, class-major then path; the class
/// of an image is the name of its parent folder.
fn folder_file_plan(files: Vec<PathBuf>) -> ClassPlan<PathBuf> {
    class_plan(
        files
            .into_iter()
            .map(|p| {
                let class = p
                    .parent()
                    .and_then(Path::file_name)
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (class, p)
            })
            .collect(),
    )
}

fn read_idx(path: &Path, want_dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let mut bytes = Vec::new();
    open_maybe_gz(path)?
        .read_to_end(&mut bytes)
        .map_err(|e| data_err(path, format!("cannot read idx file: {e}")))?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(data_err(
            path,
            "not an idx file of unsigned bytes (bad magic)",
        ));
    }
    let dims = bytes[3] as usize;
    if dims != want_dims {
        return Err(data_err(
            path,
            format!("idx file has {dims} dimensions, expected {want_dims}"),
        ));
    }
    let header = 4 + 4 * dims;
    if bytes.len() < header {
        return Err(data_err(path, "truncated idx header"));
    }
    let shape: Vec<usize> = (0..dims)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    // Checked: three u32 dimensions can overflow usize (found by fuzzing).
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n == bytes.len() - header);
    if n.is_none() {
        let need = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .map_or("more than fit in memory".to_string(), |n| n.to_string());
        return Err(data_err(
            path,
            format!(
                "idx data has {} bytes, shape {shape:?} needs {need}",
                bytes.len() - header
            ),
        ));
    }
    bytes.drain(..header);
    Ok((shape, bytes))
}

/// Parses one OpenOOD image-list line into (relative path, label).
fn parse_imglist_line(line: &str) -> std::result::Result<(String, i64), String> {
    let (path, extra) = match line.split_once(' ') {
        Some((p, e)) => (p, e.trim()),
        None => (line, ""),
    };
    if path.starts_with('/') {
        return Err(format!(
            "absolute path '{path}' (paths must be relative to the data root)"
        ));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!("path '{path}' leaves the data root"));
    }
    let label = if extra.is_empty() {
        -1
    } else if extra.starts_with('{') {
        0 // OpenOOD's legacy dict form: label set to 0
    } else {
        extra
            .parse::<i64>()
            .map_err(|_| format!("label '{extra}' is not an integer"))?
    };
    Ok((path.to_string(), label))
}

impl DataSpec {
    /// Parses the text form:
    ///
    /// | form | source |
    /// |---|---|
    /// | `folder:DIR` | folder-per-class tree |
    /// | `tar:FILE` or `cifar10-jpeg:FILE` | folder-per-class tree in a `.tar` / `.tar.gz` |
    /// | `idx:IMAGES[,LABELS]` | MNIST-style idx files, `.gz` or raw |
    /// | `cifar10-bin:FILE[,FILE...]`, `cifar100-bin:FILE[,...]` | CIFAR binary batches |
    /// | `tin-val:FILE`, `tin-test:FILE` | Tiny-ImageNet-200 val / test in an archive |
    /// | `imglist:LIST@ROOT` | OpenOOD image list, paths relative to `ROOT` |
    pub fn parse(s: &str) -> Result<DataSpec> {
        let (kind, rest) = s.split_once(':').ok_or_else(|| {
            Error::Config(format!(
                "data spec '{s}' must look like KIND:PATH (kinds: folder, tar, cifar10-jpeg, idx, \
                 cifar10-bin, cifar100-bin, tin-val, tin-test, imglist)"
            ))
        })?;
        if rest.is_empty() {
            return Err(Error::Config(format!("data spec '{s}' has no path")));
        }
        let files = || rest.split(',').map(PathBuf::from).collect::<Vec<_>>();
        Ok(match kind {
            "folder" => DataSpec::Folder(rest.into()),
            "tar" | "cifar10-jpeg" => DataSpec::Tar(rest.into()),
            "idx" => {
                let f = files();
                if f.len() > 2 {
                    return Err(Error::Config(format!(
                        "idx spec '{s}' takes IMAGES[,LABELS], got {} paths",
                        f.len()
                    )));
                }
                DataSpec::Idx {
                    images: f[0].clone(),
                    labels: f.get(1).cloned(),
                }
            }
            "cifar10-bin" => DataSpec::CifarBin {
                files: files(),
                classes: 10,
            },
            "cifar100-bin" => DataSpec::CifarBin {
                files: files(),
                classes: 100,
            },
            "tin-val" => DataSpec::TinVal(rest.into()),
            "tin-test" => DataSpec::TinTest(rest.into()),
            "imglist" => {
                let (list, root) = rest.rsplit_once('@').ok_or_else(|| {
                    Error::Config(format!("imglist spec '{s}' must be imglist:LIST@ROOT"))
                })?;
                DataSpec::ImgList {
                    list: list.into(),
                    root: root.into(),
                }
            }
            other => {
                return Err(Error::Config(format!(
                    "unknown data kind '{other}' in '{s}' (kinds: folder, tar, cifar10-jpeg, idx, \
                     cifar10-bin, cifar100-bin, tin-val, tin-test, imglist)"
                )));
            }
        })
    }

    /// The canonical text form (round-trips through [`DataSpec::parse`]).
    pub fn to_spec_string(&self) -> String {
        let j = |f: &[PathBuf]| {
            f.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            DataSpec::Folder(p) => format!("folder:{}", p.display()),
            DataSpec::Tar(p) => format!("tar:{}", p.display()),
            DataSpec::Idx { images, labels } => match labels {
                Some(l) => format!("idx:{},{}", images.display(), l.display()),
                None => format!("idx:{}", images.display()),
            },
            DataSpec::CifarBin { files, classes } => format!("cifar{classes}-bin:{}", j(files)),
            DataSpec::TinVal(p) => format!("tin-val:{}", p.display()),
            DataSpec::TinTest(p) => format!("tin-test:{}", p.display()),
            DataSpec::ImgList { list, root } => {
                format!("imglist:{}@{}", list.display(), root.display())
            }
        }
    }

    /// The files this source reads directly (archives, idx and CIFAR files, the image list):
    /// what an output must never overwrite. Folder trees list no files here.
    pub fn input_files(&self) -> Vec<PathBuf> {
        match self {
            DataSpec::Folder(_) => Vec::new(),
            DataSpec::Tar(p) | DataSpec::TinVal(p) | DataSpec::TinTest(p) => vec![p.clone()],
            DataSpec::Idx { images, labels } => std::iter::once(images.clone())
                .chain(labels.clone())
                .collect(),
            DataSpec::CifarBin { files, .. } => files.clone(),
            DataSpec::ImgList { list, .. } => vec![list.clone()],
        }
    }

    /// A short dataset name for metadata: the file or folder stem plus the split where known.
    pub fn dataset_name(&self) -> String {
        let stem = |p: &Path| {
            let s = p
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            s.trim_end_matches(".gz")
                .trim_end_matches(".tar")
                .trim_end_matches(".txt")
                .to_string()
        };
        match self {
            DataSpec::Folder(p) | DataSpec::Tar(p) => stem(p),
            DataSpec::Idx { images, .. } => stem(images),
            DataSpec::CifarBin { files, .. } => files.first().map(|p| stem(p)).unwrap_or_default(),
            DataSpec::TinVal(_) => "tiny-imagenet-200/val".into(),
            DataSpec::TinTest(_) => "tiny-imagenet-200/test".into(),
            DataSpec::ImgList { list, .. } => stem(list),
        }
    }

    /// SHA-256 identifying the data: of the file bytes for file sources (archives, idx, CIFAR
    /// batches), of the sorted (relative path, size) list for folders, and of the list file plus
    /// the size of every listed image for image lists. The source kind is included.
    pub fn fingerprint(&self) -> Result<String> {
        let mut h = Sha256::new();
        let kind = self.to_spec_string();
        let kind = kind.split(':').next().unwrap_or_default().to_string();
        h.update(kind.as_bytes());
        match self {
            DataSpec::Tar(p) | DataSpec::TinVal(p) | DataSpec::TinTest(p) => {
                h.update(ood_core::hashing::sha256_file(p)?.as_bytes())
            }
            DataSpec::Idx { images, labels } => {
                h.update(ood_core::hashing::sha256_file(images)?.as_bytes());
                if let Some(l) = labels {
                    h.update(ood_core::hashing::sha256_file(l)?.as_bytes());
                }
            }
            DataSpec::CifarBin { files, .. } => {
                for f in files {
                    h.update(ood_core::hashing::sha256_file(f)?.as_bytes());
                }
            }
            DataSpec::Folder(dir) => {
                let mut files = Vec::new();
                walk_images(dir, &mut files)?;
                files.sort();
                for f in files {
                    // A dangling link has no size: it still counts, as missing.
                    let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(u64::MAX);
                    let rel = f.strip_prefix(dir).unwrap_or(&f);
                    h.update(format!("{}\t{size}\n", rel.display()).as_bytes());
                }
            }
            DataSpec::ImgList { list, root } => {
                h.update(ood_core::hashing::sha256_file(list)?.as_bytes());
                for (rel, _) in self.imglist_entries(list)? {
                    let f = root.join(&rel);
                    let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(u64::MAX);
                    h.update(format!("{rel}\t{size}\n").as_bytes());
                }
            }
        }
        Ok(hex(&h.finalize()))
    }

    fn imglist_entries(&self, list: &Path) -> Result<Vec<(String, i64)>> {
        let text = std::fs::read_to_string(list).map_err(|e| Error::io(list, e))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                parse_imglist_line(l.trim_end())
                    .map_err(|r| data_err(list, format!("line {}: {r}", i + 1)))
            })
            .collect()
    }

    /// Streams the samples in dataset order (see the module doc of [`crate::data`]).
    pub fn samples(&self) -> Result<SampleIter> {
        match self {
            DataSpec::Tar(path) => {
                let (names, _) = scan_tar(path, &|_| false)?;
                let (_, plan) = archive_plan(path, names)?;
                if plan.is_empty() {
                    return Err(data_err(path, "no .jpg/.jpeg/.png images in the archive"));
                }
                Ok(stream_tar(path, plan))
            }
            DataSpec::TinVal(path) | DataSpec::TinTest(path) => {
                let val = matches!(self, DataSpec::TinVal(_));
                let is_text =
                    |n: &str| n.ends_with("wnids.txt") || n.ends_with("val_annotations.txt");
                let (names, texts) = scan_tar(path, &is_text)?;
                let dir = if val { "val/images/" } else { "test/images/" };
                let mut members: Vec<(String, String)> = names
                    .into_iter()
                    .filter(|n| is_image_name(n))
                    .filter_map(|n| {
                        let i = n.find(dir)?;
                        (i == 0 || n[..i].ends_with('/'))
                            .then(|| (n[i + dir.len()..].to_string(), n.clone()))
                    })
                    .collect();
                members.sort();
                if members.is_empty() {
                    return Err(data_err(
                        path,
                        format!("no images under '{dir}' in the archive"),
                    ));
                }
                let plan = if val {
                    let text = |suffix: &str| {
                        texts
                            .iter()
                            .find(|(k, _)| k.ends_with(suffix))
                            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                            .ok_or_else(|| data_err(path, format!("no '{suffix}' in the archive")))
                    };
                    let mut wnids: Vec<String> = text("wnids.txt")?
                        .lines()
                        .map(|l| l.trim().to_string())
                        .filter(|l| !l.is_empty())
                        .collect();
                    wnids.sort();
                    let ann: HashMap<String, String> = text("val_annotations.txt")?
                        .lines()
                        .filter_map(|l| {
                            let mut it = l.split('\t');
                            Some((it.next()?.to_string(), it.next()?.to_string()))
                        })
                        .collect();
                    members
                        .into_iter()
                        .map(|(file, member)| {
                            let wnid = ann.get(&file).ok_or_else(|| {
                                data_err(path, format!("'{file}' is not in val_annotations.txt"))
                            })?;
                            let label = wnids.binary_search(wnid).map_err(|_| {
                                data_err(
                                    path,
                                    format!("class '{wnid}' of '{file}' is not in wnids.txt"),
                                )
                            })?;
                            Ok((member, label as i64))
                        })
                        .collect::<Result<Vec<_>>>()?
                } else {
                    members.into_iter().map(|(_, m)| (m, -1)).collect()
                };
                Ok(stream_tar(path, plan))
            }
            DataSpec::Folder(dir) => {
                let mut files = Vec::new();
                walk_images(dir, &mut files)?;
                let (_, plan) = folder_file_plan(files);
                if plan.is_empty() {
                    return Err(data_err(dir, "no .jpg/.jpeg/.png images in the folder"));
                }
                Ok(Box::new(plan.into_iter().map(|(path, label)| {
                    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                    Ok(RawSample {
                        name: path.to_string_lossy().into_owned(),
                        label,
                        pixels: Pixels::Encoded(bytes),
                    })
                })))
            }
            DataSpec::ImgList { list, root } => {
                let entries = self.imglist_entries(list)?;
                let root = root.clone();
                Ok(Box::new(entries.into_iter().map(move |(rel, label)| {
                    let p = root.join(&rel);
                    let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
                    Ok(RawSample {
                        name: rel,
                        label,
                        pixels: Pixels::Encoded(bytes),
                    })
                })))
            }
            DataSpec::Idx { images, labels } => {
                let (shape, data) = read_idx(images, 3)?;
                let (n, rows, cols) = (shape[0], shape[1], shape[2]);
                let labels: Vec<i64> = match labels {
                    Some(lp) => {
                        let (ls, l) = read_idx(lp, 1)?;
                        if ls[0] != n {
                            return Err(data_err(
                                lp,
                                format!("{} labels for {n} images in {}", ls[0], images.display()),
                            ));
                        }
                        l.into_iter().map(i64::from).collect()
                    }
                    None => vec![-1; n],
                };
                let file = images.display().to_string();
                let px = rows * cols;
                Ok(Box::new((0..n).map(move |i| {
                    Ok(RawSample {
                        name: format!("{file}#{i}"),
                        label: labels[i],
                        pixels: Pixels::Gray {
                            width: cols as u32,
                            height: rows as u32,
                            data: data[i * px..(i + 1) * px].to_vec(),
                        },
                    })
                })))
            }
            DataSpec::CifarBin { files, classes } => {
                let label_bytes = if *classes == 100 { 2 } else { 1 };
                let rec = label_bytes + 3072;
                let mut all: Vec<(String, Vec<u8>)> = Vec::new();
                for f in files {
                    let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
                    if bytes.is_empty() || bytes.len() % rec != 0 {
                        return Err(data_err(
                            f,
                            format!(
                                "{} bytes is not a whole number of {rec}-byte CIFAR-{classes} records",
                                bytes.len()
                            ),
                        ));
                    }
                    all.push((f.display().to_string(), bytes));
                }
                let iter = all.into_iter().flat_map(move |(file, bytes)| {
                    let n = bytes.len() / rec;
                    (0..n)
                        .map(|i| {
                            let r = &bytes[i * rec..(i + 1) * rec];
                            let label = i64::from(r[label_bytes - 1]);
                            let px = &r[label_bytes..];
                            let rgb: Vec<u8> = (0..1024)
                                .flat_map(|j| [px[j], px[1024 + j], px[2048 + j]])
                                .collect();
                            Ok(RawSample {
                                name: format!("{file}#{i}"),
                                label,
                                pixels: Pixels::Rgb(
                                    image::RgbImage::from_raw(32, 32, rgb)
                                        .expect("3072 bytes make a 32x32 rgb image"),
                                ),
                            })
                        })
                        .collect::<Vec<_>>()
                });
                Ok(Box::new(iter))
            }
        }
    }

    /// Class names in label order, where the source defines them (folder trees and
    /// Tiny-ImageNet val), else an empty list.
    pub fn classes(&self) -> Result<Vec<String>> {
        match self {
            DataSpec::Tar(path) => {
                let (names, _) = scan_tar(path, &|_| false)?;
                Ok(archive_plan(path, names)?.0)
            }
            DataSpec::Folder(dir) => {
                let mut files = Vec::new();
                walk_images(dir, &mut files)?;
                Ok(folder_file_plan(files).0)
            }
            _ => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trip_and_errors() {
        for s in [
            "folder:/a/b",
            "tar:/x.tar.gz",
            "idx:/i.gz,/l.gz",
            "idx:/i.gz",
            "cifar10-bin:/a.bin,/b.bin",
            "cifar100-bin:/t.bin",
            "tin-val:/t.tar.gz",
            "tin-test:/t.tar.gz",
            "imglist:/l.txt@/root",
        ] {
            assert_eq!(DataSpec::parse(s).unwrap().to_spec_string(), s);
        }
        assert_eq!(
            DataSpec::parse("cifar10-jpeg:/c.tar.gz").unwrap(),
            DataSpec::Tar("/c.tar.gz".into())
        );
        assert!(DataSpec::parse("nope:/x").is_err());
        assert!(DataSpec::parse("/x").is_err());
        assert!(DataSpec::parse("imglist:/l.txt").is_err());
        assert!(DataSpec::parse("idx:a,b,c").is_err());
    }

    #[test]
    fn imglist_lines() {
        assert_eq!(
            parse_imglist_line("cifar10/test/airplane/0001.png 0").unwrap(),
            ("cifar10/test/airplane/0001.png".to_string(), 0)
        );
        assert_eq!(
            parse_imglist_line("ssb_hard/n1/n1_1063.JPEG -1").unwrap().1,
            -1
        );
        assert!(parse_imglist_line("/abs/x.png 0").is_err());
        assert!(parse_imglist_line("../x.png 0").is_err());
        assert!(parse_imglist_line("x.png zero").is_err());
    }

    #[test]
    fn folder_plan_is_class_major_then_path() {
        let (classes, plan) = folder_plan(
            [
                "t/b/2.jpg",
                "t/a/10.jpg",
                "t/b/1.jpg",
                "t/a/1.png",
                "t/a/readme.txt",
            ]
            .map(String::from),
        );
        assert_eq!(classes, vec!["a", "b"]);
        let names: Vec<&str> = plan.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            vec!["t/a/1.png", "t/a/10.jpg", "t/b/1.jpg", "t/b/2.jpg"]
        );
        assert_eq!(
            plan.iter().map(|p| p.1).collect::<Vec<_>>(),
            vec![0, 0, 1, 1]
        );
    }
}
