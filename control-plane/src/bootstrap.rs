//! First start of a cluster: make this node the single voter, register its
//! primary signing key as the signer, and create the cluster-operator admin
//! key. The key's secret is printed once and written
//! to `<data-dir>/operator.key` with 0600 permissions; only its SHA-256
//! enters the replicated state.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aos_core::policy::ActorRole;
use aos_cp_state::{ActorRef, ActorType, Command, CommandResult, Proposal};

use crate::http::secret_hash;
use crate::node::{Node, NodeError};
use crate::write::propose;

/// Key id of the bootstrap operator key.
pub const OPERATOR_KEY_ID: &str = "operator-bootstrap";

/// Initialises the cluster on this node when it is not yet part of one,
/// waits for leadership, and creates the operator key once. Returns the
/// path of the key file when a key was created now.
pub async fn init_cluster(node: &Node, data_dir: &Path) -> Result<Option<PathBuf>, NodeError> {
    let already_member = node.raft().is_initialized().await.map_err(|e| NodeError::Raft(e.to_string()))?;
    if !already_member {
        node.initialize().await?;
    }
    node.raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader == Some(node.id()), "leadership after init")
        .await
        .map_err(|e| NodeError::Raft(format!("not leader after init: {e}")))?;
    register_primary_signing_key(node).await?;
    let exists = node.state().read(|s| s.0.api_key(OPERATOR_KEY_ID).is_some());
    if exists {
        return Ok(None);
    }
    let mut secret_bytes = [0u8; 32];
    getrandom::fill(&mut secret_bytes)
        .map_err(|e| NodeError::Raft(format!("no randomness for the key: {e}")))?;
    let secret = format!("aos_op_{}", hex::encode(secret_bytes));
    let proposal = Proposal {
        request_id: "bootstrap-operator-key".to_owned(),
        actor: system_actor(),
        at_ms: crate::now_ms(),
        command: Command::CreateApiKey {
            tenant_id: None,
            key_id: OPERATOR_KEY_ID.to_owned(),
            name: "bootstrap operator key".to_owned(),
            role: ActorRole::Admin,
            secret_hash: secret_hash(&secret),
        },
    };
    let committed = propose(node, proposal).await.map_err(|e| NodeError::Raft(e.to_string()))?;
    if let CommandResult::Rejected(r) = committed.result {
        return Err(NodeError::Raft(format!("operator key refused: {}", r.message)));
    }
    let path = data_dir.join("operator.key");
    write_secret(&path, &secret)
        .map_err(|e| NodeError::Serve { what: "operator key file", source: Box::new(e) })?;
    Ok(Some(path))
}

/// Registers this node's primary signing key as the cluster's signer when
/// the state names none yet (first start of a cluster).
async fn register_primary_signing_key(node: &Node) -> Result<(), NodeError> {
    if node.state().read(|s| s.0.signing_keys().active().is_some()) {
        return Ok(());
    }
    let primary = node.keys().primary();
    let proposal = Proposal {
        request_id: format!("bootstrap-signing-key-{}", primary.key_id()),
        actor: system_actor(),
        at_ms: crate::now_ms(),
        command: Command::AddSigningKey { public_key: hex::encode(primary.verifying_key().as_bytes()) },
    };
    let committed = propose(node, proposal).await.map_err(|e| NodeError::Raft(e.to_string()))?;
    if let CommandResult::Rejected(r) = committed.result {
        return Err(NodeError::Raft(format!("signing key registration refused: {}", r.message)));
    }
    Ok(())
}

/// The control plane acting on its own behalf (bootstrap, maintenance).
pub fn system_actor() -> ActorRef {
    ActorRef {
        actor_id: "control-plane".to_owned(),
        actor_type: ActorType::System,
        role: ActorRole::Admin,
        tenant_id: None,
    }
}

/// Writes a secret readable by the owner only.
pub fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}
