//! What is written survives dropping every handle and reopening the same directory.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{RaftLogReader, StorageHelper, Vote};

use crate::support::{entries, log_id, open};

#[tokio::test]
async fn log_vote_and_committed_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let written = entries(6);
    let vote = Vote::new_committed(2, 1);
    {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append(written.clone()).await.unwrap();
        log.save_vote(&vote).await.unwrap();
        log.save_committed(Some(log_id(1, 4))).await.unwrap();
    }

    let (mut log, mut sm) = open(dir.path());
    assert_eq!(log.try_get_log_entries(..).await.unwrap(), written);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 6)));
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 4)));

    // Nothing was snapshotted, so the state machine starts empty...
    assert_eq!(sm.applied_state().await.unwrap().0, None);
    assert!(sm.read(|app| app.applied.is_empty()));
    // ...and openraft's start-up path re-applies the committed entries, and only those.
    let initial = StorageHelper::new(&mut log, &mut sm).get_initial_state().await.unwrap();
    assert_eq!(initial.committed, Some(log_id(1, 4)));
    assert_eq!(sm.read(|app| app.applied.clone()), vec![2, 3, 4]);
    assert_eq!(*sm.subscribe().borrow(), 4);
}

#[tokio::test]
async fn truncation_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append(entries(6)).await.unwrap();
        log.truncate(log_id(1, 4)).await.unwrap();
    }
    let (mut log, _sm) = open(dir.path());
    assert_eq!(log.try_get_log_entries(..).await.unwrap(), entries(3));
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 3)));
}

#[tokio::test]
async fn cleared_committed_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path());
        log.save_committed(Some(log_id(1, 2))).await.unwrap();
        log.save_committed(None).await.unwrap();
    }
    let (mut log, _sm) = open(dir.path());
    assert_eq!(log.read_committed().await.unwrap(), None);
}

#[tokio::test]
async fn second_open_of_a_live_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let second = aos_cp_store::open::<crate::support::TestConfig, crate::support::KvApp>(dir.path());
    assert!(matches!(second, Err(aos_cp_store::StoreError::Database(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_in_flight_together_are_all_acknowledged_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let written = entries(40);
    {
        let (log, _sm) = open(dir.path());
        // Each append is acknowledged by the flusher thread's fsync, not
        // inside `append`; appends queued during one fsync share the next.
        let mut appends = tokio::task::JoinSet::new();
        for entry in written.clone() {
            let mut log = log.clone();
            appends.spawn(async move { log.blocking_append([entry]).await });
        }
        while let Some(done) = appends.join_next().await {
            done.unwrap().unwrap();
        }
        let fsyncs = log.append_fsyncs();
        assert!((1..=40).contains(&fsyncs), "{fsyncs} fsyncs for 40 appends");
    }
    let (mut log, _sm) = open(dir.path());
    assert_eq!(log.try_get_log_entries(..).await.unwrap(), written);
}
