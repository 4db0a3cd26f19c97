//! # aosctl
//!
//! Operator CLI for AOS: lints policy documents offline (policy as code in
//! CI pipelines), prints the JSON Schema, and drives a control-plane
//! cluster over its REST API (`/api/v1/`).
//!
//! ## Layout
//! - [`client`]: endpoints tried in turn, bearer auth, error mapping.
//! - [`output`]: tables, JSON, timestamps, the stderr error report.
//! - [`cluster`], [`tenant`], [`key`], [`policy`], [`audit`]: one module
//!   per command group.
//!
//! Exit codes: 0 success; 1 the server refused, a document was rejected or
//! the audit chain does not verify; 2 usage error (clap, or a missing
//! token); 66 an input file could not be read; 69 no endpoint reachable
//! (`EX_UNAVAILABLE`); 74 stdout could not be written.

pub mod agent;
pub mod audit;
pub mod client;
pub mod cluster;
pub mod data;
pub mod export;
pub mod governance;
pub mod incident;
pub mod key;
pub mod output;
pub mod policy;
pub mod tenant;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use client::{Client, ClientError, Token};

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(name = "aosctl", version, about = "Operate AOS: policies, cluster, governance")]
pub struct Cli {
    /// Output format.
    #[arg(short = 'o', long, value_enum, global = true, default_value_t = Output::Table)]
    pub output: Output,
    /// Control-plane REST endpoints, tried in turn (repeat the flag or
    /// separate with commas).
    #[arg(
        long = "endpoint",
        global = true,
        value_delimiter = ',',
        env = "AOS_ENDPOINT",
        default_value = "http://127.0.0.1:7070"
    )]
    pub endpoints: Vec<String>,
    /// API key (bearer token).
    #[arg(long, global = true, env = "AOS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the API key (e.g. `<data-dir>/operator.key`); takes
    /// precedence over --token and AOS_TOKEN.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Table,
    /// JSON for scripts (the server's JSON where there is one).
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with policies: offline validation and the cluster's policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Cluster membership and status.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Tenants.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Tenant API keys.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// The audit ledger.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Edge agents: join tokens and the agent list with sync status.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Governance state: the kill switch, degraded mode and emergency halt.
    #[command(subcommand)]
    Governance(governance::GovernanceCommand),
    /// Incidents: list, inspect, acknowledge, resolve, suppress.
    #[command(subcommand)]
    Incident(incident::IncidentCommand),
    /// Data sources: register, set credentials, verify, enable, disable.
    #[command(subcommand)]
    Source(data::SourceCommand),
    /// Knowledge planes: create, bind sources, activate as owner.
    #[command(subcommand)]
    Plane(data::PlaneCommand),
    /// Evidence exports: signed bundles, and checking them offline.
    #[command(subcommand)]
    Export(export::ExportCommand),
}

/// How to reach the cluster, from the global flags.
#[derive(Debug)]
pub struct Remote {
    endpoints: Vec<String>,
    token: Token,
    /// Output format.
    pub output: Output,
}

impl Remote {
    /// A client; fails when no token was given or an endpoint is malformed.
    pub fn client(&self) -> Result<Client, CliError> {
        Client::new(&self.endpoints, &self.token)
            .map_err(|source| CliError::Request { what: "configuring the client".to_owned(), source })
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A request failed.
    #[error("{what}: {source}")]
    Request {
        /// What was attempted, e.g. "listing policies of tenant `acme`".
        what: String,
        /// Why it failed.
        source: ClientError,
    },
    /// An input file could not be read.
    #[error("cannot read `{}`: {source}", .path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The command line is wrong in a way clap does not check.
    #[error("{0}")]
    Usage(String),
    /// A check failed (already reported on stdout).
    #[error("{0}")]
    Failed(String),
    /// Stdout could not be written.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// Wraps a client error with what was attempted.
    pub fn request(what: impl Into<String>) -> impl FnOnce(ClientError) -> CliError {
        let what = what.into();
        move |source| CliError::Request { what, source }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Request { source, .. } => source.exit_code(),
            CliError::Input { .. } => 66,
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
            CliError::Output(_) => 74,
        }
    }

    /// Writes the error to stderr.
    pub fn report(&self) {
        match self {
            CliError::Request { what, source } => output::report(what, source),
            other => eprintln!("aosctl: {other}"),
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let token = match (cli.token_file, cli.token) {
        (Some(path), _) => Token::File(path),
        (None, Some(value)) => Token::Value(value),
        (None, None) => Token::None,
    };
    let remote = Remote { endpoints: cli.endpoints, token, output: cli.output };
    let result = match cli.command {
        Command::Policy(cmd) => return policy::run(cmd, &remote),
        Command::Cluster(cmd) => cluster::run(cmd, &remote),
        Command::Tenant(cmd) => tenant::run(cmd, &remote),
        Command::Key(cmd) => key::run(cmd, &remote),
        Command::Audit(cmd) => audit::run(cmd, &remote),
        Command::Agent(cmd) => agent::run(cmd, &remote),
        Command::Governance(cmd) => governance::run(cmd, &remote),
        Command::Incident(cmd) => incident::run(cmd, &remote),
        Command::Source(cmd) => data::run_source(cmd, &remote),
        Command::Plane(cmd) => data::run_plane(cmd, &remote),
        Command::Export(cmd) => export::run(cmd, &remote),
    };
    finish(result)
}

/// Maps a command's result to the exit code, reporting errors on stderr.
pub fn finish(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report();
            ExitCode::from(e.exit_code())
        }
    }
}
