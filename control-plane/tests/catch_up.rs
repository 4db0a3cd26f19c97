//! A follower that was down while the leader snapshotted and purged its log
//! catches up through a Raft snapshot (install snapshot over gRPC), not by
//! log replay, and then serves every write.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use std::time::Duration;

use serde_json::json;
use support::{agreed_leader, call, tenant_ids, three_node_cluster_with, wait_for};

fn status(node: &support::NodeProc, key: &str) -> serde_json::Value {
    let (code, body) = call("GET", &node.url("/api/v1/cluster"), Some(key), None);
    assert_eq!(code, 200, "{body}");
    body
}

#[test]
fn lagging_follower_catches_up_through_a_snapshot_after_log_purge() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, key) = three_node_cluster_with(dir.path(), &["--snapshot-every", "50"]);
    let leader_id = agreed_leader(&nodes, &key, Duration::from_secs(10));
    let lagger_pos = nodes.iter().position(|n| n.id != leader_id).unwrap();
    let leader_pos = nodes.iter().position(|n| n.id == leader_id).unwrap();

    let applied_before = status(&nodes[lagger_pos], &key)["last_applied"].as_u64().unwrap();
    nodes[lagger_pos].kill();

    for i in 0..200 {
        let (code, body) = call(
            "POST",
            &nodes[leader_pos].url("/api/v1/tenants"),
            Some(&key),
            Some(json!({"tenant_id": format!("c-{i:03}"), "name": "c"})),
        );
        assert_eq!(code, 200, "{body}");
    }
    let purged = wait_for("the leader to purge past the follower", Duration::from_secs(30), || {
        status(&nodes[leader_pos], &key)["purged_index"].as_u64().filter(|p| *p > applied_before)
    });

    nodes[lagger_pos].restart();
    let lagger = &nodes[lagger_pos];
    wait_for("the follower to catch up", Duration::from_secs(30), || {
        tenant_ids(lagger, &key, "stale").filter(|t| t.len() == 200)
    });
    let snapshot_index = status(lagger, &key)["snapshot_index"].as_u64().unwrap_or(0);
    assert!(
        snapshot_index > applied_before,
        "the follower (applied {applied_before} before going down, leader purged to {purged}) must have \
         installed a snapshot, but its snapshot index is {snapshot_index}"
    );
}
