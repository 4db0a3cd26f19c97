//! # aosctl
//!
//! Operator CLI for AOS. Today it lints policy documents offline (policy as
//! code in CI pipelines) and prints the JSON Schema; cluster, key, audit and
//! governance commands join it as the control plane grows.
//!
//! Exit codes: 0 success, 1 a document was rejected, 2 usage error
//! (clap), 66 an input file could not be read.

pub mod policy;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(name = "aosctl", version, about = "Operate AOS: policies, cluster, governance")]
pub struct Cli {
    /// Output format.
    #[arg(short = 'o', long, value_enum, global = true, default_value_t = Output::Table)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Table,
    /// JSON for scripts.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with policy documents.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Policy(cmd) => policy::run(cmd, cli.output),
    }
}
