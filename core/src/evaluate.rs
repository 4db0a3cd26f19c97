//! The evaluator: `decide(bindings, step) -> Decision`, the SPINE hot path.
//!
//! Pure and synchronous: no clock, no I/O, no locks. Given the same snapshots
//! and context it returns the same decision, and the order in which policies
//! were authored, stored or received never changes it (INV-005): policies
//! are visited in id order from the scope index, and the winner is the
//! maximum of a total order — restrictiveness (`KILL > STOP > PAUSE > WARN >
//! CONTINUE`), then precedence, then the lowest policy id.
//!
//! Per policy:
//! 1. every limit compares the counter plus this step's increment with its
//!    threshold and emits `NEAR` (highest tier reached) or `BREACH`; limits
//!    never choose outcomes (GAP-012);
//! 2. RAG, PII and hallucination monitors add their signals; hallucination is
//!    capped at `WARN` unless the policy opts in to blocking (INV-002);
//! 3. the policy's actions turn signals into an outcome;
//! 4. a missing input (an unavailable counter) yields the failure-mode
//!    outcome — `STOP` for `fail_closed`, `WARN` for `fail_open` (GAP-035);
//! 5. an active override records what would have happened and contributes
//!    `CONTINUE` (GAP-034).

mod context;
mod decision;
#[cfg(test)]
mod tests;

pub use context::{DataAccess, DataAccessKind, RunScope, StepContext, StepInput, StepPhase};
pub use decision::{
    AlertIntent, Decision, EvaluationFailure, OverrideApplied, PolicyOutcome, Signal, SignalKind,
    SignalLevel, WinningPolicy,
};

use std::cmp::Reverse;
use std::sync::Arc;

use crate::compile::{CompiledLimit, CompiledPolicy};
use crate::counters::Metric;
use crate::policy::{Action, BindAt, FailureMode, InspectionConstraints, LimitSignal};
use crate::snapshot::VerifiedSnapshot;

/// Which snapshot version each binding moment sees for a run (GAP-031).
#[derive(Debug, Clone, Copy)]
pub struct SnapshotBindings<'a> {
    /// The newest verified snapshot: what `EACH_STEP` policies see.
    pub current: &'a VerifiedSnapshot,
    /// The snapshot in force at run start (`RUN_START` policies). `None`
    /// while the run is being started: the current one is used.
    pub run_start: Option<&'a VerifiedSnapshot>,
    /// The snapshot in force at the run's first step (`FIRST_TOKEN`
    /// policies). `None` before the first step: the current one is used.
    pub first_token: Option<&'a VerifiedSnapshot>,
}

impl<'a> SnapshotBindings<'a> {
    /// Every binding moment sees `snapshot`.
    pub fn single(snapshot: &'a VerifiedSnapshot) -> Self {
        SnapshotBindings { current: snapshot, run_start: None, first_token: None }
    }

    fn for_moment(&self, bind_at: BindAt) -> &'a VerifiedSnapshot {
        match bind_at {
            BindAt::RunStart => self.run_start.unwrap_or(self.current),
            BindAt::FirstToken => self.first_token.unwrap_or(self.current),
            BindAt::EachStep => self.current,
        }
    }

    /// A policy id is evaluated once, from the earliest binding moment whose
    /// snapshot binds it at that moment.
    fn claimed_earlier(&self, bind_at: BindAt, snapshot: &VerifiedSnapshot, policy_id: &str) -> bool {
        BindAt::ALL[..bind_at.index()].iter().any(|earlier| {
            let other = self.for_moment(*earlier);
            !other.same_as(snapshot) && other.binds(policy_id, *earlier)
        })
    }
}

/// Decides one step. See the module docs for the rules.
pub fn decide(bindings: &SnapshotBindings<'_>, ctx: &StepContext<'_>) -> Decision {
    let mut acc = Accumulator::new(bindings.current.version());

    for bind_at in BindAt::ALL {
        let snapshot = bindings.for_moment(bind_at);
        if snapshot.tenant_id() != ctx.scope.tenant_id {
            // A snapshot of another tenant can never govern this run; refuse
            // the step rather than evaluate nothing (fail closed).
            acc.fail_whole(format!(
                "snapshot v{} is for tenant {:?}, the run belongs to {:?}",
                snapshot.version(),
                snapshot.tenant_id(),
                ctx.scope.tenant_id
            ));
            continue;
        }
        for pos in snapshot.candidates(bind_at, ctx.scope) {
            let policy = &snapshot.compiled()[pos];
            if bind_at != BindAt::RunStart && bindings.claimed_earlier(bind_at, snapshot, &policy.id) {
                continue;
            }
            evaluate_policy(pos, policy, snapshot, ctx, &mut acc);
        }
    }
    acc.finish()
}

/// Signals and outcome of one policy before overrides.
struct PolicyVerdict {
    outcome: Action,
    first_signal: usize,
    failure: Option<String>,
}

fn evaluate_policy<'s>(
    pos: usize,
    policy: &'s CompiledPolicy,
    snapshot: &'s VerifiedSnapshot,
    ctx: &StepContext<'_>,
    acc: &mut Accumulator<'s>,
) {
    acc.policies_evaluated += 1;
    acc.inspection = acc.inspection.intersect(policy.inspection);

    let mut verdict =
        PolicyVerdict { outcome: Action::Continue, first_signal: acc.signals.len(), failure: None };
    let mut breached = false;
    let mut near = false;
    let mut hallucination_breach = false;

    for limit in &policy.limits {
        match evaluate_limit(policy, limit, snapshot, ctx, acc) {
            LimitResult::Clear => {}
            LimitResult::Near => near = true,
            LimitResult::Breach => breached = true,
            LimitResult::MissingCounter => {
                verdict.failure.get_or_insert_with(|| format!("counter `{}` is unavailable", limit.counter));
            }
        }
    }

    // A plane list restricts every kind of access; a `RAG_ACCESS` limit with
    // `allowed: false` forbids retrieval only (GAP-009), not templated SQL.
    if let (Some(rule), Some(access)) = (&policy.rag, &ctx.step.data_access)
        && ((access.kind == DataAccessKind::Retrieval && !rule.allowed)
            || (!rule.planes.is_empty() && rule.planes.binary_search(&access.plane_id).is_err()))
    {
        breached = true;
        acc.push_signal(policy, snapshot, SignalKind::RagAccess, None, SignalLevel::Breach, 1, 0, true);
        acc.push_alert(policy, SignalKind::RagAccess, SignalLevel::Breach, 1, 0);
    }

    if let Some(kinds) = policy.pii
        && ctx.step.pii.intersects(kinds)
    {
        breached = true;
        let found =
            u64::try_from(ctx.step.pii.iter().filter(|k| kinds.contains(*k)).count()).unwrap_or(u64::MAX);
        acc.push_signal(policy, snapshot, SignalKind::Pii, None, SignalLevel::Breach, found, 0, true);
        acc.push_alert(policy, SignalKind::Pii, SignalLevel::Breach, found, 0);
    }

    if let (Some(rule), Some(score)) = (policy.hallucination, ctx.step.hallucination_score) {
        if !score.is_finite() || !(0.0..=1.0).contains(&score) {
            verdict
                .failure
                .get_or_insert_with(|| format!("hallucination score {score} is outside 0.0..=1.0"));
        } else {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "score checked to be in 0..=1"
            )]
            let permille = (score * 1000.0).round() as u64;
            if permille >= rule.threshold_permille {
                let level = SignalLevel::Breach;
                acc.push_signal(
                    policy,
                    snapshot,
                    SignalKind::Hallucination,
                    None,
                    level,
                    permille,
                    rule.threshold_permille,
                    rule.blocking,
                );
                acc.push_alert(policy, SignalKind::Hallucination, level, permille, rule.threshold_permille);
                if rule.blocking {
                    breached = true;
                } else {
                    hallucination_breach = true;
                }
            }
        }
    }

    if breached {
        verdict.outcome = policy.actions.on_breach;
    } else if near {
        verdict.outcome = policy.actions.on_near;
    }
    if hallucination_breach {
        // INV-002: a non-blocking hallucination informs, it never blocks.
        verdict.outcome = verdict.outcome.max(policy.actions.on_breach.min(Action::Warn));
    }
    if let Some(reason) = &verdict.failure {
        let outcome = policy.failure_mode.outcome();
        verdict.outcome = verdict.outcome.max(outcome);
        acc.failures.push(EvaluationFailure {
            policy_id: Arc::clone(&policy.id),
            failure_mode: policy.failure_mode,
            outcome,
            reason: reason.clone(),
        });
    }
    acc.settle(pos, policy, snapshot, ctx, verdict);
}

enum LimitResult {
    Clear,
    Near,
    Breach,
    MissingCounter,
}

fn evaluate_limit(
    policy: &CompiledPolicy,
    limit: &CompiledLimit,
    snapshot: &VerifiedSnapshot,
    ctx: &StepContext<'_>,
    acc: &mut Accumulator,
) -> LimitResult {
    let Some(before) = ctx.counters.counter(&limit.counter) else {
        return LimitResult::MissingCounter;
    };
    let step = ctx.step;
    let increment = match limit.counter.metric {
        Metric::Tokens => step.tokens.unwrap_or(0),
        Metric::CostMicros => step.cost.map_or(0, |c| c.0),
        Metric::Requests => u64::from(step.phase == StepPhase::PreStep),
        Metric::DbQueries => {
            u64::from(step.data_access.as_ref().is_some_and(|a| a.kind == DataAccessKind::DatabaseQuery))
        }
    };
    let after = before.saturating_add(increment);
    let (before, after) = match (limit.signal, limit.counter.window) {
        (LimitSignal::BurnRateUsdPerHour, crate::counters::CounterWindow::Rolling { seconds }) => {
            (per_hour(before, seconds), per_hour(after, seconds))
        }
        _ => (before, after),
    };
    let kind = signal_kind(limit.signal);
    let threshold = limit.threshold;
    if after > threshold {
        acc.push_signal(policy, snapshot, kind, Some(limit), SignalLevel::Breach, after, threshold, true);
        if before <= threshold {
            acc.push_alert(policy, kind, SignalLevel::Breach, after, threshold);
        }
        return LimitResult::Breach;
    }
    let Some(tier) = highest_tier(&policy.tiers, after, threshold) else {
        return LimitResult::Clear;
    };
    acc.push_signal(policy, snapshot, kind, Some(limit), SignalLevel::Near { tier }, after, threshold, true);
    if highest_tier(&policy.tiers, before, threshold) != Some(tier) {
        acc.push_alert(policy, kind, SignalLevel::Near { tier }, after, threshold);
    }
    LimitResult::Near
}

/// Highest tier `t` with `value >= threshold * t / 100`, for a non-zero value.
fn highest_tier(tiers: &[u8], value: u64, threshold: u64) -> Option<u8> {
    if value == 0 {
        return None;
    }
    let value = u128::from(value) * 100;
    tiers.iter().rev().copied().find(|tier| value >= u128::from(threshold) * u128::from(*tier))
}

fn per_hour(total: u64, window_seconds: u64) -> u64 {
    let scaled = u128::from(total) * 3600 / u128::from(window_seconds.max(1));
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

fn signal_kind(signal: LimitSignal) -> SignalKind {
    match signal {
        LimitSignal::Tokens => SignalKind::Tokens,
        LimitSignal::CostUsd => SignalKind::CostUsd,
        LimitSignal::BurnRateUsdPerHour => SignalKind::BurnRateUsdPerHour,
        LimitSignal::Requests => SignalKind::Requests,
        LimitSignal::DbQueries => SignalKind::DbQueries,
        LimitSignal::RagAccess => SignalKind::RagAccess,
    }
}

/// The policy currently credited with the outcome.
struct Winner<'s> {
    outcome: Action,
    precedence: u32,
    policy: &'s CompiledPolicy,
    pos: usize,
    snapshot: &'s VerifiedSnapshot,
}

/// Collects signals and keeps the running winner.
struct Accumulator<'s> {
    outcome: Action,
    winner: Option<Winner<'s>>,
    signals: Vec<Signal>,
    alerts: Vec<AlertIntent>,
    policy_outcomes: Vec<PolicyOutcome>,
    overrides_applied: Vec<OverrideApplied>,
    failures: Vec<EvaluationFailure>,
    inspection: InspectionConstraints,
    snapshot_version: u64,
    policies_evaluated: u32,
}

impl<'s> Accumulator<'s> {
    fn new(snapshot_version: u64) -> Self {
        Accumulator {
            outcome: Action::Continue,
            winner: None,
            signals: Vec::new(),
            alerts: Vec::new(),
            policy_outcomes: Vec::new(),
            overrides_applied: Vec::new(),
            failures: Vec::new(),
            inspection: InspectionConstraints::ALLOW_ALL,
            snapshot_version,
            policies_evaluated: 0,
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per signal source; a struct would only rename them"
    )]
    fn push_signal(
        &mut self,
        policy: &CompiledPolicy,
        snapshot: &VerifiedSnapshot,
        kind: SignalKind,
        limit: Option<&CompiledLimit>,
        level: SignalLevel,
        value: u64,
        threshold: u64,
        blocking: bool,
    ) {
        self.signals.push(Signal {
            policy_id: Arc::clone(&policy.id),
            policy_version: policy.version,
            snapshot_version: snapshot.version(),
            kind,
            limit_index: limit.map(|l| l.index),
            window: limit.map(|l| l.counter.window),
            level,
            value,
            threshold,
            blocking,
            overridden: false,
        });
    }

    fn push_alert(
        &mut self,
        policy: &CompiledPolicy,
        kind: SignalKind,
        level: SignalLevel,
        value: u64,
        threshold: u64,
    ) {
        if policy.notify.is_empty() {
            return;
        }
        self.alerts.push(AlertIntent {
            policy_id: Arc::clone(&policy.id),
            kind,
            level,
            value,
            threshold,
            channels: policy.notify.clone(),
        });
    }

    fn fail_whole(&mut self, reason: String) {
        // Not attributable to a policy, so it is always fail-closed: there is
        // no policy whose fail_open could have been chosen explicitly.
        self.outcome = self.outcome.max(Action::Stop);
        self.failures.push(EvaluationFailure {
            policy_id: Arc::from(""),
            failure_mode: FailureMode::FailClosed,
            outcome: Action::Stop,
            reason,
        });
    }

    fn settle(
        &mut self,
        pos: usize,
        policy: &'s CompiledPolicy,
        snapshot: &'s VerifiedSnapshot,
        ctx: &StepContext<'_>,
        verdict: PolicyVerdict,
    ) {
        let mut outcome = verdict.outcome;
        let mut overridden = false;
        if outcome > Action::Continue
            && let Some(o) = snapshot.active_override(&policy.id, ctx.scope, ctx.now_ms)
        {
            for signal in &mut self.signals[verdict.first_signal..] {
                signal.overridden = true;
            }
            self.overrides_applied.push(OverrideApplied {
                override_id: o.override_id.clone(),
                policy_id: Arc::clone(&policy.id),
                suppressed_outcome: outcome,
                granted_by: o.granted_by.actor_id.clone(),
                reason: o.reason.clone(),
                expires_at_ms: o.expires_at_ms,
            });
            overridden = true;
            outcome = Action::Continue;
        }
        if outcome == Action::Continue && !overridden {
            return;
        }
        self.policy_outcomes.push(PolicyOutcome {
            policy_id: Arc::clone(&policy.id),
            policy_version: policy.version,
            snapshot_version: snapshot.version(),
            outcome,
            overridden,
        });
        if outcome == Action::Continue {
            return;
        }
        self.outcome = self.outcome.max(outcome);
        let better = self.winner.as_ref().is_none_or(|w| {
            (outcome, policy.precedence, Reverse(&*policy.id))
                > (w.outcome, w.precedence, Reverse(&*w.policy.id))
        });
        if better {
            self.winner = Some(Winner { outcome, precedence: policy.precedence, policy, pos, snapshot });
        }
    }

    fn finish(mut self) -> Decision {
        // A whole-decision failure (tenant mismatch) can raise the outcome
        // above every policy's; then no policy is credited with it.
        let winner = self.winner.take().filter(|w| w.outcome == self.outcome);
        let requires_ack =
            self.outcome >= Action::Pause && winner.as_ref().is_some_and(|w| w.policy.actions.requires_ack);
        let winning_policy = winner.map(|w| WinningPolicy {
            policy_id: Arc::clone(&w.policy.id),
            policy_version: w.policy.version,
            snapshot_version: w.snapshot.version(),
            threshold_hash: hex::encode(w.snapshot.threshold_hash(w.pos)),
        });
        self.signals.sort_by(|a, b| {
            (&a.policy_id, a.limit_index, a.kind).cmp(&(&b.policy_id, b.limit_index, b.kind))
        });
        self.alerts.sort_by(|a, b| (&a.policy_id, a.kind).cmp(&(&b.policy_id, b.kind)));
        self.policy_outcomes.sort_by(|a, b| a.policy_id.cmp(&b.policy_id));
        let inspection =
            if self.policies_evaluated == 0 { InspectionConstraints::default() } else { self.inspection };
        Decision {
            outcome: self.outcome,
            winning_policy,
            requires_ack,
            signals: self.signals,
            alerts: self.alerts,
            policy_outcomes: self.policy_outcomes,
            overrides_applied: self.overrides_applied,
            failures: self.failures,
            inspection,
            snapshot_version: self.snapshot_version,
            policies_evaluated: self.policies_evaluated,
        }
    }
}
