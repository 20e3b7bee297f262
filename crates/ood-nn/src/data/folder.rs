//! Folder-per-class image trees (`folder:DIR`, `DIR/<class>/.../*.{jpg,jpeg,png}`): classes are
//! the sorted names of the images' parent folders (label = index), samples sorted by
//! (class, path), as torchvision's `ImageFolder`. The same naming rule gives the classes of a
//! tree inside an archive ([`super::tar`]).

use super::{Pixels, RawSample, SampleIter, data_err, is_image_name};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Class name of an image path: its parent directory's name.
fn parent_class(name: &str) -> Option<String> {
    let p = Path::new(name);
    p.parent()?
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
}

/// Sorted classes and the (member, label) plan, class-major then path.
pub(super) fn folder_plan(names: impl IntoIterator<Item = String>) -> ClassPlan<String> {
    class_plan(
        names
            .into_iter()
            .filter(|n| is_image_name(n))
            .filter_map(|n| parent_class(&n).map(|c| (c, n)))
            .collect(),
    )
}

/// Sorted class names and the `(item, label)` plan of a labelled source.
pub(super) type ClassPlan<T> = (Vec<String>, Vec<(T, i64)>);

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

/// The images of the tree, class-major then path, read file by file.
pub(super) fn samples(dir: &Path) -> Result<SampleIter> {
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

/// The sorted class names of the tree.
pub(super) fn classes(dir: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    walk_images(dir, &mut files)?;
    Ok(folder_file_plan(files).0)
}

/// Feeds the sorted (relative path, size) list of the tree's images to `h`.
pub(super) fn fingerprint(dir: &Path, h: &mut Sha256) -> Result<()> {
    let mut files = Vec::new();
    walk_images(dir, &mut files)?;
    files.sort();
    for f in files {
        // A dangling link has no size: it still counts, as missing.
        let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(u64::MAX);
        let rel = f.strip_prefix(dir).unwrap_or(&f);
        h.update(format!("{}\t{size}\n", rel.display()).as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
