//! The governance lever against a real node, through `aosctl` (issue 5):
//! who may pull it, tenant scoping, TTL expiry by the leader, and the
//! ledger.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Ctl, start_single_node, wait_for};

fn state(ctl: &Ctl, key: &str, tenant: Option<&str>) -> Value {
    let mut args = vec!["-o", "json", "governance", "state"];
    if let Some(t) = tenant {
        args.extend(["--tenant", t]);
    }
    serde_json::from_str(&ctl.ok(key, &args)).unwrap()
}

fn key(ctl: &Ctl, op: &str, tenant: &str, role: &str) -> String {
    let created =
        ctl.ok(op, &["-o", "json", "key", "create", "--tenant", tenant, "--name", role, "--role", role]);
    let created: Value = serde_json::from_str(&created).unwrap();
    created["secret"].as_str().unwrap().to_owned()
}

#[test]
fn the_governance_lever_is_scoped_audited_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_single_node(dir.path(), &[]);
    let op = node.operator_key.clone();
    let ctl = Ctl { endpoints: vec![format!("http://{}", node.http)] };
    for t in ["acme", "globex"] {
        ctl.ok(&op, &["tenant", "create", t]);
    }
    let sre = key(&ctl, &op, "acme", "sre");
    let auditor = key(&ctl, &op, "acme", "auditor");
    let initial = state(&ctl, &op, None);
    assert_eq!(
        (initial["version"].as_u64(), initial["global"]["mode"].as_str()),
        (Some(0), Some("ENFORCING"))
    );

    // A tenant SRE halts its own tenant, and only it.
    let out = ctl.ok(&sre, &["governance", "halt", "--tenant", "acme", "--reason", "runaway agent"]);
    assert!(out.contains("version 1"), "{out}");
    let acme = state(&ctl, &sre, None);
    assert_eq!(acme["tenant"]["effective"], "HALTED", "{acme}");
    assert!(acme.get("tenants").is_none(), "a tenant key sees only its tenant: {acme}");
    assert_eq!(state(&ctl, &op, Some("globex"))["tenant"]["effective"], "ENFORCING");

    // Refusals: the global lever, another tenant, the wrong role, no reason.
    for (key, args) in [
        (&sre, vec!["governance", "disable", "--reason", "x"]),
        (&sre, vec!["governance", "halt", "--tenant", "globex", "--reason", "x"]),
        (&auditor, vec!["governance", "enable", "--tenant", "acme", "--reason", "x"]),
    ] {
        let o = ctl.run(key, &args);
        assert!(!o.status.success(), "{args:?} must be refused");
        assert!(crate::support::err(&o).contains("403"), "{args:?}: {}", crate::support::err(&o));
    }
    let o = ctl.run(&sre, &["governance", "state", "--tenant", "globex"]);
    assert!(!o.status.success(), "a tenant key cannot read another tenant's governance");
    // Bad requests on the REST lever: unknown action, no reason, unknown field.
    let url = |action: &str| format!("http://{}/api/v1/ops/governance/{action}", node.http);
    let post = |action: &str, body: Value| {
        crate::agent_sync::call_with_key("POST", &url(action), Some(&op), Some(body))
    };
    let (status, body) = post("explode", serde_json::json!({"reason": "x"}));
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("enable, degrade, disable, halt"), "{body}");
    let (status, body) = post("halt", serde_json::json!({}));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("reason"), "{body}");
    let (status, body) = post("halt", serde_json::json!({"reason": "x", "tennant": "acme"}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(state(&ctl, &op, None)["version"], 1, "nothing changed");
    let o = ctl.run(&op, &["governance", "degrade", "--reason", "x", "--ttl", "15x"]);
    assert!(
        !o.status.success() && crate::support::err(&o).contains("unknown unit"),
        "{}",
        crate::support::err(&o)
    );

    // A global DEGRADED with a TTL: every tenant degraded (acme stays
    // HALTED: a halt wins), then the leader expires it.
    ctl.ok(&op, &["governance", "degrade", "--reason", "database failover", "--ttl", "1s"]);
    assert_eq!(state(&ctl, &op, Some("globex"))["tenant"]["effective"], "DEGRADED");
    assert_eq!(state(&ctl, &op, Some("acme"))["tenant"]["effective"], "HALTED");
    wait_for("the TTL expiry", Duration::from_secs(30), || {
        let s = state(&ctl, &op, Some("globex"));
        (s["global"]["mode"] == "ENFORCING").then_some(())
    });
    let table = ctl.ok(&op, &["governance", "state"]);
    assert!(
        table.contains("tenant acme") && table.contains("HALTED") && table.contains("runaway agent"),
        "{table}"
    );

    // Everything is in the ledger, refusals included.
    let audit = ctl.ok(&op, &["-o", "json", "audit", "list"]);
    assert_eq!(audit.matches("GOVERNANCE_CHANGED").count(), 2, "{audit}");
    assert_eq!(audit.matches("GOVERNANCE_EXPIRED").count(), 1, "{audit}");
    assert!(audit.matches("ACCESS_DENIED").count() >= 3, "{audit}");
}

#[test]
fn agents_apply_halt_degrade_and_disable_from_the_very_next_decision() {
    use crate::agent_sync::{EdgeAgent, agents, call, call_with_key, tenant_and_token};
    let dir = tempfile::tempdir().unwrap();
    let gateway = format!("127.0.0.1:{}", crate::support::free_port());
    let node = start_single_node(dir.path(), &["--agent-addr", &gateway]);
    let op = node.operator_key.clone();
    let ctl = Ctl { endpoints: vec![format!("http://{}", node.http)] };
    let (policy, token) = tenant_and_token(&ctl, &op, dir.path());
    ctl.ok(&op, &["tenant", "create", "globex"]);
    ctl.ok(&op, &["policy", "apply", "--tenant", "acme", "-f", policy.to_str().unwrap()]);
    let agent = EdgeAgent::start(&dir.path().join("agent"), &gateway, Some(&token));
    wait_for("the snapshot", Duration::from_secs(30), || (agent.snapshot_version() > 0).then_some(()));
    let mode = |agent: &EdgeAgent| {
        agent.health()["components"]["governance"]["mode"].as_str().unwrap_or("").to_owned()
    };

    // HALT: the in-flight run is killed at once (its cancel signal fires
    // while nobody steps), new runs are refused with the reason.
    let in_flight = agent.start_run();
    assert_eq!(agent.step(&in_flight, 100)["allowed"], true);
    let cancel_url = agent.url(&format!("/api/v1/runs/{in_flight}/cancellation?wait_ms=30000"));
    let waiter = std::thread::spawn(move || call("GET", &cancel_url, None));
    // A halt of another tenant reaches this agent as a new version that
    // changes nothing for it.
    ctl.ok(&op, &["governance", "halt", "--tenant", "globex", "--reason", "other tenant"]);
    let other = state(&ctl, &op, None)["version"].as_u64().unwrap();
    wait_for("the other tenant's change", Duration::from_secs(30), || {
        (agent.health()["components"]["governance"]["version"].as_u64()? == other).then_some(())
    });
    assert_eq!(mode(&agent), "ENFORCING");
    let (_, view) = call("GET", &agent.url(&format!("/api/v1/runs/{in_flight}")), None);
    assert_eq!(view["status"], "running", "{view}");
    let out = ctl.ok(&op, &["governance", "halt", "--tenant", "acme", "--reason", "runaway agent", "--wait"]);
    assert!(out.contains("1/1 connected agents on v"), "--wait shows the convergence: {out}");
    let (status, cancelled) = waiter.join().unwrap();
    assert_eq!((status, cancelled["cancelled"].as_bool()), (200, Some(true)), "{cancelled}");
    assert_eq!(mode(&agent), "HALTED");
    let (status, view) = call("GET", &agent.url(&format!("/api/v1/runs/{in_flight}")), None);
    assert_eq!((status, view["status"].as_str()), (200, Some("failed_policy")), "{view}");
    let (status, refused) = agent.post("/api/v1/runs", serde_json::json!({}));
    assert_eq!((status, refused["error"]["code"].as_str()), (503, Some("GOVERNANCE_HALTED")), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("runaway agent"), "{refused}");
    // A refusal is a decision, not a fault: no Retry-After invites a retry.
    let client: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let response = client.post(&agent.url("/api/v1/runs")).send_json(serde_json::json!({})).unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().get("retry-after").is_none());
    let version = state(&ctl, &op, None)["version"].as_u64().unwrap();
    wait_for("the governance ACK", Duration::from_secs(30), || {
        (agents(&ctl, &op).first()?["acked_governance_version"].as_u64()? == version).then_some(())
    });
    let table = ctl.ok(&op, &["agent", "list", "--tenant", "acme"]);
    assert!(table.contains("GOVERNANCE") && table.contains(&format!("v{version}")), "{table}");

    // ENABLE, then DISABLE: a breaching step goes through, BYPASSED.
    ctl.ok(&op, &["governance", "enable", "--tenant", "acme", "--reason", "fixed"]);
    wait_for("ENFORCING at the agent", Duration::from_secs(30), || {
        (mode(&agent) == "ENFORCING").then_some(())
    });
    let run = agent.start_run();
    ctl.ok(&op, &["governance", "disable", "--tenant", "acme", "--reason", "policy bug"]);
    wait_for("DISABLED at the agent", Duration::from_secs(30), || (mode(&agent) == "DISABLED").then_some(()));
    assert_eq!(agent.step(&run, 600)["allowed"], true);
    let bypassed = agent.step(&run, 600);
    assert_eq!(bypassed["allowed"], true, "{bypassed}");
    assert_eq!(bypassed["decision"]["outcome"], "STOP", "the decision is still computed: {bypassed}");
    assert_eq!(bypassed["governance"]["enforced"], "BYPASSED", "{bypassed}");
    assert_eq!(bypassed["governance"]["would_have_been"], "STOP", "{bypassed}");

    // DEGRADE: new runs refused, the in-flight one continues with WARN.
    ctl.ok(&op, &["governance", "degrade", "--tenant", "acme", "--reason", "db failover"]);
    wait_for("DEGRADED at the agent", Duration::from_secs(30), || (mode(&agent) == "DEGRADED").then_some(()));
    let (status, refused) = agent.post("/api/v1/runs", serde_json::json!({}));
    assert_eq!((status, refused["error"]["code"].as_str()), (503, Some("GOVERNANCE_DEGRADED")), "{refused}");
    let downgraded = agent.step(&run, 600);
    assert_eq!(downgraded["allowed"], true, "{downgraded}");
    assert_eq!(downgraded["governance"]["enforced"], "DOWNGRADED", "{downgraded}");
    assert_eq!(downgraded["governance"]["enforced_outcome"], "WARN", "{downgraded}");

    // The bypassed and downgraded decisions reach the control plane
    // flagged as such.
    wait_for("the flagged control events", Duration::from_secs(30), || {
        let url = format!("http://{}/api/v1/tenants/acme/activity/signals?run_id={run}", node.http);
        let (_, body) = call_with_key("GET", &url, Some(&op), None);
        let labels: Vec<String> = body["records"]
            .as_array()?
            .iter()
            .filter_map(|r| r["body"]["governance"]["enforced"].as_str().map(str::to_owned))
            .collect();
        (labels.contains(&"BYPASSED".to_owned()) && labels.contains(&"DOWNGRADED".to_owned())).then_some(())
    });
}
