//! The edge agent's local store: a sled database for the last good
//! snapshot and the runs, and the outbox log ([`crate::outbox`]) of records
//! not yet acknowledged by the control plane.
//!
//! | Tree | Key | Value |
//! |---|---|---|
//! | `snapshot` | `envelope` | the signed envelope bytes as received |
//! | `snapshot` | `governance` | JSON governance state last applied |
//! | `snapshot` | `boot_epoch` | 8-byte big-endian count of starts |
//! | `snapshot` | `trusted_keys` | JSON list of snapshot keys (hex) pushed by the control plane |
//! | `runs` | run id | JSON [`crate::runs::RunRecord`] |
//!
//! Records are JSON [`crate::records::Record`]s in the outbox log under
//! `outbox/`. Agents before the log kept them in a sled tree `outbox`
//! (8-byte big-endian sequence; a long record's further pieces under
//! sequence + 4-byte piece number): at open, whatever such a tree still
//! holds is moved to the log, in order, synced, and the tree dropped.
//!
//! Anything the workload is told has happened is flushed before the answer
//! leaves ([`AgentStore::flush`]: sled and the outbox log): a `kill -9`
//! right after a response loses nothing that response acknowledged.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::AgentError;
use crate::outbox::{Appended, Outbox, PendingRecord, Position};
use crate::records::Record;

const SNAPSHOT_KEY: &[u8] = b"envelope";
const TRUSTED_KEYS_KEY: &[u8] = b"trusted_keys";
const BOOT_EPOCH_KEY: &[u8] = b"boot_epoch";
const GOVERNANCE_KEY: &[u8] = b"governance";
const DATA_KEY_KEY: &[u8] = b"tenant_data_key";
/// The sled tree that held the outbox before the log.
const LEGACY_OUTBOX_TREE: &[u8] = b"outbox";
/// Length of a legacy outbox key of a record's further piece.
const LEGACY_PIECE_KEY_LEN: usize = 12;
/// The local key sealing the tenant data key at rest, beside the database.
const LOCAL_KEY_FILE: &str = "local.key";

/// Handle on the agent's database; cheap to clone.
#[derive(Clone, Debug)]
pub struct AgentStore {
    db: sled::Db,
    dir: std::path::PathBuf,
    snapshot: sled::Tree,
    runs: sled::Tree,
    outbox: Arc<Outbox>,
    /// Pending records and bytes at open (log and migrated ones).
    outbox_found: (u64, u64),
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
    /// Set by a caller that needs the database flushed too (set before
    /// it takes its ticket; cleared by the round that flushes it).
    database_wanted: std::sync::atomic::AtomicBool,
    /// fsyncs run (for `/metrics`).
    fsyncs: AtomicU64,
}

impl AgentStore {
    /// Opens (creating) the database under `dir`.
    pub fn open(dir: &Path) -> Result<AgentStore, AgentError> {
        // No background flush every 500 ms: whatever must survive a crash
        // is flushed before its answer leaves (`flush`, or the outbox log
        // holding a plain usage report's record, counted again at start),
        // and the rest (a plain admission's reservation) may be lost by
        // design. sled's timer flush only competed with the steps for the
        // IO buffers.
        let db = sled::Config::new().path(dir).flush_every_ms(None).open()?;
        let outbox = Outbox::open(&dir.join("outbox"))?;
        let (migrated, migrated_bytes) = migrate_legacy_outbox(&db, &outbox)?;
        let (found, found_bytes) = outbox.found();
        Ok(AgentStore {
            outbox_found: (found + migrated, found_bytes + migrated_bytes),
            snapshot: db.open_tree("snapshot")?,
            runs: db.open_tree("runs")?,
            outbox: Arc::new(outbox),
            db,
            dir: dir.to_path_buf(),
            commit: Arc::new(GroupCommit {
                requested: AtomicU64::new(0),
                done: std::sync::Mutex::new((0, None)),
                leader: tokio::sync::Mutex::new(()),
                database_wanted: std::sync::atomic::AtomicBool::new(false),
                fsyncs: AtomicU64::new(0),
            }),
        })
    }

    /// Makes every write made before the call durable: the outbox log's
    /// and the database's. The fsyncs run on the blocking pool, so the
    /// async workers never stall on the disk, and concurrent callers share
    /// them (see [`GroupCommit`]).
    pub async fn flush(&self) -> Result<(), AgentError> {
        // Before the ticket: a round that covers the ticket read the flag
        // after it was set, or a round since it was set flushed already.
        self.commit.database_wanted.store(true, Ordering::SeqCst);
        self.group_commit().await
    }

    /// Makes every append to the outbox log made before the call durable
    /// (the database's writes only if another caller of the same round
    /// asked for them). What a usage report acknowledges is in the log
    /// (see `Engine::open`), so it waits for one fsync, not two.
    pub async fn flush_outbox(&self) -> Result<(), AgentError> {
        self.group_commit().await
    }

    async fn group_commit(&self) -> Result<(), AgentError> {
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
        let database = commit.database_wanted.swap(false, Ordering::SeqCst);
        // One task syncs the outbox log, then the database when asked: two
        // tasks side by side were slower (the disk serialises the fsyncs
        // anyway, and the second hand-off to the blocking pool cost more).
        let db = self.db.clone();
        let outbox = Arc::clone(&self.outbox);
        let result = tokio::task::spawn_blocking(move || {
            outbox.sync()?;
            if database {
                db.flush()?;
            }
            Ok::<(), AgentError>(())
        })
        .await;
        commit.fsyncs.fetch_add(1, Ordering::Relaxed);
        let error: Option<Arc<str>> = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string().into()),
            Err(e) => Some(format!("flush task failed: {e}").into()),
        };
        if error.is_some() && database {
            // Whoever asked for the database gets the error; the next
            // round tries again.
            commit.database_wanted.store(true, Ordering::SeqCst);
        }
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

    /// Appends records to the outbox (not flushed).
    pub fn append_records(&self, records: &[Record]) -> Result<Appended, AgentError> {
        let encoded = records.iter().map(|r| encode("record", r)).collect::<Result<Vec<_>, _>>()?;
        self.outbox.append(encoded.iter().map(Vec::as_slice))
    }

    /// Up to `limit` pending records, oldest first, decoded.
    pub fn pending_records(&self, limit: usize) -> Result<Vec<(PendingRecord, Record)>, AgentError> {
        self.pending_raw(limit)?
            .into_iter()
            .map(|p| {
                let record = decode("record", &p.json)?;
                Ok((p, record))
            })
            .collect()
    }

    /// Up to `limit` pending records, oldest first, as stored (JSON): what
    /// the delivery loop sends without re-encoding.
    pub fn pending_raw(&self, limit: usize) -> Result<Vec<PendingRecord>, AgentError> {
        self.outbox.pending(limit)
    }

    /// Up to `limit` pending records from `from` on (see
    /// [`Outbox::read_from`]).
    pub fn pending_from(
        &self,
        from: Option<Position>,
        limit: usize,
    ) -> Result<Vec<PendingRecord>, AgentError> {
        self.outbox.read_from(from, limit)
    }

    /// Flushes the database now, blocking (at start, before serving).
    pub fn flush_database_blocking(&self) -> Result<(), AgentError> {
        self.db.flush()?;
        Ok(())
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

    /// Retires every pending record before `next` (the
    /// [`PendingRecord::next`] of the last record the control plane
    /// acknowledged).
    pub fn records_delivered(&self, next: Position) -> Result<(), AgentError> {
        self.outbox.delivered_through(next)
    }

    /// Number of pending records and their encoded size in bytes, as found
    /// at open.
    pub fn outbox_usage(&self) -> (u64, u64) {
        self.outbox_found
    }
}

/// Moves records an earlier version left in the sled tree `outbox` to the
/// log, in order, syncs the log, then drops the tree (and flushes): a
/// crash in between at worst leaves them in both, and they are re-sent
/// once more (the control plane de-duplicates by record id). Returns the
/// records and bytes moved.
fn migrate_legacy_outbox(db: &sled::Db, outbox: &Outbox) -> Result<(u64, u64), AgentError> {
    if !db.tree_names().iter().any(|n| n.as_ref() == LEGACY_OUTBOX_TREE) {
        return Ok((0, 0));
    }
    let tree = db.open_tree(LEGACY_OUTBOX_TREE)?;
    let mut records: Vec<Vec<u8>> = Vec::new();
    for item in tree.iter() {
        let (key, value) = item?;
        if key.len() == 8 {
            records.push(value.to_vec());
        } else if key.len() == LEGACY_PIECE_KEY_LEN
            && let Some(record) = records.last_mut()
        {
            // A further piece of the record just read (written in the same
            // batch as its first row, so never found without it).
            record.extend_from_slice(&value);
        }
    }
    let mut bytes = 0;
    if !records.is_empty() {
        bytes = outbox.append(records.iter().map(Vec::as_slice))?.bytes;
        outbox.sync()?;
        tracing::info!(
            message = "moved pending records from the sled outbox tree to the outbox log",
            records = records.len()
        );
    }
    drop(tree);
    db.drop_tree(LEGACY_OUTBOX_TREE)?;
    db.flush()?;
    Ok((records.len() as u64, bytes))
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
        let store = reopen(dir.path()).await;
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
        let store = reopen(dir.path()).await;
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
            governance: None,
        });
        Record::new("acme", None, 1, body)
    }

    fn decoded(pending: &[(PendingRecord, Record)]) -> Vec<Record> {
        pending.iter().map(|(_, r)| r.clone()).collect()
    }

    #[tokio::test]
    async fn records_read_back_whole_in_order_and_delivered_ones_never_return() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> =
            (0..40).map(|i| record_of(if i % 3 == 0 { 100 } else { 300 * 1024 + i }, i)).collect();
        {
            let store = AgentStore::open(dir.path()).unwrap();
            store.append_records(&records).unwrap();
            store.flush().await.unwrap();
            let pending = store.pending_records(1_000).unwrap();
            assert_eq!(decoded(&pending), records, "every record reads back whole, in order");
            // A limit counts records; records larger than a read chunk too.
            let first = store.pending_raw(5).unwrap();
            assert_eq!(first.len(), 5);
            assert_eq!(decode::<Record>("record", &first[4].json).unwrap(), records[4]);
            store.records_delivered(pending[19].0.next).unwrap();
            assert_eq!(decoded(&store.pending_records(1_000).unwrap()), records[20..].to_vec());
        }
        let store = reopen(dir.path()).await;
        let bytes: u64 = records[20..].iter().map(|r| serde_json::to_vec(r).unwrap().len() as u64).sum();
        assert_eq!(store.outbox_usage(), (20, bytes), "what a restart finds pending");
        let rest = store.pending_records(1_000).unwrap();
        assert_eq!(decoded(&rest), records[20..].to_vec(), "delivered records never come back");
        store.records_delivered(rest[19].0.next).unwrap();
        store.append_records(&records[..6]).unwrap();
        store.flush().await.unwrap();
        drop(store);
        let store = reopen(dir.path()).await;
        assert_eq!(store.outbox_usage().0, 6);
        assert_eq!(decoded(&store.pending_records(100).unwrap()), records[..6].to_vec());
    }

    #[tokio::test]
    async fn records_left_in_the_sled_outbox_tree_move_to_the_log_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> =
            (0..7).map(|i| record_of(if i == 3 { 20 * 1024 } else { 50 }, i)).collect();
        {
            // As the agent before the log wrote them: one row per record,
            // a long one in 6 KiB pieces under sequence + piece number.
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let tree = db.open_tree(LEGACY_OUTBOX_TREE).unwrap();
            for (seq, record) in (10u64..).zip(&records) {
                let json = serde_json::to_vec(record).unwrap();
                for (piece, chunk) in (0u32..).zip(json.chunks(6 * 1024)) {
                    let mut key = seq.to_be_bytes().to_vec();
                    if piece > 0 {
                        key.extend_from_slice(&piece.to_be_bytes());
                    }
                    tree.insert(key, chunk).unwrap();
                }
            }
            db.flush().unwrap();
        }
        let store = reopen(dir.path()).await;
        assert_eq!(store.outbox_usage().0, 7);
        assert_eq!(decoded(&store.pending_records(100).unwrap()), records);
        assert!(
            !store.db.tree_names().iter().any(|n| n.as_ref() == LEGACY_OUTBOX_TREE),
            "the tree is dropped"
        );
        drop(store);
        // Moved once: a second start finds them in the log only.
        let store = reopen(dir.path()).await;
        assert_eq!(decoded(&store.pending_records(100).unwrap()), records);
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
