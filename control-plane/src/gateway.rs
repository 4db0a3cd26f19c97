//! The edge-agent gateway (`aos.agent.v1.AgentGateway`), served over TLS
//! on `--agent-addr`.
//!
//! - [`join`]: a join token and a CSR in, the agent's client certificate
//!   out. The only call allowed without a client certificate.
//! - [`watch`]: pushes the tenant's signed snapshots when the node's
//!   [`push_signal`] moves; ACKs go to the node's [`acks`] recorder
//!   (batched through Raft), NACKs are committed one by one.
//! - [`ingest`]: commits record batches through Raft, then acks them.
//!
//! Every call but `Join` is mutual TLS: rustls has already checked that
//! the client certificate chains to the cluster CA; here the certificate's
//! fingerprint names the registered agent, and with it the one tenant it
//! may see. Nothing in a request body can name another tenant.

pub mod acks;
#[cfg(debug_assertions)]
pub mod fault;
pub mod ingest;
pub mod join;
pub mod push_signal;
pub mod watch;

use std::pin::Pin;

use aos_cp_state::EdgeAgentRecord;
use aos_proto::agent::agent_gateway_server::AgentGateway;
use aos_proto::agent::{
    AgentSnapshotMessage, BatchAck, JoinRequest, JoinResponse, RecordBatch, SnapshotPush,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::node::Node;
use crate::pki;
use crate::write::{ClusterError, Consistency, read_barrier};

/// A server-push stream of gRPC messages.
pub type PushStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The gateway service.
#[derive(Debug, Clone)]
pub struct GatewayService {
    node: Node,
    acks: acks::AckRecorder,
    pushes: tokio::sync::watch::Receiver<u64>,
}

impl GatewayService {
    /// A gateway over `node`; starts the node's ACK recorder and push
    /// signal (within a Tokio runtime).
    pub fn new(node: Node) -> GatewayService {
        let pushes = push_signal::start(&node);
        let acks = acks::AckRecorder::start(node.clone());
        GatewayService { node, acks, pushes }
    }

    /// The registered agent presenting the request's client certificate.
    /// A certificate unknown locally triggers one read barrier first, so an
    /// agent that just joined through another node is recognised here.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<EdgeAgentRecord, Status> {
        self.node.boot_failure().map_err(Status::unavailable)?;
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required: join first"))?;
        let leaf = certs.first().ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
        let fingerprint = pki::fingerprint(leaf.as_ref());
        let lookup = |node: &Node| {
            node.state().read(|s| s.0.edge_agents().agent_by_fingerprint(&fingerprint).cloned())
        };
        if let Some(agent) = lookup(&self.node) {
            return Ok(agent);
        }
        read_barrier(&self.node, Consistency::Linearizable).await.map_err(unavailable)?;
        lookup(&self.node).ok_or_else(|| {
            Status::permission_denied("this client certificate belongs to no registered edge agent")
        })
    }
}

/// A cluster error as a gRPC status: the agent retries `UNAVAILABLE`
/// elsewhere.
pub(crate) fn unavailable(e: ClusterError) -> Status {
    Status::unavailable(e.to_string())
}

#[tonic::async_trait]
impl AgentGateway for GatewayService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        self.node.boot_failure().map_err(Status::unavailable)?;
        join::join(&self.node, request.into_inner()).await.map(Response::new)
    }

    type WatchSnapshotsStream = PushStream<SnapshotPush>;

    async fn watch_snapshots(
        &self,
        request: Request<Streaming<AgentSnapshotMessage>>,
    ) -> Result<Response<Self::WatchSnapshotsStream>, Status> {
        let agent = self.authenticate(&request).await?;
        let watch =
            watch::Watch { node: self.node.clone(), acks: self.acks.clone(), pushes: self.pushes.clone() };
        Ok(Response::new(watch::start(watch, agent, request.into_inner())))
    }

    type IngestStream = PushStream<BatchAck>;

    async fn ingest(
        &self,
        request: Request<Streaming<RecordBatch>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        let agent = self.authenticate(&request).await?;
        Ok(Response::new(ingest::start(self.node.clone(), agent, request.into_inner())))
    }
}
