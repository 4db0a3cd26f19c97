//! [`SledLogStore`]: the Raft log, the vote, the committed log id and the purge point.
//!
//! This module owns the [`LOG_TREE`](crate::codec::LOG_TREE), [`VOTE_TREE`](crate::codec::VOTE_TREE),
//! [`COMMITTED_TREE`](crate::codec::COMMITTED_TREE) and [`PURGED_TREE`](crate::codec::PURGED_TREE)
//! trees. Durability rules:
//!
//! - `append` writes the entries in one atomic batch and acknowledges them to openraft only after
//!   the database has been flushed to disk. The flush runs on the store's flusher thread, not in
//!   `append`: openraft's core goes on (replicating the entries to followers, taking more client
//!   writes) while the disk works, and every append that arrives during one fsync shares the
//!   next (group commit). Without it each client write waited for its own fsync inside the
//!   core, one after another, which capped a cluster at about one write per fsync (~1,000/s
//!   here) whatever the concurrency.
//! - `save_vote` and `truncate` flush before returning.
//! - `purge` records the purge point and returns; the purged rows are removed (and the removal
//!   flushed) by the store's purger thread. From the moment `purge` returns, reads never return
//!   an entry at or below the purge point, whether or not its rows are gone yet, and a crash
//!   before the removal is durable leaves rows the next purge (or the next open) removes. Why
//!   not at once: openraft's core awaits `purge`, and removing a few thousand rows (read back
//!   from disk to find their keys) and flushing took long enough, on a busy disk, that a
//!   leader's core sent no heartbeat for over an election timeout after each Raft snapshot, and
//!   its followers called elections (benches/README.md, "Record ingest").
//! - `save_committed` does not flush: a committed id that is lost in a crash only means fewer
//!   entries are re-applied on start (openraft learns the rest from the leader); it can never be
//!   ahead of the truth. sled flushes it within its flush interval and when the database closes.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError, Vote};

use crate::StoreTypeConfig;
use crate::codec::{self, VALUE_KEY};
use crate::error::StoreError;
use crate::recent::RecentEntries;

/// The Raft log store, backed by sled.
///
/// Cloning is cheap (sled handles are reference counted); a clone is the log reader handed to
/// openraft's replication tasks.
pub struct SledLogStore<C: StoreTypeConfig> {
    db: sled::Db,
    log: sled::Tree,
    vote: sled::Tree,
    committed: sled::Tree,
    purged: sled::Tree,
    flusher: mpsc::Sender<FlushWaiter>,
    fsyncs: Arc<AtomicU64>,
    /// Encoded bytes of the entries appended since the store was opened (see
    /// [`SledLogStore::appended_bytes`]).
    appended_bytes: Arc<AtomicU64>,
    /// The most recent entries, decoded, for openraft's reads (shared by every clone).
    recent: Arc<RecentEntries<C::Entry>>,
    /// The first index not purged (0 when nothing is): reads start here.
    first_kept: Arc<AtomicU64>,
    /// Purge points for the purger thread to remove rows up to.
    purger: mpsc::Sender<u64>,
    _config: PhantomData<fn() -> C>,
}

/// Encoded bytes of the most recent log entries kept in memory (`recent::RecentEntries`): openraft
/// reads an entry back within milliseconds of appending it (to replicate and to apply it), so
/// this holds well over a second of the heaviest ingest load measured.
pub const RECENT_ENTRIES_BYTES: usize = 16 * 1024 * 1024;

/// Most encoded bytes of log entries per AppendEntries (see
/// [`SledLogStore::limited_get_log_entries`]); a single larger entry still travels alone.
pub const PAYLOAD_BUDGET: usize = 512 * 1024;

/// What an append leaves with the flusher: told the fsync's result once everything written
/// before it was queued is on disk.
type FlushWaiter = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Starts the thread that makes appends durable: it takes every waiter queued so far, runs one
/// fsync for all of them and answers them in the order they came. It ends when the last store
/// handle (and so the last sender) is dropped.
fn spawn_flusher(db: sled::Db, fsyncs: Arc<AtomicU64>) -> Result<mpsc::Sender<FlushWaiter>, StoreError> {
    let (tx, rx) = mpsc::channel::<FlushWaiter>();
    std::thread::Builder::new()
        .name("raft-log-fsync".to_owned())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiting = vec![first];
                waiting.extend(rx.try_iter());
                let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
                fsyncs.fetch_add(1, Ordering::Relaxed);
                if let Err(error) = &result {
                    tracing::error!(%error, "flushing appended log entries failed");
                }
                for waiter in waiting {
                    waiter(result.clone().map_err(io::Error::other));
                }
            }
        })
        .map_err(StoreError::FlusherThread)?;
    Ok(tx)
}

/// Starts the thread that removes purged rows: for the highest purge point queued so far, it
/// removes every row up to it and flushes. A failure is logged and left for the next purge
/// point, whose removal starts at the log's beginning. The thread ends (after the purge points
/// already queued) when the last store handle is dropped.
fn spawn_purger(db: sled::Db, log: sled::Tree) -> Result<mpsc::Sender<u64>, StoreError> {
    let (tx, rx) = mpsc::channel::<u64>();
    std::thread::Builder::new()
        .name("raft-log-purge".to_owned())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let upto = rx.try_iter().fold(first, u64::max);
                let removed = remove_rows_one_by_one(&log, ..=codec::last_key_of(upto)).and_then(|removed| {
                    db.flush()?;
                    Ok(removed)
                });
                match removed {
                    Ok(removed) => tracing::debug!(upto, removed, "removed purged log entries"),
                    Err(error) => tracing::error!(upto, %error, "removing purged log entries failed"),
                }
            }
        })
        .map_err(StoreError::PurgerThread)?;
    Ok(tx)
}

/// Removes every row of the log tree whose key is in `range`, lowest first, one row at a time,
/// returning how many entries. Not one batch: sled applies a batch under a lock every write to
/// the database waits for, and a purge's thousands of rows (their pages read back from disk)
/// held the log's appends for over a second. Cut short, it leaves the highest rows of the
/// range, which nothing reads (they are below the purge point) and the next purge removes.
fn remove_rows_one_by_one<K: AsRef<[u8]>>(
    log: &sled::Tree,
    range: impl RangeBounds<K>,
) -> Result<usize, StoreError> {
    let mut removed = 0_usize;
    for key in log.range(range).keys() {
        let key = key?;
        if key.len() == 8 {
            removed += 1;
        }
        log.remove(key)?;
    }
    Ok(removed)
}

/// Removes every row of the log tree whose key is in `range` (entries and their pieces) in one
/// atomic batch, returning how many entries.
fn remove_rows<K: AsRef<[u8]>>(log: &sled::Tree, range: impl RangeBounds<K>) -> Result<usize, StoreError> {
    let mut batch = sled::Batch::default();
    let mut removed = 0_usize;
    for key in log.range(range).keys() {
        let key = key?;
        if key.len() == 8 {
            removed += 1;
        }
        batch.remove(key);
    }
    log.apply_batch(batch)?;
    Ok(removed)
}

impl<C: StoreTypeConfig> SledLogStore<C> {
    /// Opens the log store's trees in `db` and starts its flusher and purger threads; rows left
    /// below the purge point (by a crash before their removal was durable) are removed.
    pub(crate) fn open(db: sled::Db) -> Result<Self, StoreError> {
        let fsyncs = Arc::new(AtomicU64::new(0));
        let log = db.open_tree(codec::LOG_TREE)?;
        let purged = db.open_tree(codec::PURGED_TREE)?;
        let purged_id: Option<LogId<u64>> = codec::get(&purged, VALUE_KEY, "purged log id")?;
        let purger = spawn_purger(db.clone(), log.clone())?;
        if let Some(id) = purged_id {
            // The thread is alive: it was started just above and only ends with the store.
            let _ = purger.send(id.index);
        }
        Ok(Self {
            log,
            vote: db.open_tree(codec::VOTE_TREE)?,
            committed: db.open_tree(codec::COMMITTED_TREE)?,
            purged,
            flusher: spawn_flusher(db.clone(), Arc::clone(&fsyncs))?,
            fsyncs,
            appended_bytes: Arc::new(AtomicU64::new(0)),
            recent: Arc::new(RecentEntries::new(RECENT_ENTRIES_BYTES)),
            first_kept: Arc::new(AtomicU64::new(purged_id.map_or(0, |id| id.index.saturating_add(1)))),
            purger,
            db,
            _config: PhantomData,
        })
    }

    /// The first index reads may return.
    fn first_kept(&self) -> u64 {
        self.first_kept.load(Ordering::Acquire)
    }

    /// How many fsyncs the flusher has run for appends since the store was opened: fewer than
    /// the appends when they shared them.
    pub fn append_fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Encoded bytes of the log entries appended since the store was opened (entries replaced
    /// after a conflict count again): how much the log has grown, which the node's snapshot
    /// trigger compares with the size of the last snapshot.
    pub fn appended_bytes(&self) -> u64 {
        self.appended_bytes.load(Ordering::Relaxed)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

impl<C: StoreTypeConfig> Clone for SledLogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            log: self.log.clone(),
            vote: self.vote.clone(),
            committed: self.committed.clone(),
            purged: self.purged.clone(),
            flusher: self.flusher.clone(),
            fsyncs: Arc::clone(&self.fsyncs),
            appended_bytes: Arc::clone(&self.appended_bytes),
            recent: Arc::clone(&self.recent),
            first_kept: Arc::clone(&self.first_kept),
            purger: self.purger.clone(),
            _config: PhantomData,
        }
    }
}

impl<C: StoreTypeConfig> fmt::Debug for SledLogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledLogStore").field("entries", &self.log.len()).finish_non_exhaustive()
    }
}

impl<C: StoreTypeConfig> SledLogStore<C> {
    /// Decodes one entry read back by [`codec::LogEntries`], checking that it sits under its
    /// own index.
    fn decode_entry(index: u64, encoded: &[u8]) -> Result<C::Entry, StoreError> {
        let entry: C::Entry = codec::decode("log entry", encoded)?;
        if entry.log_id.index != index {
            return Err(StoreError::LogIndexMismatch { key: index, found: entry.log_id.index });
        }
        Ok(entry)
    }

    fn read_entries(&self, start: u64, end: Option<u64>) -> Result<Vec<C::Entry>, StoreError> {
        let start = start.max(self.first_kept());
        if end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        if let Some(entries) = end.and_then(|end| self.recent.get(start, end, usize::MAX)) {
            return Ok(entries);
        }
        let rows = match end {
            Some(end) => self.log.range(codec::index_key(start)..codec::index_key(end)),
            None => self.log.range(codec::index_key(start)..),
        };
        codec::LogEntries::new(rows)
            .map(|read| {
                let (index, encoded) = read?;
                Self::decode_entry(index, &encoded)
            })
            .collect()
    }

    /// Entries from `start` (before `end`) until their encoded size reaches `budget` bytes:
    /// always at least the first entry, so one entry larger than the budget still travels.
    fn read_entries_within(&self, start: u64, end: u64, budget: usize) -> Result<Vec<C::Entry>, StoreError> {
        let start = start.max(self.first_kept());
        if end <= start {
            return Ok(Vec::new());
        }
        if let Some(entries) = self.recent.get(start, end, budget) {
            return Ok(entries);
        }
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let rows = self.log.range(codec::index_key(start)..codec::index_key(end));
        for read in codec::LogEntries::new(rows) {
            let (index, encoded) = read?;
            if !entries.is_empty() && bytes.saturating_add(encoded.len()) > budget {
                break;
            }
            bytes = bytes.saturating_add(encoded.len());
            entries.push(Self::decode_entry(index, &encoded)?);
        }
        Ok(entries)
    }

    fn last_entry_id(&self) -> Result<Option<LogId<u64>>, StoreError> {
        // The last row may be a piece; the entry starts at its index.
        let Some((key, _)) = self.log.last()? else {
            return Ok(None);
        };
        let index = codec::row_index(&key)?;
        if index < self.first_kept() {
            // A purged entry whose rows are not removed yet.
            return Ok(None);
        }
        let (first, last) = (codec::index_key(index), codec::last_key_of(index));
        let rows = self.log.range(&first[..]..=&last[..]);
        match codec::LogEntries::new(rows).next() {
            Some(read) => {
                let (index, encoded) = read?;
                Ok(Some(Self::decode_entry(index, &encoded)?.log_id))
            }
            None => Ok(None),
        }
    }
}

/// Turns `range` into `[start, end)` with `end == None` meaning unbounded; `None` when the range
/// holds no index.
fn index_bounds(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&i) => i.checked_add(1),
        Bound::Excluded(&i) => Some(i),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if end <= start => None,
        _ => Some((start, end)),
    }
}

fn logs_err(verb: ErrorVerb) -> impl FnOnce(StoreError) -> StorageError<u64> {
    move |e| e.into_storage_error(ErrorSubject::Logs, verb)
}

impl<C: StoreTypeConfig> RaftLogReader<C> for SledLogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<u64>> {
        let Some((start, end)) = index_bounds(&range) else {
            return Ok(Vec::new());
        };
        self.read_entries(start, end).map_err(logs_err(ErrorVerb::Read))
    }

    /// What replication sends in one AppendEntries: at most [`PAYLOAD_BUDGET`] encoded bytes
    /// (and at most openraft's `max_payload_entries`). openraft gives every AppendEntries one
    /// heartbeat interval, so a payload must stay small enough for a busy follower to decode,
    /// append and fsync in time whatever the entries' sizes: a count alone is either too small
    /// for 1 KB admin entries (it capped write throughput at a few dozen entries per round trip
    /// per follower) or too large for 50 KB ingest entries (timeouts, resends, a follower that
    /// never catches up).
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<C::Entry>, StorageError<u64>> {
        self.read_entries_within(start, end, PAYLOAD_BUDGET).map_err(logs_err(ErrorVerb::Read))
    }
}

impl<C: StoreTypeConfig> RaftLogStorage<C> for SledLogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<u64>> {
        let last_purged_log_id: Option<LogId<u64>> = codec::get(&self.purged, VALUE_KEY, "purged log id")
            .map_err(|e| e.into_storage_error(ErrorSubject::Store, ErrorVerb::Read))?;
        let last_entry = self.last_entry_id().map_err(logs_err(ErrorVerb::Read))?;
        // Entries after the purge point have greater log ids; with none, the log ends there.
        Ok(LogState { last_purged_log_id, last_log_id: last_entry.max(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let to_storage = |e: StoreError| e.into_storage_error(ErrorSubject::Vote, ErrorVerb::Write);
        codec::put(&self.vote, VALUE_KEY, "vote", vote).map_err(to_storage)?;
        self.flush().await.map_err(to_storage)?;
        tracing::debug!(%vote, "saved vote");
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        codec::get(&self.vote, VALUE_KEY, "vote")
            .map_err(|e| e.into_storage_error(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        let result = match committed {
            Some(log_id) => codec::put(&self.committed, VALUE_KEY, "committed log id", &log_id),
            None => self.committed.remove(VALUE_KEY).map(drop).map_err(StoreError::from),
        };
        result.map_err(|e| e.into_storage_error(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        codec::get(&self.committed, VALUE_KEY, "committed log id")
            .map_err(|e| e.into_storage_error(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        let mut written = Vec::new();
        let mut last = None;
        let mut bytes = 0_u64;
        for entry in entries {
            let json = codec::encode("log entry", &entry)
                .map_err(|e| e.into_storage_error(ErrorSubject::Log(entry.log_id), ErrorVerb::Write))?;
            // Sizes count the JSON (what replication sends and a snapshot is compared with),
            // not the stored bytes.
            let len = json.len();
            let value = codec::pack(json);
            bytes += len as u64;
            last = Some(entry.log_id);
            encoded.push((entry.log_id.index, value));
            written.push((entry, len));
        }
        self.appended_bytes.fetch_add(bytes, Ordering::Relaxed);
        let rows: Vec<(Vec<u8>, &[u8])> =
            encoded.iter().flat_map(|(index, value)| codec::log_rows(*index, value)).collect();
        // Several rows go in one atomic batch (an entry's pieces are never half written). A lone
        // row (the usual case at low load) is a plain insert: a sled batch adds a manifest record
        // that costs its own IO buffer write and `sync_file_range` at the next flush (measured:
        // two per flush instead of one).
        if let [(key, value)] = rows.as_slice() {
            self.log.insert(key, *value).map_err(StoreError::from).map_err(logs_err(ErrorVerb::Write))?;
        } else {
            let mut batch = sled::Batch::default();
            for (key, value) in rows {
                batch.insert(key, value);
            }
            self.log.apply_batch(batch).map_err(StoreError::from).map_err(logs_err(ErrorVerb::Write))?;
        }

        // The entries are readable now (from memory too, once in sled); they are acknowledged
        // once they are on disk, by the flusher's next fsync.
        if let Some((first, _)) = written.first() {
            self.recent.appended(first.log_id.index, written);
        }
        tracing::trace!(last = ?last, "appended log entries");
        let waiter: FlushWaiter = Box::new(move |result| callback.log_io_completed(result));
        if let Err(mpsc::SendError(waiter)) = self.flusher.send(waiter) {
            // The flusher thread is gone (it panicked): flush here instead.
            let result = self.flush().await;
            waiter(result.as_ref().map_err(|e| io::Error::other(e.to_string())).copied());
            result.map_err(|error| error.into_storage_error(ErrorSubject::Logs, ErrorVerb::Write))?;
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.recent.truncated(log_id.index);
        let removed =
            remove_rows(&self.log, codec::index_key(log_id.index)..).map_err(logs_err(ErrorVerb::Delete))?;
        self.flush().await.map_err(logs_err(ErrorVerb::Delete))?;
        tracing::debug!(since = %log_id, removed, "truncated log");
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        // Record the purge point first (sled makes writes durable in order, so a removal is
        // never durable without it), then stop reads below it, then leave the rows to the
        // purger thread (see the module's durability rules).
        codec::put(&self.purged, VALUE_KEY, "purged log id", &log_id)
            .map_err(|e| e.into_storage_error(ErrorSubject::Store, ErrorVerb::Write))?;
        self.first_kept.fetch_max(log_id.index.saturating_add(1), Ordering::AcqRel);
        self.recent.purged(log_id.index);
        if self.purger.send(log_id.index).is_err() {
            // The purger thread is gone (it panicked): remove the rows here instead.
            let removed = remove_rows(&self.log, ..=codec::last_key_of(log_id.index))
                .map_err(logs_err(ErrorVerb::Delete))?;
            self.flush().await.map_err(logs_err(ErrorVerb::Delete))?;
            tracing::debug!(upto = %log_id, removed, "purged log without the purger thread");
        }
        tracing::debug!(upto = %log_id, "purged log");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use super::index_bounds;

    #[test]
    fn index_bounds_cover_edge_cases() {
        assert_eq!(index_bounds(&(..)), Some((0, None)));
        assert_eq!(index_bounds(&(3..7)), Some((3, Some(7))));
        assert_eq!(index_bounds(&(3..=7)), Some((3, Some(8))));
        assert_eq!(index_bounds(&(5..5)), None);
        assert_eq!(index_bounds(&(Bound::Included(6), Bound::Excluded(5))), None);
        assert_eq!(index_bounds(&(..=u64::MAX)), Some((0, None)));
        assert_eq!(index_bounds(&(Bound::Excluded(u64::MAX), Bound::Unbounded)), None);
    }
}
