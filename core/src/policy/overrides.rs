//! Override authority (GAP-034): a time-bound, reasoned suspension of one
//! policy's enforcement for part of its scope, granted by an actor whose role
//! may grant it.

use serde::{Deserialize, Serialize};

use super::Scope;

/// Roles of actors and API keys.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ActorRole {
    /// Full control of a tenant.
    Admin,
    /// Writes and activates policies.
    PolicyAuthor,
    /// Operates governance state and incidents.
    Sre,
    /// Reads everything, changes nothing.
    Auditor,
    /// A workload's key for the edge agent's local API: it starts runs and
    /// reports steps there, and has no access to the admin API. Keys with
    /// this role travel (as SHA-256 hashes) in the tenant's snapshot.
    Workload,
}

impl ActorRole {
    /// Whether this role may grant a policy override. Authors may not
    /// override their own enforcement; auditors change nothing.
    pub fn can_grant_override(self) -> bool {
        matches!(self, ActorRole::Admin | ActorRole::Sre)
    }

    /// The spelling used in documents and tokens, e.g. `policy_author`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorRole::Admin => "admin",
            ActorRole::PolicyAuthor => "policy_author",
            ActorRole::Sre => "sre",
            ActorRole::Auditor => "auditor",
            ActorRole::Workload => "workload",
        }
    }
}

/// Who granted an override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideGrantor {
    /// The human actor's id.
    pub actor_id: String,
    /// The role the actor held when granting.
    pub role: ActorRole,
}

/// A granted override of one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverride {
    /// Unique id of this override.
    pub override_id: String,
    /// The policy whose enforcement is suspended.
    pub policy_id: String,
    /// Which of the policy's runs are covered; `ALL_RUNS` covers them all.
    pub scope: Scope,
    /// Who granted it.
    pub granted_by: OverrideGrantor,
    /// Why; shown in every decision it affects.
    pub reason: String,
    /// Start of validity, Unix milliseconds (inclusive).
    pub starts_at_ms: u64,
    /// End of validity, Unix milliseconds (exclusive).
    pub expires_at_ms: u64,
}

impl PolicyOverride {
    /// Longest override that may be granted: seven days. Longer exceptions
    /// belong in the policy itself, where they are reviewed.
    pub const MAX_DURATION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

    /// Whether the override is in force at `at_ms` (Unix milliseconds).
    pub fn is_override_active(&self, at_ms: u64) -> bool {
        self.starts_at_ms <= at_ms && at_ms < self.expires_at_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PolicyOverride {
        PolicyOverride {
            override_id: "ovr-1".into(),
            policy_id: "pol-a".into(),
            scope: Scope::all_runs(),
            granted_by: OverrideGrantor { actor_id: "alice".into(), role: ActorRole::Sre },
            reason: "quarter-end batch".into(),
            starts_at_ms: 1_000,
            expires_at_ms: 2_000,
        }
    }

    #[test]
    fn active_window_is_half_open() {
        let o = sample();
        assert!(!o.is_override_active(999));
        assert!(o.is_override_active(1_000));
        assert!(o.is_override_active(1_999));
        assert!(!o.is_override_active(2_000));
    }

    #[test]
    fn only_admin_and_sre_grant() {
        assert!(ActorRole::Admin.can_grant_override());
        assert!(ActorRole::Sre.can_grant_override());
        assert!(!ActorRole::PolicyAuthor.can_grant_override());
        assert!(!ActorRole::Auditor.can_grant_override());
        assert!(!ActorRole::Workload.can_grant_override());
    }
}
