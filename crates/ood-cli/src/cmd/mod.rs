//! Subcommands: each converts arguments into library calls.

use crate::args::{Cli, Command};
use anyhow::Result;

mod align;
mod bench;
mod demo;
mod embed_text;
mod extract;
mod holdout;
mod jigsaw;
mod neglabel;
mod train;

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Light(c) => {
            if c.device() != "cpu" {
                ood_nn::knn::install(ood_nn::device::parse_device(c.device())?, None);
            }
            ood_cli::light::run(c)
        }
        Command::Demo(a) => demo::run(a),
        Command::Extract(a) => extract::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Align(a) => align::run(&a).map(|_| ()),
        Command::EmbedText(args) => embed_text::run(&args),
        Command::Neglabel { command } => neglabel::run(command),
        Command::Train(a) => train::run(&a),
        Command::Jigsaw(a) => jigsaw::run(&a),
        Command::Holdout(a) => holdout::run(&a),
    }
}
