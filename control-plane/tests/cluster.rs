//! A real three-node cluster: three `aos-control-plane` OS processes on
//! loopback talking gRPC. Elect, grow membership through the leader, write
//! through a follower (forwarded to the leader), read back linearizably from
//! every node, and check the bad paths of the admin API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct NodeInfo {
    id: u64,
    http: String,
    grpc: String,
    _proc: Proc,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(id: u64, dir: &Path, init: bool) -> NodeInfo {
    let http = format!("127.0.0.1:{}", free_port());
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aos-control-plane"));
    cmd.args(["start", "--node-id", &id.to_string(), "--grpc-addr", &grpc, "--http-addr", &http])
        .arg("--data-dir")
        .arg(dir.join(format!("node{id}")))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if init {
        cmd.arg("--init");
    }
    let child = cmd.spawn().unwrap();
    NodeInfo { id, http, grpc, _proc: Proc { child } }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn call(method: &str, url: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let agent = agent();
    let auth = key.map(|k| format!("Bearer {k}"));
    let result = match (method, body) {
        ("GET", _) => {
            let mut req = agent.get(url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        }
        ("POST", Some(b)) => {
            let mut req = agent.post(url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.send_json(&b)
        }
        ("POST_RAW", Some(Value::String(raw))) => {
            let mut req = agent.post(url).header("Content-Type", "application/json");
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.send(raw.as_bytes())
        }
        _ => panic!("unsupported call"),
    };
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let body = response.body_mut().read_json::<Value>().unwrap_or(Value::Null);
            (status, body)
        }
        Err(e) => (0, json!({"transport_error": e.to_string()})),
    }
}

/// Polls `check` until it returns `Some` or the deadline passes.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_key(path: &PathBuf) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

#[test]
fn three_node_cluster_replicates_writes_from_any_node() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = start(1, dir.path(), true);
    let key_path = dir.path().join("node1/operator.key");
    let key = wait_for("the operator key", Duration::from_secs(30), || read_key(&key_path));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "operator key must be private");
    }

    let n2 = start(2, dir.path(), false);
    let n3 = start(3, dir.path(), false);
    for n in [&n2, &n3] {
        wait_for("a node to answer HTTP", Duration::from_secs(30), || {
            let (status, _) = call("GET", &format!("http://{}/health", n.http), None, None);
            (status != 0).then_some(())
        });
        let (status, body) = call(
            "POST",
            &format!("http://{}/api/v1/cluster/nodes", n1.http),
            Some(&key),
            Some(json!({"node_id": n.id, "grpc_addr": n.grpc})),
        );
        assert_eq!(status, 200, "add node {}: {body}", n.id);
    }

    // Every node sees a leader and three voters.
    for n in [&n1, &n2, &n3] {
        wait_for("three voters and a leader on every node", Duration::from_secs(30), || {
            let (status, body) = call("GET", &format!("http://{}/api/v1/cluster", n.http), Some(&key), None);
            let voters =
                body["nodes"].as_array().map_or(0, |a| a.iter().filter(|n| n["voter"] == true).count());
            (status == 200 && voters == 3 && !body["leader"].is_null()).then_some(())
        });
    }
    let (_, status_body) = call("GET", &format!("http://{}/api/v1/cluster", n1.http), Some(&key), None);
    let leader = status_body["leader"].as_u64().unwrap();
    let follower = [&n1, &n2, &n3].into_iter().find(|n| n.id != leader).unwrap();

    // A write through a follower is forwarded to the leader and committed.
    let (status, body) = call(
        "POST",
        &format!("http://{}/api/v1/tenants", follower.http),
        Some(&key),
        Some(json!({"tenant_id": "acme", "name": "Acme Corp"})),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["log_index"].as_u64().unwrap() > 0);

    // Linearizable reads on every node see it immediately after the ack.
    for n in [&n1, &n2, &n3] {
        let (status, body) = call("GET", &format!("http://{}/api/v1/tenants", n.http), Some(&key), None);
        assert_eq!(status, 200, "{body}");
        let ids: Vec<&str> =
            body["tenants"].as_array().unwrap().iter().filter_map(|t| t["tenant_id"].as_str()).collect();
        assert_eq!(ids, ["acme"], "node {}", n.id);
    }

    // Bad paths: each with its documented status and a JSON error body.
    let (status, body) = call("GET", &format!("http://{}/api/v1/tenants", n2.http), None, None);
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("UNAUTHENTICATED")));
    let (status, body) =
        call("GET", &format!("http://{}/api/v1/tenants", n2.http), Some("aos_op_wrong"), None);
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("UNAUTHENTICATED")));
    let (status, body) = call(
        "POST_RAW",
        &format!("http://{}/api/v1/tenants", n2.http),
        Some(&key),
        Some(Value::String("{\"tenant_id\": 5".into())),
    );
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("INVALID_INPUT")), "{body}");
    let (status, body) = call(
        "POST",
        &format!("http://{}/api/v1/tenants", n3.http),
        Some(&key),
        Some(json!({"tenant_id": "acme", "name": "again"})),
    );
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("CONFLICT")), "{body}");

    // The ledger holds the bootstrap key, the tenant and the rejected
    // duplicate, in a hash chain.
    let (status, body) = call("GET", &format!("http://{}/api/v1/audit", n3.http), Some(&key), None);
    assert_eq!(status, 200, "{body}");
    let entries = body["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["API_KEY_CREATED", "TENANT_CREATED", "COMMAND_REJECTED"]);
    assert_eq!(entries[2]["outcome"], "REJECTED");
    assert_eq!(entries[1]["prev_hash"], entries[0]["hash"]);
    assert_eq!(entries[2]["prev_hash"], entries[1]["hash"]);
    let text = serde_json::to_string(&body).unwrap();
    assert!(!text.contains(&key), "the operator secret must never appear in the ledger");
}
