//! Edge agents against a real control plane, every part an OS process on
//! loopback: joining over mutual TLS with the CA pinned by the join token,
//! snapshots pushed on the watch stream and ACKed, a policy applied with
//! `aosctl` enforced in the very step that breaches it, records delivered
//! through Raft; and the control plane away for a while (issue 4).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Ctl, binary, free_port, start_single_node, wait_for};

pub(crate) const POLICY: &str = r"api_version: aos/v1
policies:
  - id: pol-run-tokens
    name: Per-run token budget
    status: ACTIVE
    scope: { type: ALL_RUNS }
    monitors: { tokens: true }
    limits:
      - { signal: TOKENS, max: 1000, window: PER_RUN }
    actions: { on_near: WARN, on_breach: STOP }
    bind_at: EACH_STEP
    failure_mode: fail_closed
";

/// An `aos-edge-agent` process joined (or joining) a control plane.
pub(crate) struct EdgeAgent {
    child: Option<Child>,
    listen: String,
    data_dir: PathBuf,
    gateway: String,
    extra: Vec<String>,
}

impl EdgeAgent {
    pub(crate) fn spawn(
        data_dir: &Path,
        gateway: &str,
        listen: &str,
        join_token: Option<&str>,
        extra: &[String],
    ) -> Child {
        std::fs::create_dir_all(data_dir).unwrap();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("agent.log")).unwrap();
        let mut cmd = Command::new(binary("aos-edge-agent"));
        cmd.args(["--control-plane", gateway, "--listen", listen, "--agent-name", "test-host"])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "info")
            // Tests that check authentication pass `--auth required`.
            .env("AOS_AGENT_AUTH", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(token) = join_token {
            cmd.args(["--join-token", token]);
        }
        cmd.args(extra);
        cmd.spawn().unwrap()
    }

    /// Starts an agent and waits until its local API answers.
    pub(crate) fn start(data_dir: &Path, gateway: &str, join_token: Option<&str>) -> EdgeAgent {
        Self::start_with(data_dir, gateway, join_token, &[])
    }

    /// [`EdgeAgent::start`] with extra flags.
    pub(crate) fn start_with(
        data_dir: &Path,
        gateway: &str,
        join_token: Option<&str>,
        extra: &[&str],
    ) -> EdgeAgent {
        let listen = format!("127.0.0.1:{}", free_port());
        let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        let child = Self::spawn(data_dir, gateway, &listen, join_token, &extra);
        let mut agent = EdgeAgent {
            child: Some(child),
            listen,
            data_dir: data_dir.to_owned(),
            gateway: gateway.to_owned(),
            extra,
        };
        agent.wait_serving();
        agent
    }

    fn wait_serving(&mut self) {
        let url = self.url("/health");
        wait_for("the edge agent to serve", Duration::from_secs(60), || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("edge agent exited with {status}: {}", self.log());
            }
            (call("GET", &url, None).0 != 0).then_some(())
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("agent.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `kill -9`, then start again on the same port and data directory
    /// (no join token: the identity is on disk).
    fn restart(&mut self) {
        self.kill();
        self.child = Some(Self::spawn(&self.data_dir, &self.gateway, &self.listen, None, &self.extra));
        self.wait_serving();
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    pub(crate) fn health(&self) -> Value {
        call("GET", &self.url("/health"), None).1
    }

    /// Waits until every record has been delivered (the control plane
    /// acked it).
    fn wait_outbox_empty(&self, what: &str, timeout: Duration) {
        wait_for(what, timeout, || {
            (self.health()["components"]["outbox"]["pending_records"] == 0).then_some(())
        });
    }

    pub(crate) fn snapshot_version(&self) -> u64 {
        self.health()["components"]["snapshot"]["version"].as_u64().unwrap_or(0)
    }

    pub(crate) fn post(&self, path: &str, body: Value) -> (u16, Value) {
        call("POST", &self.url(path), Some(body))
    }

    pub(crate) fn start_run(&self) -> String {
        let (status, run) = self.post("/api/v1/runs", json!({"agent_id": "research-bot"}));
        assert_eq!(status, 201, "{run}");
        run["run_id"].as_str().unwrap().to_owned()
    }

    /// A pre-step check and, when allowed, its usage report; the check's
    /// answer.
    pub(crate) fn step(&self, run: &str, tokens: u64) -> Value {
        let (status, answer) =
            self.post(&format!("/api/v1/runs/{run}/steps"), json!({"estimated_tokens": tokens}));
        assert_eq!(status, 200, "{answer}");
        if answer["allowed"] == true {
            let step = answer["step_id"].as_str().unwrap();
            let (status, usage) = self.post(
                &format!("/api/v1/runs/{run}/steps/{step}/usage"),
                json!({"input_tokens": tokens / 2, "output_tokens": tokens - tokens / 2}),
            );
            assert_eq!(status, 200, "{usage}");
        }
        answer
    }
}

impl Drop for EdgeAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    call_with_key(method, url, None, body)
}

pub(crate) fn call_with_key(method: &str, url: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let auth = key.map(|k| format!("Bearer {k}"));
    let result = match (method, body) {
        ("GET", _) => {
            let mut req = agent.get(url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        }
        (method, body) => {
            let mut req = if method == "PUT" { agent.put(url) } else { agent.post(url) };
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.send_json(body.unwrap_or_else(|| json!({})))
        }
    };
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            (status, response.body_mut().read_json::<Value>().unwrap_or(Value::Null))
        }
        Err(e) => (0, json!({"transport_error": e.to_string()})),
    }
}

/// A tenant `acme`, the example policy file written, and a join token.
pub(crate) fn tenant_and_token(ctl: &Ctl, op: &str, dir: &Path) -> (PathBuf, String) {
    ctl.ok(op, &["tenant", "create", "acme", "--name", "Acme"]);
    let policy = dir.join("tokens.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let created: Value =
        serde_json::from_str(&ctl.ok(op, &["-o", "json", "agent", "token", "create", "--tenant", "acme"]))
            .unwrap();
    let token =
        created["join_token"].as_str().unwrap_or_else(|| panic!("no join_token in {created}")).to_owned();
    (policy, token)
}

/// A single node with an agent gateway, tenant `acme` with [`POLICY`]
/// applied, and a join token for it.
pub(crate) struct Acme {
    pub(crate) node: crate::support::SingleNode,
    pub(crate) ctl: Ctl,
    pub(crate) op: String,
    pub(crate) gateway: String,
    pub(crate) token: String,
}

pub(crate) fn acme_with_policy(dir: &Path) -> Acme {
    acme_with_args(dir, &[])
}

/// [`acme_with_policy`] with extra node flags.
pub(crate) fn acme_with_args(dir: &Path, extra: &[&str]) -> Acme {
    let gateway = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--agent-addr", gateway.as_str()];
    args.extend_from_slice(extra);
    let node = start_single_node(dir, &args);
    let op = node.operator_key.clone();
    let ctl = Ctl { endpoints: vec![format!("http://{}", node.http)] };
    let (policy, token) = tenant_and_token(&ctl, &op, dir);
    ctl.ok(&op, &["policy", "apply", "--tenant", "acme", "-f", policy.to_str().unwrap()]);
    Acme { node, ctl, op, gateway, token }
}

pub(crate) fn agents(ctl: &Ctl, op: &str) -> Vec<Value> {
    let listed: Value =
        serde_json::from_str(&ctl.ok(op, &["-o", "json", "agent", "list", "--tenant", "acme"])).unwrap();
    listed["agents"].as_array().cloned().unwrap_or_default()
}

/// Every record the control plane holds for `acme`, all pages.
fn records(http: &str, op: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0u64;
    loop {
        let url = format!("http://{http}/api/v1/tenants/acme/records?limit=1000&after_seq={after}");
        let (status, page) = call_with_key("GET", &url, Some(op), None);
        assert_eq!(status, 200, "{page}");
        all.extend(page["records"].as_array().cloned().unwrap_or_default());
        match page["next_after_seq"].as_u64() {
            Some(next) => after = next,
            None => return all,
        }
    }
}

#[test]
fn an_agent_joins_over_mtls_and_enforces_a_policy_applied_with_aosctl_in_the_breaching_step() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = format!("127.0.0.1:{}", free_port());
    let mut node = start_single_node(dir.path(), &["--agent-addr", &gateway]);
    let op = node.operator_key.clone();
    let ctl = Ctl { endpoints: vec![format!("http://{}", node.http)] };
    let (policy, token) = tenant_and_token(&ctl, &op, dir.path());

    // A token whose CA pin is wrong never sends its secret: the agent
    // refuses the gateway's certificate and exits without an identity.
    let (secret, _pin) = token.rsplit_once('.').unwrap();
    let forged = format!("{secret}.{}", "0".repeat(64));
    let bad_dir = dir.path().join("forged");
    let status =
        EdgeAgent::spawn(&bad_dir, &gateway, &format!("127.0.0.1:{}", free_port()), Some(&forged), &[])
            .wait()
            .unwrap();
    assert!(!status.success());
    let log = std::fs::read_to_string(bad_dir.join("agent.log")).unwrap();
    assert!(log.contains("pinned"), "{log}");
    assert!(!bad_dir.join("identity.json").exists());

    let agent = EdgeAgent::start(&dir.path().join("agent"), &gateway, Some(&token));
    let identity: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("agent/identity.json")).unwrap()).unwrap();
    assert_eq!(identity["tenant_id"], "acme");
    // No policy yet: nothing to enforce with, so runs are refused (GAP-067).
    let (status, refused) = agent.post("/api/v1/runs", json!({}));
    assert_eq!((status, refused["error"]["code"].as_str()), (503, Some("BOOT_GUARD")), "{refused}");

    // The policy applied through aosctl reaches the agent by push.
    ctl.ok(&op, &["policy", "apply", "--tenant", "acme", "-f", policy.to_str().unwrap()]);
    let version = wait_for("the pushed snapshot", Duration::from_secs(30), || {
        let v = agent.snapshot_version();
        (v > 0).then_some(v)
    });
    assert_eq!(agent.health()["components"]["control_plane"]["status"], "connected");

    // 600 tokens fit the 1,000-token run budget; the next 600 breach it and
    // the run stops in that same step.
    let run = agent.start_run();
    assert_eq!(agent.step(&run, 600)["allowed"], true);
    let breach = agent.step(&run, 600);
    assert_eq!(breach["allowed"], false, "{breach}");
    assert_eq!(breach["decision"]["outcome"], "STOP", "{breach}");
    let (status, after) = agent.post(&format!("/api/v1/runs/{run}/steps"), json!({"estimated_tokens": 1}));
    assert_eq!(status, 409, "no step after STOP: {after}");

    // The control plane knows the agent holds that version…
    let listed = wait_for("the ACK in aosctl agent list", Duration::from_secs(30), || {
        let listed = agents(&ctl, &op);
        (listed.first().and_then(|a| a["acked_version"].as_u64()) == Some(version)).then_some(listed)
    });
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "test-host");
    assert_eq!(listed[0]["connected_node"], 1, "{listed:?}");
    let table = ctl.ok(&op, &["agent", "list", "--tenant", "acme"]);
    assert!(table.contains("node 1"), "{table}");
    assert!(listed[0]["last_nack"].is_null(), "{listed:?}");
    // …and holds the run's records, committed through Raft.
    let run_records = wait_for("the run's records at the control plane", Duration::from_secs(30), || {
        let url = format!("http://{}/api/v1/tenants/acme/activity/runs/{run}", node.http);
        let (status, body) = call_with_key("GET", &url, Some(&op), None);
        let records = body["records"].as_array().cloned().unwrap_or_default();
        let incident =
            records.iter().any(|r| r["kind"] == "INCIDENT" && r["body"]["policy_id"] == "pol-run-tokens");
        (status == 200 && incident).then_some(records)
    });
    assert_eq!(run_records.iter().filter(|r| r["kind"] == "LLM_RUN_RECORD").count(), 1, "{run_records:?}");
    assert!(run_records.iter().all(|r| r["edge_agent_id"] == identity["edge_agent_id"]));
    agent.wait_outbox_empty("an empty outbox", Duration::from_secs(30));

    // The Activity API: the stopped run is completed with its reason, a
    // new one is live, and the metrics add up what was delivered.
    let live_run = agent.start_run();
    let activity = |what: &str| {
        let url = format!("http://{}/api/v1/tenants/acme/activity/{what}", node.http);
        let (status, body) = call_with_key("GET", &url, Some(&op), None);
        assert_eq!(status, 200, "{what}: {body}");
        body
    };
    let live = wait_for("the live run", Duration::from_secs(30), || {
        let live = activity("live");
        (live["runs"].as_array()?.len() == 1).then_some(live)
    });
    assert_eq!(live["runs"][0]["run_id"], live_run.as_str(), "{live}");
    assert_eq!(live["runs"][0]["body"]["agent_id"], "research-bot", "{live}");
    let completed = activity("completed");
    assert_eq!(completed["runs"][0]["run_id"], run.as_str(), "{completed}");
    assert_eq!(completed["runs"][0]["body"]["status"], "failed_policy", "{completed}");
    assert_eq!(completed["runs"][0]["body"]["termination_reason"], "BUDGET_EXCEEDED", "{completed}");
    let metrics = activity("metrics");
    assert_eq!(metrics["runs"], 2, "{metrics}");
    assert_eq!(metrics["tokens"], 600, "one 600-token call was reported: {metrics}");
    assert_eq!(metrics["incidents_by_kind"]["TOKEN_LIMIT"], 1, "{metrics}");
    let signals = activity("signals");
    let outcomes: Vec<&str> = signals["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["body"]["decision"]["outcome"].as_str())
        .collect();
    assert!(outcomes.contains(&"STOP"), "{signals}");
    let url = format!("http://{}/api/v1/tenants/acme/activity/live?limit=0", node.http);
    assert_eq!(call_with_key("GET", &url, Some(&op), None).0, 400);

    // A revoked token joins nobody, and the refusal is in the ledger.
    let token_id = ctl.ok(&op, &["-o", "json", "agent", "token", "list", "--tenant", "acme"]);
    let token_id: Value = serde_json::from_str(&token_id).unwrap();
    let token_id = token_id["tokens"][0]["token_id"].as_str().unwrap().to_owned();
    ctl.ok(&op, &["agent", "token", "revoke", "--tenant", "acme", &token_id, "--reason", "rotated"]);
    let late_dir = dir.path().join("late");
    let status =
        EdgeAgent::spawn(&late_dir, &gateway, &format!("127.0.0.1:{}", free_port()), Some(&token), &[])
            .wait()
            .unwrap();
    assert!(!status.success());
    let log = std::fs::read_to_string(late_dir.join("agent.log")).unwrap();
    assert!(log.contains("revoked"), "{log}");
    let audit = ctl.ok(&op, &["-o", "json", "audit", "list", "--tenant", "acme"]);
    assert!(audit.contains("JOIN_EDGE_AGENT") && audit.contains("revoked"), "{audit}");

    // A node with an agent connected still stops on SIGTERM: the agent's
    // long-lived streams are dropped after a grace period.
    let pid = node.guard.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = wait_for("the node to exit after SIGTERM", Duration::from_secs(15), || {
        node.guard.child.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status}");
}

#[test]
fn with_the_control_plane_down_the_agent_enforces_from_disk_and_delivers_every_record_later() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = format!("127.0.0.1:{}", free_port());
    let mut node = start_single_node(dir.path(), &["--agent-addr", &gateway]);
    let op = node.operator_key.clone();
    let ctl = Ctl { endpoints: vec![format!("http://{}", node.http)] };
    let (policy, token) = tenant_and_token(&ctl, &op, dir.path());
    ctl.ok(&op, &["policy", "apply", "--tenant", "acme", "-f", policy.to_str().unwrap()]);
    let mut agent = EdgeAgent::start(&dir.path().join("agent"), &gateway, Some(&token));
    wait_for("the pushed snapshot", Duration::from_secs(30), || (agent.snapshot_version() > 0).then_some(()));
    agent.wait_outbox_empty("an empty outbox", Duration::from_secs(30));
    // An agent that goes away is shown disconnected.
    wait_for("the connection on record", Duration::from_secs(30), || {
        (agents(&ctl, &op).first()?["connected_node"] == 1).then_some(())
    });
    agent.kill();
    wait_for("the disconnection on record", Duration::from_secs(30), || {
        let listed = agents(&ctl, &op);
        let a = listed.first()?;
        (a["connected_node"].is_null() && a["last_seen_ms"].is_u64()).then_some(())
    });
    agent.restart();
    wait_for("the reconnection", Duration::from_secs(30), || {
        (agents(&ctl, &op).first()?["connected_node"] == 1).then_some(())
    });
    agent.wait_outbox_empty("an empty outbox after the restart", Duration::from_secs(30));
    let before = records(&node.http, &op).len();

    // The control plane goes away (kill -9).
    let _ = node.guard.child.kill();
    let _ = node.guard.child.wait();
    let mut runs = Vec::new();
    for _ in 0..5 {
        let run = agent.start_run();
        assert_eq!(agent.step(&run, 100)["allowed"], true);
        let (status, ended) = agent.post(&format!("/api/v1/runs/{run}/end"), json!({"status": "succeeded"}));
        assert_eq!(status, 200, "{ended}");
        runs.push(run);
    }
    // kill -9 of the agent mid-run, control plane still down: it restarts
    // from disk, the step it acknowledged is still there, and it enforces.
    let mid = agent.start_run();
    assert_eq!(agent.step(&mid, 700)["allowed"], true);
    agent.restart();
    let (status, view) = call("GET", &agent.url(&format!("/api/v1/runs/{mid}")), None);
    assert_eq!((status, view["steps"].as_u64()), (200, Some(1)), "{view}");
    let breach = agent.step(&mid, 700);
    assert_eq!(breach["decision"]["outcome"], "STOP", "enforced from the persisted snapshot: {breach}");
    runs.push(mid.clone());
    let pending = agent.health()["components"]["outbox"]["pending_records"].as_u64().unwrap();
    assert!(pending > 0, "records wait in the outbox");
    let produced = before + usize::try_from(pending).unwrap();
    assert_eq!(agent.health()["components"]["control_plane"]["status"], "disconnected");

    // The control plane returns (same data, same ports): every record
    // arrives, once.
    node.restart();
    agent.wait_outbox_empty("an empty outbox", Duration::from_secs(60));
    let held = records(&node.http, &op);
    assert_eq!(held.len(), produced, "exactly what the agent produced");
    let ids: BTreeSet<&str> = held.iter().map(|r| r["record_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), held.len(), "no duplicates");
    for run in &runs {
        let llm =
            held.iter().filter(|r| r["run_id"] == run.as_str() && r["kind"] == "LLM_RUN_RECORD").count();
        assert_eq!(llm, 1, "run {run}: one LLM run record");
    }
    let incidents: Vec<&Value> =
        held.iter().filter(|r| r["kind"] == "INCIDENT" && r["run_id"] == mid.as_str()).collect();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let startups =
        held.iter().filter(|r| r["kind"] == "SYSTEM_RECORD" && r["body"]["event"] == "STARTUP").count();
    assert_eq!(startups, 3, "every agent start is on record");
    assert!(held.iter().all(|r| r["kind"] != "MALFORMED"));
}

#[test]
fn tampered_unsigned_wrong_key_other_tenant_and_rolled_back_snapshots_are_nacked_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = format!("127.0.0.1:{}", free_port());
    let node = start_single_node(dir.path(), &["--agent-addr", &gateway]);
    let op = node.operator_key.clone();
    let ctl = Ctl { endpoints: vec![format!("http://{}", node.http)] };
    let (policy, token) = tenant_and_token(&ctl, &op, dir.path());
    ctl.ok(&op, &["policy", "apply", "--tenant", "acme", "-f", policy.to_str().unwrap()]);
    let agent = EdgeAgent::start(&dir.path().join("agent"), &gateway, Some(&token));
    let good = wait_for("the first snapshot", Duration::from_secs(30), || {
        let v = agent.snapshot_version();
        (v > 0).then_some(v)
    });
    // The node's debug-build fault hook alters its next pushes
    // (control-plane/src/gateway/fault.rs); each change of the budget
    // makes a new version to push.
    let fault_file = node.data.join("fault-inject-snapshot");
    let cases = [
        ("tamper", "content hash does not match"),
        ("unsigned", "unsigned"),
        ("wrong-key", "unknown key"),
        ("other-tenant", "acme-other"),
        ("rollback", "rollback refused"),
    ];
    for (i, (fault, reason)) in cases.iter().enumerate() {
        std::fs::write(&fault_file, fault).unwrap();
        std::fs::write(&policy, POLICY.replace("max: 1000", &format!("max: {}", 2000 + i))).unwrap();
        ctl.ok(&op, &["policy", "apply", "--tenant", "acme", "-f", policy.to_str().unwrap()]);
        let nack = wait_for(&format!("the NACK of a {fault} push"), Duration::from_secs(30), || {
            let listed = agents(&ctl, &op);
            let nack = listed.first()?.get("last_nack").cloned().filter(|n| !n.is_null())?;
            nack["reason"].as_str().is_some_and(|r| r.contains(reason)).then_some(nack)
        });
        assert!(nack["version"].as_u64().unwrap() > good, "{fault}: {nack}");
        assert_eq!(agent.snapshot_version(), good, "{fault}: the agent keeps enforcing what it had");
    }
    let table = ctl.ok(&op, &["agent", "list", "--tenant", "acme"]);
    assert!(table.contains("rollback refused"), "the last NACK and its reason are shown: {table}");
    let metrics = crate::support::get_text(&format!("http://{}/metrics", node.http));
    assert!(metrics.contains("aos_cp_edge_agents_nacking{node_id=\"1\"} 1"), "{metrics}");

    // Healed: the next push is taken and the agent is no longer NACKing.
    std::fs::remove_file(&fault_file).unwrap();
    std::fs::write(&policy, POLICY.replace("max: 1000", "max: 5000")).unwrap();
    ctl.ok(&op, &["policy", "apply", "--tenant", "acme", "-f", policy.to_str().unwrap()]);
    let healed = wait_for("a good push after the faults", Duration::from_secs(30), || {
        let v = agent.snapshot_version();
        (v > good).then_some(v)
    });
    wait_for("the ACK", Duration::from_secs(30), || {
        (agents(&ctl, &op).first()?["acked_version"].as_u64()? == healed).then_some(())
    });
    let metrics = crate::support::get_text(&format!("http://{}/metrics", node.http));
    assert!(metrics.contains("aos_cp_edge_agents_nacking{node_id=\"1\"} 0"), "{metrics}");
    // Every NACK is in the ledger.
    let audit = ctl.ok(&op, &["-o", "json", "audit", "list", "--tenant", "acme"]);
    assert_eq!(audit.matches("SNAPSHOT_NACKED").count(), cases.len(), "{audit}");
}

/// Bearer authentication of the local API with workload keys from the
/// snapshot (issue 4): no key, a wrong key or an admin key is 401; a
/// workload key starts runs that only it may drive; the key is the run's
/// API key scope; a revoked key stops working once the agent has the next
/// snapshot; the same key is refused by the admin API.
#[test]
fn the_local_api_takes_workload_keys_from_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let Acme { node, ctl, op, gateway, token } = acme_with_policy(dir.path());
    let create = |name: &str, role: &str| -> (String, String) {
        let out =
            ctl.ok(&op, &["-o", "json", "key", "create", "--tenant", "acme", "--name", name, "--role", role]);
        let created: Value = serde_json::from_str(&out).unwrap();
        (created["key_id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned())
    };
    let (wk1, secret1) = create("bot-1", "workload");
    let (_wk2, secret2) = create("bot-2", "workload");
    let (_, admin_secret) = create("admin", "admin");
    let agent =
        EdgeAgent::start_with(&dir.path().join("agent"), &gateway, Some(&token), &["--auth", "required"]);
    // The agent has the keys once it has a snapshot that lists both.
    let runs = agent.url("/api/v1/runs");
    wait_for("a snapshot with the keys", Duration::from_secs(30), || {
        (call_with_key("POST", &runs, Some(&secret2), Some(json!({}))).0 == 201).then_some(())
    });

    let (status, body) = call("POST", &runs, Some(json!({})));
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("UNAUTHENTICATED")), "{body}");
    let (status, _) = call_with_key("POST", &runs, Some("aos_wrong"), Some(json!({})));
    assert_eq!(status, 401);
    let client: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut basic =
        client.post(&runs).header("Authorization", &format!("Basic {secret1}")).send_json(json!({})).unwrap();
    assert_eq!(basic.status().as_u16(), 401, "only Bearer is accepted");
    assert_eq!(basic.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    let body: Value = basic.body_mut().read_json().unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("Bearer <key>"), "{body}");
    let (status, body) = call_with_key("POST", &runs, Some(&admin_secret), Some(json!({})));
    assert_eq!(status, 401, "an admin key is not a workload key: {body}");
    // Health and metrics stay open for probes.
    assert_eq!(call("GET", &agent.url("/health"), None).0, 200);

    let (status, run) =
        call_with_key("POST", &runs, Some(&secret1), Some(json!({"agent_id": "research-bot"})));
    assert_eq!(status, 201, "{run}");
    let run_id = run["run_id"].as_str().unwrap();
    let (_, view) = call_with_key("GET", &agent.url(&format!("/api/v1/runs/{run_id}")), Some(&secret1), None);
    assert_eq!(view["scope"]["api_key_id"], wk1.as_str(), "the key is the run's scope: {view}");
    let steps = agent.url(&format!("/api/v1/runs/{run_id}/steps"));
    let (status, body) = call_with_key("POST", &steps, Some(&secret2), Some(json!({"estimated_tokens": 1})));
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("FORBIDDEN")), "{body}");
    let (status, _) = call_with_key("POST", &steps, Some(&secret1), Some(json!({"estimated_tokens": 1})));
    assert_eq!(status, 200);
    // A percent-encoded run id is the same run after routing: still refused.
    let encoded: String = run_id.bytes().map(|b| format!("%{b:02X}")).collect();
    let url = agent.url(&format!("/api/v1/runs/{encoded}/cancel"));
    let (status, body) = call_with_key("POST", &url, Some(&secret2), Some(json!({})));
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("FORBIDDEN")), "{body}");
    let (_, view) = call_with_key("GET", &agent.url(&format!("/api/v1/runs/{run_id}")), Some(&secret1), None);
    assert_eq!(view["status"], "running", "{view}");
    // Nor can another key read it, or start it again by id.
    let (status, _) =
        call_with_key("GET", &agent.url(&format!("/api/v1/runs/{run_id}")), Some(&secret2), None);
    assert_eq!(status, 403);
    let (status, _) = call_with_key("POST", &runs, Some(&secret2), Some(json!({"run_id": run_id})));
    assert_eq!(status, 403);
    // Claiming another key in the body is refused.
    let (status, body) =
        call_with_key("POST", &runs, Some(&secret1), Some(json!({"api_key_id": "someone-else"})));
    assert_eq!(status, 403, "{body}");
    // The admin API refuses the workload key.
    let (status, _) = call_with_key(
        "GET",
        &format!("http://{}/api/v1/tenants/acme/policies", node.http),
        Some(&secret1),
        None,
    );
    assert_eq!(status, 403);

    // Revoked: refused once the agent has the next snapshot.
    ctl.ok(&op, &["key", "revoke", "--tenant", "acme", &wk1, "--reason", "leaked"]);
    wait_for("the revocation at the agent", Duration::from_secs(30), || {
        (call_with_key("POST", &runs, Some(&secret1), Some(json!({}))).0 == 401).then_some(())
    });
    let metrics = crate::support::get_text(&agent.url("/metrics"));
    assert!(!metrics.contains("aos_agent_auth_refused_total 0\n"), "refusals are counted: {metrics}");
}
