//! `aos-control-plane dev`, the README's run command: one process, a demo
//! tenant with its admin key and the example policies, reachable at once;
//! a second run keeps the data and does not seed twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{call, free_port, wait_for};

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dev(data_dir: &std::path::Path, http: &str, grpc: &str) -> Dev {
    let child = Command::new(env!("CARGO_BIN_EXE_aos-control-plane"))
        .args(["dev", "--http-addr", http, "--grpc-addr", grpc])
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
    let key_file = data.join("demo-admin.key");

    let first = dev(&data, &http, &grpc);
    let key = wait_for("the demo admin key", Duration::from_secs(30), || {
        std::fs::read_to_string(&key_file).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
    });
    let ids = wait_for("the demo policies", Duration::from_secs(30), || {
        policy_ids(&http, &key).filter(|p| p.len() == 8)
    });
    assert!(ids.contains(&"pol-run-tokens".to_owned()), "{ids:?}");
    assert!(data.join("signing.key").exists() && data.join("operator.key").exists());
    drop(first);

    let _second = dev(&data, &http, &grpc);
    let again =
        wait_for("the demo policies after restart", Duration::from_secs(30), || policy_ids(&http, &key));
    assert_eq!(again, ids, "a restart keeps the data and does not seed twice");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), key, "the key file is not rewritten");
}
