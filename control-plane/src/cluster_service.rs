//! Inbound `aos.cluster.v1.ClusterService`: proposals forwarded by
//! followers, read-index requests, and log positions for a fast takeover
//! (see [`crate::takeover`]). A node that is not the leader answers
//! `UNAVAILABLE` with the leader it knows in `aos-leader-id` /
//! `aos-leader-addr` metadata, so callers can retry there.

use aos_cp_state::LoggedProposal;
use aos_proto::cluster::cluster_service_server::ClusterService;
use aos_proto::cluster::{
    LogPositionReply, LogPositionRequest, ProposeReply, ProposeRequest, ReadIndexReply, ReadIndexRequest,
};
use openraft::error::{CheckIsLeaderError, RaftError};
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::raft::NodeId;
use crate::write::ClusterError;

/// Serves cluster RPCs for one node.
#[derive(Debug, Clone)]
pub struct ClusterRpcServer {
    node: Node,
}

impl ClusterRpcServer {
    /// Serves `node`.
    pub fn new(node: Node) -> Self {
        ClusterRpcServer { node }
    }
}

fn not_leader(leader_id: Option<NodeId>, leader_addr: Option<&str>) -> Status {
    let mut status = Status::unavailable("not the leader");
    if let Some(id) = leader_id
        && let Ok(value) = id.to_string().parse()
    {
        status.metadata_mut().insert("aos-leader-id", value);
    }
    if let Some(addr) = leader_addr
        && let Ok(value) = addr.parse()
    {
        status.metadata_mut().insert("aos-leader-addr", value);
    }
    status
}

#[tonic::async_trait]
impl ClusterService for ClusterRpcServer {
    async fn propose(&self, request: Request<ProposeRequest>) -> Result<Response<ProposeReply>, Status> {
        // Kept as the text the follower encoded: it goes into the log as it
        // came, once every proposal in it is known to decode (below).
        let proposal = LoggedProposal::from_json(&request.into_inner().proposal_json)
            .map_err(|e| Status::invalid_argument(format!("malformed proposal: {e}")))?;
        // A cut-off leader refuses forwarded writes at once too (the
        // forwarding node maps UNAVAILABLE to "no leader", a 503).
        if let crate::node::LeaderContact::CutOffLeader(Some(since_ms)) = self.node.leader_contact() {
            return Err(Status::unavailable(format!(
                "leader {} has had no quorum acknowledgement for {since_ms} ms; nothing was written",
                self.node.id()
            )));
        }
        // A forwarded batch joins this node's proposer as one group; its
        // answer is the proposals' results, in order.
        let (proposals, batch) = match proposal
            .batch_proposals()
            .map_err(|e| Status::invalid_argument(format!("malformed proposal: {e}")))?
        {
            Some(proposals) => (proposals, true),
            None => (vec![proposal], false),
        };
        // Every proposal must decode here before it reaches the log: text
        // this build cannot apply would stop every node at apply (a
        // follower running other code is refused here, alone).
        if let Some((i, error)) =
            proposals.iter().enumerate().find_map(|(i, p)| p.decode().err().map(|e| (i, e)))
        {
            return Err(Status::invalid_argument(format!("malformed proposal {i}: {error}")));
        }
        let committed = match self.node.proposer().submit_logged(proposals, false).await {
            Ok(committed) => committed,
            Err(ClusterError::NotLeader { leader_id, leader_addr }) => {
                return Err(not_leader(leader_id, leader_addr.as_deref()));
            }
            Err(e @ ClusterError::CommitTimeout) => return Err(Status::deadline_exceeded(e.to_string())),
            Err(e @ (ClusterError::NoLeader | ClusterError::NoQuorum { .. })) => {
                return Err(Status::unavailable(e.to_string()));
            }
            Err(e) => return Err(Status::internal(e.to_string())),
        };
        let answer = if batch {
            crate::proposer::batch_answer(committed)
        } else {
            committed.into_iter().next().ok_or_else(|| Status::internal("no result for the proposal"))?
        };
        let result_json = serde_json::to_vec(&answer.result)
            .map_err(|e| Status::internal(format!("encode result: {e}")))?;
        Ok(Response::new(ProposeReply { result_json, log_index: answer.log_index }))
    }

    async fn read_index(
        &self,
        _request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        // A cut-off leader cannot vouch for any read: say so at once (this
        // is also what followers' leader probes ask).
        if let crate::node::LeaderContact::CutOffLeader(Some(since_ms)) = self.node.leader_contact() {
            return Err(Status::unavailable(format!(
                "leader {} has had no quorum acknowledgement for {since_ms} ms",
                self.node.id()
            )));
        }
        match self.node.raft().get_read_log_id().await {
            Ok((read_log_id, _)) => Ok(Response::new(ReadIndexReply {
                read_index: read_log_id.map_or(0, |id| id.index),
                term: read_log_id.map_or(0, |id| id.leader_id.term),
            })),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                Err(not_leader(forward.leader_id, forward.leader_node.as_ref().map(|n| n.addr.as_str())))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                Err(Status::unavailable(format!("no quorum: {e}")))
            }
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }

    async fn log_position(
        &self,
        _request: Request<LogPositionRequest>,
    ) -> Result<Response<LogPositionReply>, Status> {
        let position = self
            .node
            .log_position()
            .await
            .ok_or_else(|| Status::unavailable("the Raft log cannot be read"))?;
        Ok(Response::new(position.to_reply()))
    }
}
