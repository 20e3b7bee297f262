//! A pure-Rust baseline JPEG decoder, bit-exact with libjpeg-turbo's default decompression path
//! as Pillow uses it (`Image.open(f).convert("RGB")`, libjpeg-turbo 3.x).
//!
//! What it reproduces exactly:
//! * baseline and extended sequential Huffman, 8-bit samples (SOF0 / SOF1), interleaved and
//!   non-interleaved scans, restart markers;
//! * the accurate integer inverse DCT (`jpeg_idct_islow` of `jidctint.c`), including its
//!   post-IDCT range-limit table (the descaled value is taken modulo 1024 as a 10-bit signed
//!   number, then shifted by 128 and clamped), 16-bit quantisation multipliers; computed in
//!   16/32-bit integers like libjpeg-turbo's SIMD versions, which equals `jidctint.c` for every
//!   coefficient an 8-bit image can have (see `idct_islow`);
//! * libjpeg-turbo's "fancy" chroma upsampling (`jdsample.c`): the h2v1, h1v2 and h2v2 triangle
//!   filters with their exact rounding biases and edge handling (the last real sample row /
//!   column is replicated), box replication for h2v1 / h2v2 components narrower than 3 samples
//!   and for every other integral ratio (`int_upsample`);
//! * the YCbCr -> RGB tables of `jdcolor.c` (16-bit fixed point; their entries are computed,
//!   not looked up, with the same integer results), the colour space rules of `jdapimin.c`
//!   (JFIF -> YCbCr; Adobe transform 0 or component ids 'R','G','B' -> RGB);
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
//!
//! Speed (safe, portable Rust, written so that the compiler vectorises the hot loops): Huffman
//! decoding through a 10-bit lookahead table that also decodes the coefficient's extra bits
//! when they fit (tables are cached per thread, since the files of a data set mostly share
//! them), with a 64-bit bit buffer refilled 8 bytes at a time where no 0xFF byte follows;
//! dequantisation while decoding; the IDCT on 8 columns / rows at once in 16 x 16 -> 32-bit
//! multiplies, with a shortcut for blocks whose AC coefficients are all zero; upsampling and
//! colour conversion one output row at a time, the conversion in 16-pixel chunks.

use std::cell::RefCell;
use std::fmt;
use std::num::Wrapping;
use std::rc::Rc;

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

/// Zigzag index -> natural (row-major) index (`jpeg_natural_order`, with extra entries so that
/// a corrupt run length past 63 lands in a harmless slot, as libjpeg's 16 extra entries; 128
/// entries so that an index masked with 127 needs no bounds check).
const NATURAL_ORDER: [u8; 128] = {
    const ZZ: [u8; 64] = [
        0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
        20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
        58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
    ];
    let mut t = [63u8; 128];
    let mut k = 0;
    while k < 64 {
        t[k] = ZZ[k];
        k += 1;
    }
    t
};

/// Huffman table with a `FAST_BITS` lookahead and the canonical slow path (`jdhuff.c`).
#[derive(Clone)]
struct Huffman {
    /// For each `FAST_BITS`-bit lookahead: 0 when the code is longer (slow path); else
    /// `run << 12 | size << 8` (`size`, `run` = the symbol's low / high nibble for AC tables;
    /// `size` = the symbol, run 0 for DC tables) plus either `value << 16 | total length` when
    /// the code and its `size` extra bits fit in the lookahead (`value` = `HUFF_EXTEND` of the
    /// extra bits; `0x40` added for an AC end of block), or `0x80 | code length` when only the
    /// code does.
    lut: Box<[i32; 1 << FAST_BITS]>,
    /// Largest code of each length (-1 when none), index 1..=16; `maxcode[17]` is a sentinel.
    maxcode: [i32; 18],
    /// `symbol index = code + valoffset[len]`.
    valoffset: [i32; 18],
    vals: Vec<u8>,
}

const FAST_BITS: u32 = 10;

impl Huffman {
    /// [`Huffman::new`] through a small per-thread cache of recently built tables: the JPEGs of
    /// a data set mostly share their Huffman tables, and building the lookahead table is a
    /// large part of decoding a small image.
    fn cached(counts: &[u8; 16], vals: &[u8], ac: bool) -> Res<Rc<Huffman>> {
        type Cache = RefCell<Vec<(bool, [u8; 16], Rc<Huffman>)>>;
        thread_local! {
            static CACHE: Cache = const { RefCell::new(Vec::new()) };
        }
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some((_, _, h)) = cache
                .iter()
                .find(|(a, c, h)| *a == ac && c == counts && h.vals == vals)
            {
                return Ok(Rc::clone(h));
            }
            let h = Rc::new(Huffman::new(counts, vals.to_vec(), ac)?);
            if cache.len() == 8 {
                cache.remove(0);
            }
            cache.push((ac, *counts, Rc::clone(&h)));
            Ok(h)
        })
    }

    fn new(counts: &[u8; 16], vals: Vec<u8>, ac: bool) -> Res<Self> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total > 256 || total != vals.len() {
            return corrupt("bad Huffman table");
        }
        let mut lut = Box::new([0i32; 1 << FAST_BITS]);
        let mut maxcode = [-1i32; 18];
        let mut valoffset = [0i32; 18];
        let mut code: i32 = 0;
        let mut k: i32 = 0;
        for len in 1..=16usize {
            let n = counts[len - 1] as i32;
            // Checked before the codes are laid out: more codes than a length has room for
            // would index past the lookahead table (found by fuzzing, tests/fuzz_readers.rs).
            if code + n > (1 << len) {
                return corrupt("bad Huffman table (code space overflow)");
            }
            if n > 0 {
                valoffset[len] = k - code;
                let len = len as u32;
                if len <= FAST_BITS {
                    for i in 0..n {
                        let sym = vals[(k + i) as usize] as u32;
                        let (run, size) = if ac { (sym >> 4, sym & 15) } else { (0, sym) };
                        let shift = FAST_BITS - len;
                        let base = ((code + i) as usize) << shift;
                        let slots = &mut lut[base..base + (1 << shift)];
                        if size > 16 {
                            continue; // a corrupt DC size: the slow path reports it
                        }
                        let head = ((run << 12) | (size << 8)) as i32;
                        // End of block: size 0 with any run but 15 (ZRL), as in `jdhuff.c`.
                        let eob = if ac && size == 0 && run != 15 {
                            0x40
                        } else {
                            0
                        };
                        if len + size <= FAST_BITS {
                            let extra = FAST_BITS - len - size;
                            for (j, slot) in slots.iter_mut().enumerate() {
                                let v = if size == 0 {
                                    0
                                } else {
                                    extend(((j as u32) >> extra) & ((1 << size) - 1), size)
                                };
                                *slot = (v << 16) | head | eob | (len + size) as i32;
                            }
                        } else {
                            slots.fill(head | 0x80 | len as i32);
                        }
                    }
                }
                code += n;
                k += n;
                maxcode[len as usize] = code - 1;
            }
            if code > (1 << len) {
                return corrupt("bad Huffman table (code space overflow)");
            }
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        Ok(Huffman {
            lut,
            maxcode,
            valoffset,
            vals,
        })
    }
}

/// `HUFF_EXTEND`: the `s`-bit value `v` (1 <= s <= 16) as a signed coefficient.
#[inline(always)]
fn extend(v: u32, s: u32) -> i32 {
    let v = v as i32;
    if v < (1 << (s - 1)) {
        v - (1 << s) + 1
    } else {
        v
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

    /// Fills the bit buffer to at least 57 bits.
    #[inline(always)]
    fn refill(&mut self) -> Res<()> {
        // Fast path: the next 8 bytes hold no 0xFF (so no stuffing and no marker): take as many
        // whole bytes as fit at once.
        if self.marker.is_none()
            && let Some(b) = self.data.get(self.pos..self.pos + 8)
        {
            let w = u64::from_be_bytes(b.try_into().expect("8 bytes"));
            let x = !w; // 0xFF bytes become zero bytes
            if x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 == 0 {
                let n = (64 - self.bits) / 8; // 1..=8 whole bytes
                let take = if n == 8 {
                    w
                } else {
                    w & !(u64::MAX >> (8 * n))
                };
                self.acc |= take >> self.bits;
                self.bits += 8 * n;
                self.pos += n as usize;
                return Ok(());
            }
        }
        self.refill_slow()
    }

    /// `refill` byte by byte: stuffed bytes, markers, end of data.
    #[inline(never)]
    #[cold]
    fn refill_slow(&mut self) -> Res<()> {
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
        Ok(extend(self.get_bits(s)?, s))
    }

    /// One Huffman symbol and its extra bits without the combined lookahead: (run, size, value)
    /// with value = `HUFF_EXTEND` of the `size` extra bits (`size` = the whole symbol for DC
    /// tables).
    #[inline(never)]
    fn symbol_value_slow(&mut self, h: &Huffman, ac: bool) -> Res<(u32, u32, i32)> {
        let sym = self.decode(h)? as u32;
        let (run, size) = if ac { (sym >> 4, sym & 15) } else { (0, sym) };
        Ok((run, size, self.receive_extend(size)?))
    }

    /// Decodes one block's coefficients (`decode_mcu` of `jdhuff.c`), dequantised with `quant`
    /// into `blk` (natural order, all zero on entry); `pred` is the component's DC predictor.
    /// Returns `true` when every AC coefficient is zero. The bit buffer lives in locals here (the
    /// struct is only updated around the rare calls that need it).
    #[inline(never)]
    fn block(
        &mut self,
        dct: &Huffman,
        act: &Huffman,
        pred: &mut i32,
        quant: &[i16; 128],
        blk: &mut [i16; 64],
    ) -> Res<bool> {
        let (mut acc, mut bits) = (self.acc, self.bits);
        let (dc_lut, ac_lut) = (&*dct.lut, &*act.lut);
        // Ensures at least 32 bits (one symbol with its extra bits needs at most 32).
        macro_rules! fill {
            () => {
                if bits < 32 {
                    (self.acc, self.bits) = (acc, bits);
                    self.refill()?;
                    (acc, bits) = (self.acc, self.bits);
                }
            };
        }
        // (run, value, end of block) of the next symbol of `h` (run 15 and value 0 for ZRL).
        macro_rules! symbol {
            ($h:expr, $lut:expr, $ac:expr) => {{
                fill!();
                let e = $lut[(acc >> (64 - FAST_BITS)) as usize];
                let run = ((e >> 12) & 15) as usize;
                if e & 0x80 == 0 && e != 0 {
                    // Code and extra bits in the lookahead.
                    let len = (e & 0x1F) as u32;
                    acc <<= len;
                    bits -= len;
                    (run, e >> 16, e & 0x40 != 0)
                } else if e != 0 {
                    // Code in the lookahead, then 1..=16 extra bits (at least 32 are buffered).
                    // DC sizes go up to 16 (5 bits, the run is 0); AC sizes up to 15.
                    let size = ((e >> 8) & if $ac { 15 } else { 31 }) as u32;
                    let len = (e & 0x1F) as u32;
                    acc <<= len;
                    let v = extend((acc >> (64 - size)) as u32, size);
                    acc <<= size;
                    bits -= len + size;
                    (run, v, false)
                } else {
                    (self.acc, self.bits) = (acc, bits);
                    let (r, s, v) = self.symbol_value_slow($h, $ac)?;
                    (acc, bits) = (self.acc, self.bits);
                    (r as usize, v, $ac && s == 0 && r != 15)
                }
            }};
        }
        let (_, diff, _) = symbol!(dct, dc_lut, false);
        *pred = pred.wrapping_add(diff);
        // JCOEF and ISLOW_MULT_TYPE are 16 bits in libjpeg(-turbo); its SIMD IDCTs dequantise
        // with a 16-bit multiply (low half).
        blk[0] = (*pred as i16).wrapping_mul(quant[0]);
        let mut i = 1usize;
        while i < 64 {
            let (r, v, eob) = symbol!(act, ac_lut, true);
            if eob {
                break;
            }
            // ZRL (run 15, size 0) stores a zero, which leaves the block as it is. `i` stays
            // below 64 + 15 here.
            i += r;
            let z = i & 127;
            blk[(NATURAL_ORDER[z] & 63) as usize] = (v as i16).wrapping_mul(quant[z]);
            i += 1;
        }
        // No symbol but EOB: every AC coefficient is zero.
        let dc_only = i == 1;
        (self.acc, self.bits) = (acc, bits);
        Ok(dc_only)
    }

    /// One Huffman symbol, canonical decoding (`jpeg_huff_decode`; the lookahead table covers
    /// the common short codes).
    fn decode(&mut self, h: &Huffman) -> Res<u8> {
        if self.bits < 16 {
            self.refill()?;
        }
        let top16 = (self.acc >> 48) as i32;
        for len in 1..=16usize {
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
const CONST_BITS: usize = 13;
const PASS1_BITS: usize = 2;
const FIX_0_298631336: i32 = 2446;
const FIX_0_390180644: i32 = 3196;
const FIX_0_541196100: i32 = 4433;
const FIX_0_765366865: i32 = 6270;
const FIX_0_899976223: i32 = 7373;
const FIX_1_175875602: i32 = 9633;
const FIX_1_501321110: i32 = 12299;
const FIX_1_847759065: i32 = 15137;
const FIX_1_961570560: i32 = 16069;
const FIX_2_053119869: i32 = 16819;
const FIX_2_562915447: i32 = 20995;
const FIX_3_072711026: i32 = 25172;

type W = Wrapping<i32>;

/// The post-IDCT range limit of `jdmaster.c` (`prepare_range_limit_table`): the descaled value
/// taken modulo 1024 as a 10-bit signed number, shifted by 128 and clamped to 0..=255.
#[inline(always)]
fn range_limit(v: i32) -> u8 {
    (((v << 22) >> 22) as i16 + 128).clamp(0, 255) as u8
}

/// One 1-D pass of `jpeg_idct_islow` on 8 lanes at once: `inp[k * 8 + l]` is input `k` of lane
/// `l`; returns output `k` of lane `l` at `[l * 8 + k]` (transposed), descaled by `shift` bits
/// with rounding. Written lane-wise over 16-bit inputs so that the compiler vectorises it with
/// 16 x 16 -> 32-bit multiplies (SSE2 `pmaddwd`). The rotations of `jidctint.c`
/// (`z1 = (z2 + z3) * FIX(0.541196100)`, the odd part's `z1`..`z5`) are multiplied out: integer
/// products distribute exactly, so every output is the same sum as in `jidctint.c`, only with
/// each input multiplied by one combined constant (libjpeg-turbo's SIMD versions combine the
/// constants likewise).
#[inline(always)]
fn idct_pass(inp: &[i16; 64], shift: usize) -> [W; 64] {
    const K: i32 = FIX_1_175875602;
    const E: i32 = -FIX_0_899976223;
    const F: i32 = -FIX_2_562915447;
    const G: i32 = -FIX_1_961570560;
    const H: i32 = -FIX_0_390180644;
    let round = Wrapping(1 << (shift - 1));
    let mut out = [Wrapping(0); 64];
    let m = |x: i16, c: i32| Wrapping(x as i32 * c);
    for l in 0..8 {
        let x = |k: usize| inp[k * 8 + l];
        // Even part: z1 = (z2 + z3) * 0.541; tmp2 = z1 - z3 * 1.848; tmp3 = z1 + z2 * 0.765.
        let (z2, z3) = (x(2), x(6));
        let tmp2 = m(z2, FIX_0_541196100) + m(z3, FIX_0_541196100 - FIX_1_847759065);
        let tmp3 = m(z2, FIX_0_541196100 + FIX_0_765366865) + m(z3, FIX_0_541196100);
        let tmp0 = m(x(0), 1 << CONST_BITS) + m(x(4), 1 << CONST_BITS);
        let tmp1 = m(x(0), 1 << CONST_BITS) - m(x(4), 1 << CONST_BITS);
        let tmp10 = tmp0 + tmp3;
        let tmp13 = tmp0 - tmp3;
        let tmp11 = tmp1 + tmp2;
        let tmp12 = tmp1 - tmp2;
        // Odd part on (t0, t1, t2, t3) = (x7, x5, x3, x1): z1 = t0 + t3, z2 = t1 + t2,
        // z3 = t0 + t2, z4 = t1 + t3, z5 = (z3 + z4) * 1.176; o0 = t0 * 0.298 + z1 * -0.900 +
        // z3 * -1.962 + z5, o1 = t1 * 2.053 + z2 * -2.563 + z4 * -0.390 + z5, o2 = t2 * 3.073 +
        // z2 * -2.563 + z3 * -1.962 + z5, o3 = t3 * 1.501 + z1 * -0.900 + z4 * -0.390 + z5.
        let (t0, t1, t2, t3) = (x(7), x(5), x(3), x(1));
        let o0 = m(t0, FIX_0_298631336 + E + G + K) + m(t1, K) + m(t2, G + K) + m(t3, E + K);
        let o1 = m(t0, K) + m(t1, FIX_2_053119869 + F + H + K) + m(t2, F + K) + m(t3, H + K);
        let o2 = m(t0, G + K) + m(t1, F + K) + m(t2, FIX_3_072711026 + F + G + K) + m(t3, K);
        let o3 = m(t0, E + K) + m(t1, H + K) + m(t2, K) + m(t3, FIX_1_501321110 + E + H + K);
        let d = |v: W| (v + round) >> shift;
        // Output k of lane l, transposed.
        let at = |k: usize| l * 8 + k;
        out[at(0)] = d(tmp10 + o3);
        out[at(7)] = d(tmp10 - o3);
        out[at(1)] = d(tmp11 + o2);
        out[at(6)] = d(tmp11 - o2);
        out[at(2)] = d(tmp12 + o1);
        out[at(5)] = d(tmp12 - o1);
        out[at(3)] = d(tmp13 + o0);
        out[at(4)] = d(tmp13 - o0);
    }
    out
}

/// `jpeg_idct_islow` of one block of dequantised coefficients (natural order) into `out`
/// (stride `stride`). Dequantised coefficients and the first pass's outputs are kept in 16 bits,
/// products and sums in 32 bits (all wrapping), like libjpeg-turbo's SIMD versions (which
/// dequantise with a 16-bit multiply too, but saturate the first pass's outputs): for the
/// coefficients of 8-bit images (dequantised within about +-1,100, first-pass outputs within
/// about +-20,000) nothing wraps and the result is `jidctint.c`'s, whose intermediates are
/// 64-bit. Pathological coefficients give some output, never a panic. `dc_only`: every AC
/// coefficient is zero.
#[inline(never)]
fn idct_islow(blk: &[i16; 64], dc_only: bool, out: &mut [u8], stride: usize) {
    let out = &mut out[..7 * stride + 8];
    if dc_only {
        // Both passes' shortcuts for all-zero AC terms (exact: the same rounding).
        let v = range_limit(((blk[0] as i32) * 4 + (1 << (PASS1_BITS + 2))) >> (PASS1_BITS + 3));
        for o in out.chunks_mut(stride) {
            o[..8].fill(v);
        }
        return;
    }
    // Pass 1: columns (lanes = columns), written transposed (column-major) so that the
    // second pass's lanes are rows; kept in 16 bits.
    let ws = idct_pass(blk, CONST_BITS - PASS1_BITS);
    let mut wt = [0i16; 64];
    for (t, &w) in wt.iter_mut().zip(&ws) {
        *t = w.0 as i16;
    }
    // Pass 2: rows (lanes = rows), written transposed back to row-major.
    let res = idct_pass(&wt, CONST_BITS + PASS1_BITS + 3);
    let mut samples = [0u8; 64];
    for (s, &v) in samples.iter_mut().zip(&res) {
        *s = range_limit(v.0);
    }
    for (o, row) in out.chunks_mut(stride).zip(samples.chunks_exact(8)) {
        o[..8].copy_from_slice(row);
    }
}

/// YCbCr -> RGB tables of `jdcolor.c` (`build_ycc_rgb_table`, SCALEBITS = 16), the reference
/// for [`ycc_to_rgb_row`]'s arithmetic.
#[cfg(test)]
struct ColorTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i32; 256],
    cb_g: [i32; 256],
}

#[cfg(test)]
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
    let mut qt: [Option<[i16; 128]>; 4] = [None; 4];
    let mut dc_tables: [Option<Rc<Huffman>>; 4] = [None, None, None, None];
    let mut ac_tables: [Option<Rc<Huffman>>; 4] = [None, None, None, None];
    let mut comps: Vec<Component> = Vec::new();
    let (mut width, mut height) = (0usize, 0usize);
    let (mut hmax, mut vmax) = (1usize, 1usize);
    let mut restart_interval = 0usize;
    let mut jfif = false;
    let mut adobe: Option<u8> = None;
    let mut frame_seen = false;
    let mut scans = 0usize;
    let mut pos = 2usize;
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
                    // Zigzag order (as stored), padded like NATURAL_ORDER.
                    let mut t = [0i16; 128];
                    for (k, slot) in t[..64].iter_mut().enumerate() {
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
                        *slot = v as u16 as i16;
                    }
                    let last = t[63];
                    t[64..].fill(last);
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
                    let h = Huffman::cached(&counts, &seg[p..p + n], tc == 1)?;
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
    qt: &[Option<[i16; 128]>; 4],
    dc_tables: &[Option<Rc<Huffman>>; 4],
    ac_tables: &[Option<Rc<Huffman>>; 4],
    restart_interval: usize,
    (width, height, hmax, vmax): (usize, usize, usize, usize),
) -> Res<usize> {
    let mut br = BitReader::new(data, pos);
    let mut pred = [0i32; 4];
    // Dequantised coefficients of the current block (natural order); zeroed after each block.
    let mut blk = [0i16; 64];
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
                    let dc_only = br.block(dct, act, &mut pred[k], quant, &mut blk)?;
                    let (px, py) = (mx * bh_ + bx, my * bv_ + by);
                    let off = py * 8 * stride + px * 8;
                    idct_islow(&blk, dc_only, &mut c.plane[off..], stride);
                    blk = [0; 64];
                }
            }
        }
    }
    Ok(br.end_position())
}

/// Upsampling (`jdsample.c`) and colour conversion (`jdcolor.c`), one output row at a time.
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
    for c in comps {
        if !hmax.is_multiple_of(c.h) || !vmax.is_multiple_of(c.v) {
            return unsupported("non-integral sampling ratio");
        }
    }
    let rgb = match adobe {
        _ if jfif => false,
        Some(0) => true,
        Some(_) => false,
        None => comps[0].id == b'R' && comps[1].id == b'G' && comps[2].id == b'B',
    };
    let mut ups: Vec<Upsampler> = comps
        .iter()
        .map(|c| Upsampler::new(c, hmax / c.h, vmax / c.v))
        .collect();
    let [u0, u1, u2] = &mut ups[..] else {
        return unsupported("not three components");
    };
    for (y, o) in out.chunks_exact_mut(width * 3).enumerate() {
        let r0 = &u0.row(&comps[0], y)[..width];
        let r1 = &u1.row(&comps[1], y)[..width];
        let r2 = &u2.row(&comps[2], y)[..width];
        if rgb {
            for (px, ((&a, &b), &c)) in o.chunks_exact_mut(3).zip(r0.iter().zip(r1).zip(r2)) {
                px.copy_from_slice(&[a, b, c]);
            }
        } else {
            ycc_to_rgb_row(r0, r1, r2, o);
        }
    }
    Ok(RgbPixels {
        width: width as u32,
        height: height as u32,
        data: out,
    })
}

/// `ycc_rgb_convert` of `jdcolor.c` for one row, computing its tables' entries (16-bit fixed
/// point: `FIX(1.40200) = 91881`, `FIX(1.77200) = 116130`, `FIX(0.71414) = 46802`,
/// `FIX(0.34414) = 22554`, rounding `ONE_HALF`) instead of looking them up.
#[inline]
fn ycc_to_rgb_row(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) {
    const CHUNK: usize = 16;
    #[inline(always)]
    fn chunk(y: &[u8; CHUNK], cb: &[u8; CHUNK], cr: &[u8; CHUNK], out: &mut [u8; 3 * CHUNK]) {
        let mut rgb = [[0u8; CHUNK]; 3];
        for i in 0..CHUNK {
            // The constants above 2^15 split as 91881 = 2^16 + 26345, -46802 = -2^16 + 18734
            // and 116130 = 2^17 - 14942 (exact: the 2^16 multiples pass through the shift),
            // so that every product is 16 x 16 bits.
            let yy = y[i] as i16;
            let b = cb[i] as i16 - 128;
            let r = cr[i] as i16 - 128;
            let m = |x: i16, c: i16| x as i32 * c as i32;
            // (x * c + 2^15) >> 16 of one product as its high half plus bit 15 of its low half
            // (16-bit multiplies).
            let mr =
                |x: i16, c: i16| ((m(x, c) >> 16) as i16) + ((m(x, c) as i16 as u16) >> 15) as i16;
            let rr = r + mr(r, 26345);
            let gg = ((m(b, -22554) + m(r, 18734) + 32768) >> 16) as i16 - r;
            let bb = 2 * b + mr(b, -14942);
            rgb[0][i] = (yy + rr).clamp(0, 255) as u8;
            rgb[1][i] = (yy + gg).clamp(0, 255) as u8;
            rgb[2][i] = (yy + bb).clamp(0, 255) as u8;
        }
        for i in 0..CHUNK {
            out[3 * i] = rgb[0][i];
            out[3 * i + 1] = rgb[1][i];
            out[3 * i + 2] = rgb[2][i];
        }
    }
    let n = y.len();
    let full = n / CHUNK * CHUNK;
    for (((y, cb), cr), o) in y[..full]
        .chunks_exact(CHUNK)
        .zip(cb.chunks_exact(CHUNK))
        .zip(cr.chunks_exact(CHUNK))
        .zip(out.chunks_exact_mut(3 * CHUNK))
    {
        chunk(
            y.try_into().expect("chunk"),
            cb.try_into().expect("chunk"),
            cr.try_into().expect("chunk"),
            o.try_into().expect("chunk"),
        );
    }
    if full < n {
        // The tail through padded copies.
        let rest = n - full;
        let (mut ty, mut tb, mut tr) = ([0u8; CHUNK], [0u8; CHUNK], [0u8; CHUNK]);
        ty[..rest].copy_from_slice(&y[full..]);
        tb[..rest].copy_from_slice(&cb[full..n]);
        tr[..rest].copy_from_slice(&cr[full..n]);
        let mut to = [0u8; 3 * CHUNK];
        chunk(&ty, &tb, &tr, &mut to);
        out[3 * full..3 * n].copy_from_slice(&to[..3 * rest]);
    }
}

/// Produces one component's full-resolution rows (`jdsample.c`).
struct Upsampler {
    hx: usize,
    vy: usize,
    /// The current output row (`dw * hx` samples).
    buf: Vec<u8>,
    /// h2v2: column sums `3 * near + far` of one input row pair.
    colsum: Vec<u16>,
}

impl Upsampler {
    fn new(c: &Component, hx: usize, vy: usize) -> Self {
        let w = c.dw * hx;
        Upsampler {
            hx,
            vy,
            buf: if hx == 1 && vy == 1 {
                Vec::new()
            } else {
                vec![0u8; w]
            },
            colsum: vec![0u16; if hx == 2 && vy == 2 { c.dw } else { 0 }],
        }
    }

    /// Output row `y` (`y < dh * vy`), at least `dw * hx` samples.
    fn row<'a>(&'a mut self, c: &'a Component, y: usize) -> &'a [u8] {
        let stride = c.bw * 8;
        let (dw, dh) = (c.dw, c.dh);
        let row = |y: usize| &c.plane[y * stride..y * stride + dw];
        match (self.hx, self.vy) {
            (1, 1) => return row(y),
            (2, 1) if dw > 2 => h2v1_fancy(row(y), &mut self.buf),
            (1, 2) => {
                // The nearer input row weighs 3, the other 1; upper output rows round with
                // bias 1, lower ones with 2.
                let cy = y / 2;
                let cur = row(cy);
                let (other, bias) = if y.is_multiple_of(2) {
                    (row(cy.saturating_sub(1)), 1u16)
                } else {
                    (row((cy + 1).min(dh - 1)), 2u16)
                };
                for ((o, &a), &b) in self.buf.iter_mut().zip(cur).zip(other) {
                    *o = ((a as u16 * 3 + b as u16 + bias) >> 2) as u8;
                }
            }
            (2, 2) if dw > 2 => {
                let cy = y / 2;
                let near = row(cy);
                let far = if y.is_multiple_of(2) {
                    row(cy.saturating_sub(1))
                } else {
                    row((cy + 1).min(dh - 1))
                };
                h2v2_fancy_row(near, far, &mut self.colsum, &mut self.buf);
            }
            (hx, vy) => {
                // int_upsample: box replication.
                for (o, &v) in self.buf.chunks_exact_mut(hx).zip(row(y / vy)) {
                    o.fill(v);
                }
            }
        }
        &self.buf
    }
}

/// `h2v1_fancy_upsample` for one row (`input.len() > 2`, `out.len() == 2 * input.len()`).
#[inline]
fn h2v1_fancy(input: &[u8], out: &mut [u8]) {
    let n = input.len();
    let out = &mut out[..2 * n];
    let v = input[0] as u16;
    out[0] = v as u8;
    out[1] = ((v * 3 + input[1] as u16 + 2) >> 2) as u8;
    for (o, w) in out[2..2 * n - 2].chunks_exact_mut(2).zip(input.windows(3)) {
        let v = w[1] as u16 * 3;
        o[0] = ((v + w[0] as u16 + 1) >> 2) as u8;
        o[1] = ((v + w[2] as u16 + 2) >> 2) as u8;
    }
    let v = input[n - 1] as u16;
    out[2 * n - 2] = ((v * 3 + input[n - 2] as u16 + 1) >> 2) as u8;
    out[2 * n - 1] = v as u8;
}

/// One output row of `h2v2_fancy_upsample`: `near` is the nearest input row, `far` the next
/// nearest (above for the upper output row, below for the lower one); `near.len() > 2`,
/// `colsum.len() == near.len()`, `out.len() == 2 * near.len()`.
#[inline]
fn h2v2_fancy_row(near: &[u8], far: &[u8], colsum: &mut [u16], out: &mut [u8]) {
    let n = near.len();
    for ((s, &a), &b) in colsum.iter_mut().zip(near).zip(far) {
        *s = a as u16 * 3 + b as u16;
    }
    let col = &colsum[..n];
    let out = &mut out[..2 * n];
    out[0] = ((col[0] * 4 + 8) >> 4) as u8;
    out[1] = ((col[0] * 3 + col[1] + 7) >> 4) as u8;
    for (o, w) in out[2..2 * n - 2].chunks_exact_mut(2).zip(col.windows(3)) {
        let v = w[1] * 3;
        o[0] = ((v + w[0] + 8) >> 4) as u8;
        o[1] = ((v + w[2] + 7) >> 4) as u8;
    }
    out[2 * n - 2] = ((col[n - 1] * 3 + col[n - 2] + 8) >> 4) as u8;
    out[2 * n - 1] = ((col[n - 1] * 4 + 7) >> 4) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_limit_matches_libjpeg_table() {
        // prepare_range_limit_table, indexed by the descaled value & 1023.
        let t = |j: i32| range_limit(j);
        assert_eq!(t(0), 128);
        assert_eq!(t(127), 255);
        assert_eq!(t(128), 255);
        assert_eq!(t(511), 255);
        assert_eq!(t(512), 0);
        assert_eq!(t(895), 0);
        assert_eq!(t(896), 0);
        assert_eq!(t(1023), 127);
        assert_eq!(t(-1), 127);
        assert_eq!(t(1024 + 5), 133);
    }

    #[test]
    fn ycc_arithmetic_matches_jdcolor_tables() {
        let t = ColorTables::new();
        let cb: Vec<u8> = (0..=255u8).collect();
        for y in [0u8, 1, 77, 128, 200, 254, 255] {
            let yy = vec![y; 256];
            let mut out = vec![0u8; 256 * 3];
            for cr in 0..=255u8 {
                ycc_to_rgb_row(&yy, &cb, &vec![cr; 256], &mut out);
                for (b, px) in out.chunks_exact(3).enumerate() {
                    let (y, cr) = (y as i32, cr as usize);
                    let want = [
                        (y + t.cr_r[cr]).clamp(0, 255) as u8,
                        (y + ((t.cb_g[b] + t.cr_g[cr]) >> 16)).clamp(0, 255) as u8,
                        (y + t.cb_b[b]).clamp(0, 255) as u8,
                    ];
                    assert_eq!(px, want, "y {y} cb {b} cr {cr}");
                }
            }
        }
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
