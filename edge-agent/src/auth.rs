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
//! the handlers on the decoded run id, `api::authorize_run`).
//!
//! [`AuthMode::Off`] exists for development and is refused unless the
//! listen address is loopback. `/health` and `/metrics` are always open
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

    fn check(&self, request: &Request) -> Result<Caller, (StatusCode, &'static str, String)> {
        if self.mode == AuthMode::Off {
            return Ok(Caller { key_id: None });
        }
        let Some(snapshot) = self.engine.slot().current() else {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "BOOT_GUARD",
                "no policy snapshot yet, so no API key can be checked".to_owned(),
            ));
        };
        let unauthenticated =
            |message: &str| (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message.to_owned());
        let header = request.headers().get(header::AUTHORIZATION).ok_or_else(|| {
            unauthenticated("a workload API key is required: send `Authorization: Bearer <key>`")
        })?;
        let secret = header
            .to_str()
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

/// The middleware.
pub async fn layer(State(auth): State<Arc<Auth>>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/health" || path == "/metrics" {
        return next.run(request).await;
    }
    match auth.check(&request) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err((status, code, message)) => {
            if status == StatusCode::UNAUTHORIZED {
                auth.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(message = "local API call refused", reason = %message, path = %request.uri().path());
            }
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
