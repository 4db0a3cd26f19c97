//! Inbound Raft RPCs: the `aos.raft.v1.RaftService` server, handing each
//! decoded openraft message to the local Raft instance and returning its
//! `Result` (success or Raft error) as serde-JSON.

use aos_proto::raft::RaftPayload;
use aos_proto::raft::raft_service_server::RaftService;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use super::{NodeId, Raft, TypeConfig};

/// Serves Raft RPCs for one node.
#[derive(Clone)]
pub struct RaftRpcServer {
    raft: Raft,
    heartbeat: std::sync::Arc<crate::takeover::LeaderHeartbeat>,
}

impl std::fmt::Debug for RaftRpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftRpcServer").finish_non_exhaustive()
    }
}

impl RaftRpcServer {
    /// Serves `raft`, noting each AppendEntries it accepts in `heartbeat`.
    pub fn new(raft: Raft, heartbeat: std::sync::Arc<crate::takeover::LeaderHeartbeat>) -> Self {
        RaftRpcServer { raft, heartbeat }
    }
}

fn decode<T: DeserializeOwned>(request: Request<RaftPayload>, what: &str) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().json)
        .map_err(|e| Status::invalid_argument(format!("malformed {what}: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    serde_json::to_vec(value)
        .map(|json| Response::new(RaftPayload { json: json.into() }))
        .map_err(|e| Status::internal(format!("encode reply: {e}")))
}

#[tonic::async_trait]
impl RaftService for RaftRpcServer {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request, "append-entries request")?;
        let result = self.raft.append_entries(rpc).await;
        // Accepted from a current leader: its lease runs from now on this
        // voter (a stale leader's request is answered HigherVote).
        if matches!(&result, Ok(reply) if !matches!(reply, AppendEntriesResponse::HigherVote(_))) {
            self.heartbeat.heard();
        }
        encode(&result)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> = decode(request, "vote request")?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request, "install-snapshot request")?;
        encode(&self.raft.install_snapshot(rpc).await)
    }
}
