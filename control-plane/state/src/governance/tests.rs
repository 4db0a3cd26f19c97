//! Governance state: how global and tenant modes combine (one assertion
//! per row of the ARCHITECTURE.md table), who may change what, versions,
//! expiry.

use super::GovernanceMode::{Degraded, Disabled, Enforcing, Halted};
use super::{GovernanceMode, effective_mode};
use crate::test_support::*;
use crate::{AuditAction, Command, RejectionCode};

fn set(tenant: Option<&str>, mode: GovernanceMode, ttl_ms: Option<u64>) -> Command {
    Command::SetGovernance {
        tenant_id: tenant.map(str::to_owned),
        mode,
        reason: "incident 42".into(),
        ttl_ms,
    }
}

#[test]
fn combination_table_row_global_enforcing() {
    assert_eq!(effective_mode(Enforcing, None), Enforcing);
    assert_eq!(effective_mode(Enforcing, Some(Enforcing)), Enforcing);
    assert_eq!(effective_mode(Enforcing, Some(Degraded)), Degraded);
    assert_eq!(effective_mode(Enforcing, Some(Disabled)), Disabled, "a tenant may be disabled alone");
    assert_eq!(effective_mode(Enforcing, Some(Halted)), Halted);
}

#[test]
fn combination_table_row_global_degraded() {
    for tenant in [None, Some(Enforcing), Some(Degraded), Some(Disabled)] {
        assert_eq!(
            effective_mode(Degraded, tenant),
            Degraded,
            "never less restricted than a global DEGRADED"
        );
    }
    assert_eq!(effective_mode(Degraded, Some(Halted)), Halted);
}

#[test]
fn combination_table_row_global_disabled() {
    assert_eq!(effective_mode(Disabled, None), Disabled);
    assert_eq!(
        effective_mode(Disabled, Some(Enforcing)),
        Enforcing,
        "a tenant pinned to ENFORCING stays enforced"
    );
    assert_eq!(effective_mode(Disabled, Some(Degraded)), Degraded);
    assert_eq!(effective_mode(Disabled, Some(Disabled)), Disabled);
    assert_eq!(effective_mode(Disabled, Some(Halted)), Halted);
}

#[test]
fn combination_table_row_global_halted() {
    for tenant in [None, Some(Enforcing), Some(Degraded), Some(Disabled), Some(Halted)] {
        assert_eq!(effective_mode(Halted, tenant), Halted, "a global HALT wins over any tenant state");
    }
}

#[test]
fn changes_are_versioned_audited_and_scoped() {
    let mut h = Harness::with_tenants();
    assert_eq!((h.state.governance().version(), h.state.governance().effective(ACME)), (0, Enforcing));
    let generation = h.state.push_generation();
    let applied = h.ok(&sre(ACME), set(Some(ACME), Halted, None));
    assert!(h.state.push_generation() > generation, "a governance change wakes the watches");
    assert_eq!(applied.detail["governance_version"], 1);
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::GovernanceChanged);
    assert_eq!(h.state.governance().effective(ACME), Halted);
    assert_eq!(h.state.governance().effective(GLOBEX), Enforcing, "tenant-scoped");
    h.ok(&operator(), set(None, Degraded, None));
    assert_eq!(h.state.governance().version(), 2);
    assert_eq!(h.state.governance().effective(GLOBEX), Degraded);
    assert_eq!(h.state.governance().global().set_by, operator().actor_id);
    // Each change left a CRITICAL system record in the logs it concerns:
    // the tenant halt in acme's only, the global change in both.
    let filter = crate::activity::RecordFilter { kind: Some("SYSTEM_RECORD"), ..Default::default() };
    let (acme, _) = h.state.activity().records(ACME, &filter, 10);
    let (globex, _) = h.state.activity().records(GLOBEX, &filter, 10);
    assert_eq!((acme.len(), globex.len()), (2, 1));
    assert_eq!(acme[0].body.value()["severity"], "CRITICAL");
    assert_eq!(
        (acme[1].body.value()["scope"].as_str(), acme[1].body.value()["effective"].as_str()),
        (Some("GLOBAL"), Some("HALTED"))
    );
    assert_eq!(globex[0].body.value()["effective"], "DEGRADED");
}

#[test]
fn only_sres_and_admins_change_it_and_only_operators_globally() {
    let mut h = Harness::with_tenants();
    h.rejected(&author(ACME), set(Some(ACME), Halted, None), RejectionCode::Forbidden);
    h.rejected(&auditor(ACME), set(Some(ACME), Halted, None), RejectionCode::Forbidden);
    h.rejected(&sre(GLOBEX), set(Some(ACME), Halted, None), RejectionCode::Forbidden);
    let r = h.rejected(&admin(ACME), set(None, Disabled, None), RejectionCode::Forbidden);
    assert!(r.message.contains("cluster operators only"), "{}", r.message);
    h.ok(&admin(ACME), set(Some(ACME), Disabled, None));
    assert_eq!(h.state.governance().version(), 1, "refusals do not bump the version");
    h.rejected(&operator(), set(Some("nope"), Halted, None), RejectionCode::NotFound);
    let blank = Command::SetGovernance { tenant_id: None, mode: Halted, reason: " ".into(), ttl_ms: None };
    let r = h.rejected(&operator(), blank, RejectionCode::InvalidInput);
    assert_eq!(r.field_errors[0].path, "reason");
    let r = h.rejected(&operator(), set(None, Halted, Some(0)), RejectionCode::InvalidInput);
    assert_eq!(r.field_errors[0].path, "ttl_ms");
}

#[test]
fn settings_lapse_back_to_enforcing_through_an_audited_command() {
    let mut h = Harness::with_tenants();
    h.ok(&operator(), set(None, Disabled, Some(10_000)));
    h.ok(&sre(ACME), set(Some(ACME), Degraded, Some(10_000)));
    h.ok(&sre(GLOBEX), set(Some(GLOBEX), Halted, None));
    // Nothing has lapsed yet.
    h.rejected(&operator(), Command::ExpireGovernance {}, RejectionCode::Conflict);
    // Each proposal advances the harness clock by a second.
    for _ in 0..12 {
        h.ok(
            &operator(),
            Command::CreateProject {
                tenant_id: ACME.into(),
                project_id: format!("p{}", h.now()),
                name: "time passes".into(),
            },
        );
    }
    assert!(h.state.governance().lapsed(h.now()));
    h.ok(&operator(), Command::ExpireGovernance {});
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::GovernanceExpired);
    let governance = h.state.governance();
    assert_eq!(governance.global().mode, Enforcing);
    assert!(governance.tenant(ACME).is_none(), "the lapsed tenant setting is gone");
    assert_eq!(governance.effective(GLOBEX), Halted, "settings without a TTL stay");
    assert_eq!(governance.version(), 4);
}
