//! Raft storage for the AOS control plane: openraft's log store and state machine over sled.
//!
//! The store is generic over the replicated [`Application`], so it knows nothing of the
//! control plane's domain: it persists the Raft log, the vote, the committed log id and the
//! latest snapshot, applies committed commands to an in-memory `A`, and hands readers the
//! applied state.
//!
//! ```text
//!  openraft ──append/vote/purge──▶ SledLogStore ─┐
//!           ──apply/snapshot─────▶ SledStateMachine ─▶ Application::apply (in memory)
//!                                                 │          ▲
//!  REST API ◀── StateReader::read / subscribe ────┼──────────┘
//!                                                 ▼
//!                              one sled database per node (trees: see `codec`)
//! ```
//!
//! # Layout
//!
//! - [`log_store`]: [`SledLogStore`], the log, vote, committed id and purge point.
//! - `recent`: the log's most recent entries kept decoded in memory for openraft's reads.
//! - [`state_machine`]: [`SledStateMachine`], applying entries and building, storing and
//!   installing snapshots.
//! - [`snapshot_file`]: the file beside the database that holds a stored snapshot's bytes.
//! - [`offline`]: rebuilding the state from a copied data directory without Raft.
//! - [`reader`]: [`StateReader`], the read handle on the applied state.
//! - [`codec`]: tree names, key and value encoding (JSON), the snapshot payload.
//! - [`error`]: [`StoreError`] and its conversion to openraft's `StorageError`.
//!
//! # Durability
//!
//! Appended entries are acknowledged to openraft only after sled has flushed them; the vote,
//! truncation and snapshots are flushed before their calls return (a snapshot's file is synced
//! before the record naming it is written). A purge records its point and returns; reads never
//! go below it, and a thread of the store's removes the rows (see `log_store`). The application
//! state itself is not written on every apply: on open it is restored from the latest snapshot
//! and openraft re-applies the committed entries that follow.
//!
//! openraft's `storage-v2` feature must be enabled: it is what lets a crate implement
//! `RaftLogStorage` and `RaftStateMachine` in openraft 0.9.

#![forbid(unsafe_code)]

pub mod codec;
pub mod error;
pub mod log_store;
pub mod offline;
pub mod reader;
mod recent;
pub mod snapshot_file;
pub mod state_machine;

use std::io::Cursor;
use std::path::Path;

use openraft::{BasicNode, Entry, RaftTypeConfig};

pub use crate::error::StoreError;
pub use crate::log_store::SledLogStore;
pub use crate::reader::StateReader;
pub use crate::state_machine::SledStateMachine;

/// What the store needs from the replicated application (the control plane's state machine).
pub trait Application:
    Default + Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static
{
    /// A command carried by a normal log entry (openraft's `C::D`).
    type Command: openraft::AppData;
    /// The result of applying a command (openraft's `C::R`).
    type Response: openraft::AppDataResponse;

    /// Applies the command committed at `log_index`. Must be deterministic: every node applies
    /// the same commands in the same order and must reach the same state. A command that is
    /// refused is still an `Ok` response; `Err` (with the reason) means this build cannot apply
    /// the command at all — it does not decode, say, because a member running other code wrote
    /// it — and stops the node's state machine rather than let it diverge from members that can.
    fn apply(&mut self, log_index: u64, command: &Self::Command) -> Result<Self::Response, String>;

    /// The response recorded for blank and membership entries.
    fn blank_response() -> Self::Response;
}

/// The openraft type configurations this store works with: `u64` node ids, [`BasicNode`],
/// openraft's own [`Entry`], in-memory snapshot bytes, and commands that can be cloned (the
/// log keeps its most recent entries in memory; make the clone cheap, e.g. an `Arc`).
pub trait StoreTypeConfig:
    RaftTypeConfig<NodeId = u64, Node = BasicNode, Entry = Entry<Self>, SnapshotData = Cursor<Vec<u8>>, D: Clone>
{
}

impl<C> StoreTypeConfig for C where
    C: RaftTypeConfig<
            NodeId = u64,
            Node = BasicNode,
            Entry = Entry<C>,
            SnapshotData = Cursor<Vec<u8>>,
            D: Clone,
        >
{
}

/// sled's page cache for a node's database. Its default (1 GiB) filled with Raft log pages that
/// are read at most once more (to replicate them) while the state they carry is held in memory
/// anyway: under ingest load a node grew by ~2 KB per record instead of ~1 KB, and the page
/// faults of that growth cost CPU (`ingest-bench --agents 4 --duration 20`, alternated runs:
/// 44.0k / 44.3k → 49.4k / 49.3k records/s with this cap; `cluster-bench` unchanged).
pub const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Opens (creating if needed) the node's sled database in `dir` and returns the log store and
/// the state machine, the latter restored from the stored snapshot if there is one.
///
/// The directory belongs to the store; sled locks it, so a second open of the same directory
/// fails until every handle from the first is dropped.
pub fn open<C, A>(dir: &Path) -> Result<(SledLogStore<C>, SledStateMachine<C, A>), StoreError>
where
    C: StoreTypeConfig,
    A: Application<Command = C::D, Response = C::R>,
{
    let db = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES).open()?;
    tracing::info!(dir = %dir.display(), "opened raft store");
    let log_store = SledLogStore::open(db.clone())?;
    let state_machine = SledStateMachine::open(db, dir)?;
    Ok((log_store, state_machine))
}
