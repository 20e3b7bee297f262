//! `.tar` / `.tar.gz` archives holding a folder-per-class image tree (`tar:FILE`,
//! `cifar10-jpeg:FILE`), and the two-pass archive reader the Tiny-ImageNet sources share.
//!
//! The first pass ([`scan_tar`]) lists the members (and keeps the few small text files a source
//! needs); the second ([`stream_tar`]) streams the planned members in plan order from a
//! background thread through a bounded channel, so memory stays bounded however large the
//! archive is.

use super::folder::{ClassPlan, folder_plan};
use super::{Pixels, RawSample, SampleIter, data_err, is_image_name, open_maybe_gz};
use crate::error::Result;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

fn member_name(entry: &::tar::Entry<'_, Box<dyn Read + Send>>) -> Option<String> {
    let p = entry.path().ok()?;
    let s = p.to_string_lossy().into_owned();
    Some(s.trim_start_matches("./").to_string())
}

/// Contents of archive members kept by [`scan_tar`], by member name.
pub(super) type KeptMembers = HashMap<String, Vec<u8>>;

/// First pass over an archive: all regular member names and the contents of the members for
/// which `keep` is true.
pub(super) fn scan_tar(
    path: &Path,
    keep: &dyn Fn(&str) -> bool,
) -> Result<(Vec<String>, KeptMembers)> {
    let mut ar = ::tar::Archive::new(open_maybe_gz(path)?);
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
pub(super) fn stream_tar(path: &Path, plan: Vec<(String, i64)>) -> SampleIter {
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
            let mut ar = ::tar::Archive::new(open_maybe_gz(&path)?);
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

/// The samples of an archive, in plan order (see [`archive_plan`]).
pub(super) fn samples(path: &Path) -> Result<SampleIter> {
    let (names, _) = scan_tar(path, &|_| false)?;
    let (_, plan) = archive_plan(path, names)?;
    if plan.is_empty() {
        return Err(data_err(path, "no .jpg/.jpeg/.png images in the archive"));
    }
    Ok(stream_tar(path, plan))
}

/// The sorted class names of an archive's folder-per-class tree (empty for a flat archive).
pub(super) fn classes(path: &Path) -> Result<Vec<String>> {
    let (names, _) = scan_tar(path, &|_| false)?;
    Ok(archive_plan(path, names)?.0)
}
