//! The write and read paths every admin request goes through.
//!
//! Writes: any node accepts a proposal. The leader commits it through Raft;
//! a follower forwards it to the leader over gRPC
//! (`aos.cluster.v1.ClusterService/Propose`). Without a leader the caller
//! gets [`ClusterError::NoLeader`] (HTTP 503 with `Retry-After`).
//!
//! Reads: linearizable by default — the leader confirms its leadership with
//! a quorum (read index), and the serving node waits until its state
//! machine has applied that index before reading. `stale` reads skip both.

use std::time::Duration;

use aos_cp_state::{CommandResult, LoggedProposal, Proposal};
use aos_proto::cluster::cluster_service_client::ClusterServiceClient;
use aos_proto::cluster::{LogPositionReply, LogPositionRequest, ProposeRequest, ReadIndexRequest};
use openraft::error::{CheckIsLeaderError, RaftError};

use crate::node::Node;
use crate::peer_channel::{PeerChannel, PeerPool};
use crate::raft::NodeId;

/// How long a forwarded call or a read barrier may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to a peer may take (loopback or LAN).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a write or read could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// No leader is known (election in progress, or this node is cut off
    /// from a quorum).
    #[error("no leader is available; retry shortly")]
    NoLeader,
    /// The leader could not be reached or answered with an error.
    #[error("leader {leader} unreachable: {reason}")]
    LeaderUnreachable {
        /// Leader id.
        leader: NodeId,
        /// Why.
        reason: String,
    },
    /// Raft failed on this node.
    #[error("raft: {0}")]
    Raft(String),
    /// The request could not be encoded or the reply decoded.
    #[error("codec: {0}")]
    Codec(String),
    /// The leader accepted the proposal but no quorum committed it in time
    /// (this node may be cut off from the others). It may still commit if
    /// the quorum returns: retry with the same `Idempotency-Key`.
    #[error(
        "not committed within {} s: no quorum reachable from the leader; it may still commit, so retry with the same Idempotency-Key",
        COMMIT_TIMEOUT.as_secs()
    )]
    CommitTimeout,
    /// This node leads but has not heard from a quorum for a while (it is
    /// cut off): the proposal was not made, so nothing can commit.
    #[error(
        "this node leads but no quorum has acknowledged it for {since_ms} ms (cut off from the cluster); nothing was written"
    )]
    NoQuorum {
        /// Milliseconds since a quorum last acknowledged this leader.
        since_ms: u64,
    },
    /// This node is not the leader and the proposals were forwarded to it
    /// already (a write is forwarded once, never passed along further).
    #[error("this node is not the leader")]
    NotLeader {
        /// The leader this node knows of.
        leader_id: Option<NodeId>,
        /// Its cluster address.
        leader_addr: Option<String>,
    },
}

/// Longest a proposal waits for its commit on the leader.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A committed command and where it landed.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Raft log index.
    pub log_index: u64,
    /// The state machine's answer.
    pub result: CommandResult,
}

/// Proposes on the leader, forwarding when this node is not it. Proposals
/// made at the same time on this node travel as one Raft entry (see
/// [`crate::proposer`]).
pub async fn propose(node: &Node, proposal: Proposal) -> Result<Committed, ClusterError> {
    node.proposer()
        .submit(vec![proposal], true)
        .await?
        .pop()
        .ok_or_else(|| ClusterError::Codec("the proposer answered without a result".to_owned()))
}

/// Connections to peers, shared by every forwarded call and read barrier.
static PEERS: std::sync::LazyLock<PeerPool> = std::sync::LazyLock::new(PeerPool::default);

/// Makes one call to the cluster service of `peer` at `addr` within
/// [`CALL_TIMEOUT`] (connecting included), mapping its status with
/// [`leader_status`]. A call that times out answers `timed_out(peer)` and forgets
/// the connection: a peer that stopped answering (a partition) is reached
/// on a fresh one next time.
async fn call_peer<T, F, Fut>(
    peer: NodeId,
    addr: &str,
    timed_out: fn(NodeId) -> ClusterError,
    call: F,
) -> Result<T, ClusterError>
where
    F: FnOnce(ClusterServiceClient<PeerChannel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut used: Option<PeerChannel> = None;
    let answer = async {
        let channel = PEERS
            .get(addr, CONNECT_TIMEOUT)
            .await
            .map_err(|e| ClusterError::LeaderUnreachable { leader: peer, reason: e.to_string() })?;
        used = Some(channel.clone());
        let origin = channel.origin();
        call(ClusterServiceClient::with_origin(channel, origin))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| leader_status(peer, &status))
    };
    match tokio::time::timeout(CALL_TIMEOUT, answer).await {
        Ok(result) => result,
        Err(_) => {
            if let Some(channel) = used {
                PEERS.forget(addr, &channel);
            }
            Err(timed_out(peer))
        }
    }
}

/// Maps a leader's gRPC status: `UNAVAILABLE` means it lost leadership,
/// `DEADLINE_EXCEEDED` that it took the proposal but could not commit it in
/// time.
fn leader_status(leader: NodeId, status: &tonic::Status) -> ClusterError {
    match status.code() {
        // "Not the leader" names the leader it knows (`aos-leader-id`);
        // any other UNAVAILABLE (a leader without a quorum, a transport
        // failure) keeps its reason for the caller.
        tonic::Code::Unavailable if status.metadata().contains_key("aos-leader-id") => ClusterError::NoLeader,
        tonic::Code::Unavailable if status.message() == "not the leader" => ClusterError::NoLeader,
        tonic::Code::DeadlineExceeded => ClusterError::CommitTimeout,
        _ => ClusterError::LeaderUnreachable { leader, reason: status.to_string() },
    }
}

pub(crate) async fn forward_propose(
    leader: NodeId,
    addr: &str,
    proposal: &LoggedProposal,
) -> Result<Committed, ClusterError> {
    let proposal_json = proposal.json().as_bytes().to_vec().into();
    // The leader took the proposal but did not answer in time: it may
    // still commit, as a proposal of its own would.
    let reply = call_peer(
        leader,
        addr,
        |_| ClusterError::CommitTimeout,
        |mut client| async move { client.propose(ProposeRequest { proposal_json }).await },
    )
    .await?;
    let result =
        serde_json::from_slice(&reply.result_json).map_err(|e| ClusterError::Codec(e.to_string()))?;
    Ok(Committed { log_index: reply.log_index, result })
}

/// Consistency of an admin read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Read index through the leader; never goes back in time.
    #[default]
    Linearizable,
    /// Whatever this node has applied.
    Stale,
}

/// Waits until a read at `consistency` may be served from this node.
pub async fn read_barrier(node: &Node, consistency: Consistency) -> Result<(), ClusterError> {
    if consistency == Consistency::Stale {
        return Ok(());
    }
    let read_index = match node.raft().get_read_log_id().await {
        Ok((read_log_id, _applied)) => read_log_id.map_or(0, |id| id.index),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
            match (forward.leader_id, forward.leader_node) {
                (Some(leader), Some(leader_node)) => remote_read_index(leader, &leader_node.addr).await?,
                _ => return Err(ClusterError::NoLeader),
            }
        }
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
            return Err(ClusterError::NoLeader);
        }
        Err(e) => return Err(ClusterError::Raft(e.to_string())),
    };
    wait_applied(node, read_index).await
}

/// Asks `leader` for a read index; it answers only with a quorum's fresh
/// acknowledgement.
pub(crate) async fn remote_read_index(leader: NodeId, addr: &str) -> Result<u64, ClusterError> {
    let reply = call_peer(leader, addr, no_answer, |mut client| async move {
        client.read_index(ReadIndexRequest {}).await
    })
    .await?;
    Ok(reply.read_index)
}

/// Asks the voter `peer` for its log position (see [`crate::takeover`]).
pub(crate) async fn remote_log_position(peer: NodeId, addr: &str) -> Result<LogPositionReply, ClusterError> {
    call_peer(
        peer,
        addr,
        no_answer,
        |mut client| async move { client.log_position(LogPositionRequest {}).await },
    )
    .await
}

fn no_answer(peer: NodeId) -> ClusterError {
    ClusterError::LeaderUnreachable {
        leader: peer,
        reason: format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
    }
}

/// Waits until the local state machine has applied `index`.
pub async fn wait_applied(node: &Node, index: u64) -> Result<(), ClusterError> {
    let mut applied = node.state().subscribe();
    let wait = async {
        loop {
            if *applied.borrow_and_update() >= index {
                return Ok(());
            }
            if applied.changed().await.is_err() {
                return Err(ClusterError::Raft("state machine stopped".to_owned()));
            }
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, wait).await.map_err(|_| ClusterError::NoLeader)?
}
