//! `ood`: out-of-distribution detection for image classifiers.

use std::process::ExitCode;

mod args;
mod cmd;

fn main() -> ExitCode {
    // Reuse freed activation buffers instead of re-faulting fresh pages (ood_nn::malloc).
    ood_nn::malloc::keep_heap_memory();
    let args = args::parse();
    match cmd::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ood: {err:#}");
            ExitCode::from(2)
        }
    }
}
