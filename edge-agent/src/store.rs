//! The edge agent's sled database: the last good snapshot, runs, and the
//! outbox of records not yet acknowledged by the control plane.
//!
//! | Tree | Key | Value |
//! |---|---|---|
//! | `snapshot` | `envelope` | the signed envelope bytes as received |
//! | `snapshot` | `governance` | JSON governance state last applied |
//! | `snapshot` | `boot_epoch` | 8-byte big-endian count of starts |
//! | `snapshot` | `trusted_keys` | JSON list of snapshot keys (hex) pushed by the control plane |
//! | `runs` | run id | JSON [`crate::runs::RunRecord`] |
//! | `outbox` | 8-byte big-endian sequence | JSON [`crate::records::Record`] |
//!
//! Anything the workload is told has happened is flushed before the answer
//! leaves ([`AgentStore::flush`]): a `kill -9` right after a response loses
//! nothing that response acknowledged.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::AgentError;
use crate::records::Record;

const SNAPSHOT_KEY: &[u8] = b"envelope";
const TRUSTED_KEYS_KEY: &[u8] = b"trusted_keys";
const BOOT_EPOCH_KEY: &[u8] = b"boot_epoch";
const GOVERNANCE_KEY: &[u8] = b"governance";
const DATA_KEY_KEY: &[u8] = b"tenant_data_key";
/// The local key sealing the tenant data key at rest, beside the database.
const LOCAL_KEY_FILE: &str = "local.key";

/// Handle on the agent's database; cheap to clone.
#[derive(Clone, Debug)]
pub struct AgentStore {
    db: sled::Db,
    dir: std::path::PathBuf,
    snapshot: sled::Tree,
    runs: sled::Tree,
    outbox: sled::Tree,
    commit: Arc<GroupCommit>,
}

/// Group commit: callers that ask for durability while an fsync is running
/// are all served by the next one, so N concurrent requests cost about two
/// fsyncs, not N. A caller is answered only by an fsync that *started*
/// after it asked, so its writes (made before asking) are covered.
#[derive(Debug)]
struct GroupCommit {
    /// Tickets handed out; a caller's ticket is its position.
    requested: AtomicU64,
    /// Highest ticket covered by a finished fsync, and that fsync's error.
    done: std::sync::Mutex<(u64, Option<Arc<str>>)>,
    /// Held by the caller checking or running an fsync (FIFO).
    leader: tokio::sync::Mutex<()>,
    /// fsyncs run (for `/metrics`).
    fsyncs: AtomicU64,
}

impl AgentStore {
    /// Opens (creating) the database under `dir`.
    pub fn open(dir: &Path) -> Result<AgentStore, AgentError> {
        // No background flush every 500 ms: whatever must survive a crash
        // is flushed before its answer leaves (`flush`), and the rest (a
        // plain admission's reservation, outbox deletions, which are
        // re-sent and de-duplicated) may be lost by design. sled's timer
        // flush only competed with the steps for the IO buffers.
        let db = sled::Config::new().path(dir).flush_every_ms(None).open()?;
        Ok(AgentStore {
            snapshot: db.open_tree("snapshot")?,
            runs: db.open_tree("runs")?,
            outbox: db.open_tree("outbox")?,
            db,
            dir: dir.to_path_buf(),
            commit: Arc::new(GroupCommit {
                requested: AtomicU64::new(0),
                done: std::sync::Mutex::new((0, None)),
                leader: tokio::sync::Mutex::new(()),
                fsyncs: AtomicU64::new(0),
            }),
        })
    }

    /// Makes every write made before the call durable. The fsync runs on
    /// the blocking pool, so the async workers never stall on the disk, and
    /// concurrent callers share fsyncs (see [`GroupCommit`]).
    pub async fn flush(&self) -> Result<(), AgentError> {
        let commit = &self.commit;
        let ticket = commit.requested.fetch_add(1, Ordering::SeqCst) + 1;
        // Queue behind any running fsync. Holding the lock while checking
        // and publishing means no wake-up can be missed: whoever gets the
        // lock either finds its ticket covered or runs the next fsync.
        let _leader = commit.leader.lock().await;
        if let Some(result) = covered(&commit.done_now(), ticket) {
            return result;
        }
        // Every ticket handed out so far belongs to writes made before now.
        let target = commit.requested.load(Ordering::SeqCst);
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || db.flush()).await;
        commit.fsyncs.fetch_add(1, Ordering::Relaxed);
        let error: Option<Arc<str>> = match result {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string().into()),
            Err(e) => Some(format!("flush task failed: {e}").into()),
        };
        *commit.done.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (target, error.clone());
        covered(&(target, error), ticket).unwrap_or_else(|| {
            Err(AgentError::Store(sled::Error::ReportableBug(
                "fsync did not cover its own ticket".to_owned(),
            )))
        })
    }

    /// fsyncs run since start.
    pub fn fsyncs(&self) -> u64 {
        self.commit.fsyncs.load(Ordering::Relaxed)
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

    /// Appends records to the outbox (not flushed); returns the bytes
    /// written.
    pub fn append_records(&self, records: &[Record]) -> Result<u64, AgentError> {
        let mut bytes = 0u64;
        for record in records {
            let seq = self.db.generate_id()?;
            let value = encode("record", record)?;
            bytes += value.len() as u64;
            self.outbox.insert(seq.to_be_bytes(), value)?;
        }
        Ok(bytes)
    }

    /// Up to `limit` pending records, oldest first, with their sequence.
    pub fn pending_records(&self, limit: usize) -> Result<Vec<(u64, Record)>, AgentError> {
        self.pending_raw(limit)?
            .into_iter()
            .map(|(seq, value)| Ok((seq, decode("record", &value)?)))
            .collect()
    }

    /// Up to `limit` pending records, oldest first, as stored (JSON), with
    /// their sequence: what the delivery loop sends without re-encoding.
    pub fn pending_raw(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, AgentError> {
        self.outbox
            .iter()
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                let seq = <[u8; 8]>::try_from(key.as_ref()).map(u64::from_be_bytes).unwrap_or(0);
                Ok((seq, value.to_vec()))
            })
            .collect()
    }

    /// Counts this start and makes the count durable before returning
    /// (blocking: called once at start, before serving). Step ids carry
    /// it, so a step admitted before a crash is told apart from one
    /// admitted since.
    pub fn next_boot_epoch(&self) -> Result<u64, AgentError> {
        let previous = self
            .snapshot
            .get(BOOT_EPOCH_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let epoch = previous + 1;
        self.snapshot.insert(BOOT_EPOCH_KEY, &epoch.to_be_bytes())?;
        self.db.flush()?;
        Ok(epoch)
    }

    /// The governance state last applied, if any.
    pub fn load_governance(&self) -> Result<Option<crate::governance::GovernanceView>, AgentError> {
        self.snapshot.get(GOVERNANCE_KEY)?.map(|v| decode("governance state", &v)).transpose()
    }

    /// Stores the governance state (the caller flushes).
    pub fn save_governance(&self, view: &crate::governance::GovernanceView) -> Result<(), AgentError> {
        self.snapshot.insert(GOVERNANCE_KEY, encode("governance state", view)?)?;
        Ok(())
    }

    /// Persists the tenant's data key (which opens the connector
    /// credentials in the snapshot), sealed with a local key kept in a
    /// mode-0600 file beside the database (created on first use), and
    /// flushes. The sled files alone (a copy or backup of the database)
    /// never hold it in clear; someone with the whole data directory can
    /// still open it, which disk encryption must cover.
    pub async fn save_data_key(&self, key_id: &str, key: &[u8; 32]) -> Result<(), AgentError> {
        let local = self.local_key(true)?.ok_or_else(|| AgentError::Secret("no local key".to_owned()))?;
        let mut nonce = [0u8; aos_core::access::sealing::NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| AgentError::Secret(format!("no randomness: {e}")))?;
        let sealed = aos_core::access::sealing::seal(&local, &nonce, key_id.as_bytes(), key);
        let stored = StoredDataKey { key_id: key_id.to_owned(), nonce: nonce.to_vec(), sealed };
        self.snapshot.insert(DATA_KEY_KEY, encode("tenant data key", &stored)?)?;
        self.flush().await
    }

    /// The tenant data key saved by [`AgentStore::save_data_key`], if any.
    pub fn load_data_key(&self) -> Result<Option<(String, [u8; 32])>, AgentError> {
        let Some(bytes) = self.snapshot.get(DATA_KEY_KEY)? else {
            return Ok(None);
        };
        let stored: StoredDataKey = decode("tenant data key", &bytes)?;
        let local = self.local_key(false)?.ok_or_else(|| {
            AgentError::Secret(format!("{LOCAL_KEY_FILE} is missing; the stored data key cannot be opened"))
        })?;
        let key =
            aos_core::access::sealing::open(&local, &stored.nonce, stored.key_id.as_bytes(), &stored.sealed)
                .map_err(|e| AgentError::Secret(format!("stored data key: {e}")))?;
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| AgentError::Secret("stored data key has the wrong length".to_owned()))?;
        Ok(Some((stored.key_id, key)))
    }

    fn local_key(&self, create: bool) -> Result<Option<[u8; 32]>, AgentError> {
        let path = self.dir.join(LOCAL_KEY_FILE);
        let io = |e: std::io::Error| AgentError::Secret(format!("{}: {e}", path.display()));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .map_err(|_| AgentError::Secret(format!("{} is not hex", path.display())))?;
                bytes
                    .try_into()
                    .map(Some)
                    .map_err(|_| AgentError::Secret(format!("{} is not 32 bytes", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| AgentError::Secret(format!("no randomness: {e}")))?;
                // Written whole to a temporary file, then renamed: a crash
                // leaves no key or a complete one, never an empty file.
                let tmp = self.dir.join(format!("{LOCAL_KEY_FILE}.tmp"));
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create(true).truncate(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let mut file = options.open(&tmp).map_err(io)?;
                std::io::Write::write_all(&mut file, hex::encode(key).as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                std::fs::rename(&tmp, &path).map_err(io)?;
                Ok(Some(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// The trusted snapshot keys last received from the control plane.
    pub fn load_trusted_keys(&self) -> Result<Option<Vec<String>>, AgentError> {
        self.snapshot.get(TRUSTED_KEYS_KEY)?.map(|v| decode("trusted keys", &v)).transpose()
    }

    /// Persists the trusted snapshot keys (flushed: a snapshot signed with
    /// a new key must still verify after a restart).
    pub async fn save_trusted_keys(&self, keys: &[String]) -> Result<(), AgentError> {
        self.snapshot.insert(TRUSTED_KEYS_KEY, encode("trusted keys", keys)?)?;
        self.flush().await
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

impl GroupCommit {
    /// The last finished fsync's coverage and error.
    fn done_now(&self) -> (u64, Option<Arc<str>>) {
        self.done.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// The answer for `ticket` if the last finished fsync covered it.
fn covered(done: &(u64, Option<Arc<str>>), ticket: u64) -> Option<Result<(), AgentError>> {
    let (covered, error) = done;
    (*covered >= ticket).then(|| match error {
        None => Ok(()),
        Some(e) => Err(AgentError::Store(sled::Error::ReportableBug(format!("fsync failed: {e}")))),
    })
}

fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>, AgentError> {
    serde_json::to_vec(value).map_err(|source| AgentError::Encode { what, source })
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, AgentError> {
    serde_json::from_slice(bytes).map_err(|source| AgentError::Corrupt { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_data_key_is_sealed_at_rest_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let key = [7u8; 32];
        {
            let store = AgentStore::open(dir.path()).unwrap();
            assert_eq!(store.load_data_key().unwrap(), None);
            store.save_data_key("dk-1", &key).await.unwrap();
        }
        let store = AgentStore::open(dir.path()).unwrap();
        assert_eq!(store.load_data_key().unwrap(), Some(("dk-1".to_owned(), key)));
        // Never in clear in the database files.
        let mut clear_text_found = false;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() && path.file_name().is_some_and(|n| n != LOCAL_KEY_FILE) {
                let bytes = std::fs::read(&path).unwrap();
                clear_text_found |= bytes.windows(32).any(|w| w == key);
            }
        }
        assert!(!clear_text_found, "the data key is stored in clear");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(LOCAL_KEY_FILE)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "the local key is private");
        // Without the local key the stored data key does not open.
        drop(store);
        std::fs::remove_file(dir.path().join(LOCAL_KEY_FILE)).unwrap();
        let store = AgentStore::open(dir.path()).unwrap();
        let err = store.load_data_key().unwrap_err().to_string();
        assert!(err.contains("local.key is missing"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_flushes_share_fsyncs_and_every_write_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = AgentStore::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.put_run(&format!("run-{i}"), &i).unwrap();
                store.flush().await.unwrap();
            }));
        }
        // A lost wake-up would hang here: fail instead.
        let all = async {
            for t in tasks {
                t.await.unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), all).await.expect("flushes hung");
        assert!(store.fsyncs() >= 1 && store.fsyncs() < 64, "{} fsyncs for 64 flushes", store.fsyncs());
        drop(store);
        // Reopen: all 64 writes are there.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let reopened = loop {
            match AgentStore::open(dir.path()) {
                Ok(s) => break s,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        let runs: Vec<u64> = reopened.load_runs().unwrap();
        assert_eq!(runs.len(), 64);
    }
}

/// The tenant data key as stored: sealed with the local key.
#[derive(Debug, Serialize, serde::Deserialize)]
struct StoredDataKey {
    key_id: String,
    nonce: Vec<u8>,
    sealed: Vec<u8>,
}
