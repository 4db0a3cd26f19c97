//! Corrupt data on disk becomes a `StorageError` (or a `StoreError` on open), never a panic.

use std::path::Path;

use aos_cp_store::codec;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{RaftLogReader, RaftSnapshotBuilder};
use serde_json::json;

use crate::support::{
    entries, open, raw_sled, rewrite_snapshot_file, set, snapshot_file_path, subject_and_verb,
};

/// Writes `value` under `key` in `tree` with every store handle closed.
fn poke(dir: &Path, tree: &str, key: &[u8], value: &[u8]) {
    let db = raw_sled(dir);
    db.open_tree(tree).unwrap().insert(key, value).unwrap();
    db.flush().unwrap();
}

async fn store_with_entries(last: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = open(dir.path());
    log.blocking_append(entries(last)).await.unwrap();
    dir
}

#[tokio::test]
async fn corrupt_log_entry_is_a_storage_error() {
    let dir = store_with_entries(6).await;
    poke(dir.path(), codec::LOG_TREE, &3_u64.to_be_bytes(), b"{not json");

    let (mut log, _sm) = open(dir.path());
    let error = log.try_get_log_entries(..).await.unwrap_err();
    assert_eq!(subject_and_verb(&error), (json!("Logs"), json!("Read")));
    assert!(error.to_string().contains("cannot decode stored log entry"), "{error}");
    // Entries around the corrupt one are still readable.
    assert_eq!(log.try_get_log_entries(4..).await.unwrap(), entries(6).split_off(4));
    // Replication reads through a log reader and sees the same error.
    let mut reader = log.get_log_reader().await;
    assert!(reader.try_get_log_entries(2..5).await.is_err());
}

#[tokio::test]
async fn corrupt_last_entry_fails_log_state() {
    let dir = store_with_entries(6).await;
    poke(dir.path(), codec::LOG_TREE, &6_u64.to_be_bytes(), b"\xff\xfe");

    let (mut log, _sm) = open(dir.path());
    let error = log.get_log_state().await.unwrap_err();
    assert_eq!(subject_and_verb(&error), (json!("Logs"), json!("Read")));
}

#[tokio::test]
async fn entry_stored_under_the_wrong_index_is_a_storage_error() {
    let dir = store_with_entries(6).await;
    let misplaced = serde_json::to_vec(&set(1, 5)).unwrap();
    poke(dir.path(), codec::LOG_TREE, &3_u64.to_be_bytes(), &misplaced);

    let (mut log, _sm) = open(dir.path());
    let error = log.try_get_log_entries(3..4).await.unwrap_err();
    assert!(error.to_string().contains("stored at index 3 records index 5"), "{error}");
}

#[tokio::test]
async fn malformed_log_key_is_a_storage_error() {
    let dir = store_with_entries(2).await;
    poke(dir.path(), codec::LOG_TREE, b"\x00\x00\x00\x00\x00\x00\x00\x01\x00", b"{}");

    let (mut log, _sm) = open(dir.path());
    let error = log.try_get_log_entries(..).await.unwrap_err();
    assert!(error.to_string().contains("log key of 9 bytes"), "{error}");
}

#[tokio::test]
async fn corrupt_vote_and_committed_are_storage_errors() {
    let dir = tempfile::tempdir().unwrap();
    poke(dir.path(), codec::VOTE_TREE, codec::VALUE_KEY, b"[1,2");
    poke(dir.path(), codec::COMMITTED_TREE, codec::VALUE_KEY, b"\"x\"");

    let (mut log, _sm) = open(dir.path());
    let error = log.read_vote().await.unwrap_err();
    assert_eq!(subject_and_verb(&error), (json!("Vote"), json!("Read")));
    assert!(log.read_committed().await.is_err());
}

#[tokio::test]
async fn corrupt_purge_point_fails_open_with_a_store_error() {
    // The store reads it on open: reads must never return what was purged.
    let dir = tempfile::tempdir().unwrap();
    poke(dir.path(), codec::PURGED_TREE, codec::VALUE_KEY, b"null null");

    let error = crate::support::try_open(dir.path()).unwrap_err();
    assert!(matches!(error, aos_cp_store::StoreError::Decode { what: "purged log id", .. }), "{error}");
}

#[tokio::test]
async fn corrupt_snapshot_fails_open_with_a_store_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm) = open(dir.path());
        sm.apply(entries(3)).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    }
    // A file its record vouches for (length and checksum rewritten too) that does not decode.
    rewrite_snapshot_file(dir.path(), b"{\"state\": 1}");

    let opened = crate::support::try_open(dir.path());
    let error = opened.unwrap_err();
    assert!(matches!(error, aos_cp_store::StoreError::Decode { what: "snapshot", .. }), "{error}");
}

#[tokio::test]
async fn a_snapshot_file_altered_or_missing_fails_open_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm) = open(dir.path());
        sm.apply(entries(3)).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    }
    let file = snapshot_file_path(dir.path());
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[10] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();
    let error = crate::support::try_open(dir.path()).unwrap_err().to_string();
    assert!(error.contains("CRC-32") && error.contains(&*file.to_string_lossy()), "{error}");
    // Offline forensics refuse it the same way.
    assert!(crate::support::try_replay(dir.path()).unwrap_err().to_string().contains("CRC-32"));

    std::fs::remove_file(&file).unwrap();
    let error = crate::support::try_open(dir.path()).unwrap_err().to_string();
    assert!(
        error.contains("cannot read snapshot file") && error.contains(&*file.to_string_lossy()),
        "{error}"
    );
}

#[tokio::test]
async fn half_written_snapshot_fails_open_with_a_store_error() {
    let dir = tempfile::tempdir().unwrap();
    poke(dir.path(), codec::SNAPSHOT_TREE, codec::SNAPSHOT_DATA_KEY, b"{}");

    let error = crate::support::try_open(dir.path()).unwrap_err();
    assert!(matches!(error, aos_cp_store::StoreError::SnapshotIncomplete { missing: "metadata" }), "{error}");
}
