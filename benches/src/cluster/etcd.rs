//! A 3-member etcd cluster on loopback, written through etcd's HTTP/JSON
//! gRPC gateway (`POST /v3/kv/put`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Result;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

use super::{ChildGuard, agent, free_port, get_json, log_file, log_tail, post_json, wait_for};

/// How to get etcd when it is not on `PATH`.
pub const INSTALL_HINT: &str = "apt-get install -y etcd-server etcd-client";

/// `etcd` on `PATH`, if any.
pub fn find_etcd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("etcd")).find(|p| p.is_file())
}

/// Three etcd members; killed before their temporary directory is removed.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<ChildGuard>,
    pub client_urls: Vec<String>,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts the members and waits until each reports healthy (which
    /// requires a leader).
    pub fn start(bin: &Path) -> Result<EtcdCluster> {
        let dir = tempfile::Builder::new().prefix("etcd-cluster-bench").tempdir()?;
        let mut client_urls = Vec::new();
        let mut peer_urls = Vec::new();
        for _ in 0..3 {
            client_urls.push(format!("http://127.0.0.1:{}", free_port()?));
            peer_urls.push(format!("http://127.0.0.1:{}", free_port()?));
        }
        let initial_cluster: Vec<String> =
            peer_urls.iter().enumerate().map(|(i, p)| format!("m{}={p}", i + 1)).collect();
        let initial_cluster = initial_cluster.join(",");
        let mut cluster = EtcdCluster { members: Vec::new(), client_urls, dir };
        for (i, peer_url) in peer_urls.iter().enumerate() {
            let name = format!("m{}", i + 1);
            let data_dir = cluster.dir.path().join(&name);
            let mut cmd = Command::new(bin);
            cmd.args(["--name", &name])
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--listen-client-urls", &cluster.client_urls[i]])
                .args(["--advertise-client-urls", &cluster.client_urls[i]])
                .args(["--listen-peer-urls", peer_url])
                .args(["--initial-advertise-peer-urls", peer_url])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-token", "aos-cluster-bench"])
                .args(["--initial-cluster-state", "new"])
                .args(["--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file(&data_dir.with_extension("log")));
            cluster.members.push(ChildGuard::spawn(&mut cmd)?);
        }
        let http = agent(Duration::from_secs(2));
        for i in 0..3 {
            let url = format!("{}/health", cluster.client_urls[i]);
            let log = cluster.dir.path().join(format!("m{}.log", i + 1));
            let members = &mut cluster.members;
            wait_for("etcd to report healthy", Duration::from_secs(60), || {
                if let Some(status) = members[i].exited() {
                    anyhow::bail!("etcd member {} exited with {status}:\n{}", i + 1, log_tail(&log, 4000));
                }
                Ok(get_json(&http, &url, None).filter(|b| b["health"] == "true").map(|_| ()))
            })?;
        }
        Ok(cluster)
    }

    /// The put URL of every member, in member order.
    pub fn write_urls(&self) -> Vec<String> {
        self.client_urls.iter().map(|u| format!("{u}/v3/kv/put")).collect()
    }
}

/// One write: put `key` = `value`. True when acknowledged (HTTP 200 with a
/// header, i.e. committed).
pub fn put(agent: &ureq::Agent, url: &str, key: &str, value: &str) -> bool {
    let body = json!({"key": B64.encode(key), "value": B64.encode(value)});
    matches!(post_json(agent, url, None, &body), Ok((200, text)) if text.contains("\"header\""))
}
