//! The ledger: hashing, chain verification against tampering, queries.

use aos_core::policy::PolicyStatus;
use serde_json::json;

use super::*;
use crate::test_support::*;
use crate::{ActorType, Command};

/// A real ledger of 8 entries across two tenants, including a rejection.
fn ledger() -> AuditLedger {
    let mut h = Harness::with_tenants();
    h.ok(
        &admin(ACME),
        Command::CreateProject { tenant_id: ACME.into(), project_id: "p1".into(), name: "P".into() },
    );
    h.ok(&author(ACME), Command::ApplyPolicy { tenant_id: ACME.into(), policy: policy("pol-a", 1000) });
    h.ok(
        &author(ACME),
        Command::TransitionPolicy {
            tenant_id: ACME.into(),
            policy_id: "pol-a".into(),
            to: PolicyStatus::Active,
            reason: None,
        },
    );
    h.run(&auditor(ACME), Command::ApplyPolicy { tenant_id: ACME.into(), policy: policy("pol-b", 1) });
    h.ok(
        &admin(GLOBEX),
        Command::CreateProject { tenant_id: GLOBEX.into(), project_id: "p1".into(), name: "G".into() },
    );
    h.ok(&author(ACME), Command::ApplyPolicy { tenant_id: ACME.into(), policy: policy("pol-a", 2000) });
    assert_eq!(h.state.audit().len(), 8);
    h.state.audit().clone()
}

#[test]
fn a_real_ledger_verifies() {
    let ledger = ledger();
    assert_eq!(ledger.verify(), Ok(()));
    let entries = ledger.entries();
    assert_eq!(entries[0].prev_hash, GENESIS_HASH);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.hash.len(), 64);
        assert!(e.hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(e.hash, e.compute_hash());
        if i > 0 {
            assert_eq!(e.prev_hash, entries[i - 1].hash);
        }
    }
    assert_eq!(verify_chain(&[]), Ok(()));
}

#[test]
fn every_field_is_covered_by_the_hash() {
    let entry = ledger().entries()[7].clone();
    let original = entry.compute_hash();
    type Mutation = Box<dyn Fn(&mut AuditEntry)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        ("seq", Box::new(|e| e.seq += 1)),
        ("at_ms", Box::new(|e| e.at_ms += 1)),
        ("log_index", Box::new(|e| e.log_index += 1)),
        ("request_id", Box::new(|e| e.request_id.push('x'))),
        ("actor.actor_id", Box::new(|e| e.actor.actor_id.push('x'))),
        ("actor.actor_type", Box::new(|e| e.actor.actor_type = ActorType::System)),
        ("actor.role", Box::new(|e| e.actor.role = aos_core::policy::ActorRole::Sre)),
        ("actor.tenant_id", Box::new(|e| e.actor.tenant_id = None)),
        ("action", Box::new(|e| e.action = AuditAction::PolicyRetired)),
        ("tenant_id", Box::new(|e| e.tenant_id = Some("globex".into()))),
        ("target", Box::new(|e| e.target.push('x'))),
        ("before", Box::new(|e| e.before = Some(json!({"x": 1})))),
        ("after", Box::new(|e| e.after = None)),
        ("outcome", Box::new(|e| e.outcome = AuditOutcome::Rejected)),
        ("detail", Box::new(|e| e.detail.push('x'))),
        ("prev_hash", Box::new(|e| e.prev_hash = GENESIS_HASH.into())),
    ];
    for (field, mutate) in mutations {
        let mut changed = entry.clone();
        mutate(&mut changed);
        assert_ne!(changed.compute_hash(), original, "{field} is not covered by the hash");
    }
    let mut rehashed = entry.clone();
    rehashed.hash = "f".repeat(64);
    assert_eq!(rehashed.compute_hash(), original, "the hash field itself is not hashed");
}

#[test]
fn a_tampered_field_names_its_entry() {
    let mut ledger = ledger();
    ledger.entries_mut()[4].detail = "nothing to see here".into();
    let err = ledger.verify().unwrap_err();
    assert_eq!(err, ChainError::HashMismatch { seq: 5 });
    assert_eq!(err.seq(), 5);
    assert_eq!(err.to_string(), "audit entry 5: hash mismatch, the entry was altered after it was written");

    let mut ledger = self::ledger();
    ledger.entries_mut()[7].after.as_mut().unwrap()["policy"]["limits"][0]["max"] = json!(1e9);
    assert_eq!(ledger.verify(), Err(ChainError::HashMismatch { seq: 8 }));
}

#[test]
fn a_tampered_hash_names_its_entry() {
    let mut ledger = ledger();
    ledger.entries_mut()[2].hash = "0".repeat(63) + "1";
    assert_eq!(ledger.verify(), Err(ChainError::HashMismatch { seq: 3 }));
}

#[test]
fn a_rehashed_forgery_breaks_the_next_link() {
    let mut ledger = ledger();
    let entries = ledger.entries_mut();
    entries[2].actor.actor_id = "mallory".into();
    entries[2].hash = entries[2].compute_hash();
    let err = ledger.verify().unwrap_err();
    assert_eq!(err, ChainError::BrokenLink { seq: 4 });
    assert!(err.to_string().starts_with("audit entry 4: broken link"), "{err}");
}

#[test]
fn a_tampered_prev_hash_names_its_entry() {
    let mut ledger = ledger();
    ledger.entries_mut()[3].prev_hash = GENESIS_HASH.into();
    assert_eq!(ledger.verify(), Err(ChainError::BrokenLink { seq: 4 }));
    let mut ledger = self::ledger();
    ledger.entries_mut()[0].prev_hash = "1".repeat(64);
    assert_eq!(ledger.verify(), Err(ChainError::BrokenLink { seq: 1 }));
}

#[test]
fn a_removed_entry_is_a_gap() {
    let mut ledger = ledger();
    ledger.entries_mut().remove(5);
    let err = ledger.verify().unwrap_err();
    assert_eq!(err, ChainError::SequenceGap { expected: 6, found: 7 });
    assert_eq!(err.seq(), 7);
    assert_eq!(err.to_string(), "audit entry 7: sequence gap, expected seq 6");

    let mut ledger = self::ledger();
    ledger.entries_mut().remove(0);
    assert_eq!(ledger.verify(), Err(ChainError::SequenceGap { expected: 1, found: 2 }));

    // Renumbering to hide the gap is caught by the link.
    let mut ledger = self::ledger();
    let entries = ledger.entries_mut();
    entries.remove(5);
    for e in &mut entries[5..] {
        e.seq -= 1;
    }
    assert_eq!(ledger.verify(), Err(ChainError::BrokenLink { seq: 6 }));
}

#[test]
fn a_segment_verifies_against_its_anchor() {
    let ledger = ledger();
    let entries = ledger.entries();
    let anchor = &entries[2];
    assert_eq!(verify_chain_after(anchor.seq, &anchor.hash, &entries[3..]), Ok(()));
    assert_eq!(
        verify_chain_after(anchor.seq, &entries[1].hash, &entries[3..]),
        Err(ChainError::BrokenLink { seq: 4 })
    );
}

#[test]
fn queries_page_by_seq_and_filter_by_tenant() {
    let ledger = ledger();
    let seqs = |page: Vec<&AuditEntry>| page.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(ledger.query(None, 0, 100)), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(seqs(ledger.query(None, 0, 3)), [1, 2, 3]);
    assert_eq!(seqs(ledger.query(None, 3, 3)), [4, 5, 6]);
    assert_eq!(seqs(ledger.query(None, 8, 3)), Vec::<u64>::new());
    assert_eq!(seqs(ledger.query(None, u64::MAX, 3)), Vec::<u64>::new());
    assert_eq!(seqs(ledger.query(Some(ACME), 0, 100)), [1, 3, 4, 5, 6, 8]);
    assert_eq!(seqs(ledger.query(Some(ACME), 3, 2)), [4, 5]);
    assert_eq!(seqs(ledger.query(Some(GLOBEX), 0, 100)), [2, 7]);
    assert_eq!(seqs(ledger.query(Some("initech"), 0, 100)), Vec::<u64>::new());
    assert_eq!(ledger.get(4).map(|e| e.seq), Some(4));
    assert!(ledger.get(0).is_none() && ledger.get(9).is_none());
}

#[test]
fn entries_read_well_as_json() {
    let ledger = ledger();
    let json = serde_json::to_value(ledger.get(6).unwrap()).unwrap();
    assert_eq!(json["action"], "ACCESS_DENIED");
    assert_eq!(json["outcome"], "REJECTED");
    assert_eq!(json["actor"]["actor_type"], "HUMAN");
    assert_eq!(json["actor"]["role"], "auditor");
    let json = serde_json::to_value(ledger.get(8).unwrap()).unwrap();
    assert_eq!(json["action"], "LIMIT_ADJUSTED");
    assert_eq!(json["after"]["policy"]["limits"][0]["max"], 2000.0);
    let back: AuditEntry = serde_json::from_value(json).unwrap();
    assert_eq!(&back, ledger.get(8).unwrap());
    assert_eq!(back.compute_hash(), back.hash);
}
