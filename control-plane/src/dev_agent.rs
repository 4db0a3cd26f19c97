//! Dev mode's edge agent: the real `aos-edge-agent` engine and local API,
//! run inside the dev process on `127.0.0.1:8000` for the demo tenant, so
//! the seed's endpoints answer right after `aos-control-plane dev`.
//!
//! Snapshots reach it in-process: whenever the node applies a change, the
//! demo tenant's snapshot is signed exactly as for any agent and offered
//! to the engine, which verifies it against the cluster's published keys
//! like any pushed snapshot. (Remote agents will receive the same envelopes
//! over the mTLS gRPC watch stream.)

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use aos_core::snapshot::TrustedKeys;
use aos_edge_agent::api::App;
use aos_edge_agent::engine::Engine;
use aos_edge_agent::jobs::{JobBoard, JobsConfig};
use aos_edge_agent::snapshots::{Offer, SnapshotSlot};
use aos_edge_agent::store::AgentStore;

use crate::node::{Node, SnapshotIssueError};

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
/// `listen`, fed by `node`. Runs until the process ends.
pub async fn start(
    node: &Node,
    tenant: &str,
    data_dir: &Path,
    listen: SocketAddr,
) -> Result<(), DevAgentError> {
    let mut trusted = TrustedKeys::new();
    for key in node.state().read(|s| {
        s.0.signing_keys().trusted_public_keys().iter().map(|k| (*k).to_owned()).collect::<Vec<_>>()
    }) {
        trusted.insert_hex(&key).map_err(|e| DevAgentError::Key(e.to_string()))?;
    }
    let store = AgentStore::open(&data_dir.join("edge-agent").join("store"))?;
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
    tokio::spawn(feed(node.clone(), Arc::clone(&engine), tenant.to_owned()));
    tokio::spawn(async move {
        let _scheduler = scheduler;
        if let Err(e) =
            axum::serve(listener, aos_edge_agent::api::router(App { engine, jobs, link: None })).await
        {
            tracing::error!(message = "dev edge agent stopped", error = %e);
        }
    });
    Ok(())
}

/// Offers the tenant's snapshot whenever its version moves past what the
/// engine enforces.
async fn feed(node: Node, engine: Arc<Engine>, tenant: String) {
    let mut applied = node.state().subscribe();
    loop {
        let enforced = engine.slot().current().map_or(0, |s| s.version());
        let current = node.state().read(|s| s.0.snapshot_version(&tenant));
        if current > enforced {
            match node.signed_snapshot(&tenant) {
                Ok((version, bytes, _)) => match engine.offer_snapshot(&bytes).await {
                    Ok(Offer::Accepted { .. }) => {
                        tracing::info!(message = "dev edge agent applied snapshot", version)
                    }
                    Ok(Offer::Rejected { reason, .. }) => {
                        tracing::warn!(message = "dev edge agent rejected snapshot", version, reason = %reason);
                    }
                    Err(e) => tracing::error!(message = "dev edge agent cannot store a snapshot", error = %e),
                },
                Err(SnapshotIssueError::State(_)) => {}
                Err(e) => tracing::warn!(message = "cannot issue the dev snapshot", error = %e),
            }
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}
