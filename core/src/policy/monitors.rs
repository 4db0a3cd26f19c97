//! Monitors: what a policy observes during a run (GAP-005..008, GAP-033).
//! If something is not monitored it cannot trigger a limit (GAP-008).

use serde::{Deserialize, Serialize};

use crate::pii::PiiKind;

/// The signals a policy observes, and what it allows to be captured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Monitors {
    /// Token usage (input + output).
    #[serde(default)]
    pub tokens: bool,
    /// Spend in USD.
    #[serde(default)]
    pub cost: bool,
    /// Spend per hour over a rolling window (GAP-007).
    #[serde(default)]
    pub burn_rate: bool,
    /// Request (step) rate.
    #[serde(default)]
    pub requests: bool,
    /// Retrieval from knowledge planes (GAP-006).
    #[serde(default)]
    pub rag_access: RagAccessMonitor,
    /// Database queries through the SQL gateway (GAP-010).
    #[serde(default)]
    pub db_queries: bool,
    /// PII and secrets in prompts and responses.
    #[serde(default)]
    pub pii: PiiMonitor,
    /// Hallucination scores (GAP-023); non-blocking unless opted in (INV-002).
    #[serde(default)]
    pub hallucination: HallucinationMonitor,
    /// What may be captured in records (GAP-033).
    #[serde(default)]
    pub inspection: InspectionConstraints,
}

/// RAG access monitoring (GAP-006) with the knowledge planes it allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RagAccessMonitor {
    /// Observe retrieval.
    #[serde(default)]
    pub enabled: bool,
    /// Knowledge-plane ids retrieval may touch; empty means any plane the
    /// plane's own default allows.
    #[serde(default)]
    pub allowed_planes: Vec<String>,
}

/// PII monitoring.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PiiMonitor {
    /// Observe PII; a finding is a breach (deterministic, blocking by default
    /// per the INV-002 table).
    #[serde(default)]
    pub enabled: bool,
    /// Kinds that count; empty means all kinds.
    #[serde(default)]
    pub kinds: Vec<PiiKind>,
}

/// Hallucination monitoring (GAP-023, INV-002).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HallucinationMonitor {
    /// Observe hallucination scores.
    #[serde(default)]
    pub enabled: bool,
    /// Score in `0.0..=1.0` at or above which a response counts as
    /// hallucinated. Defaults to 0.7.
    #[serde(default = "default_hallucination_threshold")]
    pub threshold: f64,
    /// Opt in to blocking (INV-002). Without it a hallucination is at most a
    /// `WARN`.
    #[serde(default)]
    pub blocking: bool,
}

fn default_hallucination_threshold() -> f64 {
    0.7
}

impl Default for HallucinationMonitor {
    fn default() -> Self {
        HallucinationMonitor { enabled: false, threshold: default_hallucination_threshold(), blocking: false }
    }
}

/// Inspection constraints (GAP-033). All default to `false`: prompt and
/// response text is stored only when every applicable policy allows it;
/// hashes are always stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InspectionConstraints {
    /// Prompt text may be stored.
    #[serde(default)]
    pub allow_prompt_logging: bool,
    /// Response text may be stored.
    #[serde(default)]
    pub allow_response_logging: bool,
    /// Detected PII may be captured verbatim in evidence.
    #[serde(default)]
    pub allow_pii_capture: bool,
    /// The run may read secrets through connectors.
    #[serde(default)]
    pub allow_secret_access: bool,
}

impl InspectionConstraints {
    /// Everything allowed: the identity for [`InspectionConstraints::intersect`].
    pub const ALLOW_ALL: InspectionConstraints = InspectionConstraints {
        allow_prompt_logging: true,
        allow_response_logging: true,
        allow_pii_capture: true,
        allow_secret_access: true,
    };

    /// The most restrictive combination of two constraint sets.
    pub fn intersect(self, other: InspectionConstraints) -> InspectionConstraints {
        InspectionConstraints {
            allow_prompt_logging: self.allow_prompt_logging && other.allow_prompt_logging,
            allow_response_logging: self.allow_response_logging && other.allow_response_logging,
            allow_pii_capture: self.allow_pii_capture && other.allow_pii_capture,
            allow_secret_access: self.allow_secret_access && other.allow_secret_access,
        }
    }
}
