//! `GRANT_OVERRIDE` and `REVOKE_OVERRIDE` (GAP-034).

use aos_core::policy::{ActorRole, PolicyOverride, PolicyStatus, Scope, ScopeType};

use crate::test_support::*;
use crate::{AuditAction, Command, RejectionCode};

/// Acme with an ACTIVE `pol-a` and a DRAFT `pol-draft`.
fn setup() -> Harness {
    let mut h = Harness::with_tenants();
    h.ok(
        &author(ACME),
        Command::ApplyPolicy { tenant_id: ACME.into(), policy: active(policy("pol-a", 1000)) },
    );
    h.ok(&author(ACME), Command::ApplyPolicy { tenant_id: ACME.into(), policy: policy("pol-draft", 1000) });
    h
}

fn grant_cmd(o: PolicyOverride) -> Command {
    Command::GrantOverride { tenant_id: ACME.into(), policy_override: o }
}

fn revoke_cmd(id: &str, reason: &str) -> Command {
    Command::RevokeOverride { tenant_id: ACME.into(), override_id: id.into(), reason: reason.into() }
}

#[test]
fn an_sre_grants_and_revokes() {
    let mut h = setup();
    let version = h.state.snapshot_version(ACME);
    let o = grant("ovr-1", "pol-a", &sre(ACME), h.now());
    let applied = h.ok(&sre(ACME), grant_cmd(o.clone()));
    assert_eq!(applied.tenant_snapshot_version, Some(version + 1));
    assert_eq!(applied.detail["policy_override"]["override_id"], "ovr-1");
    let entry = h.state.audit().last().unwrap();
    assert_eq!(entry.action, AuditAction::OverrideGranted);
    assert_eq!(entry.target, "tenants/acme/overrides/ovr-1");
    assert!(entry.detail.contains("quarter-end batch"), "{}", entry.detail);

    let record = h.state.overrides(ACME).next().unwrap();
    assert_eq!(record.policy_override, o);
    assert!(record.is_in_force(o.starts_at_ms));
    assert!(!record.is_in_force(o.expires_at_ms));

    let applied = h.ok(&sre(ACME), revoke_cmd("ovr-1", "batch finished early"));
    assert_eq!(applied.tenant_snapshot_version, Some(version + 2));
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::OverrideRevoked);
    let record = h.state.overrides(ACME).next().unwrap();
    let revocation = record.revoked.as_ref().unwrap();
    assert_eq!((revocation.by.as_str(), revocation.reason.as_str()), ("acme-sre", "batch finished early"));
    assert!(!record.is_in_force(o.starts_at_ms));

    h.rejected(&sre(ACME), revoke_cmd("ovr-1", "again"), RejectionCode::Conflict);
}

#[test]
fn an_admin_may_grant_but_authors_and_auditors_may_not() {
    let mut h = setup();
    h.ok(&admin(ACME), grant_cmd(grant("ovr-1", "pol-a", &admin(ACME), h.now())));
    for actor in [author(ACME), auditor(ACME)] {
        let o = grant("ovr-2", "pol-a", &actor, h.now());
        let r = h.rejected(&actor, grant_cmd(o), RejectionCode::Forbidden);
        assert!(r.message.contains("may not grant overrides"), "{}", r.message);
        h.rejected(&actor, revoke_cmd("ovr-1", "no"), RejectionCode::Forbidden);
    }
}

#[test]
fn the_grantor_must_be_the_proposer() {
    let mut h = setup();
    let someone_else = member(ACME, "bob", ActorRole::Sre);
    let r = h.rejected(
        &sre(ACME),
        grant_cmd(grant("ovr-1", "pol-a", &someone_else, h.now())),
        RejectionCode::InvalidInput,
    );
    assert_eq!(r.field_errors[0].path, "policy_override.granted_by.actor_id");

    let mut o = grant("ovr-1", "pol-a", &sre(ACME), h.now());
    o.granted_by.role = ActorRole::Admin; // claiming more than the proposer holds
    let r = h.rejected(&sre(ACME), grant_cmd(o), RejectionCode::InvalidInput);
    assert_eq!(r.field_errors[0].path, "policy_override.granted_by.role");

    let mut o = grant("ovr-1", "pol-a", &admin(ACME), h.now());
    o.granted_by.role = ActorRole::PolicyAuthor;
    let r = h.rejected(&admin(ACME), grant_cmd(o), RejectionCode::InvalidInput);
    assert_eq!(r.field_errors[0].path, "policy_override.granted_by.role");
    assert!(r.field_errors[0].message.contains("may not grant overrides"));
}

#[test]
fn the_window_is_bounded_and_not_already_over() {
    let mut h = setup();
    let now = h.now();
    let mut too_long = grant("ovr-1", "pol-a", &sre(ACME), now);
    too_long.expires_at_ms = now + PolicyOverride::MAX_DURATION_MS + 1;
    let r = h.rejected(&sre(ACME), grant_cmd(too_long), RejectionCode::InvalidInput);
    assert_eq!(r.field_errors[0].path, "policy_override.expires_at_ms");
    assert!(r.field_errors[0].message.contains("at most 7 days"));

    let mut exactly_max = grant("ovr-1", "pol-a", &sre(ACME), h.now());
    exactly_max.expires_at_ms = exactly_max.starts_at_ms + PolicyOverride::MAX_DURATION_MS;
    h.ok(&sre(ACME), grant_cmd(exactly_max));

    let mut inverted = grant("ovr-2", "pol-a", &sre(ACME), h.now());
    inverted.expires_at_ms = inverted.starts_at_ms;
    let r = h.rejected(&sre(ACME), grant_cmd(inverted), RejectionCode::InvalidInput);
    assert_eq!(r.field_errors[0].message, "must be after starts_at_ms");

    let past = grant("ovr-3", "pol-a", &sre(ACME), h.now() - 3_600_000);
    let r = h.rejected(&sre(ACME), grant_cmd(past), RejectionCode::InvalidInput);
    assert!(r.field_errors[0].message.contains("already have ended"), "{:?}", r.field_errors);
}

#[test]
fn reason_and_scope_are_checked_with_paths() {
    let mut h = setup();
    let mut o = grant("ovr-1", "pol-a", &sre(ACME), h.now());
    o.reason = String::new();
    let r = h.rejected(&sre(ACME), grant_cmd(o), RejectionCode::InvalidInput);
    assert_eq!(r.field_errors[0].path, "policy_override.reason");

    // Only aos-core's snapshot validator knows this rule; it is reported
    // under the command's field.
    let mut o = grant("ovr-1", "pol-a", &sre(ACME), h.now());
    o.scope = Scope { scope_type: ScopeType::Agent, ids: Vec::new() };
    let r = h.rejected(&sre(ACME), grant_cmd(o), RejectionCode::InvalidInput);
    assert_eq!(r.field_errors.len(), 1, "{:?}", r.field_errors);
    assert_eq!(r.field_errors[0].path, "policy_override.scope.ids");

    let mut o = grant("ovr-1", "pol-a", &sre(ACME), h.now());
    o.scope = Scope { scope_type: ScopeType::Tenant, ids: vec![GLOBEX.into()] };
    let r = h.rejected(&sre(ACME), grant_cmd(o), RejectionCode::InvalidInput);
    assert_eq!(r.field_errors[0].path, "policy_override.scope.ids[0]");

    let o = grant("bad id", "pol-a", &sre(ACME), h.now());
    let r = h.rejected(&sre(ACME), grant_cmd(o), RejectionCode::InvalidInput);
    assert_eq!(r.field_errors[0].path, "policy_override.override_id");
}

#[test]
fn the_policy_must_exist_and_be_active() {
    let mut h = setup();
    let r = h.rejected(
        &sre(ACME),
        grant_cmd(grant("ovr-1", "pol-nope", &sre(ACME), h.now())),
        RejectionCode::NotFound,
    );
    assert_eq!(r.message, "unknown policy `pol-nope` in tenant `acme`");
    let r = h.rejected(
        &sre(ACME),
        grant_cmd(grant("ovr-1", "pol-draft", &sre(ACME), h.now())),
        RejectionCode::Conflict,
    );
    assert_eq!(r.message, "policy `pol-draft` is DRAFT; only an ACTIVE policy can be overridden");

    h.ok(
        &author(ACME),
        Command::TransitionPolicy {
            tenant_id: ACME.into(),
            policy_id: "pol-a".into(),
            to: PolicyStatus::Suspended,
            reason: Some("incident".into()),
        },
    );
    h.rejected(&sre(ACME), grant_cmd(grant("ovr-1", "pol-a", &sre(ACME), h.now())), RejectionCode::Conflict);
}

#[test]
fn override_ids_are_unique_per_tenant() {
    let mut h = setup();
    h.ok(&sre(ACME), grant_cmd(grant("ovr-1", "pol-a", &sre(ACME), h.now())));
    let r = h.rejected(
        &sre(ACME),
        grant_cmd(grant("ovr-1", "pol-a", &sre(ACME), h.now())),
        RejectionCode::Conflict,
    );
    assert_eq!(r.message, "override `ovr-1` already exists in tenant `acme`");
}

#[test]
fn revoking_needs_a_known_override_and_a_reason() {
    let mut h = setup();
    h.rejected(&sre(ACME), revoke_cmd("ovr-nope", "x"), RejectionCode::NotFound);
    h.ok(&sre(ACME), grant_cmd(grant("ovr-1", "pol-a", &sre(ACME), h.now())));
    let r = h.rejected(&sre(ACME), revoke_cmd("ovr-1", " "), RejectionCode::InvalidInput);
    assert_eq!(r.field_errors[0].path, "reason");
}
