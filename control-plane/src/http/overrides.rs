//! `/api/v1/tenants/{tenant}/overrides`: grant (admin, sre), list, revoke
//! (admin, sre). The grantor is always the caller: the body carries
//! everything of an `aos_core::policy::PolicyOverride` but `granted_by`.

use aos_core::policy::{ActorRole, OverrideGrantor, PolicyOverride, Scope};
use aos_cp_state::Command;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, Intent, READERS, ReadParams, authorize, authorize_read, bad_body, commit};
use crate::node::Node;
use crate::now_ms;

/// Who may grant and revoke overrides.
const GRANTORS: &[ActorRole] = &[ActorRole::Admin, ActorRole::Sre];

pub(super) fn routes() -> Router<Node> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/overrides", post(grant).get(list))
        .route("/api/v1/tenants/{tenant}/overrides/{override_id}/revoke", post(revoke))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Grant {
    override_id: String,
    policy_id: String,
    #[serde(default = "Scope::all_runs")]
    scope: Scope,
    reason: String,
    /// Defaults to now.
    starts_at_ms: Option<u64>,
    expires_at_ms: u64,
}

async fn grant(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Grant>, JsonRejection>,
) -> Result<Response, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: GRANTORS,
        action: "GRANT_OVERRIDE",
        target: format!("tenants/{tenant}/overrides"),
    };
    let actor = authorize(&node, &headers, &intent).await?;
    let Json(req) = body.map_err(|e| bad_body(&e))?;
    let policy_override = PolicyOverride {
        override_id: req.override_id,
        policy_id: req.policy_id,
        scope: req.scope,
        granted_by: OverrideGrantor { actor_id: actor.actor_id.clone(), role: actor.role },
        reason: req.reason,
        starts_at_ms: req.starts_at_ms.unwrap_or_else(now_ms),
        expires_at_ms: req.expires_at_ms,
    };
    commit(&node, &headers, actor, Command::GrantOverride { tenant_id: tenant, policy_override }).await
}

async fn list(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: READERS,
        action: "LIST_OVERRIDES",
        target: format!("tenants/{tenant}/overrides"),
    };
    authorize_read(&node, &headers, &intent, params.consistency).await?;
    let now = now_ms();
    let overrides: Vec<Value> = node.state().read(|s| {
        s.0.overrides(&tenant)
            .map(|o| {
                let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
                v["in_force"] = json!(o.is_in_force(now));
                v
            })
            .collect()
    });
    Ok(Json(json!({ "overrides": overrides })))
}

async fn revoke(
    State(node): State<Node>,
    Path((tenant, override_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<super::RevokeBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: GRANTORS,
        action: "REVOKE_OVERRIDE",
        target: format!("tenants/{tenant}/overrides/{override_id}"),
    };
    let actor = authorize(&node, &headers, &intent).await?;
    let Json(req) = body.map_err(|e| bad_body(&e))?;
    let command = Command::RevokeOverride { tenant_id: tenant, override_id, reason: req.reason };
    commit(&node, &headers, actor, command).await
}
