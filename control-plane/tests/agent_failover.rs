//! An edge agent against a three-node cluster, all real processes: any
//! node serves the snapshot watch; the agent's record delivery moves to
//! the Raft leader's node, as the ingest acks point it there; when the node
//! the watch is connected to is killed, the agent moves to another, still
//! receives the next policy change by push, and its records still reach
//! the cluster (issue 4).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{apply_yaml, call, free_port, tenant_with_admin, three_node_cluster, wait_for};

const POLICY: &str = r"api_version: aos/v1
policies:
  - id: pol-run-tokens
    name: Per-run token budget
    status: ACTIVE
    scope: { type: ALL_RUNS }
    monitors: { tokens: true }
    limits:
      - { signal: TOKENS, max: MAX, window: PER_RUN }
    actions: { on_near: WARN, on_breach: STOP }
    bind_at: EACH_STEP
    failure_mode: fail_closed
";

struct Agent {
    child: Child,
    listen: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent_binary() -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_aos-control-plane")).with_file_name("aos-edge-agent");
    assert!(path.is_file(), "{} is missing: run `cargo build --workspace` first", path.display());
    path
}

fn health(agent: &Agent) -> Value {
    call("GET", &format!("http://{}/health", agent.listen), None, None).1
}

#[test]
fn the_agent_fails_over_to_another_node_and_keeps_receiving_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, operator) = three_node_cluster(dir.path());
    let admin = tenant_with_admin(&nodes[0], &operator, "acme");
    apply_yaml(&nodes[1], &admin, "acme", &POLICY.replace("MAX", "1000"));
    let (status, token) =
        call("POST", &nodes[2].url("/api/v1/tenants/acme/agent-tokens"), Some(&admin), Some(json!({})));
    assert_eq!(status, 200, "{token}");
    let token = token["join_token"].as_str().unwrap().to_owned();

    // The leader's gateway last: delivery starts on the second endpoint (a
    // follower) and has to find the leader from the acks.
    let (_, cluster) = call("GET", &nodes[0].url("/api/v1/cluster"), Some(&operator), None);
    let leader = cluster["leader"].as_u64().expect("a leader");
    let mut gateways: Vec<&str> = nodes.iter().map(|n| n.agents.as_str()).collect();
    let at = nodes.iter().position(|n| n.id == leader).unwrap();
    gateways.rotate_left((at + 1) % 3);
    let leader_gateway = nodes[at].agents.clone();
    assert_eq!(gateways[2], leader_gateway);
    let listen = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("agent");
    std::fs::create_dir_all(&data).unwrap();
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let child = Command::new(agent_binary())
        .args(["--control-plane", &gateways.join(","), "--join-token", &token, "--listen", &listen])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "info")
        .env("AOS_AGENT_AUTH", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let agent = Agent { child, listen };
    let first = wait_for("the first push", Duration::from_secs(60), || {
        let h = health(&agent);
        let version = h["components"]["snapshot"]["version"].as_u64()?;
        let node = h["components"]["control_plane"]["watch_node"].as_str()?.to_owned();
        (version > 0).then_some((version, node))
    });

    // Records (a run each, ended), made only while the outbox is empty,
    // until an ack has shown the agent where the leader is and delivery has
    // moved...
    let url = |p: &str| format!("http://{}{p}", agent.listen);
    wait_for("delivery to move", Duration::from_secs(60), || {
        let h = health(&agent);
        if h["components"]["control_plane"]["delivery_moves"].as_u64()? > 0 {
            return Some(());
        }
        if h["components"]["outbox"]["pending_records"].as_u64() == Some(0) {
            let (status, run) = call("POST", &url("/api/v1/runs"), None, Some(json!({})));
            assert_eq!(status, 201, "{run}");
            let run = run["run_id"].as_str().unwrap();
            let (status, ended) = call(
                "POST",
                &url(&format!("/api/v1/runs/{run}/end")),
                None,
                Some(json!({"status": "succeeded"})),
            );
            assert_eq!(status, 200, "{ended}");
        }
        None
    });
    // ...which dials the leader at once, with nothing new to send (dialling
    // at the next record would put a fleet's handshakes in the burst of
    // records a governance change makes).
    let moves = wait_for("delivery on the leader's node", Duration::from_secs(30), || {
        let h = health(&agent);
        let link = &h["components"]["control_plane"];
        (link["delivery_node"].as_str() == Some(leader_gateway.as_str()))
            .then(|| link["delivery_moves"].as_u64())
    });
    assert_eq!(moves, Some(1), "one move: the second endpoint's ack names the third as leader");

    // Kill the node serving the watch.
    let (first_version, serving) = first;
    let victim = nodes.iter().position(|n| n.agents == serving).unwrap();
    nodes[victim].kill();
    let survivor = (victim + 1) % 3;

    // The next change, made through a survivor once a leader is there,
    // reaches the agent through another node.
    wait_for("a leader among the survivors", Duration::from_secs(30), || {
        let (status, body) = call("GET", &nodes[survivor].url("/api/v1/cluster"), Some(&operator), None);
        (status == 200 && !body["leader"].is_null() && body["leader"].as_u64() != Some(nodes[victim].id))
            .then_some(())
    });
    apply_yaml(&nodes[survivor], &admin, "acme", &POLICY.replace("MAX", "500"));
    let (version, now_serving) = wait_for("the push after failover", Duration::from_secs(60), || {
        let h = health(&agent);
        let version = h["components"]["snapshot"]["version"].as_u64()?;
        let node = h["components"]["control_plane"]["watch_node"].as_str()?.to_owned();
        (version > first_version).then_some((version, node))
    });
    assert_ne!(now_serving, serving);
    // The new 500-token budget is enforced in the breaching step.
    let (status, run) = call("POST", &url("/api/v1/runs"), None, Some(json!({})));
    assert_eq!(status, 201, "{run}");
    let run = run["run_id"].as_str().unwrap().to_owned();
    let (_, step) = call(
        "POST",
        &url(&format!("/api/v1/runs/{run}/steps")),
        None,
        Some(json!({"estimated_tokens": 600})),
    );
    assert_eq!(step["decision"]["outcome"], "STOP", "version {version}: {step}");

    // The ACK and the run's records reach the surviving nodes.
    wait_for("the ACK of the new version", Duration::from_secs(30), || {
        let (_, listed) =
            call("GET", &nodes[survivor].url("/api/v1/tenants/acme/agents"), Some(&admin), None);
        (listed["agents"][0]["acked_version"].as_u64() == Some(version)).then_some(())
    });
    wait_for("the run's incident at the cluster", Duration::from_secs(60), || {
        let url = nodes[survivor].url(&format!("/api/v1/tenants/acme/records?run_id={run}&kind=INCIDENT"));
        let (status, body) = call("GET", &url, Some(&admin), None);
        (status == 200 && body["records"].as_array().is_some_and(|r| r.len() == 1)).then_some(())
    });
    // Another tenant's admin cannot read them.
    let other = tenant_with_admin(&nodes[survivor], &operator, "globex");
    let (status, _) = call("GET", &nodes[survivor].url("/api/v1/tenants/acme/records"), Some(&other), None);
    assert_eq!(status, 403);
}

#[test]
fn a_follower_without_a_leader_closes_its_watches() {
    a_cut_off_node_closes_its_watches(Cut::IsolatedFollower);
}

/// openraft keeps an isolated leader calling itself leader; the node
/// notices that no quorum acknowledges it and closes its watches too.
#[test]
fn a_leader_without_a_quorum_closes_its_watches() {
    a_cut_off_node_closes_its_watches(Cut::IsolatedLeader);
}

/// Five nodes split 2 | 3 with the leader on the small side: its follower
/// still hears it, so only the follower's leader probe tells it that the
/// leader has no quorum (issue 5, partitions).
#[test]
fn a_follower_of_a_cut_off_leader_closes_its_watches() {
    a_cut_off_node_closes_its_watches(Cut::FollowerOfCutOffLeader);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// 3 nodes; the agent's node, a follower, loses both others.
    IsolatedFollower,
    /// 3 nodes; the agent's node, the leader, loses both others.
    IsolatedLeader,
    /// 5 nodes; the agent's node, a follower, keeps only the leader.
    FollowerOfCutOffLeader,
}

fn a_cut_off_node_closes_its_watches(cut: Cut) {
    let dir = tempfile::tempdir().unwrap();
    let size = if cut == Cut::FollowerOfCutOffLeader { 5 } else { 3 };
    let (mut nodes, operator) = support::cluster_of(dir.path(), size, &[]);
    let admin = tenant_with_admin(&nodes[0], &operator, "acme");
    apply_yaml(&nodes[0], &admin, "acme", &POLICY.replace("MAX", "1000"));
    let (_, token) =
        call("POST", &nodes[0].url("/api/v1/tenants/acme/agent-tokens"), Some(&admin), Some(json!({})));
    let leader = support::agreed_leader(&nodes, &operator, Duration::from_secs(30));
    let leader_index = nodes.iter().position(|n| n.id == leader).unwrap();
    let pinned = match cut {
        Cut::IsolatedLeader => leader_index,
        Cut::IsolatedFollower | Cut::FollowerOfCutOffLeader => {
            nodes.iter().position(|n| n.id != leader).unwrap()
        }
    };
    let survives = |i: usize| i == pinned || (cut == Cut::FollowerOfCutOffLeader && i == leader_index);
    // The agent knows only that node.
    let listen = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("agent");
    std::fs::create_dir_all(&data).unwrap();
    let log_path = dir.path().join("agent.log");
    let child = Command::new(agent_binary())
        .args(["--control-plane", &nodes[pinned].agents, "--listen", &listen])
        .args(["--join-token", token["join_token"].as_str().unwrap()])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .env("AOS_AGENT_AUTH", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let agent = Agent { child, listen };
    wait_for("the watch", Duration::from_secs(30), || {
        (health(&agent)["components"]["control_plane"]["status"] == "connected").then_some(())
    });
    // The cut was chosen around that leader: an election since (a slow
    // heartbeat on a loaded machine) can make it a different cut, so say
    // so rather than wait for what cannot happen.
    let now = support::agreed_leader(&nodes, &operator, Duration::from_secs(30));
    let premise_holds = match cut {
        Cut::IsolatedFollower => now != nodes[pinned].id,
        Cut::IsolatedLeader | Cut::FollowerOfCutOffLeader => now == leader,
    };
    assert!(
        premise_holds,
        "the leader moved from node {leader} to node {now} before the cut, which was chosen around it ({cut:?})"
    );
    // The node loses the quorum: it closes the watch rather than keep the
    // agent on state it can no longer vouch for.
    for (i, n) in nodes.iter_mut().enumerate() {
        if !survives(i) {
            n.kill();
        }
    }
    if cut == Cut::FollowerOfCutOffLeader {
        // The follower still names its leader, but no longer vouches for it.
        // Each new answer is printed (shown only if the wait fails), so a
        // failure says what the node reported instead.
        let mut last_seen = String::new();
        wait_for("the follower to doubt its leader", Duration::from_secs(30), || {
            let (status, health) = call("GET", &nodes[pinned].url("/health"), None, None);
            let contact = health["raft"]["leader_contact"].as_str().unwrap_or_default().to_owned();
            let seen = format!(
                "{status} leader={} (expected {leader}) contact={contact:?}",
                health["raft"]["leader"]
            );
            if seen != last_seen {
                eprintln!("node {}: {seen}", nodes[pinned].id);
                last_seen = seen;
            }
            (status == 503 && health["raft"]["leader"] == leader && contact.contains("has not shown"))
                .then_some(())
        });
    }
    wait_for("the watch closed by the leaderless node", Duration::from_secs(30), || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.contains("has had no usable leader").then_some(())
    });
    // Healed, the agent is connected again.
    for (i, n) in nodes.iter_mut().enumerate() {
        if !survives(i) {
            n.restart();
        }
    }
    wait_for("the watch after healing", Duration::from_secs(60), || {
        (health(&agent)["components"]["control_plane"]["status"] == "connected").then_some(())
    });
}
