//! Governed data access end to end (issue 6): a control plane with data
//! sources, a sealed credential and knowledge planes; an edge agent that
//! mediates `POST /api/v1/access` against a real SQLite file, a real
//! HTTP upstream (a Python `http.server` process) and a real MCP server
//! (`aos-test-mcp-server`, over stdio and over streamable HTTP), with
//! evidence for every attempt at the control plane; and the same access
//! over the agent's local gRPC API (`--grpc-listen`).

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aos_proto::agent_local::AccessRequest;
use aos_proto::agent_local::local_access_client::LocalAccessClient;
use serde_json::{Value, json};

use crate::agent_sync::{EdgeAgent, call_with_key, tenant_and_token};
use crate::support::{Ctl, SingleNode, free_port, repo, start_single_node, wait_for};

/// Lets `research-bot` read both planes and run at most 4 SQL queries per
/// run.
const POLICY: &str = "api_version: aos/v1
policies:
  - id: pol-research-data
    name: research bot may read HR and web data
    status: ACTIVE
    scope: { type: AGENT, ids: [research-bot] }
    monitors:
      rag_access: { enabled: true, allowed_planes: [hr, web] }
      db_queries: true
    limits:
      - { signal: DB_QUERIES, max: 4, window: PER_RUN }
    actions: { on_breach: STOP }
";

const SECRET: &str = "Bearer s3cr3t-upstream-token-7f1c";

struct Upstream {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Upstream {
    fn start(dir: &Path, name: &str, expected_auth: &str, redirect_to: &str) -> Upstream {
        let log = dir.join(format!("{name}.log"));
        std::fs::write(&log, "").unwrap();
        let mut child = Command::new("python3")
            .arg(repo().join("tests/it/fixtures/http_upstream.py"))
            .arg(&log)
            .env("EXPECTED_AUTH", expected_auth)
            .env("REDIRECT_TO", redirect_to)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is required (the README's setup installs it)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("upstream printed {line:?}"));
        Upstream { child, port, log }
    }

    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap().lines().map(str::to_owned).collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sqlite_db(path: &Path) {
    let script = "import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute('CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, dept TEXT)')
db.executemany('INSERT INTO people VALUES (?, ?, ?)', [(1, 'Ada', 'eng'), (2, 'Grace', 'eng'), (3, 'Edsger', 'research')])
db.commit()
";
    let status = Command::new("python3").args(["-c", script]).arg(path).status().unwrap();
    assert!(status.success());
}

/// Registers the SQLite file `db` (see [`sqlite_db`]) as source `hr-db`
/// with the template `by-dept`.
fn add_hr_db(cp: &Cp<'_>, db: &Path) {
    cp.ok(
        "POST",
        "/api/v1/tenants/acme/sources",
        Some(json!({
            "source_id": "hr-db",
            "asset_type": "SQL",
            "sql": {
                "engine": "SQLITE",
                "target": db.to_str().unwrap(),
                "templates": [{
                    "template_id": "by-dept",
                    "statement": "SELECT id, name FROM people WHERE dept = :dept ORDER BY id",
                    "params": [{"name": "dept", "type": "STRING"}],
                    "max_rows": 10
                }]
            }
        })),
    );
}

/// A single control-plane node with an agent gateway (its address is
/// returned), tenant `acme` and a join token for its agents. With
/// `private_targets`, verification probes may reach loopback, where the
/// tests' upstreams listen.
fn acme_node(dir: &Path, private_targets: bool) -> (SingleNode, String, String) {
    let gateway = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--agent-addr", gateway.as_str()];
    if private_targets {
        args.push("--alert-private-targets");
    }
    let node = start_single_node(dir, &args);
    let ctl = Ctl { endpoints: vec![format!("http://{}", node.http)] };
    let (_, token) = tenant_and_token(&ctl, &node.operator_key, dir);
    (node, gateway, token)
}

/// Calls `delete_all_orders`, which no MCP source allows: refused, with
/// evidence, before it reaches the server, whose call log (`calls`) shows
/// only the one allowed call made before. The refusal.
fn refuse_a_tool_not_allowed(agent: &EdgeAgent, run: &str, calls: &Path) -> Value {
    let (status, refused) = access(agent, run, "orders", "call_tool", json!({"tool": "delete_all_orders"}));
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("UNKNOWN_TARGET")), "{refused}");
    assert!(refused["error"]["evidence_id"].as_str().is_some());
    let received = std::fs::read_to_string(calls).unwrap();
    assert_eq!(
        received.lines().collect::<Vec<_>>(),
        ["lookup_order"],
        "the server saw only the allowed call"
    );
    refused
}

/// Enables `source_id` and binds it to a new, activated PUBLIC plane
/// `orders`; the three answers, in that order.
fn enable_into_orders_plane(cp: &Cp<'_>, source_id: &str) -> [Value; 3] {
    let enabled = cp.ok(
        "POST",
        &format!("/api/v1/tenants/acme/sources/{source_id}/enable"),
        Some(json!({"reason": "reviewed"})),
    );
    let plane = cp.ok(
        "POST",
        "/api/v1/tenants/acme/planes",
        Some(json!({"plane_id": "orders", "name": "orders", "sensitivity": "PUBLIC", "bound_source_ids": [source_id]})),
    );
    let activated = cp.ok(
        "POST",
        "/api/v1/tenants/acme/planes/orders/activate",
        Some(json!({"reason": "ok", "confirm": true})),
    );
    [enabled, plane, activated]
}

struct Cp<'a> {
    http: &'a str,
    op: &'a str,
}

impl Cp<'_> {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call_with_key(method, &format!("http://{}{path}", self.http), Some(self.op), body)
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer
    }

    /// Verifies and enables a source; its snapshot version afterwards.
    fn verify_and_enable(&self, source: &str) -> u64 {
        let verified = self.ok("POST", &format!("/api/v1/tenants/acme/sources/{source}/verify"), None);
        assert_eq!(verified["result"]["status"], "VERIFIED", "{verified}");
        let enabled = self.ok(
            "POST",
            &format!("/api/v1/tenants/acme/sources/{source}/enable"),
            Some(json!({"reason": "verified by the test"})),
        );
        enabled["tenant_snapshot_version"].as_u64().unwrap()
    }
}

fn access(agent: &EdgeAgent, run: &str, plane: &str, action: &str, payload: Value) -> (u16, Value) {
    agent.post("/api/v1/access", json!({"run_id": run, "plane": plane, "action": action, "payload": payload}))
}

fn query(agent: &EdgeAgent, run: &str, dept: &str) -> (u16, Value) {
    access(agent, run, "hr", "query", json!({"template_id": "by-dept", "params": {"dept": dept}}))
}

fn run_for(agent: &EdgeAgent, workload: &str) -> String {
    let (status, run) = agent.post("/api/v1/runs", json!({"agent_id": workload}));
    assert_eq!(status, 201, "{run}");
    run["run_id"].as_str().unwrap().to_owned()
}

fn wait_version(agent: &EdgeAgent, version: u64) {
    wait_for("the agent to take the new snapshot", Duration::from_secs(30), || {
        (agent.snapshot_version() >= version).then_some(())
    });
}

#[test]
fn access_is_gated_by_planes_and_policies_executed_safely_and_evidenced() {
    let dir = tempfile::tempdir().unwrap();
    let evil = Upstream::start(dir.path(), "evil", "", "http://127.0.0.1:9/");
    let upstream =
        Upstream::start(dir.path(), "upstream", SECRET, &format!("http://127.0.0.1:{}/stolen", evil.port));
    let db = dir.path().join("hr.db");
    sqlite_db(&db);

    let (node, gateway, token) = acme_node(dir.path(), true);
    let op = node.operator_key.clone();
    let cp = Cp { http: &node.http, op: &op };
    let ctl = Ctl { endpoints: vec![format!("http://{}", node.http)] };

    // Sources, then planes (a policy may only name existing planes).
    add_hr_db(&cp, &db);
    cp.ok(
        "POST",
        "/api/v1/tenants/acme/sources",
        Some(json!({
            "source_id": "web-api",
            "asset_type": "HTTP",
            "http": {
                "base_url": format!("http://127.0.0.1:{}", upstream.port),
                "max_response_bytes": 65536,
                "endpoints": [
                    {"endpoint_id": "item", "method": "GET", "path_template": "/items/{id}",
                     "params": [{"name": "id", "type": "STRING"}]},
                    {"endpoint_id": "moved", "method": "GET", "path_template": "/redirect"},
                    {"endpoint_id": "big", "method": "GET", "path_template": "/big"}
                ]
            }
        })),
    );
    // An unverified source cannot be enabled.
    let (status, refused) =
        cp.call("POST", "/api/v1/tenants/acme/sources/hr-db/enable", Some(json!({"reason": "too early"})));
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("ILLEGAL_TRANSITION")), "{refused}");
    // The HTTP probe fails without the credential (401), then passes.
    let failed = cp.ok("POST", "/api/v1/tenants/acme/sources/web-api/verify", None);
    assert_eq!(failed["result"]["status"], "ERROR", "{failed}");
    let set =
        cp.ok("PUT", "/api/v1/tenants/acme/sources/web-api/credential", Some(json!({"secret": SECRET})));
    assert_eq!(set["result"]["has_credential"], true, "{set}");
    cp.verify_and_enable("web-api");
    cp.verify_and_enable("hr-db");

    for (plane, sensitivity, source) in [("hr", "CONFIDENTIAL", "hr-db"), ("web", "PUBLIC", "web-api")] {
        cp.ok(
            "POST",
            "/api/v1/tenants/acme/planes",
            Some(json!({"plane_id": plane, "name": plane, "sensitivity": sensitivity, "bound_source_ids": [source]})),
        );
    }
    let policy = dir.path().join("data.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    ctl.ok(&op, &["policy", "apply", "--tenant", "acme", "-f", policy.to_str().unwrap()]);

    let agent = EdgeAgent::start(&dir.path().join("agent"), &gateway, Some(&token));
    let activated = cp.ok(
        "POST",
        "/api/v1/tenants/acme/planes/web/activate",
        Some(json!({"reason": "owner ok", "confirm": true})),
    );
    wait_version(&agent, activated["tenant_snapshot_version"].as_u64().unwrap());
    let mut accesses = 0;

    // Inactive planes refuse until their owner confirms.
    let run = run_for(&agent, "research-bot");
    let (status, denied) = query(&agent, &run, "eng");
    accesses += 1;
    assert_eq!((status, denied["error"]["code"].as_str()), (403, Some("PLANE_INACTIVE")), "{denied}");
    assert!(denied["error"]["evidence_id"].as_str().is_some(), "{denied}");
    let (status, unconfirmed) =
        cp.call("POST", "/api/v1/tenants/acme/planes/hr/activate", Some(json!({"reason": "go"})));
    assert_eq!((status, unconfirmed["error"]["code"].as_str()), (400, Some("CONFIRMATION_REQUIRED")));
    let activated = cp.ok(
        "POST",
        "/api/v1/tenants/acme/planes/hr/activate",
        Some(json!({"reason": "owner ok", "confirm": true})),
    );
    wait_version(&agent, activated["tenant_snapshot_version"].as_u64().unwrap());

    // A DENY plane refuses a workload no policy allows; a PUBLIC plane
    // does not need one.
    let other = run_for(&agent, "sales-bot");
    let (status, denied) = query(&agent, &other, "eng");
    accesses += 1;
    assert_eq!((status, denied["error"]["code"].as_str()), (403, Some("PLANE_DENIED")), "{denied}");
    let (status, item) =
        access(&agent, &other, "web", "fetch", json!({"endpoint_id": "item", "params": {"id": "42"}}));
    accesses += 1;
    assert_eq!(status, 200, "{item}");
    assert_eq!(item["data"]["authorized"], true, "the sealed credential reached the upstream: {item}");
    assert_eq!(item["doc_ids"], json!(["42"]));

    // Templated SQL: parameters are bound, so injection payloads are inert.
    let (status, rows) = query(&agent, &run, "eng");
    accesses += 1;
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows["data"], json!([{"id": 1, "name": "Ada"}, {"id": 2, "name": "Grace"}]));
    assert_eq!(rows["doc_ids"], json!(["1", "2"]));
    for injection in ["eng' OR '1'='1", "eng'; DROP TABLE people; --"] {
        let (status, rows) = query(&agent, &run, injection);
        accesses += 1;
        assert_eq!((status, rows["rows"].as_u64()), (200, Some(0)), "{injection}: {rows}");
    }
    // The fourth query reaches the run's DB_QUERIES budget (WARN at 80%);
    // the fifth stops the run, and the table is intact for a fresh run.
    let (status, fourth) = query(&agent, &run, "eng");
    accesses += 1;
    assert_eq!((status, fourth["decision"]["outcome"].as_str()), (200, Some("WARN")), "{fourth}");
    let (status, stopped) = query(&agent, &run, "eng");
    accesses += 1;
    assert_eq!((status, stopped["error"]["code"].as_str()), (403, Some("POLICY_DENIED")), "{stopped}");
    assert_eq!(stopped["error"]["run_status"], "failed_policy", "{stopped}");
    // An ended run's attempt is refused and evidenced too.
    let (status, ended) = query(&agent, &run, "eng");
    accesses += 1;
    assert_eq!((status, ended["error"]["code"].as_str()), (409, Some("RUN_ENDED")), "{ended}");
    assert!(ended["error"]["evidence_id"].as_str().is_some(), "{ended}");
    let fresh = run_for(&agent, "research-bot");
    let (status, rows) = query(&agent, &fresh, "eng");
    accesses += 1;
    assert_eq!((status, rows["rows"].as_u64()), (200, Some(2)), "DROP TABLE did nothing: {rows}");

    // Bad parameters are the caller's error, evidenced too.
    let (status, bad) =
        access(&agent, &fresh, "hr", "query", json!({"template_id": "by-dept", "params": {"dept": 7}}));
    accesses += 1;
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("INVALID_PARAMS")), "{bad}");
    // No raw SQL can be expressed at all.
    let (status, raw) =
        access(&agent, &fresh, "hr", "query", json!({"template_id": "by-dept", "sql": "SELECT 1"}));
    assert_eq!(status, 400, "{raw}");

    // HTTP parameters stay in their segment; redirects are not followed;
    // the size cap holds.
    let (status, item) = access(
        &agent,
        &fresh,
        "web",
        "fetch",
        json!({"endpoint_id": "item", "params": {"id": "../admin?x=1"}}),
    );
    accesses += 1;
    assert_eq!(status, 200, "{item}");
    assert_eq!(item["data"]["path"], "/items/..%2Fadmin%3Fx%3D1", "{item}");
    let (status, moved) = access(&agent, &fresh, "web", "fetch", json!({"endpoint_id": "moved"}));
    accesses += 1;
    assert_eq!((status, moved["error"]["code"].as_str()), (502, Some("REDIRECT_REFUSED")), "{moved}");
    assert!(evil.requests().is_empty(), "the redirect target was never contacted");
    let (status, big) = access(&agent, &fresh, "web", "fetch", json!({"endpoint_id": "big"}));
    accesses += 1;
    assert_eq!((status, big["error"]["code"].as_str()), (502, Some("RESPONSE_TOO_LARGE")), "{big}");
    assert!(
        upstream
            .requests()
            .iter()
            .all(|p| p == "/" || p.starts_with("/items/") || p == "/redirect" || p == "/big"),
        "{:?}",
        upstream.requests()
    );

    // Another tenant's plane id fails hard and is called out in the ledger.
    ctl.ok(&op, &["tenant", "create", "globex", "--name", "Globex"]);
    cp.ok(
        "POST",
        "/api/v1/tenants/globex/planes",
        Some(json!({"plane_id": "globex-payroll", "name": "payroll", "sensitivity": "RESTRICTED"})),
    );
    let (status, cross) = access(
        &agent,
        &fresh,
        "globex-payroll",
        "query",
        json!({"template_id": "by-dept", "params": {"dept": "eng"}}),
    );
    accesses += 1;
    assert_eq!((status, cross["error"]["code"].as_str()), (403, Some("UNKNOWN_PLANE")), "{cross}");

    // A disabled source refuses with a clear error.
    let disabled =
        cp.ok("POST", "/api/v1/tenants/acme/sources/hr-db/disable", Some(json!({"reason": "maintenance"})));
    wait_version(&agent, disabled["tenant_snapshot_version"].as_u64().unwrap());
    let (status, off) = query(&agent, &fresh, "eng");
    accesses += 1;
    assert_eq!((status, off["error"]["code"].as_str()), (403, Some("SOURCE_NOT_ENABLED")), "{off}");
    assert!(off["error"]["message"].as_str().unwrap().contains("DISABLED"), "{off}");

    // Every attempt, allowed or not, is evidence at the control plane.
    let evidence = wait_for("every evidence record at the control plane", Duration::from_secs(30), || {
        let page = cp.ok("GET", "/api/v1/tenants/acme/records?kind=RETRIEVAL_EVIDENCE&limit=1000", None);
        let records = page["records"].as_array().cloned().unwrap_or_default();
        (records.len() >= accesses).then_some(records)
    });
    assert_eq!(evidence.len(), accesses, "one evidence record per access");
    let outcomes: Vec<&str> = evidence.iter().filter_map(|r| r["body"]["outcome"].as_str()).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "ALLOWED").count(), 7, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == "FAILED").count(), 2, "redirect and size cap: {outcomes:?}");
    let first_allowed = evidence.iter().find(|r| r["body"]["outcome"] == "ALLOWED").unwrap();
    assert_eq!(first_allowed["body"]["policy_snapshot_hash"].as_str().unwrap().len(), 64);
    let audit = ctl.ok(&op, &["-o", "json", "audit", "list"]);
    assert!(audit.contains("CROSS-TENANT ACCESS REFUSED") && audit.contains("globex-payroll"), "{audit}");
    assert!(audit.contains("CREDENTIAL_SET") && audit.contains("PLANE_ACTIVATED"), "{audit}");

    // The secret is nowhere: not in API answers, the ledger, either log.
    let sources = cp.ok("GET", "/api/v1/tenants/acme/sources", None).to_string();
    let needle = "s3cr3t-upstream-token";
    for (what, text) in [
        ("sources API", sources),
        ("audit ledger", audit),
        ("evidence", serde_json::to_string(&evidence).unwrap()),
        ("control-plane log", std::fs::read_to_string(&node.log).unwrap_or_default()),
        ("edge-agent log", std::fs::read_to_string(dir.path().join("agent/agent.log")).unwrap()),
    ] {
        assert!(!text.contains(needle), "the credential leaked into the {what}");
    }
    // At rest on the agent the data key is sealed; the snapshot holds only
    // ciphertext.
    let store = std::fs::read_dir(dir.path().join("agent")).unwrap().count();
    assert!(store > 0);
}

#[test]
fn aosctl_manages_sources_and_planes_without_ever_printing_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kb.db");
    sqlite_db(&db);
    let node = start_single_node(dir.path(), &[]);
    let op = node.operator_key.clone();
    let ctl = Ctl { endpoints: vec![format!("http://{}", node.http)] };
    ctl.ok(&op, &["tenant", "create", "acme", "--name", "Acme"]);
    let file = dir.path().join("kb.yaml");
    std::fs::write(
        &file,
        format!(
            "source_id: kb\nasset_type: SQL\nsql:\n  engine: SQLITE\n  target: {}\n  templates:\n    - template_id: by-dept\n      statement: SELECT id FROM people WHERE dept = :dept\n      params: [{{name: dept, type: STRING}}]\n      max_rows: 5\n",
            db.display()
        ),
    )
    .unwrap();
    let out = ctl.ok(&op, &["source", "apply", "--tenant", "acme", "-f", file.to_str().unwrap()]);
    assert!(out.contains("source `kb` is CREATED"), "{out}");

    // The secret never goes on the command line: no flag is a usage error.
    let o = ctl.run(&op, &["source", "credential", "--tenant", "acme", "kb"]);
    assert_eq!(o.status.code(), Some(2), "{}", crate::support::err(&o));
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "kb-pass-99a1\n").unwrap();
    let out = ctl.ok(
        &op,
        &["source", "credential", "--tenant", "acme", "kb", "--from-file", secret_file.to_str().unwrap()],
    );
    assert!(out.contains("sealed with data key") && out.contains("CREATED"), "{out}");
    let out = ctl.ok(&op, &["source", "verify", "--tenant", "acme", "kb"]);
    assert!(out.contains("VERIFIED") && out.contains("configuration checked"), "{out}");
    ctl.ok(&op, &["source", "enable", "--tenant", "acme", "kb", "--reason", "reviewed"]);
    let listed = ctl.ok(&op, &["source", "list", "--tenant", "acme"]);
    assert!(listed.contains("ENABLED") && listed.contains("set"), "{listed}");

    let out = ctl.ok(
        &op,
        &[
            "plane",
            "apply",
            "--tenant",
            "acme",
            "--id",
            "kb",
            "--name",
            "KB",
            "--sensitivity",
            "internal",
            "--source",
            "kb",
        ],
    );
    assert!(out.contains("default DENY") && out.contains("inactive"), "{out}");
    let refused = ctl.run(&op, &["plane", "activate", "--tenant", "acme", "kb", "--reason", "owner"]);
    assert!(!refused.status.success());
    assert!(
        crate::support::err(&refused).contains("CONFIRMATION_REQUIRED"),
        "{}",
        crate::support::err(&refused)
    );
    ctl.ok(&op, &["plane", "activate", "--tenant", "acme", "kb", "--reason", "owner", "--confirm"]);
    let planes = ctl.ok(&op, &["plane", "list", "--tenant", "acme"]);
    assert!(planes.contains("kb") && planes.contains("yes"), "{planes}");

    // Without --alert-private-targets, a probe from the control plane
    // never reaches a private address on a tenant's behalf (SSRF).
    let internal = dir.path().join("internal.yaml");
    std::fs::write(
        &internal,
        "source_id: internal\nasset_type: HTTP\nhttp:\n  base_url: http://127.0.0.1:9\n  endpoints: []\n",
    )
    .unwrap();
    ctl.ok(&op, &["source", "apply", "--tenant", "acme", "-f", internal.to_str().unwrap()]);
    let refused = ctl.run(&op, &["source", "verify", "--tenant", "acme", "internal"]);
    assert!(!refused.status.success());
    let said = crate::support::out(&refused);
    assert!(
        said.contains("ERROR") && said.contains("TARGET_REFUSED") && said.contains("non-public"),
        "{said}"
    );

    // Bad input gets a typed 4xx with a JSON body and changes nothing; a
    // malformed credential body is never echoed.
    let cp = Cp { http: &node.http, op: &op };
    let credential = "/api/v1/tenants/acme/sources/kb/credential";
    for (method, path, body, status, code) in [
        ("PUT", credential, json!({"secret": ""}), 400, "INVALID_INPUT"),
        ("PUT", credential, json!({"secret": 5, "note": "leak-me-7"}), 400, "INVALID_INPUT"),
        ("PUT", "/api/v1/tenants/acme/sources/nope/credential", json!({"secret": "x"}), 404, "NOT_FOUND"),
        ("POST", "/api/v1/tenants/acme/sources/kb/explode", json!({"reason": "x"}), 404, "NOT_FOUND"),
        ("POST", "/api/v1/tenants/acme/sources/kb/disable", json!({}), 400, "INVALID_INPUT"),
        (
            "POST",
            "/api/v1/tenants/acme/sources",
            json!({"source_id": "h", "asset_type": "HTTP"}),
            400,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/api/v1/tenants/acme/planes/nope/activate",
            json!({"reason": "x", "confirm": true}),
            404,
            "NOT_FOUND",
        ),
        ("GET", "/api/v1/tenants/acme/sources/nope", json!(null), 404, "NOT_FOUND"),
    ] {
        let (got, answer) = cp.call(method, path, Some(body));
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {answer}"
        );
        assert!(!answer.to_string().contains("leak-me-7"), "{answer}");
    }
    let (_, invalid) = cp.call(
        "POST",
        "/api/v1/tenants/acme/sources",
        Some(json!({"source_id": "h", "asset_type": "HTTP"})),
    );
    assert_eq!(invalid["error"]["field_errors"][0]["path"], "source.http", "{invalid}");
    let listed_after = ctl.ok(&op, &["source", "list", "--tenant", "acme"]);
    assert!(
        listed_after.contains("ENABLED") && listed_after.contains("set"),
        "nothing changed: {listed_after}"
    );

    let shown = ctl.ok(&op, &["source", "show", "--tenant", "acme", "kb"]);
    let audit = ctl.ok(&op, &["-o", "json", "audit", "list"]);
    for text in [&out, &listed, &planes, &shown, &audit] {
        assert!(!text.contains("kb-pass-99a1"), "the secret was printed: {text}");
    }
}

#[test]
fn mcp_tools_are_called_only_when_allowed_and_the_credential_reaches_the_server_alone() {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("mcp-calls.log");
    let (node, gateway, token) = acme_node(dir.path(), false);
    let op = node.operator_key.clone();
    let cp = Cp { http: &node.http, op: &op };
    let server = crate::support::binary("aos-test-mcp-server");
    let source = |tools: Value| {
        json!({
            "source_id": "orders-mcp",
            "asset_type": "MCP",
            "mcp": {"command": server, "args": ["--log", calls], "allowed_tools": tools}
        })
    };
    cp.ok("POST", "/api/v1/tenants/acme/sources", Some(source(json!(["lookup_order"]))));
    cp.ok(
        "PUT",
        "/api/v1/tenants/acme/sources/orders-mcp/credential",
        Some(json!({"secret": "mcp-token-31"})),
    );
    // The control plane never starts a tenant's MCP server: it checks the
    // configuration; the server runs only next to the workload.
    let verified = cp.ok("POST", "/api/v1/tenants/acme/sources/orders-mcp/verify", None);
    let detail = verified["result"]["last_probe"]["detail"].as_str().unwrap();
    assert!(detail.contains("configuration checked (1 allowed tools)"), "{detail}");
    assert!(!calls.exists(), "no server was started by the control plane");
    let [_, _, activated] = enable_into_orders_plane(&cp, "orders-mcp");

    let agent = EdgeAgent::start(&dir.path().join("agent"), &gateway, Some(&token));
    wait_version(&agent, activated["tenant_snapshot_version"].as_u64().unwrap());
    let run = run_for(&agent, "support-bot");
    let (status, order) = access(
        &agent,
        &run,
        "orders",
        "call_tool",
        json!({"tool": "lookup_order", "arguments": {"order_id": "o-17"}}),
    );
    assert_eq!(status, 200, "{order}");
    assert_eq!(
        order["data"],
        json!({"id": "o-17", "status": "shipped", "credential_ok": true, "env": ["AOS_CONNECTOR_CREDENTIAL", "PATH"]}),
        "the server gets the credential and PATH, nothing of the agent's environment"
    );
    assert_eq!(order["doc_ids"], json!(["o-17"]));

    refuse_a_tool_not_allowed(&agent, &run, &calls);
}

/// The test MCP server over streamable HTTP, as a process on loopback.
struct McpHttpServer {
    child: Child,
}

impl McpHttpServer {
    /// Starts it on `port` and waits until it accepts connections.
    fn start(port: u16, calls: &Path) -> McpHttpServer {
        let mut child = Command::new(crate::support::binary("aos-test-mcp-server"))
            .args(["--http", &format!("127.0.0.1:{port}"), "--log"])
            .arg(calls)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the MCP server to accept connections", Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the MCP server exited with {status}");
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
        });
        McpHttpServer { child }
    }
}

impl Drop for McpHttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn mcp_tools_over_streamable_http_are_gated_carry_the_credential_as_a_bearer_token_and_survive_a_server_restart()
 {
    const TOKEN: &str = "mcp-token-31";
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("mcp-http-calls.log");
    let port = free_port();
    let server = McpHttpServer::start(port, &calls);
    let url = format!("http://127.0.0.1:{port}/mcp");

    let (node, gateway, token) = acme_node(dir.path(), true);
    let op = node.operator_key.clone();
    let cp = Cp { http: &node.http, op: &op };
    let ctl = Ctl { endpoints: vec![format!("http://{}", node.http)] };
    let mut answers = Vec::new();

    answers.push(cp.ok(
        "POST",
        "/api/v1/tenants/acme/sources",
        Some(json!({
            "source_id": "orders-http",
            "asset_type": "MCP",
            "mcp": {"url": url, "allowed_tools": ["lookup_order"], "timeout_ms": 3000}
        })),
    ));
    answers.push(cp.ok(
        "PUT",
        "/api/v1/tenants/acme/sources/orders-http/credential",
        Some(json!({"secret": TOKEN})),
    ));
    // The control plane connects like it does to HTTP sources: it lists the
    // tools (nothing is called) and closes the session.
    let verified = cp.ok("POST", "/api/v1/tenants/acme/sources/orders-http/verify", None);
    assert_eq!(verified["result"]["status"], "VERIFIED", "{verified}");
    let detail = verified["result"]["last_probe"]["detail"].as_str().unwrap();
    assert!(detail.contains("all 1 allowed tools present") && detail.contains(&url), "{detail}");
    assert!(std::fs::read_to_string(&calls).unwrap_or_default().is_empty(), "the probe called no tool");
    answers.push(verified);
    let [enabled, plane, activated] = enable_into_orders_plane(&cp, "orders-http");
    answers.extend([enabled, plane]);

    let agent = EdgeAgent::start(&dir.path().join("agent"), &gateway, Some(&token));
    wait_version(&agent, activated["tenant_snapshot_version"].as_u64().unwrap());
    answers.push(activated);
    let run = run_for(&agent, "support-bot");
    let lookup = json!({"tool": "lookup_order", "arguments": {"order_id": "o-17"}});
    let (status, order) = access(&agent, &run, "orders", "call_tool", lookup.clone());
    assert_eq!(status, 200, "{order}");
    assert_eq!(
        order["data"],
        json!({"id": "o-17", "status": "shipped", "credential_ok": true, "token_in_url": false}),
        "the token reached the server as `Authorization: Bearer`, and only there"
    );
    assert_eq!(order["doc_ids"], json!(["o-17"]));
    answers.push(order);

    answers.push(refuse_a_tool_not_allowed(&agent, &run, &calls));

    // The server goes away: a clear upstream error, evidenced, no panic.
    drop(server);
    let (status, down) = access(&agent, &run, "orders", "call_tool", lookup.clone());
    assert_eq!((status, down["error"]["code"].as_str()), (502, Some("UPSTREAM_FAILED")), "{down}");
    let message = down["error"]["message"].as_str().unwrap();
    assert!(message.contains("lookup_order") && message.contains("Connection refused"), "{message}");
    assert!(down["error"]["evidence_id"].as_str().is_some(), "{down}");
    answers.push(down);

    // Back on the same port: the broken session was dropped and the next
    // call opens a new one.
    let _server = McpHttpServer::start(port, &calls);
    let (status, again) = access(&agent, &run, "orders", "call_tool", lookup);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["credential_ok"], true, "{again}");
    answers.push(again);
    let received = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(received.lines().collect::<Vec<_>>(), ["lookup_order", "lookup_order"]);

    // Every attempt is evidence at the control plane.
    let evidence = wait_for("every evidence record at the control plane", Duration::from_secs(30), || {
        let page = cp.ok("GET", "/api/v1/tenants/acme/records?kind=RETRIEVAL_EVIDENCE&limit=1000", None);
        let records = page["records"].as_array().cloned().unwrap_or_default();
        (records.len() >= 4).then_some(records)
    });
    assert_eq!(evidence.len(), 4, "one evidence record per access");
    let outcomes: Vec<(&str, Option<&str>)> = evidence
        .iter()
        .map(|r| (r["body"]["outcome"].as_str().unwrap(), r["body"]["code"].as_str()))
        .collect();
    for expected in
        [("ALLOWED", None), ("DENIED", Some("UNKNOWN_TARGET")), ("FAILED", Some("UPSTREAM_FAILED"))]
    {
        assert!(outcomes.contains(&expected), "{expected:?} in {outcomes:?}");
    }
    assert_eq!(outcomes.iter().filter(|(o, _)| *o == "ALLOWED").count(), 2, "{outcomes:?}");

    // The token is nowhere: not in API answers, the ledger, evidence or
    // either log.
    let sources = cp.ok("GET", "/api/v1/tenants/acme/sources", None).to_string();
    let audit = ctl.ok(&op, &["-o", "json", "audit", "list"]);
    for (what, text) in [
        ("API answers", serde_json::to_string(&answers).unwrap()),
        ("sources API", sources),
        ("audit ledger", audit),
        ("evidence", serde_json::to_string(&evidence).unwrap()),
        ("control-plane log", std::fs::read_to_string(&node.log).unwrap_or_default()),
        ("edge-agent log", std::fs::read_to_string(dir.path().join("agent/agent.log")).unwrap()),
    ] {
        assert!(!text.contains(TOKEN), "the credential leaked into the {what}");
    }
}

/// Lets `research-bot` read the `hr` plane (the gRPC test's only plane).
const HR_POLICY: &str = "api_version: aos/v1
policies:
  - id: pol-research-hr
    name: research bot may read HR data
    status: ACTIVE
    scope: { type: AGENT, ids: [research-bot] }
    monitors:
      rag_access: { enabled: true, allowed_planes: [hr] }
      db_queries: true
    limits:
      - { signal: DB_QUERIES, max: 100, window: PER_RUN }
    actions: { on_breach: STOP }
";

/// A gRPC `LocalAccess` client on its own runtime (the tests are
/// synchronous).
struct GrpcAccess {
    runtime: tokio::runtime::Runtime,
    client: LocalAccessClient<tonic::transport::Channel>,
}

impl GrpcAccess {
    fn connect(addr: &str) -> GrpcAccess {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = runtime.block_on(LocalAccessClient::connect(format!("http://{addr}"))).unwrap();
        GrpcAccess { runtime, client }
    }

    /// `Access` with `authorization: <authorization>`: the answer, or the
    /// status code and its message parsed as the JSON error body.
    fn access(
        &mut self,
        authorization: Option<&str>,
        run: &str,
        plane: &str,
        action: &str,
        payload_json: &[u8],
    ) -> Result<Value, (tonic::Code, Value)> {
        let mut request = tonic::Request::new(AccessRequest {
            run_id: run.to_owned(),
            plane: plane.to_owned(),
            action: action.to_owned(),
            payload_json: payload_json.to_vec(),
        });
        if let Some(value) = authorization {
            request.metadata_mut().insert("authorization", value.parse().unwrap());
        }
        request.set_timeout(Duration::from_secs(10));
        match self.runtime.block_on(self.client.access(request)) {
            Ok(reply) => Ok(serde_json::from_slice(&reply.into_inner().answer_json).unwrap()),
            Err(status) => {
                let body = serde_json::from_str(status.message())
                    .unwrap_or_else(|_| panic!("not a JSON error body: {status:?}"));
                Err((status.code(), body))
            }
        }
    }
}

/// The gRPC equivalent of `POST /api/v1/access` (issue 6): the same
/// answer, the same refusals (with their codes and evidence ids) under
/// the same authentication and run ownership, and evidence for every
/// attempt that reached the engine.
#[test]
fn grpc_access_answers_like_the_http_api_with_the_same_auth_and_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hr.db");
    sqlite_db(&db);
    let (node, gateway, token) = acme_node(dir.path(), false);
    let op = node.operator_key.clone();
    let cp = Cp { http: &node.http, op: &op };
    let ctl = Ctl { endpoints: vec![format!("http://{}", node.http)] };
    add_hr_db(&cp, &db);
    cp.verify_and_enable("hr-db");
    cp.ok(
        "POST",
        "/api/v1/tenants/acme/planes",
        Some(json!({"plane_id": "hr", "name": "hr", "sensitivity": "CONFIDENTIAL", "bound_source_ids": ["hr-db"]})),
    );
    let policy = dir.path().join("hr.yaml");
    std::fs::write(&policy, HR_POLICY).unwrap();
    ctl.ok(&op, &["policy", "apply", "--tenant", "acme", "-f", policy.to_str().unwrap()]);
    let create = |name: &str| -> String {
        let out = ctl.ok(
            &op,
            &["-o", "json", "key", "create", "--tenant", "acme", "--name", name, "--role", "workload"],
        );
        serde_json::from_str::<Value>(&out).unwrap()["secret"].as_str().unwrap().to_owned()
    };
    let (key1, key2) = (create("bot-1"), create("bot-2"));
    let activated = cp.ok(
        "POST",
        "/api/v1/tenants/acme/planes/hr/activate",
        Some(json!({"reason": "owner ok", "confirm": true})),
    );

    let grpc = format!("127.0.0.1:{}", free_port());
    let agent = EdgeAgent::start_with(
        &dir.path().join("agent"),
        &gateway,
        Some(&token),
        &["--auth", "required", "--grpc-listen", &grpc],
    );
    wait_version(&agent, activated["tenant_snapshot_version"].as_u64().unwrap());
    let runs = agent.url("/api/v1/runs");
    let start = |key: &str, workload: &str| -> String {
        let (status, run) = call_with_key("POST", &runs, Some(key), Some(json!({"agent_id": workload})));
        assert_eq!(status, 201, "{run}");
        run["run_id"].as_str().unwrap().to_owned()
    };
    let run = start(&key1, "research-bot");
    let other = start(&key1, "sales-bot");
    let bearer1 = format!("Bearer {key1}");
    let http = |run: &str, payload: Value| {
        call_with_key(
            "POST",
            &agent.url("/api/v1/access"),
            Some(&key1),
            Some(json!({"run_id": run, "plane": "hr", "action": "query", "payload": payload})),
        )
    };
    let eng = json!({"template_id": "by-dept", "params": {"dept": "eng"}});
    let eng_json = eng.to_string().into_bytes();
    let mut client = GrpcAccess::connect(&grpc);
    let mut accesses = 0;

    // The capabilities name the gRPC endpoint.
    let (status, caps) = call_with_key("GET", &agent.url("/api/v1/capabilities"), Some(&key1), None);
    assert_eq!(status, 200, "{caps}");
    assert_eq!(caps["data_access"]["grpc"]["address"], grpc.as_str(), "{caps}");
    assert_eq!(caps["data_access"]["grpc"]["service"], "aos.agent.local.v1.LocalAccess", "{caps}");

    // Allowed: the same answer as the HTTP endpoint, its own evidence.
    let (status, over_http) = http(&run, eng.clone());
    accesses += 1;
    assert_eq!(status, 200, "{over_http}");
    let over_grpc = client.access(Some(&bearer1), &run, "hr", "query", &eng_json).unwrap();
    accesses += 1;
    for field in ["plane_id", "source_id", "data", "doc_ids", "rows", "truncated", "run_status"] {
        assert_eq!(over_grpc[field], over_http[field], "{field}: {over_grpc} vs {over_http}");
    }
    assert_eq!(over_grpc["data"], json!([{"id": 1, "name": "Ada"}, {"id": 2, "name": "Grace"}]));
    assert_eq!(over_grpc["doc_ids"], json!(["1", "2"]));
    assert_eq!(over_grpc["rows"], 2);
    assert_eq!(over_grpc["decision"]["outcome"], over_http["decision"]["outcome"], "{over_grpc}");
    let grpc_evidence = over_grpc["evidence_id"].as_str().unwrap().to_owned();
    assert_ne!(Some(grpc_evidence.as_str()), over_http["evidence_id"].as_str());

    // A DENY-default plane refuses a workload no policy allows: the same
    // code and message as over HTTP, with its evidence id.
    let (status, denied_http) = http(&other, eng.clone());
    accesses += 1;
    assert_eq!((status, denied_http["error"]["code"].as_str()), (403, Some("PLANE_DENIED")), "{denied_http}");
    let (code, denied) = client.access(Some(&bearer1), &other, "hr", "query", &eng_json).unwrap_err();
    accesses += 1;
    assert_eq!(
        (code, denied["error"]["code"].as_str()),
        (tonic::Code::PermissionDenied, Some("PLANE_DENIED"))
    );
    assert_eq!(denied["error"]["message"], denied_http["error"]["message"], "{denied}");
    assert!(denied["error"]["evidence_id"].as_str().is_some(), "{denied}");
    // An unknown template is refused and evidenced too.
    let (code, unknown) =
        client.access(Some(&bearer1), &run, "hr", "query", br#"{"template_id": "everything"}"#).unwrap_err();
    accesses += 1;
    assert_eq!(
        (code, unknown["error"]["code"].as_str()),
        (tonic::Code::PermissionDenied, Some("UNKNOWN_TARGET"))
    );
    assert!(unknown["error"]["evidence_id"].as_str().is_some(), "{unknown}");
    // An unknown action is bad input (not an access: no evidence, like
    // over HTTP).
    let (code, bad) = client.access(Some(&bearer1), &run, "hr", "drop_table", &eng_json).unwrap_err();
    assert_eq!((code, bad["error"]["code"].as_str()), (tonic::Code::InvalidArgument, Some("INVALID_INPUT")));
    assert!(bad["error"]["message"].as_str().unwrap().contains("unknown action `drop_table`"), "{bad}");
    // A malformed payload names the problem.
    for payload in [&b"{\"template_id\": "[..], b"[\"by-dept\"]"] {
        let (code, bad) = client.access(Some(&bearer1), &run, "hr", "query", payload).unwrap_err();
        assert_eq!(
            (code, bad["error"]["code"].as_str()),
            (tonic::Code::InvalidArgument, Some("INVALID_INPUT"))
        );
        assert!(bad["error"]["message"].as_str().unwrap().starts_with("payload_json: "), "{bad}");
    }
    // An unknown run is NOT_FOUND.
    let (code, _) = client.access(Some(&bearer1), "run-nope", "hr", "query", &eng_json).unwrap_err();
    assert_eq!(code, tonic::Code::NotFound);

    // The HTTP API's authentication: no key, a wrong key, not Bearer.
    for authorization in [None, Some("Bearer aos_wrong"), Some(format!("Basic {key1}").as_str())] {
        let (code, refused) = client.access(authorization, &run, "hr", "query", &eng_json).unwrap_err();
        assert_eq!(
            (code, refused["error"]["code"].as_str()),
            (tonic::Code::Unauthenticated, Some("UNAUTHENTICATED")),
            "{authorization:?}: {refused}"
        );
        assert!(!refused.to_string().contains(&key1), "the presented key is not echoed: {refused}");
    }
    // Another key's run is refused before it reaches the engine.
    let (code, forbidden) =
        client.access(Some(&format!("Bearer {key2}")), &run, "hr", "query", &eng_json).unwrap_err();
    assert_eq!(
        (code, forbidden["error"]["code"].as_str()),
        (tonic::Code::PermissionDenied, Some("FORBIDDEN"))
    );

    // Every attempt that reached the engine, and only those, is evidence
    // at the control plane, the gRPC ones included.
    let evidence = wait_for("every evidence record at the control plane", Duration::from_secs(30), || {
        let page = cp.ok("GET", "/api/v1/tenants/acme/records?kind=RETRIEVAL_EVIDENCE&limit=1000", None);
        let records = page["records"].as_array().cloned().unwrap_or_default();
        (records.len() >= accesses).then_some(records)
    });
    assert_eq!(evidence.len(), accesses, "one evidence record per access");
    for id in [Some(grpc_evidence.as_str()), denied["error"]["evidence_id"].as_str()] {
        assert!(evidence.iter().any(|r| r["body"]["evidence_id"].as_str() == id), "{id:?} is evidenced");
    }
}
