//! The crate's error type at its API boundary.

/// What went wrong in the edge agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The local store failed (disk, corruption, lock held by another
    /// process).
    #[error("edge agent store: {0}")]
    Store(#[from] sled::Error),
    /// A stored value cannot be decoded.
    #[error("edge agent store holds an unreadable {what}: {source}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Decoder error.
        source: serde_json::Error,
    },
    /// A value cannot be encoded for storage.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being written.
        what: &'static str,
        /// Encoder error.
        source: serde_json::Error,
    },
    /// A locally stored secret (the tenant data key) cannot be sealed or
    /// opened.
    #[error("edge agent secret store: {0}")]
    Secret(String),
    /// The outbox log failed (disk) or holds a damaged frame.
    #[error("edge agent outbox {}: {message}", path.display())]
    Outbox {
        /// The file or directory concerned.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The outbox is at its disk budget.
    #[error("the outbox is full ({bytes} bytes pending, budget {budget})")]
    OutboxFull {
        /// Pending bytes.
        bytes: u64,
        /// Budget.
        budget: u64,
    },
}
