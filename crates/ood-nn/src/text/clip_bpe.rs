//! CLIP's byte-level BPE tokenizer (Radford et al., "Learning Transferable Visual Models From
//! Natural Language Supervision", <https://arxiv.org/abs/2103.00020>), as in OpenAI's
//! `clip/simple_tokenizer.py` and open_clip's `SimpleTokenizer` (`clean="lower"`, context 77).
//!
//! * vocabulary: the 256 byte symbols of `bytes_to_unicode`, the same with `</w>`, the 48,894
//!   merges of `bpe_simple_vocab_16e6.txt.gz` (lines 1..=48894), then `<start_of_text>` (49406)
//!   and `<end_of_text>` (49407): 49,408 ids;
//! * cleaning: `html.unescape` twice (the full HTML5 entity table of Python, numeric references
//!   with the same replacement rules), strip, collapse whitespace (Python's `str.split`), lower-case;
//! * pre-tokenisation: the regex `<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|
//!   [\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+` (case-insensitive), each piece as UTF-8 bytes mapped to
//!   their byte symbols, the last symbol with `</w>`, then greedy lowest-rank pair merging;
//! * `tokenize`: `[SOT] + ids + [EOT]`, truncated to the context length with the last id forced to
//!   EOT, zero-padded.
//!
//! **Difference from the reference:** open_clip first runs `ftfy.fix_text` (mojibake repair,
//! curly quotes to straight, NFC, ligatures, full-width forms, ...). ftfy is not reimplemented
//! here, so text that ftfy would change tokenises differently; text that ftfy leaves alone (plain
//! NFC text without mojibake, curly quotes, ligatures or full-width characters, which covers class
//! names and prompt templates) gives identical ids. Checked against open_clip 3.3.0 on a fixture
//! of strings with punctuation, numbers, contractions, HTML entities and non-Latin scripts
//! (`tests/data/clip_bpe_fixture.json`, generator `scripts/gen_clip_bpe_fixture.py`).

use crate::{Error, Result};
use ndarray::Array2;
use regex::Regex;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

/// Context length of every CLIP text tower.
pub const CONTEXT_LENGTH: usize = 77;
/// Number of merges used from the vocabulary file (`49152 - 256 - 2`).
pub const NUM_MERGES: usize = 48_894;
/// Id of `<start_of_text>`.
pub const SOT: u32 = 49_406;
/// Id of `<end_of_text>`.
pub const EOT: u32 = 49_407;

/// The CLIP tokenizer.
pub struct ClipTokenizer {
    encoder: HashMap<String, u32>,
    /// Rank of a merge, keyed by `"first second"` (symbols never contain a space).
    ranks: HashMap<String, u32>,
    byte_encoder: [char; 256],
    pattern: Regex,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.encoder.len())
            .finish_non_exhaustive()
    }
}

/// The bytes that `bytes_to_unicode` maps to themselves.
fn is_printable_byte(b: u32) -> bool {
    (u32::from(b'!')..=u32::from(b'~')).contains(&b)
        || (0xA1..=0xAC).contains(&b)
        || (0xAE..=0xFF).contains(&b)
}

/// GPT-2/CLIP `bytes_to_unicode`: printable bytes map to themselves, the others to U+0100.. .
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let c = if is_printable_byte(b) {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
    }
    table
}

impl ClipTokenizer {
    /// Reads `bpe_simple_vocab_16e6.txt.gz` (gzip) or its decompressed text.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut s = String::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_string(&mut s)
                .map_err(|e| Error::Data {
                    path: path.to_path_buf(),
                    reason: format!("cannot decompress: {e}"),
                })?;
            s
        } else {
            String::from_utf8(raw).map_err(|e| Error::Data {
                path: path.to_path_buf(),
                reason: format!("not UTF-8: {e}"),
            })?
        };
        Self::from_merges(&text).map_err(|reason| Error::Data {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Builds the tokenizer from the text of the merges file (a header line, then one
    /// `first second` merge per line).
    pub fn from_merges(text: &str) -> std::result::Result<Self, String> {
        let lines: Vec<&str> = text.split('\n').skip(1).take(NUM_MERGES).collect();
        if lines.len() != NUM_MERGES {
            return Err(format!(
                "expected {NUM_MERGES} merges after the header line, found {} lines",
                lines.len()
            ));
        }
        let merges: Vec<(&str, &str)> = lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let mut it = line.split_whitespace();
                match (it.next(), it.next(), it.next()) {
                    (Some(a), Some(b), None) => Ok((a, b)),
                    _ => Err(format!(
                        "merge line {} is not `first second`: {line:?}",
                        i + 2
                    )),
                }
            })
            .collect::<std::result::Result<_, _>>()?;
        let byte_encoder = bytes_to_unicode();
        // Python's `list(bytes_to_unicode().values())`: the printable bytes first, then the rest.
        let order: Vec<char> = (0..256usize)
            .filter(|&b| is_printable_byte(b as u32))
            .chain((0..256usize).filter(|&b| !is_printable_byte(b as u32)))
            .map(|b| byte_encoder[b])
            .collect();
        let mut vocab: Vec<String> = order.iter().map(|c| c.to_string()).collect();
        vocab.extend(order.iter().map(|c| format!("{c}</w>")));
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push("<start_of_text>".into());
        vocab.push("<end_of_text>".into());
        let encoder: HashMap<String, u32> = vocab
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, i as u32))
            .collect();
        let ranks = merges
            .iter()
            .enumerate()
            .map(|(i, (a, b))| (format!("{a} {b}"), i as u32))
            .collect();
        let pattern = Regex::new(
            r"(?i)<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        )
        .map_err(|e| format!("pre-tokenizer regex: {e}"))?;
        Ok(ClipTokenizer {
            encoder,
            ranks,
            byte_encoder,
            pattern,
        })
    }

    /// Number of ids (49,408).
    pub fn vocab_size(&self) -> usize {
        self.encoder.len()
    }

    /// open_clip's `clean="lower"` without ftfy: HTML unescape twice, strip, collapse whitespace,
    /// lower-case.
    pub fn clean(text: &str) -> String {
        let text = html_unescape(&html_unescape(text));
        let words: Vec<&str> = text.split(py_isspace).filter(|w| !w.is_empty()).collect();
        words.join(" ").to_lowercase()
    }

    fn bpe(&self, token: &str, out: &mut Vec<u32>) {
        if token == "<start_of_text>" || token == "<end_of_text>" {
            out.push(if token == "<start_of_text>" { SOT } else { EOT });
            return;
        }
        let chars: Vec<char> = token.chars().collect();
        let mut word: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        } else {
            return;
        }
        loop {
            if word.len() < 2 {
                break;
            }
            let best = word
                .windows(2)
                .filter_map(|p| {
                    self.ranks
                        .get(&format!("{} {}", p[0], p[1]))
                        .map(|&r| (r, p))
                })
                .min_by_key(|(r, _)| *r);
            let Some((_, pair)) = best else { break };
            let (first, second) = (pair[0].clone(), pair[1].clone());
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut word[i]));
                    i += 1;
                }
            }
            word = merged;
        }
        // Every symbol is a byte symbol (with or without `</w>`) or a merge result: in the vocab.
        out.extend(word.iter().filter_map(|s| self.encoder.get(s).copied()));
    }

    /// Token ids of `text` without `<start_of_text>` / `<end_of_text>` (open_clip's `encode`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = Self::clean(text);
        let mut ids = Vec::new();
        for m in self.pattern.find_iter(&cleaned) {
            let piece = m.as_str();
            let mapped: String = if piece == "<start_of_text>" || piece == "<end_of_text>" {
                piece.to_string()
            } else {
                piece
                    .bytes()
                    .map(|b| self.byte_encoder[b as usize])
                    .collect()
            };
            self.bpe(&mapped, &mut ids);
        }
        ids
    }

    /// `[SOT] + encode(text) + [EOT]`, truncated to `context_length` (last id forced to EOT) and
    /// zero-padded: open_clip's `tokenize` for one string.
    pub fn tokenize(&self, text: &str, context_length: usize) -> Result<Vec<i64>> {
        if context_length < 2 {
            return Err(Error::Config(format!(
                "context length must be at least 2, got {context_length}"
            )));
        }
        let mut ids: Vec<i64> = Vec::with_capacity(context_length);
        ids.push(i64::from(SOT));
        ids.extend(self.encode(text).into_iter().map(i64::from));
        ids.push(i64::from(EOT));
        if ids.len() > context_length {
            ids.truncate(context_length);
            ids[context_length - 1] = i64::from(EOT);
        }
        ids.resize(context_length, 0);
        Ok(ids)
    }

    /// [`ClipTokenizer::tokenize`] for many strings: `(n, context_length)` ids.
    pub fn tokenize_batch(&self, texts: &[&str], context_length: usize) -> Result<Array2<i64>> {
        let mut flat = Vec::with_capacity(texts.len() * context_length);
        for t in texts {
            flat.extend(self.tokenize(t, context_length)?);
        }
        Array2::from_shape_vec((texts.len(), context_length), flat)
            .map_err(|e| Error::Config(format!("token buffer has the wrong size: {e}")))
    }
}

/// Python's `str.isspace` (Unicode White_Space plus the separators U+001C..U+001F).
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn html5_entities() -> &'static HashMap<&'static str, String> {
    static TABLE: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        include_str!("data/html5_entities.tsv")
            .lines()
            .filter_map(|line| {
                let (name, hex) = line.split_once('\t')?;
                let value: String = hex
                    .split(' ')
                    .filter_map(|h| u32::from_str_radix(h, 16).ok().and_then(char::from_u32))
                    .collect();
                Some((name, value))
            })
            .collect()
    })
}

/// The replacement of numeric character reference `num` (Python's `html._replace_charref`).
fn numeric_charref(num: Option<u32>) -> String {
    let Some(num) = num else {
        return "\u{FFFD}".into(); // larger than any code point
    };
    const WINDOWS_1252: [u32; 32] = [
        0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x8D, 0x017D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013,
        0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
    ];
    let c = match num {
        0x00 => 0xFFFD,
        0x0D => 0x0D,
        0x80..=0x9F => WINDOWS_1252[(num - 0x80) as usize],
        0xD800..=0xDFFF => 0xFFFD,
        n if n > 0x10FFFF => 0xFFFD,
        0x01..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0xFDD0..=0xFDEF => return String::new(),
        n if (n & 0xFFFE) == 0xFFFE => return String::new(),
        n => n,
    };
    char::from_u32(c).map(String::from).unwrap_or_default()
}

/// Python's `html.unescape`: HTML5 named references (longest legacy prefix rule included) and
/// numeric references.
pub fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let table = html5_entities();
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let consumed = if let Some(num) = after.strip_prefix('#') {
            let (hex, digits_src) = match num.strip_prefix(['x', 'X']) {
                Some(h) => (true, h),
                None => (false, num),
            };
            let len = digits_src
                .char_indices()
                .take_while(|(_, c)| {
                    if hex {
                        c.is_ascii_hexdigit()
                    } else {
                        c.is_ascii_digit()
                    }
                })
                .count();
            if len == 0 {
                None
            } else {
                let digits = &digits_src[..len];
                let value = u32::from_str_radix(digits, if hex { 16 } else { 10 }).ok();
                out.push_str(&numeric_charref(value));
                let prefix = 1 + usize::from(hex) + len; // '#', 'x', digits
                let semi = usize::from(digits_src[len..].starts_with(';'));
                Some(prefix + semi)
            }
        } else {
            // `[^\t\n\f <&#;]{1,32};?`
            let name: String = after
                .chars()
                .take_while(|c| !matches!(c, '\t' | '\n' | '\u{c}' | ' ' | '<' | '&' | '#' | ';'))
                .take(32)
                .collect();
            if name.is_empty() {
                None
            } else {
                let semi = after[name.len()..].starts_with(';');
                let full = if semi {
                    format!("{name};")
                } else {
                    name.clone()
                };
                if let Some(v) = table.get(full.as_str()) {
                    out.push_str(v);
                } else {
                    let chars: Vec<(usize, char)> = full.char_indices().collect();
                    let hit = (2..chars.len())
                        .rev()
                        .map(|x| chars[x].0)
                        .find_map(|end| table.get(&full[..end]).map(|v| (end, v)));
                    match hit {
                        Some((end, v)) => {
                            out.push_str(v);
                            out.push_str(&full[end..]);
                        }
                        None => {
                            out.push('&');
                            out.push_str(&full);
                        }
                    }
                }
                Some(full.len())
            }
        };
        match consumed {
            Some(n) => rest = &after[n..],
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_matches_python_rules() {
        // Values from Python 3.11 `html.unescape`.
        assert_eq!(html_unescape("a &amp; b"), "a & b");
        assert_eq!(html_unescape("&amp;amp;"), "&amp;");
        assert_eq!(html_unescape("&ampfoo"), "&foo");
        assert_eq!(html_unescape("&notit;"), "\u{ac}it;");
        assert_eq!(html_unescape("&#65;&#x42;&#X43"), "ABC");
        assert_eq!(html_unescape("&#128;&#0;&#1;"), "\u{20ac}\u{fffd}");
        assert_eq!(html_unescape("&#99999999999;"), "\u{fffd}");
        assert_eq!(html_unescape("&# &x; &;"), "&# &x; &;");
        assert_eq!(
            html_unescape("&hellip;&eacute;&nbsp"),
            "\u{2026}\u{e9}\u{a0}"
        );
        assert_eq!(html_unescape("&zzzz;"), "&zzzz;");
    }

    #[test]
    fn byte_table_is_a_bijection() {
        let t = bytes_to_unicode();
        let mut seen: Vec<char> = t.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[b' ' as usize], '\u{120}');
    }
}
