//! The commands that run on cached numbers only (`list`, `score`, `eval`, `example`,
//! `metrics`), their arguments, and the helpers the network commands share with them.

use anyhow::Result;
use std::process::ExitCode;

pub mod args;
pub mod common;
pub mod eval;
pub mod example;
pub mod list;
pub mod metrics;
pub mod score;

use args::LightCommand;

/// `println!` for results on standard output, returning the write error instead of panicking:
/// a closed pipe (`ood list | head -3`) then ends the command quietly (see [`exit`]).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

/// Whether `name` is the name of a light subcommand (one that [`run`] handles).
pub fn is_light(name: &str) -> bool {
    <LightCommand as clap::Subcommand>::has_subcommand(name)
}

/// Runs a light command. A `--device` other than `cpu` needs the libtorch neighbour search
/// installed first (`ood-net` does that; `ood` hands such command lines over).
pub fn run(command: LightCommand) -> Result<()> {
    let device = command.device();
    if device != "cpu" && ood_core::detectors::knn::installed_search().is_none() {
        anyhow::bail!(
            "--device {device}: the KNN search on a device runs on libtorch, in `ood-net` (`ood` \
             hands such command lines to it when it is installed next to `ood`)"
        );
    }
    match command {
        LightCommand::List { .. } => list::run(),
        LightCommand::Score(a) => score::run(a),
        LightCommand::Eval(a) => eval::run(a),
        LightCommand::Example(a) => example::run(a),
        LightCommand::Metrics {
            id,
            ood,
            convention,
            json,
        } => metrics::run(&id, &ood, convention.into(), json),
    }
}

/// The process's exit: 0 on success; otherwise the error chain on stderr and exit code 2 (every
/// error of `ood` is a usage or input error the user can fix).
pub fn exit(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our standard output went away (`ood list | head`): nothing to report.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ood: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether the error comes from writing to a closed pipe.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
