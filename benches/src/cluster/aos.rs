//! A 3-node AOS control-plane cluster of real `aos-control-plane` processes
//! on loopback, the way `control-plane/tests/support` starts them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::{ChildGuard, agent, free_port, get_json, log_file, log_tail, post_json, wait_for};

/// The snapshot signing key every node of the cluster holds (hex).
pub const SIGNING_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
/// The cluster CA key every node holds (hex).
pub const CA_KEY: &str = "c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4";

const STARTUP: Duration = Duration::from_secs(60);

/// One node process with fixed ports and data directory, restartable.
#[derive(Debug)]
pub struct AosNode {
    pub id: u64,
    pub http: String,
    pub grpc: String,
    /// Edge-agent gateway (mutual TLS).
    pub agents: String,
    pub data_dir: PathBuf,
    bin: PathBuf,
    proc: Option<ChildGuard>,
}

impl AosNode {
    fn start(bin: &Path, id: u64, root: &Path, init: bool) -> Result<AosNode> {
        let mut node = AosNode {
            id,
            http: format!("127.0.0.1:{}", free_port()?),
            grpc: format!("127.0.0.1:{}", free_port()?),
            agents: format!("127.0.0.1:{}", free_port()?),
            data_dir: root.join(format!("node{id}")),
            bin: bin.to_owned(),
            proc: None,
        };
        node.spawn(init)?;
        Ok(node)
    }

    fn spawn(&mut self, init: bool) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["start", "--node-id", &self.id.to_string(), "--grpc-addr", &self.grpc])
            .args(["--http-addr", &self.http, "--agent-addr", &self.agents])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("AOS_SIGNING_KEY", SIGNING_KEY)
            .env("AOS_CA_KEY", CA_KEY)
            .env("RUST_LOG", std::env::var("AOS_BENCH_NODE_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log_file(&self.log_path()));
        if init {
            cmd.arg("--init");
        }
        self.proc = Some(ChildGuard::spawn(&mut cmd)?);
        Ok(())
    }

    /// The node's log: next to its data directory, or in
    /// `$AOS_BENCH_LOG_DIR` when set (kept after the run, to match a
    /// bench's slow moments with what the nodes did).
    fn log_path(&self) -> PathBuf {
        match std::env::var_os("AOS_BENCH_LOG_DIR") {
            Some(dir) => Path::new(&dir).join(format!("node{}.log", self.id)),
            None => self.data_dir.with_extension("log"),
        }
    }

    /// CPU time (user + system) the node's process has used since it
    /// started; `None` when it is not running or not on Linux.
    pub fn cpu_time(&self) -> Option<Duration> {
        super::process_cpu_time(self.proc.as_ref()?.pid()?)
    }

    /// The last `max` bytes of the node's log.
    pub fn log_tail(&self, max: usize) -> String {
        log_tail(&self.log_path(), max)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts the process again on the same ports and data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn(false)
    }

    /// An error carrying the node's log when its process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.proc.as_mut().and_then(ChildGuard::exited) {
            bail!("aos node {} exited with {status}:\n{}", self.id, log_tail(&self.log_path(), 4000));
        }
        Ok(())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
}

/// Three nodes (node 1 initialised, 2 and 3 added) and the operator key.
/// Nodes are dropped (killed) before the temporary directory is removed.
#[derive(Debug)]
pub struct AosCluster {
    pub nodes: Vec<AosNode>,
    pub key: String,
    dir: tempfile::TempDir,
}

impl AosCluster {
    /// Starts the cluster and waits until all three nodes report three
    /// voters and the same leader.
    pub fn start(bin: &Path) -> Result<AosCluster> {
        let dir = tempfile::Builder::new().prefix("aos-cluster-bench").tempdir()?;
        let root = dir.path().to_owned();
        let mut n1 = AosNode::start(bin, 1, &root, true)?;
        let key_path = n1.data_dir.join("operator.key");
        let key = wait_for("the operator key", STARTUP, || {
            n1.check_running()?;
            Ok(std::fs::read_to_string(&key_path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()))
        })?;
        let n2 = AosNode::start(bin, 2, &root, false)?;
        let n3 = AosNode::start(bin, 3, &root, false)?;
        let mut cluster = AosCluster { nodes: vec![n1, n2, n3], key, dir };
        let http = agent(Duration::from_secs(10));
        for i in 1..3 {
            wait_for("a node to answer HTTP", STARTUP, || {
                cluster.nodes[i].check_running()?;
                Ok(http.get(&cluster.nodes[i].url("/health")).call().ok().map(|_| ()))
            })?;
            let n = &cluster.nodes[i];
            let body = json!({"node_id": n.id, "grpc_addr": n.grpc});
            let (status, text) =
                post_json(&http, &cluster.nodes[0].url("/api/v1/cluster/nodes"), Some(&cluster.key), &body)
                    .with_context(|| format!("add node {}", n.id))?;
            if status != 200 {
                bail!("add node {}: HTTP {status}: {text}", n.id);
            }
        }
        cluster.wait_stable(STARTUP)?;
        Ok(cluster)
    }

    /// Where the nodes' data and logs are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until every running node reports three voters and the same
    /// leader; returns the leader's id.
    pub fn wait_stable(&mut self, timeout: Duration) -> Result<u64> {
        let http = agent(Duration::from_secs(2));
        let key = self.key.clone();
        let nodes = &mut self.nodes;
        wait_for("three voters and one leader on every node", timeout, || {
            let mut leader = None;
            for n in nodes.iter_mut() {
                n.check_running()?;
                let Some(body) = get_json(&http, &n.url("/api/v1/cluster"), Some(&key)) else {
                    return Ok(None);
                };
                let voters =
                    body["nodes"].as_array().map_or(0, |a| a.iter().filter(|n| n["voter"] == true).count());
                let Some(l) = body["leader"].as_u64() else { return Ok(None) };
                if voters != 3 || leader.is_some_and(|prev| prev != l) {
                    return Ok(None);
                }
                leader = Some(l);
            }
            Ok(leader)
        })
    }

    /// The tenant-create URL of every node, in node order.
    pub fn write_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url("/api/v1/tenants")).collect()
    }
}

/// The body of a create-tenant write (for [`super::load::run`], which
/// counts HTTP 200 as acknowledged).
pub fn create_tenant_body(tenant_id: &str, name: &str) -> bytes::Bytes {
    bytes::Bytes::from(json!({"tenant_id": tenant_id, "name": name}).to_string())
}

/// One write: create tenant `tenant_id` with `name`. True when acknowledged
/// (HTTP 200, i.e. committed).
pub fn create_tenant(agent: &ureq::Agent, url: &str, key: &str, tenant_id: &str, name: &str) -> bool {
    let body = json!({"tenant_id": tenant_id, "name": name});
    matches!(post_json(agent, url, Some(key), &body), Ok((200, _)))
}

/// `aos-control-plane` next to the running benchmark binary (the same
/// target directory), or an error saying how to build it.
pub fn control_plane_bin() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the benchmark binary has no directory")?;
    let bin = dir.join(format!("aos-control-plane{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        bail!(
            "{} not found; build it into the same target directory first:\n  \
             cargo build --release -p aos-control-plane",
            bin.display()
        );
    }
    Ok(bin)
}
