//! Data sources, credentials, planes and their lifecycle (issue 6).

use aos_core::access::{
    AssetType, DataSource, ParamSpec, ParamType, SealedCredential, SourceStatus, SqlConnector, SqlEngine,
    SqlTemplate,
};
use aos_core::snapshot::{PlaneDefault, Sensitivity};
use serde_json::json;

use super::{PlaneSpec, WrappedDataKey};
use crate::test_support::*;
use crate::{AuditAction, Command, RejectionCode};

fn source(id: &str) -> DataSource {
    DataSource {
        source_id: id.into(),
        asset_type: AssetType::Sql,
        status: SourceStatus::Enabled,
        sql: Some(SqlConnector {
            engine: SqlEngine::Postgres,
            target: "host=db user=app dbname=hr".into(),
            timeout_ms: 1000,
            templates: vec![SqlTemplate {
                template_id: "by-id".into(),
                statement: "SELECT name FROM people WHERE id = :id".into(),
                params: vec![ParamSpec { name: "id".into(), param_type: ParamType::Integer }],
                max_rows: 10,
                read_only: true,
            }],
        }),
        http: None,
        mcp: None,
    }
}

fn key() -> WrappedDataKey {
    WrappedDataKey {
        data_key_id: "dk-1".into(),
        master_key_id: "mk-1".into(),
        nonce: vec![1; 24],
        wrapped: vec![2; 48],
    }
}

fn sealed() -> SealedCredential {
    SealedCredential { data_key_id: "dk-1".into(), nonce: vec![3; 24], ciphertext: vec![4; 40] }
}

fn plane(id: &str, sensitivity: Sensitivity, sources: &[&str]) -> PlaneSpec {
    PlaneSpec {
        plane_id: id.into(),
        name: format!("{id} plane"),
        sensitivity,
        default_policy: None,
        bound_source_ids: sources.iter().map(|s| (*s).to_string()).collect(),
    }
}

fn put(h: &mut Harness, s: DataSource) -> crate::Applied {
    h.ok(&admin(ACME), Command::PutDataSource { tenant_id: ACME.into(), source: s })
}

fn probe(h: &mut Harness, ok: bool) -> crate::CommandResult {
    let fingerprint = h.state.data_access().tenant(ACME).unwrap().sources["hr-db"].fingerprint();
    h.run(
        &admin(ACME),
        Command::RecordSourceProbe {
            tenant_id: ACME.into(),
            source_id: "hr-db".into(),
            fingerprint,
            ok,
            detail: if ok { "SELECT 1 ok".into() } else { "connection refused".into() },
        },
    )
}

fn status(h: &Harness) -> SourceStatus {
    h.state.data_access().tenant(ACME).unwrap().sources["hr-db"].source.status
}

fn transition(h: &mut Harness, to: SourceStatus) -> crate::CommandResult {
    h.run(
        &admin(ACME),
        Command::TransitionSource {
            tenant_id: ACME.into(),
            source_id: "hr-db".into(),
            to,
            reason: "go".into(),
        },
    )
}

#[test]
fn a_source_is_verified_before_it_can_be_enabled() {
    let mut h = Harness::with_tenants();
    let v0 = h.state.snapshot_version(ACME);
    let applied = put(&mut h, source("hr-db"));
    assert_eq!(applied.tenant_snapshot_version, Some(v0 + 1));
    assert_eq!(status(&h), SourceStatus::Created, "the status in the request is ignored");

    assert!(!transition(&mut h, SourceStatus::Enabled).is_applied(), "unverified sources cannot be enabled");
    let last = h.state.audit().last().unwrap();
    assert!(last.detail.contains("verify it first"), "{}", last.detail);

    assert!(probe(&mut h, false).is_applied(), "a failed probe is recorded");
    assert_eq!(status(&h), SourceStatus::Error);
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::SourceVerificationFailed);
    assert!(probe(&mut h, true).is_applied());
    assert_eq!(status(&h), SourceStatus::Verified);
    assert!(transition(&mut h, SourceStatus::Enabled).is_applied());
    assert!(transition(&mut h, SourceStatus::Disabled).is_applied());
    assert!(transition(&mut h, SourceStatus::Enabled).is_applied());
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::SourceEnabled);

    // Reconfiguring sends it back: what was verified is not what would run.
    let mut changed = source("hr-db");
    if let Some(sql) = changed.sql.as_mut() {
        sql.target = "host=other user=app dbname=hr".into();
    }
    put(&mut h, changed);
    assert_eq!(status(&h), SourceStatus::Created);
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::SourceUpdated);
}

#[test]
fn a_probe_of_an_older_configuration_cannot_verify_a_newer_one() {
    let mut h = Harness::with_tenants();
    put(&mut h, source("hr-db"));
    let stale = h.state.data_access().tenant(ACME).unwrap().sources["hr-db"].fingerprint();
    let mut changed = source("hr-db");
    if let Some(sql) = changed.sql.as_mut() {
        sql.templates[0].max_rows = 11;
    }
    put(&mut h, changed);
    let r = h.rejected(
        &admin(ACME),
        Command::RecordSourceProbe {
            tenant_id: ACME.into(),
            source_id: "hr-db".into(),
            fingerprint: stale,
            ok: true,
            detail: "ok".into(),
        },
        RejectionCode::Conflict,
    );
    assert!(r.message.contains("changed while it was probed"), "{}", r.message);
    assert_eq!(status(&h), SourceStatus::Created);
}

#[test]
fn credentials_are_sealed_under_the_tenant_key_and_never_rendered() {
    let mut h = Harness::with_tenants();
    put(&mut h, source("hr-db"));
    let set = |h: &mut Harness, sealed: SealedCredential| {
        h.run(
            &admin(ACME),
            Command::SetSourceCredential { tenant_id: ACME.into(), source_id: "hr-db".into(), sealed },
        )
    };
    assert!(!set(&mut h, sealed()).is_applied(), "no data key yet");
    h.ok(&admin(ACME), Command::SetTenantDataKey { tenant_id: ACME.into(), data_key: key() });
    let other = WrappedDataKey { data_key_id: "dk-2".into(), ..key() };
    h.rejected(
        &admin(ACME),
        Command::SetTenantDataKey { tenant_id: ACME.into(), data_key: other },
        RejectionCode::Conflict,
    );

    let wrong_key = SealedCredential { data_key_id: "dk-9".into(), ..sealed() };
    assert!(!set(&mut h, wrong_key).is_applied());
    let applied = match set(&mut h, sealed()) {
        crate::CommandResult::Applied(a) => a,
        crate::CommandResult::Rejected(r) => panic!("{r:?}"),
    };
    assert_eq!(applied.detail["has_credential"], true);
    let text = applied.detail.to_string();
    assert!(!text.contains("ciphertext") && !text.contains("[4,4,4"), "no ciphertext in views: {text}");
    let entry = h.state.audit().last().unwrap();
    assert_eq!(entry.action, AuditAction::CredentialSet);
    let ledger = serde_json::to_string(entry).unwrap();
    assert!(!ledger.contains("[4,4,4") && !ledger.contains("ciphertext"), "{ledger}");

    let snapshot = h.state.policy_snapshot(ACME, h.now(), h.now() + 60_000).unwrap();
    assert_eq!(snapshot.credential("hr-db"), Some(&sealed()));
}

#[test]
fn planes_default_by_sensitivity_and_activate_only_when_an_owner_confirms() {
    let mut h = Harness::with_tenants();
    put(&mut h, source("hr-db"));
    let put_plane = |h: &mut Harness, p: PlaneSpec| {
        h.run(&admin(ACME), Command::PutKnowledgePlane { tenant_id: ACME.into(), plane: p })
    };
    assert!(put_plane(&mut h, plane("hr", Sensitivity::Restricted, &["hr-db"])).is_applied());
    assert!(put_plane(&mut h, plane("docs", Sensitivity::Public, &[])).is_applied());
    let planes = &h.state.data_access().tenant(ACME).unwrap().planes;
    assert_eq!(planes["hr"].plane.default_policy, PlaneDefault::Deny);
    assert_eq!(planes["docs"].plane.default_policy, PlaneDefault::Allow);
    assert!(!planes["hr"].plane.active);

    let risky = PlaneSpec {
        default_policy: Some(PlaneDefault::Allow),
        ..plane("vault", Sensitivity::Confidential, &[])
    };
    let r = h.rejected(
        &admin(ACME),
        Command::PutKnowledgePlane { tenant_id: ACME.into(), plane: risky },
        RejectionCode::InvalidInput,
    );
    assert!(r.field_errors[0].message.contains("must default to DENY"), "{r:?}");
    let r = h.rejected(
        &admin(ACME),
        Command::PutKnowledgePlane {
            tenant_id: ACME.into(),
            plane: plane("x", Sensitivity::Internal, &["nope"]),
        },
        RejectionCode::InvalidInput,
    );
    assert_eq!(r.field_errors[0].path, "plane.bound_source_ids[0]");

    let activate = |active: bool| Command::SetPlaneActivation {
        tenant_id: ACME.into(),
        plane_id: "hr".into(),
        active,
        reason: "reviewed by data owner".into(),
    };
    h.rejected(&author(ACME), activate(true), RejectionCode::Forbidden);
    h.ok(&admin(ACME), activate(true));
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::PlaneActivated);
    let snapshot = h.state.policy_snapshot(ACME, h.now(), h.now() + 60_000).unwrap();
    let hr = snapshot.knowledge_planes.iter().find(|p| p.plane_id == "hr").unwrap();
    assert!(hr.active);
    assert_eq!(hr.bound_source_ids, ["hr-db"]);

    // Changing what the plane exposes withdraws the activation.
    assert!(put_plane(&mut h, plane("hr", Sensitivity::Confidential, &["hr-db"])).is_applied());
    assert!(!h.state.data_access().tenant(ACME).unwrap().planes["hr"].plane.active);
    assert!(h.state.audit().last().unwrap().detail.contains("inactive until confirmed again"));
}

#[test]
fn policies_may_name_only_planes_of_their_tenant() {
    let mut h = Harness::with_tenants();
    h.ok(
        &admin(GLOBEX),
        Command::PutKnowledgePlane {
            tenant_id: GLOBEX.into(),
            plane: plane("globex-hr", Sensitivity::Internal, &[]),
        },
    );
    let naming = |plane: &str| {
        let mut p = policy("pol-rag", 1000);
        p.monitors.rag_access =
            serde_json::from_value(json!({"enabled": true, "allowed_planes": [plane]})).unwrap();
        Command::ApplyPolicy { tenant_id: ACME.into(), policy: p }
    };
    let r = h.rejected(&author(ACME), naming("globex-hr"), RejectionCode::InvalidInput);
    assert_eq!(r.field_errors[0].path, "policy.monitors.rag_access.allowed_planes[0]");
    assert!(r.field_errors[0].message.contains("unknown knowledge plane `globex-hr` in tenant `acme`"));
    h.ok(
        &admin(ACME),
        Command::PutKnowledgePlane { tenant_id: ACME.into(), plane: plane("hr", Sensitivity::Internal, &[]) },
    );
    h.ok(&author(ACME), naming("hr"));
    assert_eq!(h.state.data_access().plane_owner("globex-hr"), Some(GLOBEX));
}

#[test]
fn another_tenants_admin_cannot_touch_sources() {
    let mut h = Harness::with_tenants();
    put(&mut h, source("hr-db"));
    let r = h.rejected(
        &admin(GLOBEX),
        Command::TransitionSource {
            tenant_id: ACME.into(),
            source_id: "hr-db".into(),
            to: SourceStatus::Disabled,
            reason: "x".into(),
        },
        RejectionCode::Forbidden,
    );
    assert!(r.message.contains("may not act on tenant `acme`"), "{}", r.message);
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::AccessDenied);
}

#[test]
fn a_new_destination_never_receives_the_old_credential() {
    let mut h = Harness::with_tenants();
    put(&mut h, source("hr-db"));
    h.ok(&admin(ACME), Command::SetTenantDataKey { tenant_id: ACME.into(), data_key: key() });
    h.ok(
        &admin(ACME),
        Command::SetSourceCredential { tenant_id: ACME.into(), source_id: "hr-db".into(), sealed: sealed() },
    );
    // Same destination, other template: the credential stays.
    let mut same_host = source("hr-db");
    if let Some(sql) = same_host.sql.as_mut() {
        sql.templates[0].max_rows = 20;
    }
    put(&mut h, same_host);
    assert!(h.state.data_access().tenant(ACME).unwrap().sources["hr-db"].credential.is_some());
    // Another host: cleared, and the ledger says so.
    let mut moved = source("hr-db");
    if let Some(sql) = moved.sql.as_mut() {
        sql.target = "host=attacker.example user=app dbname=hr".into();
    }
    let applied = put(&mut h, moved);
    assert_eq!(applied.detail["has_credential"], false);
    let record = &h.state.data_access().tenant(ACME).unwrap().sources["hr-db"];
    assert!(record.credential.is_none() && record.credential_set.is_none());
    assert!(h.state.audit().last().unwrap().detail.contains("credential was cleared"));
    let snapshot = h.state.policy_snapshot(ACME, h.now(), h.now() + 60_000).unwrap();
    assert_eq!(snapshot.credential("hr-db"), None);
}
