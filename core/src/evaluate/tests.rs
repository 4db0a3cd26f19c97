//! Evaluator rules, one test per rule, good and bad paths.

use super::*;
use crate::counters::{CounterWindow, Metric};
use crate::money::MicroUsd;
use crate::pii::{PiiKind, PiiKinds};
use crate::policy::{ActorRole, NotifyChannel, OverrideGrantor, Period, PolicyOverride, Scope, ScopeType};
use crate::test_support::{NOW_MS, TENANT, counters_for, snapshot, snapshot_with};

const RUN_TOKENS_1000: &str = "  - id: pol-tokens
    name: tokens
    scope: { type: ALL_RUNS }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: 1000, window: PER_RUN }]
    alerts: { tiers: [50, 80, 90], notify: [UI, WEBHOOK] }
";

fn scope() -> RunScope {
    RunScope {
        tenant_id: TENANT.into(),
        project_id: Some("proj-1".into()),
        agent_id: Some("agent-1".into()),
        api_key_id: Some("key-1".into()),
        human_actor_id: Some("actor-1".into()),
        session_id: Some("sess-1".into()),
    }
}

fn pre_step(tokens: u64) -> StepInput {
    StepInput { phase: StepPhase::PreStep, tokens: Some(tokens), ..StepInput::default() }
}

fn run(snap: &VerifiedSnapshot, step: &StepInput, entries: &[(Metric, CounterWindow, u64)]) -> Decision {
    let counters = counters_for(snap, entries);
    let scope = scope();
    decide(
        &SnapshotBindings::single(snap),
        &StepContext { now_ms: NOW_MS, scope: &scope, step, counters: &counters },
    )
}

fn tokens_so_far(n: u64) -> [(Metric, CounterWindow, u64); 1] {
    [(Metric::Tokens, CounterWindow::PerRun, n)]
}

#[test]
fn below_every_tier_continues_silently() {
    let snap = snapshot(1, RUN_TOKENS_1000);
    let d = run(&snap, &pre_step(100), &tokens_so_far(300));
    assert_eq!(d.outcome, Action::Continue);
    assert!(d.signals.is_empty() && d.alerts.is_empty() && d.reasons().is_empty());
    assert_eq!(d.winning_policy, None);
    assert_eq!(d.policies_evaluated, 1);
    assert_eq!(d.snapshot_version, 1);
}

#[test]
fn near_reports_highest_tier_and_alerts_only_on_crossing() {
    let snap = snapshot(1, RUN_TOKENS_1000);
    // 700 + 150 = 850: crosses 80 % (was at 70 %, i.e. tier 50).
    let d = run(&snap, &pre_step(150), &tokens_so_far(700));
    assert_eq!(d.outcome, Action::Warn, "default on_near is WARN");
    assert_eq!(d.signals.len(), 1);
    let s = &d.signals[0];
    assert_eq!(
        (s.kind, s.level, s.value, s.threshold),
        (SignalKind::Tokens, SignalLevel::Near { tier: 80 }, 850, 1000)
    );
    assert_eq!(s.window, Some(CounterWindow::PerRun));
    assert_eq!(d.alerts.len(), 1);
    assert_eq!(d.alerts[0].channels, vec![NotifyChannel::Ui, NotifyChannel::Webhook]);

    // 820 + 10 = 830: still tier 80, no new alert, still a signal.
    let d = run(&snap, &pre_step(10), &tokens_so_far(820));
    assert_eq!(d.signals[0].level, SignalLevel::Near { tier: 80 });
    assert!(d.alerts.is_empty(), "tier 80 was already reached before this step");
}

#[test]
fn breach_stops_with_inflection_metadata() {
    let snap = snapshot(3, RUN_TOKENS_1000);
    let d = run(&snap, &pre_step(200), &tokens_so_far(900));
    assert_eq!(d.outcome, Action::Stop);
    let w = d.winning_policy.as_ref().unwrap();
    assert_eq!((&*w.policy_id, w.policy_version, w.snapshot_version), ("pol-tokens", 1, 3));
    assert_eq!(w.threshold_hash.len(), 64);
    let s = &d.signals[0];
    assert_eq!((s.level, s.value, s.threshold, s.limit_index), (SignalLevel::Breach, 1100, 1000, Some(0)));
    assert_eq!(d.alerts[0].level, SignalLevel::Breach);
    assert_eq!(
        d.reasons(),
        vec!["STOP by policy pol-tokens v1: TOKENS per run breach, value 1100 vs limit 1000"]
    );
    assert!(!d.outcome.allows_next_step());
}

#[test]
fn exactly_at_the_limit_is_not_a_breach() {
    let snap = snapshot(1, RUN_TOKENS_1000);
    assert_eq!(run(&snap, &pre_step(100), &tokens_so_far(900)).outcome, Action::Warn);
    assert_eq!(run(&snap, &pre_step(101), &tokens_so_far(900)).outcome, Action::Stop);
}

#[test]
fn breach_alert_is_not_repeated_once_over() {
    let snap = snapshot(1, RUN_TOKENS_1000);
    let d = run(&snap, &pre_step(5), &tokens_so_far(1200));
    assert_eq!(d.outcome, Action::Stop);
    assert!(d.alerts.is_empty());
}

const CONFLICT: &str = "  - id: pol-b-pause
    name: pause
    scope: { type: ALL_RUNS }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: 10, window: PER_RUN }]
    actions: { on_breach: PAUSE, requires_ack: true }
  - id: pol-c-stop
    name: stop
    scope: { type: ALL_RUNS }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: 10, window: PER_RUN }]
    actions: { on_breach: STOP }
  - id: pol-a-warn
    name: warn
    scope: { type: ALL_RUNS }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: 10, window: PER_RUN }]
    actions: { on_breach: WARN }
  - id: pol-d-stop
    name: stop too
    scope: { type: ALL_RUNS }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: 10, window: PER_RUN }]
    actions: { on_breach: STOP }
";

#[test]
fn inv_005_most_restrictive_wins_and_ties_go_to_lowest_id() {
    let snap = snapshot(1, CONFLICT);
    let d = run(&snap, &pre_step(50), &tokens_so_far(0));
    assert_eq!(d.outcome, Action::Stop, "GAP-068: STOP beats PAUSE and WARN");
    assert_eq!(
        &*d.winning_policy.as_ref().unwrap().policy_id,
        "pol-c-stop",
        "tie between two STOPs goes to the lowest id"
    );
    assert!(!d.requires_ack, "the PAUSE policy did not win");
    assert_eq!(
        d.signals.iter().map(|s| &*s.policy_id).collect::<Vec<_>>(),
        ["pol-a-warn", "pol-b-pause", "pol-c-stop", "pol-d-stop"]
    );
    assert_eq!(d.reasons().len(), 4);
}

#[test]
fn kill_beats_stop_and_pause_carries_requires_ack() {
    let kill = CONFLICT.replacen("on_breach: STOP }", "on_breach: KILL }", 2).replacen(
        "on_breach: KILL }",
        "on_breach: STOP }",
        1,
    );
    let d = run(&snapshot(1, &kill), &pre_step(50), &tokens_so_far(0));
    assert_eq!((d.outcome, &*d.winning_policy.as_ref().unwrap().policy_id), (Action::Kill, "pol-d-stop"));

    let pause_only = CONFLICT.replace("on_breach: STOP", "on_breach: WARN");
    let d = run(&snapshot(1, &pause_only), &pre_step(50), &tokens_so_far(0));
    assert_eq!(d.outcome, Action::Pause);
    assert!(d.requires_ack, "GAP-015");
}

#[test]
fn precedence_credits_the_winner_without_changing_the_outcome() {
    let text = CONFLICT.replace(
        "    actions: { on_breach: STOP }\n  - id: pol-a-warn",
        "    actions: { on_breach: STOP }\n    precedence: 500\n  - id: pol-a-warn",
    );
    let d = run(&snapshot(1, &text), &pre_step(50), &tokens_so_far(0));
    assert_eq!(d.outcome, Action::Stop);
    assert_eq!(&*d.winning_policy.as_ref().unwrap().policy_id, "pol-c-stop");
    let text = CONFLICT.replace("name: stop too\n", "name: stop too\n    precedence: 500\n");
    let d = run(&snapshot(1, &text), &pre_step(50), &tokens_so_far(0));
    assert_eq!(&*d.winning_policy.as_ref().unwrap().policy_id, "pol-d-stop");
    let text = CONFLICT.replace("name: warn\n", "name: warn\n    precedence: 9000\n");
    let d = run(&snapshot(1, &text), &pre_step(50), &tokens_so_far(0));
    assert_eq!(
        (d.outcome, &*d.winning_policy.as_ref().unwrap().policy_id),
        (Action::Stop, "pol-c-stop"),
        "precedence never lets a WARN beat a STOP"
    );
}

#[test]
fn scope_selects_only_matching_runs() {
    let text = "  - id: pol-agent
    name: a
    scope: { type: AGENT, ids: [agent-1, agent-9] }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: 1, window: PER_RUN }]
  - id: pol-other-agent
    name: b
    scope: { type: AGENT, ids: [agent-2] }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: 1, window: PER_RUN }]
  - id: pol-key
    name: c
    scope: { type: API_KEY, ids: [key-1] }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: 1, window: PER_RUN }]
  - id: pol-actor
    name: d
    scope: { type: HUMAN_ACTOR, ids: [actor-2] }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: 1, window: PER_RUN }]
  - id: pol-project
    name: e
    scope: { type: PROJECT, ids: [proj-1] }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: 1, window: PER_RUN }]
  - id: pol-tenant
    name: f
    scope: { type: TENANT, ids: [tenant-a] }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: 1, window: PER_RUN }]
";
    let d = run(&snapshot(1, text), &pre_step(5), &tokens_so_far(0));
    let fired: Vec<&str> = d.signals.iter().map(|s| &*s.policy_id).collect();
    assert_eq!(fired, ["pol-agent", "pol-key", "pol-project", "pol-tenant"]);
    assert_eq!(d.policies_evaluated, 4);
}

#[test]
fn run_without_optional_ids_matches_only_broad_scopes() {
    let snap = snapshot(
        1,
        "  - id: pol-agent
    name: a
    scope: { type: AGENT, ids: [agent-1] }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: 1, window: PER_RUN }]
",
    );
    let scope = RunScope { tenant_id: TENANT.into(), ..RunScope::default() };
    let counters = counters_for(&snap, &[]);
    let step = pre_step(5);
    let d = decide(
        &SnapshotBindings::single(&snap),
        &StepContext { now_ms: NOW_MS, scope: &scope, step: &step, counters: &counters },
    );
    assert_eq!((d.outcome, d.policies_evaluated), (Action::Continue, 0));
}

#[test]
fn gap_035_missing_counter_fails_closed_by_default() {
    let snap = snapshot(1, RUN_TOKENS_1000);
    let scope = scope();
    let step = pre_step(1);
    let empty = std::collections::BTreeMap::new();
    let d = decide(
        &SnapshotBindings::single(&snap),
        &StepContext { now_ms: NOW_MS, scope: &scope, step: &step, counters: &empty },
    );
    assert_eq!(d.outcome, Action::Stop);
    assert_eq!(d.failures.len(), 1);
    assert_eq!(d.failures[0].failure_mode, crate::policy::FailureMode::FailClosed);
    assert!(d.failures[0].reason.contains("`tokens per run` is unavailable"), "{:?}", d.failures);
    assert!(d.reasons()[0].contains("failure mode fail_closed"), "{:?}", d.reasons());
}

#[test]
fn gap_035_fail_open_must_be_explicit_and_yields_warn() {
    let snap = snapshot(1, &format!("{RUN_TOKENS_1000}    failure_mode: fail_open\n"));
    let scope = scope();
    let step = pre_step(1);
    let empty = std::collections::BTreeMap::new();
    let d = decide(
        &SnapshotBindings::single(&snap),
        &StepContext { now_ms: NOW_MS, scope: &scope, step: &step, counters: &empty },
    );
    assert_eq!(d.outcome, Action::Warn);
    assert_eq!(d.failures[0].outcome, Action::Warn);
}

#[test]
fn snapshot_of_another_tenant_stops_the_step() {
    let snap = snapshot(1, RUN_TOKENS_1000);
    let scope = RunScope { tenant_id: "tenant-b".into(), ..scope() };
    let counters = counters_for(&snap, &[]);
    let step = pre_step(1);
    let d = decide(
        &SnapshotBindings::single(&snap),
        &StepContext { now_ms: NOW_MS, scope: &scope, step: &step, counters: &counters },
    );
    assert_eq!(d.outcome, Action::Stop);
    assert_eq!(d.winning_policy, None);
    assert!(d.failures[0].reason.contains("tenant-b"));
}

fn grant(policy_id: &str, scope: Scope, starts: u64, expires: u64) -> PolicyOverride {
    PolicyOverride {
        override_id: format!("ovr-{policy_id}"),
        policy_id: policy_id.into(),
        scope,
        granted_by: OverrideGrantor { actor_id: "alice".into(), role: ActorRole::Sre },
        reason: "quarter-end batch approved in CHG-42".into(),
        starts_at_ms: starts,
        expires_at_ms: expires,
    }
}

#[test]
fn gap_034_active_override_suppresses_enforcement_and_says_so() {
    let snap = snapshot_with(
        1,
        RUN_TOKENS_1000,
        vec![grant("pol-tokens", Scope::all_runs(), NOW_MS - 10, NOW_MS + 10)],
    );
    let d = run(&snap, &pre_step(500), &tokens_so_far(900));
    assert_eq!(d.outcome, Action::Continue);
    assert_eq!(d.overrides_applied.len(), 1);
    assert_eq!(d.overrides_applied[0].suppressed_outcome, Action::Stop);
    assert_eq!(d.overrides_applied[0].granted_by, "alice");
    assert!(d.signals.iter().all(|s| s.overridden && s.level == SignalLevel::Breach));
    assert!(d.reasons()[0].contains("overridden by ovr-pol-tokens"), "{:?}", d.reasons());
}

#[test]
fn gap_034_expired_or_out_of_scope_override_does_not_apply() {
    let expired =
        snapshot_with(1, RUN_TOKENS_1000, vec![grant("pol-tokens", Scope::all_runs(), NOW_MS - 100, NOW_MS)]);
    assert_eq!(run(&expired, &pre_step(500), &tokens_so_far(900)).outcome, Action::Stop);
    let future = snapshot_with(
        1,
        RUN_TOKENS_1000,
        vec![grant("pol-tokens", Scope::all_runs(), NOW_MS + 1, NOW_MS + 100)],
    );
    assert_eq!(run(&future, &pre_step(500), &tokens_so_far(900)).outcome, Action::Stop);
    let other_agent = Scope { scope_type: ScopeType::Agent, ids: vec!["agent-2".into()] };
    let scoped =
        snapshot_with(1, RUN_TOKENS_1000, vec![grant("pol-tokens", other_agent, NOW_MS - 1, NOW_MS + 1)]);
    let d = run(&scoped, &pre_step(500), &tokens_so_far(900));
    assert_eq!(d.outcome, Action::Stop);
    assert!(d.overrides_applied.is_empty());
}

const HALLUCINATION: &str = "  - id: pol-hallu
    name: h
    scope: { type: ALL_RUNS }
    monitors: { hallucination: { enabled: true, threshold: 0.8 } }
    actions: { on_breach: KILL }
";

fn scored(score: f64) -> StepInput {
    StepInput { phase: StepPhase::Usage, hallucination_score: Some(score), ..StepInput::default() }
}

#[test]
fn inv_002_hallucination_never_blocks_unless_opted_in() {
    let snap = snapshot(1, HALLUCINATION);
    let d = run(&snap, &scored(0.95), &[]);
    assert_eq!(d.outcome, Action::Warn, "on_breach KILL is capped at WARN without blocking: true");
    assert_eq!(d.signals[0].kind, SignalKind::Hallucination);
    assert!(!d.signals[0].blocking);
    assert_eq!((d.signals[0].value, d.signals[0].threshold), (950, 800));
    assert_eq!(run(&snap, &scored(0.5), &[]).outcome, Action::Continue);

    let blocking =
        snapshot(1, &HALLUCINATION.replace("threshold: 0.8 }", "threshold: 0.8, blocking: true }"));
    let d = run(&blocking, &scored(0.95), &[]);
    assert_eq!(d.outcome, Action::Kill);
    assert!(d.signals[0].blocking);
}

#[test]
fn out_of_range_hallucination_score_is_a_failed_input() {
    let snap = snapshot(1, HALLUCINATION);
    let d = run(&snap, &scored(f64::NAN), &[]);
    assert_eq!(d.outcome, Action::Stop, "fail_closed default");
    assert!(d.failures[0].reason.contains("hallucination score"));
}

#[test]
fn pii_of_a_monitored_kind_breaches() {
    let snap = snapshot(
        1,
        "  - id: pol-pii
    name: p
    scope: { type: ALL_RUNS }
    monitors: { pii: { enabled: true, kinds: [CREDIT_CARD, US_SSN] } }
",
    );
    let mut step = StepInput { phase: StepPhase::PreStep, ..StepInput::default() };
    step.pii = [PiiKind::Email].into_iter().collect();
    assert_eq!(run(&snap, &step, &[]).outcome, Action::Continue, "EMAIL is not monitored by this policy");
    step.pii = [PiiKind::Email, PiiKind::CreditCard, PiiKind::UsSsn].into_iter().collect::<PiiKinds>();
    let d = run(&snap, &step, &[]);
    assert_eq!(d.outcome, Action::Stop);
    assert_eq!((d.signals[0].kind, d.signals[0].value), (SignalKind::Pii, 2));
}

const RAG: &str = "  - id: pol-rag
    name: r
    scope: { type: ALL_RUNS }
    monitors:
      rag_access: { enabled: true, allowed_planes: [kp-public] }
      db_queries: true
    limits:
      - { signal: RAG_ACCESS, allowed: true }
      - { signal: DB_QUERIES, max: 2, window: TEMPORAL, window_seconds: 3600 }
";

fn access(plane: &str, kind: DataAccessKind) -> StepInput {
    StepInput {
        phase: StepPhase::DataAccess,
        data_access: Some(DataAccess { plane_id: plane.into(), kind }),
        ..StepInput::default()
    }
}

#[test]
fn rag_access_is_limited_to_allowed_planes() {
    let snap = snapshot(1, RAG);
    assert_eq!(run(&snap, &access("kp-public", DataAccessKind::Retrieval), &[]).outcome, Action::Continue);
    let d = run(&snap, &access("kp-hr", DataAccessKind::Retrieval), &[]);
    assert_eq!(d.outcome, Action::Stop);
    assert_eq!(d.signals[0].kind, SignalKind::RagAccess);

    let forbidden = snapshot(1, &RAG.replace("allowed: true", "allowed: false"));
    assert_eq!(
        run(&forbidden, &access("kp-public", DataAccessKind::Retrieval), &[]).outcome,
        Action::Stop,
        "GAP-009"
    );
}

#[test]
fn db_queries_count_towards_their_limit() {
    let snap = snapshot(1, RAG);
    let window = CounterWindow::Rolling { seconds: 3600 };
    let q = access("kp-public", DataAccessKind::DatabaseQuery);
    assert_eq!(run(&snap, &q, &[(Metric::DbQueries, window, 0)]).outcome, Action::Continue);
    let d = run(&snap, &q, &[(Metric::DbQueries, window, 2)]);
    assert_eq!((d.outcome, d.signals[0].kind, d.signals[0].value), (Action::Stop, SignalKind::DbQueries, 3));
    // Retrieval does not count as a query.
    let d = run(&snap, &access("kp-public", DataAccessKind::Retrieval), &[(Metric::DbQueries, window, 2)]);
    assert_eq!((d.outcome, d.signals[0].value), (Action::Warn, 2), "at the limit (near), not over it");
}

#[test]
fn burn_rate_is_scaled_to_an_hour() {
    let snap = snapshot(
        1,
        "  - id: pol-burn
    name: b
    scope: { type: ALL_RUNS }
    monitors: { burn_rate: true }
    limits: [{ signal: BURN_RATE_USD_PER_HOUR, max: 10, window: TEMPORAL, window_seconds: 600 }]
",
    );
    let window = CounterWindow::Rolling { seconds: 600 };
    // $1.50 in 10 minutes = $9/h: under. +$0.20 = $10.20/h: over.
    let step = StepInput { phase: StepPhase::Usage, cost: Some(MicroUsd(200_000)), ..StepInput::default() };
    let d = run(&snap, &step, &[(Metric::CostMicros, window, 1_500_000)]);
    assert_eq!(d.outcome, Action::Stop);
    assert_eq!((d.signals[0].value, d.signals[0].threshold), (10_200_000, 10_000_000));
}

#[test]
fn requests_count_only_pre_steps() {
    let snap = snapshot(
        1,
        "  - id: pol-rate
    name: r
    scope: { type: ALL_RUNS }
    monitors: { requests: true }
    limits: [{ signal: REQUESTS, max: 5, window: TEMPORAL, period: HOURLY }]
",
    );
    let window = CounterWindow::Calendar(Period::Hourly);
    assert_eq!(run(&snap, &pre_step(0), &[(Metric::Requests, window, 5)]).outcome, Action::Stop);
    let usage = StepInput { phase: StepPhase::Usage, ..StepInput::default() };
    assert_eq!(
        run(&snap, &usage, &[(Metric::Requests, window, 5)]).outcome,
        Action::Warn,
        "at the limit, near tier 80"
    );
}

const BOUND: &str = "  - id: pol-run-start
    name: bound at start
    scope: { type: ALL_RUNS }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: LIMIT_A, window: PER_RUN }]
    bind_at: RUN_START
  - id: pol-each-step
    name: newest
    scope: { type: ALL_RUNS }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: LIMIT_B, window: PER_RUN }]
    bind_at: EACH_STEP
";

fn bound(a: u64, b: u64) -> String {
    BOUND.replace("LIMIT_A", &a.to_string()).replace("LIMIT_B", &b.to_string())
}

#[test]
fn gap_031_run_start_keeps_its_version_each_step_sees_the_newest() {
    let v1 = snapshot(1, &bound(1000, 1000));
    let v2 = snapshot(2, &bound(100, 100));
    let counters = counters_for(&v2, &tokens_so_far(0));
    let scope = scope();
    let step = pre_step(500);
    let bindings = SnapshotBindings { current: &v2, run_start: Some(&v1), first_token: Some(&v1) };
    let d =
        decide(&bindings, &StepContext { now_ms: NOW_MS, scope: &scope, step: &step, counters: &counters });
    let fired: Vec<(&str, u64, u64)> =
        d.signals.iter().map(|s| (&*s.policy_id, s.threshold, s.snapshot_version)).collect();
    assert_eq!(fired, [("pol-each-step", 100, 2)], "RUN_START policy still sees its v1 limit of 1000");
    assert_eq!(d.policies_evaluated, 2, "each policy evaluated exactly once");
    assert_eq!(d.snapshot_version, 2);
}

#[test]
fn gap_031_policy_added_later_does_not_bind_a_running_run() {
    let v1 = snapshot(1, RUN_TOKENS_1000);
    let v2 = snapshot(2, &format!("{RUN_TOKENS_1000}{}", &bound(10, 1_000_000)));
    let counters = counters_for(&v2, &tokens_so_far(0));
    let scope = scope();
    let step = pre_step(400);
    let bindings = SnapshotBindings { current: &v2, run_start: Some(&v1), first_token: Some(&v1) };
    let d =
        decide(&bindings, &StepContext { now_ms: NOW_MS, scope: &scope, step: &step, counters: &counters });
    assert_eq!(d.outcome, Action::Continue, "pol-run-start (limit 10) appeared after the run started");
    // A run that starts now binds it.
    let d = decide(
        &SnapshotBindings::single(&v2),
        &StepContext { now_ms: NOW_MS, scope: &scope, step: &step, counters: &counters },
    );
    assert_eq!(d.outcome, Action::Stop);
}

#[test]
fn gap_031_run_start_policy_removed_later_still_binds() {
    let v1 = snapshot(1, &bound(10, 1_000_000));
    let v2 = snapshot(2, RUN_TOKENS_1000);
    let counters = counters_for(&v1, &tokens_so_far(0));
    let mut counters = counters;
    counters.extend(counters_for(&v2, &tokens_so_far(0)));
    let scope = scope();
    let step = pre_step(500);
    let bindings = SnapshotBindings { current: &v2, run_start: Some(&v1), first_token: Some(&v2) };
    let d =
        decide(&bindings, &StepContext { now_ms: NOW_MS, scope: &scope, step: &step, counters: &counters });
    assert_eq!(d.outcome, Action::Stop);
    assert_eq!(d.winning_policy.unwrap().snapshot_version, 1);
}

#[test]
fn gap_031_first_token_binds_at_the_first_step() {
    let text = "  - id: pol-ft
    name: ft
    scope: { type: ALL_RUNS }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: LIMIT, window: PER_RUN }]
    bind_at: FIRST_TOKEN
";
    let v1 = snapshot(1, &text.replace("LIMIT", "100"));
    let v2 = snapshot(2, &text.replace("LIMIT", "1000"));
    let v3 = snapshot(3, &text.replace("LIMIT", "10"));
    let counters = counters_for(&v3, &tokens_so_far(0));
    let scope = scope();
    let step = pre_step(850);
    // Run started at v1, first step happened at v2, now v3 is current.
    let bindings = SnapshotBindings { current: &v3, run_start: Some(&v1), first_token: Some(&v2) };
    let d =
        decide(&bindings, &StepContext { now_ms: NOW_MS, scope: &scope, step: &step, counters: &counters });
    assert_eq!(d.outcome, Action::Warn, "v2's limit of 1000 applies: 850 is tier 80 → on_near WARN");
    assert_eq!(d.signals[0].snapshot_version, 2);
}

#[test]
fn gap_033_inspection_is_the_intersection_and_closed_without_policies() {
    let text = "  - id: pol-a
    name: a
    scope: { type: ALL_RUNS }
    monitors: { inspection: { allow_prompt_logging: true, allow_response_logging: true } }
  - id: pol-b
    name: b
    scope: { type: ALL_RUNS }
    monitors: { inspection: { allow_prompt_logging: true } }
";
    let d = run(&snapshot(1, text), &pre_step(1), &[]);
    assert!(d.inspection.allow_prompt_logging);
    assert!(!d.inspection.allow_response_logging);
    let none = snapshot(
        1,
        "  - id: pol-agent
    name: a
    scope: { type: AGENT, ids: [somebody-else] }
",
    );
    let d = run(&none, &pre_step(1), &[]);
    assert_eq!(d.inspection, crate::policy::InspectionConstraints::default());
}

#[test]
fn decide_is_deterministic() {
    let snap = snapshot(1, CONFLICT);
    let a = run(&snap, &pre_step(50), &tokens_so_far(0));
    let b = run(&snap, &pre_step(50), &tokens_so_far(0));
    assert_eq!(a, b);
}

#[test]
fn step_input_round_trips_through_json_with_pii_kinds() {
    let mut step = pre_step(10);
    step.pii = [PiiKind::Email, PiiKind::Secret].into_iter().collect();
    let json = serde_json::to_value(&step).unwrap();
    assert_eq!(json["pii"], serde_json::json!(["EMAIL", "SECRET"]));
    let back: StepInput = serde_json::from_value(json).unwrap();
    assert_eq!(back, step);
}
