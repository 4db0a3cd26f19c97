//! The local HTTP/JSON API the workload (and the Python SDK) calls, on
//! `--listen` (default `127.0.0.1:8000`).
//!
//! | Method | Path | |
//! |---|---|---|
//! | GET | `/health` | components: snapshot, outbox, boot guard |
//! | GET | `/metrics` | Prometheus text |
//! | GET | `/api/v1/capabilities` | what this agent enforces |
//! | POST | `/api/v1/runtime/simulate` | a decision without side effects |
//! | POST | `/api/v1/runs` | start a run |
//! | GET | `/api/v1/runs/{run_id}` | the run |
//! | POST | `/api/v1/runs/{run_id}/steps` | pre-step check (reserves the estimate) |
//! | POST | `/api/v1/runs/{run_id}/steps/{step_id}/usage` | usage report |
//! | POST | `/api/v1/runs/{run_id}/resume` | resume after PAUSE |
//! | POST | `/api/v1/runs/{run_id}/cancel` | cancel (fires the cancel signal) |
//! | POST | `/api/v1/runs/{run_id}/end` | end with the workload's verdict |
//! | GET | `/api/v1/runs/{run_id}/cancellation?wait_ms=N` | long-poll the cancel signal |
//!
//! Errors are JSON `{"error": {"code", "message"}}` with 400 (bad input,
//! naming the field), 404, 409 (run paused or ended), 503 (boot guard,
//! stale fail-closed snapshot, outbox full) or 500.
//!
//! Every POST takes an optional `Idempotency-Key` header: a retry with the
//! same key gets the first answer instead of running again (see
//! [`crate::idempotency`]).

use std::sync::Arc;
use std::time::Duration;

use aos_core::evaluate::{RunScope, StepInput};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::engine::{EndRun, Engine, EngineError, StartRun, StepAnswer, StepRequest, UsageReport};
use crate::ids::now_ms;
use crate::jobs::JobBoard;
use crate::snapshots::{BootGuard, SnapshotSlot, Staleness};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct App {
    /// The enforcement engine.
    pub engine: Arc<Engine>,
    /// Scheduled job statuses.
    pub jobs: JobBoard,
    /// The link to the control plane, when the agent has one.
    pub link: Option<Arc<crate::link::Link>>,
    /// Bearer authentication with the snapshot's workload keys.
    pub auth: Arc<crate::auth::Auth>,
    /// Where the local gRPC API ([`crate::grpc_api`]) listens, when it is
    /// enabled (`--grpc-listen`); listed in the capabilities.
    pub grpc_listen: Option<std::net::SocketAddr>,
}

/// Builds the router.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/capabilities", get(capabilities))
        .route("/api/v1/runtime/simulate", post(simulate))
        .route("/api/v1/runs", post(start_run))
        .route("/api/v1/runs/{run_id}", get(get_run))
        .route("/api/v1/runs/{run_id}/steps", post(pre_step))
        .route("/api/v1/runs/{run_id}/steps/{step_id}/usage", post(usage))
        .route("/api/v1/runs/{run_id}/resume", post(resume))
        .route("/api/v1/runs/{run_id}/cancel", post(cancel))
        .route("/api/v1/runs/{run_id}/end", post(end))
        .route("/api/v1/runs/{run_id}/cancellation", get(cancellation))
        .route("/api/v1/access", post(access))
        .layer(axum::middleware::from_fn_with_state(
            crate::idempotency::IdempotencyCache::shared(),
            crate::idempotency::layer,
        ))
        // Outermost: a caller is authenticated before anything else runs.
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app.auth), crate::auth::layer))
        .with_state(app)
}

/// A run may be driven only with the workload key it was started with; a
/// run started without one (authentication off) by any caller. Checked on
/// the decoded path, after routing, so an encoded id cannot slip by (and
/// by the gRPC API on the request's field).
pub(crate) fn authorize_run(app: &App, caller: &Caller, run_id: &str) -> Result<(), ApiError> {
    let Some(key_id) = &caller.key_id else {
        return Ok(());
    };
    match app.engine.run_api_key(run_id) {
        Ok(Some(owner)) if owner != *key_id => Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "FORBIDDEN",
            message: format!("run `{run_id}` was started with another API key; only that key may use it"),
            details: None,
        }),
        // Unknown runs are the handler's 404.
        _ => Ok(()),
    }
}

/// An error answer (also the gRPC API's, which maps the status).
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Extra fields of the error object (evidence id, decision).
    pub(crate) details: Option<Value>,
}

impl ApiError {
    /// The JSON body: `{"error": {"code", "message", ...details}}`.
    pub(crate) fn body(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(Value::Object(extra)), Some(object)) = (&self.details, error.as_object_mut()) {
            object.extend(extra.clone());
        }
        json!({ "error": error })
    }
}

impl From<crate::auth::AuthRefusal> for ApiError {
    fn from(r: crate::auth::AuthRefusal) -> Self {
        ApiError { status: r.status, code: r.code, message: r.message, details: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        // A governance refusal is a decision, not a transient fault: no
        // Retry-After, so clients do not retry it.
        if self.status == StatusCode::SERVICE_UNAVAILABLE && !self.code.starts_with("GOVERNANCE_") {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            EngineError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, *code),
            EngineError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            EngineError::Conflict { code, .. } => (StatusCode::CONFLICT, *code),
            EngineError::Invalid { .. } => (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            EngineError::Store(_) => {
                tracing::error!(message = "store failure; request not acknowledged", error = %e);
                (StatusCode::INTERNAL_SERVER_ERROR, "STORE_FAILURE")
            }
            EngineError::Access(a) => {
                return ApiError {
                    status: StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY),
                    code: a.code,
                    message,
                    details: Some(json!({
                        "evidence_id": a.evidence_id,
                        "run_status": a.run_status,
                        "decision": a.decision,
                    })),
                };
            }
        };
        ApiError { status, code, message, details: None }
    }
}

/// A JSON body that may be absent (empty) for endpoints whose fields are
/// all optional.
fn optional_body<T: Default + serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "INVALID_INPUT",
        message: format!("{}: {}", e.path(), e.inner()),
        details: None,
    })
}

/// A required JSON body, whatever the `Content-Type` (`curl -d` sends a
/// form type): the error names the field path.
fn required_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_INPUT",
            message: "a JSON body is required".to_owned(),
            details: None,
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "INVALID_INPUT",
        message: format!("{}: {}", e.path(), e.inner()),
        details: None,
    })
}

async fn health(State(app): State<App>) -> Response {
    let engine = &app.engine;
    let now = now_ms();
    let guard = engine.slot().guard();
    let current = engine.slot().current();
    let (pending, bytes, budget) = engine.outbox_stats();
    let (published, subscribers, lagged) = engine.events().stats();
    let staleness = current.as_ref().map(|s| SnapshotSlot::staleness(s, now));
    let snapshot = match (&current, staleness) {
        (Some(s), Some(Staleness::Fresh)) => {
            json!({"status": "ok", "version": s.version(), "not_after_ms": s.snapshot().not_after_ms})
        }
        (Some(s), _) => json!({
            "status": "stale",
            "version": s.version(),
            "not_after_ms": s.snapshot().not_after_ms,
            "fail_closed_policies": SnapshotSlot::fail_closed_policies(s),
        }),
        (None, _) => json!({"status": "missing"}),
    };
    let validated = guard == BootGuard::Ready;
    let outbox_ok = bytes < budget;
    let healthy = validated && outbox_ok && matches!(staleness, Some(Staleness::Fresh));
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "tenant_id": engine.slot().tenant_id(),
        "components": {
            "snapshot": snapshot,
            "boot_guard": {
                "validated": validated,
                "reason": match &guard {
                    BootGuard::Ready => Value::Null,
                    BootGuard::NoSnapshot => json!("no snapshot yet"),
                    BootGuard::Invalid(e) => json!(e),
                },
            },
            "outbox": {
                "status": if outbox_ok { "ok" } else { "full" },
                "pending_records": pending,
                "pending_bytes": bytes,
                "budget_bytes": budget,
            },
            "event_reactor": {
                "status": "ok",
                "published": published,
                "subscribers": subscribers,
                "lagged": lagged,
            },
            "scheduler": { "jobs": app.jobs.snapshot() },
            "control_plane": link_health(app.link.as_deref()),
            "governance": engine.governance(),
        },
    });
    let status = if validated { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// The link to the control plane for `/health`.
fn link_health(link: Option<&crate::link::Link>) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(link) = link else {
        return json!({"status": "not_configured"});
    };
    let status = link.status();
    let watch = link.watch_endpoint();
    json!({
        "status": if watch.is_some() { "connected" } else { "disconnected" },
        "watch_node": watch,
        "delivery_node": link.delivery_endpoint(),
        "delivery_moves": status.delivery_moves.load(Relaxed),
        "acks": status.acks.load(Relaxed),
        "nacks": status.nacks.load(Relaxed),
        "records_delivered": status.delivered.load(Relaxed),
        "connection_failures": status.failures.load(Relaxed),
    })
}

async fn metrics(State(app): State<App>) -> Response {
    let engine = &app.engine;
    let (pending, bytes, budget) = engine.outbox_stats();
    let version = engine.slot().current().map_or(0, |s| s.version());
    let validated = u8::from(engine.slot().guard() == BootGuard::Ready);
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: String| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    };
    gauge(
        "aos_agent_snapshot_version",
        "Version of the enforced policy snapshot (0: none).",
        "gauge",
        version.to_string(),
    );
    gauge(
        "aos_agent_boot_guard_validated",
        "1 when a verified snapshot is loaded.",
        "gauge",
        validated.to_string(),
    );
    gauge(
        "aos_agent_outbox_pending_records",
        "Records not yet acknowledged by the control plane.",
        "gauge",
        pending.to_string(),
    );
    gauge("aos_agent_outbox_pending_bytes", "Bytes of pending records.", "gauge", bytes.to_string());
    gauge("aos_agent_outbox_budget_bytes", "Outbox disk budget.", "gauge", budget.to_string());
    gauge(
        "aos_agent_auth_refused_total",
        "Local API calls refused for a missing, unknown or revoked workload key.",
        "counter",
        app.auth.refused().to_string(),
    );
    gauge(
        "aos_agent_steps_decided_total",
        "Step decisions taken.",
        "counter",
        engine.steps_decided().to_string(),
    );
    gauge(
        "aos_agent_store_fsyncs_total",
        "fsyncs of the agent store (shared by concurrent requests).",
        "counter",
        engine.store().fsyncs().to_string(),
    );
    let (published, _, lagged) = engine.events().stats();
    gauge(
        "aos_agent_events_published_total",
        "Events published on the EVENT path.",
        "counter",
        published.to_string(),
    );
    gauge(
        "aos_agent_events_lagged_total",
        "Events a slow subscriber skipped.",
        "counter",
        lagged.to_string(),
    );
    if let Some(link) = app.link.as_deref() {
        gauge(
            "aos_agent_delivery_moves_total",
            "Times record delivery moved to another node to reach the Raft leader.",
            "counter",
            link.status().delivery_moves.load(std::sync::atomic::Ordering::Relaxed).to_string(),
        );
    }
    out.push_str("# HELP aos_agent_job_runs_total Completed scheduled job runs.\n# TYPE aos_agent_job_runs_total counter\n");
    for (name, status) in app.jobs.snapshot() {
        out.push_str(&format!("aos_agent_job_runs_total{{job=\"{name}\"}} {}\n", status.runs));
    }
    let mut runs: Vec<_> = engine.run_counts().into_iter().collect();
    runs.sort_unstable();
    out.push_str("# HELP aos_agent_runs Runs known to this agent, by status.\n# TYPE aos_agent_runs gauge\n");
    for (status, count) in runs {
        out.push_str(&format!("aos_agent_runs{{status=\"{status}\"}} {count}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

async fn capabilities(State(app): State<App>) -> Json<Value> {
    let engine = &app.engine;
    let current = engine.slot().current();
    Json(json!({
        "tenant_id": engine.slot().tenant_id(),
        "snapshot_version": current.as_ref().map(|s| s.version()),
        "policies": current.as_ref().map_or(0, |s| s.snapshot().policies.len()),
        "phases": ["PRE_STEP", "USAGE"],
        "outcomes": ["CONTINUE", "WARN", "PAUSE", "STOP", "KILL"],
        "monitors": ["TOKENS", "COST_USD", "REQUESTS", "PII", "HALLUCINATION", "RAG_ACCESS", "DB_QUERIES"],
        // GAP-066: the only data access there is, all of it governed.
        "data_access": {
            "endpoint": "/api/v1/access",
            // The same access over gRPC, when `--grpc-listen` enables it.
            "grpc": app.grpc_listen.map(|addr| json!({
                "address": addr.to_string(),
                "service": crate::grpc_api::SERVICE,
                "method": "Access",
            })),
            "actions": crate::engine::ACCESS_ACTIONS,
            "planes": current.as_ref().map(|s| s.snapshot().knowledge_planes.iter().filter(|p| p.active).map(|p| p.plane_id.clone()).collect::<Vec<_>>()).unwrap_or_default(),
        },
        "run_statuses": ["queued", "running", "paused", "succeeded", "failed", "failed_policy", "cancelled", "retry"],
        // GAP-035: what a policy that does not say gets.
        "default_failure_mode": aos_core::policy::FailureMode::default().as_str(),
        // INV-005: how several policies' outcomes combine.
        "conflict_resolution": "most restrictive outcome wins; among equals, higher precedence, then the lowest policy id is credited",
        "governance": engine.governance(),
        "authentication": match app.auth.mode() {
            crate::auth::AuthMode::Required => "bearer workload key",
            crate::auth::AuthMode::Off => "off (loopback development)",
        },
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimulateBody {
    #[serde(default)]
    scope: RunScope,
    run_id: Option<String>,
    step: StepInput,
}

async fn simulate(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let engine = &app.engine;
    let req: SimulateBody = required_body(&body)?;
    if let Some(run_id) = &req.run_id {
        authorize_run(&app, &caller, run_id)?;
    }
    Ok(Json(engine.simulate(req.scope, req.run_id.as_deref(), req.step)?))
}

async fn start_run(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let engine = &app.engine;
    let mut req: StartRun = optional_body(&body)?;
    // The key the caller authenticated with is the run's API key scope
    // (GAP-004/028); a body naming another one is refused, not trusted.
    if let Some(key_id) = caller.key_id.clone() {
        match &req.api_key_id {
            Some(named) if *named != key_id => {
                return Err(ApiError {
                    status: StatusCode::FORBIDDEN,
                    code: "FORBIDDEN",
                    message: format!(
                        "api_key_id: names key `{named}` but the request authenticated with key `{key_id}`"
                    ),
                    details: None,
                });
            }
            _ => req.api_key_id = Some(key_id),
        }
    }
    // Starting an existing run id answers that run: only to its own key.
    if let Some(run_id) = &req.run_id {
        authorize_run(&app, &caller, run_id)?;
    }
    let run = engine.start_run(req).await?;
    Ok((StatusCode::CREATED, Json(run)).into_response())
}

async fn get_run(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize_run(&app, &caller, &run_id)?;
    let engine = &app.engine;
    Ok(Json(engine.run(&run_id)?))
}

/// `POST /api/v1/access`: governed data access (GAP-065). The caller must
/// own the run, like every run endpoint.
async fn access(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: crate::engine::AccessRequest = required_body(&body)?;
    Ok(Json(access_as(&app, &caller, req).await?))
}

/// A governed data access by `caller`, who must own the run: the JSON
/// answer. Shared by `POST /api/v1/access` and the gRPC `Access`.
pub(crate) async fn access_as(
    app: &App,
    caller: &Caller,
    req: crate::engine::AccessRequest,
) -> Result<Value, ApiError> {
    authorize_run(app, caller, &req.run_id)?;
    // Its own task: a client that disconnects drops this handler, but an
    // access that was admitted still finishes and writes its evidence.
    let engine = Arc::clone(&app.engine);
    let answer = tokio::spawn(async move { engine.access(req).await }).await.map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "INTERNAL",
        message: format!("the access task failed: {e}"),
        details: None,
    })??;
    Ok(serde_json::to_value(answer).unwrap_or(Value::Null))
}

async fn pre_step(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<StepAnswer>, ApiError> {
    authorize_run(&app, &caller, &run_id)?;
    let engine = &app.engine;
    let req: StepRequest = optional_body(&body)?;
    Ok(Json(engine.pre_step(&run_id, req).await?))
}

async fn usage(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path((run_id, step_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<StepAnswer>, ApiError> {
    authorize_run(&app, &caller, &run_id)?;
    let engine = &app.engine;
    let req: UsageReport = optional_body(&body)?;
    Ok(Json(engine.report_usage(&run_id, &step_id, req).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    acknowledged_by: Option<String>,
}

async fn resume(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize_run(&app, &caller, &run_id)?;
    let engine = &app.engine;
    let req: ResumeBody = optional_body(&body)?;
    Ok(Json(engine.resume(&run_id, req.acknowledged_by).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    reason: Option<String>,
}

async fn cancel(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize_run(&app, &caller, &run_id)?;
    let engine = &app.engine;
    let req: CancelBody = optional_body(&body)?;
    Ok(Json(engine.cancel(&run_id, req.reason).await?))
}

async fn end(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize_run(&app, &caller, &run_id)?;
    let engine = &app.engine;
    let req: EndRun = required_body(&body)?;
    Ok(Json(engine.end(&run_id, req).await?))
}

#[derive(Debug, Deserialize)]
struct WaitParams {
    #[serde(default)]
    wait_ms: u64,
}

/// Long-polls the run's cancel signal: returns as soon as the run is killed
/// or cancelled, or after `wait_ms` (at most 60 s) with `cancelled: false`.
async fn cancellation(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
    Query(params): Query<WaitParams>,
) -> Result<Json<Value>, ApiError> {
    authorize_run(&app, &caller, &run_id)?;
    let engine = &app.engine;
    let mut signal = engine.cancel_signal(&run_id)?;
    let wait = Duration::from_millis(params.wait_ms.min(60_000));
    let cancelled = *signal.borrow_and_update()
        || tokio::time::timeout(wait, signal.wait_for(|c| *c)).await.is_ok_and(|r| r.is_ok());
    Ok(Json(json!({ "run_id": run_id, "cancelled": cancelled })))
}
