//! NegLabel's negative-label mining (spec `posthoc-and-metrics.md` section 7.2–7.3), without any
//! text encoder: the WordNet 3.0 reader, the candidate list, the prompt templates, the
//! per-candidate η-quantile similarity to the ID labels and the per-part-of-speech selection.
//! The caller embeds the prompts (MiniLM, CLIP, ...) and hands the unit vectors back.
//!
//! * **Candidates** — every lemma of every synset of the 24 noun lexical files
//!   ([`NOUN_LEXFILES`]; `noun.animal` and `noun.food` are absent, as in the reference) and the 3
//!   adjective files ([`ADJ_LEXFILES`]), read from the WordNet database files `data.noun` /
//!   `data.adj` (Debian `wordnet-base`, `/usr/share/wordnet`) through each synset's `lex_filenum`.
//!   `_` becomes a space and the adjective syntactic markers `(a)`, `(p)`, `(ip)` are removed.
//!   Files are visited in sorted name order (the reference uses `os.listdir` order, which depends
//!   on the file system), synsets in file order, lemmas in synset order; the **first** occurrence
//!   of a string wins globally and its file decides noun vs adjective.
//! * **Prompts** — ID labels and nouns: `"the nice {}"` (prompt 85); adjectives:
//!   `"This is a {} photo"`.
//! * **Score** — `q_j` = the η-quantile (η = 0.95, numpy/torch linear interpolation) of the
//!   cosines between candidate `j` and all ID-label embeddings.
//! * **Selection** — per part of speech, sort by `q` ascending (stable: ties keep candidate
//!   order) and keep the first `floor(fraction · N_pos)` (fraction 0.15); the result lists the
//!   selected nouns, then the selected adjectives, each by ascending `q` (the order
//!   [`crate::detectors::NegLabel`] expects).
//!
//! Deterministic: no randomness anywhere.

use crate::error::{Error, Result};
use crate::linalg::matmul_transb;
use ndarray::{ArrayView2, Axis, s};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The 24 noun lexicographer files of NegLabel's corpus.
pub const NOUN_LEXFILES: [&str; 24] = [
    "noun.Tops",
    "noun.act",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
];

/// The 3 adjective lexicographer files of NegLabel's corpus.
pub const ADJ_LEXFILES: [&str; 3] = ["adj.all", "adj.pert", "adj.ppl"];

/// WordNet 3.0's `lexnames`: lexicographer file number → name (`lex_filenum` in data files).
pub const LEXNAMES: [&str; 45] = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
];

/// The part of speech of a candidate (from its lexical file's prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartOfSpeech {
    /// `noun.*` files.
    Noun,
    /// `adj.*` files.
    Adjective,
}

impl PartOfSpeech {
    /// `"noun"` or `"adj"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PartOfSpeech::Noun => "noun",
            PartOfSpeech::Adjective => "adj",
        }
    }

    /// The candidate prompt: `"the nice {w}"` for nouns, `"This is a {w} photo"` for adjectives.
    pub fn prompt(self, word: &str) -> String {
        match self {
            PartOfSpeech::Noun => format!("the nice {word}"),
            PartOfSpeech::Adjective => format!("This is a {word} photo"),
        }
    }
}

/// The ID-label prompt (`"the nice {label}"`, the reference's prompt 85).
pub fn id_prompt(label: &str) -> String {
    format!("the nice {label}")
}

/// One candidate negative label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The word or phrase (spaces, no markers).
    pub word: String,
    /// Noun or adjective.
    pub pos: PartOfSpeech,
    /// The lexical file of its first occurrence (e.g. `noun.artifact`).
    pub lexfile: &'static str,
}

/// The lemmas of every synset of a WordNet `data.noun` / `data.adj` file, grouped by lexical file
/// number (0..=44), in file order, cleaned (`_` → space, adjective markers removed), not
/// de-duplicated. Errors name the file and line.
pub fn read_data_file(path: impl AsRef<Path>) -> Result<Vec<Vec<String>>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    // WordNet 3.0 data files are ASCII apart from a few Latin-1 bytes in glosses.
    let text: String = bytes.iter().map(|&b| b as char).collect();
    let mut by_file: Vec<Vec<String>> = vec![Vec::new(); LEXNAMES.len()];
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("  ") || line.is_empty() {
            continue; // licence header
        }
        let bad = |what: &str| Error::format(path, format!("line {}: {what}", i + 1));
        let mut f = line.split(' ');
        let _offset = f.next();
        let lex: usize = f
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("bad lex_filenum"))?;
        if lex >= LEXNAMES.len() {
            return Err(bad(&format!("lex_filenum {lex} out of range")));
        }
        let _ss_type = f.next().ok_or_else(|| bad("missing ss_type"))?;
        let n = f
            .next()
            .and_then(|v| usize::from_str_radix(v, 16).ok())
            .ok_or_else(|| bad("bad w_cnt"))?;
        for _ in 0..n {
            let w = f.next().ok_or_else(|| bad("truncated word list"))?;
            f.next().ok_or_else(|| bad("missing lex_id"))?;
            by_file[lex].push(clean_lemma(w));
        }
    }
    Ok(by_file)
}

fn clean_lemma(w: &str) -> String {
    let w = ["(a)", "(p)", "(ip)"]
        .iter()
        .find_map(|m| w.strip_suffix(m))
        .unwrap_or(w);
    w.replace('_', " ")
}

/// Lines per lexical file of NegLabel's corpus (every lemma, duplicates within a file included),
/// keyed by file name, from `dir/data.noun` and `dir/data.adj`.
pub fn read_lexfiles(dir: impl AsRef<Path>) -> Result<Vec<(&'static str, Vec<String>)>> {
    let dir = dir.as_ref();
    let nouns = read_data_file(dir.join("data.noun"))?;
    let adjs = read_data_file(dir.join("data.adj"))?;
    let mut out = Vec::new();
    for (num, name) in LEXNAMES.iter().enumerate() {
        let words = if NOUN_LEXFILES.contains(name) {
            &nouns[num]
        } else if ADJ_LEXFILES.contains(name) {
            &adjs[num]
        } else {
            continue;
        };
        if words.is_empty() {
            return Err(Error::format(
                dir,
                format!("lexical file {name} has no synsets in data.noun/data.adj"),
            ));
        }
        out.push((*name, words.clone()));
    }
    out.sort_by(|a, b| a.0.cmp(b.0));
    Ok(out)
}

/// NegLabel's candidate list from a WordNet 3.0 database folder (see the module doc for the order
/// and de-duplication rule).
pub fn wordnet_candidates(dir: impl AsRef<Path>) -> Result<Vec<Candidate>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (name, words) in read_lexfiles(dir)? {
        let pos = if name.starts_with("noun") {
            PartOfSpeech::Noun
        } else {
            PartOfSpeech::Adjective
        };
        for w in words {
            let w = w.trim().to_string();
            if !w.is_empty() && seen.insert(w.clone()) {
                out.push(Candidate {
                    word: w,
                    pos,
                    lexfile: name,
                });
            }
        }
    }
    Ok(out)
}

/// numpy's default (linear) quantile of **sorted** values.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    assert!(n > 0, "quantile of an empty set");
    let pos = q * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let frac = pos - lo as f64;
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

/// `q_j`: the `percentile` quantile of the cosines between each candidate row and all ID rows.
/// Rows are L2-normalised here (a zero row gives cosines 0). Computed in blocks of rows.
pub fn candidate_quantiles(
    candidates: ArrayView2<'_, f32>,
    id_labels: ArrayView2<'_, f32>,
    percentile: f64,
) -> Result<Vec<f64>> {
    if candidates.ncols() != id_labels.ncols() {
        return Err(Error::dim(
            "candidate embedding dimension",
            id_labels.ncols(),
            candidates.ncols(),
        ));
    }
    if id_labels.nrows() == 0 {
        return Err(Error::InvalidParameter("no ID labels".into()));
    }
    if !(0.0..=1.0).contains(&percentile) {
        return Err(Error::InvalidParameter(format!(
            "percentile must lie in [0, 1], got {percentile}"
        )));
    }
    let norm = |m: ArrayView2<'_, f32>| {
        let mut m = m.to_owned();
        for mut r in m.axis_iter_mut(Axis(0)) {
            let n = r.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            let n = n.max(1e-12) as f32;
            r.mapv_inplace(|v| v / n);
        }
        m
    };
    let ids = norm(id_labels);
    const BLOCK: usize = 2048;
    let starts: Vec<usize> = (0..candidates.nrows()).step_by(BLOCK).collect();
    let parts: Vec<Vec<f64>> = starts
        .par_iter()
        .map(|&a| {
            let b = (a + BLOCK).min(candidates.nrows());
            let c = norm(candidates.slice(s![a..b, ..]));
            let sims = matmul_transb(c.view(), ids.view());
            sims.axis_iter(Axis(0))
                .map(|row| {
                    let mut v: Vec<f64> = row.iter().map(|&x| f64::from(x)).collect();
                    v.sort_by(f64::total_cmp);
                    quantile_sorted(&v, percentile)
                })
                .collect()
        })
        .collect();
    Ok(parts.concat())
}

/// Indices of the selected negatives: per part of speech (nouns first, then adjectives), sorted
/// by `q` ascending (stable), the first `floor(fraction · N_pos)`.
pub fn select(pos: &[PartOfSpeech], q: &[f64], fraction: f64) -> Result<Vec<usize>> {
    if pos.len() != q.len() {
        return Err(Error::dim("quantile count", pos.len(), q.len()));
    }
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::InvalidParameter(format!(
            "fraction must lie in [0, 1], got {fraction}"
        )));
    }
    if let Some(i) = q.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidParameter(format!(
            "candidate {i} has a non-finite similarity quantile"
        )));
    }
    let mut out = Vec::new();
    for want in [PartOfSpeech::Noun, PartOfSpeech::Adjective] {
        let mut idx: Vec<usize> = (0..pos.len()).filter(|&i| pos[i] == want).collect();
        let keep = (fraction * idx.len() as f64).floor() as usize;
        idx.sort_by(|&a, &b| q[a].total_cmp(&q[b]));
        out.extend_from_slice(&idx[..keep]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn quantile_matches_numpy_linear() {
        // np.quantile([1, 2, 3, 4, 10], 0.95) = 8.8; np.quantile([0, 1], 0.95) = 0.95
        assert!((quantile_sorted(&[1.0, 2.0, 3.0, 4.0, 10.0], 0.95) - 8.8).abs() < 1e-12);
        assert!((quantile_sorted(&[0.0, 1.0], 0.95) - 0.95).abs() < 1e-12);
        assert_eq!(quantile_sorted(&[3.0], 0.95), 3.0);
    }

    #[test]
    fn selection_is_per_pos_ascending_and_stable() {
        use PartOfSpeech::*;
        let pos = [
            Noun, Adjective, Noun, Noun, Adjective, Noun, Noun, Adjective,
        ];
        let q = [0.5, 0.1, 0.2, 0.2, 0.05, 0.9, 0.1, 0.3];
        // nouns: 5 -> floor(0.5*5)=2: idx 6 (0.1), then 2 (0.2, before 3); adjs: 3 -> 1: idx 4.
        assert_eq!(select(&pos, &q, 0.5).unwrap(), vec![6, 2, 4]);
        assert!(select(&pos, &q[..3], 0.5).is_err());
    }

    #[test]
    fn quantiles_of_known_cosines() {
        // Candidate [1,0] vs ids at 0°, 90°, 180° → cosines [1, 0, -1] → q(0.5) = 0.
        let ids = array![[2.0f32, 0.0], [0.0, 3.0], [-1.0, 0.0]];
        let c = array![[5.0f32, 0.0], [0.0, 1.0]];
        let q = candidate_quantiles(c.view(), ids.view(), 0.5).unwrap();
        assert!(q[0].abs() < 1e-7 && q[1].abs() < 1e-7);
        let q = candidate_quantiles(c.view(), ids.view(), 1.0).unwrap();
        assert!((q[0] - 1.0).abs() < 1e-6 && (q[1] - 1.0).abs() < 1e-6);
        let q = candidate_quantiles(c.view(), ids.view(), 0.0).unwrap();
        assert!((q[0] + 1.0).abs() < 1e-6 && q[1].abs() < 1e-6);
    }

    #[test]
    fn lemma_cleaning() {
        assert_eq!(clean_lemma("long(a)"), "long");
        assert_eq!(clean_lemma("galore(ip)"), "galore");
        assert_eq!(clean_lemma("ice_cream"), "ice cream");
    }
}
