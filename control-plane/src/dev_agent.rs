//! Dev mode's edge agent: the real `aos-edge-agent` engine, local API and
//! control-plane link, run inside the dev process on `127.0.0.1:8000` for
//! the demo tenant, so the seed's endpoints answer right after
//! `aos-control-plane dev`.
//!
//! It is an edge agent like any other: on first start dev mode makes a
//! join token for the demo tenant, and the agent joins through the node's
//! own gateway (CA pinned, mutual TLS), keeps its identity under
//! `<data-dir>/edge-agent/`, receives snapshots on the watch stream and
//! delivers its records, so the Activity API shows the demo runs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use aos_core::snapshot::TrustedKeys;
use aos_cp_state::{Command, CommandResult, Proposal};
use aos_edge_agent::api::App;
use aos_edge_agent::engine::Engine;
use aos_edge_agent::identity::{AgentIdentity, JoinToken};
use aos_edge_agent::jobs::{JobBoard, JobsConfig};
use aos_edge_agent::link::{Link, run_delivery, run_watch};
use aos_edge_agent::snapshots::SnapshotSlot;
use aos_edge_agent::store::AgentStore;

use crate::bootstrap::system_actor;
use crate::http::secret_hash;
use crate::node::Node;
use crate::write::propose;

/// Why the dev agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevAgentError {
    /// The agent's store or engine.
    #[error("edge agent: {0}")]
    Agent(#[from] aos_edge_agent::AgentError),
    /// A published key is not a key.
    #[error("published signing key: {0}")]
    Key(String),
    /// Scheduled jobs.
    #[error("edge agent jobs: {0}")]
    Jobs(String),
    /// Joining the dev node's gateway.
    #[error("edge agent join: {0}")]
    Join(String),
    /// The listen address.
    #[error("binding the edge agent on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Starts the agent for `tenant` under `data_dir/edge-agent`, serving on
/// `listen` and joined to `node` through its gateway at `gateway`. Runs
/// until the process ends.
pub async fn start(
    node: &Node,
    tenant: &str,
    data_dir: &Path,
    listen: SocketAddr,
    gateway: SocketAddr,
) -> Result<(), DevAgentError> {
    let agent_dir = data_dir.join("edge-agent");
    std::fs::create_dir_all(&agent_dir).map_err(|e| DevAgentError::Join(e.to_string()))?;
    let identity = match AgentIdentity::load(&agent_dir).map_err(|e| DevAgentError::Join(e.to_string()))? {
        Some(identity) => identity,
        None => {
            let token = join_token(node, tenant).await?;
            let identity = aos_edge_agent::identity::join(&[gateway.to_string()], &token, "dev-edge-agent")
                .await
                .map_err(|e| DevAgentError::Join(e.to_string()))?;
            identity.save(&agent_dir).map_err(|e| DevAgentError::Join(e.to_string()))?;
            identity
        }
    };
    let store = AgentStore::open(&agent_dir.join("store"))?;
    let keys = store.load_trusted_keys()?.unwrap_or_else(|| identity.trusted_snapshot_keys.clone());
    let mut trusted = TrustedKeys::new();
    for key in &keys {
        trusted.insert_hex(key).map_err(|e| DevAgentError::Key(e.to_string()))?;
    }
    let slot = SnapshotSlot::new(tenant.to_owned(), trusted);
    let engine =
        Arc::new(Engine::open(slot, store, 512 * 1024 * 1024, aos_edge_agent::events::EVENT_BUFFER)?);
    let _alert_log = engine.events().spawn_alert_log();
    let jobs = JobBoard::default();
    let scheduler = aos_edge_agent::jobs::start(Arc::clone(&engine), JobsConfig::default(), jobs.clone())
        .await
        .map_err(|e| DevAgentError::Jobs(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DevAgentError::Bind { addr: listen, source })?;
    let link = Arc::new(Link::new(vec![gateway.to_string()], identity));
    // The dev process ends with its node; the loops need no stop signal.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(run_watch(Arc::clone(&engine), Arc::clone(&link), stop.clone()));
    tokio::spawn(run_delivery(Arc::clone(&engine), Arc::clone(&link), stop));
    tokio::spawn(async move {
        let _scheduler = scheduler;
        let _keep_links_running = stop_tx;
        // Dev mode serves the demo agent without keys on loopback only.
        let mode = if listen.ip().is_loopback() {
            aos_edge_agent::auth::AuthMode::Off
        } else {
            aos_edge_agent::auth::AuthMode::Required
        };
        let auth = aos_edge_agent::auth::Auth::new(mode, Arc::clone(&engine));
        // Dev mode serves no gRPC API; the HTTP API has the same access.
        let app = App { engine, jobs, link: Some(link), auth, grpc_listen: None };
        if let Err(e) = axum::serve(listener, aos_edge_agent::api::router(app)).await {
            tracing::error!(message = "dev edge agent stopped", error = %e);
        }
    });
    Ok(())
}

/// A one-hour join token for the dev agent, made by the control plane
/// itself (audited like any other).
async fn join_token(node: &Node, tenant: &str) -> Result<JoinToken, DevAgentError> {
    let ca = node.ca().ok_or_else(|| DevAgentError::Join("dev mode runs without a cluster CA".to_owned()))?;
    let mut random = [0u8; 36];
    getrandom::fill(&mut random).map_err(|e| DevAgentError::Join(e.to_string()))?;
    let secret = format!("aosj_{}", hex::encode(&random[..32]));
    let token_id = format!("jt-dev-{}", hex::encode(&random[32..]));
    let proposal = Proposal {
        request_id: format!("dev-join-token-{token_id}"),
        actor: system_actor(),
        at_ms: crate::now_ms(),
        command: Command::CreateJoinToken {
            tenant_id: tenant.to_owned(),
            token_id,
            secret_hash: secret_hash(&secret),
            expires_at_ms: crate::now_ms() + 3_600_000,
        },
    };
    let committed = propose(node, proposal).await.map_err(|e| DevAgentError::Join(e.to_string()))?;
    if let CommandResult::Rejected(r) = committed.result {
        return Err(DevAgentError::Join(format!("join token refused: {}", r.message)));
    }
    JoinToken::parse(&format!("{secret}.{}", ca.sha256_hex())).map_err(|e| DevAgentError::Join(e.to_string()))
}
