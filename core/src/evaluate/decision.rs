//! What the evaluator returns: the outcome and everything needed to explain
//! it (inflection metadata, GAP-024).

use serde::{Deserialize, Serialize};

use crate::counters::CounterWindow;
use crate::policy::{Action, FailureMode, InspectionConstraints, NotifyChannel};

/// What raised a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SignalKind {
    /// Tokens; value in tokens.
    Tokens,
    /// Spend; value in micro-USD.
    CostUsd,
    /// Burn rate; value in micro-USD per hour.
    BurnRateUsdPerHour,
    /// Request rate; value in steps.
    Requests,
    /// SQL gateway queries; value in queries.
    DbQueries,
    /// Retrieval refused by the policy; value 1, threshold 0.
    RagAccess,
    /// PII found; value is the number of kinds found.
    Pii,
    /// Hallucination score; value and threshold in thousandths.
    Hallucination,
}

impl SignalKind {
    /// The document spelling, e.g. `COST_USD`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Tokens => "TOKENS",
            SignalKind::CostUsd => "COST_USD",
            SignalKind::BurnRateUsdPerHour => "BURN_RATE_USD_PER_HOUR",
            SignalKind::Requests => "REQUESTS",
            SignalKind::DbQueries => "DB_QUERIES",
            SignalKind::RagAccess => "RAG_ACCESS",
            SignalKind::Pii => "PII",
            SignalKind::Hallucination => "HALLUCINATION",
        }
    }
}

/// How far a limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", tag = "level")]
pub enum SignalLevel {
    /// A near-threshold tier (percent of the limit) was reached.
    Near {
        /// The highest tier reached.
        tier: u8,
    },
    /// The limit was exceeded.
    Breach,
}

/// One signal with the value and threshold that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// Policy whose limit fired.
    pub policy_id: String,
    /// Its version.
    pub policy_version: u64,
    /// Version of the snapshot the policy came from (may be older than the
    /// newest for RUN_START bindings).
    pub snapshot_version: u64,
    /// What fired.
    pub kind: SignalKind,
    /// Index in the policy's `limits`, for limit signals.
    pub limit_index: Option<u32>,
    /// The counter window, for limit signals.
    pub window: Option<CounterWindow>,
    /// Near or breach.
    pub level: SignalLevel,
    /// The value including this step.
    pub value: u64,
    /// The limit.
    pub threshold: u64,
    /// Whether this signal can block. Hallucination signals are not
    /// blocking unless the policy opts in (INV-002).
    pub blocking: bool,
    /// An active override suppressed enforcement (GAP-034).
    pub overridden: bool,
}

/// An alert the EVENT path should deliver. The evaluator only says what
/// crossed; delivery, de-duplication and rate limits happen elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertIntent {
    /// Policy.
    pub policy_id: String,
    /// Signal.
    pub kind: SignalKind,
    /// Tier or breach reached by this step (it was not reached before).
    pub level: SignalLevel,
    /// Value including this step.
    pub value: u64,
    /// Limit.
    pub threshold: u64,
    /// Channels to notify.
    pub channels: Vec<NotifyChannel>,
}

/// The policy credited with the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinningPolicy {
    /// Id.
    pub policy_id: String,
    /// Version.
    pub policy_version: u64,
    /// Snapshot version it was evaluated from.
    pub snapshot_version: u64,
    /// `threshold_snapshot_hash` (GAP-022), hex.
    pub threshold_hash: String,
}

/// An override that suppressed enforcement (GAP-034).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideApplied {
    /// Override id.
    pub override_id: String,
    /// Policy it suspends.
    pub policy_id: String,
    /// What the policy would have done.
    pub suppressed_outcome: Action,
    /// Who granted it.
    pub granted_by: String,
    /// Why.
    pub reason: String,
    /// Until when, Unix milliseconds.
    pub expires_at_ms: u64,
}

/// A policy that could not be evaluated and fell back to its failure mode
/// (GAP-035).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluationFailure {
    /// Policy; empty for failures that concern the whole decision.
    pub policy_id: String,
    /// Its failure mode.
    pub failure_mode: FailureMode,
    /// The outcome the failure mode produced.
    pub outcome: Action,
    /// What was missing or wrong.
    pub reason: String,
}

/// The evaluator's answer for one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Most restrictive outcome over all applicable policies (INV-005).
    pub outcome: Action,
    /// Policy credited with the outcome; `None` when nothing fired.
    pub winning_policy: Option<WinningPolicy>,
    /// A paused run needs human acknowledgement to resume (GAP-015).
    pub requires_ack: bool,
    /// Every signal, sorted by policy id then limit.
    pub signals: Vec<Signal>,
    /// Tiers and breaches newly reached by this step.
    pub alerts: Vec<AlertIntent>,
    /// Human-readable reasons, one per policy that did more than CONTINUE.
    pub reasons: Vec<String>,
    /// Overrides that suppressed enforcement.
    pub overrides_applied: Vec<OverrideApplied>,
    /// Policies that fell back to their failure mode.
    pub failures: Vec<EvaluationFailure>,
    /// What may be captured for this step (GAP-033): the intersection over
    /// every applicable policy; nothing when no policy applies.
    pub inspection: InspectionConstraints,
    /// Version of the newest snapshot consulted.
    pub snapshot_version: u64,
    /// How many policies applied to the step.
    pub policies_evaluated: u32,
}
