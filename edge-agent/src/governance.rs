//! The governance state this edge agent applies (issue 5; GAP-069 kill
//! switch, GAP-070 degraded mode): pushed by the control plane on the
//! watch stream, persisted, kept across restarts and while the control
//! plane is unreachable.
//!
//! | mode | new runs | a decision's outcome is… |
//! |---|---|---|
//! | `ENFORCING` | started | enforced |
//! | `DEGRADED` | refused (503) | downgraded to at most WARN, flagged |
//! | `DISABLED` | started | not enforced (CONTINUE), recorded as BYPASSED with what it would have been |
//! | `HALTED` | refused (503) | every in-flight run was KILLed when the state arrived |

use aos_core::policy::Action;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A governance mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    /// Normal enforcement.
    Enforcing,
    /// New runs refused; outcomes at most WARN.
    Degraded,
    /// Governance bypassed, decisions recorded.
    Disabled,
    /// Emergency stop.
    Halted,
}

impl Mode {
    /// Parses the wire spelling.
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "ENFORCING" => Some(Mode::Enforcing),
            "DEGRADED" => Some(Mode::Degraded),
            "DISABLED" => Some(Mode::Disabled),
            "HALTED" => Some(Mode::Halted),
            _ => None,
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforcing => "ENFORCING",
            Mode::Degraded => "DEGRADED",
            Mode::Disabled => "DISABLED",
            Mode::Halted => "HALTED",
        }
    }
}

/// The state in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceView {
    /// Control-plane governance version (0: never received).
    pub version: u64,
    /// The effective mode for this agent's tenant.
    pub mode: Mode,
    /// Why it was set.
    pub reason: String,
    /// Who set it.
    pub set_by: String,
}

impl Default for GovernanceView {
    fn default() -> Self {
        GovernanceView { version: 0, mode: Mode::Enforcing, reason: String::new(), set_by: String::new() }
    }
}

impl GovernanceView {
    /// The outcome actually enforced for a decision's `outcome`.
    pub fn enforced(&self, outcome: Action) -> Action {
        match self.mode {
            Mode::Enforcing | Mode::Halted => outcome,
            Mode::Degraded => {
                if matches!(outcome, Action::Continue) {
                    Action::Continue
                } else {
                    Action::Warn
                }
            }
            Mode::Disabled => Action::Continue,
        }
    }

    /// What a record says when the enforced outcome differs from the
    /// decision's (`None` when they agree).
    pub fn annotation(&self, decided: Action, enforced: Action) -> Option<Value> {
        if decided == enforced {
            return None;
        }
        let label = if self.mode == Mode::Disabled { "BYPASSED" } else { "DOWNGRADED" };
        Some(json!({
            "mode": self.mode.as_str(),
            "enforced": label,
            "enforced_outcome": enforced.as_str(),
            "would_have_been": decided.as_str(),
            "governance_version": self.version,
            "reason": self.reason,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(mode: Mode) -> GovernanceView {
        GovernanceView { version: 3, mode, reason: "r".into(), set_by: "sre".into() }
    }

    #[test]
    fn each_mode_enforces_what_the_table_says() {
        let all = [Action::Continue, Action::Warn, Action::Pause, Action::Stop, Action::Kill];
        for a in all {
            assert_eq!(view(Mode::Enforcing).enforced(a), a);
            assert_eq!(view(Mode::Disabled).enforced(a), Action::Continue);
        }
        assert_eq!(view(Mode::Degraded).enforced(Action::Continue), Action::Continue);
        for a in [Action::Warn, Action::Pause, Action::Stop, Action::Kill] {
            assert_eq!(view(Mode::Degraded).enforced(a), Action::Warn);
        }
    }

    #[test]
    fn overridden_outcomes_are_annotated_with_what_they_would_have_been() {
        let note = view(Mode::Disabled).annotation(Action::Stop, Action::Continue).unwrap();
        assert_eq!(
            (note["enforced"].as_str(), note["would_have_been"].as_str()),
            (Some("BYPASSED"), Some("STOP"))
        );
        let note = view(Mode::Degraded).annotation(Action::Kill, Action::Warn).unwrap();
        assert_eq!(note["enforced"], "DOWNGRADED");
        assert!(view(Mode::Enforcing).annotation(Action::Stop, Action::Stop).is_none());
        assert_eq!(Mode::parse("HALTED"), Some(Mode::Halted));
        assert_eq!(Mode::parse("halted"), None);
    }
}
