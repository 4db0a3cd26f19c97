//! `start --config FILE`: a TOML file supplies the settings, flags beat it,
//! the effective configuration is logged at start with the signing key
//! redacted, and a bad file stops the node with the key and line named.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{TEST_SIGNING_KEY, call, free_port, wait_for};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node_command(config: &std::path::Path, log: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aos-control-plane"));
    cmd.arg("start")
        .arg("--config")
        .arg(config)
        .env("AOS_SIGNING_KEY", TEST_SIGNING_KEY)
        .env("RUST_LOG", "info")
        .env_remove("AOS_NODE_ID")
        .env_remove("AOS_DATA_DIR")
        .env_remove("AOS_HTTP_ADDR")
        .env_remove("AOS_GRPC_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    cmd
}

#[test]
fn the_config_file_supplies_settings_flags_win_and_the_key_is_never_logged() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("node7");
    let file_http = free_port();
    let flag_http = free_port();
    let grpc = free_port();
    let config = root.path().join("aos.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 7\ndata_dir = \"{}\"\ngrpc_addr = \"127.0.0.1:{grpc}\"\nhttp_addr = \"127.0.0.1:{file_http}\"\nheartbeat_ms = 60\n",
            data.display()
        ),
    )
    .unwrap();
    let log = root.path().join("node.log");
    let _node = Proc(
        node_command(&config, &log)
            .args(["--http-addr", &format!("127.0.0.1:{flag_http}"), "--init"])
            .spawn()
            .unwrap(),
    );
    // Serving on the flag's address, as node 7 from the file.
    let health = wait_for("the node on the flag's HTTP address", Duration::from_secs(30), || {
        let (status, body) = call("GET", &format!("http://127.0.0.1:{flag_http}/health"), None, None);
        (status == 200).then_some(body)
    });
    assert_eq!(health["node_id"], 7, "{health}");
    let (status, _) = call("GET", &format!("http://127.0.0.1:{file_http}/health"), None, None);
    assert_eq!(status, 0, "nothing listens on the file's overridden address");

    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains("effective_config")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(r#""node_id":7"#) && line.contains(r#""heartbeat_ms":60"#), "{line}");
    assert!(line.contains(&format!(r#""http_addr":"127.0.0.1:{flag_http}""#)), "{line}");
    assert!(line.contains(r#""signing_key":{"source":"env"}"#), "{line}");
    assert!(!text.contains(TEST_SIGNING_KEY), "the signing key must never reach the log");
}

#[test]
fn a_typo_in_the_config_file_stops_the_node_naming_key_and_line() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("aos.toml");
    std::fs::write(&config, "node_id = 1\ndata_dir = \"/tmp/x\"\nhearbeat_ms = 50\n").unwrap();
    let log = root.path().join("node.log");
    let status = node_command(&config, &log).status().unwrap();
    assert_eq!(status.code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("hearbeat_ms") && text.contains("line 3"), "{text}");
    assert!(!root.path().join("x").exists());
}
