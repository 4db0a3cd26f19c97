//! `aosctl agent …`: join tokens for edge agents (the secret is shown once)
//! and the list of a tenant's agents with their snapshot sync status.

use std::io::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::segment;
use crate::output::{Table, cell, text, timestamp, write_json};
use crate::{CliError, Output, Remote};

/// Agent subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List a tenant's edge agents: ACKed snapshot version, last NACK.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
}

/// `aosctl agent token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token; its secret is printed once.
    Create {
        /// The tenant agents joining with it will serve.
        #[arg(long)]
        tenant: String,
        /// Lifetime in seconds (default one day, at most 30 days).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// List a tenant's join tokens (never their secrets).
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a join token; agents that already joined keep working.
    Revoke {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The token id.
        token_id: String,
        /// Why (recorded in the audit ledger).
        #[arg(long)]
        reason: String,
    },
}

/// Runs an agent subcommand.
pub fn run(cmd: AgentCommand, remote: &Remote) -> Result<(), CliError> {
    let client = remote.client()?;
    let mut out = std::io::stdout().lock();
    match cmd {
        AgentCommand::Token(TokenCommand::Create { tenant, ttl_secs }) => {
            let body = ttl_secs.map_or_else(|| json!({}), |t| json!({ "ttl_secs": t }));
            let answer = client
                .post(&format!("/api/v1/tenants/{}/agent-tokens", segment(&tenant)), &body)
                .map_err(CliError::request(format!("creating a join token in tenant `{tenant}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => {
                    writeln!(
                        out,
                        "join token `{}` created for tenant `{tenant}`",
                        text(&answer, "token_id")
                    )?;
                    writeln!(out, "secret: {}", text(&answer, "secret"))?;
                    if answer.get("join_token").is_some() {
                        writeln!(out, "join token (secret + CA pin): {}", text(&answer, "join_token"))?;
                        writeln!(
                            out,
                            "  aos-edge-agent --control-plane <host:agent-port> --join-token {}",
                            text(&answer, "join_token")
                        )?;
                    }
                    writeln!(
                        out,
                        "expires: {}  (store the secret now: it is not shown again)",
                        answer
                            .get("expires_at_ms")
                            .and_then(Value::as_u64)
                            .map_or_else(String::new, timestamp)
                    )?;
                }
            }
        }
        AgentCommand::Token(TokenCommand::List { tenant }) => {
            let answer = client
                .get(&format!("/api/v1/tenants/{}/agent-tokens", segment(&tenant)), &[])
                .map_err(CliError::request(format!("listing join tokens of tenant `{tenant}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => {
                    let mut table = Table::new(&["TOKEN", "EXPIRES", "USES", "REVOKED"]);
                    for t in answer.get("tokens").and_then(Value::as_array).into_iter().flatten() {
                        table.row(vec![
                            cell(t, "token_id"),
                            t.get("expires_at_ms")
                                .and_then(Value::as_u64)
                                .map_or_else(String::new, timestamp),
                            cell(t, "uses"),
                            if t.get("revoked").is_some_and(|r| !r.is_null()) { "yes" } else { "" }
                                .to_owned(),
                        ]);
                    }
                    table.write(&mut out)?;
                }
            }
        }
        AgentCommand::Token(TokenCommand::Revoke { tenant, token_id, reason }) => {
            let answer = client
                .post(
                    &format!(
                        "/api/v1/tenants/{}/agent-tokens/{}/revoke",
                        segment(&tenant),
                        segment(&token_id)
                    ),
                    &json!({ "reason": reason }),
                )
                .map_err(CliError::request(format!("revoking join token `{token_id}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => writeln!(out, "join token `{token_id}` revoked")?,
            }
        }
        AgentCommand::List { tenant } => {
            let answer = client
                .get(&format!("/api/v1/tenants/{}/agents", segment(&tenant)), &[])
                .map_err(CliError::request(format!("listing edge agents of tenant `{tenant}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => {
                    let mut table = Table::new(&[
                        "AGENT",
                        "NAME",
                        "CONNECTED",
                        "ACKED",
                        "GOVERNANCE",
                        "LAST NACK",
                        "LAST SYNC",
                    ]);
                    for a in answer.get("agents").and_then(Value::as_array).into_iter().flatten() {
                        let nack =
                            a.get("last_nack").filter(|n| !n.is_null()).map_or_else(String::new, |n| {
                                format!("v{}: {}", cell(n, "version"), text(n, "reason"))
                            });
                        let connected = match a.get("connected_node").and_then(Value::as_u64) {
                            Some(node) => format!("node {node}"),
                            None => a.get("last_seen_ms").and_then(Value::as_u64).map_or_else(
                                || "never".to_owned(),
                                |t| format!("no (seen {})", timestamp(t)),
                            ),
                        };
                        table.row(vec![
                            cell(a, "agent_id"),
                            cell(a, "name"),
                            connected,
                            cell(a, "acked_version"),
                            a.get("acked_governance_version")
                                .and_then(Value::as_u64)
                                .map_or_else(String::new, |v| format!("v{v}")),
                            nack,
                            a.get("last_sync_ms").and_then(Value::as_u64).map_or_else(String::new, timestamp),
                        ]);
                    }
                    table.write(&mut out)?;
                }
            }
        }
    }
    Ok(())
}
