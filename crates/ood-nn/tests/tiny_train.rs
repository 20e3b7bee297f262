//! The training loop on a tiny CNN and 64 synthetic 8x8 images: the loss goes down, an
//! interrupted-and-resumed run ends with exactly the weights of an uninterrupted one, and outlier
//! exposure runs.

use ood_nn::Forward;
use ood_nn::losses::Method;
use ood_nn::train::{Augment, TrainConfig, TrainData, train};
use tch::{Device, Kind, Tensor, nn, nn::ModuleT};

struct Tiny {
    vs: nn::VarStore,
    body: nn::SequentialT,
    fc: nn::Linear,
}

impl Tiny {
    fn fwd(&self, x: &Tensor, train: bool) -> Forward {
        let features = self.body.forward_t(x, train);
        let logits = features.apply(&self.fc);
        Forward { features, logits }
    }
}

/// Deterministic pseudo-normal values from a seeded ChaCha stream (tests run in parallel threads,
/// so libtorch's global generator cannot be used for reproducible inputs or weights).
fn noise(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
            let u2: f32 = rng.r#gen();
            scale * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

fn tiny() -> Tiny {
    let vs = nn::VarStore::new(Device::Cpu);
    let p = vs.root();
    let body = nn::seq_t()
        .add(nn::conv2d(
            &p / "c1",
            3,
            8,
            3,
            nn::ConvConfig {
                padding: 1,
                ..Default::default()
            },
        ))
        .add(nn::batch_norm2d(&p / "bn", 8, Default::default()))
        .add_fn(|x| x.relu())
        .add_fn(|x| x.adaptive_avg_pool2d([1, 1]).flatten(1, -1));
    let fc = nn::linear(&p / "fc", 8, 2, Default::default());
    // Overwrite the random initialisation with fixed values (BN running statistics keep their
    // deterministic 0/1 start).
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (i, (name, mut v)) in vars.into_iter().enumerate() {
            if name.contains("running_") {
                continue;
            }
            let n = v.numel();
            let vals = if name.ends_with("bn.weight") {
                vec![1.0; n]
            } else {
                noise(100 + i as u64, n, 0.3)
            };
            v.copy_(&Tensor::from_slice(&vals).view(v.size().as_slice()));
        }
    });
    Tiny { vs, body, fc }
}

/// Class 0: red-ish images; class 1: blue-ish images; plus noise.
fn data() -> (Tensor, Tensor) {
    let n = 64;
    let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(2);
    let mut x = Tensor::from_slice(&noise(1, 64 * 3 * 8 * 8, 0.8)).view([n, 3, 8, 8]);
    let sign = labels.to_kind(Kind::Float).view([n, 1, 1, 1]) * 2.0 - 1.0; // -1 for class 0, +1 for 1
    let colour = Tensor::from_slice(&[-1.0f32, 0.0, 1.0]).view([1, 3, 1, 1]);
    x += sign * colour * 0.6;
    (x, labels)
}

fn cfg(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        lr: 0.05,
        lr_min: 0.0,
        warmup_epochs: 1,
        weight_decay: 5e-4,
        augment: Some(Augment {
            crop_padding: 1,
            horizontal_flip: true,
            pad_value: [0.0; 3],
            simclr: None,
        }),
        seed: 3,
        ..TrainConfig::default()
    }
}

fn weights(vs: &nn::VarStore) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = vs
        .variables()
        .into_iter()
        .map(|(k, t)| (k, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn training_reduces_the_loss() {
    tch::set_num_threads(1);
    let (x, y) = data();
    let m = tiny();
    let fwd = |x: &Tensor, t: bool| m.fwd(x, t);
    let logs = train(
        &m.vs,
        &fwd,
        &TrainData::new(&x, &y),
        &cfg(6),
        None,
        false,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(logs.len(), 6);
    assert!(
        logs[5].loss < 0.6 * logs[0].loss,
        "loss {} -> {}",
        logs[0].loss,
        logs[5].loss
    );
    assert!(logs[5].accuracy > 0.9, "accuracy {}", logs[5].accuracy);
}

#[test]
fn resume_gives_the_same_weights_as_an_uninterrupted_run() {
    tch::set_num_threads(1);
    let (x, y) = data();
    let d = TrainData::new(&x, &y);
    let full = tiny();
    let f1 = |x: &Tensor, t: bool| full.fwd(x, t);
    let dir_a = tempfile::tempdir().unwrap();
    train(
        &full.vs,
        &f1,
        &d,
        &cfg(3),
        Some(dir_a.path()),
        false,
        &mut |_| {},
    )
    .unwrap();

    // Interrupted: 2 epochs of a 3-epoch run are simulated by training a fresh model with a copy of
    // the 3-epoch config for 2 epochs' worth: we run the 3-epoch config but stop the process after
    // epoch 2 by truncating the state (the checkpoint after epoch 2 is what a kill leaves behind).
    let dir_b = tempfile::tempdir().unwrap();
    train_until_killed(dir_b.path(), 3);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir_b.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(state["epochs_done"], 2);

    let resumed = tiny();
    let f3 = |x: &Tensor, t: bool| resumed.fwd(x, t);
    let logs = train(
        &resumed.vs,
        &f3,
        &d,
        &cfg(3),
        Some(dir_b.path()),
        true,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(logs.len(), 3);
    assert_eq!(weights(&resumed.vs), weights(&full.vs));
    // A different config refuses to resume.
    let mut other = cfg(3);
    other.lr = 0.01;
    assert!(
        train(
            &resumed.vs,
            &f3,
            &d,
            &other,
            Some(dir_b.path()),
            true,
            &mut |_| {}
        )
        .is_err()
    );
}

/// Trains `cfg(3)` in `dir` and simulates a kill at the first step of epoch `kill_at`.
fn train_until_killed(dir: &std::path::Path, kill_at: usize) {
    let (x, y) = data();
    let d = TrainData::new(&x, &y);
    let m = tiny();
    let f = |x: &Tensor, t: bool| m.fwd(x, t);
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(&m.vs, &f, &d, &cfg(3), Some(dir), false, &mut |s| {
            if s.epoch == kill_at && s.step == 1 {
                panic!("simulated kill");
            }
        })
    }));
    assert!(
        killed.is_err(),
        "the simulated kill must interrupt training"
    );
}

/// Issue 12: a crash between writing the checkpoint and writing `state.json` used to pair the
/// weights of epoch 2 with the state of epoch 1, and `--resume` accepted it (final weights off by
/// up to 1.59). The state now lives inside the checkpoint: a stale `state.json` changes nothing.
#[test]
fn resume_after_a_crash_between_checkpoint_and_state_is_exact() {
    tch::set_num_threads(1);
    let (x, y) = data();
    let d = TrainData::new(&x, &y);
    let full = tiny();
    let f1 = |x: &Tensor, t: bool| full.fwd(x, t);
    let dir_full = tempfile::tempdir().unwrap();
    train(
        &full.vs,
        &f1,
        &d,
        &cfg(3),
        Some(dir_full.path()),
        false,
        &mut |_| {},
    )
    .unwrap();

    let after_one = tempfile::tempdir().unwrap();
    train_until_killed(after_one.path(), 2);
    let crashed = tempfile::tempdir().unwrap();
    train_until_killed(crashed.path(), 3);
    // The crash window: the epoch-2 checkpoint is in place, state.json still says epoch 1.
    std::fs::copy(
        after_one.path().join("state.json"),
        crashed.path().join("state.json"),
    )
    .unwrap();
    let stale: serde_json::Value =
        serde_json::from_slice(&std::fs::read(crashed.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(stale["epochs_done"], 1);

    let resumed = tiny();
    let f3 = |x: &Tensor, t: bool| resumed.fwd(x, t);
    let logs = train(
        &resumed.vs,
        &f3,
        &d,
        &cfg(3),
        Some(crashed.path()),
        true,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(logs.len(), 3);
    assert_eq!(weights(&resumed.vs), weights(&full.vs));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(crashed.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(state["epochs_done"], 3);
}

#[test]
fn outlier_exposure_trains_and_flattens_outlier_predictions() {
    tch::set_num_threads(1);
    let (x, y) = data();
    let outliers = Tensor::from_slice(&noise(2, 32 * 3 * 8 * 8, 0.5)).view([32, 3, 8, 8]);
    let m = tiny();
    let fwd = |x: &Tensor, t: bool| m.fwd(x, t);
    let mut c = cfg(6);
    c.method = Method::OutlierExposure {
        weight: 0.5,
        outlier_ratio: 1.0,
    };
    let logs = train(
        &m.vs,
        &fwd,
        &TrainData {
            images: &x,
            labels: &y,
            outliers: Some(&outliers),
            anchors: None,
        },
        &c,
        None,
        false,
        &mut |_| {},
    )
    .unwrap();
    assert!(logs[5].loss < logs[0].loss);
    let z = tch::no_grad(|| m.fwd(&outliers, false).logits);
    let msp_out = z
        .softmax(-1, Kind::Float)
        .max_dim(-1, false)
        .0
        .mean(Kind::Float)
        .double_value(&[]);
    let zi = tch::no_grad(|| m.fwd(&x, false).logits);
    let msp_in = zi
        .softmax(-1, Kind::Float)
        .max_dim(-1, false)
        .0
        .mean(Kind::Float)
        .double_value(&[]);
    assert!(msp_out < msp_in, "outliers {msp_out} vs ID {msp_in}");
    // OE without outliers is a configuration error, not a panic.
    assert!(
        train(
            &m.vs,
            &fwd,
            &TrainData::new(&x, &y),
            &c,
            None,
            false,
            &mut |_| {}
        )
        .is_err()
    );
}

#[test]
fn mixoe_trains_and_resumes_exactly() {
    tch::set_num_threads(1);
    let (x, y) = data();
    let outliers = Tensor::from_slice(&noise(2, 32 * 3 * 8 * 8, 0.5)).view([32, 3, 8, 8]);
    let d = TrainData {
        images: &x,
        labels: &y,
        outliers: Some(&outliers),
        anchors: None,
    };
    let mut c = cfg(4);
    c.method = Method::MixOe {
        alpha: 1.0,
        beta: 1.0,
        mix: ood_nn::losses::mixoe::Mix::Cutmix,
    };
    let full = tiny();
    let f1 = |x: &Tensor, t: bool| full.fwd(x, t);
    let logs = train(&full.vs, &f1, &d, &c, None, false, &mut |_| {}).unwrap();
    assert!(
        logs[3].loss < logs[0].loss,
        "loss {} -> {}",
        logs[0].loss,
        logs[3].loss
    );
    // Kill after epoch 2, resume: the same weights as the uninterrupted run (λ and the CutMix box
    // come from the per-epoch seeded generator).
    let dir = tempfile::tempdir().unwrap();
    let part = tiny();
    let f2 = |x: &Tensor, t: bool| part.fwd(x, t);
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(&part.vs, &f2, &d, &c, Some(dir.path()), false, &mut |s| {
            if s.epoch == 3 && s.step == 1 {
                panic!("simulated kill");
            }
        })
    }));
    assert!(killed.is_err());
    let resumed = tiny();
    let f3 = |x: &Tensor, t: bool| resumed.fwd(x, t);
    train(
        &resumed.vs,
        &f3,
        &d,
        &c,
        Some(dir.path()),
        true,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(weights(&resumed.vs), weights(&full.vs));
}

/// Channels-last changes only the memory layout: the same run in fp32 ends with the same weights
/// (up to convolution-algorithm rounding), exported contiguous. bf16 autocast trains too, with
/// its losses close to the fp32 run's, and records both settings in its checkpoint.
#[test]
fn channels_last_and_bf16_autocast_train() {
    use ood_nn::train::Precision;
    tch::set_num_threads(1);
    let (x, y) = data();
    let d = TrainData::new(&x, &y);
    let run = |c: &TrainConfig, dir: Option<&std::path::Path>| {
        let m = tiny();
        let fwd = |x: &Tensor, t: bool| m.fwd(x, t);
        let logs = train(&m.vs, &fwd, &d, c, dir, false, &mut |_| {}).unwrap();
        for (name, v) in m.vs.variables() {
            assert!(
                v.is_contiguous(),
                "{name} is exported in the default layout"
            );
        }
        (logs, weights(&m.vs))
    };
    let (logs32, w32) = run(&cfg(6), None);
    let mut cl = cfg(6);
    cl.channels_last = true;
    let (logs_cl, w_cl) = run(&cl, None);
    for ((name, a), (_, b)) in w32.iter().zip(&w_cl) {
        let diff = a
            .iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{name}: channels-last differs by {diff}");
    }
    assert!((logs32[5].loss - logs_cl[5].loss).abs() < 1e-3);

    let mut bf = cfg(6);
    bf.precision = Precision::Bf16;
    bf.channels_last = true;
    let dir = tempfile::tempdir().unwrap();
    let (logs_bf, w_bf) = run(&bf, Some(dir.path()));
    assert!(logs_bf[5].loss < 0.6 * logs_bf[0].loss, "{logs_bf:?}");
    assert!(logs_bf[5].accuracy > 0.9, "{logs_bf:?}");
    for (a, b) in logs32.iter().zip(&logs_bf) {
        assert!(
            (a.loss - b.loss).abs() < 0.05 * a.loss.max(0.1),
            "epoch {}: fp32 loss {} vs bf16 {}",
            a.epoch,
            a.loss,
            b.loss
        );
    }
    // bf16 rounding makes the weights differ from fp32's (measured 4.5e-4 relative, against
    // ~1e-7 for channels-last alone), but not by much.
    let (mut num, mut den) = (0f64, 0f64);
    for ((_, a), (_, b)) in w32.iter().zip(&w_bf) {
        for (p, q) in a.iter().zip(b) {
            num += f64::from(p - q).powi(2);
            den += f64::from(*p).powi(2);
        }
    }
    let rel = (num / den).sqrt();
    assert!(rel > 1e-5 && rel < 0.1, "relative weight difference {rel}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(state["config"]["precision"], "bf16");
    assert_eq!(state["config"]["channels_last"], true);
}
