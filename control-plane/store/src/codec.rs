//! The on-disk layout: tree names, key encoding and value encoding.
//!
//! One sled database holds five trees (and a snapshot's bytes sit in a file beside it, see
//! `snapshot_file`):
//!
//! | Tree | Key | Value |
//! |---|---|---|
//! | [`LOG_TREE`] | log index, 8 bytes big-endian (so key order is log order); for an entry's further pieces, index + piece number (4 bytes big-endian) | JSON `openraft::Entry`, LZ4-compressed when at least [`COMPRESS_FROM_BYTES`] long, cut in pieces of at most [`LOG_PIECE_BYTES`] |
//! | [`VOTE_TREE`] | [`VALUE_KEY`] | JSON `openraft::Vote` |
//! | [`COMMITTED_TREE`] | [`VALUE_KEY`] | JSON `openraft::LogId` of the last committed entry |
//! | [`PURGED_TREE`] | [`VALUE_KEY`] | JSON `openraft::LogId` of the last purged entry |
//! | [`SNAPSHOT_TREE`] | [`SNAPSHOT_META_KEY`], [`SNAPSHOT_FILE_KEY`] | JSON `openraft::SnapshotMeta`; JSON [`SnapshotFile`](crate::snapshot_file::SnapshotFile), the record of the file holding the snapshot's bytes (`snapshot_file`; stores written before kept the bytes under [`SNAPSHOT_DATA_KEY`]) |
//!
//! A log entry longer than [`LOG_PIECE_BYTES`] is stored as pieces: the first under the entry's
//! index, the rest under [`piece_key`]s, which sort right after it and before the next index, so
//! a range scan reads an entry's pieces together and a range removal removes them together. All
//! of an entry's pieces are written in one atomic batch. Why pieces: sled 0.34 writes any value
//! or tree node larger than a quarter of its segment (128 KiB) to a separate blob file, and
//! copies a whole leaf (up to 17 rows) on every insert. Whole 50–250 KB ingest entries made
//! every insert copy megabytes and every leaf a blob (measured: a tenth of a node's CPU in blob
//! writes and leaf copies under ingest load); pieces of at most 6 KiB keep every leaf inline.
//! Entries written whole (by earlier versions, or small ones) read as before.
//!
//! An entry whose JSON is at least [`COMPRESS_FROM_BYTES`] long is stored LZ4-compressed
//! (`lz4_flex`'s block format): the byte [`LZ4_TAG`], the JSON's length (4 bytes little-endian),
//! then the compressed block. No JSON text starts with that byte, so uncompressed entries (small
//! ones, and everything earlier versions wrote) read as before. Why: under ingest load a node
//! spent ~40 % of its CPU in sled storing the log — copying leaves of 6 KiB pieces on every
//! insert and writing them out again — all of it in proportion to the bytes stored, and a
//! batch of agent records (JSON with the same keys in every record) compresses to about a
//! fifth at over 1 GB/s.
//!
//! Values are JSON because the application's commands carry `serde_json::Value`, which a
//! non-self-describing format cannot round-trip. The snapshot bytes (what is stored, sent to
//! lagging followers and installed) are a JSON object
//! `{"last_applied": LogId | null, "last_membership": StoredMembership, "state": A}`, so a
//! snapshot describes itself and is checked against its metadata before it is trusted.

use openraft::{BasicNode, LogId, StoredMembership};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Tree of Raft log entries keyed by log index.
pub const LOG_TREE: &str = "raft_log";
/// Tree holding the persisted vote.
pub const VOTE_TREE: &str = "raft_vote";
/// Tree holding the last committed log id.
pub const COMMITTED_TREE: &str = "raft_committed";
/// Tree holding the last purged log id.
pub const PURGED_TREE: &str = "raft_purged";
/// Tree holding the latest state-machine snapshot.
pub const SNAPSHOT_TREE: &str = "raft_snapshot";

/// Key of the single value in the vote, committed and purged trees.
pub const VALUE_KEY: &[u8] = b"value";
/// Key of the snapshot's metadata in [`SNAPSHOT_TREE`].
pub const SNAPSHOT_META_KEY: &[u8] = b"meta";
/// Key of the record of the snapshot's file in [`SNAPSHOT_TREE`].
pub const SNAPSHOT_FILE_KEY: &[u8] = b"file";
/// Key of the snapshot's bytes in [`SNAPSHOT_TREE`] in stores written before snapshot files;
/// read until the next snapshot is stored, which removes it.
pub const SNAPSHOT_DATA_KEY: &[u8] = b"data";

/// Longest piece of an encoded log entry stored in one row: 17 rows of this (a leaf just before
/// sled splits it) stay under sled's 128 KiB blob threshold.
pub const LOG_PIECE_BYTES: usize = 6 * 1024;

/// Shortest encoded entry that is stored compressed: below this the saving is a few hundred
/// bytes at most and the entries are admin writes, whose latency counts more than their size.
pub const COMPRESS_FROM_BYTES: usize = 2048;

/// First byte of a compressed entry. Never the first byte of JSON text.
pub const LZ4_TAG: u8 = 0x01;

/// Most bytes one byte of an LZ4 block can decompress to, rounded up.
const LZ4_MAX_EXPANSION: usize = 256;

/// Length of a compressed entry's header: the tag and the JSON's length.
const LZ4_HEADER: usize = 5;

/// Longest JSON a compressed entry may claim to hold: far above any entry a node writes (a
/// proposal is bounded by the gRPC message limit), and a bound on what a corrupt header can
/// make a read allocate.
const MAX_ENTRY_BYTES: usize = 256 * 1024 * 1024;

/// Length of a [`piece_key`].
const PIECE_KEY_LEN: usize = 12;

/// Key of piece `piece` (from 1) of the entry at `index`.
pub(crate) fn piece_key(index: u64, piece: u32) -> [u8; PIECE_KEY_LEN] {
    let mut key = [0u8; PIECE_KEY_LEN];
    key[..8].copy_from_slice(&index.to_be_bytes());
    key[8..].copy_from_slice(&piece.to_be_bytes());
    key
}

/// The last key an entry's rows can have: a range ending here (inclusive) covers the entry at
/// `index` with all its pieces.
pub(crate) fn last_key_of(index: u64) -> [u8; PIECE_KEY_LEN] {
    piece_key(index, u32::MAX)
}

/// The log index a row of the log tree belongs to (an entry's first row or one of its pieces).
pub(crate) fn row_index(key: &[u8]) -> Result<u64, StoreError> {
    match key.len() {
        8 => key_index(key),
        PIECE_KEY_LEN => key_index(&key[..8]),
        len => Err(StoreError::BadLogKey { len }),
    }
}

/// The rows that store `encoded` (the entry at `index`): its first piece under the index, the
/// others under piece keys.
pub(crate) fn log_rows(index: u64, encoded: &[u8]) -> Vec<(Vec<u8>, &[u8])> {
    encoded
        .chunks(LOG_PIECE_BYTES)
        .enumerate()
        .map(|(i, piece)| {
            let key = match i {
                0 => index_key(index).to_vec(),
                // Pieces are bounded by the entry's size: 2^32 of them is 24 TiB.
                n => piece_key(index, u32::try_from(n).unwrap_or(u32::MAX)).to_vec(),
            };
            (key, piece)
        })
        .collect()
}

/// The bytes to store for an entry whose JSON is `json`: the JSON itself when short, or when
/// compressing it would not make it smaller; otherwise the tagged, compressed form.
pub(crate) fn pack(json: Vec<u8>) -> Vec<u8> {
    let Ok(len) = u32::try_from(json.len()) else {
        return json;
    };
    if json.len() < COMPRESS_FROM_BYTES {
        return json;
    }
    let mut packed = vec![0u8; LZ4_HEADER + lz4_flex::block::get_maximum_output_size(json.len())];
    let Some((header, body)) = packed.split_first_chunk_mut::<LZ4_HEADER>() else {
        return json;
    };
    let Ok(written) = lz4_flex::block::compress_into(&json, body) else {
        // The output is sized for the worst case, so this does not happen; storing the JSON
        // as it is stays correct if it does.
        return json;
    };
    if LZ4_HEADER + written >= json.len() {
        return json;
    }
    header[0] = LZ4_TAG;
    header[1..].copy_from_slice(&len.to_le_bytes());
    packed.truncate(LZ4_HEADER + written);
    packed
}

/// The JSON of an entry stored as `stored` (see [`pack`]); `index` names it in the error.
fn unpack(index: u64, stored: EntryBytes) -> Result<EntryBytes, StoreError> {
    let Some((header, body)) = stored.split_first_chunk::<LZ4_HEADER>() else {
        return Ok(stored);
    };
    if header[0] != LZ4_TAG {
        return Ok(stored);
    }
    let corrupt = |reason: String| StoreError::LogEntryCompression { index, reason };
    let [_, l0, l1, l2, l3] = *header;
    let len = usize::try_from(u32::from_le_bytes([l0, l1, l2, l3])).unwrap_or(usize::MAX);
    if len > MAX_ENTRY_BYTES {
        return Err(corrupt(format!("header states {len} bytes, over the {MAX_ENTRY_BYTES}-byte limit")));
    }
    // An LZ4 block expands at most ~255 times (a match's length grows by 255 per byte), so a
    // header stating more is damaged; checked before the buffer is allocated.
    if len > body.len().saturating_mul(LZ4_MAX_EXPANSION).saturating_add(LZ4_HEADER) {
        return Err(corrupt(format!(
            "header states {len} bytes, more than a {}-byte block can hold",
            body.len()
        )));
    }
    let mut json = vec![0u8; len];
    let written = lz4_flex::block::decompress_into(body, &mut json).map_err(|e| corrupt(e.to_string()))?;
    if written != len {
        return Err(corrupt(format!("header states {len} bytes, the block holds {written}")));
    }
    Ok(EntryBytes::Joined(json))
}

/// An entry's encoded bytes as read back: the one row it took, or its pieces joined.
#[derive(Debug)]
pub(crate) enum EntryBytes {
    /// Stored in one row.
    Whole(sled::IVec),
    /// Joined from pieces, or decompressed.
    Joined(Vec<u8>),
}

impl std::ops::Deref for EntryBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Whole(bytes) => bytes,
            Self::Joined(bytes) => bytes,
        }
    }
}

/// Reads log-tree rows (in key order) back as `(index, entry JSON)`, joining each entry's
/// pieces and decompressing what was stored compressed. A piece without its entry's first
/// row, or pieces out of sequence, is an error: the batch that wrote them was atomic, so the
/// tree was changed behind the store's back.
pub(crate) struct LogEntries<I: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> {
    rows: std::iter::Peekable<I>,
}

impl<I: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> LogEntries<I> {
    /// Reads the entries of `rows`.
    pub(crate) fn new(rows: I) -> Self {
        Self { rows: rows.peekable() }
    }
}

impl<I: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> Iterator for LogEntries<I> {
    type Item = Result<(u64, EntryBytes), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (key, first) = match self.rows.next()? {
            Ok(row) => row,
            Err(e) => return Some(Err(e.into())),
        };
        if key.len() == PIECE_KEY_LEN {
            return Some(row_index(&key).and_then(|index| Err(StoreError::LogPieceAlone { index })));
        }
        let index = match key_index(&key) {
            Ok(index) => index,
            Err(e) => return Some(Err(e)),
        };
        let mut joined: Option<Vec<u8>> = None;
        let mut expected = 1u32;
        while let Some(Ok((next, _))) = self.rows.peek() {
            if next.len() != PIECE_KEY_LEN || next[..8] != key[..] {
                break;
            }
            let Some(Ok((next, piece))) = self.rows.next() else { break };
            if next[8..] != expected.to_be_bytes() {
                return Some(Err(StoreError::LogPieceAlone { index }));
            }
            joined.get_or_insert_with(|| first.to_vec()).extend_from_slice(&piece);
            expected = expected.saturating_add(1);
        }
        let stored = joined.map_or(EntryBytes::Whole(first), EntryBytes::Joined);
        Some(unpack(index, stored).map(|json| (index, json)))
    }
}

/// Encodes a log index as a key whose byte order is the numeric order.
pub fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Decodes a key written by [`index_key`].
pub(crate) fn key_index(key: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(key).map(u64::from_be_bytes).map_err(|_| StoreError::BadLogKey { len: key.len() })
}

/// Encodes `value` as JSON; `what` names it in the error.
pub(crate) fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode { what, source })
}

/// Decodes JSON `bytes`; `what` names the value in the error.
pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode { what, source })
}

/// Reads and decodes the value under `key`, if present.
pub(crate) fn get<T: DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>, StoreError> {
    tree.get(key)?.map(|bytes| decode(what, &bytes)).transpose()
}

/// Encodes and writes `value` under `key`.
pub(crate) fn put<T: Serialize>(
    tree: &sled::Tree,
    key: &[u8],
    what: &'static str,
    value: &T,
) -> Result<(), StoreError> {
    tree.insert(key, encode(what, value)?)?;
    Ok(())
}

/// The bytes of a Raft snapshot: the application state together with the point in the log it
/// reflects, so a snapshot is self-describing and can be checked against its metadata.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnapshotPayload<S> {
    /// Last log id applied to `state`.
    pub(crate) last_applied: Option<LogId<u64>>,
    /// Last membership applied to `state`.
    pub(crate) last_membership: StoredMembership<u64, BasicNode>,
    /// The application state.
    pub(crate) state: S,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_sort_numerically() {
        let mut keys: Vec<[u8; 8]> = [300_u64, 2, u64::MAX, 0, 256].into_iter().map(index_key).collect();
        keys.sort_unstable();
        let indices: Vec<u64> = keys.iter().map(|k| key_index(k).unwrap()).collect();
        assert_eq!(indices, vec![0, 2, 256, 300, u64::MAX]);
    }

    /// JSON-like text: an object's brace, then `chunk` repeated `times` times (repetition is
    /// what makes text compressible).
    fn text(chunk: &[u8], times: usize) -> Vec<u8> {
        let mut text = b"{".to_vec();
        for _ in 0..times {
            text.extend_from_slice(chunk);
        }
        text
    }

    proptest::proptest! {
        #[test]
        fn packed_entries_unpack_to_what_was_packed(
            chunk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            times in 1usize..40,
        ) {
            let json = text(&chunk, times);
            let packed = pack(json.clone());
            proptest::prop_assert!(packed.len() <= json.len());
            proptest::prop_assert_eq!(packed[0] == LZ4_TAG, packed != json);
            let unpacked = unpack(7, EntryBytes::Joined(packed)).unwrap();
            proptest::prop_assert_eq!(&unpacked[..], &json[..]);
        }
    }

    proptest::proptest! {
        /// Whatever bytes follow the tag (a damaged or forged row), reading them back is an
        /// answer, never a panic, and never more than the block's bytes could hold.
        #[test]
        fn any_bytes_after_the_tag_unpack_or_fail_cleanly(
            rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2_000),
        ) {
            let mut stored = vec![LZ4_TAG];
            stored.extend_from_slice(&rest);
            match unpack(9, EntryBytes::Joined(stored)) {
                Ok(json) => proptest::prop_assert!(json.len() <= rest.len() * LZ4_MAX_EXPANSION + LZ4_HEADER),
                Err(error) => proptest::prop_assert!(error.to_string().contains("log entry 9")),
            }
        }
    }

    #[test]
    fn only_long_compressible_entries_are_compressed() {
        let short = text(b"ab", COMPRESS_FROM_BYTES / 2 - 1);
        assert_eq!(pack(short.clone()), short, "under the threshold");
        let long = text(b"ab", COMPRESS_FROM_BYTES);
        let packed = pack(long.clone());
        assert_eq!(packed[0], LZ4_TAG);
        assert!(packed.len() < long.len() / 10, "{} bytes", packed.len());
    }

    #[test]
    fn short_key_is_an_error() {
        assert!(matches!(key_index(b"abc"), Err(StoreError::BadLogKey { len: 3 })));
    }

    #[test]
    fn json_values_round_trip_in_payload() {
        let payload = SnapshotPayload {
            last_applied: None,
            last_membership: StoredMembership::default(),
            state: serde_json::json!({"a": [1, 2.5, null, {"b": "c"}]}),
        };
        let bytes = encode("snapshot", &payload).unwrap();
        let back: SnapshotPayload<serde_json::Value> = decode("snapshot", &bytes).unwrap();
        assert_eq!(back.state, payload.state);
    }
}
