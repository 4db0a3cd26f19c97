//! Records edge agents delivered, queryable per tenant (Activity and Logs
//! domains, seed §3.1 and §5).
//!
//! - `GET /api/v1/tenants/{tenant}/records?kind=&run_id=&from_ms=&to_ms=&after_seq=&limit=`
//!   (every role of the tenant): records in arrival order, paginated by
//!   `after_seq` (`next_after_seq` in the answer while more match).
//! - `GET /api/v1/tenants/{tenant}/activity/runs/{run_id}`: one run's
//!   records (its LLM run records, control events and incidents).

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
    let Query(q) = query.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", format!("query: {}", e.body_text()))
    })?;
    let intent = Intent {
        tenant: &tenant,
        roles: READERS,
        action: "LIST_RECORDS",
        target: format!("tenants/{tenant}/records"),
    };
    authorize_read(&node, &headers, &intent, q.consistency).await?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            format!("limit: must be 1..={MAX_LIMIT}, got {limit}"),
        ));
    }
    let filter = RecordFilter {
        kind: q.kind.as_deref(),
        run_id: q.run_id.as_deref(),
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        after_seq: q.after_seq,
    };
    Ok(Json(page(&node, &tenant, &filter, limit)))
}

async fn run_records(
    State(node): State<Node>,
    Path((tenant, run_id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(params): Query<super::ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: READERS,
        action: "GET_RUN_RECORDS",
        target: format!("tenants/{tenant}/activity/runs/{run_id}"),
    };
    authorize_read(&node, &headers, &intent, params.consistency).await?;
    let filter = RecordFilter { run_id: Some(&run_id), ..RecordFilter::default() };
    let answer = page(&node, &tenant, &filter, MAX_LIMIT);
    if answer["records"].as_array().is_none_or(Vec::is_empty) {
        return Err(ApiError::not_found(format!("no records of run `{run_id}` in tenant `{tenant}`")));
    }
    Ok(Json(answer))
}

fn page(node: &Node, tenant: &str, filter: &RecordFilter<'_>, limit: usize) -> Value {
    node.state().read(|s| {
        let (records, more) = s.0.activity().records(tenant, filter, limit);
        let next = if more { records.last().map(|r| r.seq) } else { None };
        json!({ "records": records, "next_after_seq": next })
    })
}
