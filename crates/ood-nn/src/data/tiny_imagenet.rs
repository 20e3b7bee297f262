//! Tiny-ImageNet-200 validation and test images inside a `.tar[.gz]` (`tin-val:FILE`,
//! `tin-test:FILE`; an extracted folder is read with `imglist`). Images are sorted by file name
//! (byte order). Val labels come from `val/val_annotations.txt`, as indices into the sorted
//! `wnids.txt` (the `ImageFolder` order of the train folder); test images are unlabelled (`-1`).

use super::tar::{scan_tar, stream_tar};
use super::{SampleIter, data_err, is_image_name};
use crate::error::Result;
use std::collections::HashMap;
use std::path::Path;

/// The class names (WordNet ids) in label order: the sorted `wnids.txt` of the archive.
pub(super) fn classes(path: &Path) -> Result<Vec<String>> {
    let (_, texts) = scan_tar(path, &|n: &str| n.ends_with("wnids.txt"))?;
    let text = texts
        .iter()
        .find(|(k, _)| k.ends_with("wnids.txt"))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .ok_or_else(|| data_err(path, "no 'wnids.txt' in the archive"))?;
    let mut wnids: Vec<String> = text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    wnids.sort();
    Ok(wnids)
}

/// The images under `val/images/` (`val`) or `test/images/` of the archive, sorted by file name.
pub(super) fn samples(path: &Path, val: bool) -> Result<SampleIter> {
    let is_text = |n: &str| n.ends_with("wnids.txt") || n.ends_with("val_annotations.txt");
    let (names, texts) = scan_tar(path, &is_text)?;
    let dir = if val { "val/images/" } else { "test/images/" };
    let mut members: Vec<(String, String)> = names
        .into_iter()
        .filter(|n| is_image_name(n))
        .filter_map(|n| {
            let i = n.find(dir)?;
            (i == 0 || n[..i].ends_with('/')).then(|| (n[i + dir.len()..].to_string(), n.clone()))
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
