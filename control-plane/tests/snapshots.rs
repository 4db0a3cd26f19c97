//! Signed snapshots from a three-node cluster: every node serves
//! byte-identical envelopes for the same version, they verify against the
//! published key, versions increase with every policy change, and another
//! tenant's key cannot fetch them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use aos_core::snapshot::{SnapshotSigner, TrustedKeys, VerifyOptions};
use support::{TEST_SIGNING_KEY, apply_yaml, call, get_bytes, tenant_with_admin, three_node_cluster};

#[test]
fn every_node_serves_the_same_signed_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, operator) = three_node_cluster(dir.path());
    let acme = tenant_with_admin(&nodes[0], &operator, "acme");
    let other = tenant_with_admin(&nodes[1], &operator, "globex");
    let url = |n: &support::NodeProc| n.url("/api/v1/tenants/acme/snapshot");

    let (status, body) = call("GET", &url(&nodes[0]), Some(&acme), None);
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("NO_SNAPSHOT")), "{body}");

    let budgets =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/budgets.yaml"))
            .unwrap();
    apply_yaml(&nodes[2], &acme, "acme", &budgets);

    let fetched: Vec<(u16, Vec<u8>, Option<String>)> =
        nodes.iter().map(|n| get_bytes(&url(n), &acme)).collect();
    for (status, _, _) in &fetched {
        assert_eq!(*status, 200);
    }
    assert!(
        fetched.windows(2).all(|w| w[0].1 == w[1].1),
        "nodes served different bytes for the same version"
    );

    // The published key verifies it; the test cluster's key is the one.
    let (status, keys) = call("GET", &nodes[1].url("/api/v1/snapshot-keys"), Some(&acme), None);
    assert_eq!(status, 200);
    let signer = SnapshotSigner::from_secret_hex(TEST_SIGNING_KEY).unwrap();
    assert_eq!(keys["keys"][0]["key_id"], signer.key_id().to_string());
    let mut trusted = TrustedKeys::new();
    trusted.insert_hex(keys["keys"][0]["public_key"].as_str().unwrap()).unwrap();
    let now = aos_control_plane::now_ms();
    let options = VerifyOptions { tenant_id: "acme", last_accepted_version: None, now_ms: now };
    let v1 = aos_core::verify(&fetched[0].1, &trusted, &options).unwrap();
    assert_eq!(v1.snapshot().policies.len(), 3);
    assert_eq!(fetched[0].2.as_deref(), Some(v1.version().to_string().as_str()));
    // Another tenant's verifier refuses it.
    let wrong_tenant = VerifyOptions { tenant_id: "globex", ..options };
    assert!(aos_core::verify(&fetched[0].1, &trusted, &wrong_tenant).is_err());

    // A changed limit produces the next version, strictly newer.
    apply_yaml(&nodes[1], &acme, "acme", &budgets.replace("max: 50000", "max: 40000"));
    let (status, bytes, _) = get_bytes(&url(&nodes[0]), &acme);
    assert_eq!(status, 200);
    let newer = VerifyOptions { last_accepted_version: Some(v1.version()), ..options };
    let v2 = aos_core::verify(&bytes, &trusted, &newer).unwrap();
    assert_eq!(v2.version(), v1.version() + 1);
    // Replaying the old one after the new is a rollback.
    let replay = VerifyOptions { last_accepted_version: Some(v2.version()), ..options };
    assert!(aos_core::verify(&fetched[0].1, &trusted, &replay).is_err());

    // Tenant isolation: globex's key cannot read acme's snapshot.
    let (status, body) = call("GET", &url(&nodes[2]), Some(&other), None);
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("FORBIDDEN")), "{body}");
}
