//! The incident engine end to end (issue 8): a run stopped by a policy at
//! the edge becomes one incident at the control plane, with its inflection
//! point, linked to the run; an SRE acknowledges and resolves it with
//! `aosctl`, each step audited; a suppression turns the next report into a
//! prevention record.

use std::time::Duration;

use serde_json::Value;

use crate::agent_sync::{Acme, EdgeAgent, acme_with_policy, call_with_key};
use crate::support::{Ctl, wait_for};

pub(crate) fn incidents(ctl: &Ctl, op: &str) -> Vec<Value> {
    let listed: Value =
        serde_json::from_str(&ctl.ok(op, &["-o", "json", "incident", "list", "--tenant", "acme"])).unwrap();
    listed["incidents"].as_array().cloned().unwrap_or_default()
}

/// Starts a run and steps it past the 1000-token limit; its id.
pub(crate) fn breach(agent: &EdgeAgent) -> String {
    let run = agent.start_run();
    assert_eq!(agent.step(&run, 600)["allowed"], true);
    let stopped = agent.step(&run, 600);
    assert_eq!(stopped["decision"]["outcome"], "STOP", "{stopped}");
    run
}

#[test]
fn a_stopped_run_becomes_one_incident_that_an_sre_works_through() {
    let dir = tempfile::tempdir().unwrap();
    let Acme { node, ctl, op, gateway, token } = acme_with_policy(dir.path());
    let agent = EdgeAgent::start(&dir.path().join("agent"), &gateway, Some(&token));
    wait_for("the snapshot", Duration::from_secs(30), || (agent.snapshot_version() > 0).then_some(()));

    let run = breach(&agent);
    let incident =
        wait_for("the incident", Duration::from_secs(30), || incidents(&ctl, &op).into_iter().next());
    assert_eq!(incident["run_id"], run.as_str());
    assert_eq!(incident["policy_id"], "pol-run-tokens");
    assert_eq!(incident["category"], "TOKEN_LIMIT");
    assert_eq!(incident["status"], "OPEN");
    assert_eq!(incident["reports"], 1);
    let inflection = &incident["inflection"];
    assert_eq!(inflection["signal"], "TOKENS", "{incident}");
    assert_eq!(inflection["threshold"], 1000, "{incident}");
    assert!(inflection["value"].as_u64().unwrap() > 1000, "{incident}");
    assert!(inflection["snapshot_version"].as_u64().unwrap() >= 1, "{incident}");
    assert!(!inflection["policy_version_hash"].as_str().unwrap().is_empty(), "{incident}");
    let id = incident["incident_id"].as_str().unwrap().to_owned();
    // Linked to the run: the run's incidents are queryable.
    let url = format!("http://{}/api/v1/tenants/acme/incidents?run_id={run}", node.http);
    let (status, by_run) = call_with_key("GET", &url, Some(&op), None);
    assert_eq!((status, by_run["incidents"][0]["incident_id"].as_str()), (200, Some(id.as_str())));

    // Acknowledge and resolve, audited; going back is refused.
    ctl.ok(&op, &["incident", "ack", "--tenant", "acme", &id, "--note", "on it"]);
    let out = ctl.ok(&op, &["incident", "resolve", "--tenant", "acme", &id, "--note", "limit raised"]);
    assert!(out.contains("RESOLVED"), "{out}");
    let refused = ctl.run(&op, &["incident", "ack", "--tenant", "acme", &id]);
    assert!(!refused.status.success());
    let shown: Value =
        serde_json::from_str(&ctl.ok(&op, &["incident", "show", "--tenant", "acme", &id])).unwrap();
    let history: Vec<&str> =
        shown["history"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(history, ["OPEN", "ACKNOWLEDGED", "RESOLVED"]);
    let audit = ctl.ok(&op, &["-o", "json", "audit", "list"]);
    assert!(audit.contains("INCIDENT_ACKNOWLEDGED") && audit.contains("INCIDENT_RESOLVED"), "{audit}");

    // Suppressed: the next breach is a prevention, not an incident.
    ctl.ok(
        &op,
        &[
            "incident",
            "suppress",
            "--tenant",
            "acme",
            "--id",
            "sup-1",
            "--policy",
            "pol-run-tokens",
            "--ttl",
            "1h",
            "--reason",
            "known issue",
        ],
    );
    let second = breach(&agent);
    let url = format!("http://{}/api/v1/tenants/acme/incident-preventions", node.http);
    wait_for("the prevention record", Duration::from_secs(30), || {
        let (_, body) = call_with_key("GET", &url, Some(&op), None);
        body["preventions"].as_array()?.iter().any(|p| p["run_id"] == second.as_str()).then_some(())
    });
    assert_eq!(incidents(&ctl, &op).len(), 1, "no new incident while suppressed");
}
