//! Outbound Raft RPCs over gRPC.
//!
//! openraft creates a [`GrpcConnection`] through [`GrpcNetwork`] for each
//! replication stream and for each round of heartbeats that confirms a
//! linearizable read; all of them share one HTTP/2 connection per peer
//! ([`PeerChannel`]). Before they shared it, every read index — four a
//! second from each follower's leader probe, and one per linearizable admin
//! read — opened and closed a TCP connection to every follower.
//!
//! openraft's messages travel as serde-JSON inside the
//! `aos.raft.v1.RaftPayload` envelope; the remote's own Raft error comes
//! back inside the payload and is surfaced as a `RemoteError`, while
//! transport failures become `Unreachable` (connect) or `NetworkError`
//! (anything else), which openraft retries with backoff.

use std::time::Duration;

use aos_proto::raft::RaftPayload;
use aos_proto::raft::raft_service_client::RaftServiceClient;
use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{NodeId, TypeConfig};
use crate::peer_channel::{PeerChannel, PeerPool};

/// How long to wait for a TCP connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Creates clients to peers over the shared connections.
#[derive(Debug, Clone, Default)]
pub struct GrpcNetwork {
    pool: PeerPool,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcConnection {
        GrpcConnection { target, addr: node.addr.clone(), channel: None, pool: self.pool.clone() }
    }
}

/// A lazily connected client to one peer.
#[derive(Debug)]
pub struct GrpcConnection {
    target: NodeId,
    addr: String,
    channel: Option<PeerChannel>,
    pool: PeerPool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

#[expect(clippy::result_large_err, reason = "openraft's RPC error type is fixed by the RaftNetwork trait")]
impl GrpcConnection {
    async fn client<E: std::error::Error>(
        &mut self,
    ) -> Result<RaftServiceClient<PeerChannel>, RPCError<NodeId, BasicNode, E>> {
        let channel = match self.channel.as_ref().filter(|channel| !channel.is_closed()) {
            Some(channel) => channel.clone(),
            None => self.pool.get(&self.addr, CONNECT_TIMEOUT).await.map_err(|e| {
                RPCError::Unreachable(Unreachable::new(&TransportError(format!("node {}: {e}", self.target))))
            })?,
        };
        self.channel = Some(channel.clone());
        let origin = channel.origin();
        Ok(RaftServiceClient::with_origin(channel, origin).max_decoding_message_size(usize::MAX))
    }

    fn encode<T: Serialize, E: std::error::Error>(
        value: &T,
    ) -> Result<RaftPayload, RPCError<NodeId, BasicNode, E>> {
        serde_json::to_vec(value).map(|json| RaftPayload { json: json.into() }).map_err(|e| {
            RPCError::Network(NetworkError::new(&TransportError(format!("encode request: {e}"))))
        })
    }

    fn decode<T, E>(
        &self,
        reply: Result<tonic::Response<RaftPayload>, tonic::Status>,
    ) -> Result<T, RPCError<NodeId, BasicNode, E>>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = match reply {
            Ok(reply) => reply.into_inner(),
            Err(status) => {
                return Err(RPCError::Network(NetworkError::new(&TransportError(format!(
                    "node {} at {}: {status}",
                    self.target, self.addr
                )))));
            }
        };
        let result: Result<T, E> = serde_json::from_slice(&payload.json).map_err(|e| {
            RPCError::Network(NetworkError::new(&TransportError(format!("decode reply: {e}"))))
        })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn forget_on_transport_error<T, E: std::error::Error>(
        &mut self,
        result: &Result<T, RPCError<NodeId, BasicNode, E>>,
    ) {
        if matches!(result, Err(RPCError::Network(_) | RPCError::Unreachable(_)))
            && let Some(failed) = self.channel.take()
        {
            self.pool.forget(&self.addr, &failed);
        }
    }
}

impl RaftNetwork<TypeConfig> for GrpcConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let request = Self::encode(&rpc)?;
        let mut client = self.client().await?;
        let reply = client.append_entries(request).await;
        let result = self.decode(reply);
        self.forget_on_transport_error(&result);
        result
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let request = Self::encode(&rpc)?;
        let mut client = self.client().await?;
        let reply = client.install_snapshot(request).await;
        let result = self.decode(reply);
        self.forget_on_transport_error(&result);
        result
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let request = Self::encode(&rpc)?;
        let mut client = self.client().await?;
        let reply = client.vote(request).await;
        let result = self.decode(reply);
        self.forget_on_transport_error(&result);
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aos_proto::raft::raft_service_server::{RaftService, RaftServiceServer};
    use openraft::Vote;
    use tokio::net::TcpListener;
    use tokio_stream::StreamExt;
    use tonic::{Request, Response, Status};

    use super::*;

    /// Accepts every AppendEntries and every vote.
    struct Agreeable;

    fn reply<T: Serialize>(answer: &Result<T, RaftError<NodeId>>) -> Result<Response<RaftPayload>, Status> {
        Ok(Response::new(RaftPayload { json: serde_json::to_vec(answer).unwrap().into() }))
    }

    #[tonic::async_trait]
    impl RaftService for Agreeable {
        async fn append_entries(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            reply(&Ok(AppendEntriesResponse::<NodeId>::Success))
        }

        async fn vote(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            reply(&Ok(VoteResponse::<NodeId> {
                vote: Vote::new(1, 1),
                vote_granted: true,
                last_log_id: None,
            }))
        }

        async fn install_snapshot(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            Err(Status::unimplemented("install_snapshot"))
        }
    }

    /// A peer serving [`Agreeable`] on `listener` and counting the TCP
    /// connections it accepts, until `stop` is sent.
    struct Peer {
        addr: String,
        accepted: Arc<AtomicUsize>,
        stop: tokio::sync::oneshot::Sender<()>,
        served: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    }

    async fn peer(addr: &str) -> Peer {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |connection| {
            counter.fetch_add(1, Ordering::SeqCst);
            connection
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftServiceServer::new(Agreeable))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        Peer { addr, accepted, stop, served }
    }

    fn heartbeat() -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        }
    }

    fn option() -> RPCOption {
        RPCOption::new(Duration::from_secs(2))
    }

    #[tokio::test]
    async fn clients_openraft_creates_for_one_peer_share_one_connection() {
        let peer = peer("127.0.0.1:0").await;
        let node = BasicNode::new(&peer.addr);
        let mut network = GrpcNetwork::default();
        // As openraft does: a replication stream's client, then a fresh
        // client for every round of read-index heartbeats.
        let mut replication = network.new_client(2, &node).await;
        for round in 0..5 {
            replication.append_entries(heartbeat(), option()).await.unwrap();
            let mut read_index = network.new_client(2, &node).await;
            read_index.append_entries(heartbeat(), option()).await.unwrap();
            let vote = VoteRequest::new(Vote::new(2, 1), None);
            assert!(read_index.vote(vote, option()).await.unwrap().vote_granted, "round {round}");
        }
        assert_eq!(peer.accepted.load(Ordering::SeqCst), 1, "every client used the first connection");
    }

    #[tokio::test]
    async fn a_peer_that_restarted_is_reached_on_a_new_connection() {
        let first = peer("127.0.0.1:0").await;
        let node = BasicNode::new(&first.addr);
        let mut network = GrpcNetwork::default();
        let mut client = network.new_client(2, &node).await;
        client.append_entries(heartbeat(), option()).await.unwrap();
        let old = client.channel.clone().unwrap();

        first.stop.send(()).unwrap();
        first.served.await.unwrap().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !old.is_closed() {
            assert!(std::time::Instant::now() < deadline, "the connection never noticed its peer stop");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Down: a call fails as unreachable (openraft retries with backoff).
        assert!(matches!(client.append_entries(heartbeat(), option()).await, Err(RPCError::Unreachable(_))));

        // Back on the same address: the existing client and a new one both
        // reach it, over one new connection.
        let second = peer(&first.addr).await;
        client.append_entries(heartbeat(), option()).await.unwrap();
        let mut fresh = network.new_client(2, &node).await;
        fresh.append_entries(heartbeat(), option()).await.unwrap();
        assert_eq!(second.accepted.load(Ordering::SeqCst), 1);
        assert!(!client.channel.as_ref().unwrap().same_connection(&old));
    }
}
