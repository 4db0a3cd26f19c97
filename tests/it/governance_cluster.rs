//! The governance lever across a 3-node control plane with an edge agent
//! on each node (issue 5): a halt given to any node reaches every agent of
//! the tenant and only them, kills their in-flight runs and refuses new
//! ones; its TTL returns them to ENFORCING; a halt given to a node cut off
//! from the quorum is refused and no agent ever sees it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::agent_sync::{EdgeAgent, POLICY, call, call_with_key};
use crate::support::{Cluster, wait_for};

fn mode(agent: &EdgeAgent) -> String {
    agent.health()["components"]["governance"]["mode"].as_str().unwrap_or("").to_owned()
}

fn version(agent: &EdgeAgent) -> u64 {
    agent.health()["components"]["governance"]["version"].as_u64().unwrap_or(0)
}

fn join_token(cluster: &Cluster, tenant: &str) -> String {
    let created: Value = serde_json::from_str(
        &cluster
            .ctl()
            .ok(&cluster.operator_key, &["-o", "json", "agent", "token", "create", "--tenant", tenant]),
    )
    .unwrap();
    created["join_token"].as_str().unwrap().to_owned()
}

#[test]
fn one_lever_reaches_every_agent_of_the_tenant_and_a_minority_cannot_pull_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path());
    let op = cluster.operator_key.clone();
    let ctl = cluster.ctl();
    ctl.ok(&op, &["tenant", "create", "acme"]);
    ctl.ok(&op, &["tenant", "create", "globex"]);
    let policy = dir.path().join("tokens.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    ctl.ok(&op, &["policy", "apply", "--tenant", "acme", "-f", policy.to_str().unwrap()]);
    ctl.ok(&op, &["policy", "apply", "--tenant", "globex", "-f", policy.to_str().unwrap()]);
    let (acme_token, globex_token) = (join_token(&cluster, "acme"), join_token(&cluster, "globex"));
    // One acme agent pinned to each node; a globex agent on node 1.
    let acme: Vec<EdgeAgent> = cluster
        .nodes
        .iter()
        .map(|n| EdgeAgent::start(&dir.path().join(format!("acme-{}", n.id)), &n.gateway, Some(&acme_token)))
        .collect();
    let globex = EdgeAgent::start(&dir.path().join("globex"), &cluster.nodes[0].gateway, Some(&globex_token));
    for agent in acme.iter().chain([&globex]) {
        wait_for("the snapshot", Duration::from_secs(60), || (agent.snapshot_version() > 0).then_some(()));
    }

    // HALT acme for 20 s through a follower, waiting for every agent.
    let in_flight: Vec<String> = acme.iter().map(EdgeAgent::start_run).collect();
    let leader = cluster.leader(0);
    let follower = cluster.nodes.iter().position(|n| n.id != leader).unwrap();
    let via_follower =
        crate::support::Ctl { endpoints: vec![format!("http://{}", cluster.nodes[follower].http)] };
    let out = via_follower.ok(
        &op,
        &["governance", "halt", "--tenant", "acme", "--reason", "runaway", "--ttl", "20s", "--wait"],
    );
    assert!(out.contains("3/3 connected agents on v"), "every acme agent, and only them: {out}");
    for (agent, run) in acme.iter().zip(&in_flight) {
        assert_eq!(mode(agent), "HALTED");
        let (_, view) = call("GET", &agent.url(&format!("/api/v1/runs/{run}")), None);
        assert_eq!(view["status"], "failed_policy", "in-flight run killed: {view}");
        let (status, refused) = agent.post("/api/v1/runs", json!({}));
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (503, Some("GOVERNANCE_HALTED")),
            "{refused}"
        );
    }
    // globex heard of a new version but is not halted.
    let halted_version = version(&acme[0]);
    wait_for("globex to see the version", Duration::from_secs(30), || {
        (version(&globex) == halted_version).then_some(())
    });
    assert_eq!(mode(&globex), "ENFORCING");
    let run = globex.start_run();
    assert_eq!(globex.step(&run, 10)["allowed"], true);

    // The TTL ends the halt on its own, everywhere.
    for agent in &acme {
        wait_for("ENFORCING after the TTL", Duration::from_secs(60), || {
            (mode(agent) == "ENFORCING").then_some(())
        });
        let run = agent.start_run();
        assert_eq!(agent.step(&run, 10)["allowed"], true);
    }
    let settled = version(&acme[0]);
    assert!(settled > halted_version, "the expiry is a new version");

    // A follower cut off from the other two refuses the halt at once; it
    // was never appended, so healed, no agent ever sees it.
    let leader = cluster.leader(0);
    let keep = cluster.nodes.iter().position(|n| n.id != leader).unwrap();
    for (i, n) in cluster.nodes.iter_mut().enumerate() {
        if i != keep {
            n.kill();
        }
    }
    let (status, body) = call_with_key(
        "POST",
        &cluster.nodes[keep].url("/api/v1/ops/governance/halt"),
        Some(&op),
        Some(json!({"reason": "from a minority", "tenant": "acme"})),
    );
    assert_eq!(status, 503, "{body}");
    for (i, n) in cluster.nodes.iter_mut().enumerate() {
        if i != keep {
            n.restart();
        }
    }
    cluster.wait_healthy();
    let (status, state) = call_with_key(
        "GET",
        &cluster.nodes[keep].url("/api/v1/ops/governance/state?tenant=acme"),
        Some(&op),
        None,
    );
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["version"].as_u64(), Some(settled), "the refused halt never committed: {state}");
    // Every agent is connected again and still ENFORCING at that version.
    for agent in &acme {
        wait_for("the agent reconnected", Duration::from_secs(60), || {
            (agent.health()["components"]["control_plane"]["status"] == "connected").then_some(())
        });
        assert_eq!((mode(agent), version(agent)), ("ENFORCING".to_owned(), settled));
    }
}
