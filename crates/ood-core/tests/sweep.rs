//! The parameter search: the KNN k-grid shortcut (one bank, one search for every k) must give
//! exactly what fitting and scoring each candidate separately gives.

use ood_core::benchmark::{BenchmarkInput, fit_detector, sweep};
use ood_core::detectors::{DetectorSpec, Knn};
use ood_core::features::FitData;
use ood_core::metrics;
use ood_core::synthetic::{SyntheticBenchmark, generate};

/// Fit on the synthetic train split; no OOD test sets (the sweep uses its own val pair).
fn input(b: &SyntheticBenchmark) -> BenchmarkInput<'_> {
    BenchmarkInput {
        fit: FitData::Memory(&b.train),
        fit_val: None,
        head: &b.head,
        id_test: &b.test,
        ood: &[],
        side: Default::default(),
    }
}

#[test]
fn knn_sweep_shortcut_equals_per_candidate_fits() {
    // 10 classes x 120 = 1,200 bank rows: every OpenOOD k (50..1000) is feasible.
    let b = generate(7, 10, 32, 120);
    let input = input(&b);
    let spec = DetectorSpec::Knn(Knn::default());
    let out = sweep(&spec, &input, &b.val, &b.near).unwrap();
    assert_eq!(out.candidates.len(), 5);
    let mut best = (f64::NEG_INFINITY, 0);
    for (i, cand) in out.candidates.iter().enumerate() {
        let scorer = fit_detector(&cand.spec, &input).unwrap();
        let si = scorer.score(&b.val).unwrap();
        let so = scorer.score(&b.near).unwrap();
        let a = metrics::auroc(si.as_slice().unwrap(), so.as_slice().unwrap()).unwrap();
        assert_eq!(cand.auroc.as_ref().copied().unwrap(), a, "{:?}", cand.spec);
        if a > best.0 {
            best = (a, i);
        }
    }
    assert_eq!(out.chosen, out.candidates[best.1].spec);
    assert!(!out.no_effect);
}

#[test]
fn knn_sweep_records_too_large_k_per_candidate() {
    // 10 classes x 30 = 300 rows: k = 500 and 1000 exceed the bank and are recorded as errors,
    // the rest are scored and one of them wins.
    let b = generate(3, 10, 16, 30);
    let input = input(&b);
    let out = sweep(&DetectorSpec::Knn(Knn::default()), &input, &b.val, &b.far).unwrap();
    let ok: Vec<bool> = out.candidates.iter().map(|c| c.auroc.is_ok()).collect();
    assert_eq!(ok, [true, true, true, false, false]);
    let err = out.candidates[3].auroc.as_ref().unwrap_err();
    assert!(err.contains("500"), "{err}");
    match out.chosen {
        DetectorSpec::Knn(k) => assert!([50, 100, 200].contains(&k.k)),
        other => panic!("chose {other:?}"),
    }
}

#[test]
fn a_detector_that_cannot_fit_is_skipped_and_the_others_run() {
    use ood_core::benchmark::{Group, OodSet, run};
    let b = generate(7, 10, 32, 120);
    // Fit data whose labels never match the head's predictions: SHE has no pattern for any class.
    let mut wrong = b.train.clone();
    let preds = wrong.predictions();
    wrong.labels = Some(preds.iter().map(|&p| ((p + 1) % 10) as i64).collect());
    let ood = [OodSet {
        name: "near".into(),
        group: Some(Group::Near),
        features: b.near.clone(),
    }];
    let input = BenchmarkInput {
        fit: FitData::Memory(&wrong),
        ood: &ood,
        ..input(&b)
    };
    let she = DetectorSpec::from_name("she", &[]).unwrap();
    let msp = DetectorSpec::from_name("msp", &[]).unwrap();
    let r = run(
        &input,
        &[she.clone(), msp],
        metrics::Convention::Openood,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].0, "she");
    assert!(r.skipped[0].1.contains("she"), "{}", r.skipped[0].1);
    assert_eq!(r.detectors.len(), 1);
    assert!(r.rows.iter().all(|row| row.detector == "msp") && !r.rows.is_empty());
    let table = ood_core::report::text_table(&r);
    assert!(table.contains("skipped she:"), "{table}");
    assert_eq!(ood_core::report::json(&r)["skipped"][0]["detector"], "she");
    // With nothing left to run, the failure is the error.
    let e = run(&input, &[she], metrics::Convention::Openood, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("detector she: fitting failed"), "{e}");
}
