//! Golden metric values: every number of spec tables 9.2 and 9.3 (`posthoc-and-metrics.md`,
//! produced by the reference OpenOOD, Hendrycks/NegLabel and KNN-OOD code, printed to 6
//! decimals), and a scikit-learn comparison on random tie-heavy inputs
//! (`tests/data/metrics_sklearn.json`, written by `tests/data/metrics_sklearn.py`).

use ood_core::metrics::{
    AuprKind, Convention, FprRule, Metrics, Positive, RankedScores, aupr, auroc, evaluate, fpr95,
};
use serde::Deserialize;

struct Vector {
    name: &'static str,
    id: Vec<f32>,
    ood: Vec<f32>,
}

fn vectors() -> Vec<Vector> {
    let a_id = [
        0.95, 0.91, 0.88, 0.86, 0.83, 0.80, 0.78, 0.74, 0.71, 0.69, 0.66, 0.62, 0.58, 0.55, 0.51,
        0.47, 0.42, 0.37, 0.30, 0.22,
    ];
    let a_ood = [
        0.89, 0.76, 0.64, 0.60, 0.53, 0.49, 0.45, 0.40, 0.38, 0.35, 0.33, 0.28, 0.26, 0.24, 0.20,
        0.18, 0.15, 0.12, 0.08, 0.05,
    ];
    let d_id = [0.97, 0.93, 0.90, 0.84, 0.79, 0.72, 0.66, 0.61, 0.43, 0.35];
    let d_ood = [
        0.91, 0.86, 0.81, 0.75, 0.70, 0.68, 0.64, 0.59, 0.57, 0.54, 0.52, 0.50, 0.48, 0.46, 0.44,
        0.41, 0.39, 0.37, 0.33, 0.31, 0.29, 0.27, 0.25, 0.23, 0.21, 0.19, 0.17, 0.14, 0.11, 0.06,
    ];
    vec![
        Vector {
            name: "A",
            id: a_id.to_vec(),
            ood: a_ood.to_vec(),
        },
        Vector {
            name: "B",
            id: vec![
                5., 5., 5., 4., 4., 4., 4., 3., 3., 3., 2., 2., 2., 1., 1., 0.,
            ],
            ood: vec![4., 3., 3., 2., 2., 2., 1., 1., 1., 0., 0., 0.],
        },
        Vector {
            name: "C",
            id: (17..=36).map(|v| v as f32).collect(),
            ood: (1..=20).map(|v| v as f32).collect(),
        },
        Vector {
            name: "D",
            id: d_id.to_vec(),
            ood: d_ood.to_vec(),
        },
        Vector {
            name: "E",
            id: vec![0.5; 8],
            ood: vec![0.5; 8],
        },
        Vector {
            name: "F",
            id: vec![0.9, 0.8, 0.7, 0.6, 0.55],
            ood: vec![0.5, 0.4, 0.3, 0.2, 0.1],
        },
        Vector {
            name: "G",
            id: vec![0.5, 0.4, 0.3, 0.2, 0.1],
            ood: vec![0.9, 0.8, 0.7, 0.6, 0.55],
        },
    ]
}

/// One row of tables 9.2 + 9.3.
struct Golden {
    // 9.2: OpenOOD HEAD.
    fpr: f64,
    auroc: f64,
    aupr_in: f64,
    aupr_out: f64,
    fpr_no_drop: f64,
    // 9.3.
    fpr_legacy: f64,
    fpr_classic: f64,
    fpr_hendrycks: f64,
    ap_in: f64,
    ap_out: f64,
    fpr_knn: f64,
    auin: f64,
    auout: f64,
}

#[rustfmt::skip]
fn golden() -> Vec<Golden> {
    let g = |r: [f64; 13]| Golden {
        fpr: r[0], auroc: r[1], aupr_in: r[2], aupr_out: r[3], fpr_no_drop: r[4],
        fpr_legacy: r[5], fpr_classic: r[6], fpr_hendrycks: r[7], ap_in: r[8], ap_out: r[9],
        fpr_knn: r[10], auin: r[11], auout: r[12],
    };
    vec![
        //     9.2: FPR    AUROC     AUPR_IN   AUPR_OUT  FPR-nodrop | 9.3: legacy classic hendrycks AP_in AP_out | knn FPR AUIN AUOUT
        g([0.650000, 0.810000, 0.781585, 0.829161, 0.650000, 0.550000, 0.550000, 0.700000, 0.791474, 0.833883, 0.550000, 0.756585, 0.804161]),
        g([0.812500, 0.755208, 0.831496, 0.692917, 0.812500, 1.000000, 1.000000, 0.750000, 0.792610, 0.635833, 0.500000, 0.737746, 0.567917]),
        g([0.200000, 0.980000, 0.981237, 0.981237, 0.150000, 0.200000, 0.150000, 0.150000, 0.977071, 0.977071, 0.100000, 0.956237, 0.956237]),
        g([0.700000, 0.813333, 0.626021, 0.929426, 0.700000, 0.600000, 0.600000, 0.600000, 0.644560, 0.930884, 0.600000, 0.576021, 0.912759]),
        g([1.000000, 0.500000, 0.750000, 0.750000, 1.000000, 1.000000, 1.000000, 1.000000, 0.500000, 0.500000, 0.000000, 0.250000, 0.250000]),
        g([0.000000, 1.000000, 1.000000, 1.000000, 0.000000, 0.000000, 0.000000, 0.000000, 1.000000, 1.000000, 0.000000, 0.900000, 0.900000]),
        g([1.000000, 0.000000, 0.304365, 0.304365, 1.000000, 1.000000, 1.000000, 1.000000, 0.354365, 0.354365, 1.000000, 0.304365, 0.304365]),
    ]
}

/// The spec prints 6 decimals; allow the rounding plus float noise.
const TOL6: f64 = 1e-6;

fn close(name: &str, what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "vector {name}, {what}: got {got:.9}, want {want:.9} (tol {tol:e})"
    );
}

fn check_metrics(name: &str, m: &Metrics, fpr: f64, auroc: f64, ain: f64, aout: f64) {
    let c = m.convention;
    close(name, &format!("{c} auroc"), m.auroc, auroc, TOL6);
    close(name, &format!("{c} fpr95"), m.fpr95, fpr, TOL6);
    close(name, &format!("{c} aupr_in"), m.aupr_in, ain, TOL6);
    close(name, &format!("{c} aupr_out"), m.aupr_out, aout, TOL6);
}

#[test]
fn spec_table_9_2_openood() {
    for (v, g) in vectors().iter().zip(golden()) {
        let m = evaluate(&v.id, &v.ood, Convention::Openood).unwrap();
        assert_eq!(m.convention, Convention::Openood);
        check_metrics(v.name, &m, g.fpr, g.auroc, g.aupr_in, g.aupr_out);
        let no_drop = fpr95(&v.id, &v.ood, FprRule::OpenoodNoDrop).unwrap();
        close(
            v.name,
            "openood fpr95 without drop step",
            no_drop,
            g.fpr_no_drop,
            TOL6,
        );
    }
}

#[test]
fn spec_vector_c_drop_step_moves_fpr() {
    let c = &vectors()[2];
    assert_eq!(fpr95(&c.id, &c.ood, FprRule::Openood).unwrap(), 0.20);
    assert_eq!(fpr95(&c.id, &c.ood, FprRule::OpenoodNoDrop).unwrap(), 0.15);
}

#[test]
fn spec_table_9_3_legacy_and_classic() {
    for (v, g) in vectors().iter().zip(golden()) {
        let legacy = fpr95(&v.id, &v.ood, FprRule::OpenoodLegacy).unwrap();
        close(v.name, "openood<2023-08 fpr95", legacy, g.fpr_legacy, TOL6);
        let m = evaluate(&v.id, &v.ood, Convention::Classic).unwrap();
        // Classic keeps OpenOOD's trapezoid AUPRs.
        check_metrics(v.name, &m, g.fpr_classic, g.auroc, g.aupr_in, g.aupr_out);
        let exact = fpr95(&v.id, &v.ood, FprRule::ClassicExact).unwrap();
        assert_eq!(exact, m.fpr95);
    }
}

#[test]
fn spec_table_9_3_hendrycks() {
    for (v, g) in vectors().iter().zip(golden()) {
        let m = evaluate(&v.id, &v.ood, Convention::Hendrycks).unwrap();
        check_metrics(v.name, &m, g.fpr_hendrycks, g.auroc, g.ap_in, g.ap_out);
    }
}

#[test]
fn spec_table_9_3_knn() {
    for (v, g) in vectors().iter().zip(golden()) {
        let m = evaluate(&v.id, &v.ood, Convention::Knn).unwrap();
        check_metrics(v.name, &m, g.fpr_knn, g.auroc, g.auin, g.auout);
    }
}

#[test]
fn spec_auroc_is_the_same_everywhere() {
    for (v, g) in vectors().iter().zip(golden()) {
        let a = auroc(&v.id, &v.ood).unwrap();
        close(v.name, "auroc", a, g.auroc, TOL6);
        for c in Convention::ALL {
            assert_eq!(evaluate(&v.id, &v.ood, c).unwrap().auroc, a);
        }
        // The free functions agree with evaluate.
        let r = RankedScores::new(&v.id, &v.ood).unwrap();
        assert_eq!(
            aupr(&v.id, &v.ood, Positive::Ood, AuprKind::AveragePrecision).unwrap(),
            r.aupr(Positive::Ood, AuprKind::AveragePrecision)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// scikit-learn / reference-formula comparison on random inputs.

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    id: Vec<f32>,
    ood: Vec<f32>,
    auroc: f64,
    openood_fpr: f64,
    openood_fpr_no_drop: f64,
    legacy_fpr: f64,
    classic_fpr: f64,
    aupr_in: f64,
    aupr_out: f64,
    hendrycks_fpr: f64,
    ap_in: f64,
    ap_out: f64,
    knn_fpr: f64,
    knn_auin: f64,
    knn_auout: f64,
}

const TOL9: f64 = 1e-9;

#[test]
fn sklearn_random_cases() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/metrics_sklearn.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    assert!(fixture.cases.len() >= 8);
    for c in &fixture.cases {
        let n = c.name.as_str();
        let r = RankedScores::new(&c.id, &c.ood).unwrap();
        assert_eq!((r.n_id(), r.n_ood()), (c.id.len(), c.ood.len()));
        close(n, "auroc", r.auroc(), c.auroc, TOL9);
        close(
            n,
            "openood fpr",
            r.fpr95(FprRule::Openood),
            c.openood_fpr,
            TOL9,
        );
        let nd = r.fpr95(FprRule::OpenoodNoDrop);
        close(n, "openood fpr no drop", nd, c.openood_fpr_no_drop, TOL9);
        close(
            n,
            "legacy fpr",
            r.fpr95(FprRule::OpenoodLegacy),
            c.legacy_fpr,
            TOL9,
        );
        close(
            n,
            "classic fpr",
            r.fpr95(FprRule::ClassicExact),
            c.classic_fpr,
            TOL9,
        );
        let trap_in = r.aupr(Positive::Id, AuprKind::Trapezoid);
        close(n, "aupr_in", trap_in, c.aupr_in, TOL9);
        let trap_out = r.aupr(Positive::Ood, AuprKind::Trapezoid);
        close(n, "aupr_out", trap_out, c.aupr_out, TOL9);
        close(
            n,
            "hendrycks fpr",
            r.fpr95(FprRule::Hendrycks),
            c.hendrycks_fpr,
            TOL9,
        );
        let ap_in = r.aupr(Positive::Id, AuprKind::AveragePrecision);
        close(n, "ap_in", ap_in, c.ap_in, TOL9);
        let ap_out = r.aupr(Positive::Ood, AuprKind::AveragePrecision);
        close(n, "ap_out", ap_out, c.ap_out, TOL9);
        close(n, "knn fpr", r.fpr95(FprRule::Knn), c.knn_fpr, TOL9);
        close(
            n,
            "knn auin",
            r.aupr(Positive::Id, AuprKind::KnnOod),
            c.knn_auin,
            TOL9,
        );
        close(
            n,
            "knn auout",
            r.aupr(Positive::Ood, AuprKind::KnnOod),
            c.knn_auout,
            TOL9,
        );
        // The ROC curve's trapezoid is the AUROC.
        close(n, "roc area", r.roc_curve().area(), c.auroc, TOL9);
    }
}

/// CPU seconds (user + system, all threads) of this process, from `/proc/self/stat` (Linux,
/// 100 ticks per second); `None` elsewhere. The machine may be shared, so wall time overstates.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// 2 × 1,000,000 scores: run with `cargo test --release -p ood-core --test metrics_golden --
/// --ignored --nocapture` to print the time (no timing is asserted).
#[test]
#[ignore = "timing probe; run in release with --ignored --nocapture"]
fn time_two_million() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let id: Vec<f32> = (0..1_000_000).map(|_| rng.r#gen::<f32>() + 0.3).collect();
    let ood: Vec<f32> = (0..1_000_000).map(|_| rng.r#gen::<f32>()).collect();
    let reps = 10;
    for c in Convention::ALL {
        let (t, cpu) = (std::time::Instant::now(), process_cpu_seconds());
        let mut m = None;
        for _ in 0..reps {
            m = Some(evaluate(&id, &ood, c).unwrap());
        }
        let wall = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
        let cpu = process_cpu_seconds()
            .zip(cpu)
            .map(|(b, a)| (b - a) * 1e3 / reps as f64);
        println!("{c}: {m:?}\n  per evaluate: wall {wall:.1} ms, process cpu {cpu:.1?} ms");
    }
    let t = std::time::Instant::now();
    let r = RankedScores::new(&id, &ood).unwrap();
    let sorted = t.elapsed().as_secs_f64() * 1e3;
    let all: Vec<Metrics> = Convention::ALL.iter().map(|&c| r.metrics(c)).collect();
    println!(
        "sort + group: {sorted:.1} ms ({} blocks); then all 4 conventions: {:.1} ms (wall)",
        r.n_blocks(),
        t.elapsed().as_secs_f64() * 1e3 - sorted
    );
    assert_eq!(all.len(), 4);
}
