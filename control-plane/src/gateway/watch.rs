//! `WatchSnapshots`: server push of a tenant's signed snapshots, xDS style.
//!
//! The agent opens with `Hello {current_version}`. The node pushes the
//! tenant's current snapshot whenever its version is newer than what the
//! agent holds or was last sent, and the governance state whenever its
//! version moves, woken by the node's [`push_signal`](super::push_signal)
//! (no polling, and no wake-up for the many entries that change neither).
//! ACKs go to the node's [`AckRecorder`] (committed in batches,
//! `RECORD_AGENT_ACKS`); each NACK is committed on its own
//! (`RECORD_AGENT_SYNC`); both are audited, so `aosctl agent list` shows
//! them from any node. Any node serves the stream; followers push what
//! they have applied, and the agent's version check makes an older push
//! harmless.

use aos_cp_state::{AgentAck, EdgeAgentRecord};
use aos_proto::agent::agent_snapshot_message::Kind;
use aos_proto::agent::{AgentSnapshotMessage, GovernanceState, SnapshotPush};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::PushStream;
use super::acks::AckRecorder;
use crate::bootstrap::system_actor;
use crate::node::{LeaderContact, Node, SnapshotIssueError};
use crate::write::propose;

/// Pushes waiting to be sent on one stream.
const PUSH_BUFFER: usize = 4;
/// A watch silent this long (no heartbeat, ACK or NACK; agents send a
/// heartbeat every 10 s) is closed: the connection is half-open or the
/// agent is wedged, and the agent reconnects when it can.
pub const SILENCE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);
/// A node that has had no usable leader for this long — none known, or it
/// leads without a quorum's acknowledgement (see
/// [`crate::node::LeaderContact`]) — closes its watches, so its agents
/// move to a node that can give them current state.
pub const LEADERLESS_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);

/// What a watch needs from its node.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The node serving it.
    pub node: Node,
    /// Where ACKs go.
    pub acks: AckRecorder,
    /// Moves when something a push carries may have changed.
    pub pushes: tokio::sync::watch::Receiver<u64>,
}

/// Starts serving one agent's watch; the returned stream carries the
/// pushes.
pub fn start(
    watch: Watch,
    agent: EdgeAgentRecord,
    inbound: Streaming<AgentSnapshotMessage>,
) -> PushStream<SnapshotPush> {
    let (tx, rx) = mpsc::channel(PUSH_BUFFER);
    tokio::spawn(async move {
        let agent_id = agent.agent_id.clone();
        let node = &watch.node;
        node.watch_opened();
        connection(node, &agent, true).await;
        let result = serve(&watch, &agent, inbound, &tx).await;
        node.watch_closed();
        connection(node, &agent, false).await;
        if let Err(status) = result {
            tracing::info!(message = "snapshot watch ended", agent_id = %agent_id, status = %status.message());
            let _ = tx.send(Err(status)).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

async fn serve(
    watch: &Watch,
    agent: &EdgeAgentRecord,
    mut inbound: Streaming<AgentSnapshotMessage>,
    tx: &mpsc::Sender<Result<SnapshotPush, Status>>,
) -> Result<(), Status> {
    let node = &watch.node;
    let hello = match inbound.message().await? {
        Some(AgentSnapshotMessage { kind: Some(Kind::Hello(hello)) }) => hello,
        Some(_) => return Err(Status::invalid_argument("the first message of a watch must be Hello")),
        None => return Ok(()),
    };
    let tenant = agent.tenant_id.as_str();
    tracing::info!(
        message = "snapshot watch opened",
        agent_id = %agent.agent_id,
        tenant,
        agent_version = hello.current_version
    );
    let mut sent = hello.current_version;
    let mut key_sent = false;
    let mut governance_sent = hello.governance_version;
    // What the agent enforces (its Hello, then each ACK).
    let mut agent_version = hello.current_version;
    let mut pushes = watch.pushes.clone();
    let mut heard = tokio::time::Instant::now();
    let mut leader_check = tokio::time::interval(std::time::Duration::from_millis(500));
    let mut leaderless_since: Option<tokio::time::Instant> = None;
    loop {
        // Seen before reading, so a change made after the read wakes us.
        pushes.borrow_and_update();
        let (current, governance) = node.state().read(|s| {
            let g = s.0.governance();
            let (mode, source) = g.effective_setting(tenant);
            let state = GovernanceState {
                version: g.version(),
                mode: mode.as_str().to_owned(),
                reason: source.reason.clone(),
                set_by: source.set_by.clone(),
            };
            (s.0.snapshot_version(tenant), state)
        });
        let mut push = None;
        if current > sent {
            match node.signed_snapshot(tenant) {
                Ok((version, envelope, _key_id)) => {
                    #[cfg(debug_assertions)]
                    let envelope = super::fault::apply(node, tenant, agent_version, envelope);
                    let (tenant_data_key_id, tenant_data_key) =
                        node.tenant_data_key(tenant).map(|(id, key)| (id, key.to_vec())).unwrap_or_default();
                    push = Some(SnapshotPush {
                        version,
                        envelope,
                        trusted_snapshot_keys: node.trusted_snapshot_keys(),
                        governance: None,
                        tenant_data_key,
                        tenant_data_key_id,
                    });
                    sent = version;
                }
                // No policy change yet: nothing to push.
                Err(SnapshotIssueError::State(_)) => sent = current,
                Err(e) => {
                    return Err(Status::unavailable(format!("cannot issue snapshot {current}: {e}")));
                }
            }
        }
        // The data key goes with the first push of every watch too, so an
        // agent that lost it (or last met a node without the master key)
        // gets it without waiting for the next snapshot version.
        if !key_sent {
            key_sent = true;
            if let Some((id, key)) = node.tenant_data_key(tenant) {
                let p = push.get_or_insert_with(governance_only);
                p.tenant_data_key = key.to_vec();
                p.tenant_data_key_id = id;
            }
        }
        if governance.version > governance_sent || (push.is_some() && governance.version > 0) {
            governance_sent = governance.version;
            let p = push.get_or_insert_with(governance_only);
            p.governance = Some(governance);
        }
        if let Some(push) = push
            && tx.send(Ok(push)).await.is_err()
        {
            return Ok(());
        }
        tokio::select! {
            _ = leader_check.tick() => {
                match node.leader_contact() {
                    LeaderContact::Usable(_) => leaderless_since = None,
                    contact => {
                        let since = *leaderless_since.get_or_insert_with(tokio::time::Instant::now);
                        if since.elapsed() >= LEADERLESS_LIMIT {
                            return Err(Status::unavailable(format!(
                                "node {} has had no usable leader for {} s ({contact}); try another node",
                                node.id(),
                                LEADERLESS_LIMIT.as_secs()
                            )));
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(heard + SILENCE_LIMIT) => {
                return Err(Status::unavailable(format!("no heartbeat for {} s", SILENCE_LIMIT.as_secs())));
            }
            changed = pushes.changed() => {
                if changed.is_err() {
                    return Err(Status::unavailable("this node is shutting down"));
                }
            }
            message = inbound.message() => match message? {
                None => return Ok(()),
                Some(AgentSnapshotMessage { kind: Some(Kind::Heartbeat(beat)) }) => {
                    heard = tokio::time::Instant::now();
                    tracing::debug!(
                        message = "edge agent heartbeat",
                        agent_id = %agent.agent_id,
                        snapshot_version = beat.snapshot_version,
                        outbox_pending = beat.outbox_pending,
                        live_runs = beat.live_runs
                    );
                }
                Some(AgentSnapshotMessage { kind: Some(Kind::Ack(ack)) }) => {
                    heard = tokio::time::Instant::now();
                    agent_version = agent_version.max(ack.version);
                    tracing::debug!(message = "push acked", agent_id = %agent.agent_id, agent_version, governance_version = ack.governance_version);
                    let governance_version = (ack.governance_version > 0).then_some(ack.governance_version);
                    let ack = AgentAck { agent_id: agent.agent_id.clone(), version: ack.version, governance_version };
                    watch.acks.record(tenant, ack).await;
                }
                Some(AgentSnapshotMessage { kind: Some(Kind::Nack(nack)) }) => {
                    heard = tokio::time::Instant::now();
                    tracing::warn!(
                        message = "edge agent refused a snapshot",
                        agent_id = %agent.agent_id,
                        tenant,
                        version = nack.version,
                        reason = %nack.reason
                    );
                    record_nack(node, agent, nack.version, nack.reason).await;
                }
                Some(_) => return Err(Status::invalid_argument("expected Ack or Nack after Hello")),
            },
            () = tx.closed() => return Ok(()),
        }
    }
}

/// Commits that the agent opened or left this node's watch; a failure (no
/// leader) is logged.
async fn connection(node: &Node, agent: &EdgeAgentRecord, connected: bool) {
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let proposal = aos_cp_state::Proposal {
        request_id: format!("conn-{}-{}-{}", agent.agent_id, node.id(), hex::encode(nonce)),
        actor: system_actor(),
        at_ms: crate::now_ms(),
        command: aos_cp_state::Command::RecordAgentConnection {
            agent_id: agent.agent_id.clone(),
            node_id: node.id(),
            connected,
        },
    };
    if let Err(e) = propose(node, proposal).await {
        tracing::warn!(message = "cannot record an agent connection change", agent_id = %agent.agent_id, connected, error = %e);
    }
}

/// Commits a NACK. A failure (no leader) is logged: the agent repeats its
/// answer on its next push or reconnect.
async fn record_nack(node: &Node, agent: &EdgeAgentRecord, version: u64, reason: String) {
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let proposal = aos_cp_state::Proposal {
        request_id: format!("sync-{}-{version}-{}", agent.agent_id, hex::encode(nonce)),
        actor: system_actor(),
        at_ms: crate::now_ms(),
        command: aos_cp_state::Command::RecordAgentSync {
            agent_id: agent.agent_id.clone(),
            version,
            governance_version: None,
            nack_reason: Some(reason),
        },
    };
    if let Err(e) = propose(node, proposal).await {
        tracing::warn!(message = "cannot record a snapshot NACK", agent_id = %agent.agent_id, error = %e);
    }
}

/// A push without a snapshot (version 0): governance state and/or the
/// tenant data key only.
fn governance_only() -> SnapshotPush {
    SnapshotPush {
        version: 0,
        envelope: Vec::new(),
        trusted_snapshot_keys: Vec::new(),
        governance: None,
        tenant_data_key: Vec::new(),
        tenant_data_key_id: String::new(),
    }
}
