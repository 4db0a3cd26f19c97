//! Alerts (issue 8): what the fatigue controller raised from the edge
//! agents' near-threshold and breach signals, its counts, and the tenant's
//! delivery channels.
//!
//! - `GET /api/v1/tenants/{tenant}/alerts?limit=` (every role of the
//!   tenant): newest first, each with its per-channel delivery state.
//! - `GET /api/v1/tenants/{tenant}/alerts/stats`: received, raised,
//!   de-duplicated, rate-limited, delivered, dead-lettered.
//! - `GET /api/v1/tenants/{tenant}/alert-channels` (targets whole for
//!   admins, host and hash for other roles); `POST` (`admin`):
//!   `{channel: WEBHOOK|SLACK|EMAIL, target}`. Setting a webhook answers
//!   its signing secret, derived and shown only then. EMAIL (comma-separated
//!   addresses) is refused by a node without an SMTP relay (`--smtp-url`).

use aos_core::policy::ActorRole;
use aos_cp_state::{Channel, Command};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::activity::{bad_query, checked_limit, reader};
use super::{ApiError, Intent, ReadParams, authorize, bad_body, commit_with_id, request_id};
use crate::node::Node;
use crate::write::Consistency;

/// Who may configure channels.
const CONFIGURERS: &[ActorRole] = &[ActorRole::Admin];

pub(super) fn routes() -> Router<Node> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/alerts", get(list))
        .route("/api/v1/tenants/{tenant}/alerts/stats", get(stats))
        .route("/api/v1/tenants/{tenant}/alert-channels", get(channels).post(set_channel))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
    #[serde(default)]
    consistency: Consistency,
}

async fn list(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| bad_query(&e))?;
    reader(&node, &headers, &tenant, "LIST_ALERTS", format!("tenants/{tenant}/alerts"), q.consistency)
        .await?;
    let limit = checked_limit(q.limit)?;
    let alerts = node.state().read(|s| {
        s.0.alerts()
            .list(&tenant, limit)
            .into_iter()
            .map(|a| {
                let mut v = json!(a);
                v["message"] = json!(a.message());
                v
            })
            .collect::<Vec<_>>()
    });
    Ok(Json(json!({ "alerts": alerts })))
}

async fn stats(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let target = format!("tenants/{tenant}/alerts/stats");
    reader(&node, &headers, &tenant, "ALERT_STATS", target, params.consistency).await?;
    Ok(Json(node.state().read(|s| json!(s.0.alerts().stats(&tenant)))))
}

async fn channels(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    let target = format!("tenants/{tenant}/alert-channels");
    let intent = Intent { tenant: &tenant, roles: super::READERS, action: "LIST_ALERT_CHANNELS", target };
    let actor = super::authorize_read(&node, &headers, &intent, params.consistency).await?;
    // Webhook URLs can be credentials: only admins see them whole.
    let whole = actor.role == ActorRole::Admin;
    let listed: Vec<Value> = node.state().read(|s| {
        s.0.alerts()
            .channels(&tenant)
            .into_iter()
            .map(|c| if whole { json!(c) } else { json!(c.redacted()) })
            .collect()
    });
    Ok(Json(json!({ "channels": listed })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetChannel {
    channel: Channel,
    target: String,
}

async fn set_channel(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Json<SetChannel>, JsonRejection>,
) -> Result<Response, ApiError> {
    let intent = Intent {
        tenant: &tenant,
        roles: CONFIGURERS,
        action: "SET_ALERT_CHANNEL",
        target: format!("tenants/{tenant}/alert-channels"),
    };
    let actor = authorize(&node, &headers, &intent).await?;
    let Json(req) = body.map_err(|e| bad_body(&e))?;
    let channel = req.channel;
    if channel == Channel::Email && node.mailer().is_none() {
        return Err(ApiError::invalid(
            "this control plane has no SMTP relay configured (--smtp-url), so EMAIL alerts cannot be delivered",
            vec![aos_core::FieldError::new("channel", "EMAIL needs an SMTP relay on the control plane")],
        ));
    }
    let command = Command::SetAlertChannel { tenant_id: tenant.clone(), channel, target: req.target };
    let mut answer = commit_with_id(&node, request_id(&headers, &actor), actor, command).await?;
    if channel == Channel::Webhook {
        let version = answer["result"]["version"].as_u64().unwrap_or(0);
        match crate::alerting::webhook_secret(&node, &tenant, version) {
            Some(secret) => answer["signing_secret"] = json!(secret),
            None => {
                answer["signing_secret_error"] =
                    json!("this cluster has no CA key; webhooks cannot be signed")
            }
        }
    }
    Ok((StatusCode::OK, Json(answer)).into_response())
}
