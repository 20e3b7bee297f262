//! Reader for legacy (non-zip) PyTorch checkpoints such as the released akamaster `.th` files.
//!
//! Layout of the legacy `torch.save` format (PyTorch < 1.6, `_legacy_save`): five consecutive
//! objects, the first four pickles (protocol 2):
//! 1. the magic number `0x1950a86a20f9469cfc6c`, 2. the protocol version `1001`,
//! 3. `sys_info` (`{protocol_version, little_endian, type_sizes}`), 4. the object itself, whose
//!    tensors are `torch._utils._rebuild_tensor(_v2)(storage, offset, size, stride, ..)` calls with the
//!    storages as persistent ids `('storage', torch.FloatStorage, key, location, numel, view_metadata)`,
//! 5. a pickled list of storage keys, then for each key an 8-byte little-endian element count and the
//!    raw little-endian elements.
//!
//! The object is either a state dict or a dict holding one under `state_dict` (akamaster:
//! `{best_prec1, state_dict}`). A leading `module.` (from `nn.DataParallel`) is stripped from names.
//! Only the pickle opcodes such files use are implemented (protocols 2-4 framing included); anything
//! else is an error naming the opcode and its offset. Nothing is executed: globals other than the
//! handful of torch / collections constructors listed in `call` are refused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::{Error, Result};

/// Element data of a tensor read from a `.th` file.
#[derive(Debug, Clone, PartialEq)]
pub enum ThData {
    /// `torch.FloatStorage`.
    F32(Vec<f32>),
    /// `torch.DoubleStorage`.
    F64(Vec<f64>),
    /// `torch.LongStorage` (e.g. `num_batches_tracked`).
    I64(Vec<i64>),
    /// `torch.IntStorage`.
    I32(Vec<i32>),
    /// `torch.ByteStorage` / `torch.BoolStorage`.
    U8(Vec<u8>),
}

/// One tensor of a `.th` checkpoint: its shape and contiguous (row-major) elements.
#[derive(Debug, Clone, PartialEq)]
pub struct ThTensor {
    /// Shape.
    pub shape: Vec<i64>,
    /// Elements in row-major order.
    pub data: ThData,
}

impl ThTensor {
    /// Converts to a CPU tch tensor of the matching kind.
    pub fn to_tensor(&self) -> Tensor {
        let t = match &self.data {
            ThData::F32(v) => Tensor::from_slice(v),
            ThData::F64(v) => Tensor::from_slice(v),
            ThData::I64(v) => Tensor::from_slice(v),
            ThData::I32(v) => Tensor::from_slice(v),
            ThData::U8(v) => Tensor::from_slice(v),
        };
        t.reshape(self.shape.as_slice())
    }
}

/// Reads a legacy `.th` checkpoint and returns its state dict as tch tensors (CPU), in file order,
/// with any `module.` prefix removed.
pub fn load_th(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    Ok(read_th(path)?
        .into_iter()
        .map(|(n, t)| {
            let tensor = t.to_tensor();
            (n, tensor)
        })
        .collect())
}

/// Reads a legacy `.th` checkpoint into plain vectors (see [`load_th`]).
pub fn read_th(path: impl AsRef<Path>) -> Result<Vec<(String, ThTensor)>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_th(&bytes, path)
}

/// Parses the bytes of a legacy checkpoint; `path` is only used in error messages.
pub fn parse_th(bytes: &[u8], path: &Path) -> Result<Vec<(String, ThTensor)>> {
    let err = |reason: String| Error::Weights {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(err(
            "this is a zip-format checkpoint (torch.save since PyTorch 1.6), not the legacy \
             pickle format read here; load it in Python and save the state dict as safetensors"
                .into(),
        ));
    }
    let mut pos = 0usize;
    let magic = Unpickler::run(bytes, &mut pos, path)?;
    if !matches!(magic, Value::Int(0x1950a86a20f9469cfc6c)) {
        return Err(err(format!(
            "not a legacy pytorch checkpoint: first pickle is {} instead of the magic number",
            magic.describe()
        )));
    }
    let proto = Unpickler::run(bytes, &mut pos, path)?;
    if !matches!(proto, Value::Int(1001)) {
        return Err(err(format!(
            "unsupported legacy protocol version {} (expected 1001)",
            proto.describe()
        )));
    }
    let sys_info = Unpickler::run(bytes, &mut pos, path)?;
    if let Value::Dict(items) = &sys_info {
        for (k, v) in items {
            if matches!(k, Value::Str(s) if s == "little_endian") && matches!(v, Value::Bool(false))
            {
                return Err(err("big-endian checkpoints are not supported".into()));
            }
        }
    }
    let mut up = Unpickler::new(bytes, pos, path);
    let object = up.execute()?;
    pos = up.pos;
    let storages = up.storages;
    let keys = Unpickler::run(bytes, &mut pos, path)?;
    let keys = match keys {
        Value::List(v) => v,
        other => {
            return Err(err(format!(
                "storage key list expected after the object, found {}",
                other.describe()
            )));
        }
    };
    let mut data: HashMap<String, ThData> = HashMap::new();
    for k in keys {
        let Value::Str(key) = k else {
            return Err(err(format!("storage key {} is not a string", k.describe())));
        };
        let (dtype, _) = storages
            .get(&key)
            .ok_or_else(|| err(format!("storage `{key}` is listed but never referenced")))?;
        let numel = read_u64(bytes, pos, path)? as usize;
        pos += 8;
        let size = dtype.elem_size();
        let nbytes = numel
            .checked_mul(size)
            .filter(|n| pos + n <= bytes.len())
            .ok_or_else(|| {
                err(format!(
                    "truncated: storage `{key}` needs {numel} elements of {size} bytes at offset {pos}, file has {} bytes",
                    bytes.len()
                ))
            })?;
        let raw = &bytes[pos..pos + nbytes];
        pos += nbytes;
        data.insert(key, dtype.decode(raw));
    }
    let state = select_state_dict(object, path)?;
    let mut out = Vec::with_capacity(state.len());
    for (name, spec) in state {
        let storage = data.get(&spec.key).ok_or_else(|| {
            err(format!(
                "tensor `{name}`: storage `{}` has no data in the file",
                spec.key
            ))
        })?;
        let tensor =
            gather(storage, &spec).map_err(|reason| err(format!("tensor `{name}`: {reason}")))?;
        let name = name.strip_prefix("module.").unwrap_or(&name).to_string();
        out.push((name, tensor));
    }
    Ok(out)
}

fn read_u64(bytes: &[u8], pos: usize, path: &Path) -> Result<u64> {
    bytes
        .get(pos..pos + 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        .ok_or_else(|| Error::Weights {
            path: path.to_path_buf(),
            reason: format!(
                "truncated: 8-byte storage length expected at offset {pos}, file has {} bytes",
                bytes.len()
            ),
        })
}

/// Storage element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DType {
    F32,
    F64,
    I64,
    I32,
    U8,
}

impl DType {
    fn from_global(module: &str, name: &str) -> Option<DType> {
        if module != "torch" {
            return None;
        }
        Some(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ByteStorage" | "BoolStorage" => DType::U8,
            _ => return None,
        })
    }
    fn elem_size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::U8 => 1,
        }
    }
    fn decode(self, raw: &[u8]) -> ThData {
        match self {
            DType::F32 => ThData::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            DType::F64 => ThData::F64(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect(),
            ),
            DType::I64 => ThData::I64(
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect(),
            ),
            DType::I32 => ThData::I32(
                raw.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            DType::U8 => ThData::U8(raw.to_vec()),
        }
    }
}

/// A tensor view on a storage, as rebuilt by `_rebuild_tensor`.
#[derive(Debug, Clone, PartialEq)]
struct TensorSpec {
    key: String,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

fn gather(storage: &ThData, spec: &TensorSpec) -> std::result::Result<ThTensor, String> {
    fn pick<T: Copy>(src: &[T], spec: &TensorSpec) -> std::result::Result<Vec<T>, String> {
        if spec.size.len() != spec.stride.len() {
            return Err(format!(
                "size {:?} and stride {:?} differ in rank",
                spec.size, spec.stride
            ));
        }
        if spec.size.iter().any(|&s| s < 0) || spec.stride.iter().any(|&s| s < 0) || spec.offset < 0
        {
            return Err(format!(
                "negative size/stride/offset {:?}/{:?}/{}",
                spec.size, spec.stride, spec.offset
            ));
        }
        let n: i64 = spec.size.iter().product();
        if n == 0 {
            return Ok(Vec::new());
        }
        let last: i64 = spec.offset
            + spec
                .size
                .iter()
                .zip(&spec.stride)
                .map(|(s, st)| (s - 1) * st)
                .sum::<i64>();
        if last as usize >= src.len() {
            return Err(format!(
                "view (offset {}, size {:?}, stride {:?}) reaches element {last} of a storage with {}",
                spec.offset,
                spec.size,
                spec.stride,
                src.len()
            ));
        }
        let mut out = Vec::with_capacity(n as usize);
        let mut idx = vec![0i64; spec.size.len()];
        for _ in 0..n {
            let off: i64 = spec.offset
                + idx
                    .iter()
                    .zip(&spec.stride)
                    .map(|(i, s)| i * s)
                    .sum::<i64>();
            out.push(src[off as usize]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < spec.size[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Ok(out)
    }
    let data = match storage {
        ThData::F32(v) => ThData::F32(pick(v, spec)?),
        ThData::F64(v) => ThData::F64(pick(v, spec)?),
        ThData::I64(v) => ThData::I64(pick(v, spec)?),
        ThData::I32(v) => ThData::I32(pick(v, spec)?),
        ThData::U8(v) => ThData::U8(pick(v, spec)?),
    };
    Ok(ThTensor {
        shape: spec.size.clone(),
        data,
    })
}

/// The state dict inside the unpickled object: the object itself when all its values are tensors,
/// else its `state_dict` entry.
fn select_state_dict(object: Value, path: &Path) -> Result<Vec<(String, TensorSpec)>> {
    let err = |reason: String| Error::Weights {
        path: path.to_path_buf(),
        reason,
    };
    let Value::Dict(items) = object else {
        return Err(err(format!(
            "checkpoint object is {}, expected a dict",
            object.describe()
        )));
    };
    let all_tensors = !items.is_empty() && items.iter().all(|(_, v)| matches!(v, Value::Tensor(_)));
    let items = if all_tensors {
        items
    } else {
        let keys: Vec<String> = items.iter().map(|(k, _)| k.describe()).collect();
        match items
            .into_iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == "state_dict"))
        {
            Some((_, Value::Dict(inner))) => inner,
            _ => {
                return Err(err(format!(
                    "no state dict: the checkpoint dict has keys [{}] and no `state_dict` dict",
                    keys.join(", ")
                )));
            }
        }
    };
    items
        .into_iter()
        .map(|(k, v)| match (k, v) {
            (Value::Str(name), Value::Tensor(spec)) => Ok((name, spec)),
            (k, v) => Err(err(format!(
                "state dict entry {} is {}, expected name -> tensor",
                k.describe(),
                v.describe()
            ))),
        })
        .collect()
}

/// Values of the minimal pickle machine.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Storage(DType, String),
    Tensor(TensorSpec),
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("{b}"),
            Value::Int(i) => format!("{i}"),
            Value::Float(f) => format!("{f}"),
            Value::Str(s) => format!("'{s}'"),
            Value::Bytes(b) => format!("bytes({})", b.len()),
            Value::Tuple(v) => format!("a tuple of {}", v.len()),
            Value::List(v) => format!("a list of {}", v.len()),
            Value::Dict(v) => format!("a dict of {}", v.len()),
            Value::Global(m, n) => format!("{m}.{n}"),
            Value::Storage(d, k) => format!("storage {k} ({d:?})"),
            Value::Tensor(t) => format!("a tensor of shape {:?}", t.size),
        }
    }
    fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => i64::try_from(*i).ok(),
            _ => None,
        }
    }
    fn as_ints(&self) -> Option<Vec<i64>> {
        match self {
            Value::Tuple(v) | Value::List(v) => v.iter().map(Value::as_int).collect(),
            _ => None,
        }
    }
}

struct Unpickler<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: PathBuf,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Storage key → (dtype, numel) for every persistent id seen.
    storages: HashMap<String, (DType, i64)>,
}

impl<'a> Unpickler<'a> {
    fn new(bytes: &'a [u8], pos: usize, path: &Path) -> Self {
        Unpickler {
            bytes,
            pos,
            path: path.to_path_buf(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            storages: HashMap::new(),
        }
    }

    /// Runs one pickle starting at `*pos`, advancing it past the STOP opcode.
    fn run(bytes: &'a [u8], pos: &mut usize, path: &Path) -> Result<Value> {
        let mut up = Unpickler::new(bytes, *pos, path);
        let v = up.execute()?;
        *pos = up.pos;
        Ok(v)
    }

    fn err(&self, reason: String) -> Error {
        Error::Weights {
            path: self.path.clone(),
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let bytes: &'a [u8] = self.bytes;
        match bytes.get(self.pos..self.pos + n) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(self.err(format!(
                "truncated: {n} bytes expected at offset {}, file has {} bytes",
                self.pos,
                self.bytes.len()
            ))),
        }
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn line(&mut self) -> Result<String> {
        let start = self.pos;
        let rel = self.bytes[start..]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err(format!("truncated: unterminated line at offset {start}")))?;
        self.pos = start + rel + 1;
        Ok(String::from_utf8_lossy(&self.bytes[start..start + rel]).into_owned())
    }
    fn utf8(&mut self, n: usize) -> Result<Value> {
        let at = self.pos;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map(Value::Str)
            .map_err(|_| self.err(format!("invalid utf-8 string at offset {at}")))
    }
    fn pop(&mut self) -> Result<Value> {
        let at = self.pos;
        self.stack
            .pop()
            .ok_or_else(|| self.err(format!("pickle stack underflow at offset {at}")))
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let at = self.pos;
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.err(format!("pickle mark missing at offset {at}")))?;
        if m > self.stack.len() {
            return Err(self.err(format!("pickle mark beyond stack at offset {at}")));
        }
        Ok(self.stack.split_off(m))
    }
    fn top(&mut self) -> Result<&mut Value> {
        let at = self.pos;
        let path = self.path.clone();
        self.stack.last_mut().ok_or(Error::Weights {
            path,
            reason: format!("pickle stack underflow at offset {at}"),
        })
    }
    fn memo_get(&self, i: u32) -> Result<Value> {
        self.memo
            .get(&i)
            .cloned()
            .ok_or_else(|| self.err(format!("memo entry {i} missing at offset {}", self.pos)))
    }
    fn memo_put(&mut self, i: u32) -> Result<()> {
        let v =
            self.stack.last().cloned().ok_or_else(|| {
                self.err(format!("memoize on empty stack at offset {}", self.pos))
            })?;
        self.memo.insert(i, v);
        Ok(())
    }

    fn execute(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(
                            self.err(format!("unsupported pickle protocol {p} at offset {at}"))
                        );
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME length; frames are read inline
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(self.err(format!("pickle stack underflow at offset {at}")));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let i = self.u32()?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i128));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i128));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i128));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    if n > 16 {
                        return Err(
                            self.err(format!("integer of {n} bytes too large at offset {at}"))
                        );
                    }
                    let b = self.take(n)?;
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xffu8; 16]
                    } else {
                        [0u8; 16]
                    };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i128::from_le_bytes(buf)));
                }
                b'G' => {
                    let b = self.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.utf8(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.utf8(n)?;
                    self.stack.push(v);
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err(self.err(format!("bad STACK_GLOBAL at offset {at}"))),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.call(func, args, at)?;
                    self.stack.push(v);
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid, at)?;
                    self.stack.push(v);
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.push((k, v)),
                        _ => return Err(self.err(format!("SETITEM on a non-dict at offset {at}"))),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err(self.err(format!("odd SETITEMS at offset {at}")));
                    }
                    let mut it = items.into_iter();
                    let mut pairs = Vec::new();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    match self.top()? {
                        Value::Dict(d) => d.extend(pairs),
                        _ => return Err(self.err(format!("SETITEMS on a non-dict at offset {at}"))),
                    }
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        _ => return Err(self.err(format!("APPEND on a non-list at offset {at}"))),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        _ => return Err(self.err(format!("APPENDS on a non-list at offset {at}"))),
                    }
                }
                b'b' => {
                    // BUILD: object state (e.g. an OrderedDict's `_metadata`); ignored.
                    self.pop()?;
                    self.top()?;
                }
                other => {
                    return Err(self.err(format!(
                        "unsupported pickle opcode 0x{other:02x} ({:?}) at offset {at}",
                        other as char
                    )));
                }
            }
        }
    }

    fn persistent_load(&mut self, pid: Value, at: usize) -> Result<Value> {
        let Value::Tuple(items) = &pid else {
            return Err(self.err(format!(
                "persistent id at offset {at} is {}, expected a tuple",
                pid.describe()
            )));
        };
        match items.as_slice() {
            [
                Value::Str(tag),
                Value::Global(m, n),
                Value::Str(key),
                _location,
                size,
                rest @ ..,
            ] if tag == "storage" => {
                let dtype = DType::from_global(m, n).ok_or_else(|| {
                    self.err(format!("unsupported storage type {m}.{n} at offset {at}"))
                })?;
                if let Some(view) = rest.first().filter(|v| **v != Value::None) {
                    return Err(self.err(format!(
                        "storage views (view_metadata {}) are not supported (offset {at})",
                        view.describe()
                    )));
                }
                let numel = size.as_int().unwrap_or(-1);
                self.storages.insert(key.clone(), (dtype, numel));
                Ok(Value::Storage(dtype, key.clone()))
            }
            _ => Err(self.err(format!(
                "unsupported persistent id at offset {at}: {}",
                pid.describe()
            ))),
        }
    }

    fn call(&mut self, func: Value, args: Value, at: usize) -> Result<Value> {
        let Value::Global(module, name) = &func else {
            return Err(self.err(format!("REDUCE on {} at offset {at}", func.describe())));
        };
        let Value::Tuple(args) = args else {
            return Err(self.err(format!("REDUCE arguments at offset {at} are not a tuple")));
        };
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") | ("builtins", "dict") if args.is_empty() => {
                Ok(Value::Dict(Vec::new()))
            }
            ("torch._utils", "_rebuild_tensor") | ("torch._utils", "_rebuild_tensor_v2")
                if args.len() >= 4 =>
            {
                let key = match &args[0] {
                    Value::Storage(_, k) => k.clone(),
                    other => {
                        return Err(self.err(format!(
                            "tensor storage at offset {at} is {}",
                            other.describe()
                        )));
                    }
                };
                let (Some(offset), Some(size), Some(stride)) =
                    (args[1].as_int(), args[2].as_ints(), args[3].as_ints())
                else {
                    return Err(self.err(format!("bad tensor arguments at offset {at}")));
                };
                Ok(Value::Tensor(TensorSpec {
                    key,
                    offset,
                    size,
                    stride,
                }))
            }
            ("torch._utils", "_rebuild_parameter") if !args.is_empty() => {
                Ok(args.into_iter().next().unwrap_or(Value::None))
            }
            _ => Err(self.err(format!(
                "refusing to call {module}.{name} (offset {at}): only torch tensor/storage \
                 constructors and OrderedDict are allowed"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x.th")
    }

    #[test]
    fn zip_checkpoint_is_named() {
        let e = parse_th(b"PK\x03\x04rest", p()).unwrap_err().to_string();
        assert!(e.contains("zip-format"), "{e}");
        assert!(e.starts_with("x.th"), "{e}");
    }

    #[test]
    fn truncated_and_unknown_opcode_are_reported() {
        // PROTO 2, LONG1 of 10 bytes but only 3 present
        let e = parse_th(b"\x80\x02\x8a\x0a\x6c\xfc\x9c", p())
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
        // PROTO 2 then opcode 0xff
        let e = parse_th(b"\x80\x02\xff", p()).unwrap_err().to_string();
        assert!(e.contains("opcode 0xff") && e.contains("offset 2"), "{e}");
    }

    #[test]
    fn wrong_magic_is_rejected() {
        // PROTO 2, BININT1 7, STOP
        let e = parse_th(b"\x80\x02K\x07.", p()).unwrap_err().to_string();
        assert!(e.contains("magic"), "{e}");
    }

    #[test]
    fn strided_gather_transposes() {
        let storage = ThData::F32(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // a (3, 2) view with strides (1, 3) starting at 1: [[1,4],[2,5],[3,6]]
        let spec = TensorSpec {
            key: "k".into(),
            offset: 1,
            size: vec![3, 2],
            stride: vec![1, 3],
        };
        let t = gather(&storage, &spec).unwrap();
        assert_eq!(t.shape, vec![3, 2]);
        assert_eq!(t.data, ThData::F32(vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
        let bad = TensorSpec { offset: 2, ..spec };
        assert!(
            gather(&storage, &bad)
                .unwrap_err()
                .contains("reaches element 7")
        );
    }
}
