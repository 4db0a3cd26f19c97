//! Document parsing and validation, good and bad paths.

use super::*;
use crate::policy::{Action, BindAt, FailureMode, LimitSignal, PolicyStatus, ScopeType};

const BUDGETS: &str = include_str!("../../../deploy/examples/budgets.yaml");
const DATA_ACCESS: &str = include_str!("../../../deploy/examples/data-access.yaml");
const PRIVACY: &str = include_str!("../../../deploy/examples/privacy.yaml");
const WEEKLY: &str = include_str!("../../../deploy/examples/invalid/weekly-window.yaml");
const MANY: &str = include_str!("../../../deploy/examples/invalid/many-errors.json");

fn yaml(text: &str) -> Result<PolicyDocument, DocumentError> {
    parse_document(text, DocumentFormat::Yaml)
}

fn errors_of(text: &str) -> Vec<String> {
    let format = DocumentFormat::detect(text);
    parse_document(text, format)
        .expect_err("document should be rejected")
        .field_errors()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn shipped_examples_parse_and_validate() {
    let budgets = yaml(BUDGETS).unwrap();
    assert_eq!(budgets.policies.len(), 3);
    let daily = &budgets.policies[1];
    assert_eq!(daily.id, "pol-daily-spend");
    assert_eq!(daily.status, PolicyStatus::Active);
    assert_eq!(daily.scope.scope_type, ScopeType::Tenant);
    assert_eq!(daily.limits[0].signal, LimitSignal::CostUsd);
    assert_eq!(daily.limits[0].max, Some(250.0));
    assert_eq!(daily.actions.on_breach, Action::Pause);
    assert!(daily.actions.requires_ack);
    assert_eq!(daily.bind_at, BindAt::RunStart);
    assert_eq!(daily.alerts.tiers, vec![70, 90]);

    let data = yaml(DATA_ACCESS).unwrap();
    assert_eq!(data.policies[1].limits[0].allowed, Some(false));
    let privacy = yaml(PRIVACY).unwrap();
    assert_eq!(privacy.policies[1].failure_mode, FailureMode::FailOpen);
    assert_eq!(privacy.policies[2].status, PolicyStatus::Draft);
}

#[test]
fn defaults_are_the_safe_ones() {
    let doc = yaml("api_version: aos/v1\npolicies:\n  - id: p\n    name: n\n    scope: { type: ALL_RUNS }\n")
        .unwrap();
    let p = &doc.policies[0];
    assert_eq!(p.status, PolicyStatus::Draft, "new policies are not enforced until activated");
    assert_eq!(p.failure_mode, FailureMode::FailClosed, "GAP-035: fail closed unless explicit");
    assert_eq!(p.bind_at, BindAt::EachStep);
    assert_eq!(p.actions.on_breach, Action::Stop);
    assert_eq!(p.alerts.tiers, vec![80], "GAP-018 default tier");
    assert!(!p.monitors.inspection.allow_prompt_logging, "GAP-033: no prompt text unless allowed");
    assert!(!p.monitors.hallucination.blocking, "INV-002: hallucination never blocks by default");
}

#[test]
fn unknown_enum_value_names_path_value_and_choices() {
    let errors = errors_of(WEEKLY);
    assert_eq!(
        errors,
        vec![
            "policies[2].limits[0].window: unknown value \"weekly\" (expected PER_RUN, PER_SESSION, TEMPORAL) (line 18, column 44)"
        ]
    );
}

#[test]
fn every_semantic_error_is_reported_with_its_path() {
    let errors = errors_of(MANY);
    let expected = [
        "policies[0].id: invalid character ' ' in \"pol bad id\"",
        "policies[0].name: must not be empty",
        "policies[0].status_reason: required when status is SUSPENDED",
        "policies[0].scope.ids: must list at least one id for AGENT",
        "policies[0].limits[0].signal: TOKENS is not monitored; set monitors.tokens to true",
        "policies[0].limits[0].max: must not be negative, got -5",
        "policies[0].limits[1].window: TEMPORAL needs `period` (HOURLY, DAILY, MONTHLY) or `window_seconds`",
        "policies[0].alerts.tiers[1]: must be a percentage between 1 and 99, got 120",
        "policies[0].alerts.tiers[2]: duplicate value 80",
        "policies[0].actions.on_near: KILL is more restrictive than on_breach STOP",
        "policies[0].actions.on_near: KILL is only allowed on breach",
    ];
    for want in expected {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing error starting with {want:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[test]
fn malformed_yaml_reports_a_location() {
    let err = yaml("api_version: aos/v1\npolicies:\n  - id: [unclosed\n").unwrap_err();
    let DocumentError::Parse(e) = err else { panic!("expected a parse error, got {err:?}") };
    assert!(e.location.is_some(), "{e}");
}

#[test]
fn malformed_json_reports_a_location() {
    let err =
        parse_document("{\"api_version\": \"aos/v1\", \"policies\": [", DocumentFormat::Json).unwrap_err();
    let DocumentError::Parse(e) = err else { panic!("expected a parse error, got {err:?}") };
    assert_eq!(e.location.map(|l| l.0), Some(1));
}

#[test]
fn unknown_fields_are_rejected_with_the_known_ones() {
    let errors = errors_of(
        "api_version: aos/v1\npolicies:\n  - id: p\n    name: n\n    scope: { type: ALL_RUNS }\n    limitz: []\n",
    );
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("policies[0].limitz: unknown field \"limitz\" (expected id, name,"),
        "{}",
        errors[0]
    );
}

#[test]
fn wrong_type_names_the_field() {
    let errors = errors_of(
        "api_version: aos/v1\npolicies:\n  - id: p\n    name: n\n    scope: { type: ALL_RUNS }\n    monitors: { tokens: true }\n    limits: [{ signal: TOKENS, max: lots, window: PER_RUN }]\n",
    );
    assert!(
        errors[0].starts_with("policies[0].limits[0].max: invalid type: string \"lots\", expected f64"),
        "{errors:?}"
    );
}

#[test]
fn api_version_and_duplicate_ids_are_checked() {
    let errors = errors_of(
        "api_version: aos/v2\npolicies:\n  - { id: p, name: a, scope: { type: ALL_RUNS } }\n  - { id: p, name: b, scope: { type: ALL_RUNS } }\n",
    );
    assert_eq!(
        errors,
        vec![
            "api_version: unsupported value \"aos/v2\" (expected \"aos/v1\")",
            "policies[1].id: duplicate policy id \"p\" (first used at policies[0])",
        ]
    );
}

#[test]
fn limit_shapes_are_checked_per_signal() {
    let doc = |limit: &str, monitors: &str| {
        format!(
            "api_version: aos/v1\npolicies:\n  - id: p\n    name: n\n    scope: {{ type: ALL_RUNS }}\n    monitors: {monitors}\n    limits: [{limit}]\n"
        )
    };
    let cases = [
        (
            "{ signal: RAG_ACCESS, allowed: true, max: 3 }",
            "{ rag_access: { enabled: true } }",
            "policies[0].limits[0].max: not used by RAG_ACCESS",
        ),
        (
            "{ signal: RAG_ACCESS }",
            "{ rag_access: { enabled: true } }",
            "policies[0].limits[0].allowed: required for RAG_ACCESS",
        ),
        (
            "{ signal: TOKENS, max: 10, window: PER_RUN, allowed: true }",
            "{ tokens: true }",
            "policies[0].limits[0].allowed: only RAG_ACCESS uses",
        ),
        (
            "{ signal: TOKENS, max: 10.5, window: PER_RUN }",
            "{ tokens: true }",
            "policies[0].limits[0].max: must be a whole number for TOKENS, got 10.5",
        ),
        (
            "{ signal: TOKENS, max: 10 }",
            "{ tokens: true }",
            "policies[0].limits[0].window: required for TOKENS",
        ),
        (
            "{ signal: TOKENS, window: PER_RUN }",
            "{ tokens: true }",
            "policies[0].limits[0].max: required for TOKENS",
        ),
        (
            "{ signal: TOKENS, max: 10, window: PER_RUN, period: DAILY }",
            "{ tokens: true }",
            "policies[0].limits[0].period: only used with window TEMPORAL",
        ),
        (
            "{ signal: TOKENS, max: 10, window: TEMPORAL, period: DAILY, window_seconds: 5 }",
            "{ tokens: true }",
            "policies[0].limits[0].window_seconds: give either",
        ),
        (
            "{ signal: TOKENS, max: 10, window: TEMPORAL, window_seconds: 0 }",
            "{ tokens: true }",
            "policies[0].limits[0].window_seconds: must be between 1 and",
        ),
        (
            "{ signal: REQUESTS, max: 10, window: PER_RUN }",
            "{ requests: true }",
            "policies[0].limits[0].window: REQUESTS is a rate",
        ),
        (
            "{ signal: BURN_RATE_USD_PER_HOUR, max: 10, window: TEMPORAL, period: DAILY }",
            "{ burn_rate: true }",
            "policies[0].limits[0].period: BURN_RATE_USD_PER_HOUR uses a rolling",
        ),
        (
            "{ signal: COST_USD, max: 2000000000000, window: PER_RUN }",
            "{ cost: true }",
            "policies[0].limits[0].max: amount 2000000000000 exceeds",
        ),
        (
            "{ signal: DB_QUERIES, max: 5, window: PER_RUN }",
            "{ tokens: true }",
            "policies[0].limits[0].signal: DB_QUERIES is not monitored",
        ),
    ];
    for (limit, monitors, want) in cases {
        let errors = errors_of(&doc(limit, monitors));
        assert!(errors.iter().any(|e| e.starts_with(want)), "{limit}: wanted {want:?}, got {errors:#?}");
    }
}

#[test]
fn hallucination_threshold_and_planes_are_checked() {
    let errors = errors_of(
        "api_version: aos/v1\npolicies:\n  - id: p\n    name: n\n    scope: { type: ALL_RUNS }\n    monitors:\n      hallucination: { enabled: true, threshold: 1.5 }\n      rag_access: { allowed_planes: [kp-a, kp-a] }\n",
    );
    assert_eq!(
        errors,
        vec![
            "policies[0].monitors.rag_access.allowed_planes[1]: duplicate value \"kp-a\"",
            "policies[0].monitors.rag_access.allowed_planes: set monitors.rag_access.enabled to true to restrict planes",
            "policies[0].monitors.hallucination.threshold: must be between 0.0 and 1.0, got 1.5",
        ]
    );
}

#[test]
fn threshold_hash_ignores_formatting_and_tracks_thresholds() {
    let a = yaml(BUDGETS).unwrap();
    let json = serde_json::to_string(&a).unwrap();
    let b = parse_document(&json, DocumentFormat::detect(&json)).unwrap();
    for (pa, pb) in a.policies.iter().zip(&b.policies) {
        assert_eq!(pa.threshold_hash(), pb.threshold_hash(), "{}", pa.id);
    }
    let mut changed = a.policies[0].clone();
    changed.limits[0].max = Some(50001.0);
    assert_ne!(changed.threshold_hash(), a.policies[0].threshold_hash());
    let mut renamed = a.policies[0].clone();
    renamed.name = "another name".into();
    renamed.description = "words".into();
    assert_eq!(renamed.threshold_hash(), a.policies[0].threshold_hash(), "names are not thresholds");
    assert_eq!(a.policies[0].threshold_hash_hex().len(), 64);
}

#[test]
fn format_detection() {
    assert_eq!(DocumentFormat::detect("  {\"a\":1}"), DocumentFormat::Json);
    assert_eq!(DocumentFormat::detect("api_version: aos/v1"), DocumentFormat::Yaml);
}
