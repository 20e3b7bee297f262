//! Conformance suite: every detector of [`DetectorSpec::all_defaults`] must pass these checks with
//! its default (paper) parameters.
//!
//! Data: synthetic "post-ReLU" Gaussian blobs shaped like ResNet-18 penultimate features (d = 512,
//! so that every paper default — e.g. ViM's D = 256 — is valid), C = 4 classes. Class `c` owns the
//! block of dims `[64c, 64c + 64)`: an ID sample of class `c` has `max(0, N(5, 0.5²))` there and
//! `max(0, N(0, 0.5²))` everywhere else (dims 256..512 are noise for every class). The head is the
//! class-mean head: `w_c` = indicator of block `c` / 8, bias 0, so ID logits are confident
//! (own class ≈ 40, others ≈ 1.6).
//!
//! The far blob is `max(0, N(0, 0.5²))` in every dim except `[256, 320)`, where it has
//! `max(0, N(2, 0.5²))`: no class block is active, and a block that no ID class (and no head row)
//! uses is, so it also leaves the ID principal subspace (ViM/Residual). It is far for
//! every family at once: small norm and another direction (KNN, Mahalanobis, ViM residual, SHE,
//! fDBD), flat logits (MSP, MaxLogit, Energy, GEN, KLM, GradNorm), small energy after ReAct clipping
//! (τ lies inside the ID block values since blocks are 12.5% > 10% of the activations), ASH/SCALE
//! shaping and DICE masking (the contribution matrix `W ⊙ m̄` is non-zero on 12.5% of entries, so
//! the 90th-percentile mask keeps most block weights of every class), and low cosine to every
//! label for MCM/NegLabel.
//!
//! Extra inputs: detectors that need more than features and a head get them here, explicitly, in
//! [`negatives`]: NegLabel gets 200 synthetic negative-label embeddings `|N(0, 1)|` (close to the
//! flat OOD direction, far from the block-shaped ID directions); GROOD gets OOD validation
//! features ([`ood_val`]: 100 rows of `max(0, N(0, 0.5²))` in every dim, no block active, so not
//! the far blob itself). Add a line there for any new detector of that kind.
//!
//! Checks per detector: fit from memory and from a feature file give the same scores; scores are
//! finite and one per sample; fitting twice gives the same scores; scoring a prefix gives the prefix
//! of the scores (to 1e-5 relative: a GEMM may block a smaller matrix differently, which can change
//! the last bits); ID vs far blob AUROC > 0.95 (pairwise count, ties ½); a wrong feature dimension,
//! a wrong logit count and an empty input are `Err`, not panics; the scorer is `Send + Sync`.

use ndarray::{Array1, Array2, s};
use ood_core::probes::Probe;
use ood_core::{DetectorSpec, FeatureFile, Features, FitData, Head, Scorer, SideInputs};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

const C: usize = 4;
const D: usize = 512;
const BLOCK: usize = 64;

struct Blobs {
    head: Head,
    train: Features,
    id_test: Features,
    ood: Features,
}

fn relu_normal(rng: &mut ChaCha8Rng, mean: f32) -> f32 {
    Normal::new(mean, 0.5f32)
        .expect("valid normal")
        .sample(rng)
        .max(0.0)
}

fn sample(rng: &mut ChaCha8Rng, class: Option<usize>) -> Vec<f32> {
    (0..D)
        .map(|j| {
            let mean = match class {
                Some(c) if j / BLOCK == c => 5.0,
                None if j / BLOCK == 4 => 2.0,
                _ => 0.0,
            };
            relu_normal(rng, mean)
        })
        .collect()
}

fn features(rng: &mut ChaCha8Rng, head: &Head, classes: &[Option<usize>]) -> Features {
    let flat: Vec<f32> = classes.iter().flat_map(|&c| sample(rng, c)).collect();
    let emb = Array2::from_shape_vec((classes.len(), D), flat).expect("shape");
    let labels = classes.iter().map(|c| c.map_or(-1, |c| c as i64)).collect();
    Features::with_head(emb, head, Some(labels)).expect("finite features")
}

fn blobs() -> Blobs {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let weight = Array2::from_shape_fn(
        (C, D),
        |(c, j)| {
            if j / BLOCK == c { 1.0 / 8.0 } else { 0.0 }
        },
    );
    let head = Head::new(weight, Array1::zeros(C)).expect("head");
    let id = |n: usize| (0..n).map(|i| Some(i % C)).collect::<Vec<_>>();
    let train = features(&mut rng, &head, &id(1200));
    let id_test = features(&mut rng, &head, &id(200));
    let ood = features(&mut rng, &head, &vec![None; 200]);
    Blobs {
        head,
        train,
        id_test,
        ood,
    }
}

/// The side inputs of detectors that need more than features and a head: NegLabel's negatives.
fn negatives() -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let normal = Normal::new(0.0f32, 1.0).expect("valid normal");
    Array2::from_shape_fn((200, D), |_| normal.sample(&mut rng).abs())
}

/// GROOD's OOD validation features: flat noise, no class block and not the far blob's block.
fn ood_val(head: &Head) -> Features {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let flat: Vec<f32> = (0..100 * D).map(|_| relu_normal(&mut rng, 0.0)).collect();
    let emb = Array2::from_shape_vec((100, D), flat).expect("shape");
    Features::with_head(emb, head, None).expect("finite features")
}

fn side<'a>(negatives: &'a Array2<f32>, ood_val: &'a Features) -> SideInputs<'a> {
    SideInputs {
        negatives: Some(negatives),
        ood_val: Some(ood_val),
    }
}

/// Tie-aware Mann–Whitney AUROC with ID as the positive class, by the O(n·m) pairwise count.
fn auroc(id: &[f32], ood: &[f32]) -> f64 {
    let mut wins = 0.0;
    for &a in id {
        for &b in ood {
            if a > b {
                wins += 1.0;
            } else if a == b {
                wins += 0.5;
            }
        }
    }
    wins / (id.len() * ood.len()) as f64
}

/// A stand-in for the network side: the features with every probe tensor `spec` scores, shaped
/// as the network computes it (ODIN-style perturbed logits: the logits themselves).
fn probed(f: &Features, spec: &DetectorSpec) -> Features {
    with_probes(f, spec.probes())
}

/// The fit data as the network side gives it to `spec` (with [`DetectorSpec::fit_probes`]).
fn probed_fit(f: &Features, spec: &DetectorSpec) -> Features {
    with_probes(f, spec.fit_probes())
}

fn with_probes(f: &Features, probes: Vec<Probe>) -> Features {
    let mut f = f.clone();
    for p in probes {
        let v = match p {
            Probe::Odin { .. } | Probe::Iodin { .. } | Probe::RankFeat => f.logits.clone(),
            // Perturbed features: the features moved a little, more for the far blob's rows.
            Probe::AdaScale { .. } => f.embeddings.mapv(|v| v * 0.9),
            // Per "layer" and power, channel statistics: two layers, the features and their
            // squares, repeated for every power.
            Probe::Gram { powers } => {
                for (l, layer) in [f.embeddings.clone(), f.embeddings.mapv(|v| v * v)]
                    .into_iter()
                    .enumerate()
                {
                    let views = vec![layer.view(); powers as usize];
                    let v = ndarray::concatenate(ndarray::Axis(1), &views).expect("same rows");
                    f.set_probe_part(&p, l, v).expect("probe rows match");
                }
                continue;
            }
            // Per "layer", channel means (perturbed or not): the features and their squares.
            Probe::LayerMeans | Probe::MdsEnsemble { .. } => {
                for (l, layer) in [f.embeddings.clone(), f.embeddings.mapv(|v| v * v)]
                    .into_iter()
                    .enumerate()
                {
                    f.set_probe_part(&p, l, layer).expect("probe rows match");
                }
                continue;
            }
        };
        f.set_probe(&p, v).expect("probe rows match");
    }
    f
}

fn fit(spec: &DetectorSpec, data: &FitData<'_>, head: &Head) -> Box<dyn Scorer> {
    let (neg, val) = (negatives(), ood_val(head));
    spec.as_detector()
        .fit_with(data, head, &side(&neg, &val))
        .unwrap_or_else(|e| panic!("{}: fit failed: {e}", spec.name()))
}

#[test]
fn conformance_every_default_detector() {
    let b = blobs();
    let dir = tempfile::tempdir().expect("temp dir");
    let train_path = dir.path().join("train.safetensors");
    b.train.save(&train_path).expect("save train features");
    let plain_train_file = FeatureFile::open(&train_path).expect("open train features");
    let n_id = b.id_test.len();
    let mut report = Vec::new();
    let (neg, val) = (negatives(), ood_val(&b.head));
    for spec in DetectorSpec::all_defaults() {
        let name = spec.name();
        let train = probed_fit(&b.train, &spec);
        let probed_train_file = (!spec.fit_probes().is_empty()).then(|| {
            let p = dir.path().join(format!("train-{name}.safetensors"));
            train.save(&p).expect("save probed train features");
            FeatureFile::open(&p).expect("open probed train features")
        });
        let train_file = probed_train_file.as_ref().unwrap_or(&plain_train_file);
        let scorer = fit(&spec, &(&train).into(), &b.head);
        let (id_test, ood_set) = (probed(&b.id_test, &spec), probed(&b.ood, &spec));

        // Finite, one per sample.
        let id = scorer.score(&id_test).expect("score id");
        let ood = scorer.score(&ood_set).expect("score ood");
        assert_eq!(id.len(), n_id, "{name}");
        assert_eq!(ood.len(), b.ood.len(), "{name}");
        assert!(
            id.iter().chain(ood.iter()).all(|v| v.is_finite()),
            "{name}: non-finite score"
        );

        // Deterministic: a second fit gives the same scores.
        let again = fit(&spec, &(&train).into(), &b.head)
            .score(&id_test)
            .expect("score");
        assert_eq!(id, again, "{name}: two fits disagree");

        // Fitting from a feature file (streamed) gives the same scores as from memory.
        let from_file = fit(&spec, &train_file.into(), &b.head)
            .score(&id_test)
            .expect("score");
        assert_eq!(id, from_file, "{name}: file fit differs from memory fit");

        // Subset-invariant.
        let k = 37;
        let prefix = scorer.score(&id_test.slice(0, k)).expect("score prefix");
        for (i, (a, w)) in prefix.iter().zip(id.slice(s![..k])).enumerate() {
            assert!(
                (a - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{name}: row {i}: prefix score {a} vs full-batch score {w}"
            );
        }

        // Separates the far blob.
        let a = auroc(
            id.as_slice().expect("contiguous"),
            ood.as_slice().expect("contiguous"),
        );
        report.push(format!("{name}: AUROC {a:.4}"));
        assert!(a > 0.95, "{name}: AUROC {a} on the far blob");

        // Wrong shapes and empty input are errors.
        let wrong_d = Features::new(Array2::zeros((3, D + 1)), Array2::zeros((3, C)), None)
            .expect("features");
        assert!(scorer.score(&wrong_d).is_err(), "{name}: wrong feature dim");
        let wrong_c =
            Features::new(Array2::ones((3, D)), Array2::zeros((3, C + 1)), None).expect("features");
        assert!(scorer.score(&wrong_c).is_err(), "{name}: wrong logit count");
        assert!(
            scorer.score(&id_test.slice(0, 0)).is_err(),
            "{name}: empty input"
        );
        let wrong_fit = Features::new(
            Array2::ones((8, D + 1)),
            Array2::zeros((8, C)),
            Some(vec![0; 8]),
        )
        .expect("features");
        assert!(
            spec.as_detector()
                .fit_with(&(&wrong_fit).into(), &b.head, &side(&neg, &val))
                .is_err(),
            "{name}: fit data of the wrong dimension"
        );
    }
    println!("{}", report.join("\n"));
}

/// The confident-head case: the same blobs under a head three times larger (ID logit gaps
/// ≈ 115 ± 2, so `1 − MSP ≈ e^{−115}` underflows in f32 and rounds away in f64). Distinct inputs
/// have distinct exact scores, so a detector whose output saturates (every confident sample
/// scored exactly 1, or the same rounded value) ties most ID samples and loses their ranking: at
/// most 2 of the 200 ID test samples may share a score with another, and the far blob must still
/// separate.
#[test]
fn conformance_confident_head_does_not_saturate() {
    let b = blobs();
    let head = Head::new(&b.head.weight * 3.0, b.head.bias.clone()).expect("head");
    let rescore = |f: &Features| {
        Features::with_head(f.embeddings.clone(), &head, f.labels.clone()).expect("features")
    };
    let (train, id_test, ood) = (rescore(&b.train), rescore(&b.id_test), rescore(&b.ood));
    let mut failures = Vec::new();
    for spec in DetectorSpec::all_defaults() {
        let name = spec.name();
        let scorer = fit(&spec, &(&probed_fit(&train, &spec)).into(), &head);
        let id = scorer.score(&probed(&id_test, &spec)).expect("score id");
        let far = scorer.score(&probed(&ood, &spec)).expect("score ood");
        let mut sorted = id.to_vec();
        sorted.sort_by(f32::total_cmp);
        let tied = (0..sorted.len())
            .filter(|&i| {
                (i > 0 && sorted[i - 1] == sorted[i])
                    || (i + 1 < sorted.len() && sorted[i + 1] == sorted[i])
            })
            .count();
        let a = auroc(
            id.as_slice().expect("contiguous"),
            far.as_slice().expect("contiguous"),
        );
        // Gram scores every sample inside all fitted ranges exactly 0 (the method's own ties,
        // not float32 rounding: its deviation is a sum of clamped terms). CF-OOD's score is a
        // value of its neighbour-fraction grid (at most 231 values; every sample in the densest
        // region gets the first one), so it ties by construction too.
        let ties_by_construction = matches!(spec, DetectorSpec::Gram(_) | DetectorSpec::Cfood(_));
        if (tied > 2 && !ties_by_construction) || a <= 0.95 {
            failures.push(format!(
                "{name}: {tied} of {} ID scores tied, far AUROC {a:.4}",
                id.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "saturated scores:\n{}",
        failures.join("\n")
    );
}

#[test]
fn conformance_specs_round_trip_through_names_and_params() {
    for spec in DetectorSpec::all_defaults() {
        let tag = serde_json::to_value(&spec).expect("serialise")["name"].clone();
        assert_eq!(tag, spec.name(), "serde tag and registry name differ");
        for s in std::iter::once(spec.clone()).chain(spec.sweep()) {
            let params: Vec<(String, String)> = s
                .params()
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect();
            let back = DetectorSpec::from_name(s.name(), &params).expect("from_name");
            assert_eq!(back, s);
        }
    }
}

#[test]
fn conformance_sweeps_follow_openood_grids() {
    let grid = |name: &str| {
        DetectorSpec::from_name(name, &[])
            .expect("registered")
            .sweep()
            .iter()
            .map(|s| serde_json::Value::Object(s.params()))
            .collect::<Vec<_>>()
    };
    let gen_grid = grid("gen");
    assert_eq!(gen_grid.len(), 42);
    // OpenOOD APS order: the first listed parameter (gamma) varies fastest.
    assert_eq!(gen_grid[0]["gamma"], 0.01);
    assert_eq!(gen_grid[1]["gamma"], 0.1);
    assert_eq!(gen_grid[1]["m"], 10);
    assert_eq!(gen_grid[7]["gamma"], 0.01);
    assert_eq!(gen_grid[7]["m"], 50);
    assert_eq!(gen_grid[41]["m"], 1000);
    let p = |g: Vec<serde_json::Value>| -> Vec<f64> {
        g.iter()
            .map(|v| v["percentile"].as_f64().expect("percentile"))
            .collect()
    };
    assert_eq!(p(grid("react")), vec![85.0, 90.0, 95.0, 99.0]);
    let ash = vec![65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0];
    assert_eq!(p(grid("ash")), ash);
    assert_eq!(p(grid("scale")), ash);
    assert_eq!(grid("fdbd").len(), 2);
    for none in ["klm", "dice", "she", "grad_norm", "mcm", "neg_label"] {
        assert!(grid(none).is_empty(), "{none} has no OpenOOD sweep");
    }
}
