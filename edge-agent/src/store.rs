//! The edge agent's sled database: the last good snapshot, runs, and the
//! outbox of records not yet acknowledged by the control plane.
//!
//! | Tree | Key | Value |
//! |---|---|---|
//! | `snapshot` | `envelope` | the signed envelope bytes as received |
//! | `runs` | run id | JSON [`crate::runs::RunRecord`] |
//! | `outbox` | 8-byte big-endian sequence | JSON [`crate::records::Record`] |
//!
//! Anything the workload is told has happened is flushed before the answer
//! leaves ([`AgentStore::flush`]): a `kill -9` right after a response loses
//! nothing that response acknowledged.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::AgentError;
use crate::records::Record;

const SNAPSHOT_KEY: &[u8] = b"envelope";

/// Handle on the agent's database; cheap to clone.
#[derive(Clone, Debug)]
pub struct AgentStore {
    db: sled::Db,
    snapshot: sled::Tree,
    runs: sled::Tree,
    outbox: sled::Tree,
}

impl AgentStore {
    /// Opens (creating) the database under `dir`.
    pub fn open(dir: &Path) -> Result<AgentStore, AgentError> {
        let db = sled::Config::new().path(dir).open()?;
        Ok(AgentStore {
            snapshot: db.open_tree("snapshot")?,
            runs: db.open_tree("runs")?,
            outbox: db.open_tree("outbox")?,
            db,
        })
    }

    /// Makes every write so far durable. The fsync runs on the blocking
    /// pool so concurrent requests never stall the async workers;
    /// concurrent flushes share sled's flush (group commit).
    pub async fn flush(&self) -> Result<(), AgentError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush()).await.map_err(|e| {
            AgentError::Store(sled::Error::ReportableBug(format!("flush task failed: {e}")))
        })??;
        Ok(())
    }

    /// The persisted snapshot envelope, if any.
    pub fn load_snapshot(&self) -> Result<Option<Vec<u8>>, AgentError> {
        Ok(self.snapshot.get(SNAPSHOT_KEY)?.map(|v| v.to_vec()))
    }

    /// Replaces the persisted snapshot (flushed before returning, so the
    /// ACK that follows is true).
    pub async fn save_snapshot(&self, envelope: &[u8]) -> Result<(), AgentError> {
        self.snapshot.insert(SNAPSHOT_KEY, envelope)?;
        self.flush().await
    }

    /// Writes a run (not flushed; see [`AgentStore::flush`]).
    pub fn put_run<T: Serialize>(&self, run_id: &str, run: &T) -> Result<(), AgentError> {
        self.runs.insert(run_id.as_bytes(), encode("run", run)?)?;
        Ok(())
    }

    /// Every stored run.
    pub fn load_runs<T: DeserializeOwned>(&self) -> Result<Vec<T>, AgentError> {
        self.runs.iter().values().map(|v| decode("run", &v?)).collect()
    }

    /// Appends records to the outbox (not flushed).
    pub fn append_records(&self, records: &[Record]) -> Result<(), AgentError> {
        for record in records {
            let seq = self.db.generate_id()?;
            self.outbox.insert(seq.to_be_bytes(), encode("record", record)?)?;
        }
        Ok(())
    }

    /// Up to `limit` pending records, oldest first, with their sequence.
    pub fn pending_records(&self, limit: usize) -> Result<Vec<(u64, Record)>, AgentError> {
        self.outbox
            .iter()
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                let seq = <[u8; 8]>::try_from(key.as_ref()).map(u64::from_be_bytes).unwrap_or(0);
                Ok((seq, decode("record", &value)?))
            })
            .collect()
    }

    /// Deletes acknowledged records (by sequence).
    pub fn remove_records(&self, seqs: &[u64]) -> Result<(), AgentError> {
        let mut batch = sled::Batch::default();
        for seq in seqs {
            batch.remove(&seq.to_be_bytes());
        }
        self.outbox.apply_batch(batch)?;
        Ok(())
    }

    /// Number of pending records and their encoded size in bytes.
    pub fn outbox_usage(&self) -> (u64, u64) {
        let mut count = 0u64;
        let mut bytes = 0u64;
        for (_, value) in self.outbox.iter().flatten() {
            count += 1;
            bytes += value.len() as u64;
        }
        (count, bytes)
    }
}

fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>, AgentError> {
    serde_json::to_vec(value).map_err(|source| AgentError::Encode { what, source })
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, AgentError> {
    serde_json::from_slice(bytes).map_err(|source| AgentError::Corrupt { what, source })
}
