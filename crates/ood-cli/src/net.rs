//! `ood-net`: the `ood` command line with the network commands (extraction, training,
//! benchmarks, text encoders), which link libtorch. `ood` hands these command lines over; it
//! also runs the light commands, so `ood-net --help` lists everything.

use std::process::ExitCode;

mod args;
mod cmd;

fn main() -> ExitCode {
    // Reuse freed activation buffers instead of re-faulting fresh pages (ood_nn::malloc).
    ood_nn::malloc::keep_heap_memory();
    let args = args::parse();
    ood_cli::light::exit(cmd::run(args))
}
