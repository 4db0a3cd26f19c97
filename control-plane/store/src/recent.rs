//! [`RecentEntries`]: the tail of the Raft log, kept decoded in memory.
//!
//! openraft reads every entry back from the log store soon after appending it: the leader once
//! per follower to replicate it, and every node once more to apply it. From sled, each read
//! joins the entry's pieces and decodes it; under ingest load those reads were about a fifth of
//! a node's CPU (measured: benches/README.md, "Record ingest"). An entry is appended once and
//! read a few times within milliseconds, so the store keeps the most recent entries, up to a
//! byte budget, and serves those reads from memory. sled stays the record: an entry is written
//! to sled before it is cached, evicted entries are read from sled, and the cache holds a
//! contiguous run of indexes whose entries are those in sled (every append, truncation and
//! purge goes to both, through the store's one writer).

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

/// The log's most recent entries, up to a byte budget. `E` is the entry type; each entry is
/// stored with its encoded length, which is what the budget and payload limits count.
#[derive(Debug)]
pub(crate) struct RecentEntries<E> {
    inner: Mutex<Run<E>>,
    budget: usize,
}

/// A contiguous run of entries: `entries[i]` has index `first + i`.
#[derive(Debug)]
struct Run<E> {
    first: u64,
    entries: VecDeque<(E, usize)>,
    bytes: usize,
}

impl<E> Run<E> {
    /// The index after the run's last entry.
    fn end(&self) -> u64 {
        self.first.saturating_add(self.entries.len() as u64)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn pop_front(&mut self) {
        if let Some((_, len)) = self.entries.pop_front() {
            self.bytes -= len;
            self.first += 1;
        }
    }
}

impl<E: Clone> RecentEntries<E> {
    /// An empty cache holding at most `budget` encoded bytes (0 disables it).
    pub(crate) fn new(budget: usize) -> Self {
        Self { inner: Mutex::new(Run { first: 0, entries: VecDeque::new(), bytes: 0 }), budget }
    }

    fn run(&self) -> std::sync::MutexGuard<'_, Run<E>> {
        // The run is consistent between statements; a panic elsewhere cannot leave it torn.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records entries just written to the log, in index order starting at `first`. Entries
    /// that do not continue the cached run (the first append after opening, or after the log
    /// was changed behind the cache) start a new run.
    pub(crate) fn appended(&self, first: u64, entries: impl IntoIterator<Item = (E, usize)>) {
        if self.budget == 0 {
            return;
        }
        let mut run = self.run();
        if run.entries.is_empty() || first != run.end() {
            run.clear();
            run.first = first;
        }
        for (entry, len) in entries {
            run.bytes += len;
            run.entries.push_back((entry, len));
        }
        while run.bytes > self.budget && !run.entries.is_empty() {
            run.pop_front();
        }
    }

    /// Forgets the entries at `index` and after (the log was truncated there).
    pub(crate) fn truncated(&self, index: u64) {
        let mut run = self.run();
        if index <= run.first {
            run.clear();
            return;
        }
        let keep = usize::try_from(index - run.first).unwrap_or(usize::MAX);
        while run.entries.len() > keep {
            if let Some((_, len)) = run.entries.pop_back() {
                run.bytes -= len;
            }
        }
    }

    /// Forgets the entries at `index` and before (the log was purged up to there).
    pub(crate) fn purged(&self, index: u64) {
        let mut run = self.run();
        while !run.entries.is_empty() && run.first <= index {
            run.pop_front();
        }
    }

    /// The entries `start..end`, if the cache holds all of them, stopping (after the first) once
    /// their encoded lengths would pass `budget`.
    pub(crate) fn get(&self, start: u64, end: u64, budget: usize) -> Option<Vec<E>> {
        let run = self.run();
        if start < run.first || end > run.end() || start >= end {
            return None;
        }
        let skip = usize::try_from(start - run.first).ok()?;
        let take = usize::try_from(end - start).ok()?;
        let mut out = Vec::with_capacity(take.min(64));
        let mut bytes = 0usize;
        for (entry, len) in run.entries.iter().skip(skip).take(take) {
            if !out.is_empty() && bytes.saturating_add(*len) > budget {
                break;
            }
            bytes = bytes.saturating_add(*len);
            out.push(entry.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests;
