//! A follower's check that the leader it follows still has a quorum.
//!
//! A follower learns of a new leader only by heartbeats, and a leader cut
//! off from its quorum together with a few followers keeps sending them:
//! in a 5-node cluster split 2 | 3 with the old leader on the small side,
//! its follower would go on calling it leader and serving edge agents state
//! that can no longer change (and missing every change the majority
//! makes). So every [`PROBE_INTERVAL`] a follower asks its leader for a
//! read index, which the leader grants only with a quorum's fresh
//! acknowledgement; [`crate::node::Node::leader_contact`] counts the
//! leader usable only while such a grant is recent. Watches on a node
//! without a usable leader close, and its agents move to a node that has
//! one (issue 5, partitions).
//!
//! A probe that fails because nothing listens on the leader's address any
//! more (its process has exited) starts a fast takeover instead of waiting
//! for openraft's election timers (see [`crate::takeover`]).

use std::time::Duration;

use crate::node::Node;
use crate::write::remote_read_index;

/// How often a follower asks.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Longest one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs until `stop` flips to true.
pub async fn run(node: Node, stop: tokio::sync::watch::Receiver<bool>) {
    let mut clock = crate::periodic::Periodic::new(PROBE_INTERVAL, stop);
    while clock.tick().await {
        let leader = {
            let metrics = node.raft().metrics();
            let metrics = metrics.borrow();
            metrics.current_leader.filter(|l| *l != node.id()).and_then(|leader| {
                let addr = metrics.membership_config.membership().get_node(&leader)?.addr.clone();
                Some((leader, addr))
            })
        };
        let Some((leader, addr)) = leader else { continue };
        match tokio::time::timeout(PROBE_TIMEOUT, remote_read_index(leader, &addr)).await {
            Ok(Ok(_)) => node.leader_confirmed(leader),
            Ok(Err(e)) => {
                tracing::debug!(message = "leader probe refused", leader, error = %e);
                if crate::takeover::process_gone(&addr).await {
                    crate::takeover::take_over(&node, leader).await;
                }
            }
            Err(_) => tracing::debug!(message = "leader probe timed out", leader),
        }
    }
}
