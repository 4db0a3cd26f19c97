//! `/api/v1/tenants/{tenant}/sources` and `/planes` (issue 6): data
//! sources with their connector configuration, credentials (write-only:
//! sealed here with the tenant's data key before anything is proposed),
//! verification probes (GAP-039), enable/disable, and knowledge planes
//! with their owner-confirmed activation (GAP-045).
//!
//! Tenant admins change these; every role of the tenant may read them. A
//! credential is never returned, logged or audited: the response and the
//! ledger say that it changed and under which data key. A probe's detail
//! is scrubbed of the credential before it is recorded, in case a server
//! echoes it.

use aos_core::access::{DataSource, SourceStatus};
use aos_cp_state::Command;
use aos_cp_state::data_access::PlaneSpec;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ADMINS, ApiError, Intent, READERS, ReadParams, authorize, authorize_read, bad_body, commit,
    commit_with_id, read_barrier, request_id, require_tenant,
};
use crate::master_key::{MAX_SECRET_LEN, open_credential, seal_credential};
use crate::node::Node;
use crate::write::Consistency;

/// Longest a verification probe may take, whatever the source says.
const PROBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

pub(super) fn routes() -> Router<Node> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/sources", post(put_source).get(list_sources))
        .route("/api/v1/tenants/{tenant}/sources/{source_id}", get(get_source))
        .route("/api/v1/tenants/{tenant}/sources/{source_id}/credential", put(set_credential))
        .route("/api/v1/tenants/{tenant}/sources/{source_id}/verify", post(verify_source))
        .route("/api/v1/tenants/{tenant}/sources/{source_id}/{action}", post(transition_source))
        .route("/api/v1/tenants/{tenant}/planes", post(put_plane).get(list_planes))
        .route("/api/v1/tenants/{tenant}/planes/{plane_id}", get(get_plane))
        .route("/api/v1/tenants/{tenant}/planes/{plane_id}/{action}", post(set_activation))
}

fn intent<'a>(
    tenant: &'a str,
    roles: &'static [aos_core::policy::ActorRole],
    action: &'static str,
    target: String,
) -> Intent<'a> {
    Intent { tenant, roles, action, target }
}

fn no_master_key() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "NO_MASTER_KEY",
        "this control-plane node holds no master key (AOS_MASTER_KEY or --master-key-file), so it cannot seal or open connector credentials",
    )
}

async fn put_source(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Json<DataSource>, JsonRejection>,
) -> Result<Response, ApiError> {
    let intent = intent(&tenant, ADMINS, "PUT_DATA_SOURCE", format!("tenants/{tenant}/sources"));
    let actor = authorize(&node, &headers, &intent).await?;
    let Json(source) = body.map_err(|e| bad_body(&e))?;
    commit(&node, &headers, actor, Command::PutDataSource { tenant_id: tenant, source }).await
}

async fn list_sources(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let intent = intent(&tenant, READERS, "LIST_SOURCES", format!("tenants/{tenant}/sources"));
    authorize_read(&node, &headers, &intent, params.consistency).await?;
    let sources: Vec<Value> = node.state().read(|s| {
        s.0.data_access()
            .tenant(&tenant)
            .map(|t| t.sources.values().map(|r| r.view()).collect())
            .unwrap_or_default()
    });
    Ok(Json(json!({ "sources": sources })))
}

async fn get_source(
    State(node): State<Node>,
    Path((tenant, source_id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let intent = intent(&tenant, READERS, "GET_SOURCE", format!("tenants/{tenant}/sources/{source_id}"));
    authorize_read(&node, &headers, &intent, params.consistency).await?;
    node.state()
        .read(|s| s.0.data_access().tenant(&tenant)?.sources.get(&source_id).map(|r| r.view()))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("unknown source `{source_id}` in tenant `{tenant}`")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialBody {
    /// PostgreSQL: the password. HTTP: the `Authorization` header value.
    secret: String,
}

impl std::fmt::Debug for CredentialBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialBody([redacted])")
    }
}

/// Seals and stores a source's credential, creating the tenant's data key
/// on first use.
async fn set_credential(
    State(node): State<Node>,
    Path((tenant, source_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<CredentialBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let target = format!("tenants/{tenant}/sources/{source_id}");
    let intent = intent(&tenant, ADMINS, "SET_SOURCE_CREDENTIAL", target);
    let actor = authorize(&node, &headers, &intent).await?;
    // The body's text is never echoed: a malformed body is described
    // without it.
    let Json(body) = body.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            "body must be {\"secret\": \"…\"} and nothing else",
        )
    })?;
    if body.secret.is_empty() || body.secret.len() > MAX_SECRET_LEN {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            format!("secret must be 1 to {MAX_SECRET_LEN} bytes"),
        ));
    }
    let master = node.master_key().ok_or_else(no_master_key)?;
    read_barrier(&node, Consistency::Linearizable).await?;
    require_tenant(&node, &tenant)?;
    if !node
        .state()
        .read(|s| s.0.data_access().tenant(&tenant).is_some_and(|t| t.sources.contains_key(&source_id)))
    {
        return Err(ApiError::not_found(format!("unknown source `{source_id}` in tenant `{tenant}`")));
    }
    if node.state().read(|s| s.0.data_access().tenant(&tenant).and_then(|t| t.data_key.clone())).is_none() {
        let (wrapped, _) = master.new_data_key(&tenant).map_err(|e| internal(&e))?;
        let command = Command::SetTenantDataKey { tenant_id: tenant.clone(), data_key: wrapped };
        // A concurrent request may have created one first: that is fine,
        // the key read back below is the one in force.
        match commit_with_id(&node, request_id(&HeaderMap::new(), &actor), actor.clone(), command).await {
            Ok(_) => {}
            Err(e) if e.code == "CONFLICT" => {}
            Err(e) => return Err(e),
        }
        read_barrier(&node, Consistency::Linearizable).await?;
    }
    let (data_key_id, data_key) = node.tenant_data_key(&tenant).ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "DATA_KEY_UNAVAILABLE",
            format!("the data key of tenant `{tenant}` does not open with this node's master key"),
        )
    })?;
    let sealed = seal_credential(&data_key, &data_key_id, &tenant, &source_id, &body.secret)
        .map_err(|e| internal(&e))?;
    commit(&node, &headers, actor, Command::SetSourceCredential { tenant_id: tenant, source_id, sealed })
        .await
}

fn internal(e: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string())
}

/// Probes the source from this node with its credential and records the
/// outcome (GAP-039). 200 with the new status either way; the probe's
/// verdict is in `result.last_probe`.
async fn verify_source(
    State(node): State<Node>,
    Path((tenant, source_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let target = format!("tenants/{tenant}/sources/{source_id}");
    let intent = intent(&tenant, ADMINS, "VERIFY_SOURCE", target);
    let actor = authorize(&node, &headers, &intent).await?;
    read_barrier(&node, Consistency::Linearizable).await?;
    require_tenant(&node, &tenant)?;
    let record = node
        .state()
        .read(|s| s.0.data_access().tenant(&tenant)?.sources.get(&source_id).cloned())
        .ok_or_else(|| {
        ApiError::not_found(format!("unknown source `{source_id}` in tenant `{tenant}`"))
    })?;
    let secret = match &record.credential {
        None => None,
        Some(sealed) => {
            let (_, key) = node.tenant_data_key(&tenant).ok_or_else(no_master_key)?;
            let text = open_credential(&key, &tenant, &source_id, sealed).ok_or_else(|| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "CREDENTIAL_UNREADABLE",
                    format!(
                        "the credential of source `{source_id}` does not open with the tenant's data key"
                    ),
                )
            })?;
            Some(aos_connectors::Secret::new(text))
        }
    };
    // Probes from this shared node open no file, start no process and reach
    // only public addresses unless the operator allowed private ones.
    let site = aos_connectors::ProbeSite::ControlPlane { allow_private: node.alert_private_targets() };
    let outcome =
        tokio::time::timeout(PROBE_LIMIT, node.connectors().probe(&record.source, secret.as_ref(), site))
            .await;
    let (ok, mut detail) = match outcome {
        Ok(Ok(detail)) => (true, detail),
        Ok(Err(e)) => (false, format!("{}: {e}", e.code())),
        Err(_) => (false, format!("TIMEOUT: the probe did not finish within {} s", PROBE_LIMIT.as_secs())),
    };
    if let Some(secret) = &secret
        && !secret.expose().is_empty()
    {
        detail = detail.replace(secret.expose(), "[redacted]");
    }
    detail.truncate(detail.char_indices().nth(500).map_or(detail.len(), |(i, _)| i));
    tracing::info!(message = "source probed", tenant = %tenant, source_id = %source_id, ok);
    let command = Command::RecordSourceProbe {
        tenant_id: tenant,
        source_id,
        fingerprint: record.fingerprint(),
        ok,
        detail,
    };
    commit(&node, &headers, actor, command).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
    /// For `activate`: the owner's explicit confirmation.
    #[serde(default)]
    confirm: bool,
}

async fn transition_source(
    State(node): State<Node>,
    Path((tenant, source_id, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let to = match action.as_str() {
        "enable" => SourceStatus::Enabled,
        "disable" => SourceStatus::Disabled,
        other => {
            return Err(ApiError::not_found(format!(
                "unknown source action `{other}`: use enable, disable, verify or credential"
            )));
        }
    };
    let target = format!("tenants/{tenant}/sources/{source_id}");
    let intent = intent(&tenant, ADMINS, "TRANSITION_SOURCE", target);
    let actor = authorize(&node, &headers, &intent).await?;
    let Json(req) = body.map_err(|e| bad_body(&e))?;
    let command = Command::TransitionSource { tenant_id: tenant, source_id, to, reason: req.reason };
    commit(&node, &headers, actor, command).await
}

async fn put_plane(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Json<PlaneSpec>, JsonRejection>,
) -> Result<Response, ApiError> {
    let intent = intent(&tenant, ADMINS, "PUT_KNOWLEDGE_PLANE", format!("tenants/{tenant}/planes"));
    let actor = authorize(&node, &headers, &intent).await?;
    let Json(plane) = body.map_err(|e| bad_body(&e))?;
    commit(&node, &headers, actor, Command::PutKnowledgePlane { tenant_id: tenant, plane }).await
}

async fn list_planes(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let intent = intent(&tenant, READERS, "LIST_PLANES", format!("tenants/{tenant}/planes"));
    authorize_read(&node, &headers, &intent, params.consistency).await?;
    let planes: Vec<Value> = node.state().read(|s| {
        s.0.data_access()
            .tenant(&tenant)
            .map(|t| t.planes.values().map(|p| p.view()).collect())
            .unwrap_or_default()
    });
    Ok(Json(json!({ "planes": planes })))
}

async fn get_plane(
    State(node): State<Node>,
    Path((tenant, plane_id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let intent = intent(&tenant, READERS, "GET_PLANE", format!("tenants/{tenant}/planes/{plane_id}"));
    authorize_read(&node, &headers, &intent, params.consistency).await?;
    node.state()
        .read(|s| s.0.data_access().tenant(&tenant)?.planes.get(&plane_id).map(|p| p.view()))
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!("unknown knowledge plane `{plane_id}` in tenant `{tenant}`"))
        })
}

async fn set_activation(
    State(node): State<Node>,
    Path((tenant, plane_id, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let active = match action.as_str() {
        "activate" => true,
        "deactivate" => false,
        other => {
            return Err(ApiError::not_found(format!(
                "unknown plane action `{other}`: use activate or deactivate"
            )));
        }
    };
    let target = format!("tenants/{tenant}/planes/{plane_id}");
    let intent = intent(&tenant, ADMINS, "SET_PLANE_ACTIVATION", target);
    let actor = authorize(&node, &headers, &intent).await?;
    let Json(req) = body.map_err(|e| bad_body(&e))?;
    if active && !req.confirm {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "CONFIRMATION_REQUIRED",
            "activating a knowledge plane exposes its sources to policies: send \"confirm\": true as its owner",
        ));
    }
    let command = Command::SetPlaneActivation { tenant_id: tenant, plane_id, active, reason: req.reason };
    commit(&node, &headers, actor, command).await
}
