//! Atomic file writes: write to a temporary file beside the target, then rename.
//!
//! A crash, a kill or an error half-way leaves either the old file or no file, never a partial one.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The temporary path used while `path` is being written.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes a file atomically: `write` fills a buffered writer on a temporary file, which is then
/// flushed, synced and renamed onto `path`. On error the temporary file is removed.
pub fn write_atomic<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
{
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        Ok(())
    })();
    match result {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(path, e)
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(Error::io(path, e))
        }
    }
}

/// Writes bytes atomically (see [`write_atomic`]).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

/// Refuses `dir` when it exists and is not empty: output folders are written whole, never into
/// (call it before any work, so that a bad `--out` fails fast).
pub fn ensure_empty_dir(dir: &Path) -> Result<()> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .next()
            .is_some()
    {
        return Err(Error::Format {
            path: dir.to_path_buf(),
            reason: "exists and is not empty (choose a new output folder)".into(),
        });
    }
    Ok(())
}

/// Writes a folder atomically: `fill` writes into a temporary folder beside `dir`, which is then
/// renamed onto `dir` (which must not exist or be empty). On error the temporary folder is
/// removed, so `dir` is either complete or untouched.
pub fn write_dir_atomic<T, E: From<Error>>(
    dir: &Path,
    fill: impl FnOnce(&Path) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    ensure_empty_dir(dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = temp_path(dir);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = fill(&tmp).and_then(|v| {
        if dir.exists() {
            std::fs::remove_dir(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
        Ok(v)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// One named file of a command: the argument that names it (e.g. `--out`) and its path.
pub type NamedPath<'a> = (&'a str, &'a Path);

/// The identity of an existing file: device and inode on Unix (so hard links and symbolic links
/// to the same file compare equal), the canonical path elsewhere.
fn file_identity(path: &Path) -> Option<(u64, u64, PathBuf)> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino(), PathBuf::new()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some((0, 0, std::fs::canonicalize(path).ok()?))
    }
}

/// Refuses, before any work is done, a command whose output would replace one of its inputs:
/// each output that already exists is compared with every input by file identity (device and
/// inode: the same path spelled differently, a symbolic link and a hard link all count).
/// The error names both arguments and the file.
pub fn check_outputs_are_not_inputs(
    inputs: &[NamedPath<'_>],
    outputs: &[NamedPath<'_>],
) -> Result<()> {
    let ids: Vec<_> = inputs
        .iter()
        .filter_map(|(arg, p)| file_identity(p).map(|id| (arg, p, id)))
        .collect();
    for (out_arg, out) in outputs {
        let Some(out_id) = file_identity(out) else {
            continue;
        };
        if let Some((in_arg, input, _)) = ids.iter().find(|(_, _, id)| *id == out_id) {
            return Err(Error::OutputIsInput {
                output_arg: out_arg.to_string(),
                output: out.to_path_buf(),
                input_arg: in_arg.to_string(),
                input: input.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// An exclusive lock on an output path, held while a command writes it and the files beside it
/// (e.g. features plus `.config.json`): a second writer of the same output fails at once instead
/// of interleaving its files with the first one's. The lock is `flock` on a hidden file
/// `.NAME.lock` beside the output, released (and the file removed) on drop or when the process
/// dies, so a killed run never leaves a stale lock behind.
#[derive(Debug)]
pub struct OutputLock {
    file: File,
    path: PathBuf,
    /// Folders that did not exist before the lock, deepest first.
    created: Vec<PathBuf>,
}

impl OutputLock {
    /// Takes the lock of `output`, or fails with [`Error::OutputLocked`] when another process
    /// holds it.
    pub fn acquire(output: &Path) -> Result<OutputLock> {
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = output.with_file_name(format!(".{name}.lock"));
        // Folders made for the lock are removed again on release when nothing was written there,
        // so a run that fails leaves no empty output folder behind.
        let mut created = Vec::new();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let mut d = Some(dir);
            while let Some(p) = d.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
                created.push(p.to_path_buf());
                d = p.parent();
            }
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        // A lock file removed by its previous holder between our open and our lock is stale:
        // check that the path still names the locked file, and retry otherwise.
        for _ in 0..100 {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::OutputLocked {
                        output: output.to_path_buf(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
            if same_file(&file, &path) {
                return Ok(OutputLock {
                    file,
                    path,
                    created,
                });
            }
        }
        Err(Error::OutputLocked {
            output: output.to_path_buf(),
        })
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, path: &Path) -> bool {
    path.exists()
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Remove while still holding the lock, then release it.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
        for dir in &self.created {
            // Fails, as it should, when the run wrote something there.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_equal_to_inputs_are_refused_by_identity() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.bin");
        std::fs::write(&a, b"input").unwrap();
        let hard = dir.path().join("hard.bin");
        std::fs::hard_link(&a, &hard).unwrap();
        let spelled = dir.path().join(".").join("a.bin");
        let fresh = dir.path().join("new.bin");
        for out in [&a, &hard, &spelled] {
            let e = check_outputs_are_not_inputs(&[("--input", &a)], &[("--out", out)])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--out") && e.contains("--input") && e.contains("a.bin"),
                "{e}"
            );
        }
        #[cfg(unix)]
        {
            let link = dir.path().join("link.bin");
            std::os::unix::fs::symlink(&a, &link).unwrap();
            assert!(check_outputs_are_not_inputs(&[("--input", &link)], &[("--out", &a)]).is_err());
        }
        check_outputs_are_not_inputs(&[("--input", &a)], &[("--out", &fresh)]).unwrap();
        std::fs::write(&fresh, b"other").unwrap();
        check_outputs_are_not_inputs(&[("--input", &a)], &[("--out", &fresh)]).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"input");
    }

    #[test]
    fn a_second_writer_of_the_same_output_is_refused_until_the_first_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sub").join("f.safetensors");
        let first = OutputLock::acquire(&out).unwrap();
        let e = OutputLock::acquire(&out).unwrap_err().to_string();
        assert!(e.contains("f.safetensors") && e.contains("another"), "{e}");
        let other = OutputLock::acquire(&dir.path().join("sub").join("g.safetensors")).unwrap();
        drop(first);
        drop(other);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            0
        );
        let _again = OutputLock::acquire(&out).unwrap();
    }

    #[test]
    fn write_atomic_leaves_no_file_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        let r = write_atomic(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(r.is_err());
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_bytes_atomic(&p, b"ok").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"ok");
    }

    #[test]
    fn write_dir_atomic_is_all_or_nothing_and_never_writes_into_a_full_folder() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("sub/out");
        let n = write_dir_atomic(&out, |tmp| -> Result<usize> {
            std::fs::write(tmp.join("a.txt"), "a").unwrap();
            Ok(1)
        })
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "a");
        // Not empty now: refused before `fill` runs.
        let e = write_dir_atomic(&out, |_| -> Result<()> { panic!("must not run") }).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        // A failing fill leaves the (empty) folder untouched and no temporary folder.
        let failed = t.path().join("failed");
        std::fs::create_dir(&failed).unwrap();
        let r = write_dir_atomic(&failed, |tmp| -> Result<()> {
            std::fs::write(tmp.join("half.txt"), "x").unwrap();
            Err(Error::InvalidParameter("boom".into()))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(&failed).unwrap().count(), 0);
        let names: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }
}
