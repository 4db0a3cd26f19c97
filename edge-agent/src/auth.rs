//! Bearer authentication of the local API with the tenant's workload API
//! keys (issue 4, GAP-004/028).
//!
//! The control plane puts every `workload` key of the tenant that is not
//! revoked into the signed snapshot, as the SHA-256 of its secret. A caller
//! sends `Authorization: Bearer <secret>`; the agent hashes it and looks it
//! up in the snapshot in force, so a key created or revoked at the control
//! plane takes effect at the agent with the next snapshot version, and an
//! agent cut off from the control plane keeps honouring the keys of the
//! last snapshot it verified. A run records the key it was started with
//! (`api_key_id` in its scope) and only that key may drive it (checked by
//! the handlers on the decoded run id, `api::authorize_run`). The local
//! gRPC API ([`crate::grpc_api`]) applies the same rules to its
//! `authorization` metadata through [`Auth::authenticate`].
//!
//! [`AuthMode::Off`] exists for development and is refused unless the
//! listen addresses (HTTP and gRPC) are loopback. `/health` and `/metrics` are always open
//! (probes and scrapers carry no keys; they reveal no tenant data).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::engine::Engine;

/// Whether the local API requires a workload key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every call but `/health` and `/metrics` needs a workload key.
    Required,
    /// No key needed (development, loopback only).
    Off,
}

impl AuthMode {
    /// Refuses [`AuthMode::Off`] on an address other hosts can reach.
    pub fn check_listen(self, listen: SocketAddr) -> Result<(), String> {
        if self == AuthMode::Off && !listen.ip().is_loopback() {
            return Err(format!(
                "--auth off is only allowed on a loopback address; {listen} is reachable from other hosts"
            ));
        }
        Ok(())
    }
}

/// The authenticated caller, put in each request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The workload key's id; `None` when authentication is off.
    pub key_id: Option<String>,
}

/// The middleware's state.
#[derive(Debug)]
pub struct Auth {
    mode: AuthMode,
    engine: Arc<Engine>,
    refused: AtomicU64,
}

impl Auth {
    /// Authentication in `mode` against `engine`'s snapshot in force.
    pub fn new(mode: AuthMode, engine: Arc<Engine>) -> Arc<Auth> {
        Arc::new(Auth { mode, engine, refused: AtomicU64::new(0) })
    }

    /// The mode.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Requests refused for a missing, unknown or revoked key.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Authenticates a caller from the value of its `Authorization`
    /// header (HTTP) or `authorization` metadata (gRPC), so both local APIs
    /// apply the same rules. A refusal for a missing, unknown or revoked
    /// key is counted and logged with `what` (the path or RPC).
    pub fn authenticate(&self, authorization: Option<&[u8]>, what: &str) -> Result<Caller, AuthRefusal> {
        let result = self.check(authorization);
        if let Err(refusal) = &result
            && refusal.status == StatusCode::UNAUTHORIZED
        {
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(message = "local API call refused", reason = %refusal.message, path = %what);
        }
        result
    }

    fn check(&self, authorization: Option<&[u8]>) -> Result<Caller, AuthRefusal> {
        if self.mode == AuthMode::Off {
            return Ok(Caller { key_id: None });
        }
        let Some(snapshot) = self.engine.slot().current() else {
            return Err(AuthRefusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "BOOT_GUARD",
                message: "no policy snapshot yet, so no API key can be checked".to_owned(),
            });
        };
        let unauthenticated = |message: &str| AuthRefusal {
            status: StatusCode::UNAUTHORIZED,
            code: "UNAUTHENTICATED",
            message: message.to_owned(),
        };
        let header = authorization.ok_or_else(|| {
            unauthenticated("a workload API key is required: send `Authorization: Bearer <key>`")
        })?;
        let secret = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unauthenticated("the Authorization header must be `Bearer <key>`"))?;
        let hash = hex::encode(Sha256::digest(secret.as_bytes()));
        snapshot.snapshot().workload_key(&hash).map(|k| Caller { key_id: Some(k.key_id.clone()) }).ok_or_else(
            || {
                unauthenticated(&format!(
                    "unknown or revoked API key (this agent holds the keys of snapshot v{}; workload keys only)",
                    snapshot.version()
                ))
            },
        )
    }
}

/// Why a caller was not authenticated: the HTTP status and the code and
/// message of the JSON error (the gRPC API maps the status to its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRefusal {
    /// 401, or 503 before the first snapshot.
    pub status: StatusCode,
    /// `UNAUTHENTICATED` or `BOOT_GUARD`.
    pub code: &'static str,
    /// Why; never the presented secret.
    pub message: String,
}

/// The middleware.
pub async fn layer(State(auth): State<Arc<Auth>>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/health" || path == "/metrics" {
        return next.run(request).await;
    }
    let authorization = request.headers().get(header::AUTHORIZATION).map(header::HeaderValue::as_bytes);
    match auth.authenticate(authorization, path) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(AuthRefusal { status, code, message }) => {
            let mut response =
                (status, axum::Json(json!({"error": {"code": code, "message": message}}))).into_response();
            if status == StatusCode::UNAUTHORIZED {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_is_refused_off_loopback() {
        let loopback: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let v6: SocketAddr = "[::1]:8000".parse().unwrap();
        let open: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        assert!(AuthMode::Off.check_listen(loopback).is_ok());
        assert!(AuthMode::Off.check_listen(v6).is_ok());
        let err = AuthMode::Off.check_listen(open).unwrap_err();
        assert!(err.contains("0.0.0.0:8000"), "{err}");
        assert!(AuthMode::Required.check_listen(open).is_ok());
    }
}
