//! Edge-agent join tokens over REST: created by a tenant admin with the
//! secret shown once, listed without secrets, revoked; wrong role and
//! cross-tenant attempts are refused and audited.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use serde_json::json;
use support::{NodeProc, call, operator_key, tenant_with_admin, wait_healthy};

#[test]
fn join_tokens_are_created_once_listed_without_secrets_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start(1, dir.path(), true);
    let operator = operator_key(&node);
    wait_healthy(&mut node);
    let acme = tenant_with_admin(&node, &operator, "acme");
    let globex = tenant_with_admin(&node, &operator, "globex");
    let tokens = node.url("/api/v1/tenants/acme/agent-tokens");

    let (status, created) = call("POST", &tokens, Some(&acme), Some(json!({"ttl_secs": 600})));
    assert_eq!(status, 200, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let token_id = created["token_id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("aosj_") && secret.len() == 69, "{secret}");
    let expires = created["expires_at_ms"].as_u64().unwrap();
    let now = aos_control_plane::now_ms();
    assert!(expires > now + 590_000 && expires <= now + 600_000, "{created}");

    let (status, listed) = call("GET", &tokens, Some(&acme), None);
    assert_eq!(status, 200);
    let text = listed.to_string();
    assert!(text.contains(&token_id) && !text.contains(&secret[5..]), "no secret in a listing: {text}");
    assert!(!text.contains("secret_hash"), "{text}");

    // Bad input, wrong tenant, too long: refused.
    let (status, body) = call("POST", &tokens, Some(&acme), Some(json!({"ttl_secs": 31 * 86_400})));
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("INVALID_INPUT")), "{body}");
    let (status, body) = call("POST", &tokens, Some(&acme), Some(json!({"ttl": 5})));
    assert_eq!(status, 400, "{body}");
    let (status, body) = call("POST", &tokens, Some(&globex), Some(json!({})));
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("FORBIDDEN")), "{body}");
    let revoke = node.url(&format!("/api/v1/tenants/globex/agent-tokens/{token_id}/revoke"));
    let (status, _) = call("POST", &revoke, Some(&globex), Some(json!({"reason": "not yours"})));
    assert_eq!(status, 404, "acme's token does not exist in globex");

    let revoke = node.url(&format!("/api/v1/tenants/acme/agent-tokens/{token_id}/revoke"));
    let (status, body) = call("POST", &revoke, Some(&acme), Some(json!({"reason": "host decommissioned"})));
    assert_eq!(status, 200, "{body}");
    let (_, listed) = call("GET", &tokens, Some(&acme), None);
    assert!(!listed["tokens"][0]["revoked"].is_null(), "{listed}");
    let (status, _) = call("POST", &revoke, Some(&acme), Some(json!({"reason": "again"})));
    assert_eq!(status, 409);

    let (status, agents) = call("GET", &node.url("/api/v1/tenants/acme/agents"), Some(&acme), None);
    assert_eq!((status, agents["agents"].as_array().map(Vec::len)), (200, Some(0)), "{agents}");

    let (_, audit) = call("GET", &node.url("/api/v1/audit?limit=1000"), Some(&operator), None);
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for expected in ["JOIN_TOKEN_CREATED", "JOIN_TOKEN_REVOKED", "ACCESS_DENIED"] {
        assert!(actions.contains(&expected), "{expected} missing: {actions:?}");
    }
    assert!(!audit.to_string().contains(&secret[5..]), "the secret never reaches the ledger");
}
