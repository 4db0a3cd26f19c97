//! `/api/v1/tenants/{tenant}/keys`: create a tenant API key (admin), list
//! key summaries (admin, auditor), revoke a key (admin).
//!
//! The secret is 32 random bytes, hex-encoded behind an `aos_` prefix. Only
//! its SHA-256 is proposed; the secret is returned in the create response
//! and nowhere else, never logged, never listed.

use aos_core::policy::ActorRole;
use aos_cp_state::Command;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ADMINS, ApiError, Intent, ReadParams, authorize, authorize_read, bad_body, commit_with_id, request_id,
    secret_hash,
};
use crate::node::Node;
use crate::write::wait_applied;

/// Who may list keys.
const KEY_READERS: &[ActorRole] = &[ActorRole::Admin, ActorRole::Auditor];

pub(super) fn routes() -> Router<Node> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/keys", post(create).get(list))
        .route("/api/v1/tenants/{tenant}/keys/{key_id}/revoke", post(revoke))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    key_id: Option<String>,
    name: String,
    role: ActorRole,
}

/// `bytes` random bytes, hex.
pub(super) fn random_hex(bytes: usize) -> Result<String, ApiError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", format!("no randomness: {e}"))
    })?;
    Ok(hex::encode(buf))
}

async fn create(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> Result<Response, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: ADMINS,
        action: "CREATE_API_KEY",
        target: format!("tenants/{tenant}/keys"),
    };
    let actor = authorize(&node, &headers, &intent).await?;
    let Json(req) = body.map_err(|e| bad_body(&e))?;
    let key_id = match req.key_id {
        Some(id) => id,
        None => format!("key-{}", random_hex(8)?),
    };
    let secret = format!("aos_{}", random_hex(32)?);
    let hash = secret_hash(&secret);
    let command = Command::CreateApiKey {
        tenant_id: Some(tenant),
        key_id: key_id.clone(),
        name: req.name,
        role: req.role,
        secret_hash: hash.clone(),
    };
    let mut answer = commit_with_id(&node, request_id(&headers, &actor), actor, command).await?;
    // A replayed Idempotency-Key returns the original result, registered
    // with another secret: this secret is then worthless and not shown.
    let log_index = answer["log_index"].as_u64().unwrap_or(0);
    wait_applied(&node, log_index).await?;
    let ours = node.state().read(|s| s.0.api_key(&key_id).is_some_and(|k| k.secret_hash == hash));
    if !ours {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            format!("API key `{key_id}` was created by an earlier request; its secret was shown only then"),
        ));
    }
    answer["key_id"] = json!(key_id);
    answer["secret"] = json!(secret);
    Ok(Json(answer).into_response())
}

async fn list(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: KEY_READERS,
        action: "LIST_API_KEYS",
        target: format!("tenants/{tenant}/keys"),
    };
    authorize_read(&node, &headers, &intent, params.consistency).await?;
    let keys: Vec<Value> = node.state().read(|s| {
        s.0.api_keys(Some(&tenant))
            .map(|k| serde_json::to_value(k.summary()).unwrap_or(Value::Null))
            .collect()
    });
    Ok(Json(json!({ "keys": keys })))
}

async fn revoke(
    State(node): State<Node>,
    Path((tenant, key_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<super::RevokeBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: ADMINS,
        action: "REVOKE_API_KEY",
        target: format!("tenants/{tenant}/keys/{key_id}"),
    };
    let owned = |s: &aos_cp_state::ControlState| {
        s.api_key(&key_id).is_some_and(|k| k.tenant_id.as_deref() == Some(tenant.as_str()))
    };
    let what = format!("API key `{key_id}`");
    super::revoke_owned(&node, &headers, &intent, body, owned, &what, |reason| Command::RevokeApiKey {
        key_id: key_id.clone(),
        reason,
    })
    .await
}
