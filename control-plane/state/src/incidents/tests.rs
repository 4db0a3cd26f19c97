//! The incident engine: one incident per (run, policy) whoever reports it,
//! suppressions read before write, proposals for HIGH/CRITICAL, lifecycle
//! audited, tenant isolation.

use serde_json::json;

use crate::activity::IngestRecord;
use crate::incidents::{IncidentCategory, IncidentFilter, IncidentStatus, Severity};
use crate::test_support::*;
use crate::{AuditAction, Command, RejectionCode};

fn incident(id: &str, run: &str, policy: Option<&str>, kind: &str) -> IngestRecord {
    IngestRecord {
        record_id: id.into(),
        json: json!({
            "record_id": id, "kind": "INCIDENT", "run_id": run, "at_ms": 5_000,
            "incident_kind": kind, "policy_id": policy, "summary": format!("{kind} in {run}"),
            "inflection": {"step_index": 3, "signal": "TOKENS", "value": 1200, "threshold": 1000,
                           "snapshot_version": 7, "policy_version_hash": "ab12"},
        })
        .to_string()
        .into(),
    }
}

fn ingest(agent: &str, records: Vec<IngestRecord>) -> Command {
    Command::IngestRecords { edge_agent_id: agent.into(), records }
}

/// `ea-acme` plus a second acme agent, `ea-acme-2`.
fn two_acme_agents() -> Harness {
    let mut h = Harness::with_agents();
    h.ok(
        &operator(),
        Command::RegisterEdgeAgent {
            tenant_id: ACME.into(),
            agent_id: "ea-acme-2".into(),
            name: "host 2".into(),
            token_id: "jt-1".into(),
            cert_fingerprint: secret_hash(300),
        },
    );
    h
}

#[test]
fn two_agents_reporting_the_same_violation_make_one_incident() {
    let mut h = two_acme_agents();
    let first =
        h.ok(&operator(), ingest("ea-acme", vec![incident("r1", "run-1", Some("pol-a"), "TOKEN_LIMIT")]));
    assert_eq!(first.detail["incidents_opened"], json!(["inc-1"]));
    // The same violation from another agent, and a retry with a new id.
    let second = h.ok(
        &operator(),
        ingest(
            "ea-acme-2",
            vec![
                incident("r2", "run-1", Some("pol-a"), "TOKEN_LIMIT"),
                incident("r3", "run-1", Some("pol-a"), "TOKEN_LIMIT"),
            ],
        ),
    );
    assert_eq!(second.detail["incidents_opened"], json!([]));
    let all = h.state.incidents().list(ACME, &IncidentFilter::default(), 100);
    assert_eq!(all.len(), 1);
    let inc = all[0];
    assert_eq!((inc.reports, inc.edge_agent_ids.len()), (3, 2));
    assert_eq!(inc.category, IncidentCategory::TokenLimit);
    assert_eq!(inc.severity, Severity::Medium);
    assert_eq!(inc.status, IncidentStatus::Open);
    assert!(inc.blocking);
    assert_eq!(inc.inflection.as_ref().unwrap()["threshold"], 1000, "GAP-024 kept");
    // Another policy in the same run, or another run, is another incident.
    h.ok(&operator(), ingest("ea-acme", vec![incident("r4", "run-1", Some("pol-b"), "TOKEN_LIMIT")]));
    h.ok(&operator(), ingest("ea-acme", vec![incident("r5", "run-2", Some("pol-a"), "TOKEN_LIMIT")]));
    assert_eq!(h.state.incidents().list(ACME, &IncidentFilter::default(), 100).len(), 3);
    let for_run = IncidentFilter { run_id: Some("run-1"), ..IncidentFilter::default() };
    assert_eq!(h.state.incidents().list(ACME, &for_run, 100).len(), 2);
    // Another tenant sees none of them.
    assert!(h.state.incidents().list(GLOBEX, &IncidentFilter::default(), 100).is_empty());
}

#[test]
fn a_suppressed_policy_files_a_prevention_and_no_incident() {
    let mut h = Harness::with_agents();
    let until_ms = h.now() + 3_600_000;
    let suppress = Command::CreateSuppression {
        tenant_id: ACME.into(),
        suppression_id: "sup-1".into(),
        policy_id: Some("pol-a".into()),
        category: None,
        until_ms,
        reason: "known issue, fix deploying".into(),
    };
    h.ok(&sre(ACME), suppress);
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::SuppressionCreated);
    let applied =
        h.ok(&operator(), ingest("ea-acme", vec![incident("r1", "run-1", Some("pol-a"), "TOKEN_LIMIT")]));
    assert_eq!(applied.detail["incidents_opened"], json!([]));
    assert!(h.state.incidents().list(ACME, &IncidentFilter::default(), 10).is_empty());
    let preventions = h.state.incidents().preventions(ACME);
    assert_eq!(preventions.len(), 1);
    assert_eq!((preventions[0].suppression_id.as_str(), preventions[0].record_id.as_str()), ("sup-1", "r1"));
    assert_eq!(h.state.incidents().suppressions(ACME)[0].prevented, 1);
    // The record itself is kept; other policies still open incidents.
    assert_eq!(h.state.activity().count(ACME), 1);
    h.ok(&operator(), ingest("ea-acme", vec![incident("r2", "run-1", Some("pol-b"), "TOKEN_LIMIT")]));
    assert_eq!(h.state.incidents().list(ACME, &IncidentFilter::default(), 10).len(), 1);
}

#[test]
fn suppressions_are_bounded_and_need_a_target() {
    let mut h = Harness::with_agents();
    let now = h.now();
    let bad = |policy: Option<&str>, until_ms: u64| Command::CreateSuppression {
        tenant_id: ACME.into(),
        suppression_id: "sup-x".into(),
        policy_id: policy.map(str::to_owned),
        category: None,
        until_ms,
        reason: "r".into(),
    };
    h.rejected(&sre(ACME), bad(None, now + 1_000_000), RejectionCode::InvalidInput);
    h.rejected(&sre(ACME), bad(Some("p"), now), RejectionCode::InvalidInput);
    h.rejected(&sre(ACME), bad(Some("p"), now + 31 * 24 * 3_600_000), RejectionCode::InvalidInput);
    h.rejected(&author(ACME), bad(Some("p"), now + 1_000_000), RejectionCode::Forbidden);
    h.rejected(&sre(GLOBEX), bad(Some("p"), now + 1_000_000), RejectionCode::Forbidden);
}

#[test]
fn high_severity_incidents_get_a_policy_proposal_and_hallucinations_do_not_block() {
    let mut h = Harness::with_agents();
    h.ok(
        &operator(),
        ingest(
            "ea-acme",
            vec![
                incident("r1", "run-1", Some("pol-budget"), "BUDGET_EXCEEDED"),
                incident("r2", "run-2", Some("pol-rate"), "RATE_LIMIT"),
                incident("r3", "run-3", None, "HALLUCINATION"),
                incident("r4", "run-4", None, "EXECUTION_SUCCESS"),
                incident("r5", "run-5", None, "NOT_A_CATEGORY"),
            ],
        ),
    );
    let incidents = h.state.incidents();
    let all = incidents.list(ACME, &IncidentFilter::default(), 10);
    assert_eq!(all.len(), 3, "success tracking and unknown kinds open nothing");
    assert_eq!(incidents.successes(ACME), 1);
    let budget = all.iter().find(|i| i.category == IncidentCategory::BudgetExceeded).unwrap();
    assert_eq!(budget.severity, Severity::High);
    let proposals = incidents.proposals(ACME);
    assert_eq!(proposals.len(), 1);
    assert_eq!(budget.proposal_id.as_deref(), Some(proposals[0].proposal_id.as_str()));
    assert_eq!(proposals[0].policy_id, "pol-budget");
    assert_eq!(proposals[0].status, "PENDING_REVIEW");
    let hallucination = all.iter().find(|i| i.category == IncidentCategory::Hallucination).unwrap();
    assert!(!hallucination.blocking, "INV-002: non-blocking unless opted in");
    assert!(hallucination.proposal_id.is_none());
}

#[test]
fn the_lifecycle_is_audited_and_cannot_go_back() {
    let mut h = Harness::with_agents();
    h.ok(&operator(), ingest("ea-acme", vec![incident("r1", "run-1", Some("pol-a"), "TOKEN_LIMIT")]));
    let transition = |to, note: &str| Command::TransitionIncident {
        tenant_id: ACME.into(),
        incident_id: "inc-1".into(),
        to,
        note: Some(note.into()),
    };
    h.rejected(&author(ACME), transition(IncidentStatus::Acknowledged, "mine"), RejectionCode::Forbidden);
    h.rejected(&sre(GLOBEX), transition(IncidentStatus::Acknowledged, "x"), RejectionCode::Forbidden);
    h.ok(&sre(ACME), transition(IncidentStatus::Acknowledged, "looking"));
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::IncidentAcknowledged);
    h.rejected(
        &sre(ACME),
        transition(IncidentStatus::Acknowledged, "again"),
        RejectionCode::IllegalTransition,
    );
    h.ok(&admin(ACME), transition(IncidentStatus::Resolved, "limit raised"));
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::IncidentResolved);
    h.rejected(&sre(ACME), transition(IncidentStatus::Open, "reopen"), RejectionCode::IllegalTransition);
    let inc = h.state.incidents().get(ACME, "inc-1").unwrap();
    let statuses: Vec<IncidentStatus> = inc.history.iter().map(|t| t.status).collect();
    assert_eq!(statuses, [IncidentStatus::Open, IncidentStatus::Acknowledged, IncidentStatus::Resolved]);
    assert_eq!(inc.history[2].note.as_deref(), Some("limit raised"));
    let unknown = Command::TransitionIncident {
        tenant_id: ACME.into(),
        incident_id: "inc-404".into(),
        to: IncidentStatus::Resolved,
        note: None,
    };
    h.rejected(&sre(ACME), unknown, RejectionCode::NotFound);
    // The same violation after resolution is a new incident.
    let again =
        h.ok(&operator(), ingest("ea-acme", vec![incident("r2", "run-1", Some("pol-a"), "TOKEN_LIMIT")]));
    assert_eq!(again.detail["incidents_opened"], json!(["inc-2"]));
}

#[test]
fn floats_in_the_inflection_are_kept_as_text_and_bad_policy_ids_dropped() {
    let mut h = Harness::with_agents();
    let record = IngestRecord {
        record_id: "r1".into(),
        json: json!({
            "record_id": "r1", "kind": "INCIDENT", "run_id": "run-1", "at_ms": 1,
            "incident_kind": "POLICY_VIOLATION", "policy_id": "bad id with spaces",
            "inflection": {"value": 0.000_120_889_959_805_806_41, "threshold": 3},
        })
        .to_string()
        .into(),
    };
    h.ok(&operator(), ingest("ea-acme", vec![record]));
    let inc = h.state.incidents().get(ACME, "inc-1").unwrap();
    assert_eq!(inc.category, IncidentCategory::PolicyViolation);
    assert_eq!(inc.policy_id, None);
    let inflection = inc.inflection.as_ref().unwrap();
    assert!(inflection["value"].is_string(), "{inflection}");
    assert_eq!(inflection["threshold"], 3);
}

mod arbitrary_records {
    //! Whatever an agent sends, the ingest (with the incident engine and
    //! the alert controller behind it) never panics, replicas agree, and
    //! the state reads back identically from a JSON snapshot — floats
    //! included (serde_json `float_roundtrip`).

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use crate::ControlState;
    use crate::activity::IngestRecord;
    use crate::test_support::*;
    use crate::{Command, Proposal};

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
            "[a-zA-Z_ -]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,10}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn body() -> impl Strategy<Value = Value> {
        let kinds = prop::sample::select(vec![
            "TOKEN_LIMIT",
            "BUDGET_EXCEEDED",
            "HALLUCINATION",
            "POLICY_VIOLATION",
            "EXECUTION_SUCCESS",
            "NONSENSE",
        ]);
        let alert = (0u8..3, any::<u8>(), any::<bool>(), value()).prop_map(|(p, tier, breach, extra)| {
            let level =
                if breach { json!({"level": "BREACH"}) } else { json!({"level": "NEAR", "tier": tier}) };
            json!({"policy_id": format!("pol-{p}"), "kind": "TOKENS", "level": level, "value": 1,
                   "threshold": 2, "channels": ["UI", "WEBHOOK"], "extra": extra})
        });
        (
            prop::sample::select(vec!["INCIDENT", "CONTROL_EVENT"]),
            kinds,
            0u8..3,
            value(),
            prop::collection::vec(alert, 0..3),
            value(),
        )
            .prop_map(|(kind, incident_kind, run, inflection, alerts, noise)| {
                json!({"kind": kind, "run_id": format!("run-{run}"), "at_ms": 1, "incident_kind": incident_kind,
                       "policy_id": format!("pol-{run}"), "inflection": inflection,
                       "decision": {"alerts": alerts}, "noise": noise})
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn replicas_agree_and_snapshots_read_back(bodies in prop::collection::vec(body(), 1..12)) {
            let records: Vec<IngestRecord> = bodies
                .iter()
                .enumerate()
                .map(|(i, b)| IngestRecord { record_id: format!("r{i}"), json: b.to_string().into() })
                .collect();
            let setup = Harness::with_agents();
            let proposal = Proposal {
                request_id: "ingest".into(),
                actor: operator(),
                at_ms: setup.now(),
                command: Command::IngestRecords { edge_agent_id: "ea-acme".into(), records },
            };
            let mut a = setup.state.clone();
            let mut b = setup.state.clone();
            prop_assert_eq!(a.apply(1_000, &proposal), b.apply(1_000, &proposal));
            prop_assert_eq!(&a, &b);
            let restored: ControlState = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
            prop_assert_eq!(&restored, &a);
            prop_assert_eq!(a.audit().verify(), Ok(()));
        }
    }
}
