//! What the evaluator is told about a step.

use serde::{Deserialize, Serialize};

use crate::counters::CounterSource;
use crate::money::MicroUsd;
use crate::pii::PiiKinds;

/// The resolved scope of a run, fixed at run start (GAP-004, GAP-028).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunScope {
    /// Owning tenant.
    pub tenant_id: String,
    /// Project, if any.
    pub project_id: Option<String>,
    /// The customer's workload agent (not our edge agent).
    pub agent_id: Option<String>,
    /// API key the run was started with.
    pub api_key_id: Option<String>,
    /// Human actor the run acts for.
    pub human_actor_id: Option<String>,
    /// Session shared by several runs.
    pub session_id: Option<String>,
}

/// Where in a step the decision is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepPhase {
    /// Before the LLM call, with estimates. Counts one request.
    #[default]
    PreStep,
    /// After the LLM returned, with actual usage.
    Usage,
    /// A governed data access (GAP-065).
    DataAccess,
}

/// Kinds of governed data access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DataAccessKind {
    /// Retrieval from a knowledge plane (vector, file, HTTP, MCP).
    Retrieval,
    /// A templated SQL query; counts towards `DB_QUERIES`.
    DatabaseQuery,
}

/// A data-access request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DataAccess {
    /// Knowledge plane requested.
    pub plane_id: String,
    /// Kind of access.
    pub kind: DataAccessKind,
}

/// This step's increments and findings. Absent amounts count as zero;
/// counters (usage before this step) come from [`StepContext::counters`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepInput {
    /// Phase of the step.
    pub phase: StepPhase,
    /// Tokens this step adds (estimate before, actual after).
    pub tokens: Option<u64>,
    /// Spend this step adds.
    pub cost: Option<MicroUsd>,
    /// Data access requested by this step.
    pub data_access: Option<DataAccess>,
    /// PII kinds found in the step's prompt or response.
    #[serde(default)]
    pub pii: PiiKinds,
    /// Hallucination score of the response, `0.0..=1.0`.
    pub hallucination_score: Option<f64>,
}

/// Everything `decide` reads besides the snapshots.
#[derive(Clone, Copy)]
pub struct StepContext<'a> {
    /// The evaluator's clock, Unix milliseconds (overrides, expiry).
    pub now_ms: u64,
    /// The run's resolved scope.
    pub scope: &'a RunScope,
    /// This step.
    pub step: &'a StepInput,
    /// Usage before this step.
    pub counters: &'a dyn CounterSource,
}

impl std::fmt::Debug for StepContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext")
            .field("now_ms", &self.now_ms)
            .field("scope", self.scope)
            .field("step", self.step)
            .finish_non_exhaustive()
    }
}
