//! Scope selector: who or what a policy applies to (GAP-001..003).

use serde::{Deserialize, Serialize};

/// The kind of subject a policy targets.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScopeType {
    /// Every run of the tenant (GAP-003).
    AllRuns,
    /// Runs of the listed tenants; an empty list means the owning tenant.
    Tenant,
    /// Runs of the listed projects.
    Project,
    /// Runs of the listed workload agents (the customer's LLM agent ids, not
    /// our edge agent).
    Agent,
    /// Runs started with the listed API keys (GAP-001).
    ApiKey,
    /// Runs on behalf of the listed human actors (GAP-002).
    HumanActor,
}

impl ScopeType {
    /// The document spelling, e.g. `API_KEY`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeType::AllRuns => "ALL_RUNS",
            ScopeType::Tenant => "TENANT",
            ScopeType::Project => "PROJECT",
            ScopeType::Agent => "AGENT",
            ScopeType::ApiKey => "API_KEY",
            ScopeType::HumanActor => "HUMAN_ACTOR",
        }
    }
}

/// A scope selector: a type plus the ids it selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// What kind of subject is selected.
    #[serde(rename = "type")]
    pub scope_type: ScopeType,
    /// The selected ids. Must be empty for `ALL_RUNS`, non-empty otherwise
    /// (except `TENANT`, where empty means the owning tenant).
    #[serde(default)]
    pub ids: Vec<String>,
}

impl Scope {
    /// A scope that selects every run.
    pub fn all_runs() -> Self {
        Scope { scope_type: ScopeType::AllRuns, ids: Vec::new() }
    }
}
