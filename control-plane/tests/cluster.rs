//! A real three-node cluster: three `aos-control-plane` OS processes on
//! loopback talking gRPC. Elect, grow membership through the leader, write
//! through a follower (forwarded to the leader), read back linearizably from
//! every node, and check the bad paths of the admin API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use serde_json::{Value, json};
use support::{call, call_with, leader_of, tenant_admin_key, tenant_ids, three_node_cluster};

#[test]
fn three_node_cluster_replicates_writes_from_any_node() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, key) = three_node_cluster(dir.path());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(nodes[0].data_dir.join("operator.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "operator key must be private");
    }
    let leader = leader_of(&nodes[0], &key).unwrap();
    let follower = nodes.iter().find(|n| n.id != leader).unwrap();

    // A write through a follower is forwarded to the leader and committed.
    let (status, body) = call(
        "POST",
        &follower.url("/api/v1/tenants"),
        Some(&key),
        Some(json!({"tenant_id": "acme", "name": "Acme Corp"})),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["log_index"].as_u64().unwrap() > 0);

    // Linearizable reads on every node see it immediately after the ack.
    for n in &nodes {
        assert_eq!(tenant_ids(n, &key, "linearizable").unwrap(), ["acme"], "node {}", n.id);
    }

    // Prometheus metrics: exactly one node reports leadership, every node a
    // leader and the applied tenant.
    let mut leaders = 0;
    for n in &nodes {
        let text = ureq::get(&n.url("/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
        assert!(text.contains(&format!("aos_cp_raft_has_leader{{node_id=\"{}\"}} 1", n.id)), "{text}");
        assert!(text.contains(&format!("aos_cp_tenants{{node_id=\"{}\"}} 1", n.id)), "{text}");
        assert!(text.contains(&format!("aos_cp_edge_agents_nacking{{node_id=\"{}\"}} 0", n.id)), "{text}");
        // Every node has appended (membership, blank, the tenant) and made it durable.
        let fsyncs = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("aos_cp_raft_log_fsyncs_total{{node_id=\"{}\"}} ", n.id)))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(fsyncs.is_some_and(|f| f > 0), "{text}");
        if text.contains(&format!("aos_cp_raft_is_leader{{node_id=\"{}\"}} 1", n.id)) {
            leaders += 1;
        }
        assert!(!text.contains("acme"), "metrics must not expose tenant ids");
    }
    assert_eq!(leaders, 1);

    // Bad paths: each with its documented status and a JSON error body.
    let n2 = &nodes[1];
    let (status, body) = call("GET", &n2.url("/api/v1/tenants"), None, None);
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("UNAUTHENTICATED")));
    let (status, body) = call("GET", &n2.url("/api/v1/tenants"), Some("aos_op_wrong"), None);
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("UNAUTHENTICATED")));
    let (status, body) =
        call("POST", &n2.url("/api/v1/tenants"), Some(&key), Some(Value::String("{\"tenant_id\": 5".into())));
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("INVALID_INPUT")), "{body}");
    let (status, body) = call(
        "POST",
        &nodes[2].url("/api/v1/tenants"),
        Some(&key),
        Some(json!({"tenant_id": "acme", "name": "again"})),
    );
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("CONFLICT")), "{body}");

    // The ledger holds the bootstrap signing key and operator key, the
    // tenant and the rejected duplicate, in a hash chain.
    let (status, body) = call("GET", &nodes[2].url("/api/v1/audit"), Some(&key), None);
    assert_eq!(status, 200, "{body}");
    let entries = body["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["SIGNING_KEY_ADDED", "API_KEY_CREATED", "TENANT_CREATED", "COMMAND_REJECTED"]);
    assert_eq!(entries[3]["outcome"], "REJECTED");
    for pair in entries.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }
    let text = serde_json::to_string(&body).unwrap();
    assert!(!text.contains(&key), "the operator secret must never appear in the ledger");

    // Membership changes: a tenant key may not touch the cluster (403,
    // audited); the operator removes a follower through the leader; an
    // unknown or already removed node is a 404.
    let tenant_key = tenant_admin_key(&nodes[0], &key, "acme");
    let leader_node = nodes.iter().find(|n| n.id == leader).unwrap();
    let removed = nodes.iter().find(|n| n.id != leader).unwrap().id;
    let (status, body) = call(
        "POST",
        &leader_node.url("/api/v1/cluster/nodes"),
        Some(&tenant_key),
        Some(json!({"node_id": 9, "grpc_addr": "127.0.0.1:1"})),
    );
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("FORBIDDEN")), "{body}");
    let (_, audit) = call("GET", &leader_node.url("/api/v1/audit?limit=1000"), Some(&key), None);
    let denied = audit["entries"].as_array().unwrap().iter().any(|e| {
        e["action"] == "ACCESS_DENIED" && e["detail"].as_str().is_some_and(|d| d.contains("CLUSTER_ADD_NODE"))
    });
    assert!(denied, "the refused membership change must be in the ledger: {audit}");

    let (status, body) = call_delete(&leader_node.url(&format!("/api/v1/cluster/nodes/{removed}")), &key);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["voters"].as_array().unwrap().len(), 2, "{body}");
    let (status, _) = call_delete(&leader_node.url(&format!("/api/v1/cluster/nodes/{removed}")), &key);
    assert_eq!(status, 404);
    // The two remaining voters still commit writes.
    let (status, body) = call(
        "POST",
        &leader_node.url("/api/v1/tenants"),
        Some(&key),
        Some(json!({"tenant_id": "after-removal", "name": "x"})),
    );
    assert_eq!(status, 200, "{body}");
}

fn call_delete(url: &str, key: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent.delete(url).header("Authorization", &format!("Bearer {key}")).call().unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_json().unwrap_or(Value::Null))
}

fn metric(text: &str, name: &str, node: u64) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}{{node_id=\"{node}\"}} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} for node {node} in {text}"))
}

/// Many writes at once through every node: the proposers commit them in
/// batches (fewer Raft entries than proposals), and each write is still
/// answered, applied, audited and replayed on its own — a duplicate in
/// the same burst is refused, an Idempotency-Key sent twice at once takes
/// effect once.
#[test]
fn concurrent_writes_commit_in_batches_and_each_is_answered_and_audited_on_its_own() {
    const WRITERS: usize = 24;
    const WRITES: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let (nodes, key) = three_node_cluster(dir.path());
    let urls: Vec<String> = nodes.iter().map(|n| n.url("/api/v1/tenants")).collect();
    let start = std::sync::Barrier::new(WRITERS + 4);
    let (answers, duplicates, replays) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (urls, key, start) = (&urls, &key, &start);
                s.spawn(move || {
                    start.wait();
                    (0..WRITES)
                        .map(|i| {
                            let body = json!({"tenant_id": format!("t-{w}-{i}"), "name": "burst"});
                            call("POST", &urls[(w + i) % urls.len()], Some(key), Some(body))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // The same new tenant twice, and one request sent twice with the
        // same Idempotency-Key, at the same time as the burst.
        let racers: Vec<_> = (0..4)
            .map(|r| {
                let (urls, key, start) = (&urls, &key, &start);
                s.spawn(move || {
                    start.wait();
                    let url = &urls[r % urls.len()];
                    if r < 2 {
                        call(
                            "POST",
                            url,
                            Some(key),
                            Some(json!({"tenant_id": "dup", "name": format!("racer {r}")})),
                        )
                    } else {
                        call_with(
                            "POST",
                            url,
                            Some(key),
                            Some(json!({"tenant_id": "once", "name": "once"})),
                            Some("burst-once"),
                        )
                    }
                })
            })
            .collect();
        let answers: Vec<(u16, Value)> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        let mut racers = racers.into_iter().map(|r| r.join().unwrap());
        let duplicates: Vec<(u16, Value)> = racers.by_ref().take(2).collect();
        let replays: Vec<(u16, Value)> = racers.collect();
        (answers, duplicates, replays)
    });
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    let mut statuses: Vec<u16> = duplicates.iter().map(|(s, _)| *s).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{duplicates:?}");
    // Both sends of the keyed request (different nodes) get the one
    // answer (the entry that carried each may differ).
    assert_eq!((replays[0].0, replays[1].0), (200, 200), "{replays:?}");
    for field in ["audit_seq", "result"] {
        assert_eq!(
            replays[0].1[field], replays[1].1[field],
            "an Idempotency-Key sent twice at once must take effect once"
        );
    }

    // Every node holds exactly the tenants written; the ledger has one
    // entry per write (and per refusal) and its chain holds.
    let expected = WRITERS * WRITES + 2;
    for n in &nodes {
        let ids = tenant_ids(n, &key, "linearizable").unwrap();
        assert_eq!(ids.len(), expected, "node {}", n.id);
    }
    let (status, body) = call("GET", &nodes[0].url("/api/v1/audit?limit=1000"), Some(&key), None);
    assert_eq!(status, 200, "{body}");
    let entries = body["entries"].as_array().unwrap();
    let created = entries.iter().filter(|e| e["action"] == "TENANT_CREATED").count();
    assert_eq!(created, expected);
    let refused = entries.iter().filter(|e| e["action"] == "COMMAND_REJECTED").count();
    assert_eq!(refused, 1, "only the duplicate is refused");
    for pair in entries.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
        assert_eq!(pair[1]["seq"].as_u64().unwrap(), pair[0]["seq"].as_u64().unwrap() + 1);
    }

    // Batches formed: some node's proposer carried more proposals than
    // it sent entries (a burst of 200 writes over three nodes, four
    // entries in flight per node).
    let batched = nodes.iter().any(|n| {
        let text = ureq::get(&n.url("/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
        let entries = metric(&text, "aos_cp_proposer_entries_total", n.id);
        let proposals = metric(&text, "aos_cp_proposer_proposals_total", n.id);
        assert!(entries <= proposals, "node {}: {entries} entries, {proposals} proposals", n.id);
        entries < proposals
    });
    assert!(batched, "no node batched any proposals");
}
