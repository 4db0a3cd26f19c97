//! The scenario expressed as AOS policies, decided with `aos_core::decide`.
//!
//! Same decision as the Cedar and Rego equivalents: scope match (all runs or
//! listed workload agents) and per-run token and cost thresholds; a breach
//! is `STOP`; the winner is the lowest policy id. Near-threshold tiers are
//! off so AOS does no work the others do not.

use aos_core::counters::{CounterKey, CounterWindow, Metric};
use aos_core::evaluate::{RunScope, SignalLevel, StepInput, StepPhase};
use aos_core::policy::{
    Action, ActionConfig, AlertConfig, BindAt, FailureMode, Limit, LimitSignal, LimitWindow, Monitors,
    Policy, PolicyStatus, Scope, ScopeType,
};
use aos_core::snapshot::{PolicySnapshot, SnapshotSigner, TrustedKeys, VerifyOptions};
use aos_core::{SnapshotBindings, StepContext, VerifiedSnapshot, decide, sign, verify};

use crate::scenario::{ScenarioOutcome, ScenarioPolicy, ScenarioRequest};

/// Tenant used by the benchmark snapshots.
pub const TENANT: &str = "tenant-bench";
/// Clock used by the benchmark snapshots.
pub const NOW_MS: u64 = 1_700_000_000_000;

/// A verified snapshot of the scenario's policies, ready for `decide`.
#[derive(Debug)]
pub struct AosEquivalent {
    snapshot: VerifiedSnapshot,
    envelope: Vec<u8>,
    trusted: TrustedKeys,
}

/// Converts one scenario policy.
pub fn to_policy(p: &ScenarioPolicy) -> Policy {
    let scope = if p.agent_ids.is_empty() {
        Scope::all_runs()
    } else {
        Scope { scope_type: ScopeType::Agent, ids: p.agent_ids.clone() }
    };
    let per_run = |signal, max: f64| Limit {
        signal,
        max: Some(max),
        window: Some(LimitWindow::PerRun),
        period: None,
        window_seconds: None,
        allowed: None,
    };
    #[expect(clippy::cast_precision_loss, reason = "scenario values are far below 2^52")]
    let limits = vec![
        per_run(LimitSignal::Tokens, p.max_run_tokens as f64),
        per_run(LimitSignal::CostUsd, p.max_run_cost_micros as f64 / 1e6),
    ];
    Policy {
        id: p.id.clone(),
        name: p.id.clone(),
        description: String::new(),
        version: 1,
        status: PolicyStatus::Active,
        status_reason: None,
        scope,
        monitors: Monitors { tokens: true, cost: true, ..Monitors::default() },
        limits,
        alerts: AlertConfig { near_threshold: false, tiers: Vec::new(), notify: Vec::new() },
        actions: ActionConfig { on_near: Action::Continue, on_breach: Action::Stop, requires_ack: false },
        bind_at: BindAt::EachStep,
        failure_mode: FailureMode::FailClosed,
        precedence: 100,
    }
}

/// Builds, signs and verifies a snapshot of `policies`.
pub fn snapshot_envelope(
    policies: &[ScenarioPolicy],
) -> Result<(Vec<u8>, TrustedKeys), aos_core::SnapshotError> {
    let signer = SnapshotSigner::from_secret_bytes(&[11u8; 32])
        .map_err(|e| aos_core::SnapshotError::Encoding(e.to_string()))?;
    let mut trusted = TrustedKeys::new();
    trusted.insert(signer.verifying_key());
    let snapshot = PolicySnapshot::new(
        TENANT,
        1,
        NOW_MS,
        NOW_MS + 3_600_000,
        policies.iter().map(to_policy).collect(),
        vec![],
        vec![],
    )?;
    Ok((sign(&snapshot, &signer)?, trusted))
}

/// Options that accept the benchmark snapshot.
pub fn verify_options() -> VerifyOptions<'static> {
    VerifyOptions { tenant_id: TENANT, last_accepted_version: None, now_ms: NOW_MS }
}

impl AosEquivalent {
    /// Builds the verified snapshot once.
    pub fn new(policies: &[ScenarioPolicy]) -> Result<Self, aos_core::SnapshotError> {
        let (envelope, trusted) = snapshot_envelope(policies)?;
        let snapshot = verify(&envelope, &trusted, &verify_options())?;
        Ok(AosEquivalent { snapshot, envelope, trusted })
    }

    /// The signed envelope, for verification benchmarks.
    pub fn envelope(&self) -> &[u8] {
        &self.envelope
    }

    /// Verifies the envelope again (what an edge agent does on receipt).
    pub fn verify_again(&self) -> Result<VerifiedSnapshot, aos_core::SnapshotError> {
        verify(&self.envelope, &self.trusted, &verify_options())
    }

    /// Decides one request. Per call it builds the run scope, the step and
    /// the counters from the request — the same construction work the Cedar
    /// and Rego sides do.
    pub fn decide(&self, req: &ScenarioRequest) -> ScenarioOutcome {
        let scope = RunScope {
            tenant_id: TENANT.to_owned(),
            agent_id: Some(req.agent_id.clone()),
            ..RunScope::default()
        };
        let counters = RequestCounters(req);
        let step = StepInput { phase: StepPhase::Usage, ..StepInput::default() };
        let d = decide(
            &SnapshotBindings::single(&self.snapshot),
            &StepContext { now_ms: NOW_MS, scope: &scope, step: &step, counters: &counters },
        );
        let mut breaching: Vec<&str> =
            d.signals.iter().filter(|s| s.level == SignalLevel::Breach).map(|s| &*s.policy_id).collect();
        breaching.dedup();
        ScenarioOutcome {
            deny: d.outcome >= Action::Stop,
            winning_policy: d.winning_policy.map(|w| w.policy_id.to_string()),
            breaching: breaching.len(),
        }
    }
}

/// Counters read straight from the request: usage after the step, with the
/// step's own increment set to zero.
struct RequestCounters<'a>(&'a ScenarioRequest);

impl aos_core::counters::CounterSource for RequestCounters<'_> {
    fn counter(&self, key: &CounterKey) -> Option<u64> {
        match (key.metric, key.window) {
            (Metric::Tokens, CounterWindow::PerRun) => Some(self.0.run_tokens_after_step),
            (Metric::CostMicros, CounterWindow::PerRun) => Some(self.0.run_cost_micros_after_step),
            _ => None,
        }
    }
}
