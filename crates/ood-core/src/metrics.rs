//! Exact OOD evaluation metrics: AUROC, FPR@95, AUPR-In and AUPR-Out under named conventions.
//!
//! Inputs are two slices of scores, **ID scores and OOD scores, higher = more in-distribution**.
//! There is no label vector and no `-1` convention. All counting is exact integer arithmetic;
//! rates and areas are accumulated in `f64`. Every convention works on one sort-based core,
//! [`RankedScores`]: the pooled scores sorted once (`O(n log n)`) and grouped into blocks of equal
//! value (ties), each block holding how many ID and how many OOD samples carry that value. `-0.0`
//! and `+0.0` are the same value (as in NumPy). NaN or infinite scores are an error
//! ([`Error::NonFinite`], naming "id scores" or "ood scores"), as is an empty set
//! ([`Error::TooFewSamples`]).
//!
//! # AUROC (the same number in every convention)
//!
//! The tie-aware Mann–Whitney statistic
//! `AUROC = (1 / (N_id N_ood)) · Σ_{i∈ID} Σ_{j∈OOD} (1[s_i > s_j] + ½ · 1[s_i = s_j])`,
//! computed exactly (integer numerator) and divided once. It equals the trapezoidal area under
//! scikit-learn's `roc_curve` with either class positive. Constant scores give 0.5.
//!
//! # Conventions ([`Convention`])
//!
//! FPR@95 and AUPR differ between code bases; the numbers are **not comparable across
//! conventions**, so every [`Metrics`] carries its convention. All thresholds below are the
//! distinct score values ("blocks"); a threshold never splits a block of tied scores.
//!
//! * **`openood`** (default; OpenOOD v1.5 `compute_all_metrics` since 2023-08-10, **OOD is the
//!   positive class**, score `t = −s`). Visit the blocks by ascending `s`; after block `m` let
//!   `TP_m = #{OOD with s ≤ c_m}`, `FP_m = #{ID with s ≤ c_m}`. scikit-learn's
//!   `drop_intermediate` step is applied (only when there are more than 2 blocks): point `m` is
//!   dropped unless it is the first or the last, or one of the second differences
//!   `FP_{m+1} − 2FP_m + FP_{m−1}`, `TP_{m+1} − 2TP_m + TP_{m−1}` is non-zero (i.e. a point is
//!   dropped when block `m` and block `m+1` hold exactly the same numbers of ID and OOD samples).
//!   **FPR@95** is `FP/N_id` at the first kept point with `TP/N_ood ≥ 0.95` (f64 test, as
//!   OpenOOD): the fraction of ID samples flagged as OOD when 95% of OOD is caught. The drop step
//!   can move the answer to a later point (spec vector C: 0.20, not 0.15); this is what OpenOOD
//!   prints. **AUPR-In** is the trapezoidal area under the precision–recall curve with ID positive
//!   and score `s`; **AUPR-Out** the same with OOD positive and score `−s`. The PR curve visits
//!   the blocks from the highest positive-score down, `precision = TP/(TP+FP)`,
//!   `recall = TP/N_pos`, starts at `(recall 0, precision 1)` and integrates precision over recall
//!   with the trapezoid rule (`precision_recall_curve` + `auc`; this is **not** average precision).
//! * **`classic`** ("classic exact", **ID positive**, no drop step). Visit the blocks by
//!   descending `s`; **FPR@95** is the fraction of OOD samples scored at or above the first
//!   threshold whose ID-TPR `TP/N_id ≥ 0.95`: the fraction of OOD accepted when 95% of ID is kept.
//!   AUPR-In/Out are the same trapezoids as `openood`.
//! * **`hendrycks`** (`fpr_and_fdr_at_recall` + `average_precision_score` as in Outlier
//!   Exposure, MCM, NegLabel; **ID positive**). Blocks by descending `s`, cumulative `tps`, `fps`
//!   and `recall = tps/N_id`; keep the points up to the first with full recall, reverse them and
//!   append the quirk point `(recall 1, fps 0)`; the cut-off is the **first** minimiser of
//!   `|recall − 0.95|` in that reversed order (so among equally close points the one with the
//!   lowest threshold, the largest `fps`, wins). **FPR@95** `= fps[cutoff] / N_ood`.
//!   **AUPR-In** is average precision `Σ (R_m − R_{m−1}) P_m` with ID positive and score `s`,
//!   **AUPR-Out** the same with OOD positive and score `−s`.
//! * **`knn`** (KNN-OOD `util/metrics.py`, `cal_metric`; **ID positive**). Threshold
//!   `τ = ID_sorted_ascending[round(0.05 · N_id)]` with Python's round-half-to-even on the f64
//!   product (`N_id = 10` gives index 0). **FPR@95** `= #{OOD : s > τ} / N_ood`, a **strict**
//!   inequality: OOD tied with `τ` counts as rejected. **AUPR-In** ("AUIN") is the trapezoid over
//!   the hand-built curve that starts at `(recall 1, precision 0.5)`, visits the states "all
//!   samples with `s ≥ c`" for every block value `c` in ascending order (skipping the empty state),
//!   and ends at `(recall 0, precision 0)`. **AUPR-Out** ("AUOUT") is the mirror: over
//!   `x = 1 − FPR` from `(0, 0)` through the OOD-precision of the rejected sets to `(1, 0.5)`.
//!   Both come out lower than the scikit-learn trapezoid (vector F gives 0.9, not 1.0).
//!
//! Lower-level pieces: [`fpr95`] with an [`FprRule`] (adds `OpenoodNoDrop`, the OpenOOD rule
//! without the drop step, and `OpenoodLegacy`), [`aupr`] with an [`AuprKind`], and
//! [`roc_curve`] (ID-positive ROC points for plots).
//!
//! # OpenOOD history caveat
//!
//! OpenOOD changed its metric semantics twice (git log of `openood/evaluators/metrics.py`):
//! up to 2023-08-10 FPR@95 was ID-positive ([`FprRule::OpenoodLegacy`]: the OOD fraction at the
//! first kept point with ID-TPR ≥ 0.95, drop step applied); from 2023-08-10 it is OOD-positive
//! (`openood` above); between 2023-08-10 and 2023-12-18 the AUPR-In and AUPR-Out columns were
//! swapped. AUROC never changed. Published OpenOOD FPR@95 numbers (including the v1.5 report of
//! June 2023) may follow either definition depending on their date: compare on AUROC, or state
//! the FPR definition.

use crate::error::{Error, Result};
use rayon::slice::ParallelSliceMut;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which code base's definitions of FPR@95 and AUPR to follow (AUROC is the same in all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Convention {
    /// OpenOOD v1.5 since 2023-08: OOD positive, FPR with scikit-learn's drop step, trapezoid AUPR.
    #[default]
    Openood,
    /// Classic exact: ID positive, no drop step, trapezoid AUPR.
    Classic,
    /// Hendrycks `fpr_and_fdr_at_recall` (argmin rule), average precision for AUPR-In/Out.
    Hendrycks,
    /// KNN-OOD `cal_metric`: strict `>` against a round-half-even ID quantile, own AUIN/AUOUT.
    Knn,
}

impl Convention {
    /// Every convention, default first.
    pub const ALL: [Convention; 4] = [
        Convention::Openood,
        Convention::Classic,
        Convention::Hendrycks,
        Convention::Knn,
    ];

    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Convention::Openood => "openood",
            Convention::Classic => "classic",
            Convention::Hendrycks => "hendrycks",
            Convention::Knn => "knn",
        }
    }

    /// One line saying what the convention means.
    pub fn about(self) -> &'static str {
        match self {
            Convention::Openood => {
                "OOD positive; FPR = ID fraction flagged at 95% OOD-TPR (sklearn drop step); trapezoid AUPR"
            }
            Convention::Classic => {
                "ID positive; FPR = OOD fraction accepted at 95% ID-TPR (no drop step); trapezoid AUPR"
            }
            Convention::Hendrycks => {
                "ID positive; FPR by the argmin |recall - 0.95| rule; AUPR = average precision"
            }
            Convention::Knn => {
                "ID positive; FPR = OOD fraction > ID quantile at round(0.05 N_id); KNN-OOD AUIN/AUOUT"
            }
        }
    }

    /// The FPR@95 rule of this convention.
    pub fn fpr_rule(self) -> FprRule {
        match self {
            Convention::Openood => FprRule::Openood,
            Convention::Classic => FprRule::ClassicExact,
            Convention::Hendrycks => FprRule::Hendrycks,
            Convention::Knn => FprRule::Knn,
        }
    }

    /// The AUPR kind of this convention.
    pub fn aupr_kind(self) -> AuprKind {
        match self {
            Convention::Openood | Convention::Classic => AuprKind::Trapezoid,
            Convention::Hendrycks => AuprKind::AveragePrecision,
            Convention::Knn => AuprKind::KnnOod,
        }
    }
}

impl fmt::Display for Convention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Convention {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openood" | "openood_v15" => Ok(Convention::Openood),
            "classic" | "classic_exact" => Ok(Convention::Classic),
            "hendrycks" => Ok(Convention::Hendrycks),
            "knn" | "knn_ood" => Ok(Convention::Knn),
            other => Err(Error::InvalidParameter(format!(
                "unknown metric convention \"{other}\" (expected one of openood, classic, hendrycks, knn)"
            ))),
        }
    }
}

/// The four OOD metrics, as fractions in `[0, 1]`, with the convention they follow.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Area under the ROC curve (tie-aware Mann–Whitney; the same in every convention).
    pub auroc: f64,
    /// False-positive rate at 95% true-positive rate, by the convention's rule.
    pub fpr95: f64,
    /// Area under the precision–recall curve with ID positive (kind set by the convention).
    pub aupr_in: f64,
    /// Area under the precision–recall curve with OOD positive (kind set by the convention).
    pub aupr_out: f64,
    /// The convention the FPR and AUPR values follow.
    pub convention: Convention,
}

/// Which class is the positive one in a curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Positive {
    /// In-distribution samples are positives, ranked by the score `s`.
    Id,
    /// OOD samples are positives, ranked by `−s`.
    Ood,
}

/// The FPR@95 rules found in the reference code bases (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FprRule {
    /// OpenOOD since 2023-08: OOD positive, first kept point with OOD-TPR ≥ 0.95 after
    /// scikit-learn's drop step, value = fraction of ID at or below that threshold.
    Openood,
    /// As [`FprRule::Openood`] but without the drop step (first point with OOD-TPR ≥ 0.95).
    OpenoodNoDrop,
    /// OpenOOD before 2023-08: ID positive, first kept point with ID-TPR ≥ 0.95 after the drop
    /// step, value = fraction of OOD at or above that threshold.
    OpenoodLegacy,
    /// As [`FprRule::OpenoodLegacy`] without the drop step (the recommended reference).
    ClassicExact,
    /// Hendrycks `fpr_and_fdr_at_recall`: argmin `|recall − 0.95|`, ties to the lowest threshold.
    Hendrycks,
    /// KNN-OOD: `#{OOD : s > τ} / N_ood` with `τ` the ID score at index `round(0.05 N_id)`.
    Knn,
}

/// How the area under a precision–recall curve is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuprKind {
    /// scikit-learn `precision_recall_curve` + `auc` (trapezoid; OpenOOD).
    Trapezoid,
    /// scikit-learn `average_precision_score` (step sum; Hendrycks, MCM, NegLabel).
    AveragePrecision,
    /// KNN-OOD's hand-built AUIN / AUOUT trapezoids.
    KnnOod,
}

/// The target true-positive rate of FPR@95.
const TPR_LEVEL: f64 = 0.95;
/// KNN-OOD's rejected ID fraction (the literal `0.05` of `round(0.05 * num_k)`).
const KNN_REJECT: f64 = 0.05;

/// Pooled scores sorted once and grouped into blocks of tied values: the core every metric is
/// computed from.
#[derive(Debug, Clone)]
pub struct RankedScores {
    /// Distinct score values, ascending.
    values: Vec<f32>,
    /// Number of ID samples in each block.
    id_counts: Vec<u64>,
    /// Number of OOD samples in each block.
    ood_counts: Vec<u64>,
    n_id: u64,
    n_ood: u64,
}

/// An order-preserving map from finite `f32` (with `-0.0` folded onto `+0.0`) to `u32`.
fn ordered_bits(x: f32) -> u32 {
    let b = (x + 0.0).to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Inverse of [`ordered_bits`].
fn from_ordered_bits(k: u32) -> f32 {
    if k & 0x8000_0000 != 0 {
        f32::from_bits(k & 0x7FFF_FFFF)
    } else {
        f32::from_bits(!k)
    }
}

fn check_set(scores: &[f32], what: &str) -> Result<()> {
    if scores.is_empty() {
        return Err(Error::TooFewSamples {
            what: what.into(),
            need: 1,
            got: 0,
        });
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("{what} (index {i}: {})", scores[i]),
        });
    }
    Ok(())
}

/// [`ordered_bits`] for `f64`.
fn ordered_bits_f64(x: f64) -> u64 {
    let b = (x + 0.0).to_bits();
    if b & (1 << 63) != 0 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// Inverse of [`ordered_bits_f64`].
fn from_ordered_bits_f64(k: u64) -> f64 {
    if k & (1 << 63) != 0 {
        f64::from_bits(k & !(1 << 63))
    } else {
        f64::from_bits(!k)
    }
}

fn check_set_f64<T: Copy + Into<f64>>(scores: &[T], what: &str) -> Result<()> {
    if scores.is_empty() {
        return Err(Error::TooFewSamples {
            what: what.into(),
            need: 1,
            got: 0,
        });
    }
    if let Some(i) = scores.iter().position(|&s| !s.into().is_finite()) {
        return Err(Error::NonFinite {
            what: format!("{what} (index {i}: {})", scores[i].into()),
        });
    }
    Ok(())
}

impl RankedScores {
    /// Validates, sorts and groups the scores. Errors on an empty set or a non-finite score.
    pub fn new(id_scores: &[f32], ood_scores: &[f32]) -> Result<Self> {
        check_set(id_scores, "id scores")?;
        check_set(ood_scores, "ood scores")?;
        // Key: ordered score bits in the high 32 bits, class in the lowest bit (0 = ID, 1 = OOD).
        let mut keys: Vec<u64> = Vec::with_capacity(id_scores.len() + ood_scores.len());
        keys.extend(id_scores.iter().map(|&s| (ordered_bits(s) as u64) << 1));
        keys.extend(
            ood_scores
                .iter()
                .map(|&s| ((ordered_bits(s) as u64) << 1) | 1),
        );
        if keys.len() >= 1 << 16 {
            keys.par_sort_unstable();
        } else {
            keys.sort_unstable();
        }
        let mut values = Vec::new();
        let mut id_counts = Vec::new();
        let mut ood_counts = Vec::new();
        let mut i = 0;
        while i < keys.len() {
            let v = keys[i] >> 1;
            let (mut a, mut b) = (0u64, 0u64);
            while i < keys.len() && keys[i] >> 1 == v {
                if keys[i] & 1 == 0 {
                    a += 1;
                } else {
                    b += 1;
                }
                i += 1;
            }
            values.push(from_ordered_bits(v as u32));
            id_counts.push(a);
            ood_counts.push(b);
        }
        Ok(RankedScores {
            values,
            id_counts,
            ood_counts,
            n_id: id_scores.len() as u64,
            n_ood: ood_scores.len() as u64,
        })
    }

    /// As [`RankedScores::new`] for `f64` scores, ranked and tied in `f64` (two scores that
    /// differ only beyond `f32` precision stay distinct, as in scikit-learn). Every metric is the
    /// same function of the tie blocks; only [`RankedScores::roc_curve`]'s thresholds are rounded
    /// to `f32`. Also takes `f32` scores (widened exactly, so the blocks and every metric equal
    /// [`RankedScores::new`]'s): the two classes are sorted separately, in parallel, and merged,
    /// which is faster than one pooled sort on large inputs.
    pub fn new_f64<T: Copy + Into<f64> + Sync>(id_scores: &[T], ood_scores: &[T]) -> Result<Self> {
        check_set_f64(id_scores, "id scores")?;
        check_set_f64(ood_scores, "ood scores")?;
        // Sort each class on its own (the two sorts in parallel), then merge the two sorted runs
        // into tie blocks.
        let sorted = |s: &[T]| {
            let mut k: Vec<u64> = s.iter().map(|&x| ordered_bits_f64(x.into())).collect();
            k.sort_unstable();
            k
        };
        let (id, ood) = rayon::join(|| sorted(id_scores), || sorted(ood_scores));
        let (ni, no) = (id.len(), ood.len());
        let mut values = Vec::with_capacity(ni + no);
        let mut id_counts = Vec::with_capacity(ni + no);
        let mut ood_counts = Vec::with_capacity(ni + no);
        // Branch-light merge: the smaller head value opens the next block (a `min`, not a branch
        // on which class it came from); runs of equal values are the rare, predictable case.
        let (mut i, mut j) = (0, 0);
        while i < ni && j < no {
            let (x, y) = (id[i], ood[j]);
            let v = x.min(y);
            let (mut a, mut b) = ((x == v) as u64, (y == v) as u64);
            i += a as usize;
            j += b as usize;
            while i < ni && id[i] == v {
                i += 1;
                a += 1;
            }
            while j < no && ood[j] == v {
                j += 1;
                b += 1;
            }
            values.push(from_ordered_bits_f64(v) as f32);
            id_counts.push(a);
            ood_counts.push(b);
        }
        for (rest, is_id) in [(&id[i..], true), (&ood[j..], false)] {
            for run in rest.chunk_by(|p, q| p == q) {
                values.push(from_ordered_bits_f64(run[0]) as f32);
                let c = run.len() as u64;
                id_counts.push(if is_id { c } else { 0 });
                ood_counts.push(if is_id { 0 } else { c });
            }
        }
        Ok(RankedScores {
            values,
            id_counts,
            ood_counts,
            n_id: id_scores.len() as u64,
            n_ood: ood_scores.len() as u64,
        })
    }

    /// Number of ID samples.
    pub fn n_id(&self) -> usize {
        self.n_id as usize
    }

    /// Number of OOD samples.
    pub fn n_ood(&self) -> usize {
        self.n_ood as usize
    }

    /// Number of distinct score values.
    pub fn n_blocks(&self) -> usize {
        self.values.len()
    }

    /// Block `i` as `(positives, negatives)` counts, with blocks ordered from the highest
    /// positive-score down: ID positive visits the blocks by descending `s`, OOD positive by
    /// ascending `s`.
    #[inline]
    fn block(&self, positive: Positive, i: usize) -> (u64, u64) {
        match positive {
            Positive::Id => {
                let j = self.values.len() - 1 - i;
                (self.id_counts[j], self.ood_counts[j])
            }
            Positive::Ood => (self.ood_counts[i], self.id_counts[i]),
        }
    }

    fn n_pos_neg(&self, positive: Positive) -> (u64, u64) {
        match positive {
            Positive::Id => (self.n_id, self.n_ood),
            Positive::Ood => (self.n_ood, self.n_id),
        }
    }

    /// Tie-aware Mann–Whitney AUROC (exact integer numerator, one final division).
    pub fn auroc(&self) -> f64 {
        let mut ood_below: u128 = 0;
        let mut twice: u128 = 0;
        for (&a, &b) in self.id_counts.iter().zip(&self.ood_counts) {
            twice += a as u128 * (2 * ood_below + b as u128);
            ood_below += b as u128;
        }
        twice as f64 / (2.0 * self.n_id as f64 * self.n_ood as f64)
    }

    /// FPR at the first ROC point with TPR ≥ 0.95, scikit-learn `roc_curve` style, optionally
    /// with its `drop_intermediate` pruning. Returns `FP / N_neg`.
    fn fpr_first_reaching(&self, positive: Positive, drop_intermediate: bool) -> f64 {
        let (n_pos, n_neg) = self.n_pos_neg(positive);
        let u = self.n_blocks();
        let drop = drop_intermediate && u > 2;
        let (mut tp, mut fp) = (0u64, 0u64);
        for m in 0..u {
            let (p, n) = self.block(positive, m);
            tp += p;
            fp += n;
            if (tp as f64 / n_pos as f64) < TPR_LEVEL {
                continue;
            }
            // Point m (0-based) is dropped when it is interior and the steps into and out of it
            // are identical (both second differences zero).
            let kept = !drop || m == 0 || m + 1 == u || (p, n) != self.block(positive, m + 1);
            if kept {
                return fp as f64 / n_neg as f64;
            }
        }
        // The last point has TPR = 1 and is always kept.
        unreachable!("the last ROC point reaches TPR 1 and is never dropped")
    }

    /// Hendrycks `fpr_and_fdr_at_recall` at recall 0.95 (ID positive).
    fn fpr_hendrycks(&self) -> f64 {
        let n_id = self.n_id as f64;
        // Forward (descending s) scan up to the first point with full recall. In the reversed
        // order the first minimiser wins, i.e. the last minimiser of the forward scan (`<=`).
        let (mut tps, mut fps) = (0u64, 0u64);
        let mut best = (f64::INFINITY, 0u64);
        for i in 0..self.n_blocks() {
            let (p, n) = self.block(Positive::Id, i);
            tps += p;
            fps += n;
            let d = (tps as f64 / n_id - TPR_LEVEL).abs();
            if d <= best.0 {
                best = (d, fps);
            }
            if tps == self.n_id {
                break;
            }
        }
        // The appended quirk point (recall 1, fps 0) comes last in the reversed order; it only
        // wins when strictly closer, which cannot happen as the full-recall point ties with it.
        let quirk = (1.0 - TPR_LEVEL).abs();
        if quirk < best.0 {
            best = (quirk, 0);
        }
        best.1 as f64 / self.n_ood as f64
    }

    /// KNN-OOD FPR: `#{OOD : s > τ} / N_ood`, `τ` the ID score at ascending index
    /// `round_half_even(0.05 · N_id)`.
    fn fpr_knn(&self) -> f64 {
        let idx = (KNN_REJECT * self.n_id as f64).round_ties_even() as u64;
        let (mut id_seen, mut ood_upto) = (0u64, 0u64);
        for (&a, &b) in self.id_counts.iter().zip(&self.ood_counts) {
            id_seen += a;
            ood_upto += b;
            if id_seen > idx {
                // τ is this block's value; OOD strictly above it are accepted.
                return (self.n_ood - ood_upto) as f64 / self.n_ood as f64;
            }
        }
        unreachable!("round(0.05 n) < n for every n >= 1")
    }

    /// FPR@95 under `rule`.
    pub fn fpr95(&self, rule: FprRule) -> f64 {
        match rule {
            FprRule::Openood => self.fpr_first_reaching(Positive::Ood, true),
            FprRule::OpenoodNoDrop => self.fpr_first_reaching(Positive::Ood, false),
            FprRule::OpenoodLegacy => self.fpr_first_reaching(Positive::Id, true),
            FprRule::ClassicExact => self.fpr_first_reaching(Positive::Id, false),
            FprRule::Hendrycks => self.fpr_hendrycks(),
            FprRule::Knn => self.fpr_knn(),
        }
    }

    /// Trapezoidal area under the PR curve from `(recall 0, precision 1)` (sklearn
    /// `precision_recall_curve` + `auc`).
    fn aupr_trapezoid(&self, positive: Positive) -> f64 {
        let (n_pos, _) = self.n_pos_neg(positive);
        let (mut tp, mut fp) = (0u64, 0u64);
        let (mut r_prev, mut p_prev) = (0.0f64, 1.0f64);
        let mut area = 0.0f64;
        for i in 0..self.n_blocks() {
            let (p, n) = self.block(positive, i);
            tp += p;
            fp += n;
            let r = tp as f64 / n_pos as f64;
            let prec = tp as f64 / (tp + fp) as f64;
            area += (r - r_prev) * (prec + p_prev) * 0.5;
            r_prev = r;
            p_prev = prec;
        }
        area
    }

    /// Average precision `Σ (R_m − R_{m−1}) P_m` (sklearn `average_precision_score`).
    fn average_precision(&self, positive: Positive) -> f64 {
        let (n_pos, _) = self.n_pos_neg(positive);
        let (mut tp, mut fp) = (0u64, 0u64);
        let mut r_prev = 0.0f64;
        let mut ap = 0.0f64;
        for i in 0..self.n_blocks() {
            let (p, n) = self.block(positive, i);
            tp += p;
            fp += n;
            let r = tp as f64 / n_pos as f64;
            ap += (r - r_prev) * (tp as f64 / (tp + fp) as f64);
            r_prev = r;
        }
        ap
    }

    /// KNN-OOD AUIN (ID positive) or AUOUT (OOD positive).
    fn knn_area(&self, positive: Positive) -> f64 {
        let (nk, nn) = (self.n_id, self.n_ood);
        let (nkf, nnf) = (nk as f64, nn as f64);
        let mut area = 0.0f64;
        match positive {
            Positive::Id => {
                // States "samples with s ≥ c" for ascending c, then the empty state. Points:
                // (1, 0.5), (tp/N_id, tp/(tp+fp)) for non-empty states, (0, 0); area = −trapz.
                let (mut tp, mut fp) = (nk, nn);
                let (mut x_prev, mut y_prev) = (1.0f64, 0.5f64);
                let mut push = |x: f64, y: f64| {
                    area += (x_prev - x) * (y + y_prev) * 0.5;
                    x_prev = x;
                    y_prev = y;
                };
                push(1.0, tp as f64 / (tp + fp) as f64);
                for (&a, &b) in self.id_counts.iter().zip(&self.ood_counts) {
                    tp -= a;
                    fp -= b;
                    if tp + fp > 0 {
                        push(tp as f64 / nkf, tp as f64 / (tp + fp) as f64);
                    }
                }
                push(0.0, 0.0);
            }
            Positive::Ood => {
                // Rejected sets "samples with s < c" for ascending c (the first, empty one is
                // skipped). Points over x = 1 − fp/N_ood: (0, 0), (x, rejected OOD / rejected),
                // (1, 0.5); area = trapz.
                let (mut rk, mut rn) = (0u64, 0u64);
                let (mut x_prev, mut y_prev) = (0.0f64, 0.0f64);
                let mut push = |x: f64, y: f64| {
                    area += (x - x_prev) * (y + y_prev) * 0.5;
                    x_prev = x;
                    y_prev = y;
                };
                for (&a, &b) in self.id_counts.iter().zip(&self.ood_counts) {
                    rk += a;
                    rn += b;
                    let fp = nn - rn;
                    push(1.0 - fp as f64 / nnf, rn as f64 / (rk + rn) as f64);
                }
                push(1.0, 0.5);
            }
        }
        area
    }

    /// Area under a precision–recall curve with `positive` as the positive class.
    pub fn aupr(&self, positive: Positive, kind: AuprKind) -> f64 {
        match kind {
            AuprKind::Trapezoid => self.aupr_trapezoid(positive),
            AuprKind::AveragePrecision => self.average_precision(positive),
            AuprKind::KnnOod => self.knn_area(positive),
        }
    }

    /// All four metrics under `convention`.
    pub fn metrics(&self, convention: Convention) -> Metrics {
        let kind = convention.aupr_kind();
        Metrics {
            auroc: self.auroc(),
            fpr95: self.fpr95(convention.fpr_rule()),
            aupr_in: self.aupr(Positive::Id, kind),
            aupr_out: self.aupr(Positive::Ood, kind),
            convention,
        }
    }

    /// The ID-positive ROC curve (see [`RocCurve`]).
    pub fn roc_curve(&self) -> RocCurve {
        let u = self.n_blocks();
        let mut thresholds = Vec::with_capacity(u + 1);
        let mut fpr = Vec::with_capacity(u + 1);
        let mut tpr = Vec::with_capacity(u + 1);
        thresholds.push(f32::INFINITY);
        fpr.push(0.0);
        tpr.push(0.0);
        let (mut tp, mut fp) = (0u64, 0u64);
        for m in 0..u {
            let (p, n) = self.block(Positive::Id, m);
            tp += p;
            fp += n;
            thresholds.push(self.values[u - 1 - m]);
            fpr.push(fp as f64 / self.n_ood as f64);
            tpr.push(tp as f64 / self.n_id as f64);
        }
        RocCurve {
            thresholds,
            fpr,
            tpr,
        }
    }
}

/// An ID-positive ROC curve: the point `i` accepts every sample with `s ≥ thresholds[i]`;
/// `tpr[i]` is the accepted fraction of ID and `fpr[i]` the accepted fraction of OOD. The first
/// point is `(0, 0)` with threshold `+∞`; then one point per distinct score, descending, ending
/// at `(1, 1)`. The trapezoidal area under it is the AUROC.
#[derive(Debug, Clone, PartialEq)]
pub struct RocCurve {
    /// Score thresholds, descending (the first is `+∞`).
    pub thresholds: Vec<f32>,
    /// Fraction of OOD scored at or above each threshold.
    pub fpr: Vec<f64>,
    /// Fraction of ID scored at or above each threshold.
    pub tpr: Vec<f64>,
}

impl RocCurve {
    /// Number of points.
    pub fn len(&self) -> usize {
        self.fpr.len()
    }

    /// Whether the curve has no points (never true for a curve from [`roc_curve`]).
    pub fn is_empty(&self) -> bool {
        self.fpr.is_empty()
    }

    /// Trapezoidal area under the curve (equals [`auroc`] up to rounding).
    pub fn area(&self) -> f64 {
        self.fpr
            .windows(2)
            .zip(self.tpr.windows(2))
            .map(|(f, t)| (f[1] - f[0]) * (t[1] + t[0]) * 0.5)
            .sum()
    }

    /// A copy with at most `max_points` points (at least 2), for plotting. Collinear interior
    /// points are removed first (this never changes the curve); if too many remain, evenly spaced
    /// ones are kept, always including both end points.
    pub fn thinned(&self, max_points: usize) -> RocCurve {
        let max_points = max_points.max(2);
        let n = self.len();
        let mut keep: Vec<usize> = Vec::with_capacity(n);
        for i in 0..n {
            if i == 0 || i + 1 == n {
                keep.push(i);
                continue;
            }
            let (dx0, dy0) = (self.fpr[i] - self.fpr[i - 1], self.tpr[i] - self.tpr[i - 1]);
            let (dx1, dy1) = (self.fpr[i + 1] - self.fpr[i], self.tpr[i + 1] - self.tpr[i]);
            // Collinear (cross product zero up to rounding, relative to its terms).
            let (t0, t1) = (dx0 * dy1, dy0 * dx1);
            if (t0 - t1).abs() > 1e-12 * (t0.abs() + t1.abs()) {
                keep.push(i);
            }
        }
        if keep.len() > max_points {
            let last = keep.len() - 1;
            keep = (0..max_points)
                .map(|j| keep[(j * last + (max_points - 1) / 2) / (max_points - 1)])
                .collect();
            keep.dedup();
        }
        RocCurve {
            thresholds: keep.iter().map(|&i| self.thresholds[i]).collect(),
            fpr: keep.iter().map(|&i| self.fpr[i]).collect(),
            tpr: keep.iter().map(|&i| self.tpr[i]).collect(),
        }
    }
}

/// AUROC, FPR@95, AUPR-In and AUPR-Out of ID-high scores under `convention`.
///
/// ```
/// use ood_core::metrics::{evaluate, Convention};
/// let id = [0.9f32, 0.8, 0.7, 0.6, 0.55];
/// let ood = [0.5f32, 0.4, 0.3, 0.2, 0.1];
/// let m = evaluate(&id, &ood, Convention::Openood).unwrap();
/// assert_eq!((m.auroc, m.fpr95, m.aupr_in, m.aupr_out), (1.0, 0.0, 1.0, 1.0));
/// ```
pub fn evaluate(id_scores: &[f32], ood_scores: &[f32], convention: Convention) -> Result<Metrics> {
    Ok(RankedScores::new(id_scores, ood_scores)?.metrics(convention))
}

/// [`evaluate`] for `f64` (or `f32`) scores, ranked in `f64` (see [`RankedScores::new_f64`]).
pub fn evaluate_f64<T: Copy + Into<f64> + Sync>(
    id_scores: &[T],
    ood_scores: &[T],
    convention: Convention,
) -> Result<Metrics> {
    Ok(RankedScores::new_f64(id_scores, ood_scores)?.metrics(convention))
}

/// Tie-aware Mann–Whitney AUROC: the probability that an ID score beats an OOD score, ties ½.
pub fn auroc(id: &[f32], ood: &[f32]) -> Result<f64> {
    Ok(RankedScores::new(id, ood)?.auroc())
}

/// FPR@95 under `rule` (see [`FprRule`]).
pub fn fpr95(id: &[f32], ood: &[f32], rule: FprRule) -> Result<f64> {
    Ok(RankedScores::new(id, ood)?.fpr95(rule))
}

/// Area under a precision–recall curve: `positive = Id` gives AUPR-In, `Ood` gives AUPR-Out.
pub fn aupr(id: &[f32], ood: &[f32], positive: Positive, kind: AuprKind) -> Result<f64> {
    Ok(RankedScores::new(id, ood)?.aupr(positive, kind))
}

/// The ID-positive ROC curve, one point per distinct score (see [`RocCurve`]).
pub fn roc_curve(id: &[f32], ood: &[f32]) -> Result<RocCurve> {
    Ok(RankedScores::new(id, ood)?.roc_curve())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_bits_round_trip_and_order() {
        let xs = [-3.5f32, -1e-30, -0.0, 0.0, 1e-30, 2.0, f32::MAX, f32::MIN];
        for &x in &xs {
            assert_eq!(from_ordered_bits(ordered_bits(x)), x + 0.0);
        }
        let mut sorted = xs;
        sorted.sort_by(f32::total_cmp);
        for w in sorted.windows(2) {
            assert!(ordered_bits(w[0]) <= ordered_bits(w[1]), "{w:?}");
        }
        assert_eq!(ordered_bits(-0.0), ordered_bits(0.0));
    }

    #[test]
    fn negative_zero_ties_with_zero() {
        assert_eq!(auroc(&[0.0], &[-0.0]).unwrap(), 0.5);
    }

    #[test]
    fn errors_name_the_set() {
        let e = evaluate(&[], &[1.0], Convention::Openood).unwrap_err();
        assert!(matches!(e, Error::TooFewSamples { ref what, got: 0, .. } if what == "id scores"));
        let e = evaluate(&[1.0], &[], Convention::Openood).unwrap_err();
        assert!(matches!(e, Error::TooFewSamples { ref what, .. } if what == "ood scores"));
        let e = evaluate(&[1.0, f32::NAN], &[1.0], Convention::Knn).unwrap_err();
        assert!(e.to_string().contains("id scores (index 1"), "{e}");
        let e = auroc(&[1.0], &[f32::NEG_INFINITY]).unwrap_err();
        assert!(matches!(e, Error::NonFinite { ref what } if what.starts_with("ood scores")));
    }

    #[test]
    fn convention_names_round_trip() {
        for c in Convention::ALL {
            assert_eq!(c.to_string().parse::<Convention>().unwrap(), c);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.name()));
        }
        assert_eq!(Convention::default(), Convention::Openood);
        let e = "auroc".parse::<Convention>().unwrap_err();
        assert!(e.to_string().contains("\"auroc\""), "{e}");
    }

    #[test]
    fn roc_curve_points_and_area() {
        // ID = {3, 1}, OOD = {2, 1}: descending thresholds 3, 2, 1.
        let c = roc_curve(&[3.0, 1.0], &[2.0, 1.0]).unwrap();
        assert_eq!(c.thresholds, vec![f32::INFINITY, 3.0, 2.0, 1.0]);
        assert_eq!(c.tpr, vec![0.0, 0.5, 0.5, 1.0]);
        assert_eq!(c.fpr, vec![0.0, 0.0, 0.5, 1.0]);
        // Mann–Whitney: (3>2) + (3>1) + (1<2: 0) + (1=1: ½) = 2.5 / 4.
        assert_eq!(c.area(), 0.625);
        assert_eq!(auroc(&[3.0, 1.0], &[2.0, 1.0]).unwrap(), 0.625);
    }

    #[test]
    fn thinned_keeps_ends_and_area_of_collinear_runs() {
        let id: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let ood: Vec<f32> = (0..100).map(|i| i as f32 + 0.5).collect();
        let c = roc_curve(&id, &ood).unwrap();
        assert_eq!(c.len(), 201);
        let t = c.thinned(1000);
        // Alternating ID/OOD steps are not collinear point to point, so all points stay.
        assert_eq!(t.len(), 201);
        let t = c.thinned(10);
        assert!(t.len() <= 10 && t.len() >= 2);
        assert_eq!((t.fpr[0], t.tpr[0]), (0.0, 0.0));
        assert_eq!((*t.fpr.last().unwrap(), *t.tpr.last().unwrap()), (1.0, 1.0));
        // A straight diagonal (one ID and one OOD per tied block) collapses to its two ends.
        let d = roc_curve(&id, &id).unwrap().thinned(1000);
        assert_eq!(d.len(), 2);
        assert_eq!(d.area(), 0.5);
    }

    #[test]
    fn f64_ranking_matches_f32_and_keeps_f64_ties_apart() {
        // Heavily tied values exactly representable in f32: both paths give the same metrics.
        let id: Vec<f32> = (0..200)
            .map(|i| ((i * 7) % 13) as f32 * 0.5 - 2.0)
            .collect();
        let ood: Vec<f32> = (0..150)
            .map(|i| ((i * 5) % 11) as f32 * 0.5 - 3.0)
            .collect();
        let id64: Vec<f64> = id.iter().map(|&v| v as f64).collect();
        let ood64: Vec<f64> = ood.iter().map(|&v| v as f64).collect();
        for c in Convention::ALL {
            assert_eq!(
                evaluate(&id, &ood, c).unwrap(),
                evaluate_f64(&id64, &ood64, c).unwrap()
            );
            assert_eq!(
                evaluate(&id, &ood, c).unwrap(),
                evaluate_f64(&id, &ood, c).unwrap()
            );
        }
        // Random f32 scores with occasional ties: the split sort equals the pooled one.
        let mut x = 12345u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) % 5000) as f32 / 97.0
        };
        let id: Vec<f32> = (0..3000).map(|_| next() + 3.0).collect();
        let ood: Vec<f32> = (0..2000).map(|_| next()).collect();
        for c in Convention::ALL {
            assert_eq!(
                evaluate(&id, &ood, c).unwrap(),
                evaluate_f64(&id, &ood, c).unwrap()
            );
        }
        assert_eq!(
            roc_curve(&id, &ood).unwrap(),
            RankedScores::new_f64(&id, &ood).unwrap().roc_curve()
        );
        // 1 + 1e-12 and 1 are one f32 value but two f64 values.
        let a = 1.0 + 1e-12;
        assert_eq!(auroc(&[a as f32], &[1.0]).unwrap(), 0.5);
        let m = evaluate_f64(&[a], &[1.0f64], Convention::Openood).unwrap();
        assert_eq!(m.auroc, 1.0);
        assert_eq!(RankedScores::new_f64(&[-0.0], &[0.0]).unwrap().auroc(), 0.5);
        assert!(matches!(
            evaluate_f64(&[1.0f64], &[f64::NAN], Convention::Openood),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            evaluate_f64::<f64>(&[], &[1.0], Convention::Openood),
            Err(Error::TooFewSamples { .. })
        ));
    }
}
