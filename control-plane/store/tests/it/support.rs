//! A tiny key-value application, a type config over it, and helpers to build entries.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use aos_cp_store::codec;
use aos_cp_store::offline::{Replayed, replay};
use aos_cp_store::{Application, SledLogStore, SledStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A command of the test application; values are arbitrary JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KvCommand {
    Set { key: String, value: Value },
    Delete { key: String },
}

/// The previous value of the key touched, or `None` for blank and membership entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvResponse {
    pub previous: Option<Value>,
}

/// Key-value map plus the log indices it applied, so tests can see exactly what was applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KvApp {
    pub map: BTreeMap<String, Value>,
    pub applied: Vec<u64>,
}

/// The key whose deletion the test application cannot apply (see [`KvApp`]'s `apply`).
pub const UNAPPLIABLE_KEY: &str = "!unappliable";

impl Application for KvApp {
    type Command = KvCommand;
    type Response = KvResponse;

    /// Deleting [`UNAPPLIABLE_KEY`] stands for a command this build cannot apply.
    fn apply(&mut self, log_index: u64, command: &KvCommand) -> Result<KvResponse, String> {
        if matches!(command, KvCommand::Delete { key } if key == UNAPPLIABLE_KEY) {
            return Err(format!("entry {log_index}: unknown command"));
        }
        self.applied.push(log_index);
        let previous = match command {
            KvCommand::Set { key, value } => self.map.insert(key.clone(), value.clone()),
            KvCommand::Delete { key } => self.map.remove(key),
        };
        Ok(KvResponse { previous })
    }

    fn blank_response() -> KvResponse {
        KvResponse { previous: None }
    }
}

openraft::declare_raft_types!(
    /// Type config of the test application.
    pub TestConfig:
        D = KvCommand,
        R = KvResponse,
);

pub type LogStore = SledLogStore<TestConfig>;
pub type StateMachine = SledStateMachine<TestConfig, KvApp>;

/// Runs `attempt` until it does not fail on sled's file lock, or a deadline passes. A handle
/// dropped just before may still hold the lock for a moment (its flusher thread exits
/// asynchronously); any other outcome is returned as it is.
fn waiting_out_lock<T, E: std::fmt::Display>(mut attempt: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match attempt() {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Opens the store, returning the error (see [`waiting_out_lock`]).
pub fn try_open(dir: &Path) -> Result<(LogStore, StateMachine), aos_cp_store::StoreError> {
    waiting_out_lock(|| aos_cp_store::open::<TestConfig, KvApp>(dir))
}

/// Opens the sled database under `dir` directly (every store handle closed).
pub fn raw_sled(dir: &Path) -> sled::Db {
    waiting_out_lock(|| sled::open(dir)).unwrap()
}

/// Every row of the log tree as stored (key, value), read with every store handle closed.
pub fn log_tree_rows(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = raw_sled(dir);
    let tree = db.open_tree(aos_cp_store::codec::LOG_TREE).unwrap();
    tree.iter().map(|row| row.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap()).collect()
}

/// [`try_open`], which must succeed.
pub fn open(dir: &Path) -> (LogStore, StateMachine) {
    try_open(dir).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

pub fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

pub fn membership(term: u64, index: u64, voters: &[u64]) -> Entry<TestConfig> {
    let membership = Membership::new(vec![voters.iter().copied().collect()], None);
    Entry { log_id: log_id(term, index), payload: EntryPayload::Membership(membership) }
}

pub fn blank(term: u64, index: u64) -> Entry<TestConfig> {
    Entry { log_id: log_id(term, index), payload: EntryPayload::Blank }
}

/// A normal entry setting `key<index>` to a JSON value that exercises every JSON kind.
pub fn set(term: u64, index: u64) -> Entry<TestConfig> {
    let value =
        serde_json::json!({"index": index, "ratio": 0.5, "tags": ["a", null, true], "nested": {"x": -1}});
    let command = KvCommand::Set { key: format!("key{index}"), value };
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(command) }
}

/// Entries 0..=last: a membership entry, a blank entry, then `set` entries.
pub fn entries(last: u64) -> Vec<Entry<TestConfig>> {
    (0..=last)
        .map(|i| match i {
            0 => membership(1, 0, &[1, 2, 3]),
            1 => blank(1, 1),
            i => set(1, i),
        })
        .collect()
}

/// The `(subject, verb)` of a storage error, read from its serialised form.
pub fn subject_and_verb(error: &openraft::StorageError<u64>) -> (Value, Value) {
    let json = serde_json::to_value(error).unwrap();
    let io = &json["IO"]["source"];
    (io["subject"].clone(), io["verb"].clone())
}

/// Replays the log offline, returning the error (see [`waiting_out_lock`]).
pub fn try_replay(dir: &Path) -> Result<Replayed<KvApp>, aos_cp_store::StoreError> {
    waiting_out_lock(|| {
        replay::<KvApp, KvCommand>(dir, |app, index, command| {
            app.apply(index, command).unwrap();
        })
    })
}

/// [`try_replay`], which must succeed.
pub fn replay_kv(dir: &Path) -> Replayed<KvApp> {
    try_replay(dir).unwrap()
}

/// The stored snapshot's file record, read with every store handle closed.
pub fn snapshot_file_record(dir: &Path) -> aos_cp_store::snapshot_file::SnapshotFile {
    let db = raw_sled(dir);
    let record = db.open_tree(codec::SNAPSHOT_TREE).unwrap().get(codec::SNAPSHOT_FILE_KEY).unwrap();
    serde_json::from_slice(&record.expect("a snapshot file record")).unwrap()
}

/// The path of the stored snapshot's file.
pub fn snapshot_file_path(dir: &Path) -> std::path::PathBuf {
    dir.join(aos_cp_store::snapshot_file::SNAPSHOT_DIR).join(snapshot_file_record(dir).name)
}

/// Replaces the stored snapshot's bytes with `data` and updates its record to match, as
/// someone rewriting the store with care would.
pub fn rewrite_snapshot_file(dir: &Path, data: &[u8]) {
    let mut record = snapshot_file_record(dir);
    std::fs::write(dir.join(aos_cp_store::snapshot_file::SNAPSHOT_DIR).join(&record.name), data).unwrap();
    record.len = data.len() as u64;
    record.crc32 = crc32fast::hash(data);
    let db = raw_sled(dir);
    let tree = db.open_tree(codec::SNAPSHOT_TREE).unwrap();
    tree.insert(codec::SNAPSHOT_FILE_KEY, serde_json::to_vec(&record).unwrap()).unwrap();
    db.flush().unwrap();
}
