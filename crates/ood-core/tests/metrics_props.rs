//! Property tests of the metrics: AUROC range, symmetry, rank invariance, the pairwise
//! definition, FPR range, agreement across conventions.

use ood_core::metrics::{
    AuprKind, Convention, FprRule, Positive, RankedScores, auroc, evaluate, roc_curve,
};
use proptest::prelude::*;

/// Scores with many ties (small integers) or near-continuous values (a 1/1024 grid on
/// [-5, 5], few ties), 1..40 per set. The grid keeps `3x + 1` exact and `exp(x / 4)` free of
/// collisions, so the invariance test below cannot fail from f32 rounding merging two values.
fn scores() -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        prop::collection::vec((0i32..6).prop_map(|v| v as f32), 1..40),
        prop::collection::vec((-5120i32..5120).prop_map(|v| v as f32 / 1024.0), 1..40),
    ]
}

/// The O(n²) definition: P(ID > OOD) + ½ P(ID = OOD).
fn pairwise_auroc(id: &[f32], ood: &[f32]) -> f64 {
    let mut s = 0.0;
    for &i in id {
        for &o in ood {
            s += if i > o {
                1.0
            } else if i == o {
                0.5
            } else {
                0.0
            };
        }
    }
    s / (id.len() * ood.len()) as f64
}

const RULES: [FprRule; 6] = [
    FprRule::Openood,
    FprRule::OpenoodNoDrop,
    FprRule::OpenoodLegacy,
    FprRule::ClassicExact,
    FprRule::Hendrycks,
    FprRule::Knn,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn auroc_in_unit_interval_and_pairwise(id in scores(), ood in scores()) {
        let a = auroc(&id, &ood).unwrap();
        prop_assert!((0.0..=1.0).contains(&a));
        prop_assert!((a - pairwise_auroc(&id, &ood)).abs() < 1e-12, "{} vs pairwise", a);
    }

    #[test]
    fn auroc_swaps_to_complement(id in scores(), ood in scores()) {
        let a = auroc(&id, &ood).unwrap();
        let b = auroc(&ood, &id).unwrap();
        prop_assert!((a + b - 1.0).abs() < 1e-12);
    }

    #[test]
    fn metrics_invariant_under_increasing_maps(id in scores(), ood in scores()) {
        // On the input grid, 3x + 1 and exp(x / 4) keep the order and the ties exactly in f32.
        let lin = |v: &[f32]| v.iter().map(|x| 3.0 * x + 1.0).collect::<Vec<f32>>();
        let ex = |v: &[f32]| v.iter().map(|x| (x / 4.0).exp()).collect::<Vec<f32>>();
        for c in Convention::ALL {
            let m = evaluate(&id, &ood, c).unwrap();
            prop_assert_eq!(m, evaluate(&lin(&id), &lin(&ood), c).unwrap());
            prop_assert_eq!(m, evaluate(&ex(&id), &ex(&ood), c).unwrap());
        }
    }

    #[test]
    fn every_fpr_and_aupr_in_unit_interval(id in scores(), ood in scores()) {
        let r = RankedScores::new(&id, &ood).unwrap();
        for rule in RULES {
            let f = r.fpr95(rule);
            prop_assert!((0.0..=1.0).contains(&f), "{:?} gave {}", rule, f);
        }
        for kind in [AuprKind::Trapezoid, AuprKind::AveragePrecision, AuprKind::KnnOod] {
            for pos in [Positive::Id, Positive::Ood] {
                let v = r.aupr(pos, kind);
                prop_assert!((0.0..=1.0 + 1e-12).contains(&v), "{:?} {:?} gave {}", kind, pos, v);
            }
        }
    }

    #[test]
    fn conventions_agree_on_auroc(id in scores(), ood in scores()) {
        let a = auroc(&id, &ood).unwrap();
        for c in Convention::ALL {
            prop_assert_eq!(evaluate(&id, &ood, c).unwrap().auroc, a);
        }
        let curve = roc_curve(&id, &ood).unwrap();
        prop_assert!((curve.area() - a).abs() < 1e-12);
    }

    #[test]
    fn classic_fpr_is_brute_force_threshold_scan(id in scores(), ood in scores()) {
        // Classic exact: the highest threshold t (a data value) with #{ID >= t} >= 0.95 N_id,
        // then the fraction of OOD >= t.
        let mut ts: Vec<f32> = id.iter().chain(&ood).copied().collect();
        ts.sort_by(|a, b| b.total_cmp(a));
        let t = ts
            .into_iter()
            .find(|&t| id.iter().filter(|&&x| x >= t).count() as f64 / id.len() as f64 >= 0.95)
            .unwrap();
        let want = ood.iter().filter(|&&x| x >= t).count() as f64 / ood.len() as f64;
        let got = evaluate(&id, &ood, Convention::Classic).unwrap().fpr95;
        prop_assert_eq!(got, want);
    }

    #[test]
    fn knn_fpr_is_strict_quantile_rule(id in scores(), ood in scores()) {
        let mut sorted = id.clone();
        sorted.sort_by(f32::total_cmp);
        let tau = sorted[(0.05 * id.len() as f64).round_ties_even() as usize];
        let want = ood.iter().filter(|&&x| x > tau).count() as f64 / ood.len() as f64;
        prop_assert_eq!(evaluate(&id, &ood, Convention::Knn).unwrap().fpr95, want);
    }

    #[test]
    fn drop_step_never_lowers_fpr(id in scores(), ood in scores()) {
        let r = RankedScores::new(&id, &ood).unwrap();
        prop_assert!(r.fpr95(FprRule::Openood) >= r.fpr95(FprRule::OpenoodNoDrop));
        prop_assert!(r.fpr95(FprRule::OpenoodLegacy) >= r.fpr95(FprRule::ClassicExact));
    }
}
