//! Alerts end to end (issue 8): a near-threshold step at the edge becomes
//! an alert at the control plane, delivered to a real webhook receiver that
//! fails three times and then accepts it — exactly once accepted, signed
//! with a valid HMAC, retried with backoff by the leader's dispatcher.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::agent_sync::{EdgeAgent, call_with_key};
use crate::support::{Ctl, free_port, start_single_node, wait_for};

const POLICY: &str = r"api_version: aos/v1
policies:
  - id: pol-run-tokens
    name: Per-run token budget
    status: ACTIVE
    scope: { type: ALL_RUNS }
    monitors: { tokens: true }
    limits:
      - { signal: TOKENS, max: 1000, window: PER_RUN }
    alerts: { near_threshold: true, tiers: [50], notify: [UI, WEBHOOK] }
    actions: { on_near: WARN, on_breach: STOP }
";

/// One request the receiver got: headers (lower-case names), body, and the
/// status it answered.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    status: u16,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A webhook receiver on its own thread: answers 503 to the first
/// `failures` requests, then 200.
fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&log);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap_or(0);
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((n, v)) = line.trim_end().split_once(':') {
                    headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
            }
            let length = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap_or(());
            let mut log = seen.lock().unwrap();
            let status = if log.len() < failures { 503 } else { 200 };
            log.push(Received { headers, body, status });
            drop(log);
            let reason = if status == 200 { "OK" } else { "Service Unavailable" };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, log)
}

#[test]
fn a_near_threshold_alert_reaches_a_flaky_webhook_exactly_once_signed() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = format!("127.0.0.1:{}", free_port());
    // The receiver is on loopback, which tenants may not target by default.
    let node = start_single_node(dir.path(), &["--agent-addr", &gateway, "--alert-private-targets"]);
    let op = node.operator_key.clone();
    let ctl = Ctl { endpoints: vec![format!("http://{}", node.http)] };
    ctl.ok(&op, &["tenant", "create", "acme"]);
    let policy = dir.path().join("alerts.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    ctl.ok(&op, &["policy", "apply", "--tenant", "acme", "-f", policy.to_str().unwrap()]);
    let (url, received) = receiver(3);
    let channels = format!("http://{}/api/v1/tenants/acme/alert-channels", node.http);
    let (status, set) =
        call_with_key("POST", &channels, Some(&op), Some(json!({"channel": "WEBHOOK", "target": url})));
    assert_eq!(status, 200, "{set}");
    let secret = set["signing_secret"].as_str().unwrap().to_owned();
    // A bad channel is refused, naming the field.
    let (status, bad) =
        call_with_key("POST", &channels, Some(&op), Some(json!({"channel": "WEBHOOK", "target": "ftp://x"})));
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("INVALID_INPUT")), "{bad}");

    let created: Value =
        serde_json::from_str(&ctl.ok(&op, &["-o", "json", "agent", "token", "create", "--tenant", "acme"]))
            .unwrap();
    let agent =
        EdgeAgent::start(&dir.path().join("agent"), &gateway, Some(created["join_token"].as_str().unwrap()));
    wait_for("the snapshot", Duration::from_secs(30), || (agent.snapshot_version() > 0).then_some(()));
    // 600 of 1000 tokens: past the 50 % tier.
    let run = agent.start_run();
    let answer = agent.step(&run, 600);
    assert_eq!(answer["decision"]["outcome"], "WARN", "{answer}");

    // Three 503s, then one 200, from the leader's dispatcher with backoff.
    let alerts_url = format!("http://{}/api/v1/tenants/acme/alerts", node.http);
    let alert = wait_for("the alert delivered", Duration::from_secs(60), || {
        let (_, body) = call_with_key("GET", &alerts_url, Some(&op), None);
        let alert = body["alerts"].as_array()?.first()?.clone();
        let webhook = alert["deliveries"].as_array()?.iter().find(|d| d["channel"] == "WEBHOOK")?.clone();
        (webhook["status"] == "DELIVERED").then_some(alert)
    });
    assert_eq!(alert["tier"], "NEAR_50", "{alert}");
    assert_eq!(alert["policy_id"], "pol-run-tokens");
    let webhook = alert["deliveries"].as_array().unwrap().iter().find(|d| d["channel"] == "WEBHOOK").unwrap();
    assert_eq!(webhook["attempts"], 4, "{alert}");
    let received = received.lock().unwrap().clone();
    let accepted: Vec<&Received> = received.iter().filter(|r| r.status == 200).collect();
    assert_eq!(accepted.len(), 1, "exactly once accepted: {received:?}");
    assert_eq!(received.len(), 4);
    // Every attempt carries the same delivery id and a valid signature.
    let ids: Vec<&str> = received.iter().map(|r| r.header("x-aos-delivery").unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    for r in &received {
        let timestamp = r.header("x-aos-timestamp").unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(&r.body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(r.header("x-aos-signature"), Some(expected.as_str()));
    }
    let body: Value = serde_json::from_slice(&accepted[0].body).unwrap();
    assert_eq!(body["alert"]["alert_id"], alert["alert_id"]);
    assert!(body["message"].as_str().unwrap().contains("pol-run-tokens"), "{body}");
    // A tampered body would not verify.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(b"0.{}");
    assert_ne!(
        Some(format!("sha256={}", hex::encode(mac.finalize().into_bytes())).as_str()),
        accepted[0].header("x-aos-signature")
    );
    let stats_url = format!("http://{}/api/v1/tenants/acme/alerts/stats", node.http);
    let (_, stats) = call_with_key("GET", &stats_url, Some(&op), None);
    assert_eq!(stats["raised"], 1, "{stats}");
    assert_eq!(stats["dead_lettered"], 0, "{stats}");
}

/// A real SMTP server (aiosmtpd, the Python tools' interpreter from
/// `scripts/test-tools`) writing every message it accepts to a Maildir.
struct SmtpSink {
    child: std::process::Child,
    maildir: std::path::PathBuf,
}

impl SmtpSink {
    fn start(port: u16, maildir: &std::path::Path) -> SmtpSink {
        let python = std::env::var("AOS_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let has_aiosmtpd = std::process::Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            has_aiosmtpd,
            "the SMTP sink needs aiosmtpd: set AOS_TEST_PYTHON=$(scripts/test-tools) (scripts/verify does)"
        );
        let child = std::process::Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the SMTP sink listening", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        SmtpSink { child, maildir: maildir.to_owned() }
    }

    /// The messages received so far, as text.
    fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else { return Vec::new() };
        entries.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GAP-017 email channel: a breach alert is retried while the relay is
/// down and reaches the SMTP sink exactly once when it comes up.
#[test]
fn an_email_alert_reaches_a_real_smtp_sink_once_the_relay_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = format!("127.0.0.1:{}", free_port());
    let smtp_port = free_port();
    let relay = format!("smtp+plain://127.0.0.1:{smtp_port}");
    let node = start_single_node(
        dir.path(),
        &[
            "--agent-addr",
            &gateway,
            "--smtp-url",
            &relay,
            "--smtp-from",
            "AOS Alerts <alerts@aos.example.com>",
        ],
    );
    let op = node.operator_key.clone();
    let ctl = Ctl { endpoints: vec![format!("http://{}", node.http)] };
    ctl.ok(&op, &["tenant", "create", "acme"]);
    let policy = dir.path().join("alerts.yaml");
    std::fs::write(&policy, POLICY.replace("notify: [UI, WEBHOOK]", "notify: [UI, EMAIL]")).unwrap();
    ctl.ok(&op, &["policy", "apply", "--tenant", "acme", "-f", policy.to_str().unwrap()]);
    let channels = format!("http://{}/api/v1/tenants/acme/alert-channels", node.http);
    // A header smuggled into the recipients is refused, naming the field.
    let smuggled = json!({"channel": "EMAIL", "target": "ops@example.com\r\nBcc: evil@example.net"});
    let (status, bad) = call_with_key("POST", &channels, Some(&op), Some(smuggled));
    assert_eq!((status, bad["error"]["field_errors"][0]["path"].as_str()), (400, Some("target")), "{bad}");
    let recipients = json!({"channel": "EMAIL", "target": "ops@example.com, sre@example.org"});
    let (status, set) = call_with_key("POST", &channels, Some(&op), Some(recipients));
    assert_eq!(status, 200, "{set}");

    let created: Value =
        serde_json::from_str(&ctl.ok(&op, &["-o", "json", "agent", "token", "create", "--tenant", "acme"]))
            .unwrap();
    let agent =
        EdgeAgent::start(&dir.path().join("agent"), &gateway, Some(created["join_token"].as_str().unwrap()));
    wait_for("the snapshot", Duration::from_secs(30), || (agent.snapshot_version() > 0).then_some(()));
    let run = agent.start_run();
    assert_eq!(agent.step(&run, 600)["decision"]["outcome"], "WARN");

    // The relay is down: the delivery fails, is kept and retried.
    let alerts_url = format!("http://{}/api/v1/tenants/acme/alerts", node.http);
    let email_delivery = || {
        let (_, body) = call_with_key("GET", &alerts_url, Some(&op), None);
        let alert = body["alerts"].as_array()?.first()?.clone();
        let email = alert["deliveries"].as_array()?.iter().find(|d| d["channel"] == "EMAIL")?.clone();
        Some((alert, email))
    };
    let failed = wait_for("a failed email attempt", Duration::from_secs(30), || {
        email_delivery().filter(|(_, email)| email["attempts"].as_u64() >= Some(1))
    });
    assert_eq!(failed.1["status"], "PENDING", "{}", failed.0);
    assert!(failed.1["last_error"].as_str().unwrap().contains("SMTP"), "{}", failed.0);

    let sink = SmtpSink::start(smtp_port, &dir.path().join("maildir"));
    let (alert, email) = wait_for("the email delivered", Duration::from_secs(60), || {
        email_delivery().filter(|(_, email)| email["status"] == "DELIVERED")
    });
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "exactly one message: {messages:?}");
    let message = &messages[0];
    let alert_id = alert["alert_id"].as_str().unwrap();
    for expected in [
        "From: \"AOS Alerts\" <alerts@aos.example.com>",
        "To: ops@example.com, sre@example.org",
        &format!("Message-ID: <{alert_id}.acme@aos-alerts>"),
        "pol-run-tokens",
        "NEAR_50",
        &format!("Run: {}", run),
    ] {
        assert!(message.contains(expected), "missing `{expected}` in:\n{message}");
    }
    assert!(email["attempts"].as_u64().unwrap() >= 2, "{alert}");
}
