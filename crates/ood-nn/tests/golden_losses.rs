//! Training losses against golden values computed independently with PyTorch 2.11
//! (`scripts/golden_losses.py`, which defines the same closed-form inputs and prints these numbers).

use ood_nn::losses::{mixoe, reweightood, supcon, tagfog};
use tch::{Kind, Tensor};

/// `x[i, j] = sin(a·i + b·j + c)` in f64, cast to f32 (same formula as the python script).
fn grid(rows: i64, cols: i64, a: f64, b: f64, c: f64) -> Tensor {
    let v: Vec<f32> = (0..rows)
        .flat_map(|i| (0..cols).map(move |j| (a * i as f64 + b * j as f64 + c).sin() as f32))
        .collect();
    Tensor::from_slice(&v).view([rows, cols])
}

fn normalize(x: &Tensor) -> Tensor {
    let n = x
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    x / n
}

fn close(got: &Tensor, want: f64) {
    let g = got.double_value(&[]);
    assert!(
        (g - want).abs() <= 1e-5 * want.abs().max(1.0),
        "got {g}, want {want}"
    );
}

fn contrastive_inputs() -> (Tensor, Tensor) {
    let z = normalize(&grid(8, 5, 0.9, 1.7, 0.3));
    let y = Tensor::from_slice(&[0i64, 1, 2, 0, 0, 1, 2, 0]);
    (z, y)
}

#[test]
fn supcon_matches_pytorch() {
    let (z, y) = contrastive_inputs();
    close(&supcon::loss(&z, &y, 0.1, 0.07), 20.065053939819336);
    close(&supcon::loss(&z, &y, 0.5, 0.5), 3.6462342739105225);
}

#[test]
fn reweightood_matches_pytorch() {
    let (z, y) = contrastive_inputs();
    let p = reweightood::Params::default();
    close(&reweightood::loss(&z, &y, &p), 14.571277618408203);
    let p1 = reweightood::Params { tau: 1.0, ..p };
    close(&reweightood::loss(&z, &y, &p1), 5.8142499923706055);
}

#[test]
fn tagfog_matches_pytorch() {
    let y = Tensor::from_slice(&[0i64, 1, 3, 2, 0, 1, 3, 2]);
    let logits = grid(8, 4, 0.6, 1.1, 0.2) * 3.0;
    let z = normalize(&grid(8, 6, 0.8, 0.5, 1.0));
    let anchors = normalize(&grid(3, 6, 1.3, 0.4, 2.0));
    let t = tagfog::loss(&logits, &z, &anchors, &y, &tagfog::Params::default());
    close(&t.ce, 2.628025531768799);
    close(&t.ci, 5.891803741455078);
    close(&t.sc, 25.386598587036133);
    close(&t.total, 33.90642547607422);
}

#[test]
fn mixoe_matches_pytorch() {
    let zi = grid(4, 3, 0.7, 1.9, 0.1) * 2.0;
    let zm = grid(4, 3, 1.2, 0.3, 0.5) * 2.0;
    let y = Tensor::from_slice(&[0i64, 2, 1, 2]);
    close(&mixoe::soft_target_ce(&zm, &y, 0.3), 1.2134308815002441);
    close(&mixoe::loss(&zi, &y, &zm, 0.3, 5.0), 8.728715896606445);
}

#[test]
fn supcon_gradient_flows_and_is_finite() {
    let (z0, y) = contrastive_inputs();
    let z = z0.detach().set_requires_grad(true);
    let l = supcon::loss(&normalize(&z), &y, 0.1, 0.07);
    l.backward();
    let g = z.grad();
    assert!(g.isfinite().all().int64_value(&[]) == 1);
    assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
}
