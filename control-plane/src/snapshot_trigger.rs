//! When this node builds a Raft snapshot (and so purges its log behind it).
//!
//! A snapshot encodes the whole state, so its cost grows with the state
//! while a write's does not. openraft's own policy (every N entries) makes
//! that cost per write grow without bound as the state grows: measured on
//! a 3-node cluster at 256 concurrent writers, snapshots every 5,000
//! entries took a quarter of the leader's CPU, and turning them off raised
//! throughput by a third and cut p99 latency from ~500 to ~150 ms
//! (benches/README.md).
//!
//! So a snapshot is due when **both** hold (see [`snapshot_due`]):
//! - at least `--snapshot-every` entries were applied since the last one
//!   (the floor: no snapshot storms on a small state), and
//! - the log has grown by at least the size of the last snapshot since it
//!   was built (the amortisation: rebuilding a state of S bytes is paid for
//!   by S bytes of log, so the snapshot work per written byte stays
//!   constant however large the state becomes).
//!
//! The log kept on disk and replayed at restart is thereby bounded by about
//! the size of the state itself, as in a log-structured store's compaction.
//! Each node decides for itself (snapshots are local in Raft).
//!
//! Nodes apply the same log, so the same rule would have every node build
//! its snapshot at the same moment: on a large state, seconds of encoding
//! and hundreds of megabytes written everywhere at once. Measured on one
//! 2-core machine under ingest load with 175 MB snapshots, that cost the
//! leader its quorum for over a second (followers' log fsyncs waited behind
//! the snapshot writes). So both thresholds are scaled per node
//! ([`staggered`]: 1×, 1.25×, 1.5× or 1.75× by node id), and a cluster's
//! members take their snapshots at different points of the log, while
//! the work per written byte stays bounded.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::node::Node;
use crate::periodic::Periodic;

/// How often the trigger looks at the log.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// A snapshot asked for and not reported built within this time is asked
/// for again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Where the log stands against the last snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogGrowth {
    /// Entries applied since the last snapshot (all of them before the first).
    pub entries_since: u64,
    /// Encoded log bytes appended since the last snapshot was asked for.
    pub bytes_since: u64,
    /// Encoded size of the last snapshot; 0 before the first.
    pub snapshot_bytes: u64,
}

/// Whether a snapshot is due (see the module docs).
pub fn snapshot_due(growth: LogGrowth, snapshot_every: u64) -> bool {
    growth.entries_since >= snapshot_every.max(1) && growth.bytes_since >= growth.snapshot_bytes
}

/// The thresholds `node_id` applies, in quarters: 4 + `node_id` mod 4
/// (see the module docs).
pub fn staggered(growth: LogGrowth, snapshot_every: u64, node_id: u64) -> bool {
    let quarters = 4 + node_id % 4;
    let scale = |n: u64| n.saturating_mul(quarters) / 4;
    snapshot_due(
        LogGrowth { snapshot_bytes: scale(growth.snapshot_bytes), ..growth },
        scale(snapshot_every.max(1)),
    )
}

/// Asks openraft for a snapshot whenever one is due, until `stop`.
pub async fn run(node: Node, stop: watch::Receiver<bool>) {
    let mut clock = Periodic::new(CHECK_EVERY, stop);
    // Log bytes counted at the last request; the log store counts from the
    // node's start, so after a restart the log already on disk is not
    // counted (the next snapshot comes later, never earlier).
    let mut bytes_mark = node.raft_log_appended_bytes();
    // The snapshot index when a snapshot was last asked for, and when.
    let mut asked: Option<(u64, Instant)> = None;
    while clock.tick().await {
        let (applied, snapshot_index) = {
            let metrics = node.raft().metrics();
            let metrics = metrics.borrow();
            (metrics.last_applied.map_or(0, |l| l.index), metrics.snapshot.map_or(0, |l| l.index))
        };
        if let Some((index, at)) = asked {
            if snapshot_index == index && at.elapsed() < RETRY_AFTER {
                continue; // still building
            }
            asked = None;
        }
        let appended = node.raft_log_appended_bytes();
        let growth = LogGrowth {
            entries_since: applied.saturating_sub(snapshot_index),
            bytes_since: appended.saturating_sub(bytes_mark),
            snapshot_bytes: node.state().snapshot_bytes(),
        };
        if !staggered(growth, node.snapshot_every(), node.id()) {
            continue;
        }
        tracing::info!(
            message = "building a Raft snapshot",
            applied,
            entries_since = growth.entries_since,
            log_bytes_since = growth.bytes_since,
            last_snapshot_bytes = growth.snapshot_bytes
        );
        if let Err(e) = node.raft().trigger().snapshot().await {
            tracing::warn!(message = "cannot ask Raft for a snapshot", error = %e);
            continue;
        }
        bytes_mark = appended;
        asked = Some((snapshot_index, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_snapshot_comes_after_the_floor() {
        let growth = |entries_since| LogGrowth { entries_since, bytes_since: 10, snapshot_bytes: 0 };
        assert!(!snapshot_due(growth(4_999), 5_000));
        assert!(snapshot_due(growth(5_000), 5_000));
    }

    #[test]
    fn a_large_state_waits_until_the_log_has_grown_as_much() {
        let growth =
            |bytes_since| LogGrowth { entries_since: 50_000, bytes_since, snapshot_bytes: 1_000_000 };
        assert!(!snapshot_due(growth(999_999), 5_000));
        assert!(snapshot_due(growth(1_000_000), 5_000));
    }

    #[test]
    fn the_members_of_a_cluster_reach_their_thresholds_at_different_points() {
        let due_at = |node_id: u64| {
            (1..).find(|&n| {
                staggered(
                    LogGrowth { entries_since: n, bytes_since: n * 100, snapshot_bytes: 0 },
                    400,
                    node_id,
                )
            })
        };
        assert_eq!([1, 2, 3, 4].map(due_at), [Some(500), Some(600), Some(700), Some(400)]);
        let bytes_due_at = |node_id: u64| {
            (1..).find(|&b| {
                staggered(
                    LogGrowth { entries_since: 10_000, bytes_since: b * 1_000, snapshot_bytes: 400_000 },
                    400,
                    node_id,
                )
            })
        };
        assert_eq!([1, 2, 3].map(bytes_due_at), [Some(500), Some(600), Some(700)]);
    }

    #[test]
    fn the_floor_holds_however_much_the_log_grew() {
        let growth = LogGrowth { entries_since: 10, bytes_since: u64::MAX, snapshot_bytes: 0 };
        assert!(!snapshot_due(growth, 50));
        // A floor of 0 means every entry (as `--snapshot-every` refuses 0).
        assert!(snapshot_due(LogGrowth { entries_since: 1, ..growth }, 0));
    }

    /// Snapshot work per written byte stays bounded as the state grows:
    /// every write adds `entry` bytes to the log and `grows` bytes to the
    /// state; the bytes encoded by all snapshots stay within a small
    /// multiple of the bytes written (with a fixed entry count it grows with
    /// the square of the writes).
    #[test]
    fn snapshot_work_is_amortised_over_the_log() {
        for (entry, grows) in [(500_u64, 500_u64), (300, 2_000), (2_000, 100)] {
            let (mut state, mut snapshot_bytes, mut entries_since, mut bytes_since) = (0_u64, 0, 0, 0);
            let (mut encoded, mut written) = (0_u64, 0_u64);
            for _ in 0..1_000_000 {
                state += grows;
                written += entry;
                entries_since += 1;
                bytes_since += entry;
                if snapshot_due(LogGrowth { entries_since, bytes_since, snapshot_bytes }, 5_000) {
                    encoded += state;
                    snapshot_bytes = state;
                    entries_since = 0;
                    bytes_since = 0;
                }
            }
            // encoded / written <= 3 * max(grows / entry, 1)
            assert!(
                encoded * entry <= 3 * written * grows.max(entry),
                "entry {entry}, grows {grows}: {encoded} bytes encoded for {written} written"
            );
        }
    }
}
