//! `/api/v1/tenants/{tenant}/projects`: create (admin) and list.

use aos_cp_state::Command;
use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ADMINS, ApiError, Intent, READERS, ReadParams, authorize, authorize_read, bad_body, commit};
use crate::node::Node;

pub(super) fn routes() -> Router<Node> {
    Router::new().route("/api/v1/tenants/{tenant}/projects", post(create).get(list))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateProject {
    project_id: String,
    name: String,
}

async fn create(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Json<CreateProject>, JsonRejection>,
) -> Result<Response, ApiError> {
    let intent = Intent { tenant: &tenant, roles: ADMINS, action: "CREATE_PROJECT", target: target(&tenant) };
    let actor = authorize(&node, &headers, &intent).await?;
    let Json(req) = body.map_err(|e| bad_body(&e))?;
    let command = Command::CreateProject { tenant_id: tenant, project_id: req.project_id, name: req.name };
    commit(&node, &headers, actor, command).await
}

async fn list(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let intent = Intent { tenant: &tenant, roles: READERS, action: "LIST_PROJECTS", target: target(&tenant) };
    authorize_read(&node, &headers, &intent, params.consistency).await?;
    let projects: Vec<Value> = node
        .state()
        .read(|s| s.0.projects(&tenant).map(|p| serde_json::to_value(p).unwrap_or(Value::Null)).collect());
    Ok(Json(json!({ "projects": projects })))
}

fn target(tenant: &str) -> String {
    format!("tenants/{tenant}/projects")
}
