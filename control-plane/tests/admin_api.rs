//! The tenant-scoped admin API against one real `aos-control-plane`
//! process: keys, policies (YAML documents, versions, diff, dry run,
//! lifecycle), overrides, and the authorisation rules (role, tenant,
//! revoked key), with denials checked in the audit ledger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::path::Path;
use std::time::Duration;

mod support;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{NodeProc, wait_for};

/// Starts node 1 with `--init`; returns its HTTP address and the process.
fn start(dir: &Path) -> (String, NodeProc) {
    let node = NodeProc::start(1, dir, true);
    (node.http.clone(), node)
}

enum Body<'a> {
    None,
    Json(Value),
    Raw(&'a str, &'a str),
}

fn call(method: &str, url: &str, key: Option<&str>, body: Body<'_>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let auth = key.map(|k| format!("Bearer {k}"));
    let result = match (method, body) {
        ("GET", Body::None) => {
            let mut req = agent.get(url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        }
        ("POST", body) => {
            let mut req = agent.post(url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            match body {
                Body::None => req.send_empty(),
                Body::Json(v) => req.send_json(&v),
                Body::Raw(content_type, text) => {
                    req.header("Content-Type", content_type).send(text.as_bytes())
                }
            }
        }
        _ => panic!("unsupported call"),
    };
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let body = response.body_mut().read_json::<Value>().unwrap_or(Value::Null);
            (status, body)
        }
        Err(e) => (0, json!({"transport_error": e.to_string()})),
    }
}

struct Api {
    base: String,
}

impl Api {
    fn get(&self, path: &str, key: &str) -> (u16, Value) {
        call("GET", &format!("{}{path}", self.base), Some(key), Body::None)
    }
    fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        call("POST", &format!("{}{path}", self.base), Some(key), Body::Json(body))
    }
    fn post_yaml(&self, path: &str, key: &str, yaml: &str) -> (u16, Value) {
        call("POST", &format!("{}{path}", self.base), Some(key), Body::Raw("application/yaml", yaml))
    }
    /// Creates a key of `tenant` with `role`; returns (key_id, secret).
    fn create_key(&self, by: &str, tenant: &str, key_id: &str, role: &str) -> (String, String) {
        let (status, body) = self.post(
            &format!("/api/v1/tenants/{tenant}/keys"),
            by,
            json!({"key_id": key_id, "name": key_id, "role": role}),
        );
        assert_eq!(status, 200, "create key {key_id}: {body}");
        assert_eq!(body["key_id"], key_id);
        let secret = body["secret"].as_str().unwrap().to_owned();
        (key_id.to_owned(), secret)
    }
    fn policy(&self, tenant: &str, id: &str, key: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/tenants/{tenant}/policies/{id}"), key);
        assert_eq!(status, 200, "get policy {id}: {body}");
        body
    }
    fn audit(&self, operator: &str) -> Vec<Value> {
        let (status, body) = self.get("/api/v1/audit?limit=1000", operator);
        assert_eq!(status, 200, "audit: {body}");
        body["entries"].as_array().unwrap().clone()
    }
}

fn denied(entries: &[Value], actor: &str, target: &str) -> bool {
    entries
        .iter()
        .any(|e| e["action"] == "ACCESS_DENIED" && e["actor"]["actor_id"] == actor && e["target"] == target)
}

const BUDGETS: &str = include_str!("../../deploy/examples/budgets.yaml");

#[test]
fn tenant_admin_api_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (http, _proc) = start(dir.path());
    let key_path = dir.path().join("node1/operator.key");
    let op = wait_for("the operator key", Duration::from_secs(30), || {
        std::fs::read_to_string(&key_path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
    });
    let api = Api { base: format!("http://{http}") };
    wait_for("the node to accept writes", Duration::from_secs(30), || {
        let (status, _) = api.post("/api/v1/tenants", &op, json!({"tenant_id": "acme", "name": "Acme"}));
        (status == 200).then_some(())
    });
    let (status, body) = api.post("/api/v1/tenants", &op, json!({"tenant_id": "beta", "name": "Beta"}));
    assert_eq!(status, 200, "{body}");

    // A tenant admin key: the secret is returned once and never listed.
    let (admin_id, admin) = api.create_key(&op, "acme", "acme-admin", "admin");
    assert!(admin.starts_with("aos_") && admin.len() == 4 + 64, "32 random bytes in hex: {admin}");
    let (status, keys) = api.get("/api/v1/tenants/acme/keys", &admin);
    assert_eq!(status, 200, "{keys}");
    let listed = keys.to_string();
    assert!(listed.contains(&admin_id), "{listed}");
    assert!(!listed.contains(&admin), "the secret must not be listed");
    assert!(!listed.contains(&hex::encode(Sha256::digest(admin.as_bytes()))), "the hash must not be listed");
    assert!(keys["keys"][0].get("secret").is_none() && keys["keys"][0].get("secret_hash").is_none());
    // Idempotency-Key: a retried create returns the original result.
    let create_project_as = |key: &str, project: &str| {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut response = agent
            .post(&format!("{}/api/v1/tenants/acme/projects", api.base))
            .header("Authorization", &format!("Bearer {key}"))
            .header("Idempotency-Key", "create-web-1")
            .send_json(json!({"project_id": project, "name": "Web"}))
            .unwrap();
        (response.status().as_u16(), response.body_mut().read_json::<Value>().unwrap())
    };
    let create_project = || create_project_as(&admin, "web");
    let (first_status, first) = create_project();
    let (second_status, second) = create_project();
    assert_eq!((first_status, second_status), (200, 200), "{first} {second}");
    assert_eq!(first["audit_seq"], second["audit_seq"], "a replay is not a second command");
    let (status, projects) = api.get("/api/v1/tenants/acme/projects", &admin);
    assert_eq!(status, 200);
    assert_eq!(projects["projects"].as_array().map(Vec::len), Some(1), "{projects}");
    // Another caller's same Idempotency-Key is its own request: never a
    // replay of (and a window into) the first caller's answer.
    let (_, other_admin) = api.create_key(&admin, "acme", "acme-admin-2", "admin");
    let (status, other) = create_project_as(&other_admin, "api");
    assert_eq!(status, 200, "{other}");
    assert_ne!(other["audit_seq"], first["audit_seq"], "{other}");
    assert_eq!(other["result"]["project_id"], "api", "{other}");
    let (status, body) = api.post("/api/v1/tenants/acme/projects", &admin, json!({"project_id": "web"}));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("name"), "names the missing field: {body}");

    // An auditor reads but changes nothing.
    let (auditor_id, auditor) = api.create_key(&admin, "acme", "acme-auditor", "auditor");
    let (status, _) = api.get("/api/v1/tenants/acme/keys", &auditor);
    assert_eq!(status, 200);
    let (status, _) = api.post(
        "/api/v1/tenants/acme/actors",
        &auditor,
        json!({"actor_id": "bob", "display_name": "Bob", "role": "sre"}),
    );
    assert_eq!(status, 403);
    assert!(denied(&api.audit(&op), &auditor_id, "tenants/acme/actors"));
    let (status, body) = api.post(
        "/api/v1/tenants/acme/actors",
        &admin,
        json!({"actor_id": "bob", "display_name": "Bob", "role": "sre"}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, actors) = api.get("/api/v1/tenants/acme/actors", &auditor);
    assert_eq!(status, 200);
    assert_eq!(actors["actors"][0]["actor_id"], "bob", "{actors}");

    // Apply the example document as YAML.
    let (status, body) = api.post_yaml("/api/v1/tenants/acme/policies", &admin, BUDGETS);
    assert_eq!(status, 200, "apply budgets.yaml: {body}");
    assert_eq!(body["applied"].as_array().map(Vec::len), Some(3), "{body}");
    let (status, list) = api.get("/api/v1/tenants/acme/policies", &admin);
    assert_eq!(status, 200);
    let ids: Vec<&str> =
        list["policies"].as_array().unwrap().iter().filter_map(|p| p["policy_id"].as_str()).collect();
    assert_eq!(ids, ["pol-daily-spend", "pol-run-tokens", "pol-session-cost"]);
    let tokens = api.policy("acme", "pol-run-tokens", &admin);
    assert_eq!(tokens["latest_version"], 1);
    assert_eq!(tokens["status"], "ACTIVE");
    assert_eq!(tokens["versions"].as_array().map(Vec::len), Some(1));

    // Dry run of a changed limit: shows the diff, changes nothing.
    let changed = BUDGETS.replace("max: 50000", "max: 60000");
    assert_ne!(changed, BUDGETS);
    let (status, plan) = api.post_yaml("/api/v1/tenants/acme/policies?dry_run=true", &admin, &changed);
    assert_eq!(status, 200, "{plan}");
    let tokens_plan =
        plan["policies"].as_array().unwrap().iter().find(|p| p["policy_id"] == "pol-run-tokens").unwrap();
    assert_eq!(tokens_plan["action"], "update", "{plan}");
    assert_eq!(tokens_plan["version"], 2);
    assert!(
        tokens_plan["changes"].as_array().unwrap().iter().any(|c| c["path"] == "/limits/0/max"),
        "{plan}"
    );
    let spend_plan =
        plan["policies"].as_array().unwrap().iter().find(|p| p["policy_id"] == "pol-daily-spend").unwrap();
    assert_eq!(spend_plan["action"], "unchanged", "{plan}");
    assert_eq!(api.policy("acme", "pol-run-tokens", &admin)["latest_version"], 1, "dry run must not apply");

    // The real apply creates version 2; the diff names the changed field.
    let (status, body) = api.post_yaml("/api/v1/tenants/acme/policies", &admin, &changed);
    assert_eq!(status, 200, "{body}");
    let tokens = api.policy("acme", "pol-run-tokens", &admin);
    assert_eq!(tokens["latest_version"], 2, "{tokens}");
    assert_eq!(tokens["versions"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        api.policy("acme", "pol-daily-spend", &admin)["latest_version"],
        1,
        "unchanged policy keeps its version"
    );
    let (status, v1) = api.get("/api/v1/tenants/acme/policies/pol-run-tokens/versions/1", &admin);
    assert_eq!(status, 200, "{v1}");
    assert_eq!(v1["version"], 1);
    let (status, diff) = api.get("/api/v1/tenants/acme/policies/pol-run-tokens/diff?from=1&to=2", &admin);
    assert_eq!(status, 200, "{diff}");
    let change = diff["changes"].as_array().unwrap().iter().find(|c| c["path"] == "/limits/0/max").cloned();
    let change = change.unwrap_or_else(|| panic!("diff must name /limits/0/max: {diff}"));
    assert_ne!(change["before"], change["after"]);
    let (status, _) = api.get("/api/v1/tenants/acme/policies/pol-run-tokens/versions/9", &admin);
    assert_eq!(status, 404);

    // Lifecycle: suspend, activate, retire; then an illegal move.
    let lifecycle = |action: &str, body: Value| {
        api.post(&format!("/api/v1/tenants/acme/policies/pol-run-tokens/{action}"), &admin, body)
    };
    let (status, body) = lifecycle("suspend", json!({}));
    assert_eq!(status, 400, "suspending needs a reason: {body}");
    let (status, body) = lifecycle("suspend", json!({"reason": "load test"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(api.policy("acme", "pol-run-tokens", &admin)["status"], "SUSPENDED");
    let (status, body) = lifecycle("activate", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(api.policy("acme", "pol-run-tokens", &admin)["status"], "ACTIVE");
    let (status, body) = lifecycle("retire", json!({"reason": "replaced"}));
    assert_eq!(status, 200, "{body}");
    let before = api.policy("acme", "pol-run-tokens", &admin);
    assert_eq!(before["status"], "RETIRED");
    let (status, body) = lifecycle("activate", json!({}));
    assert_eq!(status, 409, "RETIRED is terminal: {body}");
    assert_eq!(body["error"]["code"], "ILLEGAL_TRANSITION");
    assert_eq!(api.policy("acme", "pol-run-tokens", &admin), before, "an illegal move changes nothing");

    // Malformed YAML: 400 with the field path.
    let bad = "api_version: aos/v1\npolicies:\n  - id: pol-bad\n    name: Bad\n    scope: { type: ALL_RUNS }\n    limits:\n      - { signal: TOKENS, max: lots, window: PER_RUN }\n";
    let (status, body) = api.post_yaml("/api/v1/tenants/acme/policies", &admin, bad);
    assert_eq!(status, 400, "{body}");
    let paths: Vec<&str> =
        body["error"]["field_errors"].as_array().unwrap().iter().filter_map(|f| f["path"].as_str()).collect();
    assert!(paths.iter().any(|p| p.starts_with("policies[0].limits[0]")), "field path expected: {body}");
    let (status, _) = api.get("/api/v1/tenants/acme/policies/pol-bad", &admin);
    assert_eq!(status, 404, "a malformed document applies nothing");

    // A single policy as JSON; its errors are reported relative to it.
    let single = json!({"id": "pol-json", "name": "JSON policy", "scope": {"type": "ALL_RUNS"},
        "monitors": {"tokens": true}, "limits": [{"signal": "TOKENS", "max": 10, "window": "PER_RUN"}],
        "actions": {"on_breach": "STOP"}});
    let (status, body) = api.post("/api/v1/tenants/acme/policies", &admin, single.clone());
    assert_eq!(status, 200, "{body}");
    assert_eq!(api.policy("acme", "pol-json", &admin)["latest_version"], 1);
    let mut broken = single;
    broken["limits"][0]["max"] = json!("lots");
    let (status, body) = api.post("/api/v1/tenants/acme/policies", &admin, broken);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["field_errors"][0]["path"].as_str().unwrap().starts_with("limits[0]"),
        "path relative to the policy: {body}"
    );

    // Roles: a policy author may not grant overrides (403, audited); an SRE may.
    let (author_id, author) = api.create_key(&admin, "acme", "acme-author", "policy_author");
    let (sre_id, sre) = api.create_key(&admin, "acme", "acme-sre", "sre");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let expires = u64::try_from(now.as_millis()).unwrap() + 3_600_000;
    let grant = json!({"override_id": "ovr-1", "policy_id": "pol-daily-spend", "reason": "quarter-end batch", "expires_at_ms": expires});
    let (status, body) = api.post("/api/v1/tenants/acme/overrides", &author, grant.clone());
    assert_eq!(status, 403, "{body}");
    assert!(denied(&api.audit(&op), &author_id, "tenants/acme/overrides"), "the denial must be audited");
    let (status, overrides) = api.get("/api/v1/tenants/acme/overrides", &author);
    assert_eq!(status, 200, "{overrides}");
    assert_eq!(overrides["overrides"].as_array().map(Vec::len), Some(0), "a denied grant writes nothing");
    let (status, body) = api.post("/api/v1/tenants/acme/overrides", &sre, grant);
    assert_eq!(status, 200, "{body}");
    let (status, overrides) = api.get("/api/v1/tenants/acme/overrides?consistency=stale", &sre);
    assert_eq!(status, 200);
    assert_eq!(
        overrides["overrides"][0]["policy_override"]["granted_by"]["actor_id"],
        sre_id.as_str(),
        "{overrides}"
    );
    let (status, body) = api.post_yaml("/api/v1/tenants/acme/policies", &sre, BUDGETS);
    assert_eq!(status, 403, "an SRE may not apply policies: {body}");

    // Tenant isolation: acme's key reading beta → 403 and audited; an
    // unknown tenant is 403 to a tenant key and 404 to an operator.
    let (status, body) = api.get("/api/v1/tenants/beta/policies", &admin);
    assert_eq!(status, 403, "{body}");
    assert!(denied(&api.audit(&op), &admin_id, "tenants/beta/policies"), "cross-tenant read must be audited");
    let (_, beta_admin) = api.create_key(&op, "beta", "beta-admin", "admin");
    let (status, beta_audit) = api.get("/api/v1/audit?limit=1000", &beta_admin);
    assert_eq!(status, 200);
    let entries = beta_audit["entries"].as_array().unwrap();
    assert!(
        denied(entries, &admin_id, "tenants/beta/policies"),
        "the denial is recorded under the tenant aimed at"
    );
    let (status, body) =
        api.post("/api/v1/tenants/beta/keys", &admin, json!({"name": "sneaky", "role": "admin"}));
    assert_eq!(status, 403, "cross-tenant writes fail hard: {body}");
    assert!(denied(&api.audit(&op), &admin_id, "tenants/beta/keys"));
    let (status, keys) = api.get("/api/v1/tenants/beta/keys", &op);
    assert_eq!(status, 200);
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1), "only beta-admin: {keys}");
    let (status, _) = api.get("/api/v1/tenants/nope/policies", &admin);
    assert_eq!(status, 403);
    let (status, _) = api.get("/api/v1/tenants/nope/policies", &op);
    assert_eq!(status, 404);
    let (status, _) = api.get("/api/v1/tenants/beta/policies", &op);
    assert_eq!(status, 200);

    // A revoked key stops authenticating.
    let (status, body) = api.post(
        &format!("/api/v1/tenants/acme/keys/{author_id}/revoke"),
        &admin,
        json!({"reason": "left the team"}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = api.get("/api/v1/tenants/acme/policies", &author);
    assert_eq!(status, 401);
    let (status, _) = api.get("/api/v1/tenants/acme/policies", &sre);
    assert_eq!(status, 200, "other keys keep working");
}
