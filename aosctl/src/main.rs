//! `aosctl`: the operator CLI. Thin: argument parsing and output; the work
//! is done by library code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = aosctl::Cli::parse();
    aosctl::run(cli)
}
