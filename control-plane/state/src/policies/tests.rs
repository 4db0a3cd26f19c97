//! `APPLY_POLICY` and `TRANSITION_POLICY`: versions, validation, lifecycle.

use aos_core::policy::{PolicyStatus, Scope, ScopeType};

use crate::test_support::*;
use crate::{AuditAction, Command, RejectionCode};

fn apply(tenant: &str, policy: aos_core::policy::Policy) -> Command {
    Command::ApplyPolicy { tenant_id: tenant.into(), policy }
}

fn transition(policy_id: &str, to: PolicyStatus, reason: Option<&str>) -> Command {
    Command::TransitionPolicy {
        tenant_id: ACME.into(),
        policy_id: policy_id.into(),
        to,
        reason: reason.map(str::to_owned),
    }
}

fn last_action(h: &Harness) -> AuditAction {
    h.state.audit().last().unwrap().action
}

#[test]
fn a_new_policy_is_version_1_with_its_document_status() {
    let mut h = Harness::with_tenants();
    let applied = h.ok(&author(ACME), apply(ACME, policy("pol-a", 1000)));
    assert_eq!(last_action(&h), AuditAction::PolicyCreated);
    assert_eq!(applied.detail["version"], 1);
    assert_eq!(applied.detail["created"], true);
    let record = h.state.policy(ACME, "pol-a").unwrap();
    assert_eq!((record.latest_version(), record.status()), (1, PolicyStatus::Draft));
    assert_eq!(record.current.threshold_hash, record.latest().threshold_hash_hex());
    assert_eq!(record.current.audit_seq, applied.audit_seq);
    assert_eq!(record.current.created_by, "acme-author");

    let mut doc = active(policy("pol-b", 1000));
    doc.version = 42; // assigned by the control plane, not the author
    h.ok(&admin(ACME), apply(ACME, doc));
    let record = h.state.policy(ACME, "pol-b").unwrap();
    assert_eq!((record.latest_version(), record.status()), (1, PolicyStatus::Active));

    let entry = h.state.audit().last().unwrap();
    assert_eq!(entry.after.as_ref().unwrap()["policy"]["id"], "pol-b");
    assert!(entry.before.is_none());
}

#[test]
fn a_new_policy_must_be_draft_or_active() {
    let mut h = Harness::with_tenants();
    let mut doc = policy("pol-a", 1000);
    doc.status = PolicyStatus::Suspended;
    doc.status_reason = Some("later".into());
    let r = h.rejected(&author(ACME), apply(ACME, doc), RejectionCode::InvalidInput);
    assert_eq!(r.field_errors.len(), 1);
    assert_eq!(r.field_errors[0].path, "policy.status");
    assert!(r.field_errors[0].message.contains("SUSPENDED"), "{}", r.field_errors[0].message);
}

#[test]
fn a_malformed_policy_is_refused_with_field_paths() {
    let mut h = Harness::with_tenants();
    let mut doc = policy("pol-a", 1000);
    doc.limits[0].max = Some(-5.0);
    doc.monitors.tokens = false;
    doc.name = " ".into();
    let r = h.rejected(&author(ACME), apply(ACME, doc), RejectionCode::InvalidInput);
    let paths: Vec<&str> = r.field_errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["policy.name", "policy.limits[0].signal", "policy.limits[0].max"]);
    assert!(r.message.contains("policy.limits[0].max: must not be negative, got -5"), "{}", r.message);
    assert!(h.state.policy(ACME, "pol-a").is_none());
    assert_eq!(h.state.snapshot_version(ACME), 0);
}

#[test]
fn a_tenant_scope_may_only_name_the_owning_tenant() {
    let mut h = Harness::with_tenants();
    let mut doc = policy("pol-a", 1000);
    doc.scope = Scope { scope_type: ScopeType::Tenant, ids: vec![ACME.into(), GLOBEX.into()] };
    let r = h.rejected(&author(ACME), apply(ACME, doc.clone()), RejectionCode::InvalidInput);
    assert_eq!(r.field_errors.len(), 1);
    assert_eq!(r.field_errors[0].path, "policy.scope.ids[1]");
    doc.scope.ids = vec![ACME.into()];
    h.ok(&author(ACME), apply(ACME, doc));
}

#[test]
fn an_update_is_a_new_version_and_every_version_is_kept() {
    let mut h = Harness::with_tenants();
    h.ok(&author(ACME), apply(ACME, policy("pol-a", 1000)));
    let mut v2 = policy("pol-a", 1000);
    v2.description = "now documented".into();
    let applied = h.ok(&author(ACME), apply(ACME, v2));
    assert_eq!(applied.detail["version"], 2);
    assert_eq!(applied.detail["changed"], true);
    h.ok(&author(ACME), apply(ACME, policy("pol-a", 2000)));

    let record = h.state.policy(ACME, "pol-a").unwrap();
    assert_eq!(record.latest_version(), 3);
    assert_eq!(record.versions().map(|v| v.policy.version).collect::<Vec<_>>(), [1, 2, 3]);
    let v1 = h.state.policy_version(ACME, "pol-a", 1).unwrap();
    assert_eq!((v1.limits[0].max, v1.description.as_str()), (Some(1000.0), ""));
    let v2 = h.state.policy_version(ACME, "pol-a", 2).unwrap();
    assert_eq!((v2.limits[0].max, v2.description.as_str()), (Some(1000.0), "now documented"));
    assert_eq!(h.state.policy_version(ACME, "pol-a", 3).unwrap().limits[0].max, Some(2000.0));
    assert!(h.state.policy_version(ACME, "pol-a", 4).is_none());
    assert!(h.state.policy_version(ACME, "pol-a", 0).is_none());
}

#[test]
fn limit_adjusted_only_when_the_threshold_hash_changes() {
    let mut h = Harness::with_tenants();
    h.ok(&author(ACME), apply(ACME, policy("pol-a", 1000)));
    let h1 = h.state.policy(ACME, "pol-a").unwrap().current.threshold_hash.clone();

    let mut renamed = policy("pol-a", 1000);
    renamed.name = "renamed".into();
    let applied = h.ok(&author(ACME), apply(ACME, renamed));
    assert_eq!(last_action(&h), AuditAction::PolicyUpdated);
    assert_eq!(applied.detail["limit_adjusted"], false);
    assert_eq!(h.state.policy(ACME, "pol-a").unwrap().current.threshold_hash, h1);

    let mut raised = policy("pol-a", 5000);
    raised.name = "renamed".into();
    let applied = h.ok(&author(ACME), apply(ACME, raised));
    assert_eq!(last_action(&h), AuditAction::LimitAdjusted);
    assert_eq!(applied.detail["limit_adjusted"], true);
    let h3 = h.state.policy(ACME, "pol-a").unwrap().current.threshold_hash.clone();
    assert_ne!(h3, h1);

    let entry = h.state.audit().last().unwrap();
    assert_eq!(entry.before.as_ref().unwrap()["threshold_hash"], h1.as_str());
    assert_eq!(entry.after.as_ref().unwrap()["threshold_hash"], h3.as_str());
    assert_eq!(entry.before.as_ref().unwrap()["policy"]["limits"][0]["max"], 1000.0);
    assert_eq!(entry.after.as_ref().unwrap()["policy"]["limits"][0]["max"], 5000.0);
    assert!(entry.detail.contains(&h1) && entry.detail.contains(&h3), "{}", entry.detail);
}

#[test]
fn identical_content_creates_no_version_but_is_applied_and_audited() {
    let mut h = Harness::with_tenants();
    h.ok(&author(ACME), apply(ACME, active(policy("pol-a", 1000))));
    let snapshot_version = h.state.snapshot_version(ACME);
    let before = h.state.clone();

    // Same content; the document's status and version do not count.
    let mut again = policy("pol-a", 1000);
    again.version = 9;
    let applied = h.ok(&author(ACME), apply(ACME, again));
    assert_eq!(applied.detail["changed"], false);
    assert_eq!(applied.detail["version"], 1);
    assert_eq!(applied.tenant_snapshot_version, None);
    assert_eq!(h.state.snapshot_version(ACME), snapshot_version);
    assert_eq!(h.state.domain(), before.domain());
    assert_eq!(h.state.audit().len(), before.audit().len() + 1);
    let entry = h.state.audit().last().unwrap();
    assert_eq!(entry.action, AuditAction::PolicyUpdated);
    assert!(entry.before.is_none() && entry.after.is_none());
    assert!(entry.detail.contains("unchanged"), "{}", entry.detail);
}

#[test]
fn an_edit_does_not_activate_or_deactivate() {
    let mut h = Harness::with_tenants();
    h.ok(&author(ACME), apply(ACME, policy("pol-draft", 1000)));
    h.ok(&author(ACME), apply(ACME, active(policy("pol-draft", 2000))));
    assert_eq!(h.state.policy(ACME, "pol-draft").unwrap().status(), PolicyStatus::Draft);

    h.ok(&author(ACME), apply(ACME, active(policy("pol-live", 1000))));
    h.ok(&author(ACME), apply(ACME, policy("pol-live", 2000))); // document says DRAFT
    assert_eq!(h.state.policy(ACME, "pol-live").unwrap().status(), PolicyStatus::Active);

    h.ok(&author(ACME), transition("pol-live", PolicyStatus::Suspended, Some("incident 42")));
    h.ok(&author(ACME), apply(ACME, active(policy("pol-live", 3000))));
    let record = h.state.policy(ACME, "pol-live").unwrap();
    assert_eq!(record.status(), PolicyStatus::Suspended);
    assert_eq!(record.latest().status_reason.as_deref(), Some("incident 42"));
    assert_eq!(record.latest_version(), 3);
}

#[test]
fn a_retired_policy_takes_no_new_versions() {
    let mut h = Harness::with_tenants();
    h.ok(&author(ACME), apply(ACME, policy("pol-a", 1000)));
    h.ok(&author(ACME), transition("pol-a", PolicyStatus::Retired, Some("replaced")));
    let r = h.rejected(&author(ACME), apply(ACME, policy("pol-a", 2000)), RejectionCode::Conflict);
    assert!(r.message.contains("RETIRED"), "{}", r.message);
}

#[test]
fn the_lifecycle_is_audited_move_by_move() {
    let mut h = Harness::with_tenants();
    h.ok(&author(ACME), apply(ACME, policy("pol-a", 1000)));
    let moves = [
        (PolicyStatus::Active, None, AuditAction::PolicyActivated),
        (PolicyStatus::Suspended, Some("incident 42"), AuditAction::PolicySuspended),
        (PolicyStatus::Active, Some("resolved"), AuditAction::PolicyActivated),
        (PolicyStatus::Retired, Some("replaced by pol-b"), AuditAction::PolicyRetired),
    ];
    for (to, reason, action) in moves {
        let from = h.state.policy(ACME, "pol-a").unwrap().status();
        let applied = h.ok(&author(ACME), transition("pol-a", to, reason));
        let entry = h.state.audit().last().unwrap();
        assert_eq!(entry.action, action);
        assert_eq!(entry.before.as_ref().unwrap()["status"], from.as_str());
        assert_eq!(entry.after.as_ref().unwrap()["status"], to.as_str());
        assert_eq!(applied.detail["to"], to.as_str());
        let record = h.state.policy(ACME, "pol-a").unwrap();
        assert_eq!(record.status(), to);
        assert_eq!(record.latest().status_reason.as_deref(), reason);
        assert_eq!(record.latest_version(), 1, "a status change is not a new version");
    }
}

#[test]
fn illegal_moves_carry_aos_core_messages() {
    let mut h = Harness::with_tenants();
    h.ok(&author(ACME), apply(ACME, policy("pol-a", 1000)));
    let r = h.rejected(
        &author(ACME),
        transition("pol-a", PolicyStatus::Suspended, Some("x")),
        RejectionCode::IllegalTransition,
    );
    assert_eq!(
        r.message,
        "illegal policy transition from DRAFT to SUSPENDED: only an ACTIVE policy can be suspended"
    );
    let r = h.rejected(
        &author(ACME),
        transition("pol-a", PolicyStatus::Draft, None),
        RejectionCode::IllegalTransition,
    );
    assert_eq!(
        r.message,
        "illegal policy transition from DRAFT to DRAFT: the policy is already in that state"
    );

    h.ok(&author(ACME), transition("pol-a", PolicyStatus::Retired, Some("discarded")));
    let r = h.rejected(
        &author(ACME),
        transition("pol-a", PolicyStatus::Active, None),
        RejectionCode::IllegalTransition,
    );
    assert_eq!(
        r.message,
        "illegal policy transition from RETIRED to ACTIVE: RETIRED is terminal; create a new policy instead"
    );
}

#[test]
fn suspending_needs_a_reason() {
    let mut h = Harness::with_tenants();
    h.ok(&author(ACME), apply(ACME, active(policy("pol-a", 1000))));
    for reason in [None, Some("  ")] {
        let r = h.rejected(
            &author(ACME),
            transition("pol-a", PolicyStatus::Suspended, reason),
            RejectionCode::InvalidInput,
        );
        assert_eq!(r.field_errors[0].path, "reason");
        assert_eq!(r.field_errors[0].message, "a reason is required to move a policy to SUSPENDED");
    }
}

#[test]
fn unknown_policies_and_tenants_are_not_found() {
    let mut h = Harness::with_tenants();
    let r = h.rejected(
        &author(ACME),
        transition("pol-nope", PolicyStatus::Active, None),
        RejectionCode::NotFound,
    );
    assert_eq!(r.message, "unknown policy `pol-nope` in tenant `acme`");
    let r = h.rejected(&operator(), apply("initech", policy("pol-a", 1)), RejectionCode::NotFound);
    assert_eq!(r.message, "unknown tenant `initech`");
    let r = h.rejected(
        &operator(),
        Command::TransitionPolicy {
            tenant_id: "initech".into(),
            policy_id: "pol-a".into(),
            to: PolicyStatus::Active,
            reason: None,
        },
        RejectionCode::NotFound,
    );
    assert_eq!(r.message, "unknown tenant `initech`");
}

#[test]
fn the_same_policy_id_in_two_tenants_is_two_policies() {
    let mut h = Harness::with_tenants();
    h.ok(&author(ACME), apply(ACME, policy("pol-a", 1000)));
    h.ok(&author(GLOBEX), apply(GLOBEX, policy("pol-a", 7)));
    assert_eq!(h.state.policy(ACME, "pol-a").unwrap().latest().limits[0].max, Some(1000.0));
    assert_eq!(h.state.policy(GLOBEX, "pol-a").unwrap().latest().limits[0].max, Some(7.0));
    assert_eq!(h.state.policies(ACME).count(), 1);
}
