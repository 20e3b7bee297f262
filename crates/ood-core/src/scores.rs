//! Score files: one score per sample, higher = more in-distribution.
//!
//! Two formats are read, told apart by content (the `.npy` magic bytes), not by extension:
//!
//! * **`.npy`**: a 1-D array of little-endian `f4` or `f8`, format version 1.0, 2.0 or 3.0, as
//!   written by `numpy.save`. `f8` values are rounded to the nearest `f32` (scores are `f32`
//!   everywhere in oodkit); a value outside the `f32` range is an error. Big-endian data, other
//!   dtypes, and any shape other than `(n,)` are rejected with [`Error::Format`] naming the file.
//!   (`fortran_order` is accepted: a 1-D array has the same layout either way.)
//! * **text**: one number per line; blank lines (and surrounding whitespace) are ignored. A line
//!   that is not a number is an [`Error::Format`] naming the file and the line number.
//!
//! Both readers reject NaN and infinite values ([`Error::NonFinite`], naming the file and the line
//! or index): a non-finite score is always an upstream bug. An empty file reads as an empty
//! vector; callers that need scores check the length.
//!
//! [`write_npy`] writes a 1-D `f32` `.npy` (version 1.0, byte-identical to `numpy.save`) through
//! [`crate::atomic_file`].

use crate::atomic_file::write_bytes_atomic;
use crate::error::{Error, Result};
use std::path::Path;

/// The 6 magic bytes that open every `.npy` file.
const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Reads a score file, `.npy` or text (see the module documentation).
pub fn read_scores(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.starts_with(NPY_MAGIC) {
        parse_npy(&bytes, path)
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        Err(Error::format(
            path,
            "not an .npy file (the \\x93NUMPY magic bytes are missing)",
        ))
    } else {
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Error::format(path, format!("not UTF-8 text: {e}")))?;
        // Editors on Windows start UTF-8 files with a byte-order mark: it is not part of line 1.
        parse_text(text.strip_prefix('\u{feff}').unwrap_or(text), path)
    }
}

/// Parses text scores: one number per line, blank lines ignored. `path` is used in messages.
pub fn parse_text(text: &str, path: &Path) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let s = line.trim();
        if s.is_empty() {
            continue;
        }
        let v: f32 = s.parse().map_err(|_| {
            Error::format(
                path,
                format!("line {}: cannot parse \"{s}\" as a number", i + 1),
            )
        })?;
        if !v.is_finite() {
            return Err(Error::NonFinite {
                what: format!("{} line {} (\"{s}\")", path.display(), i + 1),
            });
        }
        out.push(v);
    }
    Ok(out)
}

/// The fields of an `.npy` header that matter here.
struct NpyHeader {
    descr: String,
    shape: Vec<usize>,
}

/// Finds `'key':` in a header dict and returns the text after the colon.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    for quote in ['\'', '"'] {
        let pat = format!("{quote}{key}{quote}");
        if let Some(pos) = header.find(&pat) {
            let rest = header[pos + pat.len()..].trim_start();
            return rest.strip_prefix(':').map(str::trim_start);
        }
    }
    None
}

fn parse_header(header: &str, path: &Path) -> Result<NpyHeader> {
    let bad = |what: &str| Error::format(path, format!("bad .npy header ({what}): {header}"));
    let descr_text = header_value(header, "descr").ok_or_else(|| bad("no 'descr'"))?;
    let quote = descr_text
        .chars()
        .next()
        .ok_or_else(|| bad("empty 'descr'"))?;
    if quote != '\'' && quote != '"' {
        return Err(bad("'descr' is not a plain dtype string"));
    }
    let end = descr_text[1..]
        .find(quote)
        .ok_or_else(|| bad("unterminated 'descr'"))?;
    let descr = descr_text[1..1 + end].to_string();
    let shape_text = header_value(header, "shape").ok_or_else(|| bad("no 'shape'"))?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.find(')').map(|e| &s[..e]))
        .ok_or_else(|| bad("'shape' is not a tuple"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| bad("'shape' holds a non-integer"))?;
    if header_value(header, "fortran_order").is_none() {
        return Err(bad("no 'fortran_order'"));
    }
    Ok(NpyHeader { descr, shape })
}

/// Parses the bytes of a 1-D `f4`/`f8` little-endian `.npy` file. `path` is used in messages.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<Vec<f32>> {
    if !bytes.starts_with(NPY_MAGIC) || bytes.len() < 10 {
        return Err(Error::format(path, "not an .npy file (bad magic bytes)"));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => {
            return Err(Error::format(
                path,
                format!(".npy format version {major}.{minor} is not supported (1.0, 2.0, 3.0 are)"),
            ));
        }
    };
    let data_start = start + header_len;
    if bytes.len() < data_start {
        return Err(Error::format(
            path,
            format!(
                "truncated .npy header: needs {data_start} bytes, file has {}",
                bytes.len()
            ),
        ));
    }
    let header = std::str::from_utf8(&bytes[start..data_start])
        .map_err(|_| Error::format(path, "the .npy header is not text"))?;
    let h = parse_header(header, path)?;
    let itemsize = match h.descr.as_str() {
        "<f4" => 4,
        "<f8" => 8,
        ">f4" | ">f8" => {
            return Err(Error::format(
                path,
                format!(
                    "big-endian dtype {} is not supported; save little-endian float32 or float64",
                    h.descr
                ),
            ));
        }
        other => {
            return Err(Error::format(
                path,
                format!(
                    "dtype {other} is not supported; score files must be float32 (<f4) or float64 (<f8)"
                ),
            ));
        }
    };
    if h.shape.len() != 1 {
        let dims: Vec<String> = h.shape.iter().map(usize::to_string).collect();
        return Err(Error::format(
            path,
            format!(
                "scores must be a 1-D array, found shape ({})",
                dims.join(", ")
            ),
        ));
    }
    let n = h.shape[0];
    let data = &bytes[data_start..];
    let want = n.saturating_mul(itemsize);
    if data.len() != want {
        return Err(Error::format(
            path,
            format!(
                "shape ({n},) of {} needs {want} data bytes, found {}",
                h.descr,
                data.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(n);
    if itemsize == 4 {
        for c in data.chunks_exact(4) {
            out.push(f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        }
    } else {
        for c in data.chunks_exact(8) {
            let v = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            out.push(v as f32);
            if v.is_finite() && !(v as f32).is_finite() {
                return Err(Error::NonFinite {
                    what: format!(
                        "{} index {} ({v:e} overflows float32)",
                        path.display(),
                        out.len() - 1
                    ),
                });
            }
        }
    }
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("{} index {i} ({})", path.display(), out[i]),
        });
    }
    Ok(out)
}

/// The bytes of a 1-D little-endian `f32` `.npy` file, version 1.0, laid out exactly as
/// `numpy.save` does (header padded with spaces to a 64-byte boundary).
pub fn npy_bytes(scores: &[f32]) -> Vec<u8> {
    let n = scores.len().to_string();
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n},), }}");
    // numpy leaves room for the length to grow to 21 digits.
    header.push_str(&" ".repeat(21usize.saturating_sub(n.len())));
    let hlen = header.len() + 1;
    let pad = 64 - ((NPY_MAGIC.len() + 2 + 2 + hlen) % 64);
    let total_header = hlen + pad;
    let mut out = Vec::with_capacity(10 + total_header + 4 * scores.len());
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[1, 0]);
    // A 1-D header is far below 65,535 bytes.
    out.extend_from_slice(&(total_header as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    for v in scores {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes scores as a 1-D `f32` `.npy` file, atomically (temporary file + rename).
pub fn write_npy(path: &Path, scores: &[f32]) -> Result<()> {
    write_bytes_atomic(path, &npy_bytes(scores))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/npy")
            .join(name)
    }

    const VALUES: [f32; 4] = [1.5, -2.0, 3.25, 0.1];

    #[test]
    fn reads_numpy_written_f32_and_f64_all_versions() {
        for name in ["f32_v1.npy", "f32_v2.npy", "np_save_f32.npy"] {
            assert_eq!(read_scores(&fixture(name)).unwrap(), VALUES, "{name}");
        }
        // f64 0.1 rounds to the f32 nearest to 0.1, which is VALUES[3].
        for name in ["f64_v1.npy", "f64_v3.npy"] {
            assert_eq!(read_scores(&fixture(name)).unwrap(), VALUES, "{name}");
        }
        assert_eq!(
            read_scores(&fixture("empty_f32.npy")).unwrap(),
            Vec::<f32>::new()
        );
    }

    #[test]
    fn writer_matches_numpy_save_bytes() {
        let want = std::fs::read(fixture("np_save_f32.npy")).unwrap();
        assert_eq!(npy_bytes(&VALUES), want);
        let want_empty = std::fs::read(fixture("empty_f32.npy")).unwrap();
        assert_eq!(npy_bytes(&[]), want_empty);
        // Headers stay 64-byte aligned for any length.
        for n in [0usize, 9, 10, 12345, 1_000_000] {
            let b = npy_bytes(&vec![0.0; n]);
            assert_eq!((b.len() - 4 * n) % 64, 0, "n = {n}");
        }
    }

    #[test]
    fn write_then_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/scores.npy");
        let v: Vec<f32> = (0..1000).map(|i| (i as f32).sin() * 1e3).collect();
        write_npy(&p, &v).unwrap();
        assert_eq!(read_scores(&p).unwrap(), v);
        // Only the target file is left behind.
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    fn err(name: &str) -> String {
        let e = read_scores(&fixture(name)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(name), "message must name the file: {msg}");
        msg
    }

    #[test]
    fn rejects_bad_npy_files_naming_them() {
        assert!(err("f32_big_endian.npy").contains("big-endian dtype >f4"));
        assert!(err("i64.npy").contains("dtype <i8 is not supported"));
        assert!(err("f32_2d.npy").contains("1-D array, found shape (2, 4)"));
        assert!(err("f32_scalar.npy").contains("found shape ()"));
        assert!(err("f32_truncated.npy").contains("needs 16 data bytes, found 12"));
        let nan = err("f32_nan.npy");
        assert!(
            nan.contains("non-finite") && nan.contains("index 1"),
            "{nan}"
        );
        let of = err("f64_overflow.npy");
        assert!(
            of.contains("index 1") && of.contains("overflows float32"),
            "{of}"
        );
        assert!(matches!(
            read_scores(&fixture("f32_nan.npy")),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            read_scores(&fixture("i64.npy")),
            Err(Error::Format { .. })
        ));
    }

    #[test]
    fn rejects_unknown_version_and_fake_npy() {
        let mut b = std::fs::read(fixture("f32_v1.npy")).unwrap();
        b[6] = 4;
        let e = parse_npy(&b, Path::new("x.npy")).unwrap_err().to_string();
        assert!(e.contains("x.npy") && e.contains("version 4.0"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fake.npy");
        std::fs::write(&p, "1.0\n2.0\n").unwrap();
        let e = read_scores(&p).unwrap_err().to_string();
        assert!(e.contains("fake.npy") && e.contains("magic"), "{e}");
    }

    #[test]
    fn text_scores() {
        let p = Path::new("s.txt");
        let v = parse_text("0.5\n\n  -1e-3 \n2\r\n\n", p).unwrap();
        assert_eq!(v, vec![0.5, -1e-3, 2.0]);
        assert_eq!(parse_text("", p).unwrap(), Vec::<f32>::new());
        assert_eq!(parse_text("\n \n", p).unwrap(), Vec::<f32>::new());
        let e = parse_text("1\n\n0.3x\n", p).unwrap_err().to_string();
        assert!(
            e.contains("s.txt") && e.contains("line 3") && e.contains("0.3x"),
            "{e}"
        );
        let e = parse_text("1\nnan\n", p).unwrap_err().to_string();
        assert!(
            e.contains("s.txt line 2") && e.contains("non-finite"),
            "{e}"
        );
        let e = parse_text("inf\n", p).unwrap_err();
        assert!(matches!(e, Error::NonFinite { .. }));
    }

    #[test]
    fn text_scores_with_a_utf8_byte_order_mark() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bom.txt");
        std::fs::write(&p, "\u{feff}0.5\r\n0.25\r\n").unwrap();
        assert_eq!(read_scores(&p).unwrap(), vec![0.5, 0.25]);
    }

    #[test]
    fn missing_file_is_io_error_naming_it() {
        let e = read_scores(Path::new("/nonexistent/dir/ood.txt")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }));
        assert!(e.to_string().contains("/nonexistent/dir/ood.txt"));
    }
}
