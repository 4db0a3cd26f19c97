//! Control actions: what happens near a limit and at a breach (GAP-013..015).

use serde::{Deserialize, Serialize};

/// An enforcement outcome. The declaration order is the restrictiveness
/// order used by INV-005: `KILL > STOP > PAUSE > WARN > CONTINUE`.
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
pub enum Action {
    /// Proceed.
    #[default]
    Continue,
    /// Proceed, and tell the workload and the run log why.
    Warn,
    /// Suspend the run until it is resumed (GAP-013); resumable.
    Pause,
    /// End the run gracefully: the current step's report may land (GAP-014).
    Stop,
    /// End the run immediately, cancelling in-flight work (GAP-014).
    Kill,
}

impl Action {
    /// All actions, least restrictive first.
    pub const ALL: [Action; 5] = [Action::Continue, Action::Warn, Action::Pause, Action::Stop, Action::Kill];

    /// The document spelling, e.g. `STOP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Continue => "CONTINUE",
            Action::Warn => "WARN",
            Action::Pause => "PAUSE",
            Action::Stop => "STOP",
            Action::Kill => "KILL",
        }
    }

    /// Whether the run may take another step after this outcome.
    pub fn allows_next_step(self) -> bool {
        matches!(self, Action::Continue | Action::Warn)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The actions a policy takes. Limits only emit signals; this decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// Outcome when a near-threshold tier is crossed but nothing is breached.
    #[serde(default = "default_on_near")]
    pub on_near: Action,
    /// Outcome when a limit is breached.
    #[serde(default = "default_on_breach")]
    pub on_breach: Action,
    /// A human must acknowledge before a paused run resumes (GAP-015).
    #[serde(default)]
    pub requires_ack: bool,
}

fn default_on_near() -> Action {
    Action::Warn
}

fn default_on_breach() -> Action {
    Action::Stop
}

impl Default for ActionConfig {
    fn default() -> Self {
        ActionConfig { on_near: default_on_near(), on_breach: default_on_breach(), requires_ack: false }
    }
}
