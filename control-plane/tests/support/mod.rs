//! Shared helpers for tests that run real `aos-control-plane` processes on
//! loopback: start/kill/restart nodes, call the REST API, wait on
//! conditions with deadlines.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One node process with fixed ports and data directory, restartable.
pub struct NodeProc {
    pub id: u64,
    pub http: String,
    pub grpc: String,
    /// The edge-agent gateway (mutual TLS).
    pub agents: String,
    pub data_dir: PathBuf,
    /// `AOS_SIGNING_KEY` for the next (re)start: one or more hex keys.
    pub signing_keys: String,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl NodeProc {
    /// Starts node `id` under `root` on fresh loopback ports.
    pub fn start(id: u64, root: &Path, init: bool) -> NodeProc {
        Self::start_with(id, root, init, &[])
    }

    /// [`NodeProc::start`] with extra command-line flags.
    pub fn start_with(id: u64, root: &Path, init: bool, extra_args: &[&str]) -> NodeProc {
        let mut node = NodeProc {
            id,
            http: format!("127.0.0.1:{}", free_port()),
            grpc: format!("127.0.0.1:{}", free_port()),
            agents: format!("127.0.0.1:{}", free_port()),
            data_dir: root.join(format!("node{id}")),
            signing_keys: TEST_SIGNING_KEY.to_owned(),
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        node.spawn(init);
        node
    }

    fn spawn(&mut self, init: bool) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aos-control-plane"));
        cmd.args([
            "start",
            "--node-id",
            &self.id.to_string(),
            "--grpc-addr",
            &self.grpc,
            "--http-addr",
            &self.http,
            "--agent-addr",
            &self.agents,
        ])
        .arg("--data-dir")
        .arg(&self.data_dir)
        .args(&self.extra_args)
        // Every node of a cluster holds the same snapshot signing key.
        .env("AOS_SIGNING_KEY", &self.signing_keys)
        // …and the same cluster CA.
        .env("AOS_CA_KEY", TEST_CA_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log_file(&self.data_dir));
        if init {
            cmd.arg("--init");
        }
        self.child = Some(cmd.spawn().expect("spawn aos-control-plane"));
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same ports and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn(false);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nobody listens on now and that this test process has not
/// handed out before (the OS may offer a just-released port again, which
/// would make two nodes collide).
/// The signing key the test clusters share (hex).
pub const TEST_SIGNING_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// The cluster CA key the test clusters share (hex).
pub const TEST_CA_KEY: &str = "c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4";

/// Applies a YAML policy document through `node`'s REST API.
pub fn apply_yaml(node: &NodeProc, key: &str, tenant: &str, yaml: &str) {
    let mut response = agent()
        .post(&node.url(&format!("/api/v1/tenants/{tenant}/policies")))
        .header("Authorization", &format!("Bearer {key}"))
        .header("Content-Type", "application/yaml")
        .send(yaml.as_bytes())
        .expect("policy apply request");
    let status = response.status().as_u16();
    let body: Value = response.body_mut().read_json().unwrap_or(Value::Null);
    assert_eq!(status, 200, "{body}");
}

/// Node stderr goes next to its data directory, so a failing test can be
/// diagnosed from the temp dir.
fn log_file(data_dir: &Path) -> Stdio {
    let path = data_dir.with_extension("log");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

/// Panics with the node's log when its process has exited.
pub fn assert_running(node: &mut NodeProc) {
    if let Some(child) = node.child.as_mut()
        && let Ok(Some(status)) = child.try_wait()
    {
        let log = std::fs::read_to_string(node.data_dir.with_extension("log")).unwrap_or_default();
        panic!("node {} exited with {status}:\n{log}", node.id);
    }
}

pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().expect("port registry");
    loop {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Calls the API; status 0 means the node could not be reached.
pub fn call(method: &str, url: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    call_with(method, url, key, body, None)
}

/// [`call`] with an `Idempotency-Key`.
pub fn call_with(
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<Value>,
    idempotency_key: Option<&str>,
) -> (u16, Value) {
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
        ("POST", Some(Value::String(raw))) => {
            let mut req = agent.post(url).header("Content-Type", "application/json");
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            if let Some(k) = idempotency_key {
                req = req.header("Idempotency-Key", k);
            }
            req.send(raw.as_bytes())
        }
        ("POST", Some(b)) => {
            let mut req = agent.post(url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            if let Some(k) = idempotency_key {
                req = req.header("Idempotency-Key", k);
            }
            req.send_json(&b)
        }
        _ => panic!("unsupported call {method}"),
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
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Starts a three-node cluster: node 1 initialises, 2 and 3 join. Returns
/// the nodes and the operator key.
pub fn three_node_cluster(root: &Path) -> (Vec<NodeProc>, String) {
    three_node_cluster_with(root, &[])
}

/// [`three_node_cluster`] with extra flags for every node.
pub fn three_node_cluster_with(root: &Path, extra_args: &[&str]) -> (Vec<NodeProc>, String) {
    cluster_of(root, 3, extra_args)
}

/// A cluster of `size` voters (node 1 initialised, the others added
/// through it), every node with `extra_args`; and the operator key.
pub fn cluster_of(root: &Path, size: u64, extra_args: &[&str]) -> (Vec<NodeProc>, String) {
    let n1 = NodeProc::start_with(1, root, true, extra_args);
    let key = operator_key(&n1);
    let mut nodes = vec![n1];
    for id in 2..=size {
        let mut n = NodeProc::start_with(id, root, false, extra_args);
        wait_for("a node to answer HTTP", Duration::from_secs(30), || {
            assert_running(&mut n);
            (call("GET", &n.url("/health"), None, None).0 != 0).then_some(())
        });
        let (status, body) = call(
            "POST",
            &nodes[0].url("/api/v1/cluster/nodes"),
            Some(&key),
            Some(json!({"node_id": n.id, "grpc_addr": n.grpc})),
        );
        assert_eq!(status, 200, "add node {}: {body}", n.id);
        nodes.push(n);
    }
    let size = usize::try_from(size).unwrap();
    for n in &nodes {
        wait_for("every voter and a leader", Duration::from_secs(30), || {
            let (status, body) = call("GET", &n.url("/api/v1/cluster"), Some(&key), None);
            let voters =
                body["nodes"].as_array().map_or(0, |a| a.iter().filter(|n| n["voter"] == true).count());
            (status == 200 && voters == size && !body["leader"].is_null()).then_some(())
        });
    }
    (nodes, key)
}

/// The leader's id as node `n` reports it.
pub fn leader_of(n: &NodeProc, key: &str) -> Option<u64> {
    let (status, body) = call("GET", &n.url("/api/v1/cluster"), Some(key), None);
    if status == 200 { body["leader"].as_u64() } else { None }
}

/// Waits until every node in `nodes` names the same leader, and returns
/// it: a single node's view can lag an election it has not heard of yet.
pub fn agreed_leader(nodes: &[NodeProc], key: &str, timeout: Duration) -> u64 {
    wait_for("every node to name one leader", timeout, || {
        let first = leader_of(nodes.first()?, key)?;
        nodes[1..].iter().all(|n| leader_of(n, key) == Some(first)).then_some(first)
    })
}

/// Tenant ids as node `n` serves them at `consistency`.
pub fn tenant_ids(n: &NodeProc, key: &str, consistency: &str) -> Option<Vec<String>> {
    let (status, body) =
        call("GET", &n.url(&format!("/api/v1/tenants?consistency={consistency}")), Some(key), None);
    if status != 200 {
        return None;
    }
    Some(
        body["tenants"]
            .as_array()?
            .iter()
            .filter_map(|t| t["tenant_id"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// GETs raw bytes; returns status, body and the `x-aos-snapshot-version`
/// header.
pub fn get_bytes(url: &str, key: &str) -> (u16, Vec<u8>, Option<String>) {
    match agent().get(url).header("Authorization", &format!("Bearer {key}")).call() {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let version = response
                .headers()
                .get("x-aos-snapshot-version")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response.body_mut().read_to_vec().unwrap_or_default();
            (status, body, version)
        }
        Err(_) => (0, Vec::new(), None),
    }
}

/// Creates a tenant and a tenant admin key; returns the key's secret.
pub fn tenant_with_admin(node: &NodeProc, operator_key: &str, tenant: &str) -> String {
    let (status, body) = call(
        "POST",
        &node.url("/api/v1/tenants"),
        Some(operator_key),
        Some(json!({"tenant_id": tenant, "name": tenant})),
    );
    assert_eq!(status, 200, "{body}");
    tenant_admin_key(node, operator_key, tenant)
}

/// Creates a tenant-scoped admin key for an existing tenant; returns its
/// secret.
pub fn tenant_admin_key(node: &NodeProc, operator_key: &str, tenant: &str) -> String {
    let (status, body) = call(
        "POST",
        &node.url(&format!("/api/v1/tenants/{tenant}/keys")),
        Some(operator_key),
        Some(json!({"name": "admin", "role": "admin"})),
    );
    assert_eq!(status, 200, "{body}");
    body["secret"].as_str().expect("secret in the create response").to_owned()
}

/// Reads the operator key `--init` wrote for node `n`.
pub fn operator_key(n: &NodeProc) -> String {
    let key_path = n.data_dir.join("operator.key");
    wait_for("the operator key", Duration::from_secs(30), || {
        std::fs::read_to_string(&key_path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
    })
}

/// Waits until node `n` answers `/health` with 200 (it sees a leader).
pub fn wait_healthy(n: &mut NodeProc) {
    wait_for("a healthy node", Duration::from_secs(30), || {
        assert_running(n);
        (call("GET", &n.url("/health"), None, None).0 == 200).then_some(())
    });
}
