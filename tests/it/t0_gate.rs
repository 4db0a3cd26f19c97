//! `deploy/preflight/t0-gate.sh` (seed §7.14, issue 5) against the real
//! dev-mode system: it passes when every SPINE component is healthy and
//! fails, naming the check, when one is not.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::agent_sync::call;
use crate::support::{NodeGuard, binary, free_port, repo, wait_for};

#[test]
fn the_t0_gate_passes_on_the_dev_system_and_names_a_broken_component() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let ports: Vec<String> = (0..4).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let (http, grpc, agent, gateway) = (&ports[0], &ports[1], &ports[2], &ports[3]);
    let child = Command::new(binary("aos-control-plane"))
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
        .arg(&data)
        .env_remove("AOS_SIGNING_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _dev = NodeGuard { child };
    wait_for("the dev agent's snapshot", Duration::from_secs(60), || {
        let (_, health) = call("GET", &format!("http://{agent}/health"), None);
        (health["components"]["snapshot"]["status"] == "ok").then_some(())
    });
    let gate = |agent_url: &str| {
        Command::new(repo().join("deploy/preflight/t0-gate.sh"))
            .args(["--control-plane", &format!("http://{http}"), "--agent", agent_url])
            .arg("--key-file")
            .arg(data.join("demo-admin.key"))
            .output()
            .unwrap()
    };
    let passed = gate(&format!("http://{agent}"));
    let out = String::from_utf8_lossy(&passed.stdout);
    assert!(passed.status.success(), "{out}");
    assert_eq!(out.matches("PASS ").count(), 11, "{out}");
    assert!(out.contains("T0 gate passed") && out.contains("default fail_closed"), "{out}");

    let dead = format!("http://127.0.0.1:{}", free_port());
    let failed = gate(&dead);
    let out = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL  edge agent health") && out.contains("FAIL  boot guard validated"), "{out}");
    assert!(out.contains("PASS  control plane health"), "only the broken parts fail: {out}");
    assert!(out.contains("PASS  control plane spine checks"), "{out}");
    assert!(out.contains("T0 gate FAILED: "), "{out}");
}
