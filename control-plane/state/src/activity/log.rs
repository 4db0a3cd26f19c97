//! A tenant's committed records in seq order, held in shared chunks.
//!
//! Records are the bulk of the replicated state and only ever grow at the
//! back (ingest) and shrink at the front (retention). One `Vec` for all of
//! them made every doubling of its capacity copy the whole log (a twentieth
//! of a node's CPU under ingest load, measured with `perf`: benches/README.md,
//! "Record ingest"), and made the state's copy for a Raft snapshot, taken
//! while applying waits, copy every record. Here records sit in chunks of
//! [`CHUNK`]: growth allocates one chunk at a time, and a chunk is an `Arc`,
//! so a copy of the log shares them; the state machine writes to a shared
//! chunk only at the back (and the front, when pruning), copying that one
//! chunk first.
//!
//! Encoded as a plain sequence, as the `Vec` it replaces was: chunking is
//! invisible in snapshots.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::StoredRecord;

/// Records per chunk.
pub(crate) const CHUNK: usize = 1024;

/// Records in seq order. Every chunk holds at least one record; all but
/// the first and the last hold exactly [`CHUNK`].
#[derive(Clone, Default)]
pub(crate) struct RecordLog {
    chunks: VecDeque<Arc<Vec<StoredRecord>>>,
    len: usize,
}

impl RecordLog {
    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The oldest record.
    pub(crate) fn first(&self) -> Option<&StoredRecord> {
        self.chunks.front().and_then(|c| c.first())
    }

    /// The record at `index` (0 is the oldest).
    pub(crate) fn get(&self, index: usize) -> Option<&StoredRecord> {
        let (chunk, offset) = self.locate(index)?;
        self.chunks.get(chunk).and_then(|c| c.get(offset))
    }

    /// Appends a record.
    pub(crate) fn push(&mut self, record: StoredRecord) {
        match self.chunks.back_mut() {
            Some(back) if back.len() < CHUNK => Arc::make_mut(back).push(record),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(record);
                self.chunks.push_back(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    /// Records oldest first.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &StoredRecord> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Records from `index` on (none when `index >= len`).
    pub(crate) fn iter_from(&self, index: usize) -> impl Iterator<Item = &StoredRecord> {
        let (chunk, offset) = self.locate(index).unwrap_or((self.chunks.len(), 0));
        let head = self.chunks.get(chunk).map_or(&[][..], |c| &c[offset..]);
        head.iter().chain(self.chunks.range((chunk + 1).min(self.chunks.len())..).flat_map(|c| c.iter()))
    }

    /// Removes the `count` oldest records (all of them if fewer) and returns them, oldest first.
    pub(crate) fn remove_front(&mut self, count: usize) -> Vec<StoredRecord> {
        let mut removed = Vec::with_capacity(count.min(self.len));
        while removed.len() < count {
            let Some(front) = self.chunks.front_mut() else { break };
            let wanted = count - removed.len();
            if front.len() <= wanted {
                if let Some(chunk) = self.chunks.pop_front() {
                    removed.extend(Arc::unwrap_or_clone(chunk));
                }
            } else {
                removed.extend(Arc::make_mut(front).drain(..wanted));
            }
        }
        self.len -= removed.len();
        removed
    }

    /// Chunk and offset of `index`, from the invariant on chunk sizes.
    fn locate(&self, index: usize) -> Option<(usize, usize)> {
        if index >= self.len {
            return None;
        }
        let first = self.chunks.front().map_or(0, |c| c.len());
        if index < first {
            return Some((0, index));
        }
        let rest = index - first;
        Some((1 + rest / CHUNK, rest % CHUNK))
    }
}

impl From<Vec<StoredRecord>> for RecordLog {
    fn from(records: Vec<StoredRecord>) -> Self {
        let mut log = RecordLog::default();
        for record in records {
            log.push(record);
        }
        log
    }
}

impl PartialEq for RecordLog {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl fmt::Debug for RecordLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for RecordLog {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for RecordLog {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<StoredRecord>::deserialize(deserializer).map(RecordLog::from)
    }
}

#[cfg(test)]
mod tests;
