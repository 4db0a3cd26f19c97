//! Edge agents over REST: join tokens (create, list, revoke) and the agent
//! list with each agent's snapshot sync status.
//!
//! - `POST /api/v1/tenants/{tenant}/agent-tokens` `{ttl_secs?}` (admin):
//!   a join token; its secret (`aosj_…`) and the `join_token` to give
//!   `aos-edge-agent --join-token` (the secret plus the SHA-256 of the
//!   cluster CA certificate, `aosj_….<hex>`) are in this answer only.
//! - `GET /api/v1/tenants/{tenant}/agent-tokens` (admin, auditor).
//! - `POST /api/v1/tenants/{tenant}/agent-tokens/{token_id}/revoke`
//!   `{reason}` (admin).
//! - `GET /api/v1/tenants/{tenant}/agents` (every role of the tenant):
//!   agents with the version they ACKed and their last NACK and reason.

use aos_core::policy::ActorRole;
use aos_cp_state::Command;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ADMINS, ApiError, Intent, READERS, ReadParams, authorize, authorize_read, bad_body, commit_with_id,
    request_id, secret_hash,
};
use crate::node::Node;
use crate::write::wait_applied;

/// Default join-token lifetime.
const DEFAULT_TTL_SECS: u64 = 24 * 3600;

/// Who may list join tokens.
const TOKEN_READERS: &[ActorRole] = &[ActorRole::Admin, ActorRole::Auditor];

pub(super) fn routes() -> Router<Node> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/agent-tokens", post(create_token).get(list_tokens))
        .route("/api/v1/tenants/{tenant}/agent-tokens/{token_id}/revoke", post(revoke_token))
        .route("/api/v1/tenants/{tenant}/agents", get(list_agents))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    /// Lifetime in seconds (default one day, at most 30 days).
    ttl_secs: Option<u64>,
}

async fn create_token(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Json<CreateToken>, JsonRejection>,
) -> Result<Response, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: ADMINS,
        action: "CREATE_JOIN_TOKEN",
        target: format!("tenants/{tenant}/agent-tokens"),
    };
    let actor = authorize(&node, &headers, &intent).await?;
    let Json(req) = body.map_err(|e| bad_body(&e))?;
    let ttl_ms = req.ttl_secs.unwrap_or(DEFAULT_TTL_SECS).saturating_mul(1000);
    let token_id = format!("jt-{}", super::keys::random_hex(8)?);
    let secret = format!("aosj_{}", super::keys::random_hex(32)?);
    let hash = secret_hash(&secret);
    let expires_at_ms = crate::now_ms().saturating_add(ttl_ms);
    let command = Command::CreateJoinToken {
        tenant_id: tenant.clone(),
        token_id: token_id.clone(),
        secret_hash: hash.clone(),
        expires_at_ms,
    };
    let mut answer = commit_with_id(&node, request_id(&headers, &actor), actor, command).await?;
    let log_index = answer["log_index"].as_u64().unwrap_or(0);
    wait_applied(&node, log_index).await?;
    // A replayed Idempotency-Key answers with the original token, whose
    // secret was shown only then.
    let ours = node.state().read(|s| s.0.edge_agents().token_by_hash(&hash).is_some());
    if !ours {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            "this join token was created by an earlier request; its secret was shown only then".to_owned(),
        ));
    }
    answer["token_id"] = json!(token_id);
    // The join token pins the cluster CA (kubeadm style): the agent checks
    // the certificate the gateway presents against this hash before it
    // sends the secret anywhere.
    if let Some(ca) = node.ca() {
        answer["join_token"] = json!(format!("{secret}.{}", ca.sha256_hex()));
        answer["ca_cert_sha256"] = json!(ca.sha256_hex());
    }
    answer["secret"] = json!(secret);
    answer["expires_at_ms"] = json!(expires_at_ms);
    Ok(Json(answer).into_response())
}

async fn list_tokens(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: TOKEN_READERS,
        action: "LIST_JOIN_TOKENS",
        target: format!("tenants/{tenant}/agent-tokens"),
    };
    authorize_read(&node, &headers, &intent, params.consistency).await?;
    let tokens = node.state().read(|s| s.0.edge_agents().tokens(&tenant));
    Ok(Json(json!({ "tokens": tokens })))
}

async fn revoke_token(
    State(node): State<Node>,
    Path((tenant, token_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<super::RevokeBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: ADMINS,
        action: "REVOKE_JOIN_TOKEN",
        target: format!("tenants/{tenant}/agent-tokens/{token_id}"),
    };
    let owned = |s: &aos_cp_state::ControlState| {
        s.edge_agents().token(&token_id).is_some_and(|t| t.tenant_id == tenant)
    };
    let what = format!("join token `{token_id}`");
    super::revoke_owned(&node, &headers, &intent, body, owned, &what, |reason| Command::RevokeJoinToken {
        token_id: token_id.clone(),
        reason,
    })
    .await
}

async fn list_agents(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: READERS,
        action: "LIST_EDGE_AGENTS",
        target: format!("tenants/{tenant}/agents"),
    };
    authorize_read(&node, &headers, &intent, params.consistency).await?;
    let agents: Vec<Value> = node.state().read(|s| {
        s.0.edge_agents()
            .agents(Some(&tenant))
            .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
            .collect()
    });
    Ok(Json(json!({ "agents": agents })))
}
