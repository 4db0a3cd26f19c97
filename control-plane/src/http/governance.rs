//! The governance lever (issue 5; GAP-069 kill switch, GAP-070 degraded
//! mode): global and per-tenant governance state.
//!
//! - `GET /api/v1/ops/governance/state[?tenant=T]` (any key): the version,
//!   the global setting, and — for a tenant key, its own tenant; for an
//!   operator, every tenant setting — with the effective mode of `T` (or of
//!   the key's tenant).
//! - `POST /api/v1/ops/governance/{disable|enable|degrade|halt}`
//!   `{reason, tenant?, ttl_seconds?}`: roles `sre` and `admin`; without
//!   `tenant` a cluster operator's key. The state machine checks the role
//!   and tenant (and audits a refusal), exactly as for every other write.
//!   Each change is one Raft entry with its ledger entry.

use aos_cp_state::GovernanceMode;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, authenticate, bad_body, commit};
use crate::node::Node;
use crate::write::{Consistency, read_barrier};

pub(super) fn routes() -> Router<Node> {
    Router::new()
        .route("/api/v1/ops/governance/state", get(state))
        .route("/api/v1/ops/governance/{action}", post(change))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateQuery {
    tenant: Option<String>,
    #[serde(default)]
    consistency: Consistency,
}

async fn state(
    State(node): State<Node>,
    headers: HeaderMap,
    query: Result<Query<StateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", format!("query: {}", e.body_text()))
    })?;
    read_barrier(&node, q.consistency).await?;
    let actor = authenticate(&node, &headers).await?;
    let tenant = match (&actor.tenant_id, &q.tenant) {
        (Some(own), Some(asked)) if own != asked => {
            return Err(super::deny_in(
                &node,
                &actor,
                Some(asked),
                "GET_GOVERNANCE_STATE",
                "governance",
                &format!("a key of tenant `{own}` may not read tenant `{asked}`"),
            )
            .await);
        }
        (Some(own), _) => Some(own.clone()),
        (None, asked) => asked.clone(),
    };
    if let Some(t) = &tenant {
        super::require_tenant(&node, t)?;
    }
    Ok(Json(node.state().read(|s| {
        let governance = s.0.governance();
        let mut answer = json!({
            "version": governance.version(),
            "global": governance.global(),
        });
        if let Some(t) = &tenant {
            answer["tenant"] = json!({
                "tenant_id": t,
                "setting": governance.tenant(t),
                "effective": governance.effective(t),
            });
        }
        // Other tenants' settings are for cluster operators only.
        if actor.tenant_id.is_none() {
            answer["tenants"] = json!(governance.tenants());
        }
        answer
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    reason: String,
    tenant: Option<String>,
    ttl_seconds: Option<u64>,
}

async fn change(
    State(node): State<Node>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ChangeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let mode = match action.as_str() {
        "enable" => GovernanceMode::Enforcing,
        "degrade" => GovernanceMode::Degraded,
        "disable" => GovernanceMode::Disabled,
        "halt" => GovernanceMode::Halted,
        other => {
            return Err(ApiError::not_found(format!(
                "unknown governance action `{other}` (enable, degrade, disable, halt)"
            )));
        }
    };
    let actor = authenticate(&node, &headers).await?;
    let Json(req) = body.map_err(|e| bad_body(&e))?;
    let ttl_ms = req.ttl_seconds.map(|s| s.saturating_mul(1000));
    let command =
        aos_cp_state::Command::SetGovernance { tenant_id: req.tenant, mode, reason: req.reason, ttl_ms };
    commit(&node, &headers, actor, command).await
}
