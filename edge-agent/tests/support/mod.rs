//! Helpers for tests that run the `aos-edge-agent` binary as a process:
//! signed test snapshots, start/kill/restart, HTTP calls, waiting on
//! conditions with deadlines.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aos_core::document::{DocumentFormat, parse_document};
use aos_core::snapshot::{PolicySnapshot, SnapshotSigner};
use serde_json::Value;

pub const TENANT: &str = "acme";

/// The test signing key.
pub fn signer() -> SnapshotSigner {
    SnapshotSigner::from_secret_bytes(&[7u8; 32]).unwrap()
}

pub fn trusted_key_hex() -> String {
    hex::encode(signer().verifying_key().as_bytes())
}

pub fn now_ms() -> u64 {
    aos_edge_agent::ids::now_ms()
}

/// Signs the policies of a YAML document as snapshot `version` for
/// `tenant`, valid until `not_after_ms`.
pub fn signed_snapshot(tenant: &str, version: u64, not_after_ms: u64, yaml: &str) -> Vec<u8> {
    let doc = parse_document(yaml, DocumentFormat::Yaml).unwrap();
    let snapshot =
        PolicySnapshot::new(tenant, version, now_ms(), not_after_ms, doc.policies, vec![], vec![]).unwrap();
    aos_core::sign(&snapshot, &signer()).unwrap()
}

pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap();
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// One agent process with a fixed port and data directory.
pub struct AgentProc {
    pub listen: String,
    pub data_dir: PathBuf,
    pub snapshot_file: Option<PathBuf>,
    extra: Vec<String>,
    child: Option<Child>,
}

impl AgentProc {
    /// Starts an agent for [`TENANT`] under `root`, offering
    /// `snapshot_file` at start if given.
    pub fn start(root: &Path, snapshot_file: Option<PathBuf>) -> AgentProc {
        Self::start_with(root, snapshot_file, &[])
    }

    /// [`AgentProc::start`] with extra flags.
    pub fn start_with(root: &Path, snapshot_file: Option<PathBuf>, extra: &[&str]) -> AgentProc {
        let mut agent = AgentProc {
            listen: format!("127.0.0.1:{}", free_port()),
            data_dir: root.join("agent"),
            snapshot_file,
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        agent.spawn();
        agent.wait_serving();
        agent
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aos-edge-agent"));
        cmd.args(["--tenant", TENANT, "--listen", &self.listen, "--trusted-key", &trusted_key_hex()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra)
            // Tests that check authentication pass `--auth required`.
            .env("AOS_AGENT_AUTH", "off")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.data_dir));
        if let Some(f) = &self.snapshot_file {
            cmd.arg("--snapshot-file").arg(f);
        }
        self.child = Some(cmd.spawn().unwrap());
    }

    fn wait_serving(&mut self) {
        let url = self.url("/health");
        wait_for("the agent to serve", Duration::from_secs(30), || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default();
                panic!("agent exited with {status}: {log}");
            }
            (call("GET", &url, None).0 != 0).then_some(())
        });
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit; returns whether it
    /// exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        child.wait().unwrap().success()
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_serving();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listen, path)
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        call("POST", &self.url(path), Some(body))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        call("GET", &self.url(path), None)
    }

    /// Starts a run; returns its id.
    pub fn start_run(&self, body: Value) -> String {
        let (status, run) = self.post("/api/v1/runs", body);
        assert_eq!(status, 201, "{run}");
        run["run_id"].as_str().unwrap().to_owned()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn log_file(data_dir: &Path) -> Stdio {
    std::fs::create_dir_all(data_dir.parent().unwrap()).unwrap();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.with_extension("log"))
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

/// Calls the API; status 0 means unreachable. A `Value::String` body is
/// sent raw.
pub fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(70)))
        .build()
        .into();
    let result = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("POST", Some(Value::String(raw))) => {
            agent.post(url).header("Content-Type", "application/json").send(raw.as_bytes())
        }
        ("POST", Some(b)) => agent.post(url).send_json(&b),
        ("POST", None) => agent.post(url).send_empty(),
        _ => panic!("unsupported call {method}"),
    };
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            (status, response.body_mut().read_json::<Value>().unwrap_or(Value::Null))
        }
        Err(e) => (0, serde_json::json!({"transport_error": e.to_string()})),
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
        std::thread::sleep(Duration::from_millis(20));
    }
}
