//! Entry hashing and chain verification.
//!
//! Canonical encoding, fed to SHA-256 after the domain separator
//! `aos.audit.v1\0`, field by field in declaration order: integers as 8
//! little-endian bytes; strings as their length (8 bytes LE) then UTF-8
//! bytes; options as one byte (0 absent, 1 present) then the value; enums
//! as their ledger spelling; JSON values as compact JSON text with object keys
//! sorted (not `Value::to_string`, whose key order depends on whether some
//! crate in the build enabled serde_json's `preserve_order`). The encoding is
//! injective, independent of serde formats and build features, and cannot
//! fail.

use sha2::{Digest, Sha256};

use super::AuditEntry;

/// `prev_hash` of the first entry: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Why a chain does not verify. Each variant names the first entry (by seq)
/// that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An entry is missing, duplicated or out of order.
    #[error("audit entry {found}: sequence gap, expected seq {expected}")]
    SequenceGap {
        /// The seq that should be at this position.
        expected: u64,
        /// The seq that is there.
        found: u64,
    },
    /// The entry's `prev_hash` is not the previous entry's `hash`.
    #[error("audit entry {seq}: broken link, prev_hash does not match the previous entry's hash")]
    BrokenLink {
        /// The entry.
        seq: u64,
    },
    /// The entry's content does not hash to its `hash`.
    #[error("audit entry {seq}: hash mismatch, the entry was altered after it was written")]
    HashMismatch {
        /// The entry.
        seq: u64,
    },
}

impl ChainError {
    /// The seq of the first bad entry.
    pub fn seq(&self) -> u64 {
        match self {
            ChainError::SequenceGap { found, .. } => *found,
            ChainError::BrokenLink { seq } | ChainError::HashMismatch { seq } => *seq,
        }
    }
}

/// Verifies a complete ledger: seqs run 1, 2, 3… without gaps, the first
/// entry links to [`GENESIS_HASH`], every `prev_hash` is the previous
/// entry's `hash`, and every `hash` recomputes. An empty ledger is valid.
pub fn verify_chain(entries: &[AuditEntry]) -> Result<(), ChainError> {
    verify_chain_after(0, GENESIS_HASH, entries)
}

/// Verifies a contiguous segment that follows the entry with seq
/// `prev_seq` and hash `prev_hash` (e.g. a page from
/// [`super::AuditLedger::query`] without a tenant filter, anchored on an
/// entry already trusted).
pub fn verify_chain_after(prev_seq: u64, prev_hash: &str, entries: &[AuditEntry]) -> Result<(), ChainError> {
    let mut expected_seq = prev_seq;
    let mut expected_prev = prev_hash;
    for entry in entries {
        expected_seq = expected_seq.saturating_add(1);
        if entry.seq != expected_seq {
            return Err(ChainError::SequenceGap { expected: expected_seq, found: entry.seq });
        }
        if entry.prev_hash != expected_prev {
            return Err(ChainError::BrokenLink { seq: entry.seq });
        }
        if entry_hash(entry) != entry.hash {
            return Err(ChainError::HashMismatch { seq: entry.seq });
        }
        expected_prev = &entry.hash;
    }
    Ok(())
}

/// The canonical hash of `entry`, ignoring its `hash` field.
pub(super) fn entry_hash(entry: &AuditEntry) -> String {
    let mut c = Canonical(Sha256::new());
    c.0.update(b"aos.audit.v1\0");
    c.u64(entry.seq);
    c.u64(entry.at_ms);
    c.u64(entry.log_index);
    c.str(&entry.request_id);
    c.str(&entry.actor.actor_id);
    c.str(entry.actor.actor_type.as_str());
    c.str(entry.actor.role.as_str());
    c.opt_str(entry.actor.tenant_id.as_deref());
    c.str(entry.action.as_str());
    c.opt_str(entry.tenant_id.as_deref());
    c.str(&entry.target);
    c.opt_str(entry.before.as_ref().map(canonical_json).as_deref());
    c.opt_str(entry.after.as_ref().map(canonical_json).as_deref());
    c.str(entry.outcome.as_str());
    c.str(&entry.detail);
    c.str(&entry.prev_hash);
    hex::encode(c.0.finalize())
}

struct Canonical(Sha256);

impl Canonical {
    fn u64(&mut self, n: u64) {
        self.0.update(n.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.u64(u64::try_from(s.len()).unwrap_or(u64::MAX));
        self.0.update(s.as_bytes());
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.0.update([0u8]),
            Some(s) => {
                self.0.update([1u8]);
                self.str(s);
            }
        }
    }
}

/// Compact JSON with object keys in byte order, whatever map type
/// `serde_json` was built with.
pub(crate) fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod canonical_tests {
    use super::canonical_json;

    #[test]
    fn object_keys_are_sorted_at_every_depth() {
        let mut inner = serde_json::Map::new();
        inner.insert("z".into(), serde_json::json!(1));
        inner.insert("a".into(), serde_json::json!([{"y": true, "b": null}]));
        let mut outer = serde_json::Map::new();
        outer.insert("m".into(), serde_json::Value::Object(inner));
        outer.insert("c".into(), serde_json::json!("x\"y"));
        assert_eq!(
            canonical_json(&serde_json::Value::Object(outer)),
            r#"{"c":"x\"y","m":{"a":[{"b":null,"y":true}],"z":1}}"#
        );
    }
}
