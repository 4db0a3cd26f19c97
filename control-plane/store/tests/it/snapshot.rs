//! Building, storing, restoring and installing snapshots, and purging the log behind them.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{Membership, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageHelper};

use aos_cp_store::codec;
use aos_cp_store::snapshot_file::SNAPSHOT_DIR;

use crate::support::{
    KvApp, blank, entries, log_id, membership, open, raw_sled, set, snapshot_file_path, subject_and_verb,
};

/// The names of the files in the store's snapshot directory, sorted.
fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(SNAPSHOT_DIR))
        .map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn snapshot_and_purge_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (built, built_bytes);
    {
        let (mut log, mut sm) = open(dir.path());
        assert_eq!(log.appended_bytes(), 0);
        log.blocking_append(entries(10)).await.unwrap();
        let appended = log.appended_bytes();
        assert!(appended > 0, "ten entries appended, no bytes counted");
        sm.apply(entries(7)).await.unwrap();
        assert_eq!(sm.reader().snapshot_bytes(), 0, "no snapshot yet");
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        built = snapshot.meta;
        built_bytes = snapshot.snapshot.get_ref().len() as u64;
        // The snapshot trigger weighs the log's growth against this size.
        assert_eq!(sm.reader().snapshot_bytes(), built_bytes);
        log.purge(log_id(1, 5)).await.unwrap();
        // Applied past the snapshot: in memory only, not persisted by the state machine.
        sm.apply(entries(10).split_off(8)).await.unwrap();
        log.save_committed(Some(log_id(1, 10))).await.unwrap();
    }

    let (mut log, mut sm) = open(dir.path());
    // The state machine comes back at the snapshot, not at what was applied after it.
    let (last_applied, last_membership) = sm.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(log_id(1, 7)));
    assert_eq!(last_membership.log_id(), &Some(log_id(1, 0)));
    assert_eq!(last_membership.membership(), &Membership::new(vec![[1, 2, 3].into()], None));
    assert_eq!(sm.read(|app| app.applied.clone()), vec![2, 3, 4, 5, 6, 7]);
    assert_eq!(*sm.subscribe().borrow(), 7);
    assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, built);
    assert_eq!(sm.reader().snapshot_bytes(), built_bytes, "restored with the snapshot");
    assert_eq!(log.appended_bytes(), 0, "counted from the store's opening");

    // Purged entries are gone and the purge point is remembered.
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(1, 10)));
    assert!(log.try_get_log_entries(0..=5).await.unwrap().is_empty());
    assert_eq!(log.try_get_log_entries(..).await.unwrap(), entries(10).split_off(6));

    // openraft replays the committed entries after the snapshot.
    StorageHelper::new(&mut log, &mut sm).get_initial_state().await.unwrap();
    assert_eq!(sm.read(|app| app.applied.clone()), (2..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn purging_everything_keeps_the_last_log_id() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path());
        log.blocking_append(entries(4)).await.unwrap();
        log.purge(log_id(1, 4)).await.unwrap();
    }
    let (mut log, _sm) = open(dir.path());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
    assert_eq!(state.last_log_id, Some(log_id(1, 4)));
    assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
}

#[tokio::test]
async fn install_snapshot_replaces_state_and_survives_reopen() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (_leader_log, mut leader) = open(leader_dir.path());
    leader.apply(entries(5)).await.unwrap();
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let snapshot_bytes = snapshot.snapshot.get_ref().len() as u64;
    let leader_state: KvApp = leader.read(Clone::clone);

    let follower_dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut follower) = open(follower_dir.path());
        // The follower holds state the snapshot must replace, not merge with.
        follower.apply([membership(1, 0, &[9]), blank(1, 1), set(1, 2)]).await.unwrap();
        let reader = follower.reader();
        let mut applied = follower.subscribe();
        assert_eq!(*applied.borrow_and_update(), 2);

        let mut received = follower.begin_receiving_snapshot().await.unwrap();
        *received = *snapshot.snapshot;
        follower.install_snapshot(&snapshot.meta, received).await.unwrap();

        assert!(applied.has_changed().unwrap());
        assert_eq!(*applied.borrow_and_update(), 5);
        assert_eq!(reader.read(Clone::clone), leader_state);
        assert_eq!(reader.last_applied(), Some(log_id(1, 5)));
        assert_eq!(follower.applied_state().await.unwrap().1, snapshot.meta.last_membership);
        assert_eq!(follower.get_current_snapshot().await.unwrap().unwrap().meta, snapshot.meta);
        assert_eq!(reader.snapshot_bytes(), snapshot_bytes);
    }

    let (_log, mut follower) = open(follower_dir.path());
    assert_eq!(follower.read(Clone::clone), leader_state);
    assert_eq!(follower.applied_state().await.unwrap().0, Some(log_id(1, 5)));
}

#[tokio::test]
async fn snapshot_whose_payload_disagrees_with_its_metadata_is_refused() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (_leader_log, mut leader) = open(leader_dir.path());
    leader.apply(entries(5)).await.unwrap();
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let forged = SnapshotMeta { last_log_id: Some(log_id(1, 9)), ..snapshot.meta.clone() };

    let follower_dir = tempfile::tempdir().unwrap();
    let (_log, mut follower) = open(follower_dir.path());
    let mut received = follower.begin_receiving_snapshot().await.unwrap();
    *received = *snapshot.snapshot;
    let error = follower.install_snapshot(&forged, received).await.unwrap_err();

    assert_eq!(subject_and_verb(&error).1, "Read");
    assert!(error.to_string().contains("does not match its metadata"), "{error}");
    assert_eq!(follower.applied_state().await.unwrap().0, None);
    assert!(follower.get_current_snapshot().await.unwrap().is_none());
}

#[tokio::test]
async fn applying_publishes_the_last_applied_index() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open(dir.path());
    let reader = sm.reader();
    let mut applied = reader.subscribe();
    assert_eq!(*applied.borrow_and_update(), 0);

    let waiter =
        tokio::spawn(async move { applied.wait_for(|&index| index >= 3).await.map(|index| *index).unwrap() });
    let responses = sm.apply(entries(3)).await.unwrap();
    assert_eq!(waiter.await.unwrap(), 3);
    assert_eq!(responses.len(), 4);
    assert_eq!(responses[2].previous, None);

    // A second write to the same key answers with the previous value.
    let responses = sm
        .apply([set(2, 4).clone(), {
            let mut again = set(2, 5);
            again.payload =
                openraft::EntryPayload::Normal(crate::support::KvCommand::Delete { key: "key4".into() });
            again
        }])
        .await
        .unwrap();
    assert!(responses[1].previous.is_some());
    drop(sm);
    // The reader outlives the state machine handle it came from.
    assert_eq!(reader.last_applied(), Some(log_id(2, 5)));
    assert!(reader.read(|app| !app.map.contains_key("key4")));
}

#[tokio::test]
async fn an_entry_the_application_cannot_apply_stops_the_state_machine_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open(dir.path());
    let reader = sm.reader();
    let mut unappliable = set(1, 3);
    unappliable.payload = openraft::EntryPayload::Normal(crate::support::KvCommand::Delete {
        key: crate::support::UNAPPLIABLE_KEY.into(),
    });
    let error = sm.apply([set(1, 1), set(1, 2), unappliable, set(1, 4)]).await.unwrap_err();
    assert!(error.to_string().contains("cannot be applied by this build"), "{error}");
    assert_eq!(subject_and_verb(&error).0["Apply"]["index"], 3, "{error}");
    // Nothing at or after the entry was applied.
    assert_eq!(reader.read(|app| app.applied.clone()), vec![1, 2]);
    assert_eq!(reader.last_applied(), Some(log_id(1, 2)));
}

#[tokio::test]
async fn a_snapshot_is_a_file_of_its_own_and_only_the_newest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let second;
    {
        let (_log, mut sm) = open(dir.path());
        sm.apply(entries(4)).await.unwrap();
        let first = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snapshot_files(dir.path()), vec![format!("{}.snap", first.meta.snapshot_id)]);
        sm.apply(entries(6).split_off(5)).await.unwrap();
        second = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(
            snapshot_files(dir.path()),
            vec![format!("{}.snap", second.meta.snapshot_id)],
            "replaced file removed"
        );
    }
    // The bytes are in the file, not in sled.
    assert_eq!(std::fs::read(snapshot_file_path(dir.path())).unwrap(), *second.snapshot.get_ref());
    {
        let db = raw_sled(dir.path());
        assert!(db.open_tree(codec::SNAPSHOT_TREE).unwrap().get(codec::SNAPSHOT_DATA_KEY).unwrap().is_none());
    }
    let (_log, mut sm) = open(dir.path());
    assert_eq!(sm.read(|app| app.applied.clone()), vec![2, 3, 4, 5, 6]);
    assert_eq!(
        sm.get_current_snapshot().await.unwrap().unwrap().snapshot.into_inner(),
        second.snapshot.into_inner()
    );
}

#[tokio::test]
async fn files_no_record_names_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let built;
    {
        let (_log, mut sm) = open(dir.path());
        sm.apply(entries(3)).await.unwrap();
        built = sm.get_snapshot_builder().await.build_snapshot().await.unwrap().meta;
    }
    // What a crash can leave: a write cut short, and a replaced file not yet removed.
    let snapshots = dir.path().join(SNAPSHOT_DIR);
    std::fs::write(snapshots.join("1-1-9.snap.partial"), b"{\"last_applied\"").unwrap();
    std::fs::write(snapshots.join("1-1-2.snap"), b"{}").unwrap();

    let (_log, mut sm) = open(dir.path());
    assert_eq!(snapshot_files(dir.path()), vec![format!("{}.snap", built.snapshot_id)]);
    assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, built);
}

#[tokio::test]
async fn a_snapshot_stored_in_sled_by_an_earlier_version_is_read_then_moved_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let built;
    {
        let (_log, mut sm) = open(dir.path());
        sm.apply(entries(3)).await.unwrap();
        built = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    }
    // Rewrite the store as earlier versions left it: the bytes in the tree, no file.
    {
        let db = raw_sled(dir.path());
        let tree = db.open_tree(codec::SNAPSHOT_TREE).unwrap();
        tree.insert(codec::SNAPSHOT_DATA_KEY, built.snapshot.get_ref().as_slice()).unwrap();
        tree.remove(codec::SNAPSHOT_FILE_KEY).unwrap();
        db.flush().unwrap();
    }
    std::fs::remove_dir_all(dir.path().join(SNAPSHOT_DIR)).unwrap();
    {
        let (_log, mut sm) = open(dir.path());
        assert_eq!(sm.read(|app| app.applied.clone()), vec![2, 3]);
        assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, built.meta);
        sm.apply(entries(4).split_off(4)).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    }
    let db = raw_sled(dir.path());
    assert!(
        db.open_tree(codec::SNAPSHOT_TREE).unwrap().get(codec::SNAPSHOT_DATA_KEY).unwrap().is_none(),
        "moved"
    );
    drop(db);
    assert_eq!(snapshot_files(dir.path()).len(), 1);
    let (_log, sm) = open(dir.path());
    assert_eq!(sm.read(|app| app.applied.clone()), vec![2, 3, 4]);
}
