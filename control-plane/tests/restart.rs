//! Restarting every node of a three-node cluster keeps the state and the
//! audit chain: the same tenants are served, and the ledger fetched from
//! the API re-verifies link by link; a tampered copy names the broken entry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use std::time::Duration;

use aos_cp_state::{AuditEntry, ChainError, verify_chain};
use serde_json::json;
use support::{call, tenant_ids, three_node_cluster, wait_for};

fn ledger(node: &support::NodeProc, key: &str) -> Vec<AuditEntry> {
    let (status, body) = call("GET", &node.url("/api/v1/audit?limit=1000"), Some(key), None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body["entries"].clone()).unwrap()
}

#[test]
fn full_cluster_restart_keeps_state_and_audit_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, key) = three_node_cluster(dir.path());
    for i in 0..25 {
        // A 503 (say, a leader change on a loaded machine) asks the client to
        // retry; after one, 409 means an earlier attempt was committed.
        let mut retried = false;
        let (status, body) = wait_for("the tenant written", Duration::from_secs(30), || {
            let (status, body) = call(
                "POST",
                &nodes[i % 3].url("/api/v1/tenants"),
                Some(&key),
                Some(json!({"tenant_id": format!("r-{i:02}"), "name": "r"})),
            );
            let done = status != 503;
            retried |= !done;
            done.then_some((status, body))
        });
        assert!(status == 200 || (retried && status == 409), "{status} {body}");
    }
    let before_tenants = tenant_ids(&nodes[0], &key, "linearizable").unwrap();
    let before_ledger = ledger(&nodes[0], &key);
    assert_eq!(before_tenants.len(), 25);
    assert_eq!(before_ledger.len(), 27, "bootstrap signing key + operator key + 25 tenants");
    verify_chain(&before_ledger).unwrap();

    for n in nodes.iter_mut() {
        n.kill();
    }
    for n in nodes.iter_mut() {
        n.restart();
    }
    for n in &nodes {
        let tenants = wait_for("state served again after restart", Duration::from_secs(30), || {
            tenant_ids(n, &key, "linearizable").filter(|t| t.len() == before_tenants.len())
        });
        assert_eq!(tenants, before_tenants, "node {}", n.id);
        let after = ledger(n, &key);
        assert_eq!(after, before_ledger, "node {} ledger", n.id);
        verify_chain(&after).unwrap();
    }

    // A tampered copy is caught at the exact entry.
    let mut tampered = before_ledger.clone();
    tampered[7].target = "r-99".into();
    assert_eq!(verify_chain(&tampered).unwrap_err().seq(), tampered[7].seq);
    let mut relinked = before_ledger.clone();
    relinked[12].prev_hash = relinked[10].hash.clone();
    let err = verify_chain(&relinked).unwrap_err();
    assert_eq!(err.seq(), relinked[12].seq);
    assert!(matches!(err, ChainError::BrokenLink { .. } | ChainError::HashMismatch { .. }), "{err:?}");
}
