//! One control-plane node: opens its sled store, starts Raft, and serves the
//! gRPC (Raft + cluster) and HTTP (admin) endpoints until shut down.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aos_proto::cluster::cluster_service_server::ClusterServiceServer;
use aos_proto::raft::raft_service_server::RaftServiceServer;
use axum::serve::ListenerExt;
use openraft::BasicNode;
use tokio::net::TcpListener;

use crate::cluster_service::ClusterRpcServer;
use crate::gateway::GatewayService;
use crate::master_key::MasterKey;
use crate::pki::ClusterCa;
use crate::raft::network::GrpcNetwork;
use crate::raft::service::RaftRpcServer;
use crate::raft::store::{self, LogStore, StateReader};
use crate::raft::{NodeId, Raft};
use crate::signing::KeyRing;
use crate::spine::{SpineInputs, SpineReport};
use aos_proto::agent::agent_gateway_server::AgentGatewayServer;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// How long a stopping node lets edge-agent streams end by themselves.
const GATEWAY_GRACE: Duration = Duration::from_secs(1);

/// Most log entries per AppendEntries; the log store also bounds a payload
/// by encoded bytes (`aos_cp_store::log_store::PAYLOAD_BUDGET`), which is
/// what limits large entries.
pub const MAX_PAYLOAD_ENTRIES: u64 = 1024;

/// A leader that no quorum has acknowledged for this long (or for twenty
/// heartbeats, when that is longer) counts as cut off: openraft keeps
/// calling itself leader until it hears a higher term, so an isolated
/// leader would otherwise go on serving state it can no longer vouch for.
/// Twenty heartbeats, so a busy 2-core node under load does not flap.
pub const QUORUM_CONTACT_LIMIT: Duration = Duration::from_secs(1);

/// How this node sees the cluster's leadership right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderContact {
    /// A leader is known and, if it is this node, a quorum acknowledged it
    /// within [`QUORUM_CONTACT_LIMIT`].
    Usable(NodeId),
    /// No leader is known (an election, or cut off as a follower).
    NoLeader,
    /// This node leads, but no quorum has acknowledged it for this many
    /// milliseconds (`None`: not once since it was elected).
    CutOffLeader(Option<u64>),
    /// This node follows `0`, but that leader has not shown it a quorum
    /// lately (see [`crate::leader_probe`]): it may be cut off with this
    /// node on the minority side of a partition.
    UnconfirmedLeader(NodeId),
}

impl std::fmt::Display for LeaderContact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaderContact::Usable(leader) => write!(f, "leader {leader}"),
            LeaderContact::NoLeader => f.write_str("no leader known"),
            LeaderContact::CutOffLeader(Some(ms)) => {
                write!(f, "this node leads but no quorum has acknowledged it for {ms} ms")
            }
            LeaderContact::CutOffLeader(None) => {
                f.write_str("this node leads but no quorum has acknowledged it yet")
            }
            LeaderContact::UnconfirmedLeader(leader) => {
                write!(f, "leader {leader} has not shown this node a quorum lately (partitioned?)")
            }
        }
    }
}

/// What a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's Raft id (≥ 1).
    pub node_id: NodeId,
    /// Where its sled database lives.
    pub data_dir: PathBuf,
    /// The gRPC address peers use to reach it (`host:port`).
    pub advertise_grpc: String,
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// The snapshot signing keys this node holds (the same on every node).
    pub keys: Arc<KeyRing>,
    /// How long an issued snapshot stays valid (`not_after - issued_at`).
    pub max_staleness: Duration,
    /// Build a Raft snapshot (and purge the log behind it) every this many
    /// log entries.
    pub snapshot_every: u64,
    /// The cluster CA for the edge-agent gateway (`None`: no gateway).
    pub ca: Option<Arc<ClusterCa>>,
    /// Extra names (hosts, IPs) for this node's gateway certificate.
    pub tls_names: Vec<String>,
    /// Whether alert webhooks may target loopback/private addresses.
    pub alert_private_targets: bool,
    /// The master key wrapping tenants' data keys (`None`: this node
    /// refuses credential operations; see [`crate::master_key`]).
    pub master_key: Option<Arc<MasterKey>>,
    /// The SMTP relay for EMAIL alert channels (`None`: EMAIL channels are
    /// refused by this node's API and fail delivery on it).
    pub mailer: Option<Arc<crate::email::Mailer>>,
    /// How often the leader applies tenants' record retention.
    pub retention_interval: Duration,
}

impl NodeConfig {
    /// Defaults tuned for a LAN/loopback cluster: 50 ms heartbeats and a
    /// 150–300 ms election timeout, so a new leader is usually elected
    /// within half a second of losing the old one.
    pub fn new(node_id: NodeId, data_dir: PathBuf, advertise_grpc: String, keys: Arc<KeyRing>) -> Self {
        NodeConfig {
            node_id,
            data_dir,
            advertise_grpc,
            heartbeat: Duration::from_millis(50),
            keys,
            max_staleness: Duration::from_secs(24 * 60 * 60),
            snapshot_every: 5_000,
            ca: None,
            tls_names: Vec::new(),
            alert_private_targets: false,
            master_key: None,
            mailer: None,
            retention_interval: Duration::from_secs(60),
        }
    }
}

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node id is not usable.
    #[error("node id must be at least 1")]
    BadNodeId,
    /// The sled store could not be opened.
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        /// Data directory.
        dir: String,
        /// Cause.
        source: aos_cp_store::StoreError,
    },
    /// openraft refused the configuration or failed fatally.
    #[error("raft: {0}")]
    Raft(String),
    /// A listener failed.
    #[error("serving {what}: {source}")]
    Serve {
        /// Which endpoint.
        what: &'static str,
        /// Cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Why a tenant snapshot cannot be issued.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotIssueError {
    /// The state has none (no policy change yet) or the tenant is unknown.
    #[error(transparent)]
    State(aos_cp_state::StateError),
    /// This node does not hold the active signing key.
    #[error(transparent)]
    Key(crate::signing::SigningKeyError),
    /// Encoding or signing failed.
    #[error("signing the snapshot: {0}")]
    Sign(aos_core::SnapshotError),
    /// This node failed its spine checks at start.
    #[error("{0}")]
    BootFailed(String),
}

/// A running node's handles, shared by the gRPC and HTTP services.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    id: NodeId,
    advertise_grpc: String,
    raft: Raft,
    state: StateReader,
    keys: Arc<KeyRing>,
    max_staleness_ms: u64,
    ca: Option<Arc<ClusterCa>>,
    tls_names: Vec<String>,
    data_dir: PathBuf,
    open_watches: std::sync::atomic::AtomicU64,
    spine: SpineReport,
    alert_private_targets: bool,
    quorum_contact_limit: Duration,
    master_key: Option<Arc<MasterKey>>,
    connectors: aos_connectors::Connectors,
    mailer: Option<Arc<crate::email::Mailer>>,
    retention_interval: Duration,
    /// The leader this follower's last successful probe reached, and when.
    leader_confirmed: std::sync::Mutex<Option<(NodeId, std::time::Instant)>>,
    /// When this node last accepted an AppendEntries (see [`crate::takeover`]).
    leader_heartbeat: Arc<crate::takeover::LeaderHeartbeat>,
    /// How long voters refuse to vote after a leader's last heartbeat
    /// (openraft's leader lease: `election_timeout_max`).
    leader_lease: Duration,
    /// A reader of the Raft log, for this node's log position.
    log_store: LogStore,
    /// The fewest log entries between two Raft snapshots.
    snapshot_every: u64,
    /// Where this node's proposals go (started on first use).
    proposer: std::sync::OnceLock<crate::proposer::Proposer>,
}

/// A handle that does not keep the node alive (held by its proposer task).
#[derive(Debug, Clone)]
pub struct WeakNode {
    inner: std::sync::Weak<NodeInner>,
}

impl WeakNode {
    /// The node, while it is still running.
    pub fn upgrade(&self) -> Option<Node> {
        self.inner.upgrade().map(|inner| Node { inner })
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.inner.id).field("grpc", &self.inner.advertise_grpc).finish()
    }
}

impl Node {
    /// Opens the store and starts Raft (not yet serving).
    pub async fn open(config: &NodeConfig) -> Result<Node, NodeError> {
        if config.node_id == 0 {
            return Err(NodeError::BadNodeId);
        }
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| NodeError::Serve { what: "data directory", source: Box::new(e) })?;
        let (log_store, state_machine) = store::open(&config.data_dir.join("raft"))
            .map_err(|source| NodeError::Store { dir: config.data_dir.display().to_string(), source })?;
        let state = state_machine.reader();
        let heartbeat = u64::try_from(config.heartbeat.as_millis()).unwrap_or(100).max(10);
        let raft_config = openraft::Config {
            cluster_name: "aos-control-plane".to_owned(),
            heartbeat_interval: heartbeat,
            election_timeout_min: heartbeat * 3,
            election_timeout_max: heartbeat * 6,
            // Snapshots are asked for by `snapshot_trigger`, which weighs
            // the log's growth against the state's size.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            // Keep a tail behind the snapshot so a briefly lagging follower
            // catches up from the log; further behind, it gets the snapshot.
            max_in_snapshot_log_to_keep: (config.snapshot_every / 5).min(1_000),
            // openraft gives each AppendEntries one heartbeat interval to
            // complete and keeps one in flight per follower, so a payload
            // is what one round trip carries. Entries range from ~1 KB
            // (admin writes) to ~50 KB (an ingest entry of 100 agent
            // records): the log store cuts payloads by bytes, and the
            // count only caps how many tiny entries go together.
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        let spine = SpineReport::run(&SpineInputs {
            data_dir: &config.data_dir,
            state: &state,
            keys: &config.keys,
            ca: config.ca.as_deref(),
            tls_names: &config.tls_names,
            now_ms: crate::now_ms(),
        });
        if spine.validated() {
            tracing::info!(message = "spine checks passed", node_id = config.node_id);
        } else {
            tracing::error!(
                message = "spine checks failed: this node serves no admin API, agents or snapshots until restarted with the cause fixed (see /health)",
                node_id = config.node_id,
                failures = %spine.failures()
            );
        }
        let leader_lease = Duration::from_millis(raft_config.election_timeout_max);
        let log_reader = log_store.clone();
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            GrpcNetwork::default(),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        Ok(Node {
            inner: Arc::new(NodeInner {
                id: config.node_id,
                advertise_grpc: config.advertise_grpc.clone(),
                raft,
                state,
                keys: Arc::clone(&config.keys),
                max_staleness_ms: u64::try_from(config.max_staleness.as_millis()).unwrap_or(u64::MAX),
                ca: config.ca.clone(),
                tls_names: config.tls_names.clone(),
                data_dir: config.data_dir.clone(),
                open_watches: std::sync::atomic::AtomicU64::new(0),
                spine,
                alert_private_targets: config.alert_private_targets,
                quorum_contact_limit: QUORUM_CONTACT_LIMIT.max(config.heartbeat * 20),
                master_key: config.master_key.clone(),
                connectors: aos_connectors::Connectors::new(),
                mailer: config.mailer.clone(),
                retention_interval: config.retention_interval,
                leader_confirmed: std::sync::Mutex::new(None),
                leader_heartbeat: Arc::default(),
                leader_lease,
                log_store: log_reader,
                snapshot_every: config.snapshot_every.max(1),
                proposer: std::sync::OnceLock::new(),
            }),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The Raft instance.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// This node's proposer (started on first use, within the runtime).
    pub fn proposer(&self) -> &crate::proposer::Proposer {
        self.inner.proposer.get_or_init(|| crate::proposer::Proposer::start(self.downgrade()))
    }

    /// A handle that does not keep this node alive.
    pub fn downgrade(&self) -> WeakNode {
        WeakNode { inner: Arc::downgrade(&self.inner) }
    }

    /// Read access to the applied state.
    pub fn state(&self) -> &StateReader {
        &self.inner.state
    }

    /// The leader and its cluster address when another node leads, as this
    /// node last heard (the view a `client_write` here would answer with).
    pub fn leader_elsewhere(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft().metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader.filter(|leader| *leader != self.id())?;
        let addr = metrics.membership_config.membership().get_node(&leader)?.addr.clone();
        Some((leader, addr))
    }

    /// Whether this node has a leader it can rely on (see
    /// [`LeaderContact`]).
    pub fn leader_contact(&self) -> LeaderContact {
        let metrics = self.raft().metrics();
        let metrics = metrics.borrow();
        match metrics.current_leader {
            None => LeaderContact::NoLeader,
            Some(leader) if leader != self.id() => {
                // Twice the leader's own limit: a probe answered slowly by a
                // busy leader must not make a follower give up on it.
                let limit = self.inner.quorum_contact_limit * 2;
                match *self.inner.leader_confirmed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
                    Some((confirmed, at)) if confirmed == leader && at.elapsed() < limit => {
                        LeaderContact::Usable(leader)
                    }
                    _ => LeaderContact::UnconfirmedLeader(leader),
                }
            }
            Some(leader) => match metrics.millis_since_quorum_ack {
                Some(ms) if u128::from(ms) < self.inner.quorum_contact_limit.as_millis() => {
                    LeaderContact::Usable(leader)
                }
                ms => LeaderContact::CutOffLeader(ms),
            },
        }
    }

    /// Notes that `leader` just granted this follower a read index, i.e.
    /// a quorum acknowledges it (see [`crate::leader_probe`]).
    pub(crate) fn leader_confirmed(&self, leader: NodeId) {
        *self.inner.leader_confirmed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((leader, std::time::Instant::now()));
    }

    /// When this node last accepted an AppendEntries from a leader.
    pub(crate) fn leader_heartbeat(&self) -> &crate::takeover::LeaderHeartbeat {
        &self.inner.leader_heartbeat
    }

    /// How long voters refuse votes after a leader's last heartbeat.
    pub(crate) fn leader_lease(&self) -> Duration {
        self.inner.leader_lease
    }

    /// fsyncs run for Raft log appends since start.
    pub fn raft_log_fsyncs(&self) -> u64 {
        self.inner.log_store.append_fsyncs()
    }

    /// Encoded bytes appended to this node's Raft log since it started.
    pub fn raft_log_appended_bytes(&self) -> u64 {
        self.inner.log_store.appended_bytes()
    }

    /// The fewest log entries between two Raft snapshots (see
    /// [`crate::snapshot_trigger`]).
    pub fn snapshot_every(&self) -> u64 {
        self.inner.snapshot_every
    }

    /// This node's last log id and time since it heard a leader (`None`
    /// when the log cannot be read).
    pub(crate) async fn log_position(&self) -> Option<crate::takeover::LogPosition> {
        use openraft::storage::RaftLogStorage;
        let mut reader = self.inner.log_store.clone();
        match reader.get_log_state().await {
            Ok(state) => Some(crate::takeover::LogPosition {
                last_log_id: state.last_log_id,
                since_leader: self.inner.leader_heartbeat.last().map(|at| at.elapsed()),
            }),
            Err(e) => {
                tracing::warn!(message = "cannot read the Raft log state", error = %e);
                None
            }
        }
    }

    /// The master key, when this node holds one.
    pub fn master_key(&self) -> Option<&MasterKey> {
        self.inner.master_key.as_deref()
    }

    /// Connectors for verification probes.
    pub fn connectors(&self) -> &aos_connectors::Connectors {
        &self.inner.connectors
    }

    /// The data key of `tenant_id`, unwrapped, when the tenant has one and
    /// this node holds the master key.
    pub fn tenant_data_key(&self, tenant_id: &str) -> Option<(String, [u8; 32])> {
        let master = self.master_key()?;
        let wrapped = self.state().read(|s| s.0.data_access().tenant(tenant_id)?.data_key.clone())?;
        match master.unwrap(tenant_id, &wrapped) {
            Ok(key) => Some((wrapped.data_key_id, key)),
            Err(e) => {
                tracing::error!(message = "tenant data key does not open", tenant = tenant_id, error = %e);
                None
            }
        }
    }

    /// Whether alert webhooks may target loopback/private addresses.
    pub fn alert_private_targets(&self) -> bool {
        self.inner.alert_private_targets
    }

    /// How often the leader applies record retention.
    pub fn retention_interval(&self) -> Duration {
        self.inner.retention_interval
    }

    /// The SMTP relay for EMAIL alert channels, when configured.
    pub fn mailer(&self) -> Option<&Arc<crate::email::Mailer>> {
        self.inner.mailer.as_ref()
    }

    /// The spine checks this node ran at start, with the live ones.
    pub fn spine(&self) -> SpineReport {
        self.inner.spine.with(crate::spine::active_key(self.state(), self.keys()))
    }

    /// `Err(why)` when this node failed its spine checks and must serve
    /// nothing from its own entry points.
    pub fn boot_failure(&self) -> Result<(), String> {
        // Every admin request and snapshot issue asks: the common answer
        // costs one state read and no allocation.
        if self.inner.spine.validated() && crate::spine::holds_active_key(self.state(), self.keys()) {
            return Ok(());
        }
        let live = crate::spine::active_key(self.state(), self.keys());
        Err(format!(
            "node {} failed its spine checks ({}); it serves nothing until restarted with the cause fixed",
            self.id(),
            self.inner.spine.with(live).failures()
        ))
    }

    /// The snapshot signing keys this node holds.
    pub fn keys(&self) -> &KeyRing {
        &self.inner.keys
    }

    /// Snapshot watches this node serves now.
    pub fn open_watches(&self) -> u64 {
        self.inner.open_watches.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn watch_opened(&self) {
        self.inner.open_watches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn watch_closed(&self) {
        self.inner.open_watches.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// This node's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.data_dir
    }

    /// The cluster CA, when this node serves edge agents.
    pub fn ca(&self) -> Option<&Arc<ClusterCa>> {
        self.inner.ca.as_ref()
    }

    /// Public keys (hex) agents should trust for snapshots: active and
    /// trusted ones, as replicated.
    pub fn trusted_snapshot_keys(&self) -> Vec<String> {
        self.state()
            .read(|s| s.0.signing_keys().trusted_public_keys().iter().map(|k| (*k).to_owned()).collect())
    }

    /// `not_after - issued_at` of issued snapshots, in milliseconds.
    pub fn max_staleness_ms(&self) -> u64 {
        self.inner.max_staleness_ms
    }

    /// The tenant's current snapshot, signed with the cluster's active key:
    /// `(version, envelope bytes, signing key id)`. Every node returns the
    /// same bytes for the same version (ed25519 is deterministic and the
    /// signer is replicated state).
    pub fn signed_snapshot(&self, tenant_id: &str) -> Result<(u64, Vec<u8>, String), SnapshotIssueError> {
        self.boot_failure().map_err(SnapshotIssueError::BootFailed)?;
        let (built, active) = self.state().read(|s| {
            (
                s.0.issued_snapshot(tenant_id, self.max_staleness_ms()),
                s.0.signing_keys().active().map(str::to_owned),
            )
        });
        let snapshot = built.map_err(SnapshotIssueError::State)?;
        let signer = self.keys().signer_for(active.as_deref()).map_err(SnapshotIssueError::Key)?;
        let bytes = aos_core::sign(&snapshot, signer).map_err(SnapshotIssueError::Sign)?;
        Ok((snapshot.version, bytes, signer.key_id().to_string()))
    }

    /// The address peers reach this node at.
    pub fn advertise_grpc(&self) -> &str {
        &self.inner.advertise_grpc
    }

    /// Makes this node the single voter of a new cluster. Refused when the
    /// node already belongs to one.
    pub async fn initialize(&self) -> Result<(), NodeError> {
        let mut members = BTreeMap::new();
        members.insert(self.id(), BasicNode::new(self.advertise_grpc()));
        self.raft().initialize(members).await.map_err(|e| NodeError::Raft(e.to_string()))
    }

    /// Serves gRPC on `grpc`, HTTP on `http` and, when given, the
    /// edge-agent gateway (mutual TLS) on `agents` until `shutdown`
    /// resolves, then stops Raft.
    pub async fn serve(
        self,
        grpc: TcpListener,
        http: TcpListener,
        agents: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), NodeError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let gateway_task = match agents {
            Some(listener) => Some(tokio::spawn(self.gateway(listener, wait_for(stop_rx.clone()))?)),
            None => None,
        };
        let grpc_stop = wait_for(stop_rx.clone());
        let stop_rx_reissue = stop_rx.clone();
        let stop_rx_alerts = stop_rx.clone();
        let stop_rx_retention = stop_rx.clone();
        let stop_rx_probe = stop_rx.clone();
        let stop_rx_snapshot = stop_rx.clone();
        let http_stop = wait_for(stop_rx);

        let grpc_server = tonic::transport::Server::builder()
            .add_service(
                RaftServiceServer::new(RaftRpcServer::new(
                    self.raft().clone(),
                    Arc::clone(&self.inner.leader_heartbeat),
                ))
                .max_decoding_message_size(usize::MAX),
            )
            .add_service(ClusterServiceServer::new(ClusterRpcServer::new(self.clone())))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                grpc_stop,
            );
        let router = crate::http::router(self.clone());
        // Small request/response exchanges: without TCP_NODELAY, Nagle plus
        // delayed ACKs add ~40 ms to every write.
        let http = http.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(message = "cannot set TCP_NODELAY", error = %e);
            }
        });
        let http_server = axum::serve(http, router).with_graceful_shutdown(http_stop);

        let reissue_task = tokio::spawn(crate::reissue::run(self.clone(), stop_rx_reissue));
        let alerts_task = tokio::spawn(crate::alerting::run(self.clone(), stop_rx_alerts));
        let retention_task = tokio::spawn(crate::retention::run(self.clone(), stop_rx_retention));
        let probe_task = tokio::spawn(crate::leader_probe::run(self.clone(), stop_rx_probe));
        let snapshot_task = tokio::spawn(crate::snapshot_trigger::run(self.clone(), stop_rx_snapshot));
        let grpc_task = tokio::spawn(grpc_server);
        let http_task = tokio::spawn(async move { http_server.await });
        shutdown.await;
        let _ = stop_tx.send(true);
        let grpc_result = grpc_task.await;
        let http_result = http_task.await;
        let _ = reissue_task.await;
        let _ = alerts_task.await;
        let _ = retention_task.await;
        let _ = probe_task.await;
        let _ = snapshot_task.await;
        if let Some(mut task) = gateway_task {
            // Edge agents hold watch and ingest streams open for as long as
            // they run, so a graceful stop would wait for them forever: give
            // them a moment, then drop them (they reconnect to another node).
            match tokio::time::timeout(GATEWAY_GRACE, &mut task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(message = "agent gateway stopped with an error", error = %e),
                Ok(Err(e)) => tracing::warn!(message = "agent gateway task failed", error = %e),
                Err(_) => {
                    tracing::info!(message = "closing the remaining edge-agent streams");
                    task.abort();
                }
            }
        }
        if let Err(e) = self.raft().shutdown().await {
            tracing::warn!(message = "raft shutdown failed", error = %e);
        }
        match grpc_result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(NodeError::Serve { what: "grpc", source: Box::new(e) }),
            Err(e) => return Err(NodeError::Serve { what: "grpc", source: Box::new(e) }),
        }
        match http_result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NodeError::Serve { what: "http", source: Box::new(e) }),
            Err(e) => Err(NodeError::Serve { what: "http", source: Box::new(e) }),
        }
    }
}

impl Node {
    /// The edge-agent gateway server: TLS with this node's certificate
    /// (issued now by the cluster CA), client certificates verified against
    /// the CA and optional at the TLS layer (only `Join` goes without).
    fn gateway(
        &self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + Send + 'static, NodeError> {
        let serve_err = |e: Box<dyn std::error::Error + Send + Sync>| NodeError::Serve {
            what: "agent gateway",
            source: e,
        };
        let ca = self.ca().ok_or_else(|| serve_err("the agent gateway needs the cluster CA key".into()))?;
        let now_secs = i64::try_from(crate::now_ms() / 1000).unwrap_or(0);
        let identity =
            ca.issue_server(&self.inner.tls_names, now_secs).map_err(|e| serve_err(Box::new(e)))?;
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(identity.cert_chain_pem, identity.key_pem))
            .client_ca_root(Certificate::from_pem(ca.cert_pem()))
            .client_auth_optional(true);
        let server = tonic::transport::Server::builder()
            .tls_config(tls)
            .map_err(|e| serve_err(Box::new(e)))?
            .add_service(AgentGatewayServer::new(GatewayService::new(self.clone())))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop,
            );
        Ok(server)
    }
}

async fn wait_for(mut stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
