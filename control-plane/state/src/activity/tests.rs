//! Record ingest: de-duplication, tenant filing, malformed records kept,
//! queries and pagination.

use serde_json::json;

use crate::activity::{IngestRecord, RecordFilter};
use crate::test_support::*;
use crate::{AuditAction, Command, RejectionCode};

fn with_agents() -> Harness {
    Harness::with_agents()
}

fn record(id: &str, kind: &str, run: &str, tenant_claimed: &str) -> IngestRecord {
    IngestRecord {
        record_id: id.into(),
        json:
            json!({"record_id": id, "kind": kind, "run_id": run, "at_ms": 1_000, "tenant_id": tenant_claimed})
                .to_string()
                .into(),
    }
}

fn ingest(agent: &str, records: Vec<IngestRecord>) -> Command {
    Command::IngestRecords { edge_agent_id: agent.into(), records }
}

#[test]
fn redelivered_records_are_counted_once_and_audited_per_batch() {
    let mut h = with_agents();
    let batch = vec![record("r1", "INCIDENT", "run-1", ACME), record("r2", "LLM_RUN_RECORD", "run-1", ACME)];
    let first = h.ok(&operator(), ingest("ea-acme", batch.clone()));
    assert_eq!(
        first.detail,
        json!({"accepted": 2, "duplicates": 0, "malformed": 0, "rewrites_refused": 0, "expired": 0, "incidents_opened": []})
    );
    assert_eq!(h.state.audit().last().unwrap().action, AuditAction::RecordsIngested);
    // The ack was lost; the agent sends the batch again plus one more.
    let mut again = batch;
    again.push(record("r3", "CONTROL_EVENT", "run-2", ACME));
    let second = h.ok(&operator(), ingest("ea-acme", again));
    assert_eq!(
        second.detail,
        json!({"accepted": 1, "duplicates": 2, "malformed": 0, "rewrites_refused": 0, "expired": 0, "incidents_opened": []})
    );
    assert_eq!(h.state.activity().count(ACME), 3);
}

#[test]
fn records_are_filed_under_the_agents_tenant_whatever_they_claim() {
    let mut h = with_agents();
    h.ok(&operator(), ingest("ea-acme", vec![record("r1", "INCIDENT", "run-1", GLOBEX)]));
    assert_eq!(h.state.activity().count(GLOBEX), 0);
    let (page, _) = h.state.activity().records(ACME, &RecordFilter::default(), 10);
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].body.value()["tenant_id"], ACME, "the claim is overwritten");
    assert_eq!(page[0].edge_agent_id, "ea-acme");
}

#[test]
fn a_record_naming_its_own_tenant_is_kept_as_sent_and_another_claim_is_rewritten() {
    let mut h = with_agents();
    let own = record("r1", "LLM_RUN_RECORD", "run-1", ACME);
    let other = record("r2", "LLM_RUN_RECORD", "run-1", GLOBEX);
    h.ok(&operator(), ingest("ea-acme", vec![own.clone(), other.clone()]));
    let (page, _) = h.state.activity().records(ACME, &RecordFilter::default(), 10);
    assert_eq!(page[0].body.text(), own.json.as_str(), "the agent's own text, byte for byte");
    assert_ne!(page[1].body.text(), other.json.as_str());
    let mut expected: serde_json::Value = serde_json::from_str(other.json.as_str()).unwrap();
    expected["tenant_id"] = json!(ACME);
    assert_eq!(page[1].body.value(), expected, "only the claim changed");
    assert_eq!(
        (page[1].kind.as_str(), page[1].run_id.as_deref(), page[1].at_ms),
        ("LLM_RUN_RECORD", Some("run-1"), 1_000)
    );
}

#[test]
fn malformed_records_are_kept_with_the_reason_not_dropped() {
    let mut h = with_agents();
    let bad = vec![
        IngestRecord { record_id: "r1".into(), json: "{not json".into() },
        IngestRecord { record_id: "r2".into(), json: json!({"no_kind": 1}).to_string().into() },
        IngestRecord { record_id: "r3".into(), json: "x".repeat(super::MAX_RECORD_BYTES + 1).into() },
    ];
    let applied = h.ok(&operator(), ingest("ea-acme", bad));
    assert_eq!(applied.detail["malformed"], 3);
    let (page, _) =
        h.state.activity().records(ACME, &RecordFilter { kind: Some("MALFORMED"), ..Default::default() }, 10);
    let reasons: Vec<String> =
        page.iter().map(|r| r.body.value()["reason"].as_str().unwrap().to_owned()).collect();
    assert!(reasons[0].starts_with("not JSON"), "{reasons:?}");
    assert!(reasons[1].contains("kind"), "{reasons:?}");
    assert!(reasons[2].contains("bytes"), "{reasons:?}");
    assert_eq!(page[2].body.value()["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn bad_batches_are_refused_whole_and_unknown_agents_cannot_ingest() {
    let mut h = with_agents();
    let r = h.rejected(
        &operator(),
        ingest("ea-ghost", vec![record("r1", "INCIDENT", "x", ACME)]),
        RejectionCode::NotFound,
    );
    assert!(r.message.contains("ea-ghost"), "{}", r.message);
    let empty_id = IngestRecord { record_id: String::new(), json: "{}".into() };
    let r = h.rejected(
        &operator(),
        ingest("ea-acme", vec![record("ok", "INCIDENT", "x", ACME), empty_id]),
        RejectionCode::InvalidInput,
    );
    assert_eq!(r.field_errors[0].path, "records[1].record_id");
    assert_eq!(h.state.activity().count(ACME), 0, "nothing of a refused batch is kept");
    // Only the control plane itself (an operator) proposes ingest.
    h.rejected(
        &admin(ACME),
        ingest("ea-acme", vec![record("r1", "INCIDENT", "x", ACME)]),
        RejectionCode::Forbidden,
    );
}

#[test]
fn queries_filter_and_page_in_arrival_order() {
    let mut h = with_agents();
    let batch: Vec<IngestRecord> = (0..25)
        .map(|i| {
            record(
                &format!("r{i}"),
                if i % 5 == 0 { "INCIDENT" } else { "LLM_RUN_RECORD" },
                &format!("run-{}", i % 2),
                ACME,
            )
        })
        .collect();
    h.ok(&operator(), ingest("ea-acme", batch));
    let activity = h.state.activity();
    let (page, more) = activity.records(ACME, &RecordFilter::default(), 10);
    assert_eq!((page.len(), more, page[0].seq, page[9].seq), (10, true, 1, 10));
    let (page, more) = activity.records(ACME, &RecordFilter { after_seq: 20, ..Default::default() }, 10);
    assert_eq!((page.len(), more, page[0].seq), (5, false, 21));
    let (incidents, _) =
        activity.records(ACME, &RecordFilter { kind: Some("INCIDENT"), ..Default::default() }, 100);
    assert_eq!(incidents.len(), 5);
    let (run0, _) =
        activity.records(ACME, &RecordFilter { run_id: Some("run-0"), ..Default::default() }, 100);
    assert_eq!(run0.len(), 13);
    assert!(activity.records(GLOBEX, &RecordFilter::default(), 10).0.is_empty());
}

#[test]
fn live_and_completed_runs_come_from_the_latest_run_state_and_metrics_add_up() {
    let mut h = with_agents();
    let state = |id: &str, run: &str, status: &str, at: u64| IngestRecord {
        record_id: id.into(),
        json: json!({"kind": "RUN_STATE", "run_id": run, "at_ms": at, "status": status}).to_string().into(),
    };
    let llm = |id: &str, run: &str| {
        IngestRecord {
        record_id: id.into(),
        json: json!({"kind": "LLM_RUN_RECORD", "run_id": run, "at_ms": 5, "input_tokens": 10, "output_tokens": 5, "cost_micros": 1500}).to_string().into(),
    }
    };
    let incident = IngestRecord {
        record_id: "i1".into(),
        json: json!({"kind": "INCIDENT", "run_id": "run-b", "at_ms": 6, "incident_kind": "TOKEN_LIMIT"})
            .to_string()
            .into(),
    };
    let batch = vec![
        state("s1", "run-a", "running", 1),
        state("s2", "run-b", "running", 2),
        llm("l1", "run-a"),
        llm("l2", "run-b"),
        incident,
        state("s3", "run-b", "failed_policy", 7),
        state("s4", "run-c", "running", 8),
    ];
    h.ok(&operator(), ingest("ea-acme", batch));
    let activity = h.state.activity();
    let ids = |runs: Vec<&crate::activity::StoredRecord>| {
        runs.iter().map(|r| r.run_id.clone().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(ids(activity.runs(ACME, true, 10)), ["run-c", "run-a"], "newest change first");
    assert_eq!(ids(activity.runs(ACME, false, 10)), ["run-b"]);
    assert_eq!(ids(activity.runs(ACME, true, 1)), ["run-c"]);
    assert!(activity.runs(GLOBEX, true, 10).is_empty());
    let metrics = activity.metrics(ACME);
    assert_eq!(metrics["runs"], 3);
    assert_eq!(metrics["runs_by_status"], json!({"running": 2, "failed_policy": 1}));
    assert_eq!((metrics["llm_calls"].as_u64(), metrics["tokens"].as_u64()), (Some(2), Some(30)));
    assert_eq!(metrics["cost_usd"], "0.003");
    assert_eq!(metrics["incidents_by_kind"], json!({"TOKEN_LIMIT": 1}));
}

#[test]
fn record_batches_do_not_take_places_in_the_request_log() {
    let mut h = with_agents();
    let remembered = h.state.requests().len();
    let proposal = h.proposal(&operator(), ingest("ea-acme", vec![record("r1", "INCIDENT", "run-1", ACME)]));
    let first = h.submit(&proposal);
    assert_eq!(h.state.requests().len(), remembered, "operators' Idempotency-Keys keep their places");
    // A resend is answered from the records themselves: a duplicate.
    let again = h.submit(&proposal);
    match (first, again) {
        (crate::CommandResult::Applied(a), crate::CommandResult::Applied(b)) => {
            assert_eq!((a.detail["accepted"].as_u64(), b.detail["duplicates"].as_u64()), (Some(1), Some(1)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.state.activity().count(ACME), 1);
}

#[test]
fn a_record_is_write_once_and_a_rewrite_is_refused_and_audited() {
    let mut h = with_agents();
    let first = IngestRecord {
        record_id: "r1".into(),
        json: json!({"record_id": "r1", "kind": "LLM_RUN_RECORD", "run_id": "run-1", "input_tokens": 10})
            .to_string()
            .into(),
    };
    let mut forged = first.clone();
    forged.json = json!({"record_id": "r1", "kind": "LLM_RUN_RECORD", "run_id": "run-1", "input_tokens": 1})
        .to_string()
        .into();
    h.ok(&operator(), ingest("ea-acme", vec![first.clone()]));
    let refused = h.ok(&operator(), ingest("ea-acme", vec![forged]));
    assert_eq!(refused.detail["rewrites_refused"], 1);
    assert_eq!(refused.detail["accepted"], 0);
    let entry = h.state.audit().last().unwrap();
    assert!(entry.detail.contains("REWRITES REFUSED") && entry.detail.contains("r1"), "{}", entry.detail);
    // The record is as first written; the refusal is in the tenant's log.
    let (records, _) = h.state.activity().records(ACME, &RecordFilter::default(), 10);
    assert_eq!(records[0].body.value()["input_tokens"], 10);
    assert!(records.iter().any(|r| r.body.value()["event"] == "RECORD_REWRITE_REFUSED"));
    // The same body again is only a duplicate (a redelivery).
    let again = h.ok(&operator(), ingest("ea-acme", vec![first]));
    assert_eq!(
        (again.detail["duplicates"].as_u64(), again.detail["rewrites_refused"].as_u64()),
        (Some(1), Some(0))
    );
}

#[test]
fn retention_prunes_old_records_keeps_seqs_and_checkpoints_the_ledger() {
    let mut h = with_agents();
    h.ok(&operator(), ingest("ea-acme", vec![record("r1", "LLM_RUN_RECORD", "run-1", ACME)]));
    h.ok(&operator(), ingest("ea-acme", vec![record("r2", "LLM_RUN_RECORD", "run-1", ACME)]));
    let set = |secs| Command::SetRetention { tenant_id: ACME.into(), max_age_seconds: secs };
    h.rejected(&auditor(ACME), set(Some(60)), RejectionCode::Forbidden);
    h.rejected(&admin(ACME), set(Some(0)), RejectionCode::InvalidInput);
    // Forever: nothing is ever due.
    assert!(h.state.activity().due_for_retention(u64::MAX).is_empty());
    h.ok(&admin(ACME), set(Some(3)));
    h.ok(&operator(), ingest("ea-acme", vec![record("r3", "SYSTEM_RECORD", "run-2", ACME)]));
    // Each proposal is a second later: r1 and r2 are older than 3 s, r3 is not.
    let now = h.now();
    let due = h.state.activity().due_for_retention(now);
    assert_eq!(due, vec![(ACME.to_owned(), now - 3_000)]);
    let cutoff = due[0].1;
    // Only the leader's job (a cluster operator) prunes, and never past the setting.
    let apply = |cutoff_ms| Command::ApplyRetention { tenant_id: ACME.into(), cutoff_ms };
    h.rejected(&admin(ACME), apply(cutoff), RejectionCode::Forbidden);
    h.rejected(&operator(), apply(now + 10_000), RejectionCode::Conflict);
    let head_before = h.state.audit().last().unwrap().hash.clone();
    let applied = h.ok(&operator(), apply(cutoff));
    assert_eq!(applied.detail["pruned"], 2, "{}", applied.detail);
    assert_eq!(
        (applied.detail["first_seq"].as_u64(), applied.detail["last_seq"].as_u64()),
        (Some(1), Some(2))
    );
    let entry = h.state.audit().last().unwrap();
    assert_eq!(entry.action, AuditAction::RetentionApplied);
    assert_eq!(entry.prev_hash, head_before, "the entry checkpoints the head before pruning");
    assert!(h.state.audit().verify().is_ok(), "the ledger is untouched");
    // What is left keeps its seq; new records continue after it.
    let (page, _) = h.state.activity().records(ACME, &RecordFilter::default(), 10);
    assert_eq!(page.iter().map(|r| (r.record_id.as_str(), r.seq)).collect::<Vec<_>>(), [("r3", 3)]);
    let fresh = IngestRecord {
        record_id: "r4".into(),
        json: json!({"record_id": "r4", "kind": "SYSTEM_RECORD", "at_ms": h.now()}).to_string().into(),
    };
    h.ok(&operator(), ingest("ea-acme", vec![fresh]));
    let after = RecordFilter { after_seq: 3, ..RecordFilter::default() };
    let (page, _) = h.state.activity().records(ACME, &after, 10);
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [4]);
    let view = h.state.activity().retention(ACME);
    assert_eq!((view.max_age_seconds, view.pruned, view.held, view.oldest_seq), (Some(3), 2, 2, Some(3)));
    // A pruned record redelivered (or rewritten) is refused as expired:
    // it was produced before the cutoff.
    let old = IngestRecord {
        record_id: "r1".into(),
        json: json!({"record_id": "r1", "kind": "LLM_RUN_RECORD", "at_ms": 1_000, "rewritten": true})
            .to_string()
            .into(),
    };
    let again = h.ok(&operator(), ingest("ea-acme", vec![old]));
    assert_eq!((again.detail["accepted"].as_u64(), again.detail["expired"].as_u64()), (Some(0), Some(1)));
    assert!(h.state.audit().last().unwrap().detail.contains("older than the tenant's retention refused"));
    // Other tenants are untouched; clearing the setting stops pruning.
    assert_eq!(h.state.activity().retention(GLOBEX).pruned, 0);
    h.ok(&admin(ACME), set(None));
    assert!(h.state.activity().due_for_retention(u64::MAX).is_empty());
    h.rejected(&operator(), apply(now), RejectionCode::Conflict);
}

#[test]
fn the_snapshot_encoding_keeps_ids_as_a_set_and_digests_in_hex_beside_them() {
    use sha2::Digest;
    let mut h = with_agents();
    let sent = record("r1", "LLM_RUN_RECORD", "run-1", ACME);
    h.ok(&operator(), ingest("ea-acme", vec![sent.clone()]));
    // A rewrite is refused and says so in a record the control plane files
    // itself, which has no digest.
    let mut rewritten = sent.clone();
    rewritten.json = rewritten.json.as_str().replace("run-1", "run-2").into();
    assert_eq!(h.ok(&operator(), ingest("ea-acme", vec![rewritten.clone()])).detail["rewrites_refused"], 1);
    let encoded = serde_json::to_value(h.state.activity()).unwrap();
    let tenant = &encoded["tenants"][ACME];
    let ids = tenant["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], "r1");
    assert!(ids[1].as_str().unwrap().starts_with("sys-rewrite-refused-"), "{ids:?}");
    assert_eq!(tenant["digests"], json!({"r1": hex::encode(sha2::Sha256::digest(sent.json.as_bytes()))}));
    // Decoding what was encoded gives the same state, which encodes to the
    // same bytes and still refuses the rewrite.
    let text = serde_json::to_string(&h.state).unwrap();
    let decoded: crate::ControlState = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_string(&decoded).unwrap(), text);
    assert_eq!(decoded.activity(), h.state.activity());
    h.state = decoded;
    assert_eq!(h.ok(&operator(), ingest("ea-acme", vec![rewritten])).detail["rewrites_refused"], 1);
    assert_eq!(h.ok(&operator(), ingest("ea-acme", vec![sent])).detail["duplicates"], 1);
}
