//! `Idempotency-Key` for the local API's POSTs, so a workload (or the
//! Python SDK) can retry a start, a step or a usage report after a timeout
//! or a dropped connection without it taking effect twice.
//!
//! The first request with a key runs; its answer (any status below 500) is
//! kept for [`TTL`] and returned, byte for byte, to every repeat of the same
//! caller, path and key with `Idempotent-Replayed: true`. A repeat while the first
//! is still running gets 409 `REQUEST_IN_PROGRESS` (retry shortly); the same
//! key with a different body gets 422 `IDEMPOTENCY_KEY_REUSED`, since it is
//! a client bug, not a retry. 5xx answers (boot guard, outbox full, store
//! failure) are not kept: nothing took effect, so a retry runs again.
//!
//! The cache lives in memory, bounded to [`CAPACITY`] keys (oldest evicted
//! first): a retry that crosses a restart of the edge agent runs again (a
//! pre-step check then reserves its estimate a second time until the run
//! ends). Persisting answers would cost an fsync per request on the hot
//! path; restarts are rare next to timeouts and dropped connections.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// How long an answer is kept.
pub const TTL: Duration = Duration::from_secs(15 * 60);
/// Most keys kept.
pub const CAPACITY: usize = 20_000;
/// Largest body read (the local API's bodies are small JSON).
const MAX_BODY: usize = 2 * 1024 * 1024;
/// Longest key accepted.
const MAX_KEY_LEN: usize = 255;

/// The answers kept by key.
#[derive(Debug, Default)]
pub struct IdempotencyCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Keys in the order they arrived, for eviction.
    order: VecDeque<(String, Instant)>,
}

#[derive(Debug)]
struct Entry {
    body_hash: [u8; 32],
    at: Instant,
    answer: Option<Stored>,
}

#[derive(Debug, Clone)]
struct Stored {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

/// What to do with an arriving request.
enum Begin {
    Run,
    Replay(Stored),
    InProgress,
    Reused,
}

impl IdempotencyCache {
    /// An empty cache, shared by the router.
    pub fn shared() -> Arc<IdempotencyCache> {
        Arc::new(IdempotencyCache::default())
    }

    /// Keys held now (answers and requests still running).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin(&self, key: &str, body_hash: [u8; 32], now: Instant) -> Begin {
        let mut inner = self.lock();
        inner.expire(now);
        if let Some(entry) = inner.entries.get(key) {
            return match (&entry.answer, entry.body_hash == body_hash) {
                (_, false) => Begin::Reused,
                (Some(stored), true) => Begin::Replay(stored.clone()),
                (None, true) => Begin::InProgress,
            };
        }
        // Items left by abandoned requests are dropped from the front once
        // the queue is twice the capacity, so it stays bounded.
        while inner.order.len() >= 2 * CAPACITY
            && let Some((oldest, at)) = inner.order.pop_front()
        {
            if inner.entries.get(&oldest).is_some_and(|e| e.at == at) {
                inner.entries.remove(&oldest);
            }
        }
        while inner.entries.len() >= CAPACITY {
            let Some((oldest, at)) = inner.order.pop_front() else { break };
            // An order item left by an abandoned request may name a key
            // that arrived again since: only its own item evicts it.
            if inner.entries.get(&oldest).is_some_and(|e| e.at == at) {
                inner.entries.remove(&oldest);
            }
        }
        inner.entries.insert(key.to_owned(), Entry { body_hash, at: now, answer: None });
        inner.order.push_back((key.to_owned(), now));
        Begin::Run
    }

    fn complete(&self, key: &str, stored: Stored) {
        if let Some(entry) = self.lock().entries.get_mut(key) {
            entry.answer = Some(stored);
        }
    }

    fn abandon(&self, key: &str) {
        let mut inner = self.lock();
        if inner.entries.get(key).is_some_and(|e| e.answer.is_none()) {
            inner.entries.remove(key);
        }
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        while let Some((key, at)) = self.order.front() {
            if now.duration_since(*at) < TTL {
                break;
            }
            let key = key.clone();
            self.order.pop_front();
            if self.entries.get(&key).is_some_and(|e| now.duration_since(e.at) >= TTL) {
                self.entries.remove(&key);
            }
        }
    }
}

/// Forgets a running request's key if its handler never finished (the
/// client went away and the future was dropped), so a retry runs.
struct Pending<'a> {
    cache: &'a IdempotencyCache,
    key: &'a str,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.cache.abandon(self.key);
        }
    }
}

fn refuse(status: StatusCode, code: &str, message: String) -> Response {
    let mut response =
        (status, axum::Json(json!({"error": {"code": code, "message": message}}))).into_response();
    if status == StatusCode::CONFLICT {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The middleware: POSTs with an `Idempotency-Key` run once per path and
/// key.
pub async fn layer(State(cache): State<Arc<IdempotencyCache>>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(raw_key) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let key = match raw_key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic()) => {
            k.to_owned()
        }
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                format!("Idempotency-Key: must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            );
        }
    };
    let (parts, body) = request.into_parts();
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return refuse(StatusCode::BAD_REQUEST, "INVALID_INPUT", format!("cannot read the body: {e}"));
        }
    };
    // Two callers (workload keys) never share an answer.
    let caller =
        parts.extensions.get::<crate::auth::Caller>().and_then(|c| c.key_id.clone()).unwrap_or_default();
    let slot = format!("{caller} {} {key}", parts.uri.path());
    match cache.begin(&slot, Sha256::digest(&body).into(), Instant::now()) {
        Begin::Run => {}
        Begin::Replay(stored) => {
            let mut response = (stored.status, stored.body).into_response();
            if let Some(ct) = stored.content_type {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            return response;
        }
        Begin::InProgress => {
            return refuse(
                StatusCode::CONFLICT,
                "REQUEST_IN_PROGRESS",
                format!("a request with Idempotency-Key `{key}` is still running; retry shortly"),
            );
        }
        Begin::Reused => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                format!("Idempotency-Key `{key}` was used for a different request body on this path"),
            );
        }
    }
    let mut pending = Pending { cache: &cache, key: &slot, done: false };
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let (parts, body) = response.into_parts();
    let body = match to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                format!("cannot read the answer: {e}"),
            );
        }
    };
    if parts.status.is_server_error() {
        cache.abandon(&slot);
    } else {
        cache.complete(
            &slot,
            Stored {
                status: parts.status,
                content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
                body: body.clone(),
            },
        );
    }
    pending.done = true;
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(body: &'static str) -> Stored {
        Stored { status: StatusCode::OK, content_type: None, body: Bytes::from_static(body.as_bytes()) }
    }

    #[test]
    fn a_key_runs_once_then_replays_and_refuses_another_body() {
        let cache = IdempotencyCache::default();
        let now = Instant::now();
        assert!(matches!(cache.begin("/a k1", [1; 32], now), Begin::Run));
        assert!(matches!(cache.begin("/a k1", [1; 32], now), Begin::InProgress));
        cache.complete("/a k1", stored("first"));
        match cache.begin("/a k1", [1; 32], now) {
            Begin::Replay(s) => assert_eq!(s.body, "first"),
            _ => panic!("expected a replay"),
        }
        assert!(matches!(cache.begin("/a k1", [2; 32], now), Begin::Reused));
        // Another path is another request.
        assert!(matches!(cache.begin("/b k1", [2; 32], now), Begin::Run));
    }

    #[test]
    fn an_abandoned_request_runs_again_and_answers_expire() {
        let cache = IdempotencyCache::default();
        let now = Instant::now();
        assert!(matches!(cache.begin("/a k", [1; 32], now), Begin::Run));
        cache.abandon("/a k");
        assert!(matches!(cache.begin("/a k", [1; 32], now), Begin::Run));
        cache.complete("/a k", stored("x"));
        // A completed answer is not abandoned by a late drop.
        cache.abandon("/a k");
        assert!(matches!(cache.begin("/a k", [1; 32], now), Begin::Replay(_)));
        let later = now + TTL + Duration::from_secs(1);
        assert!(matches!(cache.begin("/a k", [1; 32], later), Begin::Run));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = IdempotencyCache::default();
        let now = Instant::now();
        for i in 0..CAPACITY + 10 {
            assert!(matches!(cache.begin(&format!("/a {i}"), [0; 32], now), Begin::Run));
        }
        assert_eq!(cache.len(), CAPACITY);
        // The oldest went first.
        assert!(matches!(cache.begin("/a 0", [0; 32], now), Begin::Run));
    }
}
