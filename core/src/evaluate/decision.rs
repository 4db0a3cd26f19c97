//! What the evaluator returns: the outcome and everything needed to explain
//! it (inflection metadata, GAP-024).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::counters::CounterWindow;
use crate::policy::Period;
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
    pub policy_id: Arc<str>,
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
    pub policy_id: Arc<str>,
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
    pub policy_id: Arc<str>,
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
    pub policy_id: Arc<str>,
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
    pub policy_id: Arc<str>,
    /// Its failure mode.
    pub failure_mode: FailureMode,
    /// The outcome the failure mode produced.
    pub outcome: Action,
    /// What was missing or wrong.
    pub reason: String,
}

/// What one policy contributed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyOutcome {
    /// Policy.
    pub policy_id: Arc<str>,
    /// Its version.
    pub policy_version: u64,
    /// Snapshot version it was evaluated from.
    pub snapshot_version: u64,
    /// Its outcome after overrides.
    pub outcome: Action,
    /// An override suppressed what it would have done.
    pub overridden: bool,
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
    /// Every policy that did more than CONTINUE, or would have without an
    /// override, sorted by policy id.
    pub policy_outcomes: Vec<PolicyOutcome>,
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

impl Decision {
    /// Human-readable reasons: one line per policy that acted (or was
    /// overridden), then failures that concern the whole decision. Rendered
    /// on demand so the hot path formats nothing.
    pub fn reasons(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.policy_outcomes.len() + 1);
        for p in &self.policy_outcomes {
            if p.overridden {
                if let Some(o) = self.overrides_applied.iter().find(|o| o.policy_id == p.policy_id) {
                    out.push(format!(
                        "policy {} would {} but is overridden by {} ({}) until {}: {}",
                        p.policy_id,
                        o.suppressed_outcome,
                        o.override_id,
                        o.granted_by,
                        o.expires_at_ms,
                        o.reason
                    ));
                }
                continue;
            }
            let mut line = format!("{} by policy {} v{}", p.outcome, p.policy_id, p.policy_version);
            let mut sep = ": ";
            let signals = self
                .signals
                .iter()
                .filter(|s| s.policy_id == p.policy_id && s.snapshot_version == p.snapshot_version);
            for s in signals {
                line.push_str(sep);
                sep = "; ";
                line.push_str(s.kind.as_str());
                if let Some(w) = s.window {
                    line.push(' ');
                    line.push_str(&window_label(w));
                }
                match s.level {
                    SignalLevel::Breach => line.push_str(" breach"),
                    SignalLevel::Near { tier } => line.push_str(&format!(" near ({tier}%)")),
                }
                line.push_str(&format!(", value {} vs limit {}", s.value, s.threshold));
            }
            for f in self.failures.iter().filter(|f| f.policy_id == p.policy_id) {
                line.push_str(sep);
                sep = "; ";
                line.push_str(&format!(
                    "cannot evaluate ({}), failure mode {}",
                    f.reason,
                    f.failure_mode.as_str()
                ));
            }
            out.push(line);
        }
        for f in self.failures.iter().filter(|f| f.policy_id.is_empty()) {
            out.push(format!("{}: {}", f.outcome, f.reason));
        }
        out
    }
}

fn window_label(window: CounterWindow) -> String {
    match window {
        CounterWindow::PerRun => "per run".to_owned(),
        CounterWindow::PerSession => "per session".to_owned(),
        CounterWindow::Calendar(Period::Hourly) => "this hour".to_owned(),
        CounterWindow::Calendar(Period::Daily) => "today".to_owned(),
        CounterWindow::Calendar(Period::Monthly) => "this month".to_owned(),
        CounterWindow::Rolling { seconds } => format!("over {seconds}s"),
    }
}
