//! Subcommands: each converts arguments into library calls.

use crate::args::{Cli, Command};
use anyhow::Result;

mod align;
mod bench;
mod common;
mod demo;
mod embed_text;
mod eval;
mod example;
mod extract;
mod holdout;
mod jigsaw;
mod list;
mod metrics;
mod neglabel;
mod score;
mod train;

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::List { .. } => list::run(),
        Command::Score(a) => score::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Example(a) => example::run(a),
        Command::Metrics {
            id,
            ood,
            convention,
            json,
        } => metrics::run(&id, &ood, convention.into(), json),
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
