//! The three logs of seed §5 (issue 8):
//!
//! - `GET /api/v1/tenants/{tenant}/logs/llm-runs`: LLM run records
//!   (write-once: a rewrite under a known record id is refused and audited
//!   at ingest).
//! - `GET /api/v1/tenants/{tenant}/logs/system`: the edge agents' system
//!   records.
//! - `GET /api/v1/tenants/{tenant}/logs/audit`: the tenant's audit ledger
//!   entries, with their chain hashes (`admin`, `auditor`).
//!
//! The audit log is for `admin` and `auditor` (as `GET /api/v1/audit`);
//! the record logs for every role. Each takes `from_ms`, `to_ms` (Unix ms, `[from, to)`), `run_id`,
//! `policy_id`, `after` (the cursor: a record's or entry's `seq`) and
//! `limit` (1..=1000, default 100), and answers
//! `{"log", "entries", "next_after"}` — `next_after` is set while more
//! match. For the audit log `run_id` and `policy_id` match the entry's
//! target.
//!
//! Retention: `GET /api/v1/tenants/{tenant}/retention` (every role) and
//! `PUT` (`admin`) `{"max_age_seconds": N | null}`: records are pruned by
//! the leader once they are older than that (audited `RETENTION_SET`,
//! `RETENTION_APPLIED`); the audit ledger is never pruned.

use aos_core::policy::ActorRole;
use aos_cp_state::{AuditEntry, Command, RecordFilter};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::activity::{bad_query, checked_limit, reader};
use super::{ApiError, Intent, authorize, bad_body, commit};
use crate::node::Node;
use crate::write::Consistency;

pub(super) fn routes() -> Router<Node> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/logs/{log}", get(list))
        .route("/api/v1/tenants/{tenant}/retention", get(retention).put(set_retention))
}

async fn retention(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<super::ReadParams>,
) -> Result<Json<Value>, ApiError> {
    reader(
        &node,
        &headers,
        &tenant,
        "GET_RETENTION",
        format!("tenants/{tenant}/retention"),
        params.consistency,
    )
    .await?;
    Ok(Json(node.state().read(|s| json!(s.0.activity().retention(&tenant)))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionBody {
    max_age_seconds: Option<u64>,
}

async fn set_retention(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Json<RetentionBody>, axum::extract::rejection::JsonRejection>,
) -> Result<axum::response::Response, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: &[ActorRole::Admin],
        action: "SET_RETENTION",
        target: format!("tenants/{tenant}/retention"),
    };
    let actor = authorize(&node, &headers, &intent).await?;
    let Json(req) = body.map_err(|e| bad_body(&e))?;
    let command = Command::SetRetention { tenant_id: tenant, max_age_seconds: req.max_age_seconds };
    commit(&node, &headers, actor, command).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    run_id: Option<String>,
    policy_id: Option<String>,
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
    #[serde(default)]
    consistency: Consistency,
}

async fn list(
    State(node): State<Node>,
    Path((tenant, log)): Path<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let kind = match log.as_str() {
        "llm-runs" => Some("LLM_RUN_RECORD"),
        "system" => Some("SYSTEM_RECORD"),
        "audit" => None,
        other => {
            return Err(ApiError::not_found(format!("unknown log `{other}` (llm-runs, system, audit)")));
        }
    };
    let Query(q) = query.map_err(|e| bad_query(&e))?;
    // The ledger is for admins and auditors, as `GET /api/v1/audit` is.
    let roles: &'static [ActorRole] =
        if kind.is_none() { &[ActorRole::Admin, ActorRole::Auditor] } else { super::READERS };
    let intent = Intent {
        tenant: &tenant,
        roles,
        action: "READ_LOGS",
        target: format!("tenants/{tenant}/logs/{log}"),
    };
    super::authorize_read(&node, &headers, &intent, q.consistency).await?;
    let limit = checked_limit(q.limit)?;
    if let (Some(from), Some(to)) = (q.from_ms, q.to_ms)
        && from >= to
    {
        return Err(ApiError::invalid(
            format!("query: from_ms ({from}) must be before to_ms ({to})"),
            Vec::new(),
        ));
    }
    let answer = node.state().read(|s| match kind {
        Some(kind) => {
            let filter = RecordFilter {
                kind: Some(kind),
                run_id: q.run_id.as_deref(),
                from_ms: q.from_ms,
                to_ms: q.to_ms,
                after_seq: q.after,
                policy_id: q.policy_id.as_deref(),
            };
            let (records, more) = s.0.activity().records(&tenant, &filter, limit);
            let next = if more { records.last().map(|r| r.seq) } else { None };
            json!({ "log": log, "entries": records, "next_after": next })
        }
        None => {
            let policy_target = q.policy_id.as_deref().map(|p| format!("/policies/{p}"));
            let wanted = |e: &&AuditEntry| {
                e.seq > q.after
                    && e.tenant_id.as_deref() == Some(tenant.as_str())
                    && q.from_ms.is_none_or(|t| e.at_ms >= t)
                    && q.to_ms.is_none_or(|t| e.at_ms < t)
                    && q.run_id.as_deref().is_none_or(|r| e.target.split('/').any(|segment| segment == r))
                    && policy_target
                        .as_deref()
                        .is_none_or(|p| e.target.ends_with(p) || e.target.contains(&format!("{p}/")))
            };
            let entries = s.0.audit().entries();
            // Entries are in seq order, seq = index + 1.
            let start = usize::try_from(q.after).unwrap_or(usize::MAX).min(entries.len());
            let mut matching = entries[start..].iter().filter(wanted);
            let page: Vec<&AuditEntry> = matching.by_ref().take(limit).collect();
            let more = matching.next().is_some();
            let next = if more { page.last().map(|e| e.seq) } else { None };
            json!({ "log": log, "entries": page, "next_after": next })
        }
    });
    Ok(Json(answer))
}
