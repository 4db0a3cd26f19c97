//! [`SledStateMachine`]: applies committed entries to the [`Application`] and owns the snapshot.
//!
//! The application state lives in memory; what is persisted is the latest snapshot: its
//! metadata in the [`SNAPSHOT_TREE`](crate::codec::SNAPSHOT_TREE), its bytes in a file beside
//! the database (`snapshot_file`). On open the state is restored from that snapshot, and
//! openraft re-applies the committed entries after it (the log store persists the committed
//! log id). A snapshot is flushed to disk before it is reported as built or installed,
//! so openraft never purges log entries that no durable snapshot covers.

use std::fmt;
use std::io::Cursor;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StoredMembership,
};
use tokio::sync::watch;

use crate::codec::{self, SNAPSHOT_DATA_KEY, SNAPSHOT_FILE_KEY, SNAPSHOT_META_KEY, SnapshotPayload};
use crate::error::StoreError;
use crate::reader::{Applied, Shared, StateReader, applied_index};
use crate::snapshot_file::{self, SnapshotFiles};
use crate::{Application, StoreTypeConfig};

/// The Raft state machine over an [`Application`], with snapshots persisted beside sled.
///
/// Cloning shares the same state; openraft uses a clone as the snapshot builder.
pub struct SledStateMachine<C, A> {
    shared: Arc<Shared<A>>,
    db: sled::Db,
    snapshot: sled::Tree,
    files: SnapshotFiles,
    /// Serialises snapshot writes, so an older built snapshot never replaces a newer one, and
    /// reads of the stored snapshot with them, so a read never finds its file removed.
    snapshot_write: Arc<Mutex<()>>,
    _config: PhantomData<fn() -> C>,
}

impl<C, A: Application> SledStateMachine<C, A> {
    /// Opens the snapshot tree in `db` (whose directory is `dir`) and restores the state from
    /// the stored snapshot, if any. Snapshot files no record names are removed.
    pub(crate) fn open(db: sled::Db, dir: &std::path::Path) -> Result<Self, StoreError> {
        let snapshot = db.open_tree(codec::SNAPSHOT_TREE)?;
        let files = SnapshotFiles::new(dir);
        let stored = snapshot_file::read_stored(&snapshot, &files)?;
        let removed = files.remove_all_but(snapshot_file::stored_file_name(&snapshot)?.as_deref())?;
        if removed > 0 {
            tracing::info!(removed, "removed snapshot files no record names");
        }
        let (applied, snapshot_bytes) = match stored {
            Some((meta, data)) => {
                let applied = decode_payload::<A>(&meta, &data)?;
                tracing::info!(last_applied = ?applied.last_applied, "restored state from snapshot");
                (applied, data.len())
            }
            None => (Applied::default(), 0),
        };
        let shared = Shared::new(applied);
        shared.set_snapshot_bytes(snapshot_bytes);
        Ok(Self {
            shared,
            db,
            snapshot,
            files,
            snapshot_write: Arc::new(Mutex::new(())),
            _config: PhantomData,
        })
    }

    /// Runs `f` on the applied application state (see [`StateReader::read`]).
    pub fn read<R>(&self, f: impl FnOnce(&A) -> R) -> R {
        f(&self.shared.read().app)
    }

    /// Watches the index of the last applied log entry (see [`StateReader::subscribe`]).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.reader().subscribe()
    }

    /// A cloneable read handle that stays valid after the state machine is handed to openraft.
    pub fn reader(&self) -> StateReader<A> {
        StateReader::new(Arc::clone(&self.shared))
    }

    /// Writes a snapshot's bytes to a file of their own and its metadata and file record to the
    /// snapshot tree, flushed, on the blocking pool, and hands the bytes back. With
    /// `only_if_newer`, a stored snapshot at a later log id is kept instead.
    ///
    /// A large state's snapshot is a write of hundreds of megabytes (measured at 175 MB:
    /// 0.6–1.5 s), which a runtime worker must not spend blocked while Raft's heartbeats and
    /// client requests wait, and which must not go through sled, whose flush the log's appends
    /// share (see `snapshot_file`; benches/README.md, "Record ingest").
    async fn persist_snapshot(
        &self,
        meta: &SnapshotMeta<u64, BasicNode>,
        data: Vec<u8>,
        only_if_newer: bool,
    ) -> Result<Vec<u8>, StoreError> {
        let (db, tree, files, lock, meta) = (
            self.db.clone(),
            self.snapshot.clone(),
            self.files.clone(),
            Arc::clone(&self.snapshot_write),
            meta.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            if only_if_newer {
                let stored: Option<SnapshotMeta<u64, BasicNode>> =
                    codec::get(&tree, SNAPSHOT_META_KEY, "snapshot metadata")?;
                if let Some(stored) = stored.filter(|s| s.last_log_id > meta.last_log_id) {
                    tracing::debug!(stored = %stored.snapshot_id, built = %meta.snapshot_id, "kept newer snapshot");
                    return Ok(data);
                }
            }
            let record = files.write(&meta.snapshot_id, &data)?;
            let mut batch = sled::Batch::default();
            batch.insert(SNAPSHOT_META_KEY, codec::encode("snapshot metadata", &meta)?);
            batch.insert(SNAPSHOT_FILE_KEY, codec::encode("snapshot file record", &record)?);
            batch.remove(SNAPSHOT_DATA_KEY);
            tree.apply_batch(batch)?;
            db.flush()?;
            // The replaced snapshot's file; a failure here only leaves it for the next open.
            if let Err(e) = files.remove_all_but(Some(&record.name)) {
                tracing::warn!(error = %e, "cannot remove a replaced snapshot file");
            }
            Ok(data)
        })
        .await
        .map_err(|e| StoreError::SnapshotTask(e.to_string()))?
    }
}

/// How much nicer than the node's other threads the snapshot encoder runs (`nice(1)` steps).
const SNAPSHOT_NICENESS: i32 = 10;

/// Runs `f` on a thread of its own at a lower scheduling priority and waits for its result.
///
/// A snapshot's encode is seconds of CPU on a large state (1.1–1.9 s for 175 MB), competing with
/// the threads that answer Raft's AppendEntries and heartbeats, which must answer within 50 ms
/// (benches/README.md, "Record ingest": under ingest load such snapshots cost a 3-node cluster
/// its leader's quorum for over a second, a problem this alone does not solve). A thread of its
/// own, because an unprivileged process cannot raise a thread's priority back once it lowered
/// it, so a pooled thread would stay slow for whatever ran on it next.
async fn in_background<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, StoreError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("raft-snapshot".to_owned())
        .spawn(move || {
            // `None`: the calling thread, on Linux. Failing to lower it only costs fairness.
            if let Err(e) = rustix::process::setpriority_process(None, SNAPSHOT_NICENESS) {
                tracing::debug!(error = %e, "cannot lower the snapshot thread's priority");
            }
            let _ = tx.send(f());
        })
        .map_err(|e| StoreError::SnapshotTask(format!("cannot start the snapshot thread: {e}")))?;
    rx.await.map_err(|_| StoreError::SnapshotTask("the snapshot thread ended without a result".to_owned()))
}

/// Decodes snapshot bytes and checks they describe the point in the log `meta` names.
fn decode_payload<A: Application>(
    meta: &SnapshotMeta<u64, BasicNode>,
    data: &[u8],
) -> Result<Applied<A>, StoreError> {
    let payload: SnapshotPayload<A> = codec::decode("snapshot", data)?;
    if payload.last_applied != meta.last_log_id || payload.last_membership != meta.last_membership {
        return Err(StoreError::SnapshotMismatch {
            payload: describe(payload.last_applied),
            meta: describe(meta.last_log_id),
        });
    }
    Ok(Applied {
        app: payload.state,
        last_applied: payload.last_applied,
        last_membership: payload.last_membership,
    })
}

/// A log id for an error message.
fn describe(log_id: Option<LogId<u64>>) -> String {
    log_id.map_or_else(|| "none".to_owned(), |id| id.to_string())
}

/// A snapshot id derived from the log id it covers: equal ids mean equal contents, because the
/// state machine is deterministic.
fn snapshot_id(last_applied: Option<LogId<u64>>) -> String {
    match last_applied {
        Some(id) => format!("{}-{}-{}", id.leader_id.term, id.leader_id.node_id, id.index),
        None => "empty".to_owned(),
    }
}

impl<C, A> Clone for SledStateMachine<C, A> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            db: self.db.clone(),
            snapshot: self.snapshot.clone(),
            files: self.files.clone(),
            snapshot_write: Arc::clone(&self.snapshot_write),
            _config: PhantomData,
        }
    }
}

impl<C, A> fmt::Debug for SledStateMachine<C, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStateMachine")
            .field("last_applied", &self.shared.read().last_applied)
            .finish_non_exhaustive()
    }
}

impl<C, A> RaftSnapshotBuilder<C> for SledStateMachine<C, A>
where
    C: StoreTypeConfig,
    A: Application<Command = C::D, Response = C::R>,
{
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<u64>> {
        // Copy under the lock, encode outside it, so applying is held up only for the copy.
        let started = std::time::Instant::now();
        let Applied { app, last_applied, last_membership } = self.shared.read().clone();
        let copied = started.elapsed();
        let payload = SnapshotPayload { last_applied, last_membership, state: app };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: payload.last_membership.clone(),
            snapshot_id: snapshot_id(last_applied),
        };
        let to_storage = |e: StoreError| {
            e.into_storage_error(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write)
        };
        // Encoding the whole state takes long on a large one (1–2 s for 175 MB): on a thread of
        // its own, never a runtime worker, at a lower priority (see `in_background`).
        let data = in_background(move || codec::encode("snapshot", &payload))
            .await
            .and_then(|encoded| encoded)
            .map_err(to_storage)?;
        let encoded = started.elapsed();
        let data = self.persist_snapshot(&meta, data, true).await.map_err(to_storage)?;
        self.shared.set_snapshot_bytes(data.len());
        // The phases' times, because a large state's snapshot is felt by
        // writes: the copy holds up applying, the write shares the disk.
        tracing::info!(
            snapshot_id = %meta.snapshot_id,
            bytes = data.len(),
            copy_ms = copied.as_millis(),
            encode_ms = (encoded - copied).as_millis(),
            persist_ms = (started.elapsed() - encoded).as_millis(),
            "built snapshot"
        );
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl<C, A> RaftStateMachine<C> for SledStateMachine<C, A>
where
    C: StoreTypeConfig,
    A: Application<Command = C::D, Response = C::R>,
{
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let state = self.shared.read();
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<C::R>, StorageError<u64>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries.into_iter();
        let mut responses = Vec::with_capacity(entries.size_hint().0);
        let mut last_index = None;
        for entry in entries {
            // One entry per lock, so readers are never held up for a whole batch.
            let mut state = self.shared.write();
            let response = match entry.payload {
                EntryPayload::Blank => A::blank_response(),
                EntryPayload::Normal(ref command) => {
                    state.app.apply(entry.log_id.index, command).map_err(|reason| {
                        tracing::error!(log_id = %entry.log_id, %reason, "cannot apply committed entry; stopping");
                        StoreError::Unappliable { index: entry.log_id.index, reason }
                            .into_storage_error(ErrorSubject::Apply(entry.log_id), ErrorVerb::Write)
                    })?
                }
                EntryPayload::Membership(membership) => {
                    state.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    A::blank_response()
                }
            };
            state.last_applied = Some(entry.log_id);
            last_index = Some(entry.log_id.index);
            responses.push(response);
        }
        if let Some(index) = last_index {
            self.shared.publish(index);
            tracing::trace!(index, "applied log entries");
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_inner();
        // Decoding a large state takes a second or more: in the background, like the encode.
        let wanted = meta.clone();
        let (applied, data) =
            in_background(move || decode_payload::<A>(&wanted, &data).map(|applied| (applied, data)))
                .await
                .and_then(|decoded| decoded)
                .map_err(|e| e.into_storage_error(subject(), ErrorVerb::Read))?;
        let data = self
            .persist_snapshot(meta, data, false)
            .await
            .map_err(|e| e.into_storage_error(subject(), ErrorVerb::Write))?;
        let index = applied_index(&applied);
        *self.shared.write() = applied;
        self.shared.set_snapshot_bytes(data.len());
        self.shared.publish(index);
        tracing::info!(snapshot_id = %meta.snapshot_id, bytes = data.len(), "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError<u64>> {
        // Reads the whole snapshot (hundreds of megabytes for a large state): on the blocking pool,
        // and under the write lock, so a snapshot being stored cannot remove the file between the
        // read of its record and the read of the file.
        let (tree, files, lock) =
            (self.snapshot.clone(), self.files.clone(), Arc::clone(&self.snapshot_write));
        let stored = tokio::task::spawn_blocking(move || {
            let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            snapshot_file::read_stored(&tree, &files)
        })
        .await
        .map_err(|e| StoreError::SnapshotTask(e.to_string()))
        .and_then(|read| read)
        .map_err(|e| e.into_storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(stored.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
