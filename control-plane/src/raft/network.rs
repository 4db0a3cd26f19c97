//! Outbound Raft RPCs over gRPC.
//!
//! One [`GrpcConnection`] per target node, created by openraft through
//! [`GrpcNetwork`], over one HTTP/2 connection ([`PeerChannel`], without
//! tonic's buffer task). openraft's messages travel as serde-JSON inside the
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
use crate::peer_channel::PeerChannel;

/// How long to wait for a TCP connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Creates connections to peers; cheap, holds no state.
#[derive(Debug, Clone, Default)]
pub struct GrpcNetwork;

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcConnection {
        GrpcConnection { target, addr: node.addr.clone(), channel: None }
    }
}

/// A lazily connected client to one peer.
#[derive(Debug)]
pub struct GrpcConnection {
    target: NodeId,
    addr: String,
    channel: Option<PeerChannel>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

#[expect(clippy::result_large_err, reason = "openraft's RPC error type is fixed by the RaftNetwork trait")]
impl GrpcConnection {
    async fn client<E: std::error::Error>(
        &mut self,
    ) -> Result<RaftServiceClient<PeerChannel>, RPCError<NodeId, BasicNode, E>> {
        let channel = match &self.channel {
            Some(channel) if !channel.is_closed() => channel.clone(),
            _ => {
                let channel = PeerChannel::connect(&self.addr, CONNECT_TIMEOUT).await.map_err(|e| {
                    RPCError::Unreachable(Unreachable::new(&TransportError(format!(
                        "node {}: {e}",
                        self.target
                    ))))
                })?;
                self.channel = Some(channel.clone());
                channel
            }
        };
        let origin = channel.origin();
        Ok(RaftServiceClient::with_origin(channel, origin).max_decoding_message_size(usize::MAX))
    }

    fn encode<T: Serialize, E: std::error::Error>(
        value: &T,
    ) -> Result<RaftPayload, RPCError<NodeId, BasicNode, E>> {
        serde_json::to_vec(value).map(|json| RaftPayload { json }).map_err(|e| {
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
        if matches!(result, Err(RPCError::Network(_) | RPCError::Unreachable(_))) {
            self.channel = None;
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
