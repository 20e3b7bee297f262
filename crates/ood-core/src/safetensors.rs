//! A small reader and writer for the safetensors file format, with row-range reads.
//!
//! Format: an 8-byte little-endian header length `N`, `N` bytes of JSON (tensor name -> dtype, shape,
//! byte offsets; optional `__metadata__` string map), then the raw little-endian tensor data. Reading
//! rows `[start, start + n)` of a 2-D tensor seeks to them, so a detector can fit from a file far
//! larger than memory, one chunk at a time.

use crate::atomic_file::write_atomic;
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Element types this reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit signed integer.
    I64,
    /// 32-bit signed integer.
    I32,
    /// Unsigned byte.
    U8,
}

impl Dtype {
    /// The safetensors name of this type.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::U8 => "U8",
        }
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U8 => 1,
        }
    }
    fn parse(s: &str) -> Option<Dtype> {
        Some(match s {
            "F32" => Dtype::F32,
            "F64" => Dtype::F64,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I64" => Dtype::I64,
            "I32" => Dtype::I32,
            "U8" => Dtype::U8,
            _ => return None,
        })
    }
}

/// One tensor's entry in the header.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Byte range inside the data section.
    pub offsets: (usize, usize),
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An open safetensors file: the parsed header plus a handle for reading data on demand.
#[derive(Debug)]
pub struct SafeTensorsFile {
    path: PathBuf,
    data_start: u64,
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// The `__metadata__` string map (empty when absent).
    pub metadata: BTreeMap<String, String>,
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if man == 0 {
            sign
        } else {
            // subnormal: normalise
            let mut e = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

impl SafeTensorsFile {
    /// Opens a file and parses its header; no tensor data is read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut f = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let file_len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
        let mut len_bytes = [0u8; 8];
        f.read_exact(&mut len_bytes)
            .map_err(|_| Error::format(&path, "not a safetensors file: shorter than 8 bytes"))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > 100 << 20 || 8 + header_len > file_len {
            return Err(Error::format(
                &path,
                format!(
                    "not a safetensors file: header length {header_len} does not fit a {file_len}-byte file"
                ),
            ));
        }
        let mut header = vec![0u8; header_len as usize];
        f.read_exact(&mut header).map_err(|e| Error::io(&path, e))?;
        let json: Value = serde_json::from_slice(&header).map_err(|e| {
            Error::format(&path, format!("safetensors header is not valid JSON: {e}"))
        })?;
        let obj = json
            .as_object()
            .ok_or_else(|| Error::format(&path, "safetensors header is not a JSON object"))?;
        let data_len = (file_len - 8 - header_len) as usize;
        let mut tensors = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (name, v) in obj {
            if name == "__metadata__" {
                if let Some(m) = v.as_object() {
                    for (k, v) in m {
                        if let Some(s) = v.as_str() {
                            metadata.insert(k.clone(), s.to_string());
                        }
                    }
                }
                continue;
            }
            let bad = |r: &str| Error::format(&path, format!("tensor '{name}': {r}"));
            let dtype_s = v
                .get("dtype")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("no dtype"))?;
            let dtype = Dtype::parse(dtype_s)
                .ok_or_else(|| bad(&format!("unsupported dtype {dtype_s}")))?;
            let shape: Vec<usize> = v
                .get("shape")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("no shape"))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("shape is not a list of integers"))?;
            let offs = v
                .get("data_offsets")
                .and_then(Value::as_array)
                .filter(|a| a.len() == 2)
                .and_then(|a| Some((a[0].as_u64()? as usize, a[1].as_u64()? as usize)))
                .ok_or_else(|| bad("no data_offsets"))?;
            // Checked: a crafted header can claim a shape whose byte size overflows `usize`.
            let Some(nbytes) = shape
                .iter()
                .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            else {
                return Err(bad(&format!(
                    "shape {shape:?} of {} is too large (its byte size overflows)",
                    dtype.name()
                )));
            };
            let info = TensorInfo {
                dtype,
                shape,
                offsets: offs,
            };
            if offs.1 < offs.0 || offs.1 > data_len || offs.1 - offs.0 != nbytes {
                return Err(bad(&format!(
                    "data offsets {:?} do not match shape {:?} of {} in a {data_len}-byte data section (truncated file?)",
                    offs,
                    info.shape,
                    dtype.name()
                )));
            }
            tensors.insert(name.clone(), info);
        }
        Ok(SafeTensorsFile {
            path,
            data_start: 8 + header_len,
            tensors,
            metadata,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header entry of `name`, or a format error naming the file.
    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).ok_or_else(|| {
            let have: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
            Error::format(
                &self.path,
                format!(
                    "no tensor named '{name}' (the file has: {})",
                    have.join(", ")
                ),
            )
        })
    }

    fn read_bytes(&self, start: usize, len: usize) -> Result<Vec<u8>> {
        let mut f = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        f.seek(SeekFrom::Start(self.data_start + start as u64))
            .map_err(|e| Error::io(&self.path, e))?;
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(buf)
    }

    /// Reads rows `[start, start + n)` of tensor `name` (outermost dimension), converted to f32.
    pub fn read_rows_f32(&self, name: &str, start: usize, n: usize) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        let rows = info.shape.first().copied().unwrap_or(1);
        if start.checked_add(n).is_none_or(|end| end > rows) {
            return Err(Error::format(
                &self.path,
                format!("tensor '{name}' has {rows} rows, asked for {n} rows from row {start}"),
            ));
        }
        let row_elems: usize = info.shape.iter().skip(1).product();
        let es = info.dtype.size();
        let bytes = self.read_bytes(info.offsets.0 + start * row_elems * es, n * row_elems * es)?;
        let out: Vec<f32> = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            Dtype::I32 => bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as f32)
                .collect(),
            Dtype::U8 => bytes.iter().map(|&b| b as f32).collect(),
        };
        Ok(out)
    }

    /// Reads a whole tensor as f32.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let rows = self.info(name)?.shape.first().copied().unwrap_or(1);
        self.read_rows_f32(name, 0, rows)
    }

    /// Reads a whole integer tensor as i64.
    pub fn read_i64(&self, name: &str) -> Result<Vec<i64>> {
        let info = self.info(name)?.clone();
        let bytes = self.read_bytes(info.offsets.0, info.offsets.1 - info.offsets.0)?;
        match info.dtype {
            Dtype::I64 => Ok(bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()),
            Dtype::I32 => Ok(bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                .collect()),
            Dtype::U8 => Ok(bytes.iter().map(|&b| b as i64).collect()),
            d => Err(Error::format(
                &self.path,
                format!("tensor '{name}' is {}, expected an integer type", d.name()),
            )),
        }
    }
}

/// One tensor to write: name, type, shape and little-endian bytes.
#[derive(Debug)]
pub struct TensorToWrite<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Raw little-endian data, `numel * dtype.size()` bytes.
    pub data: std::borrow::Cow<'a, [u8]>,
}

impl<'a> TensorToWrite<'a> {
    /// An f32 tensor.
    pub fn f32(name: &'a str, shape: Vec<usize>, values: &[f32]) -> Self {
        let data = values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>();
        TensorToWrite {
            name,
            dtype: Dtype::F32,
            shape,
            data: data.into(),
        }
    }
    /// An i64 tensor.
    pub fn i64(name: &'a str, shape: Vec<usize>, values: &[i64]) -> Self {
        let data = values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>();
        TensorToWrite {
            name,
            dtype: Dtype::I64,
            shape,
            data: data.into(),
        }
    }
}

/// Writes a safetensors file atomically (temporary file + rename).
pub fn write(
    path: &Path,
    tensors: &[TensorToWrite<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            Value::Object(
                metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
        );
    }
    let mut offset = 0usize;
    for t in tensors {
        let numel: usize = t.shape.iter().product();
        assert_eq!(
            numel * t.dtype.size(),
            t.data.len(),
            "tensor {} data length must match its shape",
            t.name
        );
        let mut e = Map::new();
        e.insert("dtype".into(), Value::String(t.dtype.name().into()));
        e.insert(
            "shape".into(),
            Value::Array(t.shape.iter().map(|&d| Value::from(d as u64)).collect()),
        );
        e.insert(
            "data_offsets".into(),
            Value::Array(vec![
                Value::from(offset as u64),
                Value::from((offset + t.data.len()) as u64),
            ]),
        );
        header.insert(t.name.to_string(), Value::Object(e));
        offset += t.data.len();
    }
    let mut hbytes = serde_json::to_vec(&Value::Object(header)).expect("a JSON map serialises");
    while !hbytes.len().is_multiple_of(8) {
        hbytes.push(b' ');
    }
    write_atomic(path, |w| {
        w.write_all(&(hbytes.len() as u64).to_le_bytes())?;
        w.write_all(&hbytes)?;
        for t in tensors {
            w.write_all(&t.data)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_roundtrip_and_row_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let vals: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        let meta = BTreeMap::from([("model".to_string(), "x".to_string())]);
        write(
            &p,
            &[
                TensorToWrite::f32("a", vec![4, 3], &vals),
                TensorToWrite::i64("l", vec![4], &[1, 2, 3, -1]),
            ],
            &meta,
        )
        .unwrap();
        let f = SafeTensorsFile::open(&p).unwrap();
        assert_eq!(f.metadata["model"], "x");
        assert_eq!(f.read_f32("a").unwrap(), vals);
        assert_eq!(f.read_rows_f32("a", 1, 2).unwrap(), vals[3..9].to_vec());
        assert_eq!(f.read_i64("l").unwrap(), vec![1, 2, 3, -1]);
        assert!(f.read_rows_f32("a", 3, 2).is_err());
        let e = f.info("nope").unwrap_err().to_string();
        assert!(
            e.contains("no tensor named 'nope'") && e.contains("t.safetensors"),
            "{e}"
        );
    }

    #[test]
    fn safetensors_rejects_truncated_and_garbage_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        write(
            &p,
            &[TensorToWrite::f32("a", vec![4, 3], &[0.0; 12])],
            &BTreeMap::new(),
        )
        .unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        let e = SafeTensorsFile::open(&p).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        std::fs::write(&p, b"hello world, not a tensor file").unwrap();
        assert!(SafeTensorsFile::open(&p).is_err());
    }

    /// A header whose shape's byte size overflows `usize` (`[2^62, 4]` f32) is a format error,
    /// not a panic (issue 12: `score --input`, `--head` and `align --anchors` crashed on it).
    #[test]
    fn safetensors_rejects_a_shape_that_overflows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("evil.safetensors");
        for shape in [
            "[4611686018427387904, 4]",
            "[18446744073709551615]",
            "[4294967296, 4294967296, 2]",
        ] {
            let header = format!(
                r#"{{"features":{{"dtype":"F32","shape":{shape},"data_offsets":[0,16]}}}}"#
            );
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(&[0u8; 16]);
            std::fs::write(&p, &bytes).unwrap();
            let e = SafeTensorsFile::open(&p).unwrap_err().to_string();
            assert!(
                e.contains("too large") && e.contains("evil.safetensors"),
                "{e}"
            );
        }
    }

    #[test]
    fn f16_conversion_matches_known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}
