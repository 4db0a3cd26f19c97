//! Signing and verification: the round trip and every refusal.

use super::*;
use crate::policy::{ActorRole, OverrideGrantor, PolicyOverride, PolicyStatus, Scope};
use crate::test_support::{NOW_MS, TENANT, signer, snapshot as verified_snapshot, trusted};

fn sample(version: u64) -> PolicySnapshot {
    verified_snapshot(
        version,
        "  - id: pol-b
    name: b
    scope: { type: ALL_RUNS }
    monitors: { tokens: true, cost: true }
    limits:
      - { signal: TOKENS, max: 1000, window: PER_RUN }
      - { signal: COST_USD, max: 5, window: TEMPORAL, period: DAILY }
  - id: pol-a
    name: a
    scope: { type: AGENT, ids: [agent-1] }
    monitors: { tokens: true }
    limits: [{ signal: TOKENS, max: 1000, window: PER_RUN }]
",
    )
    .snapshot()
    .clone()
}

fn options(last: Option<u64>) -> VerifyOptions<'static> {
    VerifyOptions { tenant_id: TENANT, last_accepted_version: last, now_ms: NOW_MS }
}

#[test]
fn sign_then_verify_round_trips() {
    let snap = sample(4);
    let bytes = sign(&snap, &signer()).unwrap();
    let verified = verify(&bytes, &trusted(), &options(Some(3))).unwrap();
    assert_eq!(verified.snapshot(), &snap);
    assert_eq!((verified.tenant_id(), verified.version()), (TENANT, 4));
    assert_eq!(verified.key_id(), signer().key_id());
    assert_eq!(verified.content_hash_hex().len(), 64);
    assert_eq!(
        verified.snapshot().policies.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["pol-a", "pol-b"]
    );
    assert_eq!(verified.required_counters().len(), 2, "tokens per run (shared) and cost today");
}

#[test]
fn signing_is_deterministic_across_nodes() {
    let snap = sample(1);
    let node_a = SnapshotSigner::from_secret_bytes(&[7u8; 32]).unwrap();
    let node_b = SnapshotSigner::from_secret_hex(&node_a.secret_hex()).unwrap();
    assert_eq!(sign(&snap, &node_a).unwrap(), sign(&snap, &node_b).unwrap());
}

#[test]
fn authoring_order_does_not_change_the_bytes() {
    let snap = sample(1);
    let mut reversed = snap.policies.clone();
    reversed.reverse();
    let rebuilt =
        PolicySnapshot::new(TENANT, 1, snap.issued_at_ms, snap.not_after_ms, reversed, vec![], vec![])
            .unwrap();
    assert_eq!(sign(&rebuilt, &signer()).unwrap(), sign(&snap, &signer()).unwrap());
}

#[test]
fn tampered_payload_is_refused() {
    let mut bytes = sign(&sample(1), &signer()).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    assert_eq!(
        verify(&bytes, &trusted(), &options(None)).unwrap_err(),
        SnapshotError::BadSignature { reason: "content hash does not match the payload" }
    );
}

#[test]
fn forged_hash_and_payload_fail_the_signature() {
    let bytes = sign(&sample(1), &signer()).unwrap();
    let mut envelope = Envelope::decode(&bytes).unwrap();
    envelope.payload = codec::encode_payload(&sample(9)).unwrap();
    envelope.content_hash = Sha256::digest(&envelope.payload).into();
    assert_eq!(
        verify(&envelope.encode(), &trusted(), &options(None)).unwrap_err(),
        SnapshotError::BadSignature { reason: "ed25519 signature does not verify" }
    );
}

#[test]
fn unknown_key_is_refused() {
    let other = SnapshotSigner::from_secret_bytes(&[9u8; 32]).unwrap();
    let bytes = sign(&sample(1), &other).unwrap();
    assert_eq!(
        verify(&bytes, &trusted(), &options(None)).unwrap_err(),
        SnapshotError::UnknownKeyId { key_id: other.key_id().to_string() }
    );
}

#[test]
fn unsigned_is_refused() {
    let payload = codec::encode_payload(&sample(1)).unwrap();
    let envelope =
        Envelope { key_id: None, content_hash: Sha256::digest(&payload).into(), signature: None, payload };
    assert_eq!(verify(&envelope.encode(), &trusted(), &options(None)).unwrap_err(), SnapshotError::Unsigned);
}

#[test]
fn other_tenant_is_refused() {
    let bytes = sign(&sample(1), &signer()).unwrap();
    let err =
        verify(&bytes, &trusted(), &VerifyOptions { tenant_id: "tenant-b", ..options(None) }).unwrap_err();
    assert_eq!(err, SnapshotError::TenantMismatch { expected: "tenant-b".into(), found: TENANT.into() });
}

#[test]
fn rollback_and_replay_are_refused() {
    let bytes = sign(&sample(5), &signer()).unwrap();
    assert_eq!(
        verify(&bytes, &trusted(), &options(Some(5))).unwrap_err(),
        SnapshotError::Rollback { version: 5, last_accepted: 5 }
    );
    assert_eq!(
        verify(&bytes, &trusted(), &options(Some(7))).unwrap_err(),
        SnapshotError::Rollback { version: 5, last_accepted: 7 }
    );
    assert!(verify(&bytes, &trusted(), &options(Some(4))).is_ok());
}

#[test]
fn expired_is_refused_and_reported() {
    let snap = sample(1);
    let bytes = sign(&snap, &signer()).unwrap();
    let late = VerifyOptions { now_ms: snap.not_after_ms + 1, ..options(None) };
    assert_eq!(
        verify(&bytes, &trusted(), &late).unwrap_err(),
        SnapshotError::Expired { version: 1, not_after_ms: snap.not_after_ms, now_ms: snap.not_after_ms + 1 }
    );
    let verified = verify(&bytes, &trusted(), &options(None)).unwrap();
    assert!(!verified.is_expired(snap.not_after_ms));
    assert!(verified.is_expired(snap.not_after_ms + 1));

    // An authentic but expired snapshot can still be loaded for
    // failure-mode handling; every other check still applies.
    let stale = super::verify_allowing_expired(&bytes, &trusted(), &late).unwrap();
    assert!(stale.is_expired(late.now_ms));
    let mut tampered = bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(super::verify_allowing_expired(&tampered, &trusted(), &late).is_err());
    let rolled_back = VerifyOptions { last_accepted_version: Some(1), ..late };
    assert!(super::verify_allowing_expired(&bytes, &trusted(), &rolled_back).is_err());
}

#[test]
fn malformed_envelopes_are_refused_without_panicking() {
    let bytes = sign(&sample(1), &signer()).unwrap();
    for (name, input) in [
        ("empty", Vec::new()),
        ("magic only", ENVELOPE_MAGIC.to_vec()),
        ("truncated", bytes[..bytes.len() - 1].to_vec()),
        ("trailing", [bytes.as_slice(), b"x"].concat()),
        ("wrong format version", [b"AOSSNAP\x01".as_slice(), &bytes[8..]].concat()),
    ] {
        let err = verify(&input, &trusted(), &options(None)).unwrap_err();
        assert!(matches!(err, SnapshotError::Malformed(_)), "{name}: {err:?}");
    }
}

#[test]
fn signed_garbage_payload_is_malformed() {
    let payload = vec![0xff; 40];
    let content_hash: [u8; 32] = Sha256::digest(&payload).into();
    let signature = signer().sign(&signed_message(&content_hash));
    let envelope = Envelope {
        key_id: Some(signer().key_id().clone()),
        content_hash,
        signature: Some(signature),
        payload,
    };
    let err = verify(&envelope.encode(), &trusted(), &options(None)).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Malformed(ref m) if m.starts_with("payload does not decode")),
        "{err:?}"
    );
}

#[test]
fn signed_but_invalid_content_is_refused() {
    let mut snap = sample(1);
    snap.policies[0].status = PolicyStatus::Draft;
    let bytes = sign(&snap, &signer()).unwrap();
    let err = verify(&bytes, &trusted(), &options(None)).unwrap_err();
    let SnapshotError::Invalid(errors) = err else { panic!("{err:?}") };
    assert_eq!(errors.to_string(), "policies[0].status: a snapshot carries only ACTIVE policies, got DRAFT");
}

#[test]
fn every_single_byte_flip_is_refused() {
    let bytes = sign(&sample(1), &signer()).unwrap();
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80] {
            let mut flipped = bytes.clone();
            flipped[i] ^= mask;
            assert!(
                verify(&flipped, &trusted(), &options(None)).is_err(),
                "flip {mask:#04x} at byte {i} was accepted"
            );
        }
    }
}

#[test]
fn rotation_trusts_old_and_new_until_the_old_is_removed() {
    let old = signer();
    let new = SnapshotSigner::from_secret_bytes(&[8u8; 32]).unwrap();
    let mut keys = trusted();
    keys.insert(new.verifying_key());
    let from_old = sign(&sample(1), &old).unwrap();
    let from_new = sign(&sample(2), &new).unwrap();
    assert!(verify(&from_old, &keys, &options(None)).is_ok());
    assert_eq!(verify(&from_new, &keys, &options(Some(1))).unwrap().key_id(), new.key_id());
    assert!(keys.remove(old.key_id()));
    assert!(matches!(verify(&from_old, &keys, &options(None)), Err(SnapshotError::UnknownKeyId { .. })));
}

#[test]
fn key_material_errors_are_typed() {
    assert_eq!(SnapshotSigner::from_secret_bytes(&[1; 31]).unwrap_err(), KeyError::BadLength(31));
    assert_eq!(SnapshotSigner::from_secret_hex("zz").unwrap_err(), KeyError::BadHex);
    assert!(KeyId::parse("ABCDEF0123456789").is_err(), "upper case is not canonical");
    let mut keys = TrustedKeys::new();
    let id = keys.insert_hex(&hex::encode(signer().verifying_key().as_bytes())).unwrap();
    assert_eq!(&id, signer().key_id());
    assert_eq!(keys.insert_hex("00").unwrap_err(), KeyError::BadLength(1));
    assert!(!format!("{:?}", signer()).contains(&signer().secret_hex()), "Debug never shows the secret");
}

#[test]
fn builder_rejects_bad_content_with_paths() {
    let snap = sample(1);
    let mut dup = snap.policies.clone();
    dup.push(snap.policies[0].clone());
    let err = PolicySnapshot::new(TENANT, 1, 0, 10, dup, vec![], vec![]).unwrap_err();
    assert!(err.to_string().contains("policies[1].id: \"pol-a\" is duplicated"), "{err}");

    let author_override = PolicyOverride {
        override_id: "ovr-1".into(),
        policy_id: "pol-a".into(),
        scope: Scope::all_runs(),
        granted_by: OverrideGrantor { actor_id: "bob".into(), role: ActorRole::PolicyAuthor },
        reason: "".into(),
        starts_at_ms: 10,
        expires_at_ms: 10 + PolicyOverride::MAX_DURATION_MS + 1,
    };
    let unknown = PolicyOverride {
        override_id: "ovr-2".into(),
        policy_id: "pol-zzz".into(),
        ..author_override.clone()
    };
    let err =
        PolicySnapshot::new(TENANT, 0, 5, 5, snap.policies.clone(), vec![author_override, unknown], vec![])
            .unwrap_err()
            .to_string();
    for want in [
        "version: must be at least 1",
        "not_after_ms: must be after issued_at_ms (5), got 5",
        "overrides[0].granted_by.role: role policy_author may not grant overrides",
        "overrides[0].reason: must not be empty",
        "overrides[0].expires_at_ms: an override may last at most 7 days",
        "overrides[1].policy_id: unknown policy \"pol-zzz\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }

    let mut foreign = snap.policies.clone();
    foreign[0].scope = Scope { scope_type: crate::policy::ScopeType::Tenant, ids: vec!["tenant-z".into()] };
    let err = PolicySnapshot::new(TENANT, 1, 0, 10, foreign, vec![], vec![]).unwrap_err().to_string();
    assert!(err.contains("policies[0].scope.ids: names tenant \"tenant-z\""), "{err}");
}

#[test]
fn granted_override_ships_and_verifies() {
    let snap = sample(1);
    let o = PolicyOverride {
        override_id: "ovr-1".into(),
        policy_id: "pol-a".into(),
        scope: Scope::all_runs(),
        granted_by: OverrideGrantor { actor_id: "alice".into(), role: ActorRole::Admin },
        reason: "incident INC-7".into(),
        starts_at_ms: 10,
        expires_at_ms: 20,
    };
    let with =
        PolicySnapshot::new(TENANT, 2, 0, NOW_MS * 10, snap.policies, vec![o.clone()], vec![]).unwrap();
    let verified = verify(&sign(&with, &signer()).unwrap(), &trusted(), &options(None)).unwrap();
    assert_eq!(verified.snapshot().overrides, vec![o]);
}

#[test]
fn workload_keys_travel_signed_in_canonical_order_and_bad_ones_are_named() {
    let hash = |c: char| c.to_string().repeat(64);
    let keys = vec![
        WorkloadKey { key_id: "wk-b".to_owned(), secret_sha256: hash('b') },
        WorkloadKey { key_id: "wk-a".to_owned(), secret_sha256: hash('a') },
    ];
    let snapshot = sample(1).with_workload_keys(keys).unwrap();
    assert_eq!(snapshot.workload_keys[0].key_id, "wk-a", "sorted by id");
    let verified = verify(&sign(&snapshot, &signer()).unwrap(), &trusted(), &options(None)).unwrap();
    assert_eq!(verified.snapshot().workload_key(&hash('b')).map(|k| k.key_id.as_str()), Some("wk-b"));
    assert!(verified.snapshot().workload_key(&hash('c')).is_none());

    let bad = sample(1)
        .with_workload_keys(vec![WorkloadKey { key_id: "wk-x".to_owned(), secret_sha256: "ABC".to_owned() }])
        .unwrap_err();
    assert!(bad.to_string().contains("workload_keys[0].secret_sha256"), "{bad}");
    let duplicate = sample(1)
        .with_workload_keys(vec![
            WorkloadKey { key_id: "wk-a".to_owned(), secret_sha256: hash('a') },
            WorkloadKey { key_id: "wk-a".to_owned(), secret_sha256: hash('b') },
        ])
        .unwrap_err();
    assert!(duplicate.to_string().contains("duplicated"), "{duplicate}");
}
