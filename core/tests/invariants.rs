//! Property tests for the core's invariants.
//!
//! - INV-005 / GAP-068: the decision over a policy set equals the
//!   most-restrictive combination of each policy decided alone (ties to the
//!   lowest id, after precedence), so evaluation order cannot matter; and
//!   shuffling the authored order changes neither the signed bytes nor the
//!   decision.
//! - `decide` is deterministic.
//! - `verify(sign(s))` round-trips; any single flipped bit is refused;
//!   arbitrary bytes are refused without panicking.
//! - Document parsing never panics on arbitrary text.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on any unexpected error"
)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "small generated test values"
)]

use std::cmp::Reverse;
use std::collections::BTreeMap;

use aos_core::counters::{CounterKey, CounterWindow, Metric};
use aos_core::document::{DocumentFormat, parse_document};
use aos_core::evaluate::{RunScope, StepInput, StepPhase};
use aos_core::money::MicroUsd;
use aos_core::policy::{
    Action, ActionConfig, AlertConfig, BindAt, FailureMode, Limit, LimitSignal, LimitWindow, Monitors,
    NotifyChannel, Policy, PolicyStatus, Scope, ScopeType,
};
use aos_core::snapshot::{PolicySnapshot, SnapshotSigner, TrustedKeys, VerifyOptions};
use aos_core::{Decision, SnapshotBindings, StepContext, VerifiedSnapshot, decide, sign, verify};
use proptest::prelude::*;

const TENANT: &str = "tenant-p";
const NOW: u64 = 5_000;

fn signer() -> SnapshotSigner {
    SnapshotSigner::from_secret_bytes(&[42u8; 32]).unwrap()
}

fn trusted() -> TrustedKeys {
    let mut keys = TrustedKeys::new();
    keys.insert(signer().verifying_key());
    keys
}

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(Action::ALL.to_vec())
}

prop_compose! {
    fn policy(id: String)(
        agent in prop::option::of(0u8..4),
        max_tokens in 0u64..3000,
        max_cost_cents in prop::option::of(0u64..500),
        per_session in any::<bool>(),
        a in action(),
        b in action(),
        precedence in prop::sample::select(vec![100u32, 200]),
        fail_open in any::<bool>(),
        tiers in prop::sample::subsequence(vec![50u8, 70, 80, 90], 0..=4),
        requires_ack in any::<bool>(),
    ) -> Policy {
        let (on_near, on_breach) = if a <= b { (a, b) } else { (b, a) };
        let on_near = on_near.min(Action::Stop);
        let scope = match agent {
            None => Scope::all_runs(),
            Some(k) => Scope { scope_type: ScopeType::Agent, ids: vec![format!("agent-{k}")] },
        };
        let mut limits = vec![Limit {
            signal: LimitSignal::Tokens,
            max: Some(max_tokens as f64),
            window: Some(if per_session { LimitWindow::PerSession } else { LimitWindow::PerRun }),
            period: None,
            window_seconds: None,
            allowed: None,
        }];
        if let Some(cents) = max_cost_cents {
            limits.push(Limit {
                signal: LimitSignal::CostUsd,
                max: Some(cents as f64 / 100.0),
                window: Some(LimitWindow::PerRun),
                period: None,
                window_seconds: None,
                allowed: None,
            });
        }
        Policy {
            id: id.clone(),
            name: id.clone(),
            description: String::new(),
            version: 1,
            status: PolicyStatus::Active,
            status_reason: None,
            scope,
            monitors: Monitors { tokens: true, cost: true, ..Monitors::default() },
            limits,
            alerts: AlertConfig { near_threshold: !tiers.is_empty(), tiers, notify: vec![NotifyChannel::Ui] },
            actions: ActionConfig { on_near, on_breach, requires_ack },
            bind_at: BindAt::EachStep,
            failure_mode: if fail_open { FailureMode::FailOpen } else { FailureMode::FailClosed },
            precedence,
        }
    }
}

fn policies() -> impl Strategy<Value = Vec<Policy>> {
    prop::sample::subsequence((0..20).map(|i| format!("pol-{i:02}")).collect::<Vec<_>>(), 1..10)
        .prop_flat_map(|ids| ids.into_iter().map(policy).collect::<Vec<_>>())
}

#[derive(Debug, Clone)]
struct Step {
    agent: u8,
    tokens: u64,
    cost_micros: u64,
    run_tokens: Option<u64>,
    session_tokens: Option<u64>,
    run_cost: u64,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u8..4,
        0u64..1500,
        0u64..3_000_000,
        prop::option::weighted(0.9, 0u64..3000),
        prop::option::weighted(0.9, 0u64..3000),
        0u64..3_000_000,
    )
        .prop_map(|(agent, tokens, cost_micros, run_tokens, session_tokens, run_cost)| Step {
            agent,
            tokens,
            cost_micros,
            run_tokens,
            session_tokens,
            run_cost,
        })
}

fn build(policies: Vec<Policy>, version: u64) -> VerifiedSnapshot {
    let snap = PolicySnapshot::new(TENANT, version, 0, NOW * 2, policies, vec![], vec![]).unwrap();
    verify(
        &sign(&snap, &signer()).unwrap(),
        &trusted(),
        &VerifyOptions { tenant_id: TENANT, last_accepted_version: None, now_ms: NOW },
    )
    .unwrap()
}

fn decide_step(snapshot: &VerifiedSnapshot, s: &Step) -> Decision {
    let mut counters = BTreeMap::new();
    if let Some(v) = s.run_tokens {
        counters.insert(CounterKey { metric: Metric::Tokens, window: CounterWindow::PerRun }, v);
    }
    if let Some(v) = s.session_tokens {
        counters.insert(CounterKey { metric: Metric::Tokens, window: CounterWindow::PerSession }, v);
    }
    counters.insert(CounterKey { metric: Metric::CostMicros, window: CounterWindow::PerRun }, s.run_cost);
    let scope = RunScope {
        tenant_id: TENANT.into(),
        agent_id: Some(format!("agent-{}", s.agent)),
        ..RunScope::default()
    };
    let input = StepInput {
        phase: StepPhase::PreStep,
        tokens: Some(s.tokens),
        cost: Some(MicroUsd(s.cost_micros)),
        ..StepInput::default()
    };
    decide(
        &SnapshotBindings::single(snapshot),
        &StepContext { now_ms: NOW, scope: &scope, step: &input, counters: &counters },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn inv_005_shuffling_changes_nothing(policies in policies(), s in step(), seed in any::<u64>()) {
        let mut shuffled = policies.clone();
        // Deterministic Fisher–Yates from the seed: proptest shrinks it.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let a = build(policies, 1);
        let b = build(shuffled, 1);
        prop_assert_eq!(a.content_hash(), b.content_hash());
        prop_assert_eq!(decide_step(&a, &s), decide_step(&b, &s));
    }

    #[test]
    fn inv_005_outcome_is_the_most_restrictive_single_decision(policies in policies(), s in step()) {
        let all = decide_step(&build(policies.clone(), 1), &s);
        let singles: Vec<(Policy, Decision)> =
            policies.iter().map(|p| (p.clone(), decide_step(&build(vec![p.clone()], 1), &s))).collect();

        let expected_outcome = singles.iter().map(|(_, d)| d.outcome).max().unwrap_or(Action::Continue);
        prop_assert_eq!(all.outcome, expected_outcome);

        let expected_winner = singles
            .iter()
            .filter(|(_, d)| d.outcome > Action::Continue)
            .max_by_key(|(p, d)| (d.outcome, p.precedence, Reverse(p.id.clone())))
            .map(|(p, _)| p.id.clone());
        prop_assert_eq!(all.winning_policy.as_ref().map(|w| w.policy_id.to_string()), expected_winner);

        let mut signals: Vec<_> = singles.iter().flat_map(|(_, d)| d.signals.clone()).collect();
        signals.sort_by(|a, b| (&a.policy_id, a.limit_index, a.kind).cmp(&(&b.policy_id, b.limit_index, b.kind)));
        prop_assert_eq!(&all.signals, &signals);
        let evaluated: u32 = singles.iter().map(|(_, d)| d.policies_evaluated).sum();
        prop_assert_eq!(all.policies_evaluated, evaluated);
    }

    #[test]
    fn decide_is_deterministic(policies in policies(), s in step()) {
        let snapshot = build(policies, 1);
        prop_assert_eq!(decide_step(&snapshot, &s), decide_step(&snapshot, &s));
    }

    #[test]
    fn verify_sign_round_trips_and_rejects_any_bit_flip(policies in policies(), version in 1u64..1000, bit in any::<prop::sample::Index>()) {
        let snap = PolicySnapshot::new(TENANT, version, 0, NOW * 2, policies, vec![], vec![]).unwrap();
        let bytes = sign(&snap, &signer()).unwrap();
        let options = VerifyOptions { tenant_id: TENANT, last_accepted_version: Some(version - 1), now_ms: NOW };
        let verified = verify(&bytes, &trusted(), &options).unwrap();
        prop_assert_eq!(verified.snapshot(), &snap);

        let bit = bit.index(bytes.len() * 8);
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(verify(&flipped, &trusted(), &options).is_err(), "flipped bit {} accepted", bit);
    }

    #[test]
    fn arbitrary_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..512), with_magic in any::<bool>()) {
        let input = if with_magic { [aos_core::snapshot::ENVELOPE_MAGIC.as_slice(), &bytes].concat() } else { bytes };
        let options = VerifyOptions { tenant_id: TENANT, last_accepted_version: None, now_ms: NOW };
        prop_assert!(verify(&input, &trusted(), &options).is_err());
    }

    #[test]
    fn document_parsing_never_panics(text in "\\PC{0,400}") {
        let _ = parse_document(&text, DocumentFormat::Yaml);
        let _ = parse_document(&text, DocumentFormat::Json);
    }
}
