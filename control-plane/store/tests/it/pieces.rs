//! Long log entries are stored as pieces that keep sled from spilling values and tree nodes to
//! blob files; they read back whole, are removed whole and a broken piece is an error.

use std::path::Path;

use aos_cp_store::Application;
use aos_cp_store::codec::{self, LOG_PIECE_BYTES};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{Entry, EntryPayload, RaftLogReader};

use crate::support::{
    KvApp, KvCommand, TestConfig, entries, log_id, log_tree_rows, open, raw_sled, replay_kv,
};

/// A normal entry whose value is a string of `bytes` pseudo-random letters: text LZ4 cannot
/// shrink, so the entry is stored as it is (compression has tests of its own).
fn sized(index: u64, bytes: usize) -> Entry<TestConfig> {
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let value = (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b"abcdefghijklmnopqrstuvwxyz"[(state % 26) as usize])
        })
        .collect::<String>();
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(KvCommand::Set { key: format!("key{index}"), value: value.into() }),
    }
}

/// Entries 0..=2 as `entries` makes them, then `long` entries of 300 KB each, then one small one.
fn mixed(long: u64) -> Vec<Entry<TestConfig>> {
    let mut all = entries(2);
    all.extend((3..3 + long).map(|i| sized(i, 300 * 1024)));
    all.extend(entries(3 + long).pop());
    all
}

/// Files sled wrote as blobs (values or tree nodes too large for its log).
fn blob_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("blobs")).map_or(0, |d| d.count())
}

/// Keys of the log tree's rows, read with every store handle closed.
fn log_rows(dir: &Path) -> Vec<Vec<u8>> {
    log_tree_rows(dir).into_iter().map(|(key, _)| key).collect()
}

#[tokio::test]
async fn long_entries_read_back_whole_and_never_become_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let written = mixed(20);
    {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append(written.clone()).await.unwrap();
        assert_eq!(log.try_get_log_entries(..).await.unwrap(), written);
        assert_eq!(log.try_get_log_entries(5..7).await.unwrap(), written[5..7].to_vec());
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 23)));
    }
    // 20 entries of 300 KB: sled would have spilled each (and most leaves) to a blob file.
    assert_eq!(blob_files(dir.path()), 0, "no value or node went to a blob file");
    let rows = log_rows(dir.path());
    assert!(
        rows.len() > 20 * (300 * 1024 / LOG_PIECE_BYTES),
        "long entries are stored in pieces: {}",
        rows.len()
    );

    // Reopened, the last entry is found even when the tree ends with a piece.
    let (mut log, _sm) = open(dir.path());
    assert_eq!(log.try_get_log_entries(..).await.unwrap(), written);
    log.truncate(log_id(1, 23)).await.unwrap();
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 22)));
}

#[tokio::test]
async fn truncation_and_purge_remove_every_piece() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append(mixed(4)).await.unwrap();
        // Replace entries 5.. with a short one at 5: no piece of the old long 5 may survive.
        log.truncate(log_id(1, 5)).await.unwrap();
        log.blocking_append(vec![sized(5, 10)]).await.unwrap();
        assert_eq!(log.try_get_log_entries(5..).await.unwrap(), vec![sized(5, 10)]);
        // Purging through the long entry 4 leaves only entry 5.
        log.purge(log_id(1, 4)).await.unwrap();
        assert_eq!(log.try_get_log_entries(..).await.unwrap(), vec![sized(5, 10)]);
    }
    assert_eq!(log_rows(dir.path()), vec![codec::index_key(5).to_vec()]);
}

#[tokio::test]
async fn a_missing_piece_is_an_error_not_a_short_entry() {
    for missing in ["first row", "middle piece"] {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _sm) = open(dir.path());
            log.blocking_append(mixed(1)).await.unwrap();
        }
        {
            let db = raw_sled(dir.path());
            let tree = db.open_tree(codec::LOG_TREE).unwrap();
            let mut keys = tree.range(codec::index_key(3)..codec::index_key(4)).keys();
            let key = match missing {
                "first row" => keys.next(),
                _ => keys.nth(3),
            };
            tree.remove(key.unwrap().unwrap()).unwrap();
            db.flush().unwrap();
        }
        let (mut log, _sm) = open(dir.path());
        let error = log.try_get_log_entries(..).await.unwrap_err();
        assert!(error.to_string().contains("log entry 3 has a piece without"), "{missing}: {error}");
    }
}

#[tokio::test]
async fn offline_replay_reads_long_entries() {
    let dir = tempfile::tempdir().unwrap();
    let written = mixed(3);
    {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append(written.clone()).await.unwrap();
        log.save_committed(Some(log_id(1, 6))).await.unwrap();
    }
    let replayed = replay_kv(dir.path());
    let mut expected = KvApp::default();
    for entry in &written[..=6] {
        if let EntryPayload::Normal(command) = &entry.payload {
            expected.apply(entry.log_id.index, command).unwrap();
        }
    }
    assert_eq!(replayed.state, expected);
    assert_eq!(replayed.uncommitted_entries, 0, "entry 6 is the last");
}

#[tokio::test]
async fn rows_left_below_the_purge_point_are_never_read_and_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append(mixed(1)).await.unwrap();
    }
    // What a crash leaves between recording a purge point and the removal of its rows becoming
    // durable (the purger thread removes them after `purge` returns).
    {
        let db = raw_sled(dir.path());
        let point = serde_json::to_vec(&log_id(1, 4)).unwrap();
        db.open_tree(codec::PURGED_TREE).unwrap().insert(codec::VALUE_KEY, point).unwrap();
        db.flush().unwrap();
    }
    {
        let (mut log, _sm) = open(dir.path());
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
        assert_eq!(state.last_log_id, Some(log_id(1, 4)), "the log ends at the purge point");
        assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
        assert!(log.try_get_log_entries(2..4).await.unwrap().is_empty());
        log.blocking_append(vec![sized(5, 10)]).await.unwrap();
        assert_eq!(log.try_get_log_entries(..).await.unwrap(), vec![sized(5, 10)]);
        assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 5)));
    }
    // Every row of the purged entries, pieces included, is gone once the store has closed.
    assert_eq!(log_rows(dir.path()), vec![codec::index_key(5).to_vec()]);
}
