//! `aosctl` against a real single-node control plane: both binaries run as
//! separate processes on loopback, the first `--endpoint` is dead so every
//! command proves failover to the second.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The workspace's `target/<profile>` directory, next to this test binary.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // …/target/debug/deps/it-xxxx → …/target/debug
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "`{}` is missing: run `cargo build --workspace` first (cargo test --workspace builds it)",
        path.display()
    );
    path
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the node when the test ends, pass or fail.
struct NodeGuard {
    child: Child,
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Ctl {
    endpoints: Vec<String>,
}

impl Ctl {
    fn run(&self, token: &str, args: &[&str]) -> Output {
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

    fn ok(&self, token: &str, args: &[&str]) -> String {
        let o = self.run(token, args);
        assert!(o.status.success(), "aosctl {args:?} failed: {}{}", out(&o), err(&o));
        out(&o)
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn wait_for_key(path: &Path, node: &mut NodeGuard, log: &Path) -> String {
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

#[test]
fn aosctl_operates_a_real_cluster_with_failover() {
    let aos_control_plane = binary("aos-control-plane");
    binary("aosctl");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node1");
    let log = dir.path().join("node1.log");
    let http = format!("127.0.0.1:{}", free_port());
    let grpc = format!("127.0.0.1:{}", free_port());
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new(aos_control_plane)
        .args(["start", "--node-id", "1", "--init", "--data-dir"])
        .arg(&data)
        .args(["--grpc-addr", &grpc, "--http-addr", &http])
        .env("AOS_SIGNING_KEY", "5a".repeat(32)) // 32 fixed bytes, tests only
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let mut node = NodeGuard { child };
    let op = wait_for_key(&data.join("operator.key"), &mut node, &log);

    let dead = format!("http://127.0.0.1:{}", free_port());
    let ctl = Ctl { endpoints: vec![dead.clone(), format!("http://{http}")] };

    // Status through the second endpoint: node 1 leads.
    let status = ctl.ok(&op, &["cluster", "status"]);
    let row = status.lines().find(|l| l.starts_with("1 ")).unwrap_or_default();
    assert!(row.contains(&grpc) && row.contains("leader"), "{status}");

    // Tenant and a policy-author key (secret shown once).
    let created = ctl.ok(&op, &["tenant", "create", "acme", "--name", "Acme"]);
    assert!(created.contains("acme"), "{created}");
    let listed = ctl.ok("", &["--token-file", data.join("operator.key").to_str().unwrap(), "tenant", "list"]);
    assert!(listed.contains("Acme"), "{listed}");
    let key = ctl.ok(&op, &["key", "create", "--tenant", "acme", "--name", "ci", "--role", "policy_author"]);
    assert!(key.to_lowercase().contains("store it now"), "{key}");
    let author = key
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .map(str::trim)
        .filter(|s| s.starts_with("aos_"))
        .unwrap_or_else(|| panic!("no secret in {key}"))
        .to_owned();

    // A dry run plans three creations and changes nothing.
    let apply = ["policy", "apply", "--tenant", "acme", "-f", "deploy/examples/budgets.yaml"];
    let plan = ctl.ok(&author, &[&apply[..], &["--dry-run"]].concat());
    assert_eq!(plan.lines().filter(|l| l.trim_start().starts_with("create")).count(), 3, "{plan}");
    let policies = |ctl: &Ctl| -> Vec<Value> {
        let text = ctl.ok(&author, &["-o", "json", "policy", "list", "--tenant", "acme"]);
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        json["policies"].as_array().cloned().unwrap()
    };
    assert!(policies(&ctl).is_empty(), "a dry run must not change anything");

    // Applied for real: three policies at version 1.
    let applied = ctl.ok(&author, &apply);
    assert_eq!(applied.lines().filter(|l| l.starts_with("created")).count(), 3, "{applied}");
    assert!(applied.contains("pol-run-tokens") && applied.contains("version 1"), "{applied}");
    let listed = policies(&ctl);
    assert_eq!(listed.len(), 3, "{listed:?}");
    let table = ctl.ok(&author, &["policy", "list", "--tenant", "acme"]);
    assert!(table.contains("pol-run-tokens"), "{table}");

    // Suspend needs a reason, checked before anything is sent.
    let o = ctl.run(&author, &["policy", "suspend", "--tenant", "acme", "pol-run-tokens"]);
    assert!(matches!(o.status.code(), Some(1 | 2)), "{:?}", o.status);
    assert!(err(&o).contains("--reason"), "{}", err(&o));
    let suspended = ctl
        .ok(&author, &["policy", "suspend", "--tenant", "acme", "pol-run-tokens", "--reason", "incident 7"]);
    assert!(suspended.contains("SUSPENDED"), "{suspended}");

    // The ledger verifies end to end.
    let verified = ctl.ok(&op, &["audit", "verify"]);
    assert!(verified.starts_with("chain ok: "), "{verified}");

    // A wrong key: refused, the server's code on stderr, the key never echoed.
    let o = ctl.run("aos_not_a_real_key", &["tenant", "list"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("UNAUTHENTICATED"), "{}", err(&o));
    assert!(!err(&o).contains("aos_not_a_real_key") && !out(&o).contains("aos_not_a_real_key"));

    // Nothing reachable: EX_UNAVAILABLE.
    let dead_only = Ctl { endpoints: vec![dead, format!("http://127.0.0.1:{}", free_port())] };
    let o = dead_only.run(&op, &["cluster", "status"]);
    assert_eq!(o.status.code(), Some(69), "{}", err(&o));
    assert!(err(&o).contains("no endpoint reachable"), "{}", err(&o));
    drop(node);
}
