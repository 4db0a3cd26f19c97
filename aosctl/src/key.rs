//! `aosctl key …`: create (the secret is shown once), list and revoke a
//! tenant's API keys.

use std::io::Write;

use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::client::segment;
use crate::output::{Table, cell, text, timestamp, write_json};
use crate::{CliError, Output, Remote};

/// A role a key acts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Role {
    /// Full control of the tenant.
    Admin,
    /// Writes and activates policies.
    PolicyAuthor,
    /// Operates governance state and incidents.
    Sre,
    /// Reads everything, changes nothing.
    Auditor,
    /// A workload's key for the edge agent's local API (no admin API
    /// access); reaches the tenant's edge agents with the next snapshot.
    Workload,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::PolicyAuthor => "policy_author",
            Role::Sre => "sre",
            Role::Auditor => "auditor",
            Role::Workload => "workload",
        }
    }
}

/// Key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key; its secret is printed once.
    Create {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Display name (defaults to the role).
        #[arg(long)]
        name: Option<String>,
        /// The role the key acts with.
        #[arg(long, value_enum)]
        role: Role,
        /// Key id (generated when absent).
        #[arg(long)]
        key_id: Option<String>,
    },
    /// List a tenant's keys (never their secrets).
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a key.
    Revoke {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The key id.
        key_id: String,
        /// Why (recorded in the audit ledger).
        #[arg(long)]
        reason: String,
    },
}

/// Runs a key subcommand.
pub fn run(cmd: KeyCommand, remote: &Remote) -> Result<(), CliError> {
    let client = remote.client()?;
    let mut out = std::io::stdout().lock();
    match cmd {
        KeyCommand::Create { tenant, name, role, key_id } => {
            let mut body =
                json!({"name": name.unwrap_or_else(|| role.as_str().to_owned()), "role": role.as_str()});
            if let Some(id) = key_id {
                body["key_id"] = json!(id);
            }
            let answer = client
                .post(&format!("/api/v1/tenants/{}/keys", segment(&tenant)), &body)
                .map_err(CliError::request(format!("creating an API key in tenant `{tenant}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => {
                    writeln!(
                        out,
                        "API key `{}` created in tenant `{tenant}` with role {}",
                        text(&answer, "key_id"),
                        role.as_str()
                    )?;
                    writeln!(out, "secret: {}", text(&answer, "secret"))?;
                    writeln!(
                        out,
                        "Store it now: the secret is shown only this once and cannot be retrieved."
                    )?;
                }
            }
        }
        KeyCommand::List { tenant } => {
            let answer = client
                .get(&format!("/api/v1/tenants/{}/keys", segment(&tenant)), &[])
                .map_err(CliError::request(format!("listing API keys of tenant `{tenant}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => {
                    let mut table = Table::new(&["KEY", "NAME", "ROLE", "CREATED", "CREATED BY", "REVOKED"]);
                    for k in answer.get("keys").and_then(Value::as_array).into_iter().flatten() {
                        let created = k
                            .get("created_at_ms")
                            .and_then(Value::as_u64)
                            .map_or_else(String::new, timestamp);
                        let revoked = match k.get("revoked") {
                            None | Some(Value::Null) => "-".to_owned(),
                            Some(r) => format!("yes: {}", cell(r, "reason")),
                        };
                        table.row(vec![
                            cell(k, "key_id"),
                            cell(k, "name"),
                            cell(k, "role"),
                            created,
                            cell(k, "created_by"),
                            revoked,
                        ]);
                    }
                    table.write(&mut out)?;
                }
            }
        }
        KeyCommand::Revoke { tenant, key_id, reason } => {
            if reason.trim().is_empty() {
                return Err(CliError::Usage("--reason must not be empty".to_owned()));
            }
            let path = format!("/api/v1/tenants/{}/keys/{}/revoke", segment(&tenant), segment(&key_id));
            let answer = client
                .post(&path, &json!({"reason": reason}))
                .map_err(CliError::request(format!("revoking API key `{key_id}` of tenant `{tenant}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => {
                    writeln!(out, "API key `{key_id}` revoked (audit seq {})", cell(&answer, "audit_seq"))?
                }
            }
        }
    }
    Ok(())
}
