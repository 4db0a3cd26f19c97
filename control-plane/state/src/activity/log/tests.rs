//! The chunked log against a `Vec` model, and its encoding.

use proptest::prelude::*;

use super::*;
use crate::activity::RecordBody;

fn record(seq: u64) -> StoredRecord {
    StoredRecord {
        seq,
        record_id: format!("r{seq}"),
        edge_agent_id: "ea".into(),
        kind: "LLM_RUN_RECORD".into(),
        run_id: None,
        at_ms: seq,
        ingested_at_ms: seq,
        body: RecordBody::from_value(&serde_json::json!({"n": seq})),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Push(usize),
    RemoveFront(usize),
    /// Keep a copy (as a snapshot does) and go on with the original.
    Copy,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..3 * CHUNK).prop_map(Op::Push),
        2 => (0..2 * CHUNK + 3).prop_map(Op::RemoveFront),
        1 => Just(Op::Copy),
    ]
}

fn assert_same(log: &RecordLog, model: &[StoredRecord]) {
    assert_eq!(log.len(), model.len());
    assert_eq!(log.first(), model.first());
    assert!(log.iter().eq(model.iter()));
    for index in
        [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, model.len().saturating_sub(1), model.len(), model.len() + 1]
    {
        assert_eq!(log.get(index), model.get(index), "get({index})");
        assert!(log.iter_from(index).eq(model.iter().skip(index)), "iter_from({index})");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the pushes and removals, the log reads as the `Vec` would,
    /// and a copy taken on the way keeps what it saw while the original
    /// moves on (chunks are shared, never written through).
    #[test]
    fn the_log_reads_as_a_vec_would(ops in proptest::collection::vec(op(), 1..24)) {
        let mut log = RecordLog::default();
        let mut model: Vec<StoredRecord> = Vec::new();
        let mut copies: Vec<(RecordLog, Vec<StoredRecord>)> = Vec::new();
        let mut next = 1u64;
        for op in ops {
            match op {
                Op::Push(n) => {
                    for _ in 0..n {
                        log.push(record(next));
                        model.push(record(next));
                        next += 1;
                    }
                }
                Op::RemoveFront(n) => {
                    let removed = log.remove_front(n);
                    let expected: Vec<StoredRecord> = model.drain(..n.min(model.len())).collect();
                    prop_assert_eq!(removed, expected);
                }
                Op::Copy => copies.push((log.clone(), model.clone())),
            }
            assert_same(&log, &model);
        }
        for (copy, seen) in &copies {
            assert_same(copy, seen);
        }
    }
}

#[test]
fn the_log_is_encoded_as_the_plain_sequence_it_replaces() {
    let records: Vec<StoredRecord> = (1..=2 * CHUNK as u64 + 5).map(record).collect();
    let mut log = RecordLog::from(records.clone());
    assert_eq!(serde_json::to_string(&log).unwrap(), serde_json::to_string(&records).unwrap());
    // Pruned at the front, so the first chunk is short: still one sequence,
    // and decoding gives an equal log (chunked differently).
    log.remove_front(7);
    let encoded = serde_json::to_string(&log).unwrap();
    assert_eq!(encoded, serde_json::to_string(&records[7..]).unwrap());
    let decoded: RecordLog = serde_json::from_str(&encoded).unwrap();
    assert_eq!(decoded, log);
    assert_same(&decoded, &records[7..]);
}
