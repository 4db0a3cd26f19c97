//! Offline reading of a node's store: rebuilds the application state from a (copied) data
//! directory without starting Raft, for forensics such as `aosctl audit verify --data-dir`.
//!
//! The state is what the node itself would rebuild on open: the stored snapshot, then every
//! normal log entry after it up to the persisted committed log id, applied in order. Entries
//! past the committed id are counted but not applied: nothing on disk says they were ever
//! committed.
//!
//! sled locks an open database, so a running node's directory cannot be read here; copy it
//! first (a copy of a live directory is what sled would recover after a crash).

use std::path::Path;

use openraft::LogId;
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::codec::{self, SnapshotPayload, VALUE_KEY};
use crate::error::StoreError;
use crate::snapshot_file::{self, SnapshotFiles};

/// The state rebuilt from a data directory, with where it came from.
#[derive(Debug)]
pub struct Replayed<S> {
    /// The application state.
    pub state: S,
    /// Last log index covered by the stored snapshot (0 when there is none).
    pub snapshot_index: u64,
    /// Last log index applied (snapshot plus replayed entries).
    pub applied_index: u64,
    /// Normal entries applied after the snapshot.
    pub replayed_entries: u64,
    /// Entries stored after the committed log id, not applied.
    pub uncommitted_entries: u64,
}

/// The JSON shape of a stored `openraft::Entry`, decoded without the node's type config so
/// offline tools need only the application's command type.
#[derive(Deserialize)]
struct StoredEntry<D> {
    log_id: LogId<u64>,
    payload: StoredPayload<D>,
}

#[derive(Deserialize)]
enum StoredPayload<D> {
    Blank,
    Normal(D),
    Membership(IgnoredAny),
}

/// Rebuilds the state in the sled database at `dir`: `S` is the snapshot's state type, `D`
/// the command type, `apply(state, log_index, command)` the application's apply.
pub fn replay<S, D>(dir: &Path, mut apply: impl FnMut(&mut S, u64, &D)) -> Result<Replayed<S>, StoreError>
where
    S: DeserializeOwned + Default,
    D: DeserializeOwned,
{
    if !dir.join("conf").exists() && !dir.join("db").exists() {
        return Err(StoreError::NotAStore { dir: dir.display().to_string() });
    }
    let db = sled::Config::new().path(dir).open()?;
    let snapshot_tree = db.open_tree(codec::SNAPSHOT_TREE)?;
    let (mut state, snapshot_index) =
        match snapshot_file::read_stored(&snapshot_tree, &SnapshotFiles::new(dir))? {
            Some((_meta, data)) => {
                let payload: SnapshotPayload<S> = codec::decode("snapshot", &data)?;
                (payload.state, payload.last_applied.map_or(0, |id| id.index))
            }
            None => (S::default(), 0),
        };
    let committed: Option<LogId<u64>> =
        codec::get(&db.open_tree(codec::COMMITTED_TREE)?, VALUE_KEY, "committed log id")?;
    let committed_index = committed.map_or(0, |id| id.index);
    let log = db.open_tree(codec::LOG_TREE)?;
    let mut replayed = Replayed {
        state: S::default(),
        snapshot_index,
        applied_index: snapshot_index,
        replayed_entries: 0,
        uncommitted_entries: 0,
    };
    for read in codec::LogEntries::new(log.range(codec::index_key(snapshot_index.saturating_add(1))..)) {
        let (index, value) = read?;
        if index > committed_index {
            replayed.uncommitted_entries += 1;
            continue;
        }
        let entry: StoredEntry<D> = codec::decode("log entry", &value)?;
        if entry.log_id.index != index {
            return Err(StoreError::LogIndexMismatch { key: index, found: entry.log_id.index });
        }
        if index != replayed.applied_index + 1 {
            return Err(StoreError::LogGap { expected: replayed.applied_index + 1, found: index });
        }
        match &entry.payload {
            StoredPayload::Normal(command) => {
                apply(&mut state, index, command);
                replayed.replayed_entries += 1;
            }
            StoredPayload::Blank | StoredPayload::Membership(_) => {}
        }
        replayed.applied_index = index;
    }
    replayed.state = state;
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_is_not_a_store_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let err = replay::<u64, u64>(dir.path(), |_, _, _| {}).unwrap_err();
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was created");
    }
}
