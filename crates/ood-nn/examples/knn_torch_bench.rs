//! The KNN search on libtorch (`ood_nn::knn::TorchKnn`, what `--device` installs) on the data
//! that `cargo run --release -p ood-core --example knn_bench -- --dir DIR` writes (bank.npy,
//! queries.npy, and its exact answers rust_topk.npy), beside `scripts/bench_knn_faiss.py DIR`:
//! exact f32, bf16- and f16-screened; best of REPS; the k-th distances compared with ood-core's
//! built-in exact search.
//!
//! `. scripts/env && cargo run --release -p ood-nn --example knn_torch_bench -- DIR [K] [REPS] [cpu|cuda]`

use ndarray::Array2;
use ood_nn::knn::{Screen, TorchKnn};
use std::time::Instant;

fn load(path: &std::path::Path) -> Result<Array2<f32>, Box<dyn std::error::Error>> {
    let a = ood_nn::data::npy::read_npy(path)?;
    Ok(Array2::from_shape_vec(
        (a.shape[0], a.shape[1]),
        a.to_f32(),
    )?)
}

fn normalized(mut a: Array2<f32>) -> Array2<f32> {
    for mut r in a.rows_mut() {
        let n = r.dot(&r).sqrt();
        if n > 0.0 {
            r.mapv_inplace(|v| v / n);
        }
    }
    a
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(
        args.first()
            .ok_or("usage: knn_torch_bench DIR [K] [REPS] [DEVICE]")?,
    );
    let k: usize = args.get(1).map_or(Ok(50), |s| s.parse())?;
    let reps: usize = args.get(2).map_or(Ok(3), |s| s.parse())?;
    let device = ood_nn::device::parse_device(args.get(3).map_or("cpu", String::as_str))?;
    ood_nn::malloc::keep_heap_memory();
    let bank = normalized(load(&dir.join("bank.npy"))?);
    let queries = normalized(load(&dir.join("queries.npy"))?);
    let want = load(&dir.join("rust_topk.npy")).ok();
    println!(
        "bank {:?}, queries {:?}, k {k}, device {device:?}, torch threads {}",
        bank.dim(),
        queries.dim(),
        tch::get_num_threads()
    );
    for screen in [Screen::Exact, Screen::Bf16, Screen::F16] {
        let s = TorchKnn::new(device, screen);
        let mut best = f64::INFINITY;
        let mut got = None;
        for _ in 0..reps {
            let t = Instant::now();
            got = Some(s.kth_distances(bank.view(), queries.view(), &[k])?);
            best = best.min(t.elapsed().as_secs_f64());
        }
        let got = got.expect("reps >= 1");
        let diff = want.as_ref().map_or(f32::NAN, |w| {
            got.column(0)
                .iter()
                .zip(w.column(k - 1))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
        });
        println!(
            "{screen:?}: best {best:.3} s of {reps}; max |k-th distance - ood-core exact| {diff:.2e}; rows re-searched exactly {}",
            s.rechecked_rows()
        );
    }
    Ok(())
}
