//! Policy activation lifecycle: `DRAFT → ACTIVE ⇄ SUSPENDED → RETIRED`
//! (GAP-020, GAP-021), as a state machine that rejects illegal moves.

use serde::{Deserialize, Serialize};

/// Activation state of a policy. Only `ACTIVE` policies are enforced.
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
pub enum PolicyStatus {
    /// Authored, not enforced. The default for a new policy.
    #[default]
    Draft,
    /// Enforced.
    Active,
    /// Temporarily not enforced; can be re-activated.
    Suspended,
    /// Permanently out of service. Terminal.
    Retired,
}

/// An illegal lifecycle move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    /// The move is not an edge of the state machine.
    #[error("illegal policy transition from {from} to {to}{hint}")]
    IllegalTransition {
        /// Current state.
        from: PolicyStatus,
        /// Requested state.
        to: PolicyStatus,
        /// Extra guidance, empty or starting with `: `.
        hint: &'static str,
    },
    /// Suspending or retiring needs a non-empty reason.
    #[error("a reason is required to move a policy to {to}")]
    ReasonRequired {
        /// Requested state.
        to: PolicyStatus,
    },
}

impl PolicyStatus {
    /// The document spelling, e.g. `ACTIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyStatus::Draft => "DRAFT",
            PolicyStatus::Active => "ACTIVE",
            PolicyStatus::Suspended => "SUSPENDED",
            PolicyStatus::Retired => "RETIRED",
        }
    }

    /// Whether a reason must accompany a move into this state.
    pub fn requires_reason(self) -> bool {
        matches!(self, PolicyStatus::Suspended | PolicyStatus::Retired)
    }

    /// Checks the move `self → to` and returns the new state.
    ///
    /// Legal moves: `DRAFT → ACTIVE`, `DRAFT → RETIRED` (discard),
    /// `ACTIVE → SUSPENDED`, `SUSPENDED → ACTIVE`, `ACTIVE → RETIRED`,
    /// `SUSPENDED → RETIRED`. Suspending and retiring require a reason.
    pub fn transition(self, to: PolicyStatus, reason: Option<&str>) -> Result<PolicyStatus, LifecycleError> {
        use PolicyStatus::{Active, Draft, Retired, Suspended};
        let legal = matches!(
            (self, to),
            (Draft, Active)
                | (Draft, Retired)
                | (Active, Suspended)
                | (Suspended, Active)
                | (Active, Retired)
                | (Suspended, Retired)
        );
        if !legal {
            let hint = match (self, to) {
                (Retired, _) => ": RETIRED is terminal; create a new policy instead",
                (Draft, Suspended) => ": only an ACTIVE policy can be suspended",
                (Suspended | Active, Draft) => {
                    ": a policy never returns to DRAFT; edit creates a new version"
                }
                _ if self == to => ": the policy is already in that state",
                _ => "",
            };
            return Err(LifecycleError::IllegalTransition { from: self, to, hint });
        }
        if to.requires_reason() && reason.is_none_or(|r| r.trim().is_empty()) {
            return Err(LifecycleError::ReasonRequired { to });
        }
        Ok(to)
    }
}

impl std::fmt::Display for PolicyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::PolicyStatus::{self, Active, Draft, Retired, Suspended};
    use super::*;

    const ALL: [PolicyStatus; 4] = [Draft, Active, Suspended, Retired];

    #[test]
    fn exactly_the_documented_moves_are_legal() {
        let legal = [
            (Draft, Active),
            (Draft, Retired),
            (Active, Suspended),
            (Suspended, Active),
            (Active, Retired),
            (Suspended, Retired),
        ];
        for from in ALL {
            for to in ALL {
                let result = from.transition(to, Some("maintenance window"));
                assert_eq!(result.is_ok(), legal.contains(&(from, to)), "{from} -> {to}: {result:?}");
            }
        }
    }

    #[test]
    fn retired_is_terminal_with_a_hint() {
        let err = Retired.transition(Active, Some("x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "illegal policy transition from RETIRED to ACTIVE: RETIRED is terminal; create a new policy instead"
        );
    }

    #[test]
    fn suspend_and_retire_need_a_reason() {
        assert_eq!(Active.transition(Suspended, None), Err(LifecycleError::ReasonRequired { to: Suspended }));
        assert_eq!(
            Active.transition(Retired, Some("   ")),
            Err(LifecycleError::ReasonRequired { to: Retired })
        );
        assert_eq!(Draft.transition(Active, None), Ok(Active));
    }
}
