//! Fast failover when the leader's process is gone (issue 3: failover
//! p50 ≤ 500 ms).
//!
//! openraft 0.9 lets a follower campaign only once the leader's lease
//! (`election_timeout_max`) *and* its own random election timeout have
//! passed since the last heartbeat — 450–600 ms with the default 50 ms
//! heartbeat — and when the first follower to campaign holds a shorter log
//! than another (common under a stream of writes), it is refused and
//! waits two more lease lengths while the other's timer runs out: kill-to-
//! write times of 0.6–1.8 s were measured.
//!
//! A follower whose leader probe fails checks the leader's address with a
//! TCP connect. *Connection refused* means nothing listens there any more:
//! the leader's process has exited (a crash, `kill -9`, a stop), which is
//! not a slow or partitioned leader — those time out and are left to
//! openraft's timers, as before. Then the surviving voters agree, without
//! a vote, on which one of them campaigns: each asks the others for their
//! log position ([`LogPosition`](aos_proto::cluster::LogPositionReply)),
//! and only the one with the most up-to-date log (ties: the lowest node
//! id) calls `trigger().elect()`, as soon as the dead leader's lease has
//! run out on every voter that answered, and only when enough voters
//! answered to make a quorum with it. Every survivor computes the same
//! answer, so one candidate asks and the others grant: one round trip.
//!
//! Raft's safety never depends on timing: an early or superfluous campaign
//! can cost an election, never a committed entry. If the chosen node fails
//! to win, openraft's own timers still elect someone.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aos_proto::cluster::LogPositionReply;
use openraft::{CommittedLeaderId, LogId};

use crate::node::Node;
use crate::raft::NodeId;

/// Extra wait past the dead leader's lease, for heartbeats that reached
/// the other voters a little later than this node.
const LEASE_MARGIN: Duration = Duration::from_millis(15);
/// How long the TCP check of the leader's address may take.
const CHECK_TIMEOUT: Duration = Duration::from_millis(200);
/// How long a peer's log-position answer may take.
const ASK_TIMEOUT: Duration = Duration::from_millis(300);
/// Rounds of asking the peers before leaving the election to openraft
/// (a peer that heard from the leader later than this node shifts the
/// lease's end; it is waited for once more).
const MAX_ROUNDS: usize = 3;

/// When this node last accepted an AppendEntries (entries or heartbeat)
/// from a leader: the start of the leader's lease as the voters see it.
#[derive(Debug, Default)]
pub struct LeaderHeartbeat {
    last: Mutex<Option<Instant>>,
    /// The heartbeat after which this node last ran a takeover: one per
    /// dead leader, however often the probe finds it gone.
    taken_over_after: Mutex<Option<Instant>>,
}

impl LeaderHeartbeat {
    /// Notes an accepted AppendEntries.
    pub fn heard(&self) {
        *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    /// When the last one was accepted (`None`: not since start).
    pub fn last(&self) -> Option<Instant> {
        *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims the takeover for the silence that began at `heard`; false
    /// when one already ran (or runs) for it.
    fn claim_takeover(&self, heard: Instant) -> bool {
        let mut taken = self.taken_over_after.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *taken == Some(heard) {
            return false;
        }
        *taken = Some(heard);
        true
    }
}

/// A voter's answer: its last log id and how long ago it heard a leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    /// The last log id (`None`: empty log).
    pub last_log_id: Option<LogId<NodeId>>,
    /// Time since its last accepted AppendEntries (`None`: never).
    pub since_leader: Option<Duration>,
}

impl LogPosition {
    /// The wire form.
    pub fn to_reply(self) -> LogPositionReply {
        let (term, leader, index) =
            self.last_log_id.map_or((0, 0, 0), |id| (id.leader_id.term, id.leader_id.node_id, id.index));
        LogPositionReply {
            has_log: self.last_log_id.is_some(),
            last_log_term: term,
            last_log_leader: leader,
            last_log_index: index,
            millis_since_leader: self.since_leader.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// From the wire form.
    pub fn from_reply(reply: &LogPositionReply) -> Self {
        LogPosition {
            last_log_id: reply.has_log.then(|| LogId {
                leader_id: CommittedLeaderId::new(reply.last_log_term, reply.last_log_leader),
                index: reply.last_log_index,
            }),
            since_leader: reply.millis_since_leader.map(Duration::from_millis),
        }
    }
}

/// Whether `me` should be the one to campaign against the answers of the
/// other surviving voters: no peer holds a more up-to-date log, and none
/// with an equally up-to-date one has a lower id. Every survivor running
/// this over the same logs picks the same node.
pub fn should_campaign(
    me: (NodeId, Option<LogId<NodeId>>),
    peers: &[(NodeId, Option<LogId<NodeId>>)],
) -> bool {
    let (my_id, my_log) = me;
    peers.iter().all(|&(id, log)| log < my_log || (log == my_log && id > my_id))
}

/// A voter that heard the dead leader later than this node (at `heard`)
/// still holds the leader's lease a little longer and refuses votes until
/// then: the end of the latest such lease, from when each peer heard the
/// leader. `None` when no peer heard it meaningfully later (within
/// [`LEASE_MARGIN`]).
fn later_lease_end(
    heard: Instant,
    peers_heard: impl Iterator<Item = Instant>,
    lease: Duration,
) -> Option<Instant> {
    peers_heard
        .max()
        .filter(|latest| *latest > heard + LEASE_MARGIN)
        .map(|latest| latest + lease + LEASE_MARGIN)
}

/// Whether this node and the `answered` peers make a majority of `voters`.
/// A takeover campaigns only knowing a quorum is there to grant it: with
/// too few answers the others may be campaigning on what they saw instead.
fn quorum_answered(answered: usize, voters: usize) -> bool {
    (answered + 1) * 2 > voters
}

/// Whether nothing listens on `addr` any more (its process has exited):
/// a refused TCP connection. A timeout or any other error is *not* taken
/// as death (a partition or an overloaded host looks like that).
pub async fn process_gone(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Called by the leader probe once `dead`'s process is known to be gone:
/// waits out its lease, then campaigns if this node is the survivors'
/// choice. Returns whether it campaigned.
pub async fn take_over(node: &Node, dead: NodeId) -> bool {
    let lease = node.leader_lease();
    let Some(heard) = node.leader_heartbeat().last() else {
        // Never heard from it since start: openraft's timers decide.
        return false;
    };
    if !node.leader_heartbeat().claim_takeover(heard) {
        return false;
    }
    let mut lease_end = heard + lease + LEASE_MARGIN;
    for _ in 0..MAX_ROUNDS {
        tokio::time::sleep_until(lease_end.into()).await;
        if !still_following(node, dead, heard) {
            return false;
        }
        let Some(me) = node.log_position().await else { return false };
        let peers = ask_peers(node, dead).await;
        let now = Instant::now();
        // A peer whose time cannot be placed counts as hearing it with us.
        let peers_heard = peers
            .iter()
            .filter_map(|(_, p)| p.since_leader)
            .map(|since| now.checked_sub(since).unwrap_or(heard));
        if let Some(later) = later_lease_end(heard, peers_heard, lease) {
            lease_end = later;
            if lease_end > now {
                continue;
            }
        }
        let answered = peers.len();
        let voters = node.raft().metrics().borrow().membership_config.membership().voter_ids().count();
        if !quorum_answered(answered, voters) {
            tracing::warn!(
                message = "leader process gone; too few voters answered to pick a candidate, leaving it to the election timers",
                dead_leader = dead,
                answered,
                voters
            );
            return false;
        }
        let logs: Vec<(NodeId, Option<LogId<NodeId>>)> =
            peers.iter().map(|(id, p)| (*id, p.last_log_id)).collect();
        if !should_campaign((node.id(), me.last_log_id), &logs) {
            tracing::warn!(
                message = "leader process gone; another survivor holds a more up-to-date log and campaigns",
                dead_leader = dead
            );
            return false;
        }
        tracing::warn!(
            message = "leader process gone; campaigning as the survivor with the most up-to-date log",
            dead_leader = dead,
            peers_answered = peers.len(),
            since_heartbeat_ms = u64::try_from(heard.elapsed().as_millis()).unwrap_or(u64::MAX)
        );
        return match node.raft().trigger().elect().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(message = "cannot start an election", error = %e);
                false
            }
        };
    }
    false
}

/// This node is still a follower of `dead` and has heard from no leader
/// since (not a candidate already, nor following someone new).
fn still_following(node: &Node, dead: NodeId, heard: Instant) -> bool {
    let (leader, state) = {
        let metrics = node.raft().metrics();
        let metrics = metrics.borrow();
        (metrics.current_leader, metrics.state)
    };
    leader == Some(dead)
        && state == openraft::ServerState::Follower
        && node.leader_heartbeat().last() == Some(heard)
}

/// The log positions of the other voters that answer in time (the dead
/// leader is not asked).
async fn ask_peers(node: &Node, dead: NodeId) -> Vec<(NodeId, LogPosition)> {
    let peers: Vec<(NodeId, String)> = {
        let metrics = node.raft().metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        membership
            .voter_ids()
            .filter(|id| *id != node.id() && *id != dead)
            .filter_map(|id| Some((id, membership.get_node(&id)?.addr.clone())))
            .collect()
    };
    let mut asks = tokio::task::JoinSet::new();
    for (id, addr) in peers {
        asks.spawn(async move {
            match tokio::time::timeout(ASK_TIMEOUT, crate::write::remote_log_position(id, &addr)).await {
                Ok(Ok(reply)) => Some((id, LogPosition::from_reply(&reply))),
                Ok(Err(e)) => {
                    tracing::debug!(message = "log position refused", peer = id, error = %e);
                    None
                }
                Err(_) => None,
            }
        });
    }
    let mut answered = Vec::new();
    while let Some(joined) = asks.join_next().await {
        if let Ok(Some(answer)) = joined {
            answered.push(answer);
        }
    }
    answered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(term: u64, leader: NodeId, index: u64) -> Option<LogId<NodeId>> {
        Some(LogId { leader_id: CommittedLeaderId::new(term, leader), index })
    }

    #[test]
    fn a_takeover_needs_answers_from_a_majority_of_the_voters() {
        // Three voters, the leader dead: this node alone is not a majority.
        assert!(!quorum_answered(0, 3));
        assert!(quorum_answered(1, 3));
        // Five voters: two survivors are not enough, three are.
        assert!(!quorum_answered(1, 5));
        assert!(quorum_answered(2, 5));
        // A single-node cluster needs no one else.
        assert!(quorum_answered(0, 1));
    }

    #[test]
    fn a_peer_that_heard_the_leader_later_extends_the_wait() {
        let heard = Instant::now();
        let lease = Duration::from_millis(300);
        // Nobody answered, or nobody heard it later than the margin: no change.
        assert_eq!(later_lease_end(heard, std::iter::empty(), lease), None);
        let within = heard + LEASE_MARGIN;
        assert_eq!(later_lease_end(heard, [within, heard].into_iter(), lease), None);
        // The latest peer's heartbeat sets the end of the lease.
        let later = heard + Duration::from_millis(40);
        let latest = heard + Duration::from_millis(90);
        assert_eq!(
            later_lease_end(heard, [later, latest, heard].into_iter(), lease),
            Some(latest + lease + LEASE_MARGIN)
        );
    }

    #[test]
    fn the_survivor_with_the_longer_log_campaigns_and_the_other_does_not() {
        let (a, b) = ((2, log(3, 1, 41)), (3, log(3, 1, 40)));
        assert!(should_campaign(a, &[b]));
        assert!(!should_campaign(b, &[a]));
    }

    #[test]
    fn a_later_term_beats_a_longer_log() {
        let (a, b) = ((2, log(4, 3, 10)), (3, log(3, 1, 40)));
        assert!(should_campaign(a, &[b]));
        assert!(!should_campaign(b, &[a]));
    }

    #[test]
    fn equal_logs_go_to_the_lowest_id_and_exactly_one_campaigns() {
        let nodes = [(4, log(3, 1, 40)), (2, log(3, 1, 40)), (5, log(3, 1, 40))];
        let campaigners: Vec<NodeId> = nodes
            .iter()
            .filter(|me| {
                let peers: Vec<_> = nodes.iter().filter(|p| p.0 != me.0).copied().collect();
                should_campaign(**me, &peers)
            })
            .map(|me| me.0)
            .collect();
        assert_eq!(campaigners, vec![2]);
    }

    #[test]
    fn an_empty_log_never_beats_a_written_one() {
        assert!(!should_campaign((1, None), &[(2, log(1, 1, 1))]));
        assert!(should_campaign((2, log(1, 1, 1)), &[(1, None)]));
    }

    #[test]
    fn a_lone_survivor_campaigns() {
        assert!(should_campaign((2, log(1, 1, 1)), &[]));
    }

    #[test]
    fn log_positions_survive_the_wire() {
        for position in [
            LogPosition { last_log_id: log(7, 3, 99), since_leader: Some(Duration::from_millis(12)) },
            LogPosition { last_log_id: None, since_leader: None },
        ] {
            assert_eq!(LogPosition::from_reply(&position.to_reply()), position);
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_gone_and_a_listening_one_is_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        assert!(!process_gone(&addr).await, "a listening port is alive");
        drop(listener);
        assert!(process_gone(&addr).await, "nothing listens once the listener is gone");
    }
}
