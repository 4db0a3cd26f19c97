//! Signed policy snapshots over REST.
//!
//! - `GET /api/v1/tenants/{tenant}/snapshot`: the tenant's current snapshot
//!   as signed envelope bytes (`application/octet-stream`, decoded with
//!   `aos_core::verify`), with its version, key id and content hash in
//!   `X-Aos-Snapshot-*` headers. Every node returns the same bytes for the
//!   same version: `issued_at` is the time of the change that produced it and
//!   ed25519 signatures are deterministic.
//! - `GET /api/v1/snapshot-keys`: the signing keys, public halves: which
//!   one signs and which ones edge agents should trust.
//! - `POST /api/v1/snapshot-keys`, `…/{key_id}/activate`, `…/{key_id}/retire`:
//!   key rotation (cluster operators; see `aos_cp_state::signing_keys`).
//! - A tenant's snapshot is signed with the replicated active key; a node
//!   that does not hold it answers 503 `SIGNING_KEY_UNAVAILABLE`.
//!
//! (Edge agents will receive snapshots on a gRPC watch stream with the
//! edge-agent issue; this endpoint serves operators, tests and tooling.)

use aos_cp_state::{Command, StateError};
use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, Intent, READERS, ReadParams, authenticate, authorize_read, bad_body, commit};
use crate::node::{Node, SnapshotIssueError};
use crate::write::read_barrier;

pub(super) fn routes() -> Router<Node> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/snapshot", get(snapshot))
        .route("/api/v1/snapshot-keys", get(keys).post(add_key))
        .route("/api/v1/snapshot-keys/{key_id}/activate", post(activate_key))
        .route("/api/v1/snapshot-keys/{key_id}/retire", post(retire_key))
}

async fn snapshot(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Response, ApiError> {
    let target = format!("tenants/{tenant}/snapshot");
    let intent = Intent { tenant: &tenant, roles: READERS, action: "READ_SNAPSHOT", target };
    authorize_read(&node, &headers, &intent, params.consistency).await?;
    let (version, bytes, key_id) = match node.signed_snapshot(&tenant) {
        Ok(signed) => signed,
        Err(SnapshotIssueError::State(StateError::NoSnapshot { .. })) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NO_SNAPSHOT",
                format!("tenant `{tenant}` has no policy snapshot yet (no policy or override change)"),
            ));
        }
        Err(SnapshotIssueError::Key(e)) => {
            tracing::error!(message = "cannot sign snapshots", error = %e);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SIGNING_KEY_UNAVAILABLE",
                e.to_string(),
            ));
        }
        Err(SnapshotIssueError::BootFailed(why)) => {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "BOOT_FAILED", why));
        }
        Err(e) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string())),
    };
    let envelope = aos_core::snapshot::Envelope::decode(&bytes)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()))?;
    let mut response = (StatusCode::OK, bytes).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    for (name, value) in [
        ("x-aos-snapshot-version", version.to_string()),
        ("x-aos-snapshot-key-id", key_id),
        ("x-aos-snapshot-content-hash", hex::encode(envelope.content_hash)),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            h.insert(name, value);
        }
    }
    Ok(response)
}

/// Lists the signing keys: `state` is `active` (signs), `trusted` (agents
/// accept it) or `retired`; `held_by_this_node` says whether this node has
/// the private half. Any authenticated caller may read it: public keys are
/// what edge agents need to verify snapshots.
async fn keys(
    State(node): State<Node>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    authenticate(&node, &headers).await?;
    read_barrier(&node, params.consistency).await?;
    let keys: Vec<Value> = node.state().read(|s| {
        s.0.signing_keys()
            .list()
            .into_iter()
            .map(|view| {
                let mut v = serde_json::to_value(&view).unwrap_or(Value::Null);
                v["held_by_this_node"] = Value::Bool(node.keys().holds(&view.record.key_id));
                v
            })
            .collect()
    });
    Ok(Json(json!({ "keys": keys })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddKey {
    /// ed25519 public key, hex.
    public_key: String,
}

/// Trusts a new public key (cluster operators; the state machine checks
/// and audits the role).
async fn add_key(
    State(node): State<Node>,
    headers: HeaderMap,
    body: Result<Json<AddKey>, JsonRejection>,
) -> Result<Response, ApiError> {
    let actor = authenticate(&node, &headers).await?;
    let Json(req) = body.map_err(|e| bad_body(&e))?;
    commit(&node, &headers, actor, Command::AddSigningKey { public_key: req.public_key }).await
}

/// Makes a trusted key the signer. Refused (409) when the node handling the
/// request does not hold the private key: activating it would leave this
/// node unable to sign.
async fn activate_key(
    State(node): State<Node>,
    Path(key_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = authenticate(&node, &headers).await?;
    if actor.is_operator() && !node.keys().holds(&key_id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "KEY_NOT_HELD",
            format!(
                "node {} does not hold the private key of `{key_id}`; give it to every node before activating it",
                node.id()
            ),
        ));
    }
    commit(&node, &headers, actor, Command::ActivateSigningKey { key_id }).await
}

/// Stops trusting a key that no longer signs.
async fn retire_key(
    State(node): State<Node>,
    Path(key_id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<super::RevokeBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let actor = authenticate(&node, &headers).await?;
    let Json(req) = body.map_err(|e| bad_body(&e))?;
    commit(&node, &headers, actor, Command::RetireSigningKey { key_id, reason: req.reason }).await
}
