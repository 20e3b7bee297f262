//! OpenOOD `benchmark_imglist` files (`imglist:LIST@ROOT`): `<relative path> <label>` per line,
//! split at the first space, paths relative to `ROOT`, samples in line order. A missing label is
//! `-1`; OpenOOD's legacy dict form (`{...}`) reads as label 0.

use super::{Pixels, RawSample, SampleIter, data_err};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The (relative path, label) entries of a list file, in line order (blank lines skipped).
fn entries(list: &Path) -> Result<Vec<(String, i64)>> {
    Ok(numbered_entries(list)?
        .into_iter()
        .map(|(_, rel, label)| (rel, label))
        .collect())
}

/// The (1-based line number, relative path, label) entries of an OpenOOD image-list file, in
/// line order (blank lines skipped); a malformed line is an error naming the file and the line.
pub fn numbered_entries(list: &Path) -> Result<Vec<(usize, String, i64)>> {
    let text = std::fs::read_to_string(list).map_err(|e| Error::io(list, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            parse_imglist_line(l.trim_end())
                .map(|(rel, label)| (i + 1, rel, label))
                .map_err(|r| data_err(list, format!("line {}: {r}", i + 1)))
        })
        .collect()
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

/// The listed images, read from `root` file by file, in line order.
pub(super) fn samples(list: &Path, root: &Path) -> Result<SampleIter> {
    let entries = entries(list)?;
    let root = root.to_path_buf();
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

/// Feeds the list file's hash and the (relative path, size) of every listed image to `h`.
pub(super) fn fingerprint(list: &Path, root: &Path, h: &mut Sha256) -> Result<()> {
    h.update(ood_core::hashing::sha256_file(list)?.as_bytes());
    for (rel, _) in entries(list)? {
        let f = root.join(&rel);
        let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(u64::MAX);
        h.update(format!("{rel}\t{size}\n").as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
