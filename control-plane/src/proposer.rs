//! Groups the proposals one node makes at about the same time into one Raft
//! entry (`BATCH`, see [`aos_cp_state::Command::Batch`]).
//!
//! Every proposal used to be its own entry: its own log write on three
//! nodes, its own place in every AppendEntries, its own apply, and on a
//! follower its own gRPC call to forward it to the leader. Under load those
//! per-entry costs, paid on every node, were where the cluster's CPU went.
//! Here a node's proposals queue to one task, which keeps at most
//! [`MAX_IN_FLIGHT`] entries in flight and, whenever one is free, sends
//! everything queued — up to [`MAX_BATCH_PROPOSALS`] proposals and about
//! [`MAX_BATCH_BYTES`] — as one entry; beyond [`PARTIAL_IN_FLIGHT`] entries
//! in flight, only a full one. A lone proposal goes as it is, so a quiet
//! cluster pays nothing extra; batches grow with load, as etcd's do.
//!
//! A follower forwards a batch to the leader in one call; the leader's
//! proposer takes it as one group (it may travel with the leader's own).
//! Each proposal is applied, audited and answered exactly as if it were its
//! own entry; a batch that fails to commit fails each of its proposals with
//! the same error, as separate entries pending on the same leader would.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aos_cp_state::{CommandResult, LoggedProposal, Proposal};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::bootstrap::system_actor;
use crate::node::{LeaderContact, Node, WeakNode};
use crate::write::{COMMIT_TIMEOUT, ClusterError, Committed, forward_propose};

/// Entries one node keeps in flight at once: enough to keep Raft's pipeline
/// busy while the next batch gathers.
pub const MAX_IN_FLIGHT: usize = 4;
/// Entries in flight beyond which only a full group is sent; a partial one
/// waits for a flight to land and gathers what arrives meanwhile.
///
/// Small writes (admin mutations, ~0.5 KB) never fill a group, so with four
/// partial entries in flight each carried only ~3 proposals at 16 writers
/// and the per-entry costs (a log write on three nodes, AppendEntries and
/// their replies, a forward per follower batch) were paid ~4 times as
/// often as needed on two saturated cores. Full groups (record ingest,
/// 100-record proposals) still use the whole pipeline. Alternated
/// `cluster-bench` runs, writes/s at 16 writers: 1,942–2,110 with every
/// entry allowed to fly, 2,385–2,573 with this at 2 (benches/README.md).
pub const PARTIAL_IN_FLIGHT: usize = 2;
/// Most proposals in one entry.
pub const MAX_BATCH_PROPOSALS: usize = 256;
/// About the most bytes one entry carries, so that a batch replicates well
/// within a heartbeat (openraft gives each AppendEntries one). A single
/// larger proposal still travels, alone.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Submissions waiting for the proposer; a full queue makes callers wait.
const QUEUE: usize = 8_192;

/// A node's proposer; cloning shares it.
#[derive(Debug, Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Submission>,
    counts: Arc<Counts>,
}

/// What the proposer has sent, for `/metrics`.
#[derive(Debug, Default)]
struct Counts {
    entries: AtomicU64,
    proposals: AtomicU64,
}

/// Proposals submitted together, answered together.
#[derive(Debug)]
struct Submission {
    proposals: Vec<LoggedProposal>,
    /// Their encoded length.
    bytes: usize,
    /// Whether they may be forwarded when this node is not the leader:
    /// `false` for proposals a follower forwarded here (one hop only).
    may_forward: bool,
    reply: oneshot::Sender<Result<Vec<Committed>, ClusterError>>,
}

impl Proposer {
    /// Starts the proposer task of `node` (within a Tokio runtime). It holds
    /// the node weakly and ends when the node and every handle are gone.
    pub(crate) fn start(node: WeakNode) -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counts = Arc::new(Counts::default());
        tokio::spawn(run(node, rx, Arc::clone(&counts)));
        Proposer { tx, counts }
    }

    /// Entries sent (committed here or forwarded) and the proposals they
    /// carried, since start: their ratio is the average batch.
    pub fn sent(&self) -> (u64, u64) {
        (self.counts.entries.load(Ordering::Relaxed), self.counts.proposals.load(Ordering::Relaxed))
    }

    /// Commits `proposals` (in this order, possibly with others) and
    /// returns one answer per proposal. They are encoded here, in the
    /// caller's task, once: the entry and everything that copies it carry
    /// their text from then on.
    pub async fn submit(
        &self,
        proposals: Vec<Proposal>,
        may_forward: bool,
    ) -> Result<Vec<Committed>, ClusterError> {
        let logged = proposals
            .iter()
            .map(LoggedProposal::encode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClusterError::Codec(format!("encode proposal: {e}")))?;
        self.submit_logged(logged, may_forward).await
    }

    /// [`Proposer::submit`] for proposals already encoded (a batch a
    /// follower forwarded).
    pub async fn submit_logged(
        &self,
        proposals: Vec<LoggedProposal>,
        may_forward: bool,
    ) -> Result<Vec<Committed>, ClusterError> {
        if proposals.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = proposals.iter().map(LoggedProposal::len).sum();
        let (reply, answer) = oneshot::channel();
        let submission = Submission { proposals, bytes, may_forward, reply };
        self.tx.send(submission).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> ClusterError {
    ClusterError::Raft("this node is shutting down".to_owned())
}

async fn run(node: WeakNode, mut rx: mpsc::Receiver<Submission>, counts: Arc<Counts>) {
    let mut queue: VecDeque<Submission> = VecDeque::new();
    let mut flights = JoinSet::new();
    let mut open = true;
    loop {
        while let Ok(submission) = rx.try_recv() {
            queue.push_back(submission);
        }
        while may_fly(&queue, flights.len())
            && let Some(group) = take_group(&mut queue)
        {
            let Some(node) = node.upgrade() else {
                // The node is gone: dropping the group tells its callers.
                return;
            };
            counts.entries.fetch_add(1, Ordering::Relaxed);
            let proposals: usize = group.iter().map(|s| s.proposals.len()).sum();
            counts.proposals.fetch_add(u64::try_from(proposals).unwrap_or(u64::MAX), Ordering::Relaxed);
            flights.spawn(fly(node, group));
        }
        if !open && queue.is_empty() && flights.is_empty() {
            return;
        }
        tokio::select! {
            received = rx.recv(), if open => match received {
                Some(submission) => queue.push_back(submission),
                None => open = false,
            },
            Some(_) = flights.join_next(), if !flights.is_empty() => {}
            else => return,
        }
    }
}

/// Whether the next group may be sent while `flying` entries are in
/// flight (see [`PARTIAL_IN_FLIGHT`]).
fn may_fly(queue: &VecDeque<Submission>, flying: usize) -> bool {
    flying < MAX_IN_FLIGHT && (flying < PARTIAL_IN_FLIGHT || next_group(queue).1)
}

/// Where the submissions the next entry carries stand in the queue: the
/// oldest, then every later one with the same forwarding rule while the
/// entry stays within its caps. And whether that entry is full — at a cap,
/// or with a later submission that no longer fits — so that waiting would
/// not make it larger.
fn next_group(queue: &VecDeque<Submission>) -> (Vec<usize>, bool) {
    let Some(first) = queue.front() else { return (Vec::new(), false) };
    let (mut count, mut bytes) = (first.proposals.len(), first.bytes);
    let mut members = vec![0];
    for (i, next) in queue.iter().enumerate().skip(1).filter(|(_, s)| s.may_forward == first.may_forward) {
        if count + next.proposals.len() > MAX_BATCH_PROPOSALS || bytes + next.bytes > MAX_BATCH_BYTES {
            return (members, true);
        }
        count += next.proposals.len();
        bytes += next.bytes;
        members.push(i);
    }
    (members, count >= MAX_BATCH_PROPOSALS || bytes >= MAX_BATCH_BYTES)
}

/// Takes the submissions the next entry carries ([`next_group`]) out of
/// the queue, oldest first.
fn take_group(queue: &mut VecDeque<Submission>) -> Option<Vec<Submission>> {
    let (members, _) = next_group(queue);
    // From the back, so the positions still to take stay where they were.
    let mut group: Vec<Submission> = members.iter().rev().filter_map(|&i| queue.remove(i)).collect();
    group.reverse();
    (!group.is_empty()).then_some(group)
}

/// Commits one group as one entry and answers each submission.
async fn fly(node: Node, group: Vec<Submission>) {
    let may_forward = group.first().is_some_and(|s| s.may_forward);
    let mut proposals = Vec::with_capacity(group.iter().map(|s| s.proposals.len()).sum());
    let mut replies = Vec::with_capacity(group.len());
    for submission in group {
        replies.push((submission.proposals.len(), submission.reply));
        proposals.extend(submission.proposals);
    }
    match commit(&node, proposals, may_forward).await {
        Ok(mut committed) => {
            for (count, reply) in replies.into_iter().rev() {
                let mine = committed.split_off(committed.len().saturating_sub(count));
                let _ = reply.send(Ok(mine));
            }
        }
        Err(e) => {
            for (_, reply) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Proposes `proposals` as one entry on the leader, forwarding when this
/// node is not it and `may_forward`; one answer per proposal.
async fn commit(
    node: &Node,
    mut proposals: Vec<LoggedProposal>,
    may_forward: bool,
) -> Result<Vec<Committed>, ClusterError> {
    let count = proposals.len();
    let entry = if count == 1 {
        proposals.pop().ok_or_else(|| ClusterError::Codec("empty batch".to_owned()))?
    } else {
        let mut nonce = [0u8; 8];
        let _ = getrandom::fill(&mut nonce);
        let request_id = format!("batch-{}-{}", node.id(), hex::encode(nonce));
        LoggedProposal::batch(&request_id, &system_actor(), crate::now_ms(), &proposals)
            .map_err(|e| ClusterError::Codec(format!("encode batch: {e}")))?
    };
    // A cut-off leader would only queue the entry and time out: refuse it
    // at once, before anything is appended.
    if let LeaderContact::CutOffLeader(Some(since_ms)) = node.leader_contact() {
        return Err(ClusterError::NoQuorum { since_ms });
    }
    // A follower that knows the leader forwards at once: asking its own Raft
    // first would cost a round trip through its Raft task (and a copy of the
    // entry) only to be told the same leader.
    let committed = match may_forward.then(|| node.leader_elsewhere()).flatten() {
        Some((leader, addr)) => forward_propose(leader, &addr, &entry).await?,
        None => write_or_forward(node, entry, may_forward).await?,
    };
    if count == 1 {
        return Ok(vec![committed]);
    }
    let log_index = committed.log_index;
    let results =
        committed.result.into_batch().filter(|results| results.len() == count).ok_or_else(|| {
            ClusterError::Codec(format!("a batch of {count} proposals came back without their results"))
        })?;
    Ok(results.into_iter().map(|result| Committed { log_index, result }).collect())
}

/// Writes `entry` through this node's Raft, forwarding it when Raft answers
/// that another node leads and `may_forward`.
async fn write_or_forward(
    node: &Node,
    entry: LoggedProposal,
    may_forward: bool,
) -> Result<Committed, ClusterError> {
    // `client_write` takes the entry; a copy is kept only when it may have
    // to be forwarded (not for batches a follower forwarded here).
    let kept = may_forward.then(|| entry.clone());
    let written = tokio::time::timeout(COMMIT_TIMEOUT, node.raft().client_write(entry))
        .await
        .map_err(|_| ClusterError::CommitTimeout)?;
    match written {
        Ok(response) => Ok(Committed { log_index: response.log_id.index, result: response.data }),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
            match (forward.leader_id, forward.leader_node, kept) {
                (Some(leader), Some(leader_node), Some(entry)) => {
                    forward_propose(leader, &leader_node.addr, &entry).await
                }
                (leader_id, leader_node, None) => {
                    Err(ClusterError::NotLeader { leader_id, leader_addr: leader_node.map(|n| n.addr) })
                }
                _ => Err(ClusterError::NoLeader),
            }
        }
        Err(e) => Err(ClusterError::Raft(e.to_string())),
    }
}

/// The answer a forwarded batch gets: its proposals' results as one
/// [`CommandResult::batch`].
pub(crate) fn batch_answer(committed: Vec<Committed>) -> Committed {
    let log_index = committed.first().map_or(0, |c| c.log_index);
    let results: Vec<CommandResult> = committed.into_iter().map(|c| c.result).collect();
    Committed { log_index, result: CommandResult::batch(&results) }
}

#[cfg(test)]
mod tests {
    use aos_cp_state::Command;

    use super::*;

    fn proposal(id: &str) -> Proposal {
        Proposal {
            request_id: id.to_owned(),
            actor: system_actor(),
            at_ms: 1,
            command: Command::CreateTenant { tenant_id: id.to_owned(), name: id.to_owned() },
        }
    }

    fn submission(ids: &[&str], may_forward: bool) -> Submission {
        let proposals: Vec<LoggedProposal> =
            ids.iter().map(|id| LoggedProposal::encode(&proposal(id)).unwrap()).collect();
        let bytes = proposals.iter().map(LoggedProposal::len).sum();
        Submission { proposals, bytes, may_forward, reply: oneshot::channel().0 }
    }

    fn ids(group: &[Submission]) -> Vec<String> {
        group.iter().flat_map(|s| s.proposals.iter().map(|p| p.decode().unwrap().request_id)).collect()
    }

    #[test]
    fn a_group_takes_everything_queued_with_the_same_forwarding_rule_in_order() {
        let mut queue: VecDeque<Submission> = VecDeque::from([
            submission(&["a"], true),
            submission(&["x", "y"], false),
            submission(&["b", "c"], true),
            submission(&["d"], true),
        ]);
        let group = take_group(&mut queue).unwrap();
        assert_eq!(ids(&group), ["a", "b", "c", "d"]);
        let group = take_group(&mut queue).unwrap();
        assert_eq!(ids(&group), ["x", "y"]);
        assert!(take_group(&mut queue).is_none());
    }

    #[test]
    fn beyond_the_partial_limit_only_a_full_group_flies() {
        let few: VecDeque<Submission> = VecDeque::from([submission(&["a"], true), submission(&["b"], true)]);
        assert!(may_fly(&few, 0));
        assert!(may_fly(&few, PARTIAL_IN_FLIGHT - 1));
        assert!(!may_fly(&few, PARTIAL_IN_FLIGHT), "a partial group waits for a flight to land");

        // Full by count, counting only submissions with the first one's
        // forwarding rule (the others go in another entry).
        let names: Vec<String> = (0..MAX_BATCH_PROPOSALS).map(|i| format!("t{i}")).collect();
        let mut full: VecDeque<Submission> = names.iter().map(|n| submission(&[n.as_str()], true)).collect();
        assert!(may_fly(&full, PARTIAL_IN_FLIGHT));
        assert!(!may_fly(&full, MAX_IN_FLIGHT), "never more than MAX_IN_FLIGHT");
        full.pop_back();
        full.push_back(submission(&["forwarded"], false));
        assert!(!may_fly(&full, PARTIAL_IN_FLIGHT));

        // Full by bytes, and a submission larger than an entry on its own.
        let mut heavy = submission(&["heavy"], true);
        heavy.bytes = MAX_BATCH_BYTES * 2;
        assert!(may_fly(&VecDeque::from([heavy]), PARTIAL_IN_FLIGHT));
        let mut at_cap = submission(&["at-cap"], true);
        at_cap.bytes = MAX_BATCH_BYTES;
        assert!(may_fly(&VecDeque::from([at_cap]), PARTIAL_IN_FLIGHT));
        let mut halves: VecDeque<Submission> = (0..2)
            .map(|i| {
                let mut s = submission(&[&format!("h{i}")], true);
                s.bytes = MAX_BATCH_BYTES / 2;
                s
            })
            .collect();
        assert!(may_fly(&halves, PARTIAL_IN_FLIGHT));
        halves.pop_back();
        assert!(!may_fly(&halves, PARTIAL_IN_FLIGHT));
    }

    #[test]
    fn a_group_stops_at_its_caps_and_a_large_submission_travels_alone() {
        let names: Vec<String> = (0..MAX_BATCH_PROPOSALS + 10).map(|i| format!("t{i}")).collect();
        let mut queue: VecDeque<Submission> = names.iter().map(|n| submission(&[n.as_str()], true)).collect();
        assert_eq!(take_group(&mut queue).unwrap().len(), MAX_BATCH_PROPOSALS);
        assert_eq!(queue.len(), 10);

        // By bytes: proposals just over a third of the cap each, two to an entry.
        let mut queue: VecDeque<Submission> = (0..5)
            .map(|i| {
                let mut s = submission(&[&format!("b{i}")], true);
                s.bytes = MAX_BATCH_BYTES / 3 + 1;
                s
            })
            .collect();
        assert_eq!(ids(&take_group(&mut queue).unwrap()), ["b0", "b1"]);
        assert_eq!(ids(&take_group(&mut queue).unwrap()), ["b2", "b3"]);
        assert_eq!(ids(&take_group(&mut queue).unwrap()), ["b4"]);

        let mut big = submission(&["big"], true);
        big.bytes = MAX_BATCH_BYTES * 2;
        let mut queue = VecDeque::from([big, submission(&["next"], true)]);
        assert_eq!(ids(&take_group(&mut queue).unwrap()), ["big"]);
        assert_eq!(ids(&take_group(&mut queue).unwrap()), ["next"]);
    }
}
