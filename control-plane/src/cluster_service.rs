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

/// The proposals a follower forwarded, still as the text it encoded (they
/// go into the log as they came), and whether they came as one batch (whose
/// answer is the proposals' results, in order). Every one must decode here,
/// before it reaches the log: text this build cannot apply would stop every
/// node at apply, so what a follower running other code forwards is refused
/// here, alone.
fn forwarded_proposals(json: &[u8]) -> Result<(Vec<LoggedProposal>, bool), Status> {
    let malformed = |e: serde_json::Error| Status::invalid_argument(format!("malformed proposal: {e}"));
    let proposal = LoggedProposal::from_json(json).map_err(malformed)?;
    let (proposals, batch) = match proposal.batch_proposals().map_err(malformed)? {
        Some(proposals) => (proposals, true),
        None => (vec![proposal], false),
    };
    if let Some((i, error)) = proposals.iter().enumerate().find_map(|(i, p)| p.decode().err().map(|e| (i, e)))
    {
        return Err(Status::invalid_argument(format!("malformed proposal {i}: {error}")));
    }
    Ok((proposals, batch))
}

#[tonic::async_trait]
impl ClusterService for ClusterRpcServer {
    async fn propose(&self, request: Request<ProposeRequest>) -> Result<Response<ProposeReply>, Status> {
        let forwarded = request.into_inner().proposal_json;
        // A cut-off leader refuses forwarded writes at once too (the
        // forwarding node maps UNAVAILABLE to "no leader", a 503).
        if let crate::node::LeaderContact::CutOffLeader(Some(since_ms)) = self.node.leader_contact() {
            return Err(Status::unavailable(format!(
                "leader {} has had no quorum acknowledgement for {since_ms} ms; nothing was written",
                self.node.id()
            )));
        }
        let (proposals, batch) = forwarded_proposals(&forwarded)?;
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

#[cfg(test)]
mod tests {
    use aos_cp_state::{Command, Proposal};

    use super::*;
    use crate::bootstrap::system_actor;

    fn create_tenant(id: &str) -> LoggedProposal {
        LoggedProposal::encode(&Proposal {
            request_id: format!("create-{id}"),
            actor: system_actor(),
            at_ms: 7,
            command: Command::CreateTenant { tenant_id: id.to_owned(), name: id.to_owned() },
        })
        .unwrap()
    }

    #[test]
    fn a_forwarded_proposal_or_batch_is_taken_as_sent() {
        let one = create_tenant("t-1");
        let (proposals, batch) = forwarded_proposals(one.json().as_bytes()).unwrap();
        assert_eq!((proposals, batch), (vec![one.clone()], false));
        let two = create_tenant("t-2");
        let forwarded =
            LoggedProposal::batch("b-1", &system_actor(), 9, &[one.clone(), two.clone()]).unwrap();
        let (proposals, batch) = forwarded_proposals(forwarded.json().as_bytes()).unwrap();
        assert_eq!((proposals, batch), (vec![one, two], true));
    }

    #[test]
    fn a_forwarded_proposal_this_build_cannot_decode_is_refused_and_named() {
        let good = create_tenant("t-1");
        // A command from a newer build, inside a batch with a good proposal.
        let newer = good.json().replace("CREATE_TENANT", "CREATE_SOMETHING_NEWER");
        let batch = format!(
            r#"{{"request_id":"b","actor":{},"at_ms":1,"command":{{"BATCH":{{"proposals":[{},{newer}]}}}}}}"#,
            serde_json::to_string(&system_actor()).unwrap(),
            good.json()
        );
        let refused = forwarded_proposals(batch.as_bytes()).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().starts_with("malformed proposal 1:"), "{}", refused.message());
        // Alone, and text that is not JSON at all.
        assert_eq!(forwarded_proposals(newer.as_bytes()).unwrap_err().code(), tonic::Code::InvalidArgument);
        let garbage = forwarded_proposals(b"{not json").unwrap_err();
        assert!(garbage.message().starts_with("malformed proposal:"), "{}", garbage.message());
    }
}
