//! `ood`: out-of-distribution detection for image classifiers.

use std::process::ExitCode;

mod args;
mod cmd;

fn main() -> ExitCode {
    let args = args::parse();
    match cmd::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ood: {err:#}");
            ExitCode::from(2)
        }
    }
}
