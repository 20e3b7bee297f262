//! `ood`: out-of-distribution detection for image classifiers.
//!
//! The commands that need only numbers run here, without libtorch; every other command line
//! (network commands, a KNN search on a device, `--help`, `--version`, mistakes) goes to
//! `ood-net` beside this binary, which knows every command.

use clap::Parser;
use ood_cli::light::{self, args::LightCli};
use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let light_command = argv
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(light::is_light);
    if light_command {
        let cli = LightCli::parse_from(&argv);
        // A device search (`--device cuda`) runs on libtorch: ood-net's business.
        if cli.command.device() == "cpu" {
            return light::exit(light::run(cli.command));
        }
    }
    light::exit(hand_to_net(&argv))
}

/// Replaces this process by `ood-net` (same directory as this binary) with the same arguments.
fn hand_to_net(argv: &[OsString]) -> anyhow::Result<()> {
    use anyhow::Context;
    let exe = std::env::current_exe().context("finding the path of the `ood` binary")?;
    let net = exe.with_file_name(format!("ood-net{}", std::env::consts::EXE_SUFFIX));
    if !net.is_file() {
        anyhow::bail!(
            "this command needs the network half of oodkit, {}, which is not installed next to `ood` \
             (install both binaries of the ood-cli package, e.g. `cargo install --path crates/ood-cli`)",
            net.display()
        );
    }
    let mut cmd = std::process::Command::new(&net);
    cmd.args(argv.iter().skip(1));
    run_replacing(cmd, &net)
}

#[cfg(unix)]
fn run_replacing(mut cmd: std::process::Command, net: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    // exec only returns on failure.
    let err = cmd.arg0("ood").exec();
    Err(anyhow::anyhow!(err).context(format!("starting {}", net.display())))
}

#[cfg(not(unix))]
fn run_replacing(mut cmd: std::process::Command, net: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", net.display()))?;
    std::process::exit(status.code().unwrap_or(2));
}
