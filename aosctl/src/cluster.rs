//! `aosctl cluster …`: status, add a node, remove a node, snapshot signing
//! keys (cluster-operator admin key).

use std::io::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{Body, Method};
use crate::output::{Table, cell, write_json};
use crate::{CliError, Output, Remote};

/// Cluster subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the nodes, the leader, the term and the applied index.
    Status,
    /// Add a node (as learner, then voter) through the leader.
    AddNode {
        /// Raft node id of the new node (≥ 1).
        #[arg(long)]
        node_id: u64,
        /// The new node's gRPC address, `HOST:PORT`.
        #[arg(long)]
        grpc_addr: String,
    },
    /// Remove a voter through the leader.
    RemoveNode {
        /// Raft node id to remove.
        node_id: u64,
    },
    /// Snapshot signing keys: list, and rotate (add → activate → retire).
    #[command(subcommand)]
    SigningKey(SigningKeyCommand),
}

/// `aosctl cluster signing-key …`.
#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// List the keys: which signs, which agents trust, which are retired.
    List,
    /// Trust a new public key (give every node the private key first).
    Add {
        /// ed25519 public key, hex (printed by `aos-control-plane keygen`).
        #[arg(long)]
        public_key: String,
    },
    /// Make a trusted key the signer; every tenant snapshot is reissued.
    Activate {
        /// The key id.
        key_id: String,
    },
    /// Stop trusting a key that no longer signs.
    Retire {
        /// The key id.
        key_id: String,
        /// Why (recorded in the audit ledger).
        #[arg(long)]
        reason: String,
    },
}

/// Runs a cluster subcommand.
pub fn run(cmd: ClusterCommand, remote: &Remote) -> Result<(), CliError> {
    let client = remote.client()?;
    let mut out = std::io::stdout().lock();
    match cmd {
        ClusterCommand::Status => {
            let status = client.get("/api/v1/cluster", &[]).map_err(CliError::request("cluster status"))?;
            match remote.output {
                Output::Json => write_json(&mut out, &status)?,
                Output::Table => write_status(&mut out, &status)?,
            }
        }
        ClusterCommand::AddNode { node_id, grpc_addr } => {
            let body = json!({"node_id": node_id, "grpc_addr": grpc_addr});
            let answer = client
                .post("/api/v1/cluster/nodes", &body)
                .map_err(CliError::request(format!("adding node {node_id} at `{grpc_addr}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => {
                    writeln!(out, "node {node_id} added; voters now {}", cell(&answer, "voters"))?;
                }
            }
        }
        ClusterCommand::RemoveNode { node_id } => {
            let answer = client
                .request(Method::Delete, &format!("/api/v1/cluster/nodes/{node_id}"), &[], &Body::Empty)
                .map_err(CliError::request(format!("removing node {node_id}")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => {
                    writeln!(out, "node {node_id} removed; voters now {}", cell(&answer, "voters"))?;
                }
            }
        }
        ClusterCommand::SigningKey(cmd) => signing_key(&client, cmd, remote.output, &mut out)?,
    }
    Ok(())
}

fn signing_key(
    client: &crate::client::Client,
    cmd: SigningKeyCommand,
    output: Output,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let answer = match &cmd {
        SigningKeyCommand::List => {
            client.get("/api/v1/snapshot-keys", &[]).map_err(CliError::request("listing signing keys"))?
        }
        SigningKeyCommand::Add { public_key } => client
            .post("/api/v1/snapshot-keys", &json!({ "public_key": public_key }))
            .map_err(CliError::request("adding a signing key"))?,
        SigningKeyCommand::Activate { key_id } => client
            .post(&format!("/api/v1/snapshot-keys/{key_id}/activate"), &json!({}))
            .map_err(CliError::request(format!("activating signing key `{key_id}`")))?,
        SigningKeyCommand::Retire { key_id, reason } => client
            .post(&format!("/api/v1/snapshot-keys/{key_id}/retire"), &json!({ "reason": reason }))
            .map_err(CliError::request(format!("retiring signing key `{key_id}`")))?,
    };
    if output == Output::Json {
        write_json(out, &answer)?;
        return Ok(());
    }
    match cmd {
        SigningKeyCommand::List => {
            let mut table = Table::new(&["KEY ID", "STATE", "ON THIS NODE", "PUBLIC KEY"]);
            for key in answer.get("keys").and_then(Value::as_array).into_iter().flatten() {
                let held = key.get("held_by_this_node").and_then(Value::as_bool) == Some(true);
                table.row(vec![
                    cell(key, "key_id"),
                    cell(key, "state"),
                    if held { "yes".to_owned() } else { "no".to_owned() },
                    cell(key, "public_key"),
                ]);
            }
            table.write(out)?;
        }
        SigningKeyCommand::Add { .. } => {
            writeln!(out, "signing key {} added", cell(&answer["result"], "key_id"))?;
        }
        SigningKeyCommand::Activate { key_id } => {
            writeln!(
                out,
                "signing key {key_id} now signs; {} tenant snapshot(s) reissued",
                cell(&answer["result"], "reissued_tenants")
            )?;
        }
        SigningKeyCommand::Retire { key_id, .. } => writeln!(out, "signing key {key_id} retired")?,
    }
    Ok(())
}

fn write_status(out: &mut impl Write, status: &Value) -> std::io::Result<()> {
    let leader = status.get("leader").and_then(Value::as_u64);
    writeln!(
        out,
        "leader: {}  term: {}  last applied: {}  (answered by node {}, {})",
        leader.map_or_else(|| "none".to_owned(), |l| format!("node {l}")),
        cell(status, "term"),
        cell(status, "last_applied"),
        cell(status, "node_id"),
        cell(status, "state"),
    )?;
    let mut table = Table::new(&["NODE", "GRPC ADDR", "MEMBER", "LEADER"]);
    for node in status.get("nodes").and_then(Value::as_array).into_iter().flatten() {
        let id = node.get("node_id").and_then(Value::as_u64);
        let member =
            if node.get("voter").and_then(Value::as_bool) == Some(true) { "voter" } else { "learner" };
        let is_leader = id.is_some() && id == leader;
        table.row(vec![
            cell(node, "node_id"),
            cell(node, "grpc_addr"),
            member.to_owned(),
            if is_leader { "* leader".to_owned() } else { String::new() },
        ]);
    }
    table.write(out)
}
