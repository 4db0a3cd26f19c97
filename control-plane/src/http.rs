//! The admin REST API under `/api/v1/`.
//!
//! This module holds routing, authentication, tenant/role authorisation and
//! error mapping, plus the cluster, tenant and audit handlers. The
//! tenant-scoped resources live one per file: [`projects`], [`keys`],
//! [`actors`], [`policies`], [`overrides`].
//!
//! Authorisation happens here, before anything is proposed (the state
//! machine re-checks it as defence in depth): a tenant key may only touch
//! its own tenant, each resource names the roles that may write it, every
//! role of the tenant may read, and every refusal is audited through
//! `RecordDenial`. An unknown tenant is a 404, answered only to a caller
//! who may ask about it.
//!
//! Every response is JSON; every error is `{"error": {"code", "message",
//! "field_errors"?}}` with a non-2xx status: 400 malformed, 401 no or bad
//! key, 403 wrong role or tenant (and audited through `RecordDenial`), 404
//! unknown, 409 conflict or illegal transition, 503 + `Retry-After` when no
//! leader is reachable.

use aos_core::policy::ActorRole;
use aos_cp_state::{ActorRef, ActorType, Command, CommandResult, Proposal, RejectionCode};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use openraft::{BasicNode, ServerState};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::node::{LeaderContact, Node};
use crate::now_ms;
use crate::raft::NodeId;
use crate::write::{ClusterError, Consistency, propose, read_barrier};

pub mod activity;
pub mod actors;
pub mod agents;
pub mod alerts;
pub mod data_access;
pub mod exports;
pub mod governance;
pub mod incidents;
pub mod keys;
pub mod logs;
pub mod metrics;
pub mod overrides;
pub mod policies;
pub mod projects;
pub mod snapshots;

/// Builds the router for one node.
pub fn router(node: Node) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/api/v1/openapi.json", get(openapi_document))
        .route("/api/v1/cluster", get(cluster_status))
        .route("/api/v1/cluster/nodes", post(add_node))
        .route("/api/v1/cluster/nodes/{node_id}", delete(remove_node))
        .route("/api/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/api/v1/audit", get(list_audit))
        .merge(projects::routes())
        .merge(keys::routes())
        .merge(actors::routes())
        .merge(agents::routes())
        .merge(activity::routes())
        .merge(governance::routes())
        .merge(incidents::routes())
        .merge(alerts::routes())
        .merge(exports::routes())
        .merge(logs::routes())
        .merge(data_access::routes())
        .merge(policies::routes())
        .merge(overrides::routes())
        .merge(snapshots::routes())
        .merge(metrics::routes())
        .layer(axum::middleware::from_fn_with_state(node.clone(), refuse_when_boot_failed))
        .with_state(node)
}

/// A node that failed its spine checks at start answers everything but
/// `/health` and `/metrics` with 503 `BOOT_FAILED` naming the failed checks
/// (see [`crate::spine`]).
async fn refuse_when_boot_failed(
    State(node): State<Node>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if path == "/health" || path == "/metrics" {
        return next.run(request).await;
    }
    match node.boot_failure() {
        Ok(()) => next.run(request).await,
        Err(why) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "BOOT_FAILED", why).into_response(),
    }
}

/// The OpenAPI document of this API, checked in beside the deployment
/// files; a test keeps it equal to the router.
pub const OPENAPI_DOCUMENT: &str = include_str!("../../deploy/openapi/control-plane.json");

async fn openapi_document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_DOCUMENT).into_response()
}

/// Body of every `…/revoke` endpoint: the reason is required and audited.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    reason: String,
}

/// Revokes a record a tenant owns (an API key, a join token): authorises
/// `intent`, reads the reason, checks after a read barrier that the record
/// belongs to the tenant — 404 `unknown {what}` otherwise, so one tenant
/// cannot probe another's ids — and commits `command(reason)`.
async fn revoke_owned(
    node: &Node,
    headers: &HeaderMap,
    intent: &Intent<'_>,
    body: Result<Json<RevokeBody>, axum::extract::rejection::JsonRejection>,
    owned: impl FnOnce(&aos_cp_state::ControlState) -> bool,
    what: &str,
    command: impl FnOnce(String) -> Command,
) -> Result<Response, ApiError> {
    let actor = authorize(node, headers, intent).await?;
    let Json(req) = body.map_err(|e| bad_body(&e))?;
    read_barrier(node, Consistency::Linearizable).await?;
    require_tenant(node, intent.tenant)?;
    if !node.state().read(|s| owned(&s.0)) {
        return Err(ApiError::not_found(format!("unknown {what} in tenant `{}`", intent.tenant)));
    }
    commit(node, headers, actor, command(req.reason)).await
}

/// An API error with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field_errors: Vec<aos_core::FieldError>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field_errors: Vec::new() }
    }

    /// 400 with per-field problems.
    fn invalid(message: impl Into<String>, field_errors: Vec<aos_core::FieldError>) -> Self {
        ApiError { field_errors, ..ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", message) }
    }

    fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }
}

/// Maps a JSON body rejection to 400; axum's message names the field path.
fn bad_body(rejection: &axum::extract::rejection::JsonRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", rejection.body_text())
}

/// Every role of a tenant may read its resources.
const READERS: &[ActorRole] =
    &[ActorRole::Admin, ActorRole::PolicyAuthor, ActorRole::Sre, ActorRole::Auditor];
/// Tenant administration (projects, keys, actors).
const ADMINS: &[ActorRole] = &[ActorRole::Admin];

/// What a tenant-scoped request is, for authorisation and the ledger.
struct Intent<'a> {
    /// The tenant in the path.
    tenant: &'a str,
    /// Roles that may do it.
    roles: &'static [ActorRole],
    /// What is attempted, e.g. `APPLY_POLICY` (recorded on denial).
    action: &'static str,
    /// The resource, e.g. `tenants/acme/policies`.
    target: String,
}

/// Authenticates the caller and checks tenant and role; a refusal is a 403
/// recorded in the ledger. The tenant's existence is not checked here.
async fn authorize(node: &Node, headers: &HeaderMap, intent: &Intent<'_>) -> Result<ActorRef, ApiError> {
    let actor = authenticate(node, headers).await?;
    if let Some(own) = actor.tenant_id.as_deref()
        && own != intent.tenant
    {
        let reason = format!("a key of tenant `{own}` may not act on tenant `{}`", intent.tenant);
        return Err(deny_in(node, &actor, Some(intent.tenant), intent.action, &intent.target, &reason).await);
    }
    if !intent.roles.contains(&actor.role) {
        let reason = format!("role `{}` may not {}", actor.role.as_str(), intent.action);
        return Err(deny_in(node, &actor, Some(intent.tenant), intent.action, &intent.target, &reason).await);
    }
    Ok(actor)
}

/// Authorises a read, waits for the read barrier and checks that the tenant
/// exists.
async fn authorize_read(
    node: &Node,
    headers: &HeaderMap,
    intent: &Intent<'_>,
    consistency: Consistency,
) -> Result<ActorRef, ApiError> {
    // Barrier first: a linearizable read must also see a key revoked just
    // before it, even on a lagging follower.
    read_barrier(node, consistency).await?;
    let actor = authorize(node, headers, intent).await?;
    require_tenant(node, intent.tenant)?;
    Ok(actor)
}

/// 404 when the tenant is unknown to this node's applied state.
fn require_tenant(node: &Node, tenant: &str) -> Result<(), ApiError> {
    if node.state().read(|s| s.0.tenant(tenant).is_some()) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("unknown tenant `{tenant}`")))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if !self.field_errors.is_empty() {
            body["error"]["field_errors"] = json!(self.field_errors);
        }
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::NoLeader
            | ClusterError::LeaderUnreachable { .. }
            | ClusterError::NotLeader { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "LEADER_UNAVAILABLE", e.to_string())
            }
            ClusterError::CommitTimeout => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "COMMIT_TIMEOUT", e.to_string())
            }
            ClusterError::NoQuorum { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NO_QUORUM", e.to_string())
            }
            ClusterError::Raft(_) | ClusterError::Codec(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string())
            }
        }
    }
}

/// Lowercase hex SHA-256 of an API key secret: how keys are stored.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Resolves the bearer key to the principal it acts as.
async fn authenticate(node: &Node, headers: &HeaderMap) -> Result<ActorRef, ApiError> {
    let unauthorized =
        || ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "missing or unknown API key");
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(unauthorized)?;
    let hash = secret_hash(secret);
    let lookup = || {
        node.state().read(|s| {
            s.0.api_key_by_hash(&hash).map(|key| ActorRef {
                actor_id: key.key_id.clone(),
                actor_type: ActorType::ApiKey,
                role: key.role,
                tenant_id: key.tenant_id.clone(),
            })
        })
    };
    if let Some(actor) = lookup() {
        return Ok(actor);
    }
    // A key created a moment ago through another node may not be applied
    // here yet: catch up to the leader's commit index once before refusing,
    // so a client can use a key as soon as its creation was acknowledged.
    read_barrier(node, Consistency::Linearizable).await?;
    lookup().ok_or_else(unauthorized)
}

/// Refuses, and records the refusal in the audit ledger (best effort: the
/// refusal stands even if the ledger write cannot be committed now).
async fn deny(node: &Node, actor: &ActorRef, action: &str, target: &str, reason: &str) -> ApiError {
    deny_in(node, actor, actor.tenant_id.as_deref(), action, target, reason).await
}

/// [`deny`] for a request aimed at `tenant` (recorded under that tenant).
async fn deny_in(
    node: &Node,
    actor: &ActorRef,
    tenant: Option<&str>,
    action: &str,
    target: &str,
    reason: &str,
) -> ApiError {
    let proposal = Proposal {
        request_id: request_id(&HeaderMap::new(), actor),
        actor: actor.clone(),
        at_ms: now_ms(),
        command: Command::RecordDenial {
            tenant_id: tenant.map(str::to_owned),
            action: action.to_owned(),
            target: target.to_owned(),
            reason: reason.to_owned(),
        },
    };
    if let Err(e) = propose(node, proposal).await {
        tracing::warn!(message = "could not audit a denied request", action, target, error = %e);
    }
    ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", reason.to_owned())
}

/// The proposal's request id: the caller's `Idempotency-Key` scoped to the
/// caller (so one tenant's key can never replay — and read — another
/// caller's answer), or a random id.
fn request_id(headers: &HeaderMap, actor: &ActorRef) -> String {
    if let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).filter(|k| !k.is_empty())
    {
        return format!("{}:{key}", actor.actor_id);
    }
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Fall back to time: still unique enough per node for idempotency.
        return format!("req-{}", now_ms());
    }
    format!("req-{}", hex::encode(bytes))
}

/// Commits a command and maps the state machine's answer to HTTP.
async fn commit(
    node: &Node,
    headers: &HeaderMap,
    actor: ActorRef,
    command: Command,
) -> Result<Response, ApiError> {
    let body = commit_with_id(node, request_id(headers, &actor), actor, command).await?;
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// Commits a command under `request_id`; the applied answer as JSON
/// (`log_index`, `audit_seq`, `tenant_snapshot_version`, `result`).
async fn commit_with_id(
    node: &Node,
    request_id: String,
    actor: ActorRef,
    command: Command,
) -> Result<Value, ApiError> {
    let proposal = Proposal { request_id, actor, at_ms: now_ms(), command };
    let committed = propose(node, proposal).await?;
    match committed.result {
        CommandResult::Applied(applied) => Ok(json!({
            "log_index": committed.log_index,
            "audit_seq": applied.audit_seq,
            "tenant_snapshot_version": applied.tenant_snapshot_version,
            "result": applied.detail,
        })),
        CommandResult::Rejected(rejection) => {
            let (status, code) = match rejection.code {
                RejectionCode::InvalidInput => (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
                RejectionCode::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
                RejectionCode::Conflict => (StatusCode::CONFLICT, "CONFLICT"),
                RejectionCode::Forbidden => (StatusCode::FORBIDDEN, "FORBIDDEN"),
                RejectionCode::IllegalTransition => (StatusCode::CONFLICT, "ILLEGAL_TRANSITION"),
            };
            Err(ApiError { status, code, message: rejection.message, field_errors: rejection.field_errors })
        }
    }
}

#[derive(Debug, Deserialize)]
struct ReadParams {
    #[serde(default)]
    consistency: Consistency,
}

fn server_state(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

async fn health(State(node): State<Node>) -> Response {
    let metrics = node.raft().metrics().borrow().clone();
    let contact = node.leader_contact();
    let validated = node.spine().validated();
    let healthy =
        validated && matches!(contact, LeaderContact::Usable(_)) && metrics.state != ServerState::Shutdown;
    let body = json!({
        "status": if !validated { "boot_failed" } else if healthy { "ok" } else { "degraded" },
        "node_id": node.id(),
        "spine": node.spine().to_json(),
        "raft": {
            "state": server_state(metrics.state),
            "leader": metrics.current_leader,
            "leader_contact": contact.to_string(),
            "millis_since_quorum_ack": metrics.millis_since_quorum_ack,
            "term": metrics.current_term,
            "last_applied": metrics.last_applied.map(|l| l.index),
        },
    });
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn cluster_status(State(node): State<Node>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authenticate(&node, &headers).await?;
    let metrics = node.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let nodes: Vec<Value> = membership
        .nodes()
        .map(|(id, n)| json!({"node_id": id, "grpc_addr": n.addr, "voter": voters.contains(id)}))
        .collect();
    Ok(Json(json!({
        "node_id": node.id(),
        "state": server_state(metrics.state),
        "leader": metrics.current_leader,
        "term": metrics.current_term,
        "last_log_index": metrics.last_log_index,
        "last_applied": metrics.last_applied.map(|l| l.index),
        "snapshot_index": metrics.snapshot.map(|l| l.index),
        "purged_index": metrics.purged.map(|l| l.index),
        "nodes": nodes,
    })))
}

fn require_operator_admin(actor: &ActorRef) -> Result<(), &'static str> {
    if actor.tenant_id.is_none() && actor.role == ActorRole::Admin {
        Ok(())
    } else {
        Err("only a cluster-operator admin key may do this")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNode {
    node_id: NodeId,
    grpc_addr: String,
}

async fn add_node(
    State(node): State<Node>,
    headers: HeaderMap,
    body: Result<Json<AddNode>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let actor = authenticate(&node, &headers).await?;
    if let Err(reason) = require_operator_admin(&actor) {
        return Err(deny(&node, &actor, "CLUSTER_ADD_NODE", "cluster", reason).await);
    }
    let Json(req) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", e.body_text()))?;
    if req.node_id == 0 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", "node_id: must be at least 1"));
    }
    let raft = node.raft();
    raft.add_learner(req.node_id, BasicNode::new(&req.grpc_addr), true).await.map_err(membership_error)?;
    let metrics = raft.metrics().borrow().clone();
    let mut voters: std::collections::BTreeSet<NodeId> =
        metrics.membership_config.membership().voter_ids().collect();
    voters.insert(req.node_id);
    let response = raft.change_membership(voters.clone(), false).await.map_err(membership_error)?;
    Ok(Json(json!({"log_index": response.log_id.index, "voters": voters})))
}

async fn remove_node(
    State(node): State<Node>,
    headers: HeaderMap,
    Path(node_id): Path<NodeId>,
) -> Result<Json<Value>, ApiError> {
    let actor = authenticate(&node, &headers).await?;
    if let Err(reason) = require_operator_admin(&actor) {
        return Err(deny(&node, &actor, "CLUSTER_REMOVE_NODE", &node_id.to_string(), reason).await);
    }
    let raft = node.raft();
    let metrics = raft.metrics().borrow().clone();
    let mut voters: std::collections::BTreeSet<NodeId> =
        metrics.membership_config.membership().voter_ids().collect();
    if !voters.remove(&node_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("node {node_id} is not a voter"),
        ));
    }
    if voters.is_empty() {
        return Err(ApiError::new(StatusCode::CONFLICT, "CONFLICT", "cannot remove the last voter"));
    }
    let response = raft.change_membership(voters.clone(), false).await.map_err(membership_error)?;
    Ok(Json(json!({"log_index": response.log_id.index, "voters": voters})))
}

fn membership_error(
    e: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, BasicNode>>,
) -> ApiError {
    match &e {
        openraft::error::RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f)) => {
            let leader = f.leader_node.as_ref().map(|n| n.addr.clone()).unwrap_or_default();
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NOT_LEADER",
                format!("membership changes go through the leader (node {:?} at {leader})", f.leader_id),
            )
        }
        _ => ApiError::new(StatusCode::CONFLICT, "MEMBERSHIP", e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    tenant_id: String,
    name: String,
}

async fn create_tenant(
    State(node): State<Node>,
    headers: HeaderMap,
    body: Result<Json<CreateTenant>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let actor = authenticate(&node, &headers).await?;
    let Json(req) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", e.body_text()))?;
    commit(&node, &headers, actor, Command::CreateTenant { tenant_id: req.tenant_id, name: req.name }).await
}

async fn list_tenants(
    State(node): State<Node>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let actor = authenticate(&node, &headers).await?;
    read_barrier(&node, params.consistency).await?;
    let tenants: Vec<Value> = node.state().read(|s| {
        s.0.tenants()
            .filter(|t| actor.tenant_id.as_deref().is_none_or(|own| own == t.tenant_id))
            .map(
                |t| json!({"tenant_id": t.tenant_id, "name": t.name, "snapshot_version": t.snapshot_version}),
            )
            .collect()
    });
    Ok(Json(json!({"tenants": tenants})))
}

#[derive(Debug, Deserialize)]
struct AuditParams {
    #[serde(default)]
    since: u64,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    consistency: Consistency,
}

fn default_limit() -> usize {
    100
}

async fn list_audit(
    State(node): State<Node>,
    headers: HeaderMap,
    Query(params): Query<AuditParams>,
) -> Result<Json<Value>, ApiError> {
    let actor = authenticate(&node, &headers).await?;
    if !matches!(actor.role, ActorRole::Admin | ActorRole::Auditor) {
        return Err(deny(&node, &actor, "AUDIT_READ", "audit", "admin or auditor role required").await);
    }
    read_barrier(&node, params.consistency).await?;
    let limit = params.limit.clamp(1, 1000);
    let entries: Vec<Value> = node.state().read(|s| {
        s.0.audit()
            .query(actor.tenant_id.as_deref(), params.since, limit)
            .into_iter()
            .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
            .collect()
    });
    Ok(Json(json!({"entries": entries})))
}
