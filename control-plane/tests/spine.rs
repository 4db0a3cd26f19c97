//! Boot spine checks of a control-plane node (INV-004, GAP-067; issue 5):
//! a node that fails one at start accepts no writes, serves no snapshots
//! and no agents, and says why in `/health`; fixed and restarted, it serves
//! again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{
    NodeProc, TEST_SIGNING_KEY, apply_yaml, call, get_bytes, operator_key, tenant_with_admin, wait_for,
    wait_healthy,
};

/// A key the cluster never registered.
const FOREIGN_KEY: &str = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b";

fn health(node: &NodeProc) -> (u16, Value) {
    call("GET", &node.url("/health"), None, None)
}

#[test]
fn a_node_without_the_active_signing_key_serves_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start(1, dir.path(), true);
    let operator = operator_key(&node);
    wait_healthy(&mut node);
    let (_, body) = health(&node);
    assert_eq!(body["spine"]["validated"], true, "{body}");
    let acme = tenant_with_admin(&node, &operator, "acme");
    let budgets =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/budgets.yaml"))
            .unwrap();
    apply_yaml(&node, &acme, "acme", &budgets);
    let snapshot_url = node.url("/api/v1/tenants/acme/snapshot");
    let (status, before, _) = get_bytes(&snapshot_url, &acme);
    assert_eq!(status, 200);

    // Restarted with a key the cluster does not sign with.
    node.signing_keys = FOREIGN_KEY.to_owned();
    node.restart();
    let body = wait_for("the failed boot reported", Duration::from_secs(30), || {
        let (status, body) = health(&node);
        (status == 503 && body["status"] == "boot_failed").then_some(body)
    });
    assert_eq!(body["spine"]["validated"], false, "{body}");
    let checks = body["spine"]["checks"].as_array().unwrap();
    let failed: Vec<&str> =
        checks.iter().filter(|c| c["status"] == "failed").map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(failed, ["active_key"], "{body}");
    let detail = checks.iter().find(|c| c["name"] == "active_key").unwrap()["detail"].as_str().unwrap();
    assert!(detail.contains("does not hold"), "{detail}");
    // The other checks ran and passed.
    for name in ["data_dir", "audit_chain", "signing_keys", "cluster_ca"] {
        let check = checks.iter().find(|c| c["name"] == name).unwrap();
        assert_eq!(check["status"], "ok", "{check}");
    }
    let metrics = ureq::get(&node.url("/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    assert!(metrics.contains("aos_cp_spine_validated{node_id=\"1\"} 0"), "{metrics}");

    // No snapshot, no write, no read: 503 BOOT_FAILED naming the check.
    let (status, body) = call("GET", &snapshot_url, Some(&acme), None);
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("BOOT_FAILED")), "{body}");
    let (status, body) = call(
        "POST",
        &node.url("/api/v1/ops/governance/halt"),
        Some(&operator),
        Some(json!({"reason": "from a broken node"})),
    );
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("BOOT_FAILED")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("active_key"), "{body}");
    let (status, body) = call("GET", &node.url("/api/v1/tenants"), Some(&operator), None);
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("BOOT_FAILED")), "{body}");

    // Fixed and restarted: it serves the same snapshot, and the refused
    // halt never happened.
    node.signing_keys = TEST_SIGNING_KEY.to_owned();
    node.restart();
    wait_healthy(&mut node);
    let (status, after, _) = get_bytes(&snapshot_url, &acme);
    assert_eq!(status, 200);
    assert_eq!(before, after, "the same version, byte for byte");
    let (status, state) = call("GET", &node.url("/api/v1/ops/governance/state"), Some(&operator), None);
    assert_eq!((status, state["global"]["mode"].as_str()), (200, Some("ENFORCING")), "{state}");
}
