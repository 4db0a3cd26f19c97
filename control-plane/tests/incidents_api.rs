//! The incident and alert endpoints' bad paths (issue 8): every refusal is
//! a JSON error naming what was wrong, nothing changes, cross-tenant and
//! wrong-role attempts are refused and audited, and webhook targets are
//! shown whole to admins only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use serde_json::{Value, json};
use support::{NodeProc, call, operator_key, tenant_with_admin, wait_healthy};

fn key(node: &NodeProc, admin: &str, tenant: &str, role: &str) -> (String, String) {
    let (status, body) = call(
        "POST",
        &node.url(&format!("/api/v1/tenants/{tenant}/keys")),
        Some(admin),
        Some(json!({"name": role, "role": role})),
    );
    assert_eq!(status, 200, "{body}");
    (body["key_id"].as_str().unwrap().to_owned(), body["secret"].as_str().unwrap().to_owned())
}

fn code(answer: &(u16, Value)) -> (u16, Option<&str>) {
    (answer.0, answer.1["error"]["code"].as_str())
}

#[test]
fn incident_and_alert_endpoints_refuse_bad_input_and_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start(1, dir.path(), true);
    let op = operator_key(&node);
    wait_healthy(&mut node);
    let acme = tenant_with_admin(&node, &op, "acme");
    let globex = tenant_with_admin(&node, &op, "globex");
    let (auditor_id, auditor) = key(&node, &acme, "acme", "auditor");
    let (_, workload) = key(&node, &acme, "acme", "workload");
    let url = |path: &str| node.url(&format!("/api/v1/tenants/acme{path}"));

    // Reads: bad filters are 400 naming the query, unknown ids 404.
    let answer = call("GET", &url("/incidents?status=BOGUS"), Some(&acme), None);
    assert_eq!(code(&answer), (400, Some("INVALID_INPUT")), "{}", answer.1);
    assert!(answer.1["error"]["message"].as_str().unwrap().contains("status"), "{}", answer.1);
    assert_eq!(code(&call("GET", &url("/incidents?limit=0"), Some(&acme), None)).0, 400);
    assert_eq!(code(&call("GET", &url("/alerts?limit=5000"), Some(&acme), None)).0, 400);
    assert_eq!(code(&call("GET", &url("/incidents/inc-404"), Some(&acme), None)), (404, Some("NOT_FOUND")));
    let answer = call("GET", &url("/incidents"), Some(&acme), None);
    assert_eq!((answer.0, answer.1["incidents"].as_array().map(Vec::len)), (200, Some(0)));
    let answer = call("GET", &url("/alerts/stats"), Some(&acme), None);
    assert_eq!((answer.0, answer.1["received"].as_u64()), (200, Some(0)), "{}", answer.1);

    // Writes: unknown action 404 naming the valid ones, unknown incident
    // 404, incomplete suppressions 400.
    let answer = call("POST", &url("/incidents/inc-1/frobnicate"), Some(&acme), Some(json!({})));
    assert_eq!(answer.0, 404);
    assert!(answer.1["error"]["message"].as_str().unwrap().contains("acknowledge, resolve"), "{}", answer.1);
    let answer = call("POST", &url("/incidents/inc-404/acknowledge"), Some(&acme), Some(json!({})));
    assert_eq!(code(&answer), (404, Some("NOT_FOUND")), "{}", answer.1);
    let suppressions = url("/incident-suppressions");
    let answer =
        call("POST", &suppressions, Some(&acme), Some(json!({"suppression_id": "s1", "ttl_seconds": 60})));
    assert_eq!(code(&answer), (400, Some("INVALID_INPUT")), "missing reason: {}", answer.1);
    let no_target = json!({"suppression_id": "s1", "ttl_seconds": 60, "reason": "r"});
    assert_eq!(code(&call("POST", &suppressions, Some(&acme), Some(no_target))).0, 400);
    let forever =
        json!({"suppression_id": "s1", "policy_id": "p", "ttl_seconds": 40 * 86_400, "reason": "r"});
    assert_eq!(code(&call("POST", &suppressions, Some(&acme), Some(forever))).0, 400);
    let answer = call("GET", &suppressions, Some(&acme), None);
    assert_eq!(answer.1["suppressions"].as_array().map(Vec::len), Some(0), "nothing was created");

    // Strangers: another tenant's admin, an auditor writing, a workload key.
    assert_eq!(code(&call("GET", &url("/incidents"), Some(&globex), None)), (403, Some("FORBIDDEN")));
    let ok_body = json!({"suppression_id": "s2", "policy_id": "p", "ttl_seconds": 60, "reason": "r"});
    assert_eq!(code(&call("POST", &suppressions, Some(&auditor), Some(ok_body.clone()))).0, 403);
    assert_eq!(code(&call("GET", &url("/alerts"), Some(&workload), None)).0, 403);
    let (_, audit) = call("GET", &node.url("/api/v1/audit?limit=1000"), Some(&op), None);
    let denied = audit["entries"].as_array().unwrap().iter().any(|e| {
        e["action"] == "ACCESS_DENIED"
            && e["actor"]["actor_id"] == auditor_id.as_str()
            && e["target"] == "tenants/acme/incident-suppressions"
    });
    assert!(denied, "the auditor's refused write is in the ledger");
    assert_eq!(call("POST", &suppressions, Some(&acme), Some(ok_body)).0, 200);

    // Alert channels: EMAIL on a node without an SMTP relay and non-http
    // targets refused; targets whole for admins, redacted for other roles.
    let channels = url("/alert-channels");
    let email = json!({"channel": "EMAIL", "target": "ops@example.com"});
    let answer = call("POST", &channels, Some(&acme), Some(email));
    assert_eq!(code(&answer), (400, Some("INVALID_INPUT")), "{}", answer.1);
    assert!(answer.1.to_string().contains("--smtp-url"), "{}", answer.1);
    let ftp = json!({"channel": "WEBHOOK", "target": "ftp://x"});
    assert_eq!(code(&call("POST", &channels, Some(&acme), Some(ftp))).0, 400);
    let slack = json!({"channel": "SLACK", "target": "https://hooks.slack.example/T1/secret-path"});
    assert_eq!(code(&call("POST", &channels, Some(&auditor), Some(slack.clone()))).0, 403);
    assert_eq!(call("POST", &channels, Some(&acme), Some(slack)).0, 200);
    let (_, whole) = call("GET", &channels, Some(&acme), None);
    assert!(whole.to_string().contains("secret-path"), "{whole}");
    let (_, redacted) = call("GET", &channels, Some(&auditor), None);
    let shown = redacted.to_string();
    assert!(shown.contains("hooks.slack.example") && !shown.contains("secret-path"), "{shown}");
}
