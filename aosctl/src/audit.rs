//! `aosctl audit …`: list ledger entries and verify the hash chain.
//!
//! `verify` pages through `/api/v1/audit` (1000 entries a page, `since` =
//! the last seq received) and re-walks the whole chain with
//! [`aos_cp_state::verify_chain`]. A tenant key sees only its tenant's
//! entries, which is not a chain: verify with a cluster-operator key.
//! `verify --data-dir` rebuilds the ledger offline from a node's store
//! ([`aos_cp_store::offline`]) for forensics on a copied directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use aos_cp_state::{AuditEntry, ChainError, ControlState, GENESIS_HASH, Proposal, verify_chain};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::Client;
use crate::output::{Table, short_hash, timestamp, write_json};
use crate::{CliError, Output, Remote};

/// Largest page the server returns.
const PAGE: usize = 1000;

/// Audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List entries, oldest first (a tenant key sees its tenant's entries only).
    List {
        /// Only entries with a seq greater than this.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only entries about this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Verify the ledger's hash chain and name the first broken entry; exit 1 if broken.
    ///
    /// By default the whole ledger is fetched from the cluster. With `--data-dir` the chain
    /// is rebuilt offline from a copy of a node's data directory (no cluster needed); a
    /// running node locks its directory, so copy it first.
    Verify {
        /// A node's data directory (or a copy of it) to verify offline.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Runs an audit subcommand.
pub fn run(cmd: AuditCommand, remote: &Remote) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match cmd {
        AuditCommand::List { since, limit, tenant } => {
            let client = remote.client()?;
            let mut entries = fetch(&client, since, limit)?;
            if let Some(t) = &tenant {
                entries.retain(|e| e.get("tenant_id").and_then(Value::as_str) == Some(t.as_str()));
            }
            match remote.output {
                Output::Json => write_json(&mut out, &json!({ "entries": entries }))?,
                Output::Table => write_entries(&mut out, &entries)?,
            }
        }
        AuditCommand::Verify { data_dir } => {
            let entries = match data_dir {
                Some(dir) => read_offline(&dir)?,
                None => {
                    let raw = fetch(&remote.client()?, 0, usize::MAX)?;
                    raw.into_iter()
                        .map(serde_json::from_value::<AuditEntry>)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| CliError::Failed(format!("an audit entry cannot be read: {e}")))?
                }
            };
            let head = entries.last().map_or(GENESIS_HASH, |e| e.hash.as_str()).to_owned();
            let verdict = verify_chain(&entries);
            match remote.output {
                Output::Json => {
                    let body = match &verdict {
                        Ok(()) => json!({"ok": true, "entries": entries.len(), "head": head}),
                        Err(e) => {
                            json!({"ok": false, "entries": entries.len(), "broken_seq": e.seq(), "reason": e.to_string()})
                        }
                    };
                    write_json(&mut out, &body)?;
                }
                Output::Table => match &verdict {
                    Ok(()) => writeln!(out, "chain ok: {} entries, head {head}", entries.len())?,
                    Err(e) => writeln!(out, "chain BROKEN at seq {}: {e}", e.seq())?,
                },
            }
            if let Err(e) = verdict {
                return Err(CliError::Failed(broken_message(&e)));
            }
        }
    }
    Ok(())
}

/// Rebuilds the ledger from a node's data directory (`DIR` or `DIR/raft`).
fn read_offline(dir: &Path) -> Result<Vec<AuditEntry>, CliError> {
    let raft_dir = if dir.join("raft").is_dir() { dir.join("raft") } else { dir.to_path_buf() };
    let replayed = aos_cp_store::offline::replay::<ControlState, Proposal>(&raft_dir, |state, index, p| {
        state.apply(index, p);
    })
    .map_err(|e| CliError::Failed(format!("cannot read the store in {}: {e}", raft_dir.display())))?;
    eprintln!(
        "read {}: snapshot through log index {}, {} entries replayed through index {}{}",
        raft_dir.display(),
        replayed.snapshot_index,
        replayed.replayed_entries,
        replayed.applied_index,
        match replayed.uncommitted_entries {
            0 => String::new(),
            n => format!(" ({n} uncommitted entries not applied)"),
        }
    );
    Ok(replayed.state.audit().entries().to_vec())
}

fn broken_message(e: &ChainError) -> String {
    let mut message = format!("audit chain verification failed at seq {}: {e}", e.seq());
    if matches!(e, ChainError::SequenceGap { .. }) {
        message
            .push_str(" (a tenant key sees only its tenant's entries; verify with a cluster-operator key)");
    }
    message
}

/// Pages through the ledger from `since` until `limit` entries or the end.
fn fetch(client: &Client, since: u64, limit: usize) -> Result<Vec<Value>, CliError> {
    let mut entries: Vec<Value> = Vec::new();
    let mut since = since;
    while entries.len() < limit {
        let page_size = (limit - entries.len()).min(PAGE);
        let query = [("since", since.to_string()), ("limit", page_size.to_string())];
        let answer = client
            .get("/api/v1/audit", &query)
            .map_err(CliError::request(format!("reading the audit ledger after seq {since}")))?;
        let page = match answer.get("entries") {
            Some(Value::Array(page)) => page.clone(),
            _ => return Err(CliError::Failed("the audit answer has no `entries` list".to_owned())),
        };
        let Some(last) = page.last().and_then(|e| e.get("seq")).and_then(Value::as_u64) else { break };
        if last <= since {
            return Err(CliError::Failed(format!(
                "the server went back in the ledger (seq {last} after {since})"
            )));
        }
        let full = page.len() == page_size;
        since = last;
        entries.extend(page);
        if !full {
            break;
        }
    }
    Ok(entries)
}

fn write_entries(out: &mut impl Write, entries: &[Value]) -> std::io::Result<()> {
    let mut table = Table::new(&["SEQ", "TIME", "ACTION", "OUTCOME", "ACTOR", "TENANT", "TARGET", "HASH"]);
    for e in entries {
        let s = |key: &str| e.get(key).and_then(Value::as_str).unwrap_or("-").to_owned();
        let actor = e.get("actor").and_then(|a| a.get("actor_id")).and_then(Value::as_str).unwrap_or("-");
        table.row(vec![
            e.get("seq").map_or_else(String::new, ToString::to_string),
            e.get("at_ms").and_then(Value::as_u64).map_or_else(String::new, timestamp),
            s("action"),
            s("outcome"),
            actor.to_owned(),
            s("tenant_id"),
            s("target"),
            short_hash(e.get("hash").and_then(Value::as_str).unwrap_or_default()).to_owned(),
        ]);
    }
    table.write(out)
}
