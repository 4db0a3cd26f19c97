//! Helpers for tests that run the workspace's binaries as real processes:
//! find the built binaries, start a node, drive `aosctl`.

#![allow(dead_code, reason = "each test module uses a different subset")]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace's `target/<profile>` directory, next to this test binary.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // …/target/debug/deps/it-xxxx → …/target/debug
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "`{}` is missing: run `cargo build --workspace` first (cargo test --workspace builds it)",
        path.display()
    );
    path
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the node when the test ends, pass or fail.
pub struct NodeGuard {
    pub child: Child,
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Ctl {
    pub endpoints: Vec<String>,
}

impl Ctl {
    pub fn run(&self, token: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(binary("aosctl"));
        for e in &self.endpoints {
            cmd.arg("--endpoint").arg(e);
        }
        cmd.args(args)
            .current_dir(repo())
            .env_remove("AOS_ENDPOINT")
            .env("AOS_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn ok(&self, token: &str, args: &[&str]) -> String {
        let o = self.run(token, args);
        assert!(o.status.success(), "aosctl {args:?} failed: {}{}", out(&o), err(&o));
        out(&o)
    }
}

pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn wait_for_key(path: &Path, node: &mut NodeGuard, log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let key = text.trim();
            if key.starts_with("aos_op_") && key.len() > 20 {
                return key.to_owned();
            }
        }
        if let Ok(Some(status)) = node.child.try_wait() {
            panic!("the node exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(
            Instant::now() < deadline,
            "no operator key after 30 s: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A single-node cluster started with `--init` under `root/node1`.
pub struct SingleNode {
    pub guard: NodeGuard,
    pub http: String,
    pub grpc: String,
    pub data: PathBuf,
    pub log: PathBuf,
    /// The operator key `--init` wrote.
    pub operator_key: String,
    extra_args: Vec<String>,
}

impl SingleNode {
    /// Starts the node again (after a kill) on the same ports and data.
    pub fn restart(&mut self) {
        let _ = self.guard.child.kill();
        let _ = self.guard.child.wait();
        self.guard =
            NodeGuard { child: spawn_node(&self.data, &self.log, &self.http, &self.grpc, &self.extra_args) };
    }
}

fn spawn_node(data: &Path, log: &Path, http: &str, grpc: &str, extra_args: &[String]) -> Child {
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(binary("aos-control-plane"))
        .args(["start", "--node-id", "1", "--init", "--data-dir"])
        .arg(data)
        .args(["--grpc-addr", grpc, "--http-addr", http])
        .args(extra_args)
        .env("AOS_SIGNING_KEY", "5a".repeat(32)) // 32 fixed bytes, tests only
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap()
}

/// Starts `aos-control-plane start --init` as a process and waits for its
/// operator key.
pub fn start_single_node(root: &Path, extra_args: &[&str]) -> SingleNode {
    let data = root.join("node1");
    let log = root.join("node1.log");
    let http = format!("127.0.0.1:{}", free_port());
    let grpc = format!("127.0.0.1:{}", free_port());
    let extra_args: Vec<String> = extra_args.iter().map(|a| (*a).to_owned()).collect();
    let child = spawn_node(&data, &log, &http, &grpc, &extra_args);
    let mut guard = NodeGuard { child };
    let operator_key = wait_for_key(&data.join("operator.key"), &mut guard, &log);
    SingleNode { guard, http, grpc, data, log, operator_key, extra_args }
}

/// One node of a [`Cluster`].
pub struct ClusterNode {
    pub id: u64,
    pub http: String,
    pub grpc: String,
    /// The edge-agent gateway.
    pub gateway: String,
    pub data: PathBuf,
    pub log: PathBuf,
    guard: Option<NodeGuard>,
}

impl ClusterNode {
    fn spawn(&mut self, init: bool) {
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = Command::new(binary("aos-control-plane"));
        cmd.args(["start", "--node-id", &self.id.to_string(), "--data-dir"])
            .arg(&self.data)
            .args(["--grpc-addr", &self.grpc, "--http-addr", &self.http, "--agent-addr", &self.gateway])
            // Every node holds the same signing key and cluster CA (tests only).
            .env("AOS_SIGNING_KEY", "5a".repeat(32))
            .env("AOS_CA_KEY", "c4".repeat(32))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        if init {
            cmd.arg("--init");
        }
        self.guard = Some(NodeGuard { child: cmd.spawn().unwrap() });
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.guard = None;
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn(false);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

/// Three control-plane nodes (node 1 initialised, 2 and 3 added through
/// it), each with an edge-agent gateway.
pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
    pub operator_key: String,
}

impl Cluster {
    pub fn start(root: &Path) -> Cluster {
        let mut nodes: Vec<ClusterNode> = (1..=3)
            .map(|id| ClusterNode {
                id,
                http: format!("127.0.0.1:{}", free_port()),
                grpc: format!("127.0.0.1:{}", free_port()),
                gateway: format!("127.0.0.1:{}", free_port()),
                data: root.join(format!("node{id}")),
                log: root.join(format!("node{id}.log")),
                guard: None,
            })
            .collect();
        nodes[0].spawn(true);
        let operator_key = {
            let first = &mut nodes[0];
            let log = first.log.clone();
            let guard = first.guard.as_mut().unwrap();
            wait_for_key(&first.data.join("operator.key"), guard, &log)
        };
        for n in nodes.iter_mut().skip(1) {
            n.spawn(false);
        }
        let cluster = Cluster { nodes, operator_key };
        for n in &cluster.nodes[1..] {
            let body = serde_json::json!({"node_id": n.id, "grpc_addr": n.grpc});
            wait_for("a node added", Duration::from_secs(60), || {
                let (status, _) = crate::agent_sync::call_with_key(
                    "POST",
                    &cluster.nodes[0].url("/api/v1/cluster/nodes"),
                    Some(&cluster.operator_key),
                    Some(body.clone()),
                );
                (status == 200).then_some(())
            });
        }
        cluster.wait_healthy();
        cluster
    }

    /// Waits until every running node answers `/health` with 200.
    pub fn wait_healthy(&self) {
        for n in &self.nodes {
            if n.guard.is_none() {
                continue;
            }
            wait_for("a healthy node", Duration::from_secs(60), || {
                (crate::agent_sync::call("GET", &n.url("/health"), None).0 == 200).then_some(())
            });
        }
    }

    /// The leader's id, as node `via` sees it.
    pub fn leader(&self, via: usize) -> u64 {
        wait_for("a leader", Duration::from_secs(30), || {
            let (_, body) = crate::agent_sync::call_with_key(
                "GET",
                &self.nodes[via].url("/api/v1/cluster"),
                Some(&self.operator_key),
                None,
            );
            body["leader"].as_u64()
        })
    }

    pub fn ctl(&self) -> Ctl {
        Ctl { endpoints: self.nodes.iter().map(|n| format!("http://{}", n.http)).collect() }
    }
}

/// Waits until `check` returns `Some`, panicking with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// GETs a text body (e.g. `/metrics`); empty when unreachable.
pub fn get_text(url: &str) -> String {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
    agent.get(url).call().ok().and_then(|mut r| r.body_mut().read_to_string().ok()).unwrap_or_default()
}
