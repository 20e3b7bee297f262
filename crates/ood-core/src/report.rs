//! Reports people want to read: an aligned text table for the terminal, CSV and JSON for scripts,
//! and a self-contained HTML page (inline SVG, no JavaScript, no network) with the results table,
//! ROC curves per OOD set for the best detectors, ID-vs-OOD score histograms, and the run's
//! configuration with input hashes.

use crate::benchmark::{BenchmarkResult, Row};
use crate::error::Result;
use crate::metrics;
use serde_json::{Value, json};
use std::fmt::Write as _;

fn pct(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

/// The terminal table: one block per detector, per-dataset rows then near/far means, in percent.
pub fn text_table(result: &BenchmarkResult) -> String {
    let mut out = String::new();
    if let Some(acc) = result.id_accuracy {
        let _ = writeln!(out, "ID accuracy: {}%", pct(acc));
    }
    let _ = writeln!(
        out,
        "metrics convention: {} (FPR@95 and AUPR as defined by that convention; values in %)",
        result.convention
    );
    let w = result
        .rows
        .iter()
        .map(|r| r.dataset.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let wd = result
        .rows
        .iter()
        .map(|r| r.detector.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = writeln!(
        out,
        "{:<wd$}  {:<w$}  {:<5}  {:>7}  {:>7}  {:>7}  {:>8}",
        "detector", "dataset", "group", "FPR@95", "AUROC", "AUPR-In", "AUPR-Out"
    );
    let mut last = "";
    for r in &result.rows {
        if r.detector != last && !last.is_empty() {
            out.push('\n');
        }
        last = &r.detector;
        let g = r.group.map(|g| g.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<wd$}  {:<w$}  {:<5}  {:>7}  {:>7}  {:>7}  {:>8}",
            r.detector,
            r.dataset,
            g,
            pct(r.fpr95),
            pct(r.auroc),
            pct(r.aupr_in),
            pct(r.aupr_out)
        );
    }
    for (d, reason) in &result.skipped {
        let _ = writeln!(out, "\nskipped {d}: {reason}");
    }
    out
}

/// CSV with one line per row (fractions, not percent).
pub fn csv(result: &BenchmarkResult) -> String {
    let mut out = String::from(
        "detector,dataset,group,is_mean,fpr95,auroc,aupr_in,aupr_out,id_accuracy,convention\n",
    );
    let acc = result
        .id_accuracy
        .map(|a| a.to_string())
        .unwrap_or_default();
    for r in &result.rows {
        let g = r.group.map(|g| g.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            r.detector,
            r.dataset,
            g,
            r.is_mean,
            r.fpr95,
            r.auroc,
            r.aupr_in,
            r.aupr_out,
            acc,
            result.convention
        );
    }
    out
}

/// The stable JSON result object: `id_accuracy`, `convention`, and `rows` (each with `dataset`,
/// `group`, `detector`, `auroc`, `fpr95`, `aupr_in`, `aupr_out`, fractions), plus `detectors`
/// (resolved parameters, the detectors that ran) and `skipped` (`{detector, reason}` of those
/// that could not be fitted on this data).
pub fn json(result: &BenchmarkResult) -> Value {
    let skipped: Vec<Value> = result
        .skipped
        .iter()
        .map(|(d, r)| json!({"detector": d, "reason": r}))
        .collect();
    json!({
        "id_accuracy": result.id_accuracy,
        "convention": result.convention,
        "rows": result.rows,
        "detectors": result.detectors,
        "skipped": skipped,
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];
const W: f64 = 300.0;
const H: f64 = 220.0;
const PAD: f64 = 36.0;

fn svg_frame(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    xr: (f64, f64),
    yr: (f64, f64),
    body: &str,
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{tw}" height="{th}" viewBox="0 0 {tw} {th}" font-family="sans-serif" font-size="10">"#,
        tw = W + PAD + 26.0,
        th = H + PAD + 20.0
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="12" text-anchor="middle" font-size="12">{}</text>"#,
        PAD + W / 2.0,
        esc(title)
    );
    let _ = write!(
        s,
        r##"<rect x="{PAD}" y="20" width="{W}" height="{H}" fill="#fafafa" stroke="#444"/>"##
    );
    for i in 0..=4 {
        let fx = i as f64 / 4.0;
        let x = PAD + fx * W;
        let y = 20.0 + H - fx * H;
        let xv = xr.0 + fx * (xr.1 - xr.0);
        let yv = yr.0 + fx * (yr.1 - yr.0);
        let _ = write!(
            s,
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#ddd"/>"##,
            20.0,
            20.0 + H
        );
        let _ = write!(
            s,
            r##"<line x1="{PAD}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/>"##,
            PAD + W
        );
        let _ = write!(
            s,
            r#"<text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
            32.0 + H,
            fmt_tick(xv)
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            PAD - 3.0,
            y + 3.0,
            fmt_tick(yv)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        PAD + W / 2.0,
        46.0 + H,
        esc(xlabel)
    );
    let _ = write!(
        s,
        r#"<text x="10" y="{}" text-anchor="middle" transform="rotate(-90 10 {})">{}</text>"#,
        20.0 + H / 2.0,
        20.0 + H / 2.0,
        esc(ylabel)
    );
    s.push_str(body);
    s.push_str("</svg>");
    s
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 1000.0 || (v != 0.0 && v.abs() < 0.01) {
        format!("{v:.1e}")
    } else {
        format!("{v:.2}")
    }
}

fn roc_svg(set: &str, curves: &[(String, Vec<(f64, f64)>)]) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        r##"<line x1="{PAD}" y1="{}" x2="{}" y2="20" stroke="#999" stroke-dasharray="3,3"/>"##,
        20.0 + H,
        PAD + W
    );
    for (i, (name, pts)) in curves.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let poly: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", PAD + x * W, 20.0 + H - y * H))
            .collect();
        let _ = write!(
            body,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.6" points="{}"/>"#,
            poly.join(" ")
        );
        let ly = 32.0 + 13.0 * i as f64 + H * 0.6;
        let _ = write!(
            body,
            r#"<rect x="{}" y="{}" width="10" height="3" fill="{c}"/>"#,
            PAD + W * 0.45,
            ly - 3.0
        );
        let _ = write!(
            body,
            r#"<text x="{}" y="{ly}">{}</text>"#,
            PAD + W * 0.45 + 14.0,
            esc(name)
        );
    }
    svg_frame(
        &format!("ROC: ID test vs {set}"),
        "FPR (OOD accepted)",
        "TPR (ID accepted)",
        (0.0, 1.0),
        (0.0, 1.0),
        &body,
    )
}

fn hist_svg(title: &str, id: &[f32], ood: &[f32], ood_name: &str) -> String {
    const BINS: usize = 40;
    let lo = id.iter().chain(ood).copied().fold(f32::INFINITY, f32::min) as f64;
    let hi = id
        .iter()
        .chain(ood)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max) as f64;
    let span = if hi > lo { hi - lo } else { 1.0 };
    let density = |v: &[f32]| {
        let mut h = [0f64; BINS];
        for &x in v {
            let b = (((x as f64 - lo) / span) * BINS as f64).floor() as usize;
            h[b.min(BINS - 1)] += 1.0;
        }
        let n = v.len().max(1) as f64;
        h.map(|c| c / n)
    };
    let (hid, hood) = (density(id), density(ood));
    let ymax = hid
        .iter()
        .chain(hood.iter())
        .copied()
        .fold(0.0, f64::max)
        .max(1e-12);
    let mut body = String::new();
    for (h, color, name, k) in [
        (hid, "#1f77b4", "ID test", 0),
        (hood, "#d62728", ood_name, 1),
    ] {
        for (b, &v) in h.iter().enumerate() {
            let x = PAD + b as f64 / BINS as f64 * W;
            let bh = v / ymax * H;
            let _ = write!(
                body,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{color}" fill-opacity="0.45"/>"#,
                20.0 + H - bh,
                W / BINS as f64
            );
        }
        let ly = 34.0 + 13.0 * k as f64;
        let _ = write!(
            body,
            r#"<rect x="{}" y="{}" width="10" height="8" fill="{color}" fill-opacity="0.6"/>"#,
            PAD + 6.0,
            ly - 8.0
        );
        let _ = write!(
            body,
            r#"<text x="{}" y="{ly}">{}</text>"#,
            PAD + 20.0,
            esc(name)
        );
    }
    svg_frame(
        title,
        "score (higher = more in-distribution)",
        "fraction of set",
        (lo, lo + span),
        (0.0, ymax),
        &body,
    )
}

/// Detectors ranked by their mean AUROC over the per-dataset rows, best first.
pub fn ranking(result: &BenchmarkResult) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = result
        .scores
        .iter()
        .map(|s| {
            let rows: Vec<&Row> = result
                .rows
                .iter()
                .filter(|r| r.detector == s.detector && !r.is_mean)
                .collect();
            (
                s.detector.clone(),
                rows.iter().map(|r| r.auroc).sum::<f64>() / rows.len().max(1) as f64,
            )
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// The self-contained HTML report. `config` is the run's resolved configuration (with input hashes).
pub fn html(title: &str, result: &BenchmarkResult, config: &Value) -> Result<String> {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse;font-size:13px}}\
         td,th{{padding:3px 9px;border-bottom:1px solid #ddd;text-align:right}} td.l,th.l{{text-align:left}}\
         tr.mean td{{font-weight:bold;background:#f3f6fb}} .grid{{display:flex;flex-wrap:wrap;gap:12px}}\
         pre{{background:#f6f6f6;padding:10px;font-size:11px;overflow:auto}} h2{{margin-top:28px}} th small{{font-weight:normal;color:#666}} summary{{cursor:pointer;color:#245;margin:6px 0}}</style></head><body>\
         <h1>{t}</h1>",
        t = esc(title)
    );
    if let Some(acc) = result.id_accuracy {
        let _ = write!(h, "<p>ID classification accuracy: <b>{}%</b>.", pct(acc));
    } else {
        h.push_str("<p>");
    }
    let _ = write!(
        h,
        " Metrics convention: <b>{}</b>. Higher scores mean more in-distribution for every detector. \
         Values in percent; near/far rows are unweighted means over the sets of the group.</p>",
        result.convention
    );
    let rank = ranking(result);
    h.push_str(&overview_table(result, &rank));
    let top: Vec<&str> = rank.iter().take(3).map(|(d, _)| d.as_str()).collect();
    if let Some(first) = result.scores.first() {
        h.push_str("<h2>ROC curves (best three detectors)</h2><div class=grid>");
        for (k, (set, _)) in first.ood.iter().enumerate() {
            let mut curves = Vec::new();
            for d in &top {
                let s = result
                    .scores
                    .iter()
                    .find(|s| s.detector == *d)
                    .expect("ranked detectors have scores");
                let roc = metrics::roc_curve(
                    s.id.as_slice().expect("fresh"),
                    s.ood[k].1.as_slice().expect("fresh"),
                )?
                .thinned(400);
                curves.push((
                    d.to_string(),
                    roc.fpr
                        .iter()
                        .copied()
                        .zip(roc.tpr.iter().copied())
                        .collect(),
                ));
            }
            h.push_str(&roc_svg(set, &curves));
        }
        h.push_str("</div>");
        if let Some(best) = top
            .first()
            .and_then(|d| result.scores.iter().find(|s| s.detector == *d))
        {
            let _ = write!(
                h,
                "<h2>Score histograms ({})</h2><div class=grid>",
                esc(&best.detector)
            );
            for (set, s) in &best.ood {
                h.push_str(&hist_svg(
                    &format!("{}: ID test vs {set}", best.detector),
                    best.id.as_slice().expect("fresh"),
                    s.as_slice().expect("fresh"),
                    set,
                ));
            }
            h.push_str("</div>");
        }
    }
    let _ = write!(
        h,
        "<h2>All metrics</h2><details><summary>FPR@95, AUROC, AUPR-In and AUPR-Out of every detector \
         on every set ({} rows; bold rows are near/far means)</summary><table><tr><th class=l>detector</th>\
         <th class=l>dataset</th><th class=l>group</th><th>FPR@95</th><th>AUROC</th><th>AUPR-In</th>\
         <th>AUPR-Out</th></tr>",
        result.rows.len()
    );
    for r in &result.rows {
        let _ = write!(
            h,
            "<tr{}><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if r.is_mean { " class=mean" } else { "" },
            esc(&r.detector),
            esc(&r.dataset),
            r.group.map(|g| g.to_string()).unwrap_or_default(),
            pct(r.fpr95),
            pct(r.auroc),
            pct(r.aupr_in),
            pct(r.aupr_out)
        );
    }
    h.push_str("</table></details>");
    let _ = writeln!(
        h,
        "<h2>Configuration and inputs</h2><details><summary>Resolved parameters of every detector and \
         the SHA-256 of every input</summary><pre>{}</pre></details></body></html>",
        esc(&serde_json::to_string_pretty(config).expect("JSON values serialise"))
    );
    Ok(h)
}

/// Background colour of an AUROC cell: red at 0.5 (or below), yellow at 0.75, green at 1.
fn auroc_colour(a: f64) -> String {
    let t = ((a - 0.5) / 0.5).clamp(0.0, 1.0);
    format!("hsl({:.0},70%,{:.0}%)", 120.0 * t, 88.0 - 6.0 * t)
}

/// The overview: detectors ranked by mean AUROC, one AUROC column per OOD set (heat-coloured), the
/// near/far mean AUROC and FPR@95; the best value of each column in bold.
fn overview_table(result: &BenchmarkResult, rank: &[(String, f64)]) -> String {
    let mut sets: Vec<(String, Option<crate::benchmark::Group>)> = Vec::new();
    for r in result.rows.iter().filter(|r| !r.is_mean) {
        if !sets.iter().any(|(n, _)| *n == r.dataset) {
            sets.push((r.dataset.clone(), r.group));
        }
    }
    let means: Vec<String> = result
        .rows
        .iter()
        .filter(|r| r.is_mean)
        .map(|r| r.dataset.clone())
        .fold(Vec::new(), |mut v, d| {
            if !v.contains(&d) {
                v.push(d);
            }
            v
        });
    let find = |det: &str, set: &str| {
        result
            .rows
            .iter()
            .find(|r| r.detector == det && r.dataset == set)
    };
    // Columns: (header, dataset, metric is AUROC (higher better) or FPR (lower better)).
    let mut cols: Vec<(String, String, bool)> = sets
        .iter()
        .map(|(n, g)| {
            let g = g
                .map(|g| format!("<br><small>{g}</small>"))
                .unwrap_or_default();
            (format!("{}{g}", esc(n)), n.clone(), true)
        })
        .collect();
    for m in &means {
        cols.push((
            format!("{}<br><small>AUROC</small>", esc(m)),
            m.clone(),
            true,
        ));
    }
    for m in &means {
        cols.push((
            format!("{}<br><small>FPR@95</small>", esc(m)),
            m.clone(),
            false,
        ));
    }
    let value = |det: &str, (_, set, auroc): &(String, String, bool)| {
        find(det, set).map(|r| if *auroc { r.auroc } else { r.fpr95 })
    };
    let best: Vec<Option<f64>> = cols
        .iter()
        .map(|c| {
            let vals = rank.iter().filter_map(|(d, _)| value(d, c));
            if c.2 {
                vals.reduce(f64::max)
            } else {
                vals.reduce(f64::min)
            }
        })
        .collect();
    let mut h = String::from(
        "<h2>Overview</h2><p>Detectors ranked by mean AUROC over the OOD sets; one AUROC column per \
         set (green = separates well, red = chance), then the near/far means. Best of each column in \
         bold.</p><table><tr><th class=l>#</th><th class=l>detector</th><th>mean<br><small>AUROC</small></th>",
    );
    for (head, _, _) in &cols {
        let _ = write!(h, "<th>{head}</th>");
    }
    h.push_str("</tr>");
    for (i, (d, mean)) in rank.iter().enumerate() {
        let _ = write!(
            h,
            "<tr><td class=l>{}</td><td class=l>{}</td><td style=\"background:{}\">{}</td>",
            i + 1,
            esc(d),
            auroc_colour(*mean),
            pct(*mean)
        );
        for (c, b) in cols.iter().zip(&best) {
            match value(d, c) {
                Some(v) => {
                    let style = if c.2 {
                        format!(" style=\"background:{}\"", auroc_colour(v))
                    } else {
                        String::new()
                    };
                    let text = if Some(v) == *b {
                        format!("<b>{}</b>", pct(v))
                    } else {
                        pct(v)
                    };
                    let _ = write!(h, "<td{style}>{text}</td>");
                }
                None => h.push_str("<td></td>"),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    h
}
