//! Incidents (issue 8): what the incident engine made of the agents'
//! reports, and the operator's levers on them.
//!
//! - `GET /api/v1/tenants/{tenant}/incidents?status=&category=&run_id=&policy_id=&limit=`
//!   (every role of the tenant): newest first.
//! - `GET /api/v1/tenants/{tenant}/incidents/{incident_id}`: one, with its
//!   history and inflection point.
//! - `POST /api/v1/tenants/{tenant}/incidents/{incident_id}/{acknowledge|resolve}`
//!   `{"note"}` (`sre`, `admin`): audited `INCIDENT_ACKNOWLEDGED` /
//!   `INCIDENT_RESOLVED`; 409 `ILLEGAL_TRANSITION` when the incident is
//!   past that point.
//! - `GET|POST /api/v1/tenants/{tenant}/incident-suppressions` (`POST`:
//!   `sre`, `admin`): `{suppression_id, policy_id?, category?, ttl_seconds, reason}`.
//! - `GET /api/v1/tenants/{tenant}/incident-preventions`: reports kept out
//!   by suppressions.
//! - `GET /api/v1/tenants/{tenant}/policy-proposals`: review suggestions made
//!   for HIGH and CRITICAL incidents.

use aos_core::policy::ActorRole;
use aos_cp_state::{Command, IncidentCategory, IncidentFilter, IncidentStatus};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::activity::{bad_query, checked_limit, reader};
use super::{ApiError, Intent, ReadParams, authorize, bad_body, commit};
use crate::node::Node;
use crate::write::Consistency;

/// Who may acknowledge, resolve and suppress.
const RESPONDERS: &[ActorRole] = &[ActorRole::Admin, ActorRole::Sre];

pub(super) fn routes() -> Router<Node> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/incidents", get(list))
        .route("/api/v1/tenants/{tenant}/incidents/{incident_id}", get(one))
        .route("/api/v1/tenants/{tenant}/incidents/{incident_id}/{action}", post(transition))
        .route("/api/v1/tenants/{tenant}/incident-suppressions", post(suppress).get(suppressions))
        .route("/api/v1/tenants/{tenant}/incident-preventions", get(preventions))
        .route("/api/v1/tenants/{tenant}/policy-proposals", get(proposals))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<IncidentStatus>,
    category: Option<IncidentCategory>,
    run_id: Option<String>,
    policy_id: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    consistency: Consistency,
}

async fn list(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| bad_query(&e))?;
    reader(&node, &headers, &tenant, "LIST_INCIDENTS", format!("tenants/{tenant}/incidents"), q.consistency)
        .await?;
    let limit = checked_limit(q.limit)?;
    let filter = IncidentFilter {
        status: q.status,
        category: q.category,
        run_id: q.run_id.as_deref(),
        policy_id: q.policy_id.as_deref(),
    };
    let incidents = node.state().read(|s| json!(s.0.incidents().list(&tenant, &filter, limit)));
    Ok(Json(json!({ "incidents": incidents })))
}

async fn one(
    State(node): State<Node>,
    Path((tenant, incident_id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let target = format!("tenants/{tenant}/incidents/{incident_id}");
    reader(&node, &headers, &tenant, "GET_INCIDENT", target, params.consistency).await?;
    node.state()
        .read(|s| s.0.incidents().get(&tenant, &incident_id).map(|i| json!(i)))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("unknown incident `{incident_id}` in tenant `{tenant}`")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    note: Option<String>,
}

async fn transition(
    State(node): State<Node>,
    Path((tenant, incident_id, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Json<NoteBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let to = match action.as_str() {
        "acknowledge" => IncidentStatus::Acknowledged,
        "resolve" => IncidentStatus::Resolved,
        other => {
            return Err(ApiError::not_found(format!(
                "unknown incident action `{other}` (acknowledge, resolve)"
            )));
        }
    };
    let intent = Intent {
        tenant: &tenant,
        roles: RESPONDERS,
        action: "TRANSITION_INCIDENT",
        target: format!("tenants/{tenant}/incidents/{incident_id}"),
    };
    let actor = authorize(&node, &headers, &intent).await?;
    // An empty body is fine: the note is optional.
    let note = match body {
        Ok(Json(b)) => b.note,
        Err(JsonRejection::MissingJsonContentType(_)) => None,
        Err(e) => return Err(bad_body(&e)),
    };
    let command = Command::TransitionIncident { tenant_id: tenant, incident_id, to, note };
    commit(&node, &headers, actor, command).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuppressBody {
    suppression_id: String,
    policy_id: Option<String>,
    category: Option<IncidentCategory>,
    ttl_seconds: u64,
    reason: String,
}

async fn suppress(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Json<SuppressBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: RESPONDERS,
        action: "CREATE_SUPPRESSION",
        target: format!("tenants/{tenant}/incident-suppressions"),
    };
    let actor = authorize(&node, &headers, &intent).await?;
    let Json(req) = body.map_err(|e| bad_body(&e))?;
    let command = Command::CreateSuppression {
        tenant_id: tenant,
        suppression_id: req.suppression_id,
        policy_id: req.policy_id,
        category: req.category,
        until_ms: crate::now_ms().saturating_add(req.ttl_seconds.saturating_mul(1000)),
        reason: req.reason,
    };
    commit(&node, &headers, actor, command).await
}

async fn suppressions(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let target = format!("tenants/{tenant}/incident-suppressions");
    reader(&node, &headers, &tenant, "LIST_SUPPRESSIONS", target, params.consistency).await?;
    let now = crate::now_ms();
    let listed: Vec<Value> = node.state().read(|s| {
        s.0.incidents()
            .suppressions(&tenant)
            .into_iter()
            .map(|sup| {
                let mut v = json!(sup);
                v["in_force"] = json!(now < sup.until_ms);
                v
            })
            .collect()
    });
    Ok(Json(json!({ "suppressions": listed })))
}

async fn preventions(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let target = format!("tenants/{tenant}/incident-preventions");
    reader(&node, &headers, &tenant, "LIST_PREVENTIONS", target, params.consistency).await?;
    let listed = node.state().read(|s| json!(s.0.incidents().preventions(&tenant)));
    Ok(Json(json!({ "preventions": listed })))
}

async fn proposals(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let target = format!("tenants/{tenant}/policy-proposals");
    reader(&node, &headers, &tenant, "LIST_POLICY_PROPOSALS", target, params.consistency).await?;
    let listed = node.state().read(|s| json!(s.0.incidents().proposals(&tenant)));
    Ok(Json(json!({ "proposals": listed })))
}
