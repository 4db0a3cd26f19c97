//! `aos-control-plane dev`, the README's run command: one process, a demo
//! tenant with its admin key and the example policies, reachable at once;
//! a second run keeps the data and does not seed twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::{call, free_port, wait_for};

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dev(data_dir: &std::path::Path, http: &str, grpc: &str, agent: &str, gateway: &str) -> Dev {
    let child = Command::new(env!("CARGO_BIN_EXE_aos-control-plane"))
        .args([
            "dev",
            "--http-addr",
            http,
            "--grpc-addr",
            grpc,
            "--agent-listen",
            agent,
            "--agent-addr",
            gateway,
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .env_remove("AOS_SIGNING_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Dev(child)
}

fn policy_ids(http: &str, key: &str) -> Option<Vec<String>> {
    let (status, body) = call("GET", &format!("http://{http}/api/v1/tenants/demo/policies"), Some(key), None);
    (status == 200).then(|| {
        body["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["policy_id"].as_str().unwrap().to_owned())
            .collect()
    })
}

#[test]
fn dev_mode_serves_the_demo_tenant_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let http = format!("127.0.0.1:{}", free_port());
    let grpc = format!("127.0.0.1:{}", free_port());
    let agent = format!("127.0.0.1:{}", free_port());
    let gateway = format!("127.0.0.1:{}", free_port());
    let key_file = data.join("demo-admin.key");

    let first = dev(&data, &http, &grpc, &agent, &gateway);
    let key = wait_for("the demo admin key", Duration::from_secs(30), || {
        std::fs::read_to_string(&key_file).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
    });
    let ids = wait_for("the demo policies", Duration::from_secs(30), || {
        policy_ids(&http, &key).filter(|p| p.len() == 8)
    });
    assert!(ids.contains(&"pol-run-tokens".to_owned()), "{ids:?}");
    assert!(data.join("signing.key").exists() && data.join("operator.key").exists());

    // The demo tenant's edge agent enforces the seeded policies at once.
    let version = wait_for("the dev edge agent's snapshot", Duration::from_secs(30), || {
        let (status, health) = call("GET", &format!("http://{agent}/health"), None, None);
        (status == 200).then(|| health["components"]["snapshot"]["version"].as_u64()).flatten()
    });
    assert!(version >= 1);
    let (status, run) =
        call("POST", &format!("http://{agent}/api/v1/runs"), None, Some(json!({"agent_id": "research-bot"})));
    assert_eq!(status, 201, "{run}");
    let run_id = run["run_id"].as_str().unwrap();
    let steps = format!("http://{agent}/api/v1/runs/{run_id}/steps");
    let (_, answer) = call("POST", &steps, None, Some(json!({"estimated_tokens": 60_000})));
    assert_eq!(answer["decision"]["outcome"], "STOP", "the 50k per-run budget stops it: {answer}");
    assert_eq!(answer["decision"]["winning_policy"]["policy_id"], "pol-run-tokens");
    // The dev agent is a joined edge agent: its records reach the node.
    wait_for("the stopped run at the control plane", Duration::from_secs(30), || {
        let url = format!("http://{http}/api/v1/tenants/demo/activity/completed");
        let (status, body) = call("GET", &url, Some(&key), None);
        (status == 200 && body["runs"].as_array()?.iter().any(|r| r["run_id"] == run_id)).then_some(())
    });
    // A policy change reaches the agent.
    let (status, body) = call(
        "POST",
        &format!("http://{http}/api/v1/tenants/demo/policies/pol-run-tokens/suspend"),
        Some(&key),
        Some(json!({"reason": "dev test"})),
    );
    assert_eq!(status, 200, "{body}");
    let suspended = wait_for("the new snapshot at the agent", Duration::from_secs(30), || {
        let (_, health) = call("GET", &format!("http://{agent}/health"), None, None);
        health["components"]["snapshot"]["version"].as_u64().filter(|v| *v > version)
    });

    // A second edge agent joins the dev system through its gateway with a
    // join token made with the demo admin key, and gets the same snapshot.
    let (status, token) =
        call("POST", &format!("http://{http}/api/v1/tenants/demo/agent-tokens"), Some(&key), Some(json!({})));
    assert_eq!(status, 200, "{token}");
    let remote_listen = format!("127.0.0.1:{}", free_port());
    let remote_bin =
        std::path::Path::new(env!("CARGO_BIN_EXE_aos-control-plane")).with_file_name("aos-edge-agent");
    assert!(remote_bin.is_file(), "{} is missing: run `cargo build --workspace` first", remote_bin.display());
    let remote = Dev(Command::new(remote_bin)
        .args(["--control-plane", &gateway, "--listen", &remote_listen])
        .args(["--join-token", token["join_token"].as_str().unwrap()])
        .arg("--data-dir")
        .arg(dir.path().join("remote-agent"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    wait_for("the remote agent's snapshot", Duration::from_secs(30), || {
        let (_, health) = call("GET", &format!("http://{remote_listen}/health"), None, None);
        (health["components"]["snapshot"]["version"].as_u64() == Some(suspended)).then_some(())
    });
    drop(remote);
    drop(first);

    let _second = dev(&data, &http, &grpc, &agent, &gateway);
    let again =
        wait_for("the demo policies after restart", Duration::from_secs(30), || policy_ids(&http, &key));
    assert_eq!(again, ids, "a restart keeps the data and does not seed twice");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), key, "the key file is not rewritten");
}
