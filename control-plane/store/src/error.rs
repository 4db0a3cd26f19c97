//! The crate's one error type, [`StoreError`], and its conversion into openraft's
//! [`StorageError`].
//!
//! Every fallible step inside the store produces a [`StoreError`]; the trait implementations
//! convert it at the openraft boundary with [`StoreError::into_storage_error`], naming *what*
//! was being touched ([`ErrorSubject`]) and *how* ([`ErrorVerb`]). openraft treats any
//! `StorageError` as fatal for the node, which is what a corrupt or unwritable store must be.

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

/// An error from the Raft storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database failed (I/O error, corruption detected by sled, lock held by
    /// another process).
    #[error("raft storage database error: {0}")]
    Database(#[from] sled::Error),

    /// The thread that makes appended log entries durable could not start.
    #[error("cannot start the raft log flusher thread: {0}")]
    FlusherThread(std::io::Error),

    /// The thread that removes purged log entries could not start.
    #[error("cannot start the raft log purger thread: {0}")]
    PurgerThread(std::io::Error),

    /// The task encoding a snapshot failed (it panicked or the runtime is shutting down).
    #[error("snapshot encoding task failed: {0}")]
    SnapshotTask(String),

    /// A value could not be encoded before being written.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded, e.g. `log entry`.
        what: &'static str,
        /// The encoder's error.
        source: serde_json::Error,
    },

    /// Stored bytes could not be decoded: the data on disk is corrupt or from an incompatible
    /// version.
    #[error("cannot decode stored {what}: {source}")]
    Decode {
        /// What was being decoded, e.g. `vote`.
        what: &'static str,
        /// The decoder's error.
        source: serde_json::Error,
    },

    /// A key in the log tree is not an 8-byte big-endian log index.
    #[error("log key of {len} bytes is not a log index")]
    BadLogKey {
        /// Length of the offending key.
        len: usize,
    },

    /// A piece of a log entry without the rows before it (see `codec`): the log tree was
    /// changed outside the store.
    #[error("log entry {index} has a piece without the ones before it")]
    LogPieceAlone {
        /// The entry's index.
        index: u64,
    },

    /// A compressed log entry (see `codec`) whose bytes do not decompress to the length its
    /// header states: the data on disk is corrupt.
    #[error("log entry {index} is compressed but cannot be decompressed: {reason}")]
    LogEntryCompression {
        /// The entry's index.
        index: u64,
        /// What was wrong.
        reason: String,
    },

    /// A committed entry's command cannot be applied by this build at all (see
    /// `Application::apply`).
    #[error("committed log entry {index} cannot be applied by this build: {reason}")]
    Unappliable {
        /// The entry's index.
        index: u64,
        /// Why.
        reason: String,
    },

    /// The entry stored under a log index records a different index.
    #[error("log entry stored at index {key} records index {found}")]
    LogIndexMismatch {
        /// The index the entry is stored under.
        key: u64,
        /// The index written inside the entry.
        found: u64,
    },

    /// A snapshot's payload does not describe the same point in the log as its metadata.
    #[error("snapshot payload does not match its metadata (payload at `{payload}`, metadata at `{meta}`)")]
    SnapshotMismatch {
        /// Last applied log id recorded in the payload, `none` if empty.
        payload: String,
        /// Last log id recorded in the metadata, `none` if empty.
        meta: String,
    },

    /// The directory holds no sled database (offline reads never create one).
    #[error("{dir} is not a node's raft store (no sled database there)")]
    NotAStore {
        /// The directory given.
        dir: String,
    },

    /// The log has a hole between the snapshot and the committed index.
    #[error("log entry {expected} is missing (next stored entry is {found})")]
    LogGap {
        /// The index that should be next.
        expected: u64,
        /// The index found instead.
        found: u64,
    },

    /// A snapshot file could not be created, written, synced, read or removed.
    #[error("cannot {what} snapshot file {path}: {source}")]
    SnapshotFileIo {
        /// The operation, e.g. `write`.
        what: &'static str,
        /// The file (or directory).
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A snapshot file is not what the record naming it says (truncated, altered) or its name
    /// is not one the store writes.
    #[error("snapshot file {path} {problem}")]
    SnapshotFileBad {
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },

    /// Only one of the snapshot's two records (metadata, data) is present.
    #[error("stored snapshot is incomplete: {missing} is missing")]
    SnapshotIncomplete {
        /// The missing record.
        missing: &'static str,
    },
}

impl StoreError {
    /// Converts this error into openraft's [`StorageError`], recording the subject being
    /// accessed and the operation.
    pub fn into_storage_error(self, subject: ErrorSubject<u64>, verb: ErrorVerb) -> StorageError<u64> {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}
