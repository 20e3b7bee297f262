//! [`DataSpec`]: the closed list of local data sources, its text form (`KIND:PATH`), and the
//! dispatch to the reader of each format (one file per format in this folder).

use super::{SampleIter, cifar_bin, folder, hex_string, idx, imglist, tar, tiny_imagenet};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

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

    /// The same source with every relative path joined onto `root` (absolute paths unchanged).
    pub fn relative_to(&self, root: &Path) -> DataSpec {
        let j = |p: &PathBuf| root.join(p);
        match self {
            DataSpec::Folder(p) => DataSpec::Folder(j(p)),
            DataSpec::Tar(p) => DataSpec::Tar(j(p)),
            DataSpec::Idx { images, labels } => DataSpec::Idx {
                images: j(images),
                labels: labels.as_ref().map(j),
            },
            DataSpec::CifarBin { files, classes } => DataSpec::CifarBin {
                files: files.iter().map(j).collect(),
                classes: *classes,
            },
            DataSpec::TinVal(p) => DataSpec::TinVal(j(p)),
            DataSpec::TinTest(p) => DataSpec::TinTest(j(p)),
            DataSpec::ImgList { list, root: r } => DataSpec::ImgList {
                list: j(list),
                root: j(r),
            },
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
            DataSpec::Folder(dir) => folder::fingerprint(dir, &mut h)?,
            DataSpec::ImgList { list, root } => imglist::fingerprint(list, root, &mut h)?,
        }
        Ok(hex_string(&h.finalize()))
    }

    /// Streams the samples in dataset order (see the module doc of [`crate::data`]).
    pub fn samples(&self) -> Result<SampleIter> {
        match self {
            DataSpec::Folder(dir) => folder::samples(dir),
            DataSpec::Tar(path) => tar::samples(path),
            DataSpec::Idx { images, labels } => idx::samples(images, labels.as_deref()),
            DataSpec::CifarBin { files, classes } => cifar_bin::samples(files, *classes),
            DataSpec::TinVal(path) => tiny_imagenet::samples(path, true),
            DataSpec::TinTest(path) => tiny_imagenet::samples(path, false),
            DataSpec::ImgList { list, root } => imglist::samples(list, root),
        }
    }

    /// Class names in label order, where the source defines them (folder trees, and the WordNet
    /// ids of Tiny-ImageNet val), else an empty list.
    pub fn classes(&self) -> Result<Vec<String>> {
        match self {
            DataSpec::Tar(path) => tar::classes(path),
            DataSpec::Folder(dir) => folder::classes(dir),
            DataSpec::TinVal(path) => tiny_imagenet::classes(path),
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
}
