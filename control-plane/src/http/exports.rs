//! Evidence exports (issue 8, GAP-025..027). Bundles hold the tenant's
//! ledger entries, so they are for `admin` and `auditor` (as the ledger
//! is); the PDF report and debrief for every role of the tenant:
//!
//! - `GET /api/v1/tenants/{tenant}/exports/evidence?run_id=|incident_id=|from_ms=&to_ms=`:
//!   a signed evidence bundle (`application/x-tar`, see
//!   [`crate::exports`]) for exactly one subject. Checked offline with
//!   `aosctl export verify`.
//! - `GET …/exports/soc2?from_ms=&to_ms=`: the period's evidence bundle
//!   plus `soc2/controls.json` and `soc2/controls.pdf` (GAP-025).
//! - `GET …/exports/report.pdf?run_id=|incident_id=`: the PDF report of a
//!   run or an incident (GAP-027).
//! - `GET …/exports/debrief.pdf?from_ms=&to_ms=`: the one-page executive
//!   debrief of a period (GAP-026).
//!
//! Every export is written to the ledger (`EVIDENCE_EXPORTED`, with the
//! SHA-256 of the bundle's manifest or of the PDF) before it is handed out:
//! an export that cannot be recorded is not made.

use aos_core::export::{BundleKind, Subject};
use aos_core::policy::ActorRole;
use aos_cp_state::Command;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::activity::bad_query;
use super::{ApiError, Intent, READERS, authorize_read, commit_with_id, request_id};
use crate::exports::{self, ExportError};
use crate::node::Node;
use crate::reports;
use crate::write::Consistency;

pub(super) fn routes() -> Router<Node> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/exports/evidence", get(evidence))
        .route("/api/v1/tenants/{tenant}/exports/soc2", get(soc2))
        .route("/api/v1/tenants/{tenant}/exports/report.pdf", get(report))
        .route("/api/v1/tenants/{tenant}/exports/debrief.pdf", get(debrief))
}

/// Exactly one subject: a run, an incident, or a period.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectQuery {
    run_id: Option<String>,
    incident_id: Option<String>,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
}

impl SubjectQuery {
    fn subject(self) -> Result<Subject, ApiError> {
        match self {
            SubjectQuery { run_id: Some(run_id), incident_id: None, from_ms: None, to_ms: None } => {
                Ok(Subject::Run { run_id })
            }
            SubjectQuery { run_id: None, incident_id: Some(incident_id), from_ms: None, to_ms: None } => {
                Ok(Subject::Incident { incident_id })
            }
            SubjectQuery { run_id: None, incident_id: None, from_ms: Some(from_ms), to_ms: Some(to_ms) } => {
                Ok(Subject::Range { from_ms, to_ms })
            }
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                "query: give exactly one subject: run_id, incident_id, or from_ms and to_ms together",
            )),
        }
    }
}

/// A subject in words, for the ledger and file names.
fn describe(subject: &Subject) -> (String, String) {
    match subject {
        Subject::Run { run_id } => (format!("run {run_id}"), format!("run-{run_id}")),
        Subject::Incident { incident_id } => {
            (format!("incident {incident_id}"), format!("incident-{incident_id}"))
        }
        Subject::Range { from_ms, to_ms } => {
            (format!("period {from_ms}..{to_ms}"), format!("period-{from_ms}-{to_ms}"))
        }
    }
}

fn export_error(e: ExportError) -> ApiError {
    match e {
        ExportError::UnknownRun(_) | ExportError::UnknownIncident(_) => ApiError::not_found(e.to_string()),
        ExportError::BadRange { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", e.to_string())
        }
        ExportError::TooLarge => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "TOO_LARGE", e.to_string()),
        ExportError::Bundle(_) | ExportError::Encode(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "EXPORT_FAILED", e.to_string())
        }
    }
}

/// A downloadable body.
fn attachment(content_type: &'static str, file_name: &str, bytes: Vec<u8>) -> Response {
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // File names are built from ids the API validated; anything else is
    // replaced so the header stays well-formed.
    let safe: String = file_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect();
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// Who may take out bundles: they hold the tenant's audit ledger entries,
/// which only admins and auditors may read.
const BUNDLE_ROLES: &[ActorRole] = &[ActorRole::Admin, ActorRole::Auditor];

/// What an export is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Evidence,
    Soc2,
    Report,
    Debrief,
}

impl Kind {
    fn action(self) -> &'static str {
        match self {
            Kind::Evidence => "EXPORT_EVIDENCE",
            Kind::Soc2 => "EXPORT_SOC2",
            Kind::Report => "EXPORT_REPORT",
            Kind::Debrief => "EXPORT_DEBRIEF",
        }
    }

    fn roles(self) -> &'static [ActorRole] {
        match self {
            Kind::Evidence | Kind::Soc2 => BUNDLE_ROLES,
            Kind::Report | Kind::Debrief => READERS,
        }
    }

    /// Refuses a subject this export does not cover, before any work.
    fn check(self, subject: &Subject) -> Result<(), ApiError> {
        let period = matches!(subject, Subject::Range { .. });
        match self {
            Kind::Soc2 | Kind::Debrief if !period => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                "query: this export covers a period: give from_ms and to_ms",
            )),
            Kind::Report if period => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                "query: a report is of one run_id or one incident_id (a period has the debrief)",
            )),
            _ => Ok(()),
        }
    }
}

/// What an export hands out.
struct Made {
    bytes: Vec<u8>,
    sha256: String,
    content_type: &'static str,
    ledger_kind: &'static str,
    file_prefix: &'static str,
    extension: &'static str,
}

/// Authorises, gathers, renders, records in the ledger, then answers. The
/// gathering and rendering run on the blocking pool: they are CPU work and
/// take the state lock in short chunks.
async fn export(
    node: Node,
    headers: HeaderMap,
    tenant: String,
    kind: Kind,
    query: Result<Query<SubjectQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| bad_query(&e))?;
    let intent = Intent {
        tenant: &tenant,
        roles: kind.roles(),
        action: kind.action(),
        target: format!(
            "tenants/{tenant}/exports/{}",
            kind.action().trim_start_matches("EXPORT_").to_ascii_lowercase()
        ),
    };
    let actor = authorize_read(&node, &headers, &intent, Consistency::Linearizable).await?;
    let subject = q.subject()?;
    kind.check(&subject)?;
    let (words, stem) = describe(&subject);
    let worker = node.clone();
    let (tenant_id, actor_id) = (tenant.clone(), actor.actor_id.clone());
    let made = tokio::task::spawn_blocking(move || make(&worker, &tenant_id, &actor_id, kind, subject))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "EXPORT_FAILED", e.to_string()))??;
    // A fresh request id: a caller's Idempotency-Key must not let a second
    // export replay the first one's ledger entry and go unrecorded.
    let request_id = request_id(&HeaderMap::new(), &actor);
    let command = Command::RecordExport {
        tenant_id: tenant.clone(),
        kind: made.ledger_kind.to_owned(),
        subject: words,
        sha256: made.sha256,
    };
    commit_with_id(&node, request_id, actor, command).await?;
    let file = format!("{}-{tenant}-{stem}.{}", made.file_prefix, made.extension);
    Ok(attachment(made.content_type, &file, made.bytes))
}

fn make(node: &Node, tenant: &str, actor_id: &str, kind: Kind, subject: Subject) -> Result<Made, ApiError> {
    let evidence = exports::collect(node.state(), tenant, subject).map_err(export_error)?;
    let now = crate::now_ms();
    match kind {
        Kind::Evidence | Kind::Soc2 => {
            let mut files = exports::bundle_files(&evidence).map_err(export_error)?;
            let bundle_kind = if kind == Kind::Soc2 {
                files.extend(reports::soc2_files(&evidence, now));
                BundleKind::Soc2
            } else {
                BundleKind::Evidence
            };
            let active = node.state().read(|s| s.0.signing_keys().active().map(str::to_owned));
            let signer = node.keys().signer_for(active.as_deref()).map_err(|e| {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SIGNING_KEY_UNAVAILABLE", e.to_string())
            })?;
            let header = exports::header(&evidence, bundle_kind, actor_id, now);
            let sealed = aos_core::export::seal(header, files, signer)
                .map_err(|e| export_error(ExportError::Bundle(e)))?;
            let (ledger_kind, file_prefix) = if kind == Kind::Soc2 {
                ("SOC2_BUNDLE", "aos-soc2")
            } else {
                ("EVIDENCE_BUNDLE", "aos-evidence")
            };
            Ok(Made {
                bytes: sealed.archive,
                sha256: sealed.manifest_sha256,
                content_type: "application/x-tar",
                ledger_kind,
                file_prefix,
                extension: "tar",
            })
        }
        Kind::Report | Kind::Debrief => {
            let (pdf, ledger_kind, file_prefix) = if kind == Kind::Report {
                (reports::subject_report(&evidence, now), "PDF_REPORT", "aos-report")
            } else {
                (reports::debrief(&evidence, now), "EXECUTIVE_DEBRIEF", "aos-debrief")
            };
            Ok(Made {
                sha256: sha256_hex(&pdf),
                bytes: pdf,
                content_type: "application/pdf",
                ledger_kind,
                file_prefix,
                extension: "pdf",
            })
        }
    }
}

async fn evidence(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    query: Result<Query<SubjectQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    export(node, headers, tenant, Kind::Evidence, query).await
}

async fn soc2(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    query: Result<Query<SubjectQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    export(node, headers, tenant, Kind::Soc2, query).await
}

async fn report(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    query: Result<Query<SubjectQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    export(node, headers, tenant, Kind::Report, query).await
}

async fn debrief(
    State(node): State<Node>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    query: Result<Query<SubjectQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    export(node, headers, tenant, Kind::Debrief, query).await
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
