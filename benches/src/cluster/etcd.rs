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

/// The body of a put (for [`super::load::run`]; see [`put_acked`]).
pub fn put_body(key: &str, value: &str) -> bytes::Bytes {
    bytes::Bytes::from(json!({"key": B64.encode(key), "value": B64.encode(value)}).to_string())
}

/// Whether a put's response acknowledges it (HTTP 200 with a header, i.e.
/// committed).
pub fn put_acked(status: u16, body: &[u8]) -> bool {
    status == 200 && body.windows(8).any(|w| w == b"\"header\"")
}

/// One write: put `key` = `value`. True when acknowledged (HTTP 200 with a
/// header, i.e. committed).
pub fn put(agent: &ureq::Agent, url: &str, key: &str, value: &str) -> bool {
    let body = json!({"key": B64.encode(key), "value": B64.encode(value)});
    matches!(post_json(agent, url, None, &body), Ok((status, text)) if put_acked(status, text.as_bytes()))
}

/// Watches `key` on the member at `client_url` through the JSON gateway's
/// streaming `POST /v3/watch`, on its own thread: every put's value (parsed
/// as a number) is sent on `tx` with the instant it arrived. Returns once
/// the watch is created, so a put made after it is seen.
pub fn spawn_watcher(
    client_url: &str,
    key: &str,
    watcher: usize,
    tx: std::sync::mpsc::Sender<(usize, u64, std::time::Instant)>,
) -> Result<std::thread::JoinHandle<()>> {
    use std::io::BufRead as _;
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let body = json!({"create_request": {"key": B64.encode(key)}});
    let response = http.post(&format!("{client_url}/v3/watch")).send_json(&body)?;
    if response.status() != 200 {
        anyhow::bail!("etcd watch: HTTP {}", response.status());
    }
    let mut lines = std::io::BufReader::new(response.into_body().into_reader()).lines();
    // The first message confirms the watch.
    let first = lines.next().ok_or_else(|| anyhow::anyhow!("etcd closed the watch"))??;
    if !first.contains("\"created\":true") {
        anyhow::bail!("etcd watch not created: {first}");
    }
    Ok(std::thread::spawn(move || {
        for line in lines {
            let Ok(line) = line else { return };
            let at = std::time::Instant::now();
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            let Some(events) = message["result"]["events"].as_array() else { continue };
            for event in events {
                let value = event["kv"]["value"]
                    .as_str()
                    .and_then(|v| B64.decode(v).ok())
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if let Some(value) = value
                    && tx.send((watcher, value, at)).is_err()
                {
                    return;
                }
            }
        }
    }))
}
