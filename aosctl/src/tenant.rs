//! `aosctl tenant …`: create and list tenants.

use std::io::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::output::{Table, cell, write_json};
use crate::{CliError, Output, Remote};

/// Tenant subcommands.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant (cluster-operator admin key).
    Create {
        /// Tenant id, e.g. `acme`.
        id: String,
        /// Display name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the tenants the key may see.
    List,
}

/// Runs a tenant subcommand.
pub fn run(cmd: TenantCommand, remote: &Remote) -> Result<(), CliError> {
    let client = remote.client()?;
    let mut out = std::io::stdout().lock();
    match cmd {
        TenantCommand::Create { id, name } => {
            let body = json!({"tenant_id": id, "name": name.unwrap_or_else(|| id.clone())});
            let answer = client
                .post("/api/v1/tenants", &body)
                .map_err(CliError::request(format!("creating tenant `{id}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => {
                    writeln!(out, "tenant `{id}` created (audit seq {})", cell(&answer, "audit_seq"))?
                }
            }
        }
        TenantCommand::List => {
            let answer = client.get("/api/v1/tenants", &[]).map_err(CliError::request("listing tenants"))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => {
                    let mut table = Table::new(&["TENANT", "NAME", "SNAPSHOT VERSION"]);
                    for t in answer.get("tenants").and_then(Value::as_array).into_iter().flatten() {
                        table.row(vec![cell(t, "tenant_id"), cell(t, "name"), cell(t, "snapshot_version")]);
                    }
                    table.write(&mut out)?;
                }
            }
        }
    }
    Ok(())
}
