//! Signing-key rotation and snapshot reissue as replicated commands.

use aos_core::snapshot::SnapshotSigner;

use crate::test_support::*;
use crate::{AuditAction, Command, RejectionCode};

fn public_hex(seed: u8) -> (String, String) {
    let signer = SnapshotSigner::from_secret_bytes(&[seed; 32]).unwrap();
    (hex::encode(signer.verifying_key().as_bytes()), signer.key_id().as_str().to_owned())
}

fn add(h: &mut Harness, seed: u8) -> String {
    let (public_key, key_id) = public_hex(seed);
    h.ok(&operator(), Command::AddSigningKey { public_key });
    key_id
}

/// Acme with one policy (a snapshot at version 1); globex without.
fn setup() -> Harness {
    let mut h = Harness::with_tenants();
    h.ok(&author(ACME), Command::ApplyPolicy { tenant_id: ACME.into(), policy: policy("pol-a", 1000) });
    h
}

#[test]
fn the_first_key_signs_later_ones_are_only_trusted_until_activated() {
    let mut h = setup();
    let first = add(&mut h, 1);
    assert_eq!(h.state.signing_keys().active(), Some(first.as_str()));
    let second = add(&mut h, 2);
    assert_eq!(h.state.signing_keys().active(), Some(first.as_str()), "adding does not switch the signer");
    assert_eq!(h.state.signing_keys().trusted_public_keys().len(), 2);
    let states: Vec<_> =
        h.state.signing_keys().list().iter().map(|v| (v.record.key_id.clone(), v.state)).collect();
    assert!(states.contains(&(first.clone(), "active")) && states.contains(&(second.clone(), "trusted")));
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::SigningKeyAdded);

    let acme_before = h.state.snapshot_version(ACME);
    let globex_before = h.state.snapshot_version(GLOBEX);
    let applied = h.ok(&operator(), Command::ActivateSigningKey { key_id: second.clone() });
    assert_eq!(applied.detail["active"], second.as_str());
    assert_eq!(h.state.signing_keys().active(), Some(second.as_str()));
    assert_eq!(h.state.snapshot_version(ACME), acme_before + 1, "every tenant is reissued under the new key");
    assert_eq!(h.state.snapshot_version(GLOBEX), globex_before, "no snapshot to reissue");
    let entry = h.state.audit().last().unwrap();
    assert_eq!(entry.action, AuditAction::SigningKeyActivated);
    assert_eq!(entry.target, format!("signing_keys/{second}"));

    // The old key still verifies until it is retired; the signer cannot be.
    h.rejected(
        &operator(),
        Command::RetireSigningKey { key_id: second.clone(), reason: "x".into() },
        RejectionCode::Conflict,
    );
    h.ok(&operator(), Command::RetireSigningKey { key_id: first.clone(), reason: "rotated".into() });
    assert_eq!(h.state.signing_keys().trusted_public_keys(), vec![public_hex(2).0]);
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::SigningKeyRetired);
}

#[test]
fn bad_and_conflicting_key_commands_are_refused_and_change_nothing() {
    let mut h = setup();
    let first = add(&mut h, 1);
    let before = h.state.signing_keys().clone();
    let r = h.rejected(
        &operator(),
        Command::AddSigningKey { public_key: "zz".into() },
        RejectionCode::InvalidInput,
    );
    assert_eq!(r.field_errors[0].path, "public_key");
    h.rejected(&operator(), Command::AddSigningKey { public_key: public_hex(1).0 }, RejectionCode::Conflict);
    h.rejected(&operator(), Command::ActivateSigningKey { key_id: first.clone() }, RejectionCode::Conflict);
    h.rejected(
        &operator(),
        Command::ActivateSigningKey { key_id: "k-unknown".into() },
        RejectionCode::NotFound,
    );
    h.rejected(
        &operator(),
        Command::RetireSigningKey { key_id: "k-unknown".into(), reason: "x".into() },
        RejectionCode::NotFound,
    );
    let second = add(&mut h, 2);
    h.rejected(
        &operator(),
        Command::RetireSigningKey { key_id: second.clone(), reason: " ".into() },
        RejectionCode::InvalidInput,
    );
    h.ok(&operator(), Command::RetireSigningKey { key_id: second.clone(), reason: "leaked".into() });
    // A retired key never comes back, neither by add nor by activate.
    h.rejected(&operator(), Command::AddSigningKey { public_key: public_hex(2).0 }, RejectionCode::Conflict);
    h.rejected(&operator(), Command::ActivateSigningKey { key_id: second }, RejectionCode::Conflict);
    assert_eq!(h.state.signing_keys().active(), before.active());
}

#[test]
fn only_a_cluster_operator_manages_signing_keys() {
    let mut h = setup();
    let (public_key, _) = public_hex(1);
    h.rejected(&admin(ACME), Command::AddSigningKey { public_key }, RejectionCode::Forbidden);
    h.rejected(
        &admin(ACME),
        Command::ReissueSnapshots { tenant_ids: vec![ACME.into()] },
        RejectionCode::Forbidden,
    );
    assert!(h.state.signing_keys().list().is_empty());
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::AccessDenied);
}

#[test]
fn reissue_bumps_only_tenants_that_have_a_snapshot() {
    let mut h = setup();
    let acme = h.state.snapshot_version(ACME);
    assert_eq!(h.state.snapshot_version(GLOBEX), 0);
    let due = h.state.snapshots_issued_before(h.now());
    assert_eq!(due, vec![ACME.to_owned()], "globex has no snapshot yet");
    let at = h.now();
    let applied = h.ok(
        &operator(),
        Command::ReissueSnapshots { tenant_ids: vec![ACME.into(), GLOBEX.into(), "nobody".into()] },
    );
    assert_eq!(applied.detail["reissued"], serde_json::json!([ACME]));
    assert_eq!(h.state.snapshot_version(ACME), acme + 1);
    assert_eq!(h.state.snapshot_version(GLOBEX), 0);
    assert!(h.state.snapshots_issued_before(at - 1).is_empty(), "reissued at the proposal's time");
    h.rejected(&operator(), Command::ReissueSnapshots { tenant_ids: vec![] }, RejectionCode::InvalidInput);
}
