//! The on-disk layout: tree names, key encoding and value encoding.
//!
//! One sled database holds five trees:
//!
//! | Tree | Key | Value |
//! |---|---|---|
//! | [`LOG_TREE`] | log index, 8 bytes big-endian (so key order is log order) | JSON `openraft::Entry` |
//! | [`VOTE_TREE`] | [`VALUE_KEY`] | JSON `openraft::Vote` |
//! | [`COMMITTED_TREE`] | [`VALUE_KEY`] | JSON `openraft::LogId` of the last committed entry |
//! | [`PURGED_TREE`] | [`VALUE_KEY`] | JSON `openraft::LogId` of the last purged entry |
//! | [`SNAPSHOT_TREE`] | [`SNAPSHOT_META_KEY`], [`SNAPSHOT_DATA_KEY`] | JSON `openraft::SnapshotMeta`; the snapshot bytes |
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
/// Key of the snapshot's bytes in [`SNAPSHOT_TREE`].
pub const SNAPSHOT_DATA_KEY: &[u8] = b"data";

/// Encodes a log index as a key whose byte order is the numeric order.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
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
