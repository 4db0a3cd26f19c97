//! Write-once records the edge agent produces and ships to the control
//! plane: LLM run records (seed §5.2), incidents, near-control events in
//! the run log (GAP-019) and system records.
//!
//! Every record has an id unique across agents and restarts (random), so
//! the control plane can de-duplicate redelivery; the outbox key is a local
//! sequence number that keeps them in production order.

use aos_core::evaluate::Decision;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One record in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unique id (idempotency key on ingest).
    pub record_id: String,
    /// The tenant this edge agent serves.
    pub tenant_id: String,
    /// The run it belongs to, if any.
    pub run_id: Option<String>,
    /// When it was produced (Unix ms).
    pub at_ms: u64,
    /// What it is.
    #[serde(flatten)]
    pub body: RecordBody,
}

/// Record kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordBody {
    /// One LLM call of a run, as reported after it returned.
    LlmRunRecord(LlmRunRecord),
    /// A policy decision that did more than CONTINUE (WARN, PAUSE, STOP,
    /// KILL) or a near-threshold signal: the run log's control events.
    ControlEvent(ControlEvent),
    /// A violation or failure, one per run and policy and kind.
    Incident(Incident),
    /// Something about the edge agent itself.
    SystemRecord(SystemRecord),
    /// A run's state after it started or changed status (the Activity
    /// domain's live and completed runs are built from these).
    RunState(RunState),
    /// One governed data access, allowed or not (GAP-058).
    RetrievalEvidence(RetrievalEvidence),
}

/// What a governed data access touched (GAP-058): written to the outbox
/// before the workload gets the result, and for refused attempts too, so
/// the evidence count equals the access count. Holds ids and hashes, never
/// the data returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalEvidence {
    /// Same as the record id.
    pub evidence_id: String,
    /// Knowledge plane asked for.
    pub plane_id: String,
    /// `query`, `fetch` or `call_tool`.
    pub action: String,
    /// Template, endpoint or tool id.
    pub target: String,
    /// The source that served it (none when refused before resolution).
    pub connector_id: Option<String>,
    /// SHA-256 of the canonical request (plane, action, target, params).
    pub query_hash: String,
    /// `ALLOWED`, `DENIED` or `FAILED`.
    pub outcome: String,
    /// Why it was denied or failed (a stable code), if it was.
    pub code: Option<String>,
    /// Human-readable reason, if denied or failed.
    pub reason: Option<String>,
    /// Ids of the documents or rows returned.
    pub doc_ids: Vec<String>,
    /// Rows returned (SQL).
    pub rows: Option<usize>,
    /// Estimated tokens of the returned payload (bytes / 4, rounded up).
    pub token_count: u64,
    /// Snapshot version in force.
    pub policy_snapshot_version: u64,
    /// Its content hash (`policy_snapshot_id`).
    pub policy_snapshot_hash: String,
    /// The winning policy, if a policy decided.
    pub policy_id: Option<String>,
}

/// A run as it stands after a status change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// `running`, `paused`, `succeeded`, `failed`, `failed_policy`,
    /// `cancelled`, `retry`.
    pub status: String,
    /// Why it ended, once it has.
    pub termination_reason: Option<String>,
    /// Detail of the ending.
    pub termination_detail: Option<String>,
    /// Project.
    pub project_id: Option<String>,
    /// The customer's workload agent.
    pub agent_id: Option<String>,
    /// API key the workload used.
    pub api_key_id: Option<String>,
    /// Human actor.
    pub human_actor_id: Option<String>,
    /// Session.
    pub session_id: Option<String>,
    /// Steps admitted.
    pub steps: u64,
    /// Tokens used (reported).
    pub tokens: u64,
    /// Spend, micro-USD (reported).
    pub cost_micros: u64,
    /// Snapshot version bound at start.
    pub run_start_snapshot_version: u64,
    /// What the run is for, if the workload said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
    /// Unix ms.
    pub started_at_ms: u64,
}

/// Seed §5.2: one LLM call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmRunRecord {
    /// Step within the run.
    pub step_id: String,
    /// Model used.
    pub model: Option<String>,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in micro-USD.
    pub cost_micros: u64,
    /// SHA-256 of the prompt, hex (always kept).
    pub prompt_hash: Option<String>,
    /// SHA-256 of the response, hex (always kept).
    pub response_hash: Option<String>,
    /// Prompt text, only when every applicable policy allows it (GAP-033).
    pub prompt: Option<String>,
    /// Response text, same rule.
    pub response: Option<String>,
    /// The decision's outcome for this report.
    pub outcome: String,
    /// The policy that decided it, when one did more than CONTINUE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// Snapshot version the decision used.
    pub snapshot_version: u64,
    /// Reported for a step whose admission the agent lost in a crash
    /// (admissions are not fsynced; usage reports are).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late_report: bool,
    /// The hallucination detector's grounding check of the response
    /// (GAP-023), when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grounding: Option<Value>,
}

/// A control event (GAP-019).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlEvent {
    /// Step, if the event came from a step.
    pub step_id: Option<String>,
    /// `PRE_STEP` or `USAGE`.
    pub phase: String,
    /// The decision.
    pub decision: Value,
    /// Human-readable reasons.
    pub reasons: Vec<String>,
    /// Set when governance state changed what was enforced (DEGRADED:
    /// downgraded to WARN; DISABLED: BYPASSED), with what it would have
    /// been.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governance: Option<Value>,
}

/// An incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `BUDGET_EXCEEDED`, `RATE_LIMIT`, `TOKEN_LIMIT`, `PII_DETECTED`,
    /// `EXECUTION_FAILURE`.
    pub incident_kind: String,
    /// Policy credited, if any.
    pub policy_id: Option<String>,
    /// What happened.
    pub summary: String,
    /// Where the run crossed the line (GAP-024): step index, signal,
    /// value, threshold, snapshot version, policy version and its
    /// threshold hash. Absent for failures that are not a policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inflection: Option<serde_json::Value>,
    /// Whether the run was stopped for it (`false`: a non-blocking
    /// detection such as a hallucination, INV-002).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking: Option<bool>,
}

/// A system record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemRecord {
    /// `STARTUP`, `SHUTDOWN`, `SNAPSHOT_APPLIED`, `SNAPSHOT_REJECTED`, …
    pub event: String,
    /// Details.
    pub detail: String,
    /// On `GOVERNANCE_APPLIED`: the state applied. The record is its
    /// durable copy until the database's write of it is flushed (see
    /// `Engine::apply_governance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governance: Option<crate::governance::GovernanceView>,
}

impl Record {
    /// A new record with a fresh id.
    pub fn new(tenant_id: &str, run_id: Option<&str>, at_ms: u64, body: RecordBody) -> Record {
        Record {
            record_id: crate::ids::random_id("rec"),
            tenant_id: tenant_id.to_owned(),
            run_id: run_id.map(str::to_owned),
            at_ms,
            body,
        }
    }
}

/// The incident kind a stopping decision maps to, from its winning signal.
pub fn incident_kind(decision: &Decision) -> &'static str {
    use aos_core::evaluate::SignalKind;
    let winner = decision.winning_policy.as_ref().map(|w| &w.policy_id);
    let signal = decision.signals.iter().find(|s| Some(&s.policy_id) == winner && s.blocking);
    match signal.map(|s| s.kind) {
        Some(SignalKind::CostUsd | SignalKind::BurnRateUsdPerHour) => "BUDGET_EXCEEDED",
        Some(SignalKind::Tokens) => "TOKEN_LIMIT",
        Some(SignalKind::Requests | SignalKind::DbQueries) => "RATE_LIMIT",
        Some(SignalKind::Pii) => "PII_DETECTED",
        Some(SignalKind::Hallucination) => "HALLUCINATION",
        Some(SignalKind::RagAccess) => "CONTENT_POLICY",
        None => "POLICY_VIOLATION",
    }
}
