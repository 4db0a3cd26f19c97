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
//! | `outbox` | 8-byte big-endian sequence; for a long record's further pieces, sequence + piece number (4 bytes big-endian) | JSON [`crate::records::Record`], cut in pieces of at most [`OUTBOX_PIECE_BYTES`] |
//!
//! A record longer than [`OUTBOX_PIECE_BYTES`] (one that keeps prompt or
//! response text, GAP-033) is stored in pieces written in one atomic batch:
//! its pieces' keys sort right after its own, so a scan reads them together
//! and a range removal removes them together. sled 0.34 writes any value or
//! tree node above 128 KiB to a blob file that must be synced on its own
//! (vendor/README.md) inside the insert, on the step's thread; with pieces a
//! leaf (at most 17 rows) never gets that large.
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
/// Longest piece of an encoded record stored in one outbox row (17 of them,
/// a leaf just before sled splits it, stay under its 128 KiB blob threshold).
pub const OUTBOX_PIECE_BYTES: usize = 6 * 1024;
/// Length of an outbox key of a record's further piece.
const PIECE_KEY_LEN: usize = 12;
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
            if value.len() <= OUTBOX_PIECE_BYTES {
                self.outbox.insert(seq.to_be_bytes(), value)?;
                continue;
            }
            let mut batch = sled::Batch::default();
            for (i, piece) in value.chunks(OUTBOX_PIECE_BYTES).enumerate() {
                match u32::try_from(i) {
                    Ok(0) => batch.insert(&seq.to_be_bytes(), piece),
                    // Pieces are bounded by the record's size (2^32 of them is 24 TiB).
                    n => batch.insert(&piece_key(seq, n.unwrap_or(u32::MAX))[..], piece),
                }
            }
            self.outbox.apply_batch(batch)?;
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
        let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
        for item in self.outbox.iter() {
            let (key, value) = item?;
            match <[u8; 8]>::try_from(key.as_ref()) {
                Ok(seq) => {
                    if pending.len() == limit {
                        break;
                    }
                    pending.push((u64::from_be_bytes(seq), value.to_vec()));
                }
                // A further piece of the record just read (written in the
                // same batch as its first row, so never found without it).
                Err(_) if key.len() == PIECE_KEY_LEN => {
                    if let Some((seq, bytes)) = pending.last_mut()
                        && key[..8] == seq.to_be_bytes()
                    {
                        bytes.extend_from_slice(&value);
                    }
                }
                Err(_) => {}
            }
        }
        Ok(pending)
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
            // The record's row and its pieces, if it has any.
            let (first, last) = (seq.to_be_bytes(), piece_key(*seq, u32::MAX));
            for key in self.outbox.range(&first[..]..=&last[..]).keys() {
                batch.remove(key?);
            }
        }
        self.outbox.apply_batch(batch)?;
        Ok(())
    }

    /// Number of pending records and their encoded size in bytes.
    pub fn outbox_usage(&self) -> (u64, u64) {
        let mut count = 0u64;
        let mut bytes = 0u64;
        for (key, value) in self.outbox.iter().flatten() {
            count += u64::from(key.len() == 8);
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

/// Outbox key of piece `piece` (from 1) of the record at `seq`.
fn piece_key(seq: u64, piece: u32) -> [u8; PIECE_KEY_LEN] {
    let mut key = [0u8; PIECE_KEY_LEN];
    key[..8].copy_from_slice(&seq.to_be_bytes());
    key[8..].copy_from_slice(&piece.to_be_bytes());
    key
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

    /// Opens the store again, waiting out the lock of a handle just dropped.
    async fn reopen(dir: &Path) -> AgentStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match AgentStore::open(dir) {
                Ok(s) => return s,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// A system record whose detail is `bytes` long.
    fn record_of(bytes: usize, tag: usize) -> Record {
        let detail = format!("{tag}:{}", "x".repeat(bytes));
        let body = crate::records::RecordBody::SystemRecord(crate::records::SystemRecord {
            event: "TEST".to_owned(),
            detail,
        });
        Record::new("acme", None, 1, body)
    }

    #[tokio::test]
    async fn long_records_are_stored_in_pieces_and_read_and_removed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> =
            (0..40).map(|i| record_of(if i % 3 == 0 { 100 } else { 50 * 1024 + i }, i)).collect();
        {
            let store = AgentStore::open(dir.path()).unwrap();
            store.append_records(&records).unwrap();
            store.flush().await.unwrap();
            let (count, _) = store.outbox_usage();
            assert_eq!(count, 40);
            let pending = store.pending_records(1_000).unwrap();
            let read: Vec<Record> = pending.iter().map(|(_, r)| r.clone()).collect();
            assert_eq!(read, records, "every record reads back whole, in order");
            // A limit counts records, not rows.
            let first = store.pending_raw(5).unwrap();
            assert_eq!(first.len(), 5);
            assert_eq!(decode::<Record>("record", &first[4].1).unwrap(), records[4]);
            // Removing acknowledged records removes their pieces too.
            let acked: Vec<u64> = pending.iter().take(20).map(|(seq, _)| *seq).collect();
            store.remove_records(&acked).unwrap();
            let rest = store.pending_records(1_000).unwrap();
            assert_eq!(rest.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), records[20..].to_vec());
            assert_eq!(store.outbox_usage().0, 20);
            let all: Vec<u64> = rest.iter().map(|(seq, _)| *seq).collect();
            store.remove_records(&all).unwrap();
            assert_eq!(store.outbox_usage(), (0, 0), "no piece is left behind");
            store.append_records(&records[..6]).unwrap();
            store.flush().await.unwrap();
        }
        // 26 records of ~50 KB went through: without pieces sled writes its
        // leaves as blob files.
        let blobs = std::fs::read_dir(dir.path().join("blobs")).map_or(0, |d| d.count());
        assert_eq!(blobs, 0, "no value or node went to a blob file");
        let store = reopen(dir.path()).await;
        let kept: Vec<Record> = store.pending_records(100).unwrap().into_iter().map(|(_, r)| r).collect();
        assert_eq!(kept, records[..6].to_vec(), "records in pieces survive a restart");
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
        let reopened = reopen(dir.path()).await;
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
