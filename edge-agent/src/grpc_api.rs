//! The local gRPC API for the workload, on `--grpc-listen` (off unless
//! given): `aos.agent.local.v1.LocalAccess/Access`, the equivalent of
//! `POST /api/v1/access` (issue 6).
//!
//! This module owns only the wire mapping. Authentication
//! ([`crate::auth::Auth::authenticate`] on the `authorization` metadata),
//! run ownership and the access itself ([`crate::api::access_as`]: its own
//! task, so an admitted access finishes and writes its evidence even if the
//! client goes away) are the HTTP API's, so both APIs decide alike.
//!
//! A refusal or failure is a [`Status`] whose message is the HTTP API's
//! JSON error body (`{"error": {"code", "message", "evidence_id"?, ...}}`),
//! with the gRPC code mapped from the HTTP status (see [`grpc_code`]).

use std::net::SocketAddr;

use aos_proto::agent_local::local_access_server::{LocalAccess, LocalAccessServer};
use aos_proto::agent_local::{AccessReply, AccessRequest};
use axum::http::StatusCode;
use serde_json::{Map, Value};
use tonic::{Code, Request, Response, Status};

use crate::api::{ApiError, App, access_as};

/// The service's full name, for the capabilities.
pub const SERVICE: &str = <LocalAccessServer<GrpcApi> as tonic::server::NamedService>::NAME;

/// The gRPC `LocalAccess` service over the local API's state.
#[derive(Debug, Clone)]
pub struct GrpcApi {
    app: App,
}

/// Why the gRPC API stopped.
#[derive(Debug, thiserror::Error)]
pub enum GrpcApiError {
    /// The listen address cannot be bound.
    #[error("binding the local gRPC API on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while serving.
    #[error("serving the local gRPC API: {0}")]
    Serve(#[from] tonic::transport::Error),
}

impl GrpcApi {
    /// The service over `app` (the same state the HTTP API serves).
    pub fn new(app: App) -> GrpcApi {
        GrpcApi { app }
    }

    /// The tonic service, ready to add to a server.
    pub fn service(self) -> LocalAccessServer<GrpcApi> {
        LocalAccessServer::new(self)
    }
}

/// Binds `addr` now (so a bad address fails the start), then serves
/// plain HTTP/2 until `shutdown` resolves.
pub async fn serve(
    app: App,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = Result<(), GrpcApiError>>, GrpcApiError> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| GrpcApiError::Bind { addr, source })?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder().add_service(GrpcApi::new(app).service());
    Ok(
        async move { server.serve_with_incoming_shutdown(incoming, shutdown).await.map_err(GrpcApiError::from) },
    )
}

#[tonic::async_trait]
impl LocalAccess for GrpcApi {
    async fn access(&self, request: Request<AccessRequest>) -> Result<Response<AccessReply>, Status> {
        let authorization = request.metadata().get("authorization").map(|v| v.as_bytes());
        let caller = self
            .app
            .auth
            .authenticate(authorization, "grpc LocalAccess/Access")
            .map_err(|refusal| status(&ApiError::from(refusal)))?;
        let req = request.into_inner();
        let payload = payload(&req.payload_json).map_err(|e| status(&e))?;
        let access = crate::engine::AccessRequest {
            run_id: req.run_id,
            plane: req.plane,
            action: req.action,
            payload,
        };
        let answer = access_as(&self.app, &caller, access).await.map_err(|e| status(&e))?;
        Ok(Response::new(AccessReply { answer_json: answer.to_string().into_bytes() }))
    }
}

/// `payload_json`: a JSON object, or empty for `{}` (the HTTP body's
/// `payload` defaults the same way).
fn payload(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "INVALID_INPUT",
        message: format!("payload_json: must be a JSON object: {e}"),
        details: None,
    })
}

/// The HTTP API's error as a gRPC status: the code mapped from the HTTP
/// status, the message the JSON error body.
fn status(error: &ApiError) -> Status {
    Status::new(grpc_code(error.status, error.code), error.body().to_string())
}

/// The gRPC code for an HTTP status of the local API.
fn grpc_code(status: StatusCode, code: &str) -> Code {
    match status {
        StatusCode::BAD_REQUEST => Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::NotFound,
        // The run is paused or ended: retrying will not help until its
        // state changes.
        StatusCode::CONFLICT => Code::FailedPrecondition,
        StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
        // A governance refusal (kill switch, halt) is a decision, not a
        // transient fault (the HTTP API sends no Retry-After for it): gRPC
        // clients retry UNAVAILABLE, so it is FAILED_PRECONDITION.
        StatusCode::SERVICE_UNAVAILABLE if code.starts_with("GOVERNANCE_") => Code::FailedPrecondition,
        // Boot guard, stale fail-closed snapshot, full outbox; an upstream
        // connector's failure or timeout.
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => {
            Code::Unavailable
        }
        StatusCode::INTERNAL_SERVER_ERROR => Code::Internal,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_to_grpc_codes() {
        for (status, code, expected) in [
            (StatusCode::BAD_REQUEST, "INVALID_INPUT", Code::InvalidArgument),
            (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", Code::Unauthenticated),
            (StatusCode::FORBIDDEN, "PLANE_DENIED", Code::PermissionDenied),
            (StatusCode::NOT_FOUND, "NOT_FOUND", Code::NotFound),
            (StatusCode::CONFLICT, "RUN_ENDED", Code::FailedPrecondition),
            (StatusCode::SERVICE_UNAVAILABLE, "BOOT_GUARD", Code::Unavailable),
            (StatusCode::SERVICE_UNAVAILABLE, "GOVERNANCE_HALTED", Code::FailedPrecondition),
            (StatusCode::BAD_GATEWAY, "REDIRECT_REFUSED", Code::Unavailable),
            (StatusCode::GATEWAY_TIMEOUT, "TIMEOUT", Code::Unavailable),
            (StatusCode::INTERNAL_SERVER_ERROR, "STORE_FAILURE", Code::Internal),
        ] {
            assert_eq!(grpc_code(status, code), expected, "{status} {code}");
        }
    }

    #[test]
    fn the_status_message_is_the_json_error_body() {
        let error = ApiError {
            status: StatusCode::FORBIDDEN,
            code: "UNKNOWN_TARGET",
            message: "no such tool".to_owned(),
            details: Some(serde_json::json!({"evidence_id": "ev-1"})),
        };
        let status = status(&error);
        assert_eq!(status.code(), Code::PermissionDenied);
        let body: Value = serde_json::from_str(status.message()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "UNKNOWN_TARGET", "message": "no such tool", "evidence_id": "ev-1"}})
        );
    }

    #[test]
    fn a_payload_must_be_a_json_object() {
        assert_eq!(payload(b"").unwrap(), Map::new());
        assert_eq!(payload(br#"{"tool": "t"}"#).unwrap().len(), 1);
        for bad in [&b"{not json"[..], b"[1]", b"\"x\""] {
            let e = payload(bad).unwrap_err();
            assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "INVALID_INPUT"));
            assert!(e.message.starts_with("payload_json: "), "{}", e.message);
        }
    }
}
