//! Which of its endpoints the edge agent delivers records to: the Raft
//! leader's, when the agent can find it.
//!
//! Any node takes an agent's records, but a follower forwards every batch
//! to the leader: its proposals travel once more over the cluster's
//! network, the follower encodes them for the forward and the leader checks
//! them again before they enter the log, and the answer comes back the
//! same way. With agents spread over three nodes that was two records in
//! three, and sending them straight to the leader cut the cluster's CPU per
//! record by about a sixth (benches/README.md, record ingest). Kafka's
//! producers write to the partition leader for the same reason.
//!
//! Every ingest ack names the node that answered and the leader that node
//! relies on (`BatchAck.node_id`, `leader_id`; 0 when it knows none). From
//! them the agent learns which endpoint is which node and moves its
//! delivery stream to the leader's: to the endpoint it saw the leader
//! answer at, or else to the next endpoint it has not identified yet. It
//! moves only between batches (nothing is in flight then), and at most
//! once per endpoint for each leader it is told of, so endpoints behind a
//! load balancer, or a leader missing from the agent's list, leave it
//! where it is instead of reconnecting after every batch. The snapshot
//! watch does not move: pushes are per-agent work that every node shares.

/// Where the delivery loop should be connected, learned from acks.
#[derive(Debug, Clone)]
pub struct LeaderSeek {
    /// The node last seen answering at each endpoint.
    nodes: Vec<Option<u64>>,
    /// The leader the counted moves were made to find.
    leader: u64,
    /// Moves made to find `leader`.
    moves: usize,
}

impl LeaderSeek {
    /// A seeker over `endpoints` endpoints, none identified yet.
    pub fn new(endpoints: usize) -> LeaderSeek {
        LeaderSeek { nodes: vec![None; endpoints], leader: 0, moves: 0 }
    }

    /// Notes an ack received on the stream to endpoint `at` (taken modulo
    /// the endpoint count, as the link takes it) from node `node_id`, which
    /// relies on leader `leader_id`. Returns the endpoint to move to, if
    /// the agent should move.
    pub fn after_ack(&mut self, at: usize, node_id: u64, leader_id: u64) -> Option<usize> {
        let count = self.nodes.len();
        if count == 0 || node_id == 0 {
            // An older node, which names no one: nothing to learn.
            return None;
        }
        let at = at % count;
        // A node answers at one address: an endpoint that last showed it is
        // stale (a node moved, or a balancer picked another).
        for node in &mut self.nodes {
            if *node == Some(node_id) {
                *node = None;
            }
        }
        self.nodes[at] = Some(node_id);
        if leader_id != self.leader {
            self.leader = leader_id;
            self.moves = 0;
        }
        // No leader to seek, already there, or every endpoint tried for
        // this leader.
        if leader_id == 0 || node_id == leader_id || self.moves >= count {
            return None;
        }
        let others = (1..count).map(|step| (at + step) % count);
        let target = others
            .clone()
            .find(|&i| self.nodes[i] == Some(leader_id))
            .or_else(|| others.clone().find(|&i| self.nodes[i].is_none()))?;
        self.moves += 1;
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Follows the seeker from `start` against endpoints that answer as
    /// `answer` says (the node at each endpoint for each visit), with
    /// `leader` leading; the endpoints visited after the first, and where
    /// it stopped.
    fn follow(
        seek: &mut LeaderSeek,
        start: usize,
        leader: u64,
        mut answer: impl FnMut(usize) -> u64,
        acks: usize,
    ) -> (Vec<usize>, usize) {
        let mut at = start;
        let mut moves = Vec::new();
        for _ in 0..acks {
            if let Some(next) = seek.after_ack(at, answer(at), leader) {
                moves.push(next);
                at = next;
            }
        }
        (moves, at)
    }

    #[test]
    fn it_moves_to_the_leader_through_the_endpoints_it_has_not_seen() {
        // Endpoints 0, 1, 2 are nodes 1, 2, 3; node 3 leads.
        let mut seek = LeaderSeek::new(3);
        let (moves, at) = follow(&mut seek, 0, 3, |i| i as u64 + 1, 10);
        assert_eq!(moves, [1, 2], "through the unknown endpoints, in turn");
        assert_eq!(at, 2);
        // The leader changes to node 1, whose endpoint is known: one move.
        let (moves, at) = follow(&mut seek, 2, 1, |i| i as u64 + 1, 10);
        assert_eq!(moves, [0]);
        assert_eq!(at, 0);
    }

    #[test]
    fn on_the_leader_or_without_one_it_stays() {
        let mut seek = LeaderSeek::new(3);
        assert_eq!(seek.after_ack(1, 2, 2), None, "on the leader");
        assert_eq!(seek.after_ack(1, 2, 0), None, "no leader known");
        assert_eq!(seek.after_ack(1, 0, 3), None, "an older node names no one");
        assert_eq!(LeaderSeek::new(0).after_ack(0, 1, 2), None, "no endpoints");
        assert_eq!(LeaderSeek::new(1).after_ack(0, 1, 2), None, "no other endpoint");
    }

    #[test]
    fn a_node_is_remembered_where_it_answered_last() {
        let mut seek = LeaderSeek::new(3);
        // Node 3 answered at endpoint 2, then at endpoint 0 (an address
        // moved): endpoint 2 is no longer taken for it.
        assert_eq!(seek.after_ack(2, 3, 0), None);
        assert_eq!(seek.after_ack(0, 3, 0), None);
        assert_eq!(seek.after_ack(1, 2, 3), Some(0), "to where node 3 answered last");
    }

    #[test]
    fn a_leader_outside_the_list_is_sought_once_then_left() {
        // Nodes 1, 2, 3 at the endpoints; node 9 leads, reachable elsewhere.
        let mut seek = LeaderSeek::new(3);
        let (moves, _) = follow(&mut seek, 0, 9, |i| i as u64 + 1, 50);
        assert_eq!(moves, [1, 2], "each endpoint tried once");
    }

    #[test]
    fn a_balancer_answering_as_any_node_does_not_keep_it_moving() {
        // Two addresses of one balancer that picks a follower each time.
        let mut seek = LeaderSeek::new(2);
        let mut picks = [1u64, 2, 1, 2, 2, 1, 1, 2].into_iter().cycle();
        let (moves, _) = follow(&mut seek, 0, 3, |_| picks.next().unwrap_or(1), 200);
        assert!(moves.len() <= 2, "moved {} times: {moves:?}", moves.len());
    }

    proptest! {
        /// Whatever the endpoints' order and where delivery starts, the
        /// leader is reached in fewer moves than there are endpoints when it
        /// is among them, and a leader that is not costs at most one move
        /// per endpoint; either way it then stays put.
        #[test]
        fn it_finds_a_listed_leader_and_never_moves_without_end(
            nodes in Just((1u64..=7).collect::<Vec<_>>()).prop_shuffle(),
            count in 1usize..=7,
            start in 0usize..7,
            leader in 1u64..=9,
        ) {
            let nodes = &nodes[..count];
            let mut seek = LeaderSeek::new(count);
            let start = start % count;
            let (moves, at) = follow(&mut seek, start, leader, |i| nodes[i], 4 * count + 4);
            match nodes.iter().position(|&n| n == leader) {
                Some(home) => {
                    prop_assert_eq!(at, home);
                    prop_assert!(moves.len() < count, "{:?}", moves);
                }
                None => prop_assert!(moves.len() <= count, "{:?}", moves),
            }
            let (more, _) = follow(&mut seek, at, leader, |i| nodes[i], 4 * count + 4);
            prop_assert!(more.is_empty(), "settled, yet moved to {:?}", more);
        }
    }
}
