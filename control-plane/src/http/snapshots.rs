//! Signed policy snapshots over REST.
//!
//! - `GET /api/v1/tenants/{tenant}/snapshot`: the tenant's current snapshot
//!   as signed envelope bytes (`application/octet-stream`, decoded with
//!   `aos_core::verify`), with its version, key id and content hash in
//!   `X-Aos-Snapshot-*` headers. Every node returns the same bytes for the
//!   same version: `issued_at` is the time of the change that produced it and
//!   ed25519 signatures are deterministic.
//! - `GET /api/v1/snapshot-keys`: the public keys edge agents should trust.
//!
//! (Edge agents will receive snapshots on a gRPC watch stream with the
//! edge-agent issue; this endpoint serves operators, tests and tooling.)

use aos_cp_state::StateError;
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{ApiError, Intent, READERS, ReadParams, authenticate, authorize_read};
use crate::node::Node;

pub(super) fn routes() -> Router<Node> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/snapshot", get(snapshot))
        .route("/api/v1/snapshot-keys", get(keys))
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
    let built = node.state().read(|s| s.0.issued_snapshot(&tenant, node.max_staleness_ms()));
    let snapshot = match built {
        Ok(snapshot) => snapshot,
        Err(StateError::NoSnapshot { .. }) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NO_SNAPSHOT",
                format!("tenant `{tenant}` has no policy snapshot yet (no policy or override change)"),
            ));
        }
        Err(e) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string())),
    };
    let version = snapshot.version;
    let bytes = aos_core::sign(&snapshot, node.signer())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()))?;
    let envelope = aos_core::snapshot::Envelope::decode(&bytes)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()))?;
    let mut response = (StatusCode::OK, bytes).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    for (name, value) in [
        ("x-aos-snapshot-version", version.to_string()),
        ("x-aos-snapshot-key-id", node.signer().key_id().to_string()),
        ("x-aos-snapshot-content-hash", hex::encode(envelope.content_hash)),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            h.insert(name, value);
        }
    }
    Ok(response)
}

async fn keys(State(node): State<Node>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authenticate(&node, &headers).await?;
    let signer = node.signer();
    Ok(Json(json!({
        "keys": [{
            "key_id": signer.key_id().to_string(),
            "public_key": hex::encode(signer.verifying_key().as_bytes()),
            "signing": true,
        }]
    })))
}
