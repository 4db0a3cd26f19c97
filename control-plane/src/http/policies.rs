//! `/api/v1/tenants/{tenant}/policies`: apply a policy or a policy document
//! (admin, policy_author; `?dry_run=true` shows the diff without
//! proposing), list, get (latest with status and versions), get one
//! version, diff two versions, and the lifecycle moves `activate`,
//! `suspend`, `retire`.
//!
//! A body is a policy document (`api_version` + `policies`) in YAML or
//! JSON, or a single policy as a JSON object. Either is parsed and
//! validated by `aos_core::document::parse_document` before anything is
//! proposed; each policy of a document is one `APPLY_POLICY` command.

use aos_core::FieldError;
use aos_core::document::{API_VERSION, DocumentError, DocumentFormat, parse_document};
use aos_core::policy::{ActorRole, Policy, PolicyStatus};
use aos_cp_state::{ActorRef, Command, PolicyRecord};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, Intent, READERS, ReadParams, authorize, authorize_read, commit, commit_with_id, request_id,
};
use crate::node::Node;
use crate::write::{Consistency, read_barrier};

/// Who may apply policies and move them through the lifecycle.
const WRITERS: &[ActorRole] = &[ActorRole::Admin, ActorRole::PolicyAuthor];

pub(super) fn routes() -> Router<Node> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/policies", post(apply).get(list))
        .route("/api/v1/tenants/{tenant}/policies/{policy_id}", get(get_policy))
        .route("/api/v1/tenants/{tenant}/policies/{policy_id}/versions/{version}", get(get_version))
        .route("/api/v1/tenants/{tenant}/policies/{policy_id}/diff", get(diff))
        .route("/api/v1/tenants/{tenant}/policies/{policy_id}/{transition}", post(transition))
}

fn target(tenant: &str, policy_id: Option<&str>) -> String {
    match policy_id {
        Some(id) => format!("tenants/{tenant}/policies/{id}"),
        None => format!("tenants/{tenant}/policies"),
    }
}

// ---------------------------------------------------------------- apply

#[derive(Debug, Deserialize)]
struct ApplyParams {
    #[serde(default)]
    dry_run: bool,
}

async fn apply(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ApplyParams>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let intent =
        Intent { tenant: &tenant, roles: WRITERS, action: "APPLY_POLICY", target: target(&tenant, None) };
    let actor = authorize(&node, &headers, &intent).await?;
    let policies = parse_body(&headers, &body)?;
    if params.dry_run {
        read_barrier(&node, Consistency::Linearizable).await?;
        super::require_tenant(&node, &tenant)?;
        let plans: Vec<Value> = node
            .state()
            .read(|s| policies.iter().map(|p| dry_run_plan(s.0.policy(&tenant, &p.id), p)).collect());
        return Ok(Json(json!({ "dry_run": true, "policies": plans })));
    }
    apply_all(&node, &headers, &tenant, actor, policies).await
}

/// Proposes each policy in document order; stops at the first refusal.
async fn apply_all(
    node: &Node,
    headers: &HeaderMap,
    tenant: &str,
    actor: ActorRef,
    policies: Vec<Policy>,
) -> Result<Json<Value>, ApiError> {
    let idempotency_key =
        headers.get("idempotency-key").and_then(|v| v.to_str().ok()).filter(|k| !k.is_empty());
    let mut applied = Vec::with_capacity(policies.len());
    for policy in policies {
        let policy_id = policy.id.clone();
        let request_id = match idempotency_key {
            Some(key) => format!("{}:{key}/{policy_id}", actor.actor_id),
            None => request_id(headers, &actor),
        };
        let command = Command::ApplyPolicy { tenant_id: tenant.to_owned(), policy };
        match commit_with_id(node, request_id, actor.clone(), command).await {
            Ok(answer) => applied.push(answer),
            Err(mut e) => {
                e.message = format!("policy `{policy_id}`: {}", e.message);
                if !applied.is_empty() {
                    e.message.push_str(&format!(
                        " ({} earlier policies of the document were applied)",
                        applied.len()
                    ));
                }
                return Err(e);
            }
        }
    }
    Ok(Json(json!({ "applied": applied })))
}

/// What applying `candidate` would do to `current`.
fn dry_run_plan(current: Option<&PolicyRecord>, candidate: &Policy) -> Value {
    let Some(record) = current else {
        return json!({
            "policy_id": candidate.id,
            "action": "create",
            "version": 1,
            "status": candidate.status,
            "changes": [],
        });
    };
    let latest = record.latest();
    if latest.status == PolicyStatus::Retired {
        return json!({
            "policy_id": candidate.id,
            "action": "conflict",
            "message": format!("policy `{}` is RETIRED; RETIRED is terminal", candidate.id),
        });
    }
    // The lifecycle carries over from the latest version, as on apply.
    let mut next = candidate.clone();
    next.status = latest.status;
    next.status_reason.clone_from(&latest.status_reason);
    next.version = latest.version;
    let changes = json_diff(&to_json(latest), &to_json(&next));
    let unchanged = changes.is_empty();
    json!({
        "policy_id": candidate.id,
        "action": if unchanged { "unchanged" } else { "update" },
        "current_version": latest.version,
        "version": if unchanged { latest.version } else { latest.version.saturating_add(1) },
        "status": latest.status,
        "changes": changes,
    })
}

/// The policies of a request body, parsed and validated.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Policy>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::invalid("the body is not UTF-8", vec![FieldError::new("", "not UTF-8")]))?;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    let format = match media.as_deref() {
        None | Some("") => DocumentFormat::detect(text),
        Some("application/json") => DocumentFormat::Json,
        Some("application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml") => DocumentFormat::Yaml,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                format!("content type `{other}` is not supported; use application/yaml or application/json"),
            ));
        }
    };
    if format == DocumentFormat::Json && !is_document(text) {
        return parse_single(text);
    }
    parse_document(text, format).map(|d| d.policies).map_err(|e| document_error(&e))
}

/// Whether a JSON body is a document rather than a single policy.
fn is_document(text: &str) -> bool {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map.contains_key("api_version") || map.contains_key("policies"),
        // Malformed: let the document parser report it with its location.
        _ => true,
    }
}

/// A single JSON policy, validated as the only policy of a document; the
/// error paths are reported relative to the policy.
fn parse_single(text: &str) -> Result<Vec<Policy>, ApiError> {
    let prefix = format!("{{\"api_version\":\"{API_VERSION}\",\"policies\":[");
    let wrapped = format!("{prefix}{text}]}}");
    parse_document(&wrapped, DocumentFormat::Json).map(|d| d.policies).map_err(|e| {
        let errors = e
            .field_errors()
            .into_iter()
            .map(|mut f| {
                f.path = relative_path(&f.path);
                f.location = f.location.map(|(line, col)| {
                    if line == 1 { (line, col.saturating_sub(prefix.len())) } else { (line, col) }
                });
                f
            })
            .collect();
        ApiError::invalid("the policy is invalid", errors)
    })
}

fn relative_path(path: &str) -> String {
    let rest = path.strip_prefix("policies[0]").unwrap_or(path);
    rest.strip_prefix('.').unwrap_or(rest).to_owned()
}

fn document_error(e: &DocumentError) -> ApiError {
    let message = match e {
        DocumentError::Parse(_) => "the policy document cannot be parsed",
        DocumentError::Invalid(_) => "the policy document is invalid",
    };
    ApiError::invalid(message, e.field_errors())
}

// ---------------------------------------------------------------- reads

async fn list(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let intent =
        Intent { tenant: &tenant, roles: READERS, action: "LIST_POLICIES", target: target(&tenant, None) };
    authorize_read(&node, &headers, &intent, params.consistency).await?;
    let policies: Vec<Value> = node.state().read(|s| {
        s.0.policies(&tenant)
            .map(|p| {
                json!({
                    "policy_id": p.policy_id,
                    "name": p.latest().name,
                    "status": p.status(),
                    "latest_version": p.latest_version(),
                    "threshold_hash": p.current.threshold_hash,
                })
            })
            .collect()
    });
    Ok(Json(json!({ "policies": policies })))
}

async fn get_policy(
    State(node): State<Node>,
    Path((tenant, policy_id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: READERS,
        action: "GET_POLICY",
        target: target(&tenant, Some(&policy_id)),
    };
    authorize_read(&node, &headers, &intent, params.consistency).await?;
    node.state()
        .read(|s| {
            s.0.policy(&tenant, &policy_id).map(|p| {
                let versions: Vec<Value> = p
                    .versions()
                    .map(|v| {
                        json!({
                            "version": v.policy.version,
                            "status": v.policy.status,
                            "threshold_hash": v.threshold_hash,
                            "created_at_ms": v.created_at_ms,
                            "created_by": v.created_by,
                            "audit_seq": v.audit_seq,
                        })
                    })
                    .collect();
                json!({
                    "policy_id": p.policy_id,
                    "status": p.status(),
                    "status_reason": p.latest().status_reason,
                    "latest_version": p.latest_version(),
                    "threshold_hash": p.current.threshold_hash,
                    "policy": to_json(p.latest()),
                    "versions": versions,
                })
            })
        })
        .map(Json)
        .ok_or_else(|| unknown_policy(&tenant, &policy_id))
}

async fn get_version(
    State(node): State<Node>,
    Path((tenant, policy_id, version)): Path<(String, String, u64)>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: READERS,
        action: "GET_POLICY_VERSION",
        target: target(&tenant, Some(&policy_id)),
    };
    authorize_read(&node, &headers, &intent, params.consistency).await?;
    let found = node.state().read(|s| {
        let record = s.0.policy(&tenant, &policy_id)?;
        let v = record.version(version)?;
        Some(json!({
            "policy_id": record.policy_id,
            "version": v.policy.version,
            "status": v.policy.status,
            "threshold_hash": v.threshold_hash,
            "created_at_ms": v.created_at_ms,
            "created_by": v.created_by,
            "audit_seq": v.audit_seq,
            "policy": to_json(&v.policy),
        }))
    });
    found.map(Json).ok_or_else(|| {
        ApiError::not_found(format!("policy `{policy_id}` has no version {version} in tenant `{tenant}`"))
    })
}

#[derive(Debug, Deserialize)]
struct DiffParams {
    from: u64,
    to: u64,
    #[serde(default)]
    consistency: Consistency,
}

async fn diff(
    State(node): State<Node>,
    Path((tenant, policy_id)): Path<(String, String)>,
    headers: HeaderMap,
    params: Result<Query<DiffParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: READERS,
        action: "DIFF_POLICY",
        target: target(&tenant, Some(&policy_id)),
    };
    authorize(&node, &headers, &intent).await?;
    let Query(params) = params.map_err(|e| {
        ApiError::invalid(
            e.body_text(),
            vec![FieldError::new("from, to", "two version numbers are required")],
        )
    })?;
    read_barrier(&node, params.consistency).await?;
    super::require_tenant(&node, &tenant)?;
    let versions = node.state().read(|s| {
        let record = s.0.policy(&tenant, &policy_id)?;
        let from = record.version(params.from).map(|v| to_json(&v.policy));
        let to = record.version(params.to).map(|v| to_json(&v.policy));
        Some((from, to))
    });
    let Some((from, to)) = versions else {
        return Err(unknown_policy(&tenant, &policy_id));
    };
    let missing = |v: u64| ApiError::not_found(format!("policy `{policy_id}` has no version {v}"));
    let from = from.ok_or_else(|| missing(params.from))?;
    let to = to.ok_or_else(|| missing(params.to))?;
    Ok(Json(json!({
        "policy_id": policy_id,
        "from": params.from,
        "to": params.to,
        "changes": json_diff(&from, &to),
    })))
}

fn unknown_policy(tenant: &str, policy_id: &str) -> ApiError {
    ApiError::not_found(format!("unknown policy `{policy_id}` in tenant `{tenant}`"))
}

// ---------------------------------------------------------------- lifecycle

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Transition {
    reason: Option<String>,
}

async fn transition(
    State(node): State<Node>,
    Path((tenant, policy_id, transition)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let to = match transition.as_str() {
        "activate" => PolicyStatus::Active,
        "suspend" => PolicyStatus::Suspended,
        "retire" => PolicyStatus::Retired,
        other => {
            return Err(ApiError::not_found(format!(
                "unknown policy action `{other}` (activate, suspend or retire)"
            )));
        }
    };
    let intent = Intent {
        tenant: &tenant,
        roles: WRITERS,
        action: "TRANSITION_POLICY",
        target: target(&tenant, Some(&policy_id)),
    };
    let actor = authorize(&node, &headers, &intent).await?;
    let req: Transition = if body.iter().all(u8::is_ascii_whitespace) {
        Transition::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            // The body's only field is `reason`; other errors are at the root.
            let path = if e.to_string().starts_with("invalid type") { "reason" } else { "" };
            ApiError::invalid(format!("malformed body: {e}"), vec![FieldError::new(path, e.to_string())])
        })?
    };
    let command = Command::TransitionPolicy { tenant_id: tenant, policy_id, to, reason: req.reason };
    commit(&node, &headers, actor, command).await
}

// ---------------------------------------------------------------- diff

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Field-level differences between two JSON values: one entry
/// `{"path", "before", "after"}` per changed leaf, `path` a JSON pointer
/// (RFC 6901). Arrays of different lengths are reported whole.
pub fn json_diff(before: &Value, after: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    diff_into(before, after, &mut String::new(), &mut out);
    out
}

fn diff_into(before: &Value, after: &Value, path: &mut String, out: &mut Vec<Value>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let len = path.len();
                path.push('/');
                path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                diff_into(a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null), path, out);
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                diff_into(x, y, path, out);
                path.truncate(len);
            }
        }
        _ if before != after => out.push(json!({ "path": path.clone(), "before": before, "after": after })),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_changed_leaves_as_pointers() {
        let a = json!({"limits": [{"max": 1, "window": "PER_RUN"}], "name": "x", "a/b": 1});
        let b = json!({"limits": [{"max": 2, "window": "PER_RUN"}], "name": "x", "a/b": 2, "new": true});
        let changes = json_diff(&a, &b);
        let paths: Vec<&str> = changes.iter().filter_map(|c| c["path"].as_str()).collect();
        assert_eq!(paths, ["/a~1b", "/limits/0/max", "/new"]);
        assert_eq!(changes[1]["before"], 1);
        assert_eq!(changes[1]["after"], 2);
        assert!(json_diff(&a, &a).is_empty());
    }

    #[test]
    fn single_policy_errors_are_relative_to_the_policy() {
        assert_eq!(relative_path("policies[0].limits[0].max"), "limits[0].max");
        assert_eq!(relative_path("policies[0]"), "");
        let err = parse_single(r#"{"id": "p", "limits": 3}"#).err().map(|e| e.field_errors);
        let paths: Vec<String> = err.unwrap_or_default().into_iter().map(|f| f.path).collect();
        assert!(paths.iter().all(|p| !p.starts_with("policies")), "{paths:?}");
        assert!(!paths.is_empty());
    }
}
