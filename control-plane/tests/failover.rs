//! `kill -9` of the leader during a stream of writes, with a history
//! checker: every write acknowledged before, during and after the failover
//! is present on every node once the killed node is back, nothing is
//! duplicated, and sequential linearizable reads never go back in time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{NodeProc, call_with, leader_of, tenant_ids, three_node_cluster, wait_for};

#[derive(Default)]
struct History {
    /// Tenant ids whose creation was acknowledged (HTTP 200), with when the
    /// first attempt started and when the ack arrived.
    acked: Vec<(String, Instant, Instant)>,
}

#[test]
fn kill_9_of_the_leader_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, key) = three_node_cluster(dir.path());
    let urls: Vec<String> = nodes.iter().map(|n| n.url("/api/v1/tenants")).collect();
    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));

    // Writer: one tenant at a time, round-robin over nodes; a failed attempt
    // is retried elsewhere with the same Idempotency-Key, so a commit whose
    // ack was lost is acknowledged on retry instead of duplicated.
    let writer = {
        let (history, stop, key, urls) = (Arc::clone(&history), Arc::clone(&stop), key.clone(), urls.clone());
        std::thread::spawn(move || {
            let mut attempt = 0usize;
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let id = format!("t-{i:05}");
                let idem = format!("create-{id}");
                let started = Instant::now();
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let url = &urls[attempt % urls.len()];
                    attempt += 1;
                    let (status, body) = call_with(
                        "POST",
                        url,
                        Some(&key),
                        Some(json!({"tenant_id": id, "name": "t"})),
                        Some(&idem),
                    );
                    match status {
                        200 => {
                            history.lock().unwrap().acked.push((id.clone(), started, Instant::now()));
                            break;
                        }
                        0 | 503 => std::thread::sleep(Duration::from_millis(20)),
                        other => panic!("unexpected {other} for {id}: {body}"),
                    }
                }
            }
        })
    };

    // Reader: sequential linearizable reads, each must contain everything
    // the previous one saw.
    let reader = {
        let (stop, key) = (Arc::clone(&stop), key.clone());
        let readers: Vec<(String, String)> = nodes.iter().map(|n| (n.http.clone(), n.grpc.clone())).collect();
        std::thread::spawn(move || {
            let mut previous: BTreeSet<String> = BTreeSet::new();
            let mut reads = 0u32;
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let (http, _) = &readers[i % readers.len()];
                i += 1;
                let (status, body) =
                    support::call("GET", &format!("http://{http}/api/v1/tenants"), Some(&key), None);
                if status != 200 {
                    continue;
                }
                let seen: BTreeSet<String> = body["tenants"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|t| t["tenant_id"].as_str().map(str::to_owned))
                    .collect();
                let lost: Vec<&String> = previous.difference(&seen).collect();
                assert!(lost.is_empty(), "read on {http} went back in time: missing {lost:?}");
                previous = seen;
                reads += 1;
            }
            reads
        })
    };

    let acked_count = || history.lock().unwrap().acked.len();
    wait_for("20 acknowledged writes", Duration::from_secs(30), || (acked_count() >= 20).then_some(()));

    let leader = wait_for("a leader", Duration::from_secs(10), || leader_of(&nodes[0], &key));
    let killed_at = Instant::now();
    let before_kill = acked_count();
    nodes.iter_mut().find(|n| n.id == leader).unwrap().kill();

    wait_for("20 more acknowledged writes after the kill", Duration::from_secs(30), || {
        (acked_count() >= before_kill + 20).then_some(())
    });
    // A write issued after the kill can only be acknowledged by a new leader.
    let failover = history
        .lock()
        .unwrap()
        .acked
        .iter()
        .find(|(_, started, _)| *started > killed_at)
        .map(|(_, _, acked)| acked.duration_since(killed_at))
        .unwrap();
    eprintln!(
        "failover: first write issued after kill -9 of leader {leader} acknowledged after {failover:?}"
    );

    nodes.iter_mut().find(|n| n.id == leader).unwrap().restart();
    let before_stop = acked_count();
    wait_for("writes after the restart", Duration::from_secs(30), || {
        (acked_count() >= before_stop + 10).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let reads = reader.join().unwrap();
    assert!(reads > 10, "the reader must have observed the run, got {reads} reads");

    let acked: BTreeSet<String> = history.lock().unwrap().acked.iter().map(|(id, ..)| id.clone()).collect();
    assert_eq!(acked.len(), history.lock().unwrap().acked.len(), "a write was acknowledged twice");
    for n in &nodes {
        let ids = wait_for("every acknowledged write on every node", Duration::from_secs(30), || {
            tenant_ids(n, &key, "linearizable").filter(|ids| acked.iter().all(|a| ids.contains(a)))
        });
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "duplicates on node {}", n.id);
        // Nothing that was never attempted appears.
        assert!(ids.iter().all(|id| id.starts_with("t-")), "node {}: {ids:?}", n.id);
    }
    // The restarted node serves the same from its own state (stale read).
    let restarted: &NodeProc = nodes.iter().find(|n| n.id == leader).unwrap();
    wait_for("the restarted node to catch up locally", Duration::from_secs(30), || {
        tenant_ids(restarted, &key, "stale").filter(|ids| acked.iter().all(|a| ids.contains(a)))
    });
}
