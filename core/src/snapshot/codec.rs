//! Canonical payload encoding and the signed envelope.
//!
//! The payload is the snapshot in `postcard` (a compact, deterministic serde
//! format: fixed field order, no maps, collections in the order given). The
//! snapshot model keeps its collections sorted by id, so the same content
//! always encodes to the same bytes and hashes to the same digest.
//!
//! Envelope layout (all integers little-endian):
//!
//! ```text
//! magic      8 bytes  "AOSSNAP" + format version (3; 2 added workload keys,
//!                    3 data sources, credentials and plane bindings)
//! flags      1 byte   bit 0: signed; other bits must be zero
//! key_id     1 byte length + ASCII (16 hex chars when signed, 0 when not)
//! hash      32 bytes  SHA-256 of the payload
//! signature 64 bytes  ed25519 over "aos.snapshot.v1\0" + hash (signed only)
//! length     4 bytes  payload length
//! payload    length bytes
//! ```
//!
//! Nothing may follow the payload. Decoding never panics on any input (a
//! fuzz target exercises it).

use super::SnapshotError;
use super::keys::KeyId;
use super::model::PolicySnapshot;

/// Magic bytes, including the envelope format version in the last byte.
pub const ENVELOPE_MAGIC: [u8; 8] = *b"AOSSNAP\x03";

const FLAG_SIGNED: u8 = 0b0000_0001;
#[expect(clippy::cast_possible_truncation, reason = "KeyId::LEN is 16")]
const KEY_ID_LEN_BYTE: u8 = KeyId::LEN as u8;
/// Largest payload accepted: 64 MiB. Bounds memory before any crypto runs.
const MAX_PAYLOAD: usize = 64 << 20;

/// A decoded envelope; its signature is not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Signing key, when signed.
    pub key_id: Option<KeyId>,
    /// SHA-256 of `payload` as claimed by the signer.
    pub content_hash: [u8; 32],
    /// ed25519 signature, when signed.
    pub signature: Option<[u8; 64]>,
    /// Canonical snapshot encoding.
    pub payload: Vec<u8>,
}

impl Envelope {
    /// Serialises the envelope.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 1 + 17 + 32 + 64 + 4 + self.payload.len());
        out.extend_from_slice(&ENVELOPE_MAGIC);
        let signed = self.key_id.is_some() && self.signature.is_some();
        out.push(if signed { FLAG_SIGNED } else { 0 });
        match (&self.key_id, &self.signature) {
            (Some(key_id), Some(signature)) => {
                out.push(KEY_ID_LEN_BYTE);
                out.extend_from_slice(key_id.as_str().as_bytes());
                out.extend_from_slice(&self.content_hash);
                out.extend_from_slice(signature);
            }
            _ => {
                out.push(0);
                out.extend_from_slice(&self.content_hash);
            }
        }
        // Payloads above 4 GiB cannot be produced: encode_payload refuses
        // anything above MAX_PAYLOAD.
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Parses envelope bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(8, "magic")? != ENVELOPE_MAGIC {
            return Err(malformed("not an AOS snapshot envelope (bad magic or unsupported format version)"));
        }
        let flags = r.byte("flags")?;
        if flags & !FLAG_SIGNED != 0 {
            return Err(malformed(format!("unknown flag bits {flags:#010b}")));
        }
        let signed = flags & FLAG_SIGNED != 0;
        let key_id_len = usize::from(r.byte("key id length")?);
        let key_id_bytes = r.take(key_id_len, "key id")?;
        let key_id = match (signed, key_id_len) {
            (true, KeyId::LEN) => {
                let text = std::str::from_utf8(key_id_bytes).map_err(|_| malformed("key id is not UTF-8"))?;
                // A well-formed but unknown id is reported as such later; a
                // garbled one cannot name any key.
                Some(
                    KeyId::parse(text)
                        .map_err(|_| SnapshotError::UnknownKeyId { key_id: text.to_owned() })?,
                )
            }
            (false, 0) => None,
            (true, n) => return Err(malformed(format!("key id must be {} bytes, got {n}", KeyId::LEN))),
            (false, n) => return Err(malformed(format!("unsigned envelope carries a {n}-byte key id"))),
        };
        let mut content_hash = [0u8; 32];
        content_hash.copy_from_slice(r.take(32, "content hash")?);
        let signature = if signed {
            let mut sig = [0u8; 64];
            sig.copy_from_slice(r.take(64, "signature")?);
            Some(sig)
        } else {
            None
        };
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(r.take(4, "payload length")?);
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len > MAX_PAYLOAD {
            return Err(malformed(format!("payload of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit")));
        }
        let payload = r.take(len, "payload")?.to_vec();
        if r.pos != bytes.len() {
            return Err(malformed(format!("{} trailing bytes after the payload", bytes.len() - r.pos)));
        }
        Ok(Envelope { key_id, content_hash, signature, payload })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], SnapshotError> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.bytes.len());
        match end {
            Some(end) => {
                let slice = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(slice)
            }
            None => Err(malformed(format!("truncated in {what} at byte {}", self.pos))),
        }
    }

    fn byte(&mut self, what: &str) -> Result<u8, SnapshotError> {
        Ok(self.take(1, what)?[0])
    }
}

fn malformed(reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Malformed(reason.into())
}

/// The canonical encoding of a snapshot.
pub(crate) fn encode_payload(snapshot: &PolicySnapshot) -> Result<Vec<u8>, SnapshotError> {
    let payload = postcard::to_stdvec(snapshot).map_err(|e| SnapshotError::Encoding(e.to_string()))?;
    if payload.len() > MAX_PAYLOAD {
        return Err(SnapshotError::Encoding(format!(
            "payload of {} bytes exceeds the {MAX_PAYLOAD}-byte limit",
            payload.len()
        )));
    }
    Ok(payload)
}

/// Decodes a payload; trailing bytes are refused so that one snapshot has
/// exactly one encoding.
pub(crate) fn decode_payload(payload: &[u8]) -> Result<PolicySnapshot, SnapshotError> {
    let (snapshot, rest) = postcard::take_from_bytes::<PolicySnapshot>(payload)
        .map_err(|e| malformed(format!("payload does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(malformed(format!("{} trailing bytes in the payload", rest.len())));
    }
    Ok(snapshot)
}
