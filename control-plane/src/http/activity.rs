//! Records edge agents delivered, queryable per tenant (Activity and Logs
//! domains, seed §3.1 and §5).
//!
//! - `GET /api/v1/tenants/{tenant}/records?kind=&run_id=&from_ms=&to_ms=&after_seq=&limit=`
//!   (every role of the tenant): records in arrival order, paginated by
//!   `after_seq` (`next_after_seq` in the answer while more match).
//! - `GET /api/v1/tenants/{tenant}/activity/runs/{run_id}`: one run's
//!   records (its state changes, LLM run records, control events and
//!   incidents).
//! - `GET /api/v1/tenants/{tenant}/activity/{live|completed}?limit=`: runs
//!   by their latest `RUN_STATE` record, most recently changed first.
//! - `GET /api/v1/tenants/{tenant}/activity/signals`: control events
//!   (near-threshold signals and enforcement), paginated like records.
//! - `GET /api/v1/tenants/{tenant}/activity/metrics`: runs by status,
//!   tokens, spend, incidents by kind.
//!
//! Live and completed runs and metrics are computed from the tenant's
//! records at query time (a scan): fine for thousands of runs, to be
//! replaced by maintained aggregates when tenants hold millions.

use aos_cp_state::RecordFilter;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, Intent, READERS, authorize_read};
use crate::node::Node;
use crate::write::Consistency;

/// Default and largest page.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;

pub(super) fn routes() -> Router<Node> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/records", get(list_records))
        .route("/api/v1/tenants/{tenant}/activity/runs/{run_id}", get(run_records))
        .route("/api/v1/tenants/{tenant}/activity/live", get(live_runs))
        .route("/api/v1/tenants/{tenant}/activity/completed", get(completed_runs))
        .route("/api/v1/tenants/{tenant}/activity/signals", get(signals))
        .route("/api/v1/tenants/{tenant}/activity/metrics", get(metrics))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordQuery {
    kind: Option<String>,
    run_id: Option<String>,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    #[serde(default)]
    after_seq: u64,
    limit: Option<usize>,
    #[serde(default)]
    consistency: Consistency,
}

async fn list_records(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    query: Result<Query<RecordQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| bad_query(&e))?;
    reader(&node, &headers, &tenant, "LIST_RECORDS", format!("tenants/{tenant}/records"), q.consistency)
        .await?;
    let limit = checked_limit(q.limit)?;
    let filter = RecordFilter {
        kind: q.kind.as_deref(),
        run_id: q.run_id.as_deref(),
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        after_seq: q.after_seq,
        policy_id: None,
    };
    Ok(Json(page(&node, &tenant, &filter, limit)))
}

async fn run_records(
    State(node): State<Node>,
    Path((tenant, run_id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(params): Query<super::ReadParams>,
) -> Result<Json<Value>, ApiError> {
    reader(
        &node,
        &headers,
        &tenant,
        "GET_RUN_RECORDS",
        format!("tenants/{tenant}/activity/runs/{run_id}"),
        params.consistency,
    )
    .await?;
    let filter = RecordFilter { run_id: Some(&run_id), ..RecordFilter::default() };
    let answer = page(&node, &tenant, &filter, MAX_LIMIT);
    if answer["records"].as_array().is_none_or(Vec::is_empty) {
        return Err(ApiError::not_found(format!("no records of run `{run_id}` in tenant `{tenant}`")));
    }
    Ok(Json(answer))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    limit: Option<usize>,
    #[serde(default)]
    consistency: Consistency,
}

type RunsParams = Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>;

async fn live_runs(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    query: RunsParams,
) -> Result<Json<Value>, ApiError> {
    runs(&node, &tenant, &headers, query, true).await
}

async fn completed_runs(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    query: RunsParams,
) -> Result<Json<Value>, ApiError> {
    runs(&node, &tenant, &headers, query, false).await
}

async fn runs(
    node: &Node,
    tenant: &str,
    headers: &HeaderMap,
    query: RunsParams,
    live: bool,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| bad_query(&e))?;
    let which = if live { "live" } else { "completed" };
    reader(node, headers, tenant, "LIST_RUNS", format!("tenants/{tenant}/activity/{which}"), q.consistency)
        .await?;
    let limit = checked_limit(q.limit)?;
    Ok(Json(node.state().read(|s| json!({ "runs": s.0.activity().runs(tenant, live, limit) }))))
}

async fn signals(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    query: Result<Query<RecordQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(mut q) = query.map_err(|e| bad_query(&e))?;
    if q.kind.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            "kind: signals are CONTROL_EVENT records; use /records for other kinds",
        ));
    }
    q.kind = Some("CONTROL_EVENT".to_owned());
    list_records(State(node), Path(tenant), headers, Ok(Query(q))).await
}

async fn metrics(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<super::ReadParams>,
) -> Result<Json<Value>, ApiError> {
    reader(
        &node,
        &headers,
        &tenant,
        "GET_ACTIVITY_METRICS",
        format!("tenants/{tenant}/activity/metrics"),
        params.consistency,
    )
    .await?;
    Ok(Json(node.state().read(|s| s.0.activity().metrics(&tenant))))
}

/// Authorises a read of `tenant`'s activity by any of its roles (denials
/// audited) after the read barrier.
pub(super) async fn reader(
    node: &Node,
    headers: &HeaderMap,
    tenant: &str,
    action: &'static str,
    target: String,
    consistency: Consistency,
) -> Result<(), ApiError> {
    let intent = Intent { tenant, roles: READERS, action, target };
    authorize_read(node, headers, &intent, consistency).await.map(|_| ())
}

pub(super) fn bad_query(e: &axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", format!("query: {}", e.body_text()))
}

pub(super) fn checked_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            format!("limit: must be 1..={MAX_LIMIT}, got {limit}"),
        ));
    }
    Ok(limit)
}

fn page(node: &Node, tenant: &str, filter: &RecordFilter<'_>, limit: usize) -> Value {
    node.state().read(|s| {
        let (records, more) = s.0.activity().records(tenant, filter, limit);
        let next = if more { records.last().map(|r| r.seq) } else { None };
        json!({ "records": records, "next_after_seq": next })
    })
}
