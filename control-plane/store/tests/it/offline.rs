//! Rebuilding the state offline from a data directory, as forensics tools do.

use openraft::RaftSnapshotBuilder;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};

use crate::support::{KvApp, entries, log_id, open, replay_kv, try_replay};

#[tokio::test]
async fn offline_replay_is_the_snapshot_plus_committed_entries() {
    let dir = tempfile::tempdir().unwrap();
    let online: KvApp;
    {
        let (mut log, mut sm) = open(dir.path());
        log.blocking_append(entries(12)).await.unwrap();
        sm.apply(entries(6)).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        log.purge(log_id(1, 4)).await.unwrap();
        sm.apply(entries(10).split_off(7)).await.unwrap();
        // Entries 11 and 12 are stored but not known to be committed.
        log.save_committed(Some(log_id(1, 10))).await.unwrap();
        online = sm.read(Clone::clone);
    }
    let replayed = replay_kv(dir.path());
    assert_eq!(replayed.snapshot_index, 6);
    assert_eq!(replayed.applied_index, 10);
    assert_eq!(replayed.replayed_entries, 4);
    assert_eq!(replayed.uncommitted_entries, 2);
    assert_eq!(replayed.state, online, "offline state equals what the node had applied");
}

#[tokio::test]
async fn offline_replay_without_a_snapshot_starts_from_the_first_entry() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append(entries(5)).await.unwrap();
        log.save_committed(Some(log_id(1, 5))).await.unwrap();
    }
    let replayed = replay_kv(dir.path());
    assert_eq!(replayed.snapshot_index, 0);
    assert_eq!(replayed.state.applied, vec![2, 3, 4, 5]);
}

#[tokio::test]
async fn a_hole_in_the_committed_log_is_an_error_not_a_silent_skip() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path());
        let mut with_hole = entries(6);
        with_hole.remove(3);
        log.blocking_append(with_hole).await.unwrap();
        log.save_committed(Some(log_id(1, 6))).await.unwrap();
    }
    let err = try_replay(dir.path()).unwrap_err();
    assert!(err.to_string().contains("log entry 3 is missing"), "{err}");
}
