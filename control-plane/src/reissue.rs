//! Keeps issued policy snapshots from expiring: the leader reissues every
//! tenant snapshot that has lived half its validity (`max_staleness`).
//!
//! A snapshot's `not_after` is `issued_at + max_staleness`, and `issued_at`
//! is the time of the change that produced it, so a tenant whose policies do
//! not change would see its edge agents go stale (and fail closed) after one
//! validity period. The reissue is a Raft command (`REISSUE_SNAPSHOTS`,
//! audited as `SNAPSHOTS_REISSUED`) so every node serves the same new
//! version; only the leader proposes it, and a follower that becomes leader
//! picks up the schedule at its next tick.
//!
//! The same leader loop ends governance settings whose TTL has passed
//! (`EXPIRE_GOVERNANCE`, audited as `GOVERNANCE_EXPIRED`), checked at least
//! every 250 ms.

use std::time::Duration;

use aos_cp_state::{Command, CommandResult, Proposal};

use crate::bootstrap::system_actor;
use crate::node::Node;
use crate::write::propose;

/// How often the leader checks: an eighth of the validity, between 250 ms
/// and one minute.
fn tick(max_staleness_ms: u64) -> Duration {
    Duration::from_millis((max_staleness_ms / 8).clamp(250, 60_000))
}

/// Longest delay between a governance TTL passing and its expiry being
/// proposed.
const GOVERNANCE_TICK: Duration = Duration::from_millis(250);

/// Runs until `stop` flips to true.
pub async fn run(node: Node, stop: tokio::sync::watch::Receiver<bool>) {
    let max_staleness_ms = node.max_staleness_ms();
    let mut clock = crate::periodic::Periodic::new(tick(max_staleness_ms).min(GOVERNANCE_TICK), stop);
    while clock.tick().await {
        let is_leader = node.raft().metrics().borrow().current_leader == Some(node.id());
        if !is_leader {
            continue;
        }
        expire_governance(&node).await;
        let cutoff = crate::now_ms().saturating_sub(max_staleness_ms / 2);
        let due = node.state().read(|s| s.0.snapshots_issued_before(cutoff));
        if due.is_empty() {
            continue;
        }
        let count = due.len();
        let proposal = Proposal {
            request_id: format!("reissue-{}-{cutoff}", node.id()),
            actor: system_actor(),
            at_ms: crate::now_ms(),
            command: Command::ReissueSnapshots { tenant_ids: due },
        };
        match propose(&node, proposal).await {
            Ok(committed) => match committed.result {
                CommandResult::Applied(_) => {
                    tracing::info!(message = "reissued tenant snapshots before expiry", tenants = count);
                }
                CommandResult::Rejected(r) => {
                    tracing::warn!(message = "snapshot reissue refused", reason = %r.message);
                }
            },
            Err(e) => {
                tracing::warn!(message = "snapshot reissue not committed; retrying next tick", error = %e)
            }
        }
    }
}

/// Proposes `EXPIRE_GOVERNANCE` when a setting's TTL has passed.
async fn expire_governance(node: &Node) {
    let now = crate::now_ms();
    if !node.state().read(|s| s.0.governance().lapsed(now)) {
        return;
    }
    let proposal = Proposal {
        request_id: format!("governance-expiry-{}-{now}", node.id()),
        actor: system_actor(),
        at_ms: now,
        command: Command::ExpireGovernance {},
    };
    match propose(node, proposal).await {
        Ok(committed) => match committed.result {
            CommandResult::Applied(_) => {
                tracing::warn!(message = "governance settings expired back to ENFORCING")
            }
            CommandResult::Rejected(r) => {
                tracing::debug!(message = "governance expiry refused", reason = %r.message)
            }
        },
        Err(e) => tracing::warn!(message = "governance expiry not committed; retrying next tick", error = %e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_a_fraction_of_the_validity_within_bounds() {
        assert_eq!(tick(24 * 3_600_000), Duration::from_secs(60));
        assert_eq!(tick(4_000), Duration::from_millis(500));
        assert_eq!(tick(100), Duration::from_millis(250));
    }
}
