//! Snapshot signing-key rotation on a three-node cluster (rolling restart
//! to give every node the new key, add, activate, retire), and the leader
//! reissuing snapshots before they expire.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use std::time::Duration;

use aos_core::snapshot::{SnapshotSigner, TrustedKeys, VerifyOptions};
use serde_json::{Value, json};
use support::{
    NodeProc, TEST_SIGNING_KEY, call, get_bytes, operator_key, tenant_with_admin, three_node_cluster,
    wait_for, wait_healthy,
};

const NEW_KEY: &str = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b";

fn apply_budgets(node: &NodeProc, key: &str) {
    let yaml =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/budgets.yaml"))
            .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let response = agent
        .post(&node.url("/api/v1/tenants/acme/policies"))
        .header("Authorization", &format!("Bearer {key}"))
        .header("Content-Type", "application/yaml")
        .send(yaml.as_bytes())
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

fn key_states(node: &NodeProc, key: &str) -> Vec<(String, String, bool)> {
    let (status, body) = call("GET", &node.url("/api/v1/snapshot-keys"), Some(key), None);
    assert_eq!(status, 200, "{body}");
    body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key_id"].as_str().unwrap().to_owned(),
                k["state"].as_str().unwrap().to_owned(),
                k["held_by_this_node"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn trusting(keys: &[&SnapshotSigner]) -> TrustedKeys {
    let mut trusted = TrustedKeys::new();
    for k in keys {
        trusted.insert(k.verifying_key());
    }
    trusted
}

#[test]
fn a_signing_key_rotates_without_agents_losing_trust() {
    let old = SnapshotSigner::from_secret_hex(TEST_SIGNING_KEY).unwrap();
    let new = SnapshotSigner::from_secret_hex(NEW_KEY).unwrap();
    let (old_id, new_id) = (old.key_id().to_string(), new.key_id().to_string());
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, operator) = three_node_cluster(dir.path());
    let acme = tenant_with_admin(&nodes[0], &operator, "acme");
    apply_budgets(&nodes[1], &acme);
    let url = |n: &NodeProc| n.url("/api/v1/tenants/acme/snapshot");
    let (status, v1_bytes, v1) = get_bytes(&url(&nodes[0]), &acme);
    assert_eq!(status, 200);
    let v1: u64 = v1.unwrap().parse().unwrap();
    // The init node registered its key as the signer.
    assert_eq!(key_states(&nodes[2], &operator), vec![(old_id.clone(), "active".to_owned(), true)]);

    // The new public key becomes trusted; a tenant key may not do that.
    let add = json!({ "public_key": hex::encode(new.verifying_key().as_bytes()) });
    let (status, body) = call("POST", &nodes[0].url("/api/v1/snapshot-keys"), Some(&acme), Some(add.clone()));
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("FORBIDDEN")), "{body}");
    let (status, body) = call("POST", &nodes[0].url("/api/v1/snapshot-keys"), Some(&operator), Some(add));
    assert_eq!(status, 200, "{body}");
    // No node holds it yet: activation is refused, nothing changes.
    let activate = |n: &NodeProc| {
        call(
            "POST",
            &n.url(&format!("/api/v1/snapshot-keys/{new_id}/activate")),
            Some(&operator),
            Some(json!({})),
        )
    };
    let (status, body) = activate(&nodes[1]);
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("KEY_NOT_HELD")), "{body}");

    // Rolling restart: every node gets the new key beside the old one.
    for n in &mut nodes {
        n.signing_keys = format!("{TEST_SIGNING_KEY},{NEW_KEY}");
        n.restart();
        wait_healthy(n);
    }
    let states = key_states(&nodes[0], &operator);
    assert!(states.contains(&(new_id.clone(), "trusted".to_owned(), true)), "{states:?}");

    let (status, body) = activate(&nodes[2]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["reissued_tenants"], 1);
    // Every node serves the same reissued snapshot, signed with the new key.
    let fetched: Vec<(u16, Vec<u8>, Option<String>)> = nodes
        .iter()
        .map(|n| {
            wait_for("the reissued snapshot", Duration::from_secs(10), || {
                let got = get_bytes(&url(n), &acme);
                (got.2.as_deref() == Some(&(v1 + 1).to_string())).then_some(got)
            })
        })
        .collect();
    assert!(fetched.windows(2).all(|w| w[0].1 == w[1].1), "nodes served different bytes");
    let now = aos_control_plane::now_ms();
    let options = VerifyOptions { tenant_id: "acme", last_accepted_version: Some(v1), now_ms: now };
    let v2 = aos_core::verify(&fetched[0].1, &trusting(&[&old, &new]), &options).unwrap();
    assert_eq!(v2.version(), v1 + 1);
    assert!(aos_core::verify(&fetched[0].1, &trusting(&[&old]), &options).is_err(), "signed by the new key");
    // An agent still on v1 verifies it with the old key until retirement.
    let fresh = VerifyOptions { last_accepted_version: None, ..options };
    assert!(aos_core::verify(&v1_bytes, &trusting(&[&old, &new]), &fresh).is_ok());

    // The signer cannot be retired; the old key can.
    let retire = |id: &str| {
        call(
            "POST",
            &nodes[0].url(&format!("/api/v1/snapshot-keys/{id}/retire")),
            Some(&operator),
            Some(json!({"reason": "scheduled rotation"})),
        )
    };
    let (status, body) = retire(&new_id);
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("CONFLICT")), "{body}");
    let (status, body) = retire(&old_id);
    assert_eq!(status, 200, "{body}");
    let states = key_states(&nodes[1], &operator);
    assert!(states.contains(&(old_id, "retired".to_owned(), true)), "{states:?}");
    assert!(states.contains(&(new_id, "active".to_owned(), true)), "{states:?}");

    // Every step is in the ledger, the refused tenant attempt included.
    let (_, audit) = call("GET", &nodes[0].url("/api/v1/audit?limit=1000"), Some(&operator), None);
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for expected in ["SIGNING_KEY_ADDED", "SIGNING_KEY_ACTIVATED", "SIGNING_KEY_RETIRED", "ACCESS_DENIED"] {
        assert!(actions.contains(&expected), "{expected} missing from {actions:?}");
    }
}

#[test]
fn the_leader_reissues_snapshots_before_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshots valid for 2 s: the leader reissues after 1 s.
    let mut node = NodeProc::start_with(1, dir.path(), true, &["--max-staleness-secs", "2"]);
    let operator = operator_key(&node);
    wait_healthy(&mut node);
    let acme = tenant_with_admin(&node, &operator, "acme");
    apply_budgets(&node, &acme);
    let url = node.url("/api/v1/tenants/acme/snapshot");
    let (_, _, first) = get_bytes(&url, &acme);
    let first: u64 = first.unwrap().parse().unwrap();
    // No change is made; new versions keep arriving, each valid now.
    let (bytes, version) = wait_for("two reissues", Duration::from_secs(15), || {
        let (status, bytes, version) = get_bytes(&url, &acme);
        let version: u64 = version?.parse().ok()?;
        (status == 200 && version >= first + 2).then_some((bytes, version))
    });
    let mut trusted = TrustedKeys::new();
    trusted.insert(SnapshotSigner::from_secret_hex(TEST_SIGNING_KEY).unwrap().verifying_key());
    let options = VerifyOptions {
        tenant_id: "acme",
        last_accepted_version: Some(first),
        now_ms: aos_control_plane::now_ms(),
    };
    let verified = aos_core::verify(&bytes, &trusted, &options).unwrap();
    assert_eq!(verified.version(), version);
    let (_, audit) = call("GET", &node.url("/api/v1/audit?limit=1000"), Some(&operator), None);
    let reissues: Vec<&Value> =
        audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "SNAPSHOTS_REISSUED").collect();
    assert!(reissues.len() >= 2, "{audit}");
    assert_eq!(reissues[0]["actor"]["actor_type"], "SYSTEM");
}
