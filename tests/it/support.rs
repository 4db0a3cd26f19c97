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
