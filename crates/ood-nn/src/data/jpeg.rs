//! A pure-Rust baseline JPEG decoder, bit-exact with libjpeg-turbo's default decompression path
//! as Pillow uses it (`Image.open(f).convert("RGB")`, libjpeg-turbo 3.x).
//!
//! What it reproduces exactly:
//! * baseline and extended sequential Huffman, 8-bit samples (SOF0 / SOF1), interleaved and
//!   non-interleaved scans, restart markers;
//! * the accurate integer inverse DCT (`jpeg_idct_islow` of `jidctint.c`), including its
//!   post-IDCT range-limit table (the descaled value is taken modulo 1024 as a 10-bit signed
//!   number, then shifted by 128 and clamped), 16-bit quantisation multipliers;
//! * libjpeg-turbo's "fancy" chroma upsampling (`jdsample.c`): the h2v1, h1v2 and h2v2 triangle
//!   filters with their exact rounding biases and edge handling (the last real sample row /
//!   column is replicated), box replication for h2v1 / h2v2 components narrower than 3 samples
//!   and for every other integral ratio (`int_upsample`);
//! * the YCbCr -> RGB tables of `jdcolor.c` (16-bit fixed point), the colour space rules of
//!   `jdapimin.c` (JFIF -> YCbCr; Adobe transform 0 or component ids 'R','G','B' -> RGB);
//! * grayscale images, replicated to 3 channels as `convert("RGB")` does.
//!
//! Not supported, reported as [`JpegError::Unsupported`] (the caller falls back to the `image`
//! crate, whose output is close to but not bit-exact with libjpeg-turbo): progressive and
//! arithmetic-coded JPEGs, lossless and hierarchical modes, 12-bit samples, non-integral
//! sampling ratios. Four-component (CMYK / YCCK, Adobe) images are refused with a clear
//! [`JpegError::Unsupported`] as well. Every JPEG of the shared CIFAR-10, Tiny-ImageNet and DTD
//! data is baseline (4:2:0, 4:2:2, 4:4:0, 4:4:4 and grayscale), so none of them needs the
//! fallback.
//!
//! Corrupt data (truncated files, bad Huffman codes, missing tables, inconsistent headers) is a
//! [`JpegError::Corrupt`], never a panic. Where libjpeg-turbo only warns (a marker met inside
//! entropy-coded data), this decoder does what libjpeg-turbo does: it reads zero bits from there.

use std::fmt;

/// Why a JPEG could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JpegError {
    /// A valid JPEG in a mode this decoder does not implement (progressive, arithmetic, CMYK...).
    Unsupported(String),
    /// Truncated or malformed data.
    Corrupt(String),
}

impl fmt::Display for JpegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JpegError::Unsupported(m) => write!(f, "unsupported JPEG: {m}"),
            JpegError::Corrupt(m) => write!(f, "corrupt JPEG: {m}"),
        }
    }
}

impl std::error::Error for JpegError {}

type Res<T> = std::result::Result<T, JpegError>;

fn corrupt<T>(m: impl Into<String>) -> Res<T> {
    Err(JpegError::Corrupt(m.into()))
}

fn unsupported<T>(m: impl Into<String>) -> Res<T> {
    Err(JpegError::Unsupported(m.into()))
}

/// A decoded image: 8-bit RGB, row-major interleaved.
#[derive(Debug, Clone)]
pub struct RgbPixels {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

/// `true` when `bytes` start with the JPEG SOI marker.
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0xFF && bytes[1] == 0xD8
}

/// Zigzag index -> natural (row-major) index (`jpeg_natural_order`, with 16 extra entries so that
/// a corrupt run length past 63 lands in a harmless slot).
const NATURAL_ORDER: [usize; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
    63, 63, 63, 63, 63, 63,
];

/// Huffman table with a 9-bit lookahead and the canonical slow path (`jdhuff.c`).
#[derive(Clone)]
struct Huffman {
    /// `(length << 8) | symbol` for codes of length <= 9, 0 when longer.
    fast: Vec<u16>,
    /// Largest code of each length (-1 when none), index 1..=16; `maxcode[17]` is a sentinel.
    maxcode: [i32; 18],
    /// `symbol index = code + valoffset[len]`.
    valoffset: [i32; 18],
    vals: Vec<u8>,
}

const FAST_BITS: u32 = 9;

impl Huffman {
    fn new(counts: &[u8; 16], vals: Vec<u8>) -> Res<Self> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total > 256 || total != vals.len() {
            return corrupt("bad Huffman table");
        }
        let mut fast = vec![0u16; 1 << FAST_BITS];
        let mut maxcode = [-1i32; 18];
        let mut valoffset = [0i32; 18];
        let mut code: i32 = 0;
        let mut k: i32 = 0;
        for len in 1..=16usize {
            let n = counts[len - 1] as i32;
            // Checked before the codes are laid out: more codes than a length has room for
            // would index past the fast table (found by fuzzing, tests/fuzz_readers.rs).
            if code + n > (1 << len) {
                return corrupt("bad Huffman table (code space overflow)");
            }
            if n > 0 {
                valoffset[len] = k - code;
                for i in 0..n {
                    let c = code + i;
                    if len as u32 <= FAST_BITS {
                        let shift = FAST_BITS - len as u32;
                        let base = (c as usize) << shift;
                        let entry = ((len as u16) << 8) | vals[(k + i) as usize] as u16;
                        for slot in &mut fast[base..base + (1 << shift)] {
                            *slot = entry;
                        }
                    }
                }
                code += n;
                k += n;
                maxcode[len] = code - 1;
            }
            if code > (1 << len) {
                return corrupt("bad Huffman table (code space overflow)");
            }
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        Ok(Huffman {
            fast,
            maxcode,
            valoffset,
            vals,
        })
    }
}

/// Entropy-coded segment reader: bytes with 0xFF00 stuffing; at a marker, zero bits follow (as
/// libjpeg-turbo after its "premature end of data segment" warning).
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    bits: u32,
    /// A marker was met (its code), the reader now feeds zeros.
    marker: Option<u8>,
    /// Zero bits fed past a marker; bounded so corrupt data cannot spin forever.
    zeros_fed: u32,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        BitReader {
            data,
            pos,
            acc: 0,
            bits: 0,
            marker: None,
            zeros_fed: 0,
        }
    }

    #[inline]
    fn refill(&mut self) -> Res<()> {
        while self.bits <= 56 {
            let mut byte = 0u8;
            if self.marker.is_none() {
                if self.pos >= self.data.len() {
                    return corrupt("truncated data (end of file inside a scan)");
                }
                let b = self.data[self.pos];
                if b == 0xFF {
                    // Skip fill bytes, then 0x00 = stuffed 0xFF, anything else = a marker.
                    let mut p = self.pos + 1;
                    while p < self.data.len() && self.data[p] == 0xFF {
                        p += 1;
                    }
                    if p >= self.data.len() {
                        return corrupt("truncated data (end of file inside a scan)");
                    }
                    if self.data[p] == 0 {
                        byte = 0xFF;
                        self.pos = p + 1;
                    } else {
                        self.marker = Some(self.data[p]);
                        self.pos = p - 1; // points at the 0xFF of the marker
                    }
                } else {
                    byte = b;
                    self.pos += 1;
                }
            } else {
                self.zeros_fed += 8;
                if self.zeros_fed > 1 << 20 {
                    return corrupt("entropy-coded data ends too early");
                }
            }
            self.acc |= (byte as u64) << (56 - self.bits);
            self.bits += 8;
        }
        Ok(())
    }

    #[inline]
    fn get_bits(&mut self, n: u32) -> Res<u32> {
        if n == 0 {
            return Ok(0);
        }
        if self.bits < n {
            self.refill()?;
        }
        let v = (self.acc >> (64 - n)) as u32;
        self.acc <<= n;
        self.bits -= n;
        Ok(v)
    }

    /// `HUFF_EXTEND` of `get_bits(s)`.
    #[inline]
    fn receive_extend(&mut self, s: u32) -> Res<i32> {
        if s == 0 {
            return Ok(0);
        }
        if s > 16 {
            return corrupt("bad coefficient size");
        }
        let v = self.get_bits(s)? as i32;
        Ok(if v < (1 << (s - 1)) {
            v - (1 << s) + 1
        } else {
            v
        })
    }

    #[inline]
    fn decode(&mut self, h: &Huffman) -> Res<u8> {
        if self.bits < 16 {
            self.refill()?;
        }
        let peek = (self.acc >> (64 - FAST_BITS)) as usize;
        let e = h.fast[peek];
        if e != 0 {
            let len = (e >> 8) as u32;
            self.acc <<= len;
            self.bits -= len;
            return Ok(e as u8);
        }
        let top16 = (self.acc >> 48) as i32;
        let mut len = FAST_BITS as usize + 1;
        while len <= 16 {
            let code = top16 >> (16 - len);
            if code <= h.maxcode[len] {
                self.acc <<= len;
                self.bits -= len as u32;
                let idx = (code + h.valoffset[len]) as usize;
                return match h.vals.get(idx) {
                    Some(&v) => Ok(v),
                    None => corrupt("bad Huffman code"),
                };
            }
            len += 1;
        }
        corrupt("bad Huffman code")
    }

    /// At a restart point: drop the remaining bits and consume the expected RSTn marker.
    fn restart(&mut self, expected: u8) -> Res<()> {
        self.acc = 0;
        self.bits = 0;
        self.zeros_fed = 0;
        let m = match self.marker.take() {
            Some(m) => m,
            None => {
                // Skip to the next marker.
                let mut p = self.pos;
                loop {
                    if p + 1 >= self.data.len() {
                        return corrupt("truncated data (missing restart marker)");
                    }
                    if self.data[p] == 0xFF && self.data[p + 1] != 0 && self.data[p + 1] != 0xFF {
                        break;
                    }
                    p += 1;
                }
                self.pos = p;
                self.data[p + 1]
            }
        };
        if m != 0xD0 + expected {
            return corrupt(format!(
                "expected restart marker RST{expected}, found marker 0x{m:02X}"
            ));
        }
        // self.pos points at 0xFF (possibly after fill bytes); skip fill bytes and the code.
        let mut p = self.pos;
        while p < self.data.len() && self.data[p] == 0xFF {
            p += 1;
        }
        self.pos = p + 1;
        Ok(())
    }

    /// Position of the first marker after the scan data.
    fn end_position(&self) -> usize {
        let mut p = self.pos;
        while p + 1 < self.data.len() {
            let (a, b) = (self.data[p], self.data[p + 1]);
            if a == 0xFF && b != 0 && b != 0xFF && !(0xD0..=0xD7).contains(&b) {
                return p;
            }
            p += 1;
        }
        self.data.len()
    }
}

#[derive(Clone, Debug)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    /// Blocks per row / column covered by the component's MCU grid (padded).
    bw: usize,
    bh: usize,
    /// `downsampled_width` / `downsampled_height` of libjpeg.
    dw: usize,
    dh: usize,
    /// Decoded samples, `bw * 8` wide.
    plane: Vec<u8>,
}

/// Constants of `jidctint.c` (CONST_BITS = 13).
const CONST_BITS: i64 = 13;
const PASS1_BITS: i64 = 2;
const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

/// The post-IDCT range-limit table of `jdmaster.c` (`prepare_range_limit_table`), indexed by the
/// descaled IDCT output `& 1023`.
fn idct_range_table() -> [u8; 1024] {
    let mut t = [0u8; 1024];
    for (j, slot) in t.iter_mut().enumerate() {
        let signed = if j >= 512 { j as i32 - 1024 } else { j as i32 };
        *slot = (signed + 128).clamp(0, 255) as u8;
    }
    t
}

/// `jpeg_idct_islow`: dequantise (16-bit multipliers) and inverse-transform one block into
/// `out` (stride `stride`).
#[inline]
fn idct_islow(
    coef: &[i32; 64],
    quant: &[i32; 64],
    range: &[u8; 1024],
    out: &mut [u8],
    stride: usize,
) {
    let mut ws = [0i64; 64];
    for c in 0..8 {
        let q = |r: usize| coef[r * 8 + c] as i64 * quant[r * 8 + c] as i64;
        if coef[8 + c] == 0
            && coef[16 + c] == 0
            && coef[24 + c] == 0
            && coef[32 + c] == 0
            && coef[40 + c] == 0
            && coef[48 + c] == 0
            && coef[56 + c] == 0
        {
            let dc = q(0) << PASS1_BITS;
            for r in 0..8 {
                ws[r * 8 + c] = dc;
            }
            continue;
        }
        let z2 = q(2);
        let z3 = q(6);
        let z1 = (z2 + z3) * FIX_0_541196100;
        let tmp2 = z1 + z3 * -FIX_1_847759065;
        let tmp3 = z1 + z2 * FIX_0_765366865;
        let z2 = q(0);
        let z3 = q(4);
        let tmp0 = (z2 + z3) << CONST_BITS;
        let tmp1 = (z2 - z3) << CONST_BITS;
        let tmp10 = tmp0 + tmp3;
        let tmp13 = tmp0 - tmp3;
        let tmp11 = tmp1 + tmp2;
        let tmp12 = tmp1 - tmp2;
        let (o0, o1, o2, o3) = odd(q(7), q(5), q(3), q(1));
        let d = |x: i64| (x + (1 << (CONST_BITS - PASS1_BITS - 1))) >> (CONST_BITS - PASS1_BITS);
        ws[c] = d(tmp10 + o3);
        ws[56 + c] = d(tmp10 - o3);
        ws[8 + c] = d(tmp11 + o2);
        ws[48 + c] = d(tmp11 - o2);
        ws[16 + c] = d(tmp12 + o1);
        ws[40 + c] = d(tmp12 - o1);
        ws[24 + c] = d(tmp13 + o0);
        ws[32 + c] = d(tmp13 - o0);
    }
    for r in 0..8 {
        let w = &ws[r * 8..r * 8 + 8];
        let o = &mut out[r * stride..r * stride + 8];
        if w[1..].iter().all(|&x| x == 0) {
            let v = range[(((w[0] + (1 << (PASS1_BITS + 2))) >> (PASS1_BITS + 3)) & 1023) as usize];
            o.fill(v);
            continue;
        }
        let z2 = w[2];
        let z3 = w[6];
        let z1 = (z2 + z3) * FIX_0_541196100;
        let tmp2 = z1 + z3 * -FIX_1_847759065;
        let tmp3 = z1 + z2 * FIX_0_765366865;
        let tmp0 = (w[0] + w[4]) << CONST_BITS;
        let tmp1 = (w[0] - w[4]) << CONST_BITS;
        let tmp10 = tmp0 + tmp3;
        let tmp13 = tmp0 - tmp3;
        let tmp11 = tmp1 + tmp2;
        let tmp12 = tmp1 - tmp2;
        let (o0, o1, o2, o3) = odd(w[7], w[5], w[3], w[1]);
        const SH: i64 = CONST_BITS + PASS1_BITS + 3;
        let d = |x: i64| range[(((x + (1 << (SH - 1))) >> SH) & 1023) as usize];
        o[0] = d(tmp10 + o3);
        o[7] = d(tmp10 - o3);
        o[1] = d(tmp11 + o2);
        o[6] = d(tmp11 - o2);
        o[2] = d(tmp12 + o1);
        o[5] = d(tmp12 - o1);
        o[3] = d(tmp13 + o0);
        o[4] = d(tmp13 - o0);
    }
}

/// Odd part of `jpeg_idct_islow` for inputs (x7, x5, x3, x1); returns (tmp0..tmp3).
#[inline(always)]
fn odd(t0: i64, t1: i64, t2: i64, t3: i64) -> (i64, i64, i64, i64) {
    let z1 = t0 + t3;
    let z2 = t1 + t2;
    let z3 = t0 + t2;
    let z4 = t1 + t3;
    let z5 = (z3 + z4) * FIX_1_175875602;
    let t0 = t0 * FIX_0_298631336;
    let t1 = t1 * FIX_2_053119869;
    let t2 = t2 * FIX_3_072711026;
    let t3 = t3 * FIX_1_501321110;
    let z1 = z1 * -FIX_0_899976223;
    let z2 = z2 * -FIX_2_562915447;
    let z3 = z3 * -FIX_1_961570560 + z5;
    let z4 = z4 * -FIX_0_390180644 + z5;
    (t0 + z1 + z3, t1 + z2 + z4, t2 + z2 + z3, t3 + z1 + z4)
}

/// YCbCr -> RGB tables of `jdcolor.c` (`build_ycc_rgb_table`, SCALEBITS = 16).
struct ColorTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i32; 256],
    cb_g: [i32; 256],
}

impl ColorTables {
    fn new() -> Self {
        const SCALEBITS: i64 = 16;
        const ONE_HALF: i64 = 1 << (SCALEBITS - 1);
        let fix = |x: f64| (x * (1i64 << SCALEBITS) as f64 + 0.5) as i64;
        let mut t = ColorTables {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256 {
            let x = i as i64 - 128;
            t.cr_r[i] = ((fix(1.40200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cb_b[i] = ((fix(1.77200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cr_g[i] = (-fix(0.71414) * x) as i32;
            t.cb_g[i] = (-fix(0.34414) * x + ONE_HALF) as i32;
        }
        t
    }
}

fn tables() -> &'static (ColorTables, [u8; 1024]) {
    static T: std::sync::OnceLock<(ColorTables, [u8; 1024])> = std::sync::OnceLock::new();
    T.get_or_init(|| (ColorTables::new(), idct_range_table()))
}

#[inline]
fn clamp_u8(x: i32) -> u8 {
    x.clamp(0, 255) as u8
}

fn be16(d: &[u8], p: usize) -> Res<usize> {
    match d.get(p..p + 2) {
        Some(b) => Ok(((b[0] as usize) << 8) | b[1] as usize),
        None => corrupt("truncated data (inside a marker segment)"),
    }
}

/// Decodes a JPEG file to 8-bit RGB exactly as Pillow's `Image.open(f).convert("RGB")` with
/// libjpeg-turbo does (see the module docs for what is supported).
pub fn decode(data: &[u8]) -> Result<RgbPixels, JpegError> {
    if !is_jpeg(data) {
        return corrupt("no SOI marker");
    }
    let mut qt: [Option<[i32; 64]>; 4] = [None; 4];
    let mut dc_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut comps: Vec<Component> = Vec::new();
    let (mut width, mut height) = (0usize, 0usize);
    let (mut hmax, mut vmax) = (1usize, 1usize);
    let mut restart_interval = 0usize;
    let mut jfif = false;
    let mut adobe: Option<u8> = None;
    let mut frame_seen = false;
    let mut scans = 0usize;
    let mut pos = 2usize;
    let (_, range) = tables();
    loop {
        // Find the next marker (libjpeg skips garbage before a marker with a warning).
        while pos < data.len() && data[pos] != 0xFF {
            pos += 1;
        }
        while pos < data.len() && data[pos] == 0xFF {
            pos += 1;
        }
        if pos >= data.len() {
            if scans > 0 {
                break; // missing EOI: libjpeg-turbo warns and finishes
            }
            return corrupt("truncated data (no image data before end of file)");
        }
        let m = data[pos];
        pos += 1;
        match m {
            0xD8 | 0x01 | 0xD0..=0xD7 => continue,
            0xD9 => break,
            _ => {}
        }
        let len = be16(data, pos)?;
        if len < 2 || pos + len > data.len() {
            return corrupt(format!("truncated data (marker 0x{m:02X} segment)"));
        }
        let seg = &data[pos + 2..pos + len];
        pos += len;
        match m {
            0xE0 if seg.starts_with(b"JFIF\0") => jfif = true,
            0xEE if seg.len() >= 12 && seg.starts_with(b"Adobe") => adobe = Some(seg[11]),
            0xDB => {
                let mut p = 0;
                while p < seg.len() {
                    let (pq, tq) = (seg[p] >> 4, (seg[p] & 15) as usize);
                    p += 1;
                    if tq > 3 || pq > 1 {
                        return corrupt("bad quantisation table");
                    }
                    let mut t = [0i32; 64];
                    for (k, &nat) in NATURAL_ORDER[..64].iter().enumerate() {
                        let v = if pq == 0 {
                            *seg.get(p + k)
                                .ok_or(JpegError::Corrupt("short DQT".into()))?
                                as i32
                        } else {
                            be16(seg, p + 2 * k)
                                .map_err(|_| JpegError::Corrupt("short DQT".into()))?
                                as i32
                        };
                        // ISLOW_MULT_TYPE is a 16-bit short in libjpeg-turbo.
                        t[nat] = v as u16 as i16 as i32;
                    }
                    p += if pq == 0 { 64 } else { 128 };
                    qt[tq] = Some(t);
                }
            }
            0xC4 => {
                let mut p = 0;
                while p < seg.len() {
                    if p + 17 > seg.len() {
                        return corrupt("short DHT");
                    }
                    let (tc, th) = (seg[p] >> 4, (seg[p] & 15) as usize);
                    let mut counts = [0u8; 16];
                    counts.copy_from_slice(&seg[p + 1..p + 17]);
                    let n: usize = counts.iter().map(|&c| c as usize).sum();
                    p += 17;
                    if p + n > seg.len() || th > 3 || tc > 1 {
                        return corrupt("bad DHT");
                    }
                    let h = Huffman::new(&counts, seg[p..p + n].to_vec())?;
                    p += n;
                    if tc == 0 {
                        dc_tables[th] = Some(h);
                    } else {
                        ac_tables[th] = Some(h);
                    }
                }
            }
            0xDD => {
                restart_interval = be16(seg, 0)?;
            }
            0xC0 | 0xC1 => {
                if frame_seen {
                    return corrupt("two frame headers");
                }
                frame_seen = true;
                if seg.len() < 6 {
                    return corrupt("short SOF");
                }
                if seg[0] != 8 {
                    return unsupported(format!("{}-bit samples", seg[0]));
                }
                height = be16(seg, 1)?;
                width = be16(seg, 3)?;
                let nc = seg[5] as usize;
                if width == 0 || height == 0 {
                    return corrupt("zero image size (DNL not supported)");
                }
                if seg.len() < 6 + 3 * nc || nc == 0 {
                    return corrupt("short SOF");
                }
                if nc == 2 || nc > 4 {
                    return unsupported(format!("{nc} components"));
                }
                if nc == 4 {
                    return unsupported("4-component (CMYK / YCCK) JPEG");
                }
                for k in 0..nc {
                    let b = &seg[6 + 3 * k..9 + 3 * k];
                    let (h, v) = ((b[1] >> 4) as usize, (b[1] & 15) as usize);
                    if !(1..=4).contains(&h) || !(1..=4).contains(&v) || b[2] > 3 {
                        return corrupt("bad sampling factors or table index");
                    }
                    comps.push(Component {
                        id: b[0],
                        h,
                        v,
                        tq: b[2] as usize,
                        bw: 0,
                        bh: 0,
                        dw: 0,
                        dh: 0,
                        plane: Vec::new(),
                    });
                }
                hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
                vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
                let mcux = width.div_ceil(8 * hmax);
                let mcuy = height.div_ceil(8 * vmax);
                if (width as u64) * (height as u64) > 1 << 30 {
                    return unsupported(format!("image too large ({width}x{height})"));
                }
                for c in &mut comps {
                    c.bw = mcux * c.h;
                    c.bh = mcuy * c.v;
                    c.dw = (width * c.h).div_ceil(hmax);
                    c.dh = (height * c.v).div_ceil(vmax);
                    c.plane = vec![0u8; c.bw * 8 * c.bh * 8];
                }
            }
            0xC2 | 0xC6 | 0xCA | 0xCE => return unsupported("progressive JPEG"),
            0xC3 | 0xC5 | 0xC7 | 0xCB | 0xCD | 0xCF => {
                return unsupported("lossless / hierarchical JPEG");
            }
            0xC9 => return unsupported("arithmetic-coded JPEG"),
            0xDA => {
                if !frame_seen {
                    return corrupt("scan before frame header");
                }
                let ns = *seg.first().ok_or(JpegError::Corrupt("short SOS".into()))? as usize;
                if ns == 0 || ns > 4 || seg.len() < 1 + 2 * ns + 3 {
                    return corrupt("bad SOS");
                }
                let mut sel = Vec::with_capacity(ns);
                for k in 0..ns {
                    let id = seg[1 + 2 * k];
                    let t = seg[2 + 2 * k];
                    let ci = comps
                        .iter()
                        .position(|c| c.id == id)
                        .ok_or(JpegError::Corrupt(format!(
                            "scan names unknown component {id}"
                        )))?;
                    let (td, ta) = ((t >> 4) as usize, (t & 15) as usize);
                    if td > 3 || ta > 3 || dc_tables[td].is_none() || ac_tables[ta].is_none() {
                        return corrupt("scan uses an undefined Huffman table");
                    }
                    if qt[comps[ci].tq].is_none() {
                        return corrupt("component uses an undefined quantisation table");
                    }
                    sel.push((ci, td, ta));
                }
                let ss = seg[1 + 2 * ns];
                let se = seg[2 + 2 * ns];
                let a = seg[3 + 2 * ns];
                if ss != 0 || se != 63 || a != 0 {
                    return corrupt("bad spectral selection for a sequential scan");
                }
                let end = decode_scan(
                    data,
                    pos,
                    &mut comps,
                    &sel,
                    &qt,
                    &dc_tables,
                    &ac_tables,
                    restart_interval,
                    (width, height, hmax, vmax),
                    range,
                )?;
                pos = end;
                scans += 1;
            }
            _ => {} // APPn, COM, others: skipped
        }
    }
    if !frame_seen || scans == 0 {
        return corrupt("no image data");
    }
    finish(&comps, width, height, hmax, vmax, jfif, adobe)
}

#[allow(clippy::too_many_arguments)]
fn decode_scan(
    data: &[u8],
    pos: usize,
    comps: &mut [Component],
    sel: &[(usize, usize, usize)],
    qt: &[Option<[i32; 64]>; 4],
    dc_tables: &[Option<Huffman>; 4],
    ac_tables: &[Option<Huffman>; 4],
    restart_interval: usize,
    (width, height, hmax, vmax): (usize, usize, usize, usize),
    range: &[u8; 1024],
) -> Res<usize> {
    let mut br = BitReader::new(data, pos);
    let mut pred = [0i32; 4];
    let mut coef = [0i32; 64];
    // MCU geometry.
    let (mcux, mcuy) = if sel.len() == 1 {
        let c = &comps[sel[0].0];
        (
            (width * c.h).div_ceil(hmax * 8),
            (height * c.v).div_ceil(vmax * 8),
        )
    } else {
        (width.div_ceil(8 * hmax), height.div_ceil(8 * vmax))
    };
    let total = mcux * mcuy;
    let mut rst_next = 0u8;
    for mcu in 0..total {
        if restart_interval > 0 && mcu > 0 && mcu % restart_interval == 0 {
            br.restart(rst_next)?;
            rst_next = (rst_next + 1) & 7;
            pred = [0; 4];
        }
        let (mx, my) = (mcu % mcux, mcu / mcux);
        for (k, &(ci, td, ta)) in sel.iter().enumerate() {
            let dct = dc_tables[td].as_ref().expect("checked");
            let act = ac_tables[ta].as_ref().expect("checked");
            let quant = qt[comps[ci].tq].as_ref().expect("checked");
            let c = &mut comps[ci];
            let (bh_, bv_) = if sel.len() == 1 { (1, 1) } else { (c.h, c.v) };
            let stride = c.bw * 8;
            for by in 0..bv_ {
                for bx in 0..bh_ {
                    coef.fill(0);
                    let s = br.decode(dct)? as u32;
                    let diff = br.receive_extend(s)?;
                    pred[k] = pred[k].wrapping_add(diff);
                    // JCOEF is 16 bits in libjpeg.
                    coef[0] = pred[k] as i16 as i32;
                    let mut i = 1usize;
                    while i < 64 {
                        let rs = br.decode(act)? as u32;
                        let (r, s) = ((rs >> 4) as usize, rs & 15);
                        if s == 0 {
                            if r != 15 {
                                break;
                            }
                            i += 16;
                            continue;
                        }
                        i += r;
                        let v = br.receive_extend(s)?;
                        coef[NATURAL_ORDER[i.min(79)]] = v as i16 as i32;
                        i += 1;
                    }
                    let (px, py) = (mx * bh_ + bx, my * bv_ + by);
                    let off = py * 8 * stride + px * 8;
                    idct_islow(&coef, quant, range, &mut c.plane[off..], stride);
                }
            }
        }
    }
    Ok(br.end_position())
}

/// Upsampling (`jdsample.c`) and colour conversion (`jdcolor.c`).
fn finish(
    comps: &[Component],
    width: usize,
    height: usize,
    hmax: usize,
    vmax: usize,
    jfif: bool,
    adobe: Option<u8>,
) -> Res<RgbPixels> {
    let n = width * height;
    let mut out = vec![0u8; n * 3];
    if comps.len() == 1 {
        let c = &comps[0];
        let stride = c.bw * 8;
        for y in 0..height {
            let row = &c.plane[y * stride..y * stride + width];
            for (o, &v) in out[y * width * 3..(y + 1) * width * 3]
                .chunks_exact_mut(3)
                .zip(row)
            {
                o.fill(v);
            }
        }
        return Ok(RgbPixels {
            width: width as u32,
            height: height as u32,
            data: out,
        });
    }
    // Full-size planes (stride = each plane's own width).
    let mut planes: Vec<(Vec<u8>, usize)> = Vec::with_capacity(3);
    for c in comps {
        if !hmax.is_multiple_of(c.h) || !vmax.is_multiple_of(c.v) {
            return unsupported("non-integral sampling ratio");
        }
        planes.push(upsample(c, hmax / c.h, vmax / c.v));
    }
    let rgb = match adobe {
        _ if jfif => false,
        Some(0) => true,
        Some(_) => false,
        None => comps[0].id == b'R' && comps[1].id == b'G' && comps[2].id == b'B',
    };
    let (t, _) = tables();
    for y in 0..height {
        let r0 = &planes[0].0[y * planes[0].1..y * planes[0].1 + width];
        let r1 = &planes[1].0[y * planes[1].1..y * planes[1].1 + width];
        let r2 = &planes[2].0[y * planes[2].1..y * planes[2].1 + width];
        let o = &mut out[y * width * 3..(y + 1) * width * 3];
        if rgb {
            for (x, px) in o.chunks_exact_mut(3).enumerate() {
                px[0] = r0[x];
                px[1] = r1[x];
                px[2] = r2[x];
            }
        } else {
            for (x, px) in o.chunks_exact_mut(3).enumerate() {
                let yy = r0[x] as i32;
                let cb = r1[x] as usize;
                let cr = r2[x] as usize;
                px[0] = clamp_u8(yy + t.cr_r[cr]);
                px[1] = clamp_u8(yy + ((t.cb_g[cb] + t.cr_g[cr]) >> 16));
                px[2] = clamp_u8(yy + t.cb_b[cb]);
            }
        }
    }
    Ok(RgbPixels {
        width: width as u32,
        height: height as u32,
        data: out,
    })
}

/// Upsamples one component to `(dw * hx) x (dh * vy)`; returns the plane and its stride.
fn upsample(c: &Component, hx: usize, vy: usize) -> (Vec<u8>, usize) {
    let stride = c.bw * 8;
    let (dw, dh) = (c.dw, c.dh);
    let row = |y: usize| &c.plane[y * stride..y * stride + dw];
    let ow = dw * hx;
    let oh = dh * vy;
    let mut out = vec![0u8; ow * oh];
    match (hx, vy) {
        (1, 1) => {
            for y in 0..dh {
                out[y * ow..(y + 1) * ow].copy_from_slice(row(y));
            }
        }
        (2, 1) if dw > 2 => {
            for y in 0..dh {
                h2v1_fancy(row(y), &mut out[y * ow..(y + 1) * ow]);
            }
        }
        (1, 2) => {
            for y in 0..dh {
                let cur = row(y);
                let above = row(y.saturating_sub(1));
                let below = row((y + 1).min(dh - 1));
                for (v, (other, bias)) in [(above, 1u16), (below, 2u16)].into_iter().enumerate() {
                    let o = &mut out[(2 * y + v) * ow..(2 * y + v + 1) * ow];
                    for x in 0..dw {
                        o[x] = ((cur[x] as u16 * 3 + other[x] as u16 + bias) >> 2) as u8;
                    }
                }
            }
        }
        (2, 2) if dw > 2 => {
            for y in 0..dh {
                let cur = row(y);
                let above = row(y.saturating_sub(1));
                let below = row((y + 1).min(dh - 1));
                for (v, other) in [above, below].into_iter().enumerate() {
                    let o = &mut out[(2 * y + v) * ow..(2 * y + v + 1) * ow];
                    h2v2_fancy_row(cur, other, o);
                }
            }
        }
        _ => {
            // int_upsample: box replication.
            for y in 0..dh {
                let r = row(y);
                let first = y * vy * ow;
                {
                    let o = &mut out[first..first + ow];
                    for (x, &v) in r.iter().enumerate() {
                        o[x * hx..(x + 1) * hx].fill(v);
                    }
                }
                for k in 1..vy {
                    out.copy_within(first..first + ow, first + k * ow);
                }
            }
        }
    }
    (out, ow)
}

/// `h2v1_fancy_upsample` for one row (`input.len() > 2`).
#[inline]
fn h2v1_fancy(input: &[u8], out: &mut [u8]) {
    let n = input.len();
    let v = input[0] as u16;
    out[0] = v as u8;
    out[1] = ((v * 3 + input[1] as u16 + 2) >> 2) as u8;
    for i in 1..n - 1 {
        let v = input[i] as u16 * 3;
        out[2 * i] = ((v + input[i - 1] as u16 + 1) >> 2) as u8;
        out[2 * i + 1] = ((v + input[i + 1] as u16 + 2) >> 2) as u8;
    }
    let v = input[n - 1] as u16;
    out[2 * n - 2] = ((v * 3 + input[n - 2] as u16 + 1) >> 2) as u8;
    out[2 * n - 1] = v as u8;
}

/// One output row of `h2v2_fancy_upsample`: `near` is the nearest input row, `far` the next
/// nearest (above for the upper output row, below for the lower one); `near.len() > 2`.
#[inline]
fn h2v2_fancy_row(near: &[u8], far: &[u8], out: &mut [u8]) {
    let n = near.len();
    let col = |i: usize| near[i] as i32 * 3 + far[i] as i32;
    let mut this = col(0);
    let mut next = col(1);
    out[0] = ((this * 4 + 8) >> 4) as u8;
    out[1] = ((this * 3 + next + 7) >> 4) as u8;
    let mut last = this;
    this = next;
    for i in 1..n - 1 {
        next = col(i + 1);
        out[2 * i] = ((this * 3 + last + 8) >> 4) as u8;
        out[2 * i + 1] = ((this * 3 + next + 7) >> 4) as u8;
        last = this;
        this = next;
    }
    out[2 * n - 2] = ((this * 3 + last + 8) >> 4) as u8;
    out[2 * n - 1] = ((this * 4 + 7) >> 4) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_table_matches_libjpeg_layout() {
        let t = idct_range_table();
        assert_eq!(t[0], 128);
        assert_eq!(t[127], 255);
        assert_eq!(t[128], 255);
        assert_eq!(t[511], 255);
        assert_eq!(t[512], 0);
        assert_eq!(t[895], 0);
        assert_eq!(t[896], 0);
        assert_eq!(t[1023], 127);
    }

    #[test]
    fn color_tables_match_jdcolor() {
        let t = ColorTables::new();
        // FIX(1.402) = 91881, FIX(1.772) = 116130: values at x = -128 and x = 127.
        assert_eq!(t.cr_r[0], -179);
        assert_eq!(t.cr_r[255], 178);
        assert_eq!(t.cb_b[0], -227);
        assert_eq!(t.cb_b[255], 225);
        assert_eq!(t.cr_g[255], -46802 * 127);
        assert_eq!(t.cb_g[0], 22554 * 128 + 32768);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(decode(b"\xFF\xD8"), Err(JpegError::Corrupt(_))));
        assert!(matches!(
            decode(b"\xFF\xD8\xFF\xC0\x00\x11garbage"),
            Err(JpegError::Corrupt(_))
        ));
        let mut x = 12345u32;
        for len in [3usize, 10, 100, 1000] {
            let mut v = vec![0xFF, 0xD8];
            for _ in 0..len {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                v.push((x >> 16) as u8);
            }
            assert!(decode(&v).is_err());
        }
    }
}
