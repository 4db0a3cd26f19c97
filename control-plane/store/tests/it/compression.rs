//! Long log entries are stored LZ4-compressed when that makes them smaller: they read back
//! exactly as written (through the store and offline), entries stored uncompressed by earlier
//! versions still read, and a compressed entry whose bytes were damaged is an error naming it.

use aos_cp_store::Application;
use aos_cp_store::codec::{self, COMPRESS_FROM_BYTES, LOG_PIECE_BYTES, LZ4_TAG};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{Entry, EntryPayload, RaftLogReader};

use crate::support::{
    KvApp, KvCommand, TestConfig, entries, log_id, log_tree_rows, open, raw_sled, replay_kv,
};

/// A normal entry like an ingest batch: `records` JSON-ish records with the same keys and
/// differing ids, which compress well.
fn records(index: u64, records: usize) -> Entry<TestConfig> {
    let value = (0..records)
        .map(|i| {
            format!(
                r#"{{"kind":"LLM_RUN_RECORD","record_id":"rec-{index}-{i:06}","run_id":"run-{}","model":"gpt-4o","input_tokens":{},"output_tokens":{}}}"#,
                i / 10,
                100 + i,
                7 * i
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(KvCommand::Set { key: format!("key{index}"), value: value.into() }),
    }
}

/// Entries 0..=2 (short), then `long` record batches of 1,000 records (~120 KB of JSON each).
fn batches(long: u64) -> Vec<Entry<TestConfig>> {
    let mut all = entries(2);
    all.extend((3..3 + long).map(|i| records(i, 1_000)));
    all
}

#[tokio::test]
async fn long_entries_are_stored_compressed_and_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let written = batches(10);
    let json_bytes: usize = written.iter().map(|e| serde_json::to_vec(e).unwrap().len()).sum();
    {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append(written.clone()).await.unwrap();
        assert_eq!(log.try_get_log_entries(..).await.unwrap(), written);
    }
    let rows = log_tree_rows(dir.path());
    let stored_bytes: usize = rows.iter().map(|(_, v)| v.len()).sum();
    assert!(
        stored_bytes * 3 < json_bytes,
        "stored {stored_bytes} bytes for {json_bytes} bytes of JSON: not compressed"
    );
    // Short entries stay JSON; each long one starts with the tag under its own index.
    for (key, value) in &rows {
        if key.len() != 8 {
            continue;
        }
        let index = u64::from_be_bytes(key[..].try_into().unwrap());
        let expected = if index >= 3 { LZ4_TAG } else { b'{' };
        assert_eq!(value[0], expected, "entry {index}");
    }
    assert!(rows.iter().all(|(_, v)| v.len() <= LOG_PIECE_BYTES), "still cut in pieces");

    // Reopened (nothing in memory) and replayed offline, the entries are the same.
    let (mut log, _sm) = open(dir.path());
    assert_eq!(log.try_get_log_entries(..).await.unwrap(), written);
    assert_eq!(log.try_get_log_entries(4..6).await.unwrap(), written[4..6].to_vec());
    log.save_committed(Some(log_id(1, 12))).await.unwrap();
    drop((log, _sm));
    let mut expected = KvApp::default();
    for entry in &written {
        if let EntryPayload::Normal(command) = &entry.payload {
            expected.apply(entry.log_id.index, command).unwrap();
        }
    }
    assert_eq!(replay_kv(dir.path()).state, expected);
}

#[tokio::test]
async fn entries_stored_uncompressed_by_an_earlier_version_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let old = records(3, 100);
    let old_json = serde_json::to_vec(&old).unwrap();
    assert!(old_json.len() >= COMPRESS_FROM_BYTES, "long enough that this version would compress it");
    {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append(entries(2)).await.unwrap();
    }
    {
        let db = raw_sled(dir.path());
        db.open_tree(codec::LOG_TREE).unwrap().insert(codec::index_key(3), old_json).unwrap();
        db.flush().unwrap();
    }
    let (mut log, _sm) = open(dir.path());
    let new = records(4, 100);
    log.blocking_append(vec![new.clone()]).await.unwrap();
    let read = log.try_get_log_entries(3..).await.unwrap();
    assert_eq!(read, vec![old, new]);
}

#[tokio::test]
async fn a_damaged_compressed_entry_is_an_error_naming_it() {
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage); 3] = [
        ("length in the header", |v| v[1] ^= 0x40),
        ("a huge length in the header", |v| v[1..5].copy_from_slice(&u32::MAX.to_le_bytes())),
        ("the compressed block", |v| {
            let end = v.len();
            v.truncate(end / 2);
        }),
    ];
    for (what, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _sm) = open(dir.path());
            let mut all = entries(2);
            // ~2.5 KB of JSON: over the threshold, compressed, one row.
            all.push(records(3, 20));
            log.blocking_append(all).await.unwrap();
        }
        {
            let db = raw_sled(dir.path());
            let tree = db.open_tree(codec::LOG_TREE).unwrap();
            let mut value = tree.get(codec::index_key(3)).unwrap().unwrap().to_vec();
            assert_eq!(value[0], LZ4_TAG, "{what}: the entry was stored compressed");
            damage(&mut value);
            tree.insert(codec::index_key(3), value).unwrap();
            db.flush().unwrap();
        }
        let (mut log, _sm) = open(dir.path());
        assert_eq!(log.try_get_log_entries(..3).await.unwrap(), entries(2), "{what}: the rest reads");
        let error = log.try_get_log_entries(..).await.unwrap_err();
        assert!(error.to_string().contains("log entry 3 is compressed but cannot be"), "{what}: {error}");
    }
}
