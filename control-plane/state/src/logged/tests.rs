use aos_core::policy::ActorRole;

use super::*;
use crate::activity::IngestRecord;
use crate::command::Command;
use crate::test_support::{admin, member, operator};

fn ingest(n: usize) -> Proposal {
    Proposal {
        request_id: format!("ingest-{n}"),
        actor: operator(),
        at_ms: 1_790_000_000_000,
        command: Command::IngestRecords {
            edge_agent_id: "ea-1".to_owned(),
            records: (0..n)
                .map(|i| IngestRecord {
                    record_id: format!("rec-{i}"),
                    // Quotes, a backslash and a non-ASCII character: text
                    // that must be escaped inside the entry's JSON when it
                    // is not an object (every other record).
                    json: if i % 2 == 0 {
                        format!(
                            r#"{{"record_id":"rec-{i}","kind":"LLM_RUN_RECORD","note":"a \\ b \"c\" é"}}"#
                        )
                        .into()
                    } else {
                        format!(r#"not JSON {i}: a \ b "c" é"#).into()
                    },
                })
                .collect(),
        },
    }
}

fn create_tenant(id: &str) -> Proposal {
    Proposal {
        request_id: format!("create-{id}"),
        actor: admin("acme"),
        at_ms: 7,
        command: Command::CreateTenant { tenant_id: id.to_owned(), name: format!("Tenant {id}") },
    }
}

#[test]
fn a_proposal_decodes_to_what_was_encoded() {
    for proposal in [ingest(3), create_tenant("t-1")] {
        let logged = LoggedProposal::encode(&proposal).unwrap();
        assert_eq!(logged.decode().unwrap(), proposal);
        assert_eq!(logged.json(), serde_json::to_string(&proposal).unwrap());
        assert_eq!(logged.len(), logged.json().len());
    }
}

#[test]
fn a_batch_built_from_text_is_the_typed_batch_byte_for_byte() {
    let proposals = vec![ingest(2), create_tenant("t-2"), ingest(1)];
    let logged: Vec<LoggedProposal> = proposals.iter().map(|p| LoggedProposal::encode(p).unwrap()).collect();
    let actor = member("acme", "batcher", ActorRole::Sre);
    let built = LoggedProposal::batch("batch-1", &actor, 42, &logged).unwrap();
    let typed = Proposal {
        request_id: "batch-1".to_owned(),
        actor,
        at_ms: 42,
        command: Command::Batch { proposals: proposals.clone() },
    };
    assert_eq!(built.json(), serde_json::to_string(&typed).unwrap());
    assert_eq!(built.decode().unwrap(), typed);
    // And split again, each proposal's text is what went in.
    assert_eq!(built.batch_proposals().unwrap(), Some(logged));
}

#[test]
fn a_proposal_that_is_not_a_batch_has_no_batch_proposals() {
    let logged = LoggedProposal::encode(&create_tenant("t-3")).unwrap();
    assert_eq!(logged.batch_proposals().unwrap(), None);
    let logged = LoggedProposal::encode(&ingest(2)).unwrap();
    assert_eq!(logged.batch_proposals().unwrap(), None);
    // Text without a command is not a proposal at all.
    let stray = LoggedProposal::from_json(br#"{"request_id": "x"}"#).unwrap();
    assert!(stray.batch_proposals().is_err());
}

#[test]
fn entries_written_as_typed_proposals_read_back_as_logged_ones() {
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Entry<D> {
        index: u64,
        payload: D,
    }
    let typed = Entry { index: 9, payload: ingest(2) };
    let bytes = serde_json::to_vec(&typed).unwrap();
    let logged: Entry<LoggedProposal> = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(logged.payload.decode().unwrap(), typed.payload);
    // Written back verbatim: the same bytes, readable as the typed entry.
    assert_eq!(serde_json::to_vec(&logged).unwrap(), bytes);
}

#[test]
fn malformed_text_is_refused_and_text_that_is_not_a_proposal_fails_to_decode() {
    let error = LoggedProposal::from_json(br#"{"request_id": "x", "#).unwrap_err();
    assert!(error.is_eof(), "{error}");
    let not_a_proposal = LoggedProposal::from_json(br#"{"request_id": "x"}"#).unwrap();
    let error = not_a_proposal.decode().unwrap_err();
    assert!(error.to_string().contains("missing field"), "{error}");
}

#[test]
fn debug_shows_the_length_not_the_records() {
    let logged = LoggedProposal::encode(&ingest(1)).unwrap();
    let shown = format!("{logged:?}");
    assert_eq!(shown, format!("LoggedProposal({} bytes)", logged.len()));
    assert!(!shown.contains("rec-0"));
}

#[test]
fn an_entry_with_records_as_strings_from_earlier_builds_decodes_to_the_same_proposal() {
    // Earlier builds embedded every record's text as a JSON string.
    let proposal = ingest(4);
    let mut earlier = serde_json::to_value(&proposal).unwrap();
    let records = earlier["command"]["INGEST_RECORDS"]["records"].as_array_mut().unwrap();
    assert!(records[0]["json"].is_object(), "an object record is embedded as itself: {records:?}");
    let Command::IngestRecords { records: sent, .. } = &proposal.command else { unreachable!() };
    for (record, sent) in records.iter_mut().zip(sent) {
        record["json"] = serde_json::Value::String(sent.json.as_str().to_owned());
    }
    let logged = LoggedProposal::from_json(serde_json::to_string(&earlier).unwrap().as_bytes()).unwrap();
    assert_eq!(logged.decode().unwrap(), proposal);
}
