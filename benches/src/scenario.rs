//! The shared, deterministic scenario that every engine in the side-by-side
//! benchmark evaluates: N per-run budget policies and a handful of requests.
//!
//! The decision being compared mirrors AOS's "STOP, most restrictive wins,
//! ties go to the lowest `policy_id`":
//!
//! * a policy *applies* when its scope is all runs (`agent_ids` empty) or the
//!   request's `agent_id` is in its list;
//! * an applicable policy *breaches* when
//!   `run_tokens_after_step > max_run_tokens` or
//!   `run_cost_micros_after_step > max_run_cost_micros` (strictly greater);
//! * `deny` is "any policy breaches", `winning_policy` is the lowest breaching
//!   policy id in string order (ids are zero-padded, so this is also numeric
//!   order) and `breaching` is how many policies breach.
//!
//! Everything here is generated from the policy index with fixed arithmetic, so
//! no RNG crate is needed and every run sees the same inputs.

/// One per-run budget policy.
#[derive(Debug, Clone)]
pub struct ScenarioPolicy {
    /// `pol-{i:05}`.
    pub id: String,
    /// Workload-agent ids this policy is scoped to; empty means all runs.
    pub agent_ids: Vec<String>,
    /// Breach when the run's tokens after this step exceed this.
    pub max_run_tokens: u64,
    /// Breach when the run's cost (micro-USD) after this step exceeds this.
    pub max_run_cost_micros: u64,
}

/// One step's request, as seen by the policy evaluator.
#[derive(Debug, Clone)]
pub struct ScenarioRequest {
    /// The workload agent executing the run.
    pub agent_id: String,
    /// Run total of tokens if this step is allowed.
    pub run_tokens_after_step: u64,
    /// Run total of cost (micro-USD) if this step is allowed.
    pub run_cost_micros_after_step: u64,
}

/// The decision every engine must produce for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioOutcome {
    /// Whether any policy breaches.
    pub deny: bool,
    /// The lowest breaching policy id, if any.
    pub winning_policy: Option<String>,
    /// How many policies breach.
    pub breaching: usize,
}

/// Every 4th policy (index 0, 4, 8, …) applies to all runs.
const ALL_RUNS_EVERY: usize = 4;
/// All-runs limits start here, above every scoped limit, so that scoping matters.
const ALL_RUNS_TOKENS_BASE: u64 = 200_000;
const ALL_RUNS_TOKENS_SPREAD: u64 = 50_000;
const ALL_RUNS_COST_BASE: u64 = 2_000_000;
const ALL_RUNS_COST_SPREAD: u64 = 500_000;
/// Scoped limits: tokens in `5_000..100_000`, cost in `20_000..1_000_000`.
const SCOPED_TOKENS_BASE: u64 = 5_000;
const SCOPED_TOKENS_SPREAD: u64 = 95_000;
const SCOPED_COST_BASE: u64 = 20_000;
const SCOPED_COST_SPREAD: u64 = 980_000;

/// An agent id that no scoped policy names.
pub const UNSCOPED_AGENT: &str = "agent-unscoped";

/// How many distinct agents the scoped policies of an `n`-policy set spread over.
#[must_use]
pub fn agent_count(n: usize) -> usize {
    (n / 2).max(1)
}

/// The agent id for index `k`.
#[must_use]
pub fn agent_id(k: usize) -> String {
    format!("agent-{k}")
}

/// A cheap deterministic mix of `i` into `0..spread` (`spread > 0`).
fn spread(i: usize, multiplier: u64, spread: u64) -> u64 {
    (i as u64).wrapping_mul(multiplier) % spread
}

/// `n` deterministic policies `pol-00000 ..`.
///
/// Every 4th policy applies to all runs (with high limits); the others target
/// `agent-{i % (n/2)}`, and every 3rd of those also a second agent, so the
/// scoped policies spread over about `n/2` distinct agents.
#[must_use]
pub fn policies(n: usize) -> Vec<ScenarioPolicy> {
    let agents = agent_count(n);
    (0..n)
        .map(|i| {
            let id = format!("pol-{i:05}");
            if i % ALL_RUNS_EVERY == 0 {
                ScenarioPolicy {
                    id,
                    agent_ids: Vec::new(),
                    max_run_tokens: ALL_RUNS_TOKENS_BASE + spread(i, 7_919, ALL_RUNS_TOKENS_SPREAD),
                    max_run_cost_micros: ALL_RUNS_COST_BASE + spread(i, 104_729, ALL_RUNS_COST_SPREAD),
                }
            } else {
                let primary = i % agents;
                let mut agent_ids = vec![agent_id(primary)];
                if i % 3 == 0 {
                    let secondary = (i.wrapping_mul(7) + 3) % agents;
                    if secondary != primary {
                        agent_ids.push(agent_id(secondary));
                    }
                }
                ScenarioPolicy {
                    id,
                    agent_ids,
                    max_run_tokens: SCOPED_TOKENS_BASE + spread(i, 7_919, SCOPED_TOKENS_SPREAD),
                    max_run_cost_micros: SCOPED_COST_BASE + spread(i, 104_729, SCOPED_COST_SPREAD),
                }
            }
        })
        .collect()
}

fn applies(policy: &ScenarioPolicy, agent_id: &str) -> bool {
    policy.agent_ids.is_empty() || policy.agent_ids.iter().any(|a| a == agent_id)
}

/// Eight deterministic requests against `policies(n)`: a mix of allows and
/// denies, scoped agents and an unscoped one, and exact-limit boundaries.
#[must_use]
pub fn requests(n: usize) -> Vec<ScenarioRequest> {
    let agents = agent_count(n);
    let set = policies(n);
    let scoped_agent = agent_id(1 % agents);
    // The tightest limits that apply to `scoped_agent`: sitting exactly on them
    // must allow (breach is strictly greater), one above must deny.
    let applicable = || set.iter().filter(|p| applies(p, &scoped_agent));
    let tight_tokens = applicable().map(|p| p.max_run_tokens).min().unwrap_or(ALL_RUNS_TOKENS_BASE);
    let tight_cost = applicable().map(|p| p.max_run_cost_micros).min().unwrap_or(ALL_RUNS_COST_BASE);
    let req = |agent: String, tokens: u64, cost: u64| ScenarioRequest {
        agent_id: agent,
        run_tokens_after_step: tokens,
        run_cost_micros_after_step: cost,
    };
    vec![
        // Light usage: below every limit.
        req(agent_id(0), 100, 100),
        // Token-heavy step for a scoped agent.
        req(scoped_agent.clone(), 60_000, 10),
        // Cost-heavy step for another scoped agent.
        req(agent_id(agents - 1), 10, 600_000),
        // Above most scoped limits but nobody scopes this agent and the
        // all-runs limits are higher: allow.
        req(UNSCOPED_AGENT.to_owned(), 150_000, 1_500_000),
        // Above every all-runs token limit: deny even for an unscoped agent.
        req(UNSCOPED_AGENT.to_owned(), ALL_RUNS_TOKENS_BASE + ALL_RUNS_TOKENS_SPREAD, 10),
        // Exactly on the tightest applicable limits: allow.
        req(scoped_agent.clone(), tight_tokens, tight_cost),
        // One token over the tightest applicable limit: deny.
        req(scoped_agent, tight_tokens.saturating_add(1), tight_cost),
        // Everything applicable breaches.
        req(agent_id(agents / 2), 10_000_000, 100_000_000),
    ]
}

/// The plain-Rust oracle for the scenario's decision.
#[must_use]
pub fn reference_outcome(policies: &[ScenarioPolicy], req: &ScenarioRequest) -> ScenarioOutcome {
    let mut breaching = 0_usize;
    let mut winning: Option<&str> = None;
    for policy in policies {
        let breaches = applies(policy, &req.agent_id)
            && (req.run_tokens_after_step > policy.max_run_tokens
                || req.run_cost_micros_after_step > policy.max_run_cost_micros);
        if breaches {
            breaching += 1;
            if winning.is_none_or(|w| policy.id.as_str() < w) {
                winning = Some(&policy.id);
            }
        }
    }
    ScenarioOutcome { deny: breaching > 0, winning_policy: winning.map(str::to_owned), breaching }
}
