//! `aosctl incident …`: list and inspect a tenant's incidents, acknowledge
//! and resolve them, and suppress the known ones for a while.

use std::io::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::segment;
use crate::governance::parse_duration_secs;
use crate::output::{Table, cell, text, timestamp, write_json};
use crate::{CliError, Output, Remote};

/// Incident subcommands.
#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// List a tenant's incidents, newest first.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Only `OPEN`, `ACKNOWLEDGED` or `RESOLVED`.
        #[arg(long)]
        status: Option<String>,
        /// Only this category (e.g. `TOKEN_LIMIT`).
        #[arg(long)]
        category: Option<String>,
        /// Only this run.
        #[arg(long)]
        run: Option<String>,
    },
    /// One incident with its history and inflection point (JSON).
    Show {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The incident id.
        incident_id: String,
    },
    /// Acknowledge an open incident.
    Ack {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The incident id.
        incident_id: String,
        /// A note kept in its history.
        #[arg(long)]
        note: Option<String>,
    },
    /// Resolve an incident.
    Resolve {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The incident id.
        incident_id: String,
        /// A note kept in its history.
        #[arg(long)]
        note: Option<String>,
    },
    /// Open no incidents for a policy and/or category for a while; matching
    /// reports are filed as prevention records.
    Suppress {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Suppression id.
        #[arg(long)]
        id: String,
        /// Only reports crediting this policy.
        #[arg(long)]
        policy: Option<String>,
        /// Only reports of this category.
        #[arg(long)]
        category: Option<String>,
        /// How long (`90m`, `2h`, `1d`; at most 30 days).
        #[arg(long)]
        ttl: String,
        /// Why (recorded in the audit ledger).
        #[arg(long)]
        reason: String,
    },
}

fn transition(
    remote: &Remote,
    out: &mut impl Write,
    tenant: &str,
    incident_id: &str,
    note: Option<String>,
    action: &str,
) -> Result<(), CliError> {
    let path = format!("/api/v1/tenants/{}/incidents/{}/{action}", segment(tenant), segment(incident_id));
    let answer = remote
        .client()?
        .post(&path, &json!({ "note": note }))
        .map_err(CliError::request(format!("{action} incident `{incident_id}`")))?;
    match remote.output {
        Output::Json => write_json(out, &answer)?,
        Output::Table => writeln!(out, "incident `{incident_id}` is {}", text(&answer["result"], "status"))?,
    }
    Ok(())
}

/// Runs an incident subcommand.
pub fn run(cmd: IncidentCommand, remote: &Remote) -> Result<(), CliError> {
    let client = remote.client()?;
    let mut out = std::io::stdout().lock();
    match cmd {
        IncidentCommand::List { tenant, status, category, run } => {
            let mut query = Vec::new();
            for (name, value) in [("status", status), ("category", category), ("run_id", run)] {
                if let Some(v) = value {
                    query.push((name, v));
                }
            }
            let answer = client
                .get(&format!("/api/v1/tenants/{}/incidents", segment(&tenant)), &query)
                .map_err(CliError::request(format!("listing incidents of tenant `{tenant}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => {
                    let mut table = Table::new(&[
                        "INCIDENT",
                        "STATUS",
                        "SEVERITY",
                        "CATEGORY",
                        "POLICY",
                        "RUN",
                        "REPORTS",
                        "FIRST SEEN",
                    ]);
                    for i in answer.get("incidents").and_then(Value::as_array).into_iter().flatten() {
                        table.row(vec![
                            cell(i, "incident_id"),
                            cell(i, "status"),
                            cell(i, "severity"),
                            cell(i, "category"),
                            cell(i, "policy_id"),
                            cell(i, "run_id"),
                            cell(i, "reports"),
                            i.get("first_seen_ms")
                                .and_then(Value::as_u64)
                                .map_or_else(String::new, timestamp),
                        ]);
                    }
                    table.write(&mut out)?;
                }
            }
        }
        IncidentCommand::Show { tenant, incident_id } => {
            let answer = client
                .get(
                    &format!("/api/v1/tenants/{}/incidents/{}", segment(&tenant), segment(&incident_id)),
                    &[],
                )
                .map_err(CliError::request(format!("reading incident `{incident_id}`")))?;
            write_json(&mut out, &answer)?;
        }
        IncidentCommand::Ack { tenant, incident_id, note } => {
            transition(remote, &mut out, &tenant, &incident_id, note, "acknowledge")?;
        }
        IncidentCommand::Resolve { tenant, incident_id, note } => {
            transition(remote, &mut out, &tenant, &incident_id, note, "resolve")?;
        }
        IncidentCommand::Suppress { tenant, id, policy, category, ttl, reason } => {
            let ttl_seconds = parse_duration_secs(&ttl).map_err(CliError::Usage)?;
            let body = json!({
                "suppression_id": id, "policy_id": policy, "category": category,
                "ttl_seconds": ttl_seconds, "reason": reason,
            });
            let answer = client
                .post(&format!("/api/v1/tenants/{}/incident-suppressions", segment(&tenant)), &body)
                .map_err(CliError::request(format!("suppressing incidents in tenant `{tenant}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => writeln!(
                    out,
                    "suppression `{id}` in force until {}",
                    answer["result"]
                        .get("until_ms")
                        .and_then(Value::as_u64)
                        .map_or_else(String::new, timestamp)
                )?,
            }
        }
    }
    Ok(())
}
