//! The policy model: what a policy author writes and what a snapshot carries.
//!
//! A policy follows the reference design (seed §7 "Reference Design
//! Comparison"): **scope selector → monitors → limits → control actions →
//! activation state**. These types are plain data; [`crate::compile`] turns a
//! [`Policy`] into thresholds the evaluator can use and reports every problem
//! with its field path.
//!
//! Enum variants are spelled in `SCREAMING_SNAKE_CASE` in documents; new
//! variants are only ever appended, because snapshots encode variants by
//! position.

mod actions;
mod alerts;
mod lifecycle;
mod limits;
mod monitors;
mod overrides;
mod scope;

pub use actions::{Action, ActionConfig};
pub use alerts::{AlertConfig, NotifyChannel};
pub use lifecycle::{LifecycleError, PolicyStatus};
pub use limits::{Limit, LimitSignal, LimitWindow, Period};
pub use monitors::{HallucinationMonitor, InspectionConstraints, Monitors, PiiMonitor, RagAccessMonitor};
pub use overrides::{ActorRole, OverrideGrantor, PolicyOverride};
pub use scope::{Scope, ScopeType};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One governance policy as authored (YAML/JSON) and as carried in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Stable identifier, unique within a tenant. INV-005 breaks ties on the
    /// lowest `id`, compared as bytes.
    pub id: String,
    /// Short human-readable name.
    pub name: String,
    /// Free text shown to operators.
    #[serde(default)]
    pub description: String,
    /// Version of this policy; assigned by the control plane on every change.
    #[serde(default = "default_version")]
    pub version: u64,
    /// Activation state (GAP-020, GAP-021). Only `ACTIVE` policies enforce.
    #[serde(default)]
    pub status: PolicyStatus,
    /// Why the policy is in its current state; required for `SUSPENDED` and
    /// `RETIRED`.
    #[serde(default)]
    pub status_reason: Option<String>,
    /// Who or what the policy applies to (GAP-001..003).
    pub scope: Scope,
    /// What is observed during a run (GAP-005). A limit on a signal that is not
    /// monitored is rejected (GAP-008).
    #[serde(default)]
    pub monitors: Monitors,
    /// Quantitative constraints. Limits only emit `NEAR` or `BREACH`
    /// (GAP-012); [`Policy::actions`] decides the outcome.
    #[serde(default)]
    pub limits: Vec<Limit>,
    /// Near-threshold tiers and notification channels (GAP-017, GAP-018).
    #[serde(default)]
    pub alerts: AlertConfig,
    /// What happens near and at a breach (GAP-013..015).
    #[serde(default)]
    pub actions: ActionConfig,
    /// When the policy version is bound to a run (GAP-031).
    #[serde(default)]
    pub bind_at: BindAt,
    /// What to do when an input the policy needs is missing (GAP-035).
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Among policies with equally restrictive outcomes, the higher
    /// precedence is credited as the winner before the lowest-id tiebreak.
    /// Precedence never changes the outcome itself (INV-005).
    #[serde(default = "default_precedence")]
    pub precedence: u32,
}

fn default_version() -> u64 {
    1
}

fn default_precedence() -> u32 {
    100
}

impl Policy {
    /// `threshold_snapshot_hash` (GAP-022): SHA-256 over the canonical encoding
    /// of everything that decides when this policy fires and what it does
    /// (monitors, limits, alerts, actions, binding, failure mode), independent
    /// of how the source document was formatted.
    pub fn threshold_hash(&self) -> [u8; 32] {
        let thresholds =
            (&self.monitors, &self.limits, &self.alerts, &self.actions, self.bind_at, self.failure_mode);
        let mut hasher = Sha256::new();
        hasher.update(b"aos.policy.thresholds.v1\0");
        // Encoding plain data into a Vec cannot fail; a failure would only
        // weaken the hash, never panic.
        if let Ok(bytes) = postcard::to_stdvec(&thresholds) {
            hasher.update(&bytes);
        }
        hasher.finalize().into()
    }

    /// [`Policy::threshold_hash`] as lowercase hex.
    pub fn threshold_hash_hex(&self) -> String {
        hex::encode(self.threshold_hash())
    }
}

/// When a run binds to a policy version (GAP-031).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BindAt {
    /// The version in force when the run started applies for the whole run.
    RunStart,
    /// The version in force at the run's first step applies from then on.
    FirstToken,
    /// Every step sees the newest snapshot.
    #[default]
    EachStep,
}

impl BindAt {
    /// All binding moments, earliest first.
    pub const ALL: [BindAt; 3] = [BindAt::RunStart, BindAt::FirstToken, BindAt::EachStep];

    /// Position in [`BindAt::ALL`].
    pub fn index(self) -> usize {
        match self {
            BindAt::RunStart => 0,
            BindAt::FirstToken => 1,
            BindAt::EachStep => 2,
        }
    }
}

/// What a policy does when it cannot be evaluated (GAP-035).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Missing input or evaluation failure yields `STOP`. The default.
    #[default]
    FailClosed,
    /// Missing input or evaluation failure yields `WARN`; must be chosen
    /// explicitly.
    FailOpen,
}

impl FailureMode {
    /// The document spelling, e.g. `fail_closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::FailClosed => "fail_closed",
            FailureMode::FailOpen => "fail_open",
        }
    }

    /// The outcome a policy with this mode contributes when it cannot be
    /// evaluated.
    pub fn outcome(self) -> Action {
        match self {
            FailureMode::FailClosed => Action::Stop,
            FailureMode::FailOpen => Action::Warn,
        }
    }
}
