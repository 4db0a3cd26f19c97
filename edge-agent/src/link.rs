//! The edge agent's link to the control plane, over mutual TLS: the
//! snapshot watch (push, ACK/NACK) and the delivery of outbox records.
//!
//! Both loops work through the node list: on any failure they move to the
//! next node after a backoff (100 ms doubling to 10 s, with ±50 % jitter so
//! a fleet does not reconnect in step), and on reconnect resume from what
//! the agent holds — the watch says `Hello {current_version}`, delivery
//! re-sends whatever is still in the outbox (the control plane
//! de-duplicates by record id). Records are deleted only after the batch
//! that carried them is acked, i.e. committed through Raft.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aos_core::snapshot::TrustedKeys;
use aos_proto::agent::agent_gateway_client::AgentGatewayClient;
use aos_proto::agent::agent_snapshot_message::Kind;
use aos_proto::agent::{
    Ack, AgentSnapshotMessage, Heartbeat, Hello, Nack, Record as WireRecord, RecordBatch,
};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::engine::Engine;
use crate::governance::{GovernanceView, Mode};
use crate::identity::{AgentIdentity, source_chain};
use crate::leader_seek::LeaderSeek;
use crate::outbox::PendingRecord;
use crate::snapshots::Offer;

/// Records per delivered batch.
pub const BATCH_RECORDS: usize = 500;
/// How long an ingest ack may take before the stream is abandoned.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a part-filled batch of records waits for company before it is
/// sent (as Kafka's `linger.ms` or OpenTelemetry's batch processor). The
/// records are durable in the outbox already, so nothing is at risk while
/// they wait; what the wait buys is fewer, fuller batches, and that a
/// burst — a governance change reaching a whole fleet at once, each agent
/// filing a `GOVERNANCE_APPLIED` record — is ingested after the pushes it
/// would otherwise compete with for the control plane's CPU (EVENT path
/// after SPINE, INV-001; benches/README.md, governance propagation).
pub const DELIVERY_LINGER: Duration = Duration::from_millis(50);
/// How often the agent tells the node it is alive (the node closes a watch
/// silent for 30 s).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Link state for `/health` and `/metrics`.
#[derive(Debug, Default)]
pub struct LinkStatus {
    /// Index+1 of the node the watch is connected to (0: none).
    pub watch_node: AtomicU64,
    /// Snapshots ACKed and NACKed.
    pub acks: AtomicU64,
    /// NACKs sent.
    pub nacks: AtomicU64,
    /// Records delivered (committed by the control plane).
    pub delivered: AtomicU64,
    /// Index+1 of the node the delivery stream is connected to (0: none).
    pub delivery_node: AtomicU64,
    /// Times delivery moved to another node to reach the leader
    /// ([`crate::leader_seek`]).
    pub delivery_moves: AtomicU64,
    /// Connection attempts that failed.
    pub failures: AtomicU64,
}

/// The link: where the control plane is and who this agent is.
#[derive(Debug)]
pub struct Link {
    endpoints: Vec<String>,
    identity: AgentIdentity,
    status: LinkStatus,
}

impl Link {
    /// A link to `endpoints` (`host:port` of the nodes' agent gateways).
    pub fn new(endpoints: Vec<String>, identity: AgentIdentity) -> Link {
        Link { endpoints, identity, status: LinkStatus::default() }
    }

    /// Counters.
    pub fn status(&self) -> &LinkStatus {
        &self.status
    }

    /// The node list.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The endpoint the snapshot watch is connected to, if any.
    pub fn watch_endpoint(&self) -> Option<&str> {
        self.endpoint_in(&self.status.watch_node)
    }

    /// The endpoint record delivery is connected to, if any.
    pub fn delivery_endpoint(&self) -> Option<&str> {
        self.endpoint_in(&self.status.delivery_node)
    }

    /// The endpoint a connection slot names (index+1; 0: none).
    fn endpoint_in(&self, slot: &AtomicU64) -> Option<&str> {
        let index = usize::try_from(slot.load(Ordering::Relaxed)).ok()?.checked_sub(1)?;
        self.endpoints.get(index).map(String::as_str)
    }

    /// Notes in `slot` that a stream to endpoint `node` is open.
    fn connected(&self, slot: &AtomicU64, node: usize) {
        slot.store(node as u64 % self.endpoints.len() as u64 + 1, Ordering::Relaxed);
    }

    async fn client(&self, index: usize) -> Result<AgentGatewayClient<Channel>, String> {
        let endpoint = &self.endpoints[index % self.endpoints.len()];
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{endpoint}"))
            .map_err(|e| e.to_string())?
            .tls_config(self.identity.client_tls())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("{endpoint}: {e}: {}", source_chain(&e)))?;
        Ok(AgentGatewayClient::new(channel))
    }
}

/// Exponential backoff with jitter.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(BACKOFF_MIN)
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }

    async fn wait(&mut self, stop: &mut watch::Receiver<bool>) {
        let mut random = [0u8; 2];
        let _ = getrandom::fill(&mut random);
        // 50 %..150 % of the current step.
        let factor = 0.5 + f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX);
        let pause = self.0.mul_f64(factor);
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Runs the snapshot watch until `stop` turns true.
pub async fn run_watch(engine: Arc<Engine>, link: Arc<Link>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new();
    let mut node = 0usize;
    while !*stop.borrow() {
        match watch_once(&engine, &link, node, &mut stop, &mut backoff).await {
            Ok(()) => {}
            Err(e) => {
                link.status.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(message = "snapshot watch interrupted; trying the next node", node = %link.endpoints[node % link.endpoints.len()], error = %e);
            }
        }
        link.status.watch_node.store(0, Ordering::Relaxed);
        node = node.wrapping_add(1);
        backoff.wait(&mut stop).await;
    }
}

async fn watch_once(
    engine: &Engine,
    link: &Link,
    node: usize,
    stop: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let mut client = link.client(node).await?;
    let (tx, rx) = mpsc::channel::<AgentSnapshotMessage>(8);
    let current_version = engine.slot().current().map_or(0, |s| s.version());
    let governance_version = engine.governance().version;
    tx.send(AgentSnapshotMessage { kind: Some(Kind::Hello(Hello { current_version, governance_version })) })
        .await
        .map_err(|e| e.to_string())?;
    let mut pushes =
        client.watch_snapshots(ReceiverStream::new(rx)).await.map_err(|s| s.to_string())?.into_inner();
    link.connected(&link.status.watch_node, node);
    tracing::info!(message = "snapshot watch connected", node = %link.endpoints[node % link.endpoints.len()], current_version);
    backoff.reset();
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT_EVERY, HEARTBEAT_EVERY);
    loop {
        let push = tokio::select! {
            push = pushes.message() => push.map_err(|s| s.to_string())?,
            _ = stop.changed() => return Ok(()),
            _ = heartbeat.tick() => {
                let live_runs = engine.run_counts().iter().filter(|(s, _)| matches!(**s, "running" | "paused" | "queued")).map(|(_, n)| n).sum();
                let beat = Heartbeat {
                    snapshot_version: engine.slot().current().map_or(0, |s| s.version()),
                    outbox_pending: engine.outbox_stats().0,
                    live_runs,
                };
                tx.send(AgentSnapshotMessage { kind: Some(Kind::Heartbeat(beat)) }).await.map_err(|e| e.to_string())?;
                continue;
            }
        };
        let Some(push) = push else {
            return Err("the node closed the watch".to_owned());
        };
        let answer = apply_push(engine, &push).await;
        match &answer {
            Kind::Ack(_) => link.status.acks.fetch_add(1, Ordering::Relaxed),
            _ => link.status.nacks.fetch_add(1, Ordering::Relaxed),
        };
        tx.send(AgentSnapshotMessage { kind: Some(answer) }).await.map_err(|e| e.to_string())?;
    }
}

/// Applies one push — governance state first (it takes effect for the next
/// decision), then the snapshot — and returns the answer to send.
async fn apply_push(engine: &Engine, push: &aos_proto::agent::SnapshotPush) -> Kind {
    let version = push.version;
    let mut governance_version = 0;
    if let Some(g) = &push.governance {
        let Some(mode) = Mode::parse(&g.mode) else {
            return Kind::Nack(Nack { version, reason: format!("unknown governance mode {:?}", g.mode) });
        };
        let view =
            GovernanceView { version: g.version, mode, reason: g.reason.clone(), set_by: g.set_by.clone() };
        match engine.apply_governance(view).await {
            Ok(applied) => {
                if applied {
                    tracing::warn!(message = "governance state applied", version = g.version, mode = %g.mode, reason = %g.reason);
                }
                governance_version = g.version;
            }
            Err(e) => {
                return Kind::Nack(Nack {
                    version,
                    reason: format!("cannot store the governance state: {e}"),
                });
            }
        }
    }
    // The data key before the snapshot, whose sealed credentials need it.
    // Failing to persist it is no reason to refuse policies: it is in force
    // in memory and comes again with the next watch.
    if !push.tenant_data_key.is_empty() {
        match <[u8; 32]>::try_from(push.tenant_data_key.as_slice()) {
            Ok(key) => {
                if let Err(e) = engine.set_data_key(&push.tenant_data_key_id, key).await {
                    tracing::error!(message = "tenant data key not persisted; kept in memory", error = %e);
                }
            }
            Err(_) => tracing::error!(message = "pushed tenant data key is not 32 bytes; ignored"),
        }
    }
    if push.envelope.is_empty() {
        return Kind::Ack(Ack { version: 0, governance_version });
    }
    if !push.trusted_snapshot_keys.is_empty() {
        let mut trusted = TrustedKeys::new();
        for key in &push.trusted_snapshot_keys {
            if let Err(e) = trusted.insert_hex(key) {
                return Kind::Nack(Nack { version, reason: format!("pushed trusted key is invalid: {e}") });
            }
        }
        if let Err(e) = engine.store().save_trusted_keys(&push.trusted_snapshot_keys).await {
            return Kind::Nack(Nack { version, reason: format!("cannot persist trusted keys: {e}") });
        }
        engine.slot().set_trusted(trusted);
    }
    match engine.offer_snapshot(&push.envelope).await {
        Ok(Offer::Accepted { version }) => {
            tracing::info!(message = "snapshot applied", version);
            Kind::Ack(Ack { version, governance_version })
        }
        Ok(Offer::Rejected { reason, .. }) => {
            tracing::warn!(message = "snapshot refused", version, reason = %reason);
            Kind::Nack(Nack { version, reason })
        }
        Err(e) => Kind::Nack(Nack { version, reason: format!("cannot store the snapshot: {e}") }),
    }
}

/// Runs outbox delivery until `stop` turns true.
pub async fn run_delivery(engine: Arc<Engine>, link: Arc<Link>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new();
    let mut seek = LeaderSeek::new(link.endpoints.len());
    // Start on another node than the watch, so the load spreads until the
    // acks say where the leader is.
    let mut node = 1usize;
    let mut moved = false;
    while !*stop.borrow() {
        let delivered = deliver_once(&engine, &link, node, moved, &mut seek, &mut stop, &mut backoff).await;
        link.status.delivery_node.store(0, Ordering::Relaxed);
        moved = false;
        match delivered {
            Ok(Some(leader)) => {
                // A move between batches, not a failure: no pause.
                link.status.delivery_moves.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    message = "record delivery moves to the leader",
                    from = %link.endpoints[node % link.endpoints.len()],
                    to = %link.endpoints[leader % link.endpoints.len()]
                );
                node = leader;
                moved = true;
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                link.status.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(message = "record delivery interrupted; trying the next node", error = %e);
            }
        }
        node = node.wrapping_add(1);
        backoff.wait(&mut stop).await;
    }
}

#[derive(Deserialize)]
struct RecordId {
    record_id: String,
}

/// Delivers the outbox over one stream to endpoint `node` until `stop`, a
/// failure (`Err`), or an ack that shows the leader elsewhere: then the
/// endpoint to move to. A stream is opened once there is something to
/// send, or at once when it follows a move (`moved`: the agent is sending, and dialling
/// later would put the TLS handshake of a whole fleet's moves in the burst
/// of records that a governance change makes every agent file at once).
async fn deliver_once(
    engine: &Engine,
    link: &Link,
    node: usize,
    moved: bool,
    seek: &mut LeaderSeek,
    stop: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Result<Option<usize>, String> {
    // Nothing to send: wait before dialling anyone.
    while !moved && engine.outbox_stats().0 == 0 {
        tokio::select! {
            () = engine.outbox_signal().notified() => {}
            _ = stop.changed() => return Ok(None),
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
    let mut client = link.client(node).await?;
    let (tx, rx) = mpsc::channel::<RecordBatch>(2);
    let mut acks = client.ingest(ReceiverStream::new(rx)).await.map_err(|s| s.to_string())?.into_inner();
    backoff.reset();
    link.connected(&link.status.delivery_node, node);
    let mut batch_seq = 0u64;
    let mut lingered = false;
    loop {
        // Decided on the outbox's count, so the outbox is read once per
        // batch, after the wait.
        let queued = engine.outbox_stats().0;
        if queued > 0 && queued < BATCH_RECORDS as u64 && !lingered {
            lingered = true;
            tokio::select! {
                () = tokio::time::sleep(DELIVERY_LINGER) => continue,
                _ = stop.changed() => return Ok(None),
            }
        }
        let pending = engine.store().pending_raw(BATCH_RECORDS).map_err(|e| e.to_string())?;
        if pending.is_empty() {
            tokio::select! {
                () = engine.outbox_signal().notified() => continue,
                _ = stop.changed() => return Ok(None),
                () = tokio::time::sleep(Duration::from_secs(5)) => continue,
            }
        }
        lingered = false;
        batch_seq += 1;
        let (count, mut bytes) = (pending.len() as u64, 0u64);
        let mut through = None;
        let mut records = Vec::with_capacity(pending.len());
        for PendingRecord { seq, json, next } in pending {
            // A stored record always has an id; an unreadable one still
            // goes out under its sequence, to be kept as MALFORMED.
            let record_id = serde_json::from_slice::<RecordId>(&json)
                .map_or_else(|_| format!("seq-{}-{seq}", link.identity.edge_agent_id), |r| r.record_id);
            bytes += json.len() as u64;
            through = Some(next);
            records.push(WireRecord { record_id, json });
        }
        tx.send(RecordBatch { batch_seq, records }).await.map_err(|e| e.to_string())?;
        let ack = tokio::time::timeout(ACK_TIMEOUT, acks.message())
            .await
            .map_err(|_| "no ack in time".to_owned())?
            .map_err(|s| s.to_string())?
            .ok_or_else(|| "the node closed the ingest stream".to_owned())?;
        if ack.batch_seq != batch_seq {
            return Err(format!("ack for batch {} while waiting for {batch_seq}", ack.batch_seq));
        }
        if let Some(next) = through {
            engine.outbox_delivered(next, count, bytes).await.map_err(|e| e.to_string())?;
        }
        link.status.delivered.fetch_add(count, Ordering::Relaxed);
        if let Some(leader) = seek.after_ack(node, ack.node_id, ack.leader_id) {
            return Ok(Some(leader));
        }
    }
}
