//! Where a stored snapshot's bytes live: a file of their own in [`SNAPSHOT_DIR`] beside the
//! sled database, named by a [`SnapshotFile`] record that the snapshot tree holds with the
//! snapshot's metadata.
//!
//! Why not a sled value, as they were: a large state's snapshot is hundreds of megabytes, and
//! sled writes such a value as one blob and syncs it inside the database's flush, so every Raft
//! log append behind it waited for the whole write (measured under ingest load: a 175–220 MB
//! snapshot held up appends for over a second and cost the leader its quorum; benches/README.md,
//! "Record ingest"). Here the bytes are written in chunks of [`SYNC_EVERY_BYTES`], each synced
//! before the next is written, so the data any other fsync on the disk can queue behind stays
//! small — the approach of etcd's `snap` files and RocksDB's `bytes_per_sync`. Only the small
//! record goes through sled.
//!
//! Crash safety: a file is written under a temporary name, synced, renamed and its directory
//! synced before the record naming it is written (and flushed) in sled, so a record never names
//! a file that is not whole. Files no record names (a write cut short, the snapshot a newer one
//! replaced) are removed when the store opens and after each new snapshot is stored. The record
//! carries the file's length and CRC-32, so a truncated or altered file is refused, naming it,
//! instead of being decoded.
//!
//! Stores written before this kept the bytes in sled ([`SNAPSHOT_DATA_KEY`]); they are read
//! from there until the next snapshot is stored, which moves them to a file.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use openraft::{BasicNode, SnapshotMeta};
use serde::{Deserialize, Serialize};

use crate::codec::{self, SNAPSHOT_DATA_KEY, SNAPSHOT_FILE_KEY, SNAPSHOT_META_KEY};
use crate::error::StoreError;

/// The directory, inside the node's sled directory, that holds snapshot files. (sled keeps
/// files of its own there too, named `conf`, `db`, `blobs` and `snap.*`.)
pub const SNAPSHOT_DIR: &str = "state-snapshots";

/// How much of a snapshot is written before it is synced and the next chunk written.
pub const SYNC_EVERY_BYTES: usize = 4 * 1024 * 1024;

/// The extension of a whole snapshot file.
const EXTENSION: &str = "snap";
/// The extension of a snapshot file being written.
const PARTIAL_EXTENSION: &str = "snap.partial";

/// The snapshot tree's record of the file that holds the stored snapshot's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// The file's name in [`SNAPSHOT_DIR`].
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
    /// CRC-32 (IEEE) of its bytes.
    pub crc32: u32,
}

/// A stored snapshot: its metadata and its bytes.
pub(crate) type StoredSnapshot = (SnapshotMeta<u64, BasicNode>, Vec<u8>);

/// The snapshot files of one store.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotFiles {
    dir: PathBuf,
}

impl SnapshotFiles {
    /// The snapshot files of the store whose sled database is in `store_dir`. Creates nothing.
    pub(crate) fn new(store_dir: &Path) -> Self {
        Self { dir: store_dir.join(SNAPSHOT_DIR) }
    }

    /// Writes `data` as the file of the snapshot `snapshot_id` and returns its record; the file
    /// is whole and durable (its directory entry included) when this returns.
    pub(crate) fn write(&self, snapshot_id: &str, data: &[u8]) -> Result<SnapshotFile, StoreError> {
        let name = file_name(snapshot_id)?;
        self.create_dir()?;
        let partial = self.dir.join(format!("{snapshot_id}.{PARTIAL_EXTENSION}"));
        let path = self.dir.join(&name);
        let io = |what: &'static str, at: &Path| {
            let at = at.display().to_string();
            move |source| StoreError::SnapshotFileIo { what, path: at, source }
        };
        let mut file = File::create(&partial).map_err(io("create", &partial))?;
        for chunk in data.chunks(SYNC_EVERY_BYTES) {
            file.write_all(chunk).map_err(io("write", &partial))?;
            file.sync_data().map_err(io("sync", &partial))?;
        }
        file.sync_all().map_err(io("sync", &partial))?;
        drop(file);
        fs::rename(&partial, &path).map_err(io("rename", &partial))?;
        sync_dir(&self.dir)?;
        Ok(SnapshotFile { name, len: data.len() as u64, crc32: crc32fast::hash(data) })
    }

    /// Reads the file `record` names and checks it is the one the record describes.
    pub(crate) fn read(&self, record: &SnapshotFile) -> Result<Vec<u8>, StoreError> {
        // The name comes from disk: only a name this module could have written is opened, so an
        // altered record cannot point outside the directory.
        let path = self.dir.join(&record.name);
        let shown = path.display().to_string();
        if file_name_is_ours(&record.name).is_none() {
            return Err(StoreError::SnapshotFileBad {
                path: shown,
                problem: "is not a snapshot file name".to_owned(),
            });
        }
        let mut data = Vec::new();
        File::open(&path)
            .and_then(|mut file| file.read_to_end(&mut data))
            .map_err(|source| StoreError::SnapshotFileIo { what: "read", path: shown.clone(), source })?;
        if data.len() as u64 != record.len {
            return Err(StoreError::SnapshotFileBad {
                path: shown,
                problem: format!("is {} bytes long, its record says {}", data.len(), record.len),
            });
        }
        let crc32 = crc32fast::hash(&data);
        if crc32 != record.crc32 {
            return Err(StoreError::SnapshotFileBad {
                path: shown,
                problem: format!("has CRC-32 {crc32:08x}, its record says {:08x}", record.crc32),
            });
        }
        Ok(data)
    }

    /// Removes every file in the directory but `keep` (a snapshot file's name): partial writes
    /// and snapshots a newer one replaced. Returns how many were removed.
    pub(crate) fn remove_all_but(&self, keep: Option<&str>) -> Result<usize, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(StoreError::SnapshotFileIo {
                    what: "list",
                    path: self.dir.display().to_string(),
                    source,
                });
            }
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::SnapshotFileIo {
                what: "list",
                path: self.dir.display().to_string(),
                source,
            })?;
            let name = entry.file_name();
            if keep.is_some_and(|keep| name.to_str() == Some(keep)) || !entry.path().is_file() {
                continue;
            }
            fs::remove_file(entry.path()).map_err(|source| StoreError::SnapshotFileIo {
                what: "remove",
                path: entry.path().display().to_string(),
                source,
            })?;
            tracing::debug!(file = %entry.path().display(), "removed snapshot file no record names");
            removed += 1;
        }
        Ok(removed)
    }

    /// Creates the directory if it is missing, durably (its entry in the store's directory
    /// synced), so a file written in it survives a crash.
    fn create_dir(&self) -> Result<(), StoreError> {
        if self.dir.is_dir() {
            return Ok(());
        }
        fs::create_dir_all(&self.dir).map_err(|source| StoreError::SnapshotFileIo {
            what: "create directory",
            path: self.dir.display().to_string(),
            source,
        })?;
        match self.dir.parent() {
            Some(parent) => sync_dir(parent),
            None => Ok(()),
        }
    }
}

/// Reads the stored snapshot: its metadata, and its bytes from the file its record names (or,
/// in a store written before snapshot files, from the tree). Both or neither must be present.
pub(crate) fn read_stored(
    tree: &sled::Tree,
    files: &SnapshotFiles,
) -> Result<Option<StoredSnapshot>, StoreError> {
    let meta = codec::get(tree, SNAPSHOT_META_KEY, "snapshot metadata")?;
    let record: Option<SnapshotFile> = codec::get(tree, SNAPSHOT_FILE_KEY, "snapshot file record")?;
    let data = match record {
        Some(record) => Some(files.read(&record)?),
        None => tree.get(SNAPSHOT_DATA_KEY)?.map(|data| data.to_vec()),
    };
    match (meta, data) {
        (Some(meta), Some(data)) => Ok(Some((meta, data))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(StoreError::SnapshotIncomplete { missing: "data" }),
        (None, Some(_)) => Err(StoreError::SnapshotIncomplete { missing: "metadata" }),
    }
}

/// The name of the stored record of the snapshot tree's file, if any.
pub(crate) fn stored_file_name(tree: &sled::Tree) -> Result<Option<String>, StoreError> {
    let record: Option<SnapshotFile> = codec::get(tree, SNAPSHOT_FILE_KEY, "snapshot file record")?;
    Ok(record.map(|record| record.name))
}

/// The file name of the snapshot `snapshot_id`; ids are `term-node-index` or `empty`.
fn file_name(snapshot_id: &str) -> Result<String, StoreError> {
    let name = format!("{snapshot_id}.{EXTENSION}");
    match file_name_is_ours(&name) {
        Some(()) => Ok(name),
        None => Err(StoreError::SnapshotFileBad {
            path: name,
            problem: "the snapshot id makes no safe file name".to_owned(),
        }),
    }
}

/// `Some` if `name` is one this module writes: a non-empty stem of ASCII letters, digits and
/// `-`, then `.snap`.
fn file_name_is_ours(name: &str) -> Option<()> {
    let stem = name.strip_suffix(&format!(".{EXTENSION}"))?;
    (!stem.is_empty() && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')).then_some(())
}

/// Syncs a directory, so the entries created or renamed in it are durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|source| StoreError::SnapshotFileIo {
        what: "sync directory",
        path: dir.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_only_ever_plain_snapshot_ids() {
        assert_eq!(file_name("3-1-1200").unwrap(), "3-1-1200.snap");
        assert_eq!(file_name("empty").unwrap(), "empty.snap");
        for bad in ["", "../x", "a/b", "a.b", "a b"] {
            assert!(file_name(bad).is_err(), "{bad:?}");
        }
        assert!(file_name_is_ours("x.snap.partial").is_none());
        assert!(file_name_is_ours("/etc/passwd").is_none());
    }

    #[test]
    fn a_file_reads_back_only_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::new(dir.path());
        // Several chunks, the last one short.
        let data: Vec<u8> = (0..SYNC_EVERY_BYTES * 2 + 17).map(|i| u8::try_from(i % 251).unwrap()).collect();
        let record = files.write("2-1-40", &data).unwrap();
        assert_eq!(record.len, data.len() as u64);
        assert_eq!(files.read(&record).unwrap(), data);

        let path = dir.path().join(SNAPSHOT_DIR).join(&record.name);
        let mut altered = data.clone();
        altered[SYNC_EVERY_BYTES + 3] ^= 1;
        fs::write(&path, &altered).unwrap();
        let error = files.read(&record).unwrap_err().to_string();
        assert!(error.contains("CRC-32") && error.contains("2-1-40.snap"), "{error}");

        fs::write(&path, &data[..100]).unwrap();
        let error = files.read(&record).unwrap_err().to_string();
        assert!(error.contains("is 100 bytes long"), "{error}");

        fs::remove_file(&path).unwrap();
        let error = files.read(&record).unwrap_err().to_string();
        assert!(error.contains("cannot read") && error.contains("2-1-40.snap"), "{error}");

        let outside = SnapshotFile { name: "../conf".to_owned(), ..record };
        let error = files.read(&outside).unwrap_err().to_string();
        assert!(error.contains("not a snapshot file name"), "{error}");
    }

    #[test]
    fn removing_leaves_only_the_kept_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::new(dir.path());
        assert_eq!(files.remove_all_but(None).unwrap(), 0, "no directory yet");
        let old = files.write("1-1-10", b"old").unwrap();
        let new = files.write("1-1-20", b"new").unwrap();
        fs::write(dir.path().join(SNAPSHOT_DIR).join("1-1-30.snap.partial"), b"cut short").unwrap();
        assert_eq!(files.remove_all_but(Some(&new.name)).unwrap(), 2);
        assert_eq!(files.read(&new).unwrap(), b"new");
        assert!(files.read(&old).is_err());
        let left: Vec<_> =
            fs::read_dir(dir.path().join(SNAPSHOT_DIR)).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("1-1-20.snap")]);
    }
}
