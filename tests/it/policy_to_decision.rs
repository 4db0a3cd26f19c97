//! The shipped example policies, end to end through the core: documents →
//! snapshot → signature → verification → decisions for a run that grows
//! until the token budget stops it (GAP-016: the breaching step itself gets
//! STOP).

use std::collections::BTreeMap;
use std::path::Path;

use aos_core::counters::{CounterKey, CounterWindow, Metric};
use aos_core::document::{DocumentFormat, parse_document};
use aos_core::evaluate::{RunScope, StepInput, StepPhase};
use aos_core::policy::{Action, PolicyStatus};
use aos_core::snapshot::{PolicySnapshot, SnapshotSigner, TrustedKeys, VerifyOptions};
use aos_core::{SnapshotBindings, StepContext, decide, sign, verify};

fn examples() -> Vec<aos_core::policy::Policy> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut policies = Vec::new();
    for name in ["budgets.yaml", "data-access.yaml", "privacy.yaml"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let doc = parse_document(&text, DocumentFormat::Yaml).unwrap();
        policies.extend(doc.policies.into_iter().filter(|p| p.status == PolicyStatus::Active));
    }
    policies
}

#[test]
fn example_token_budget_stops_the_breaching_step() {
    let now = 1_700_000_000_000;
    let snapshot =
        PolicySnapshot::new("tenant-demo", 1, now, now + 3_600_000, examples(), vec![], vec![]).unwrap();
    let signer = SnapshotSigner::from_secret_bytes(&[3u8; 32]).unwrap();
    let mut trusted = TrustedKeys::new();
    trusted.insert(signer.verifying_key());
    let bytes = sign(&snapshot, &signer).unwrap();
    let verified = verify(
        &bytes,
        &trusted,
        &VerifyOptions { tenant_id: "tenant-demo", last_accepted_version: None, now_ms: now },
    )
    .unwrap();
    assert_eq!(verified.snapshot().policies.len(), 7);

    let scope = RunScope {
        tenant_id: "tenant-demo".into(),
        agent_id: Some("research-bot".into()),
        ..RunScope::default()
    };
    let mut counters: BTreeMap<CounterKey, u64> =
        verified.required_counters().iter().map(|k| (*k, 0)).collect();
    let run_tokens = CounterKey { metric: Metric::Tokens, window: CounterWindow::PerRun };

    let mut outcomes = Vec::new();
    for _ in 0..10 {
        let step = StepInput { phase: StepPhase::PreStep, tokens: Some(12_000), ..StepInput::default() };
        let d = decide(
            &SnapshotBindings::single(&verified),
            &StepContext { now_ms: now, scope: &scope, step: &step, counters: &counters },
        );
        outcomes.push(d.outcome);
        if !d.outcome.allows_next_step() {
            assert_eq!(&*d.winning_policy.unwrap().policy_id, "pol-run-tokens");
            break;
        }
        *counters.get_mut(&run_tokens).unwrap() += 12_000;
    }
    // 12k, 24k (48 %), 36k (tier 50 → WARN), 48k (tier 90 → WARN), 60k > 50k → STOP.
    assert_eq!(outcomes, [Action::Continue, Action::Continue, Action::Warn, Action::Warn, Action::Stop]);
}
