//! Signed, immutable, versioned policy snapshots.
//!
//! The control plane builds a [`PolicySnapshot`] per tenant, encodes it
//! canonically, hashes it (SHA-256) and signs the hash with ed25519
//! ([`sign`]). The edge agent accepts it only through [`verify`], which
//! checks, in order: envelope shape, signature presence, key id, content
//! hash, signature, content validity, tenant, version monotonicity and
//! staleness — each failure with its own [`SnapshotError`] variant. What comes
//! out is a [`VerifiedSnapshot`]: read-only, cheap to clone, and indexed by
//! scope so that `decide` does no per-step setup.
//!
//! Layout: `model` (the data), `codec` (canonical payload and envelope
//! encoding), `keys` (signing and trusted keys), `index` (scope index built at
//! load), `verified` (the verified handle).

mod codec;
mod index;
mod keys;
mod model;
mod verified;

pub use codec::{ENVELOPE_MAGIC, Envelope};
pub use keys::{KeyError, KeyId, SnapshotSigner, TrustedKeys};
pub use model::{KnowledgePlane, PlaneDefault, PolicySnapshot, Sensitivity, WorkloadKey};
pub use verified::VerifiedSnapshot;

use sha2::{Digest, Sha256};

use crate::error::FieldErrors;

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes are not a well-formed envelope or payload.
    #[error("snapshot is malformed: {0}")]
    Malformed(String),
    /// The envelope carries no signature.
    #[error("snapshot is unsigned")]
    Unsigned,
    /// The signing key is not among the trusted keys.
    #[error("snapshot is signed with unknown key `{key_id}`")]
    UnknownKeyId {
        /// The key id named by the envelope.
        key_id: String,
    },
    /// The content hash or the signature does not check out.
    #[error("snapshot signature is invalid: {reason}")]
    BadSignature {
        /// Which check failed.
        reason: &'static str,
    },
    /// The snapshot belongs to another tenant.
    #[error("snapshot is for tenant `{found}`, expected `{expected}`")]
    TenantMismatch {
        /// The tenant this verifier serves.
        expected: String,
        /// The tenant in the snapshot.
        found: String,
    },
    /// The version is not newer than the last accepted one.
    #[error(
        "snapshot version {version} is not newer than accepted version {last_accepted} (rollback refused)"
    )]
    Rollback {
        /// Offered version.
        version: u64,
        /// Last accepted version.
        last_accepted: u64,
    },
    /// The snapshot is past its maximum staleness.
    #[error(
        "snapshot version {version} expired at {not_after_ms} (now {now_ms}); refusing a frozen snapshot"
    )]
    Expired {
        /// Offered version.
        version: u64,
        /// Its `not_after`, Unix milliseconds.
        not_after_ms: u64,
        /// The verifier's clock, Unix milliseconds.
        now_ms: u64,
    },
    /// Signed, but the content breaks a rule (e.g. an invalid policy).
    #[error("snapshot content is invalid:\n{0}")]
    Invalid(FieldErrors),
    /// The snapshot could not be encoded.
    #[error("snapshot could not be encoded: {0}")]
    Encoding(String),
}

/// What the verifier expects of a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// The tenant this edge agent serves.
    pub tenant_id: &'a str,
    /// The last version accepted, if any; the offered one must be newer.
    pub last_accepted_version: Option<u64>,
    /// The verifier's clock, Unix milliseconds. The core reads no clock.
    pub now_ms: u64,
}

/// Domain separation for snapshot signatures.
const SIGNING_CONTEXT: &[u8] = b"aos.snapshot.v1\0";

fn signed_message(content_hash: &[u8; 32]) -> [u8; 48] {
    let mut message = [0u8; 48];
    message[..16].copy_from_slice(SIGNING_CONTEXT);
    message[16..].copy_from_slice(content_hash);
    message
}

/// Encodes, hashes and signs a snapshot, returning the envelope bytes.
///
/// ed25519 is deterministic, so every control-plane node holding the same key
/// produces byte-identical envelopes for the same snapshot.
pub fn sign(snapshot: &PolicySnapshot, signer: &SnapshotSigner) -> Result<Vec<u8>, SnapshotError> {
    let payload = codec::encode_payload(snapshot)?;
    let content_hash: [u8; 32] = Sha256::digest(&payload).into();
    let signature = signer.sign(&signed_message(&content_hash));
    let envelope =
        Envelope { key_id: Some(signer.key_id().clone()), content_hash, signature: Some(signature), payload };
    Ok(envelope.encode())
}

/// Verifies envelope bytes against the trusted keys and the verifier's
/// expectations. See the module docs for the order of checks.
pub fn verify(
    bytes: &[u8],
    trusted: &TrustedKeys,
    options: &VerifyOptions<'_>,
) -> Result<VerifiedSnapshot, SnapshotError> {
    let verified = verify_allowing_expired(bytes, trusted, options)?;
    if verified.is_expired(options.now_ms) {
        return Err(SnapshotError::Expired {
            version: verified.version(),
            not_after_ms: verified.snapshot().not_after_ms,
            now_ms: options.now_ms,
        });
    }
    Ok(verified)
}

/// [`verify`] without the expiry check: signature, tenant and rollback are
/// checked, but a snapshot past `not_after` is returned for the caller to
/// treat per policy failure mode. This is what an edge agent uses for its
/// persisted last-good snapshot at start-up: an expired snapshot is still
/// authentic, and `fail_open` policies may keep enforcing from it while
/// `fail_closed` ones stop new runs (see [`VerifiedSnapshot::is_expired`]).
pub fn verify_allowing_expired(
    bytes: &[u8],
    trusted: &TrustedKeys,
    options: &VerifyOptions<'_>,
) -> Result<VerifiedSnapshot, SnapshotError> {
    let envelope = Envelope::decode(bytes)?;
    let (Some(key_id), Some(signature)) = (&envelope.key_id, &envelope.signature) else {
        return Err(SnapshotError::Unsigned);
    };
    let key =
        trusted.get(key_id).ok_or_else(|| SnapshotError::UnknownKeyId { key_id: key_id.to_string() })?;
    let content_hash: [u8; 32] = Sha256::digest(&envelope.payload).into();
    if content_hash != envelope.content_hash {
        return Err(SnapshotError::BadSignature { reason: "content hash does not match the payload" });
    }
    keys::verify_signature(key, &signed_message(&content_hash), signature)?;

    let snapshot = codec::decode_payload(&envelope.payload)?;
    if snapshot.tenant_id != options.tenant_id {
        return Err(SnapshotError::TenantMismatch {
            expected: options.tenant_id.to_owned(),
            found: snapshot.tenant_id,
        });
    }
    if let Some(last_accepted) = options.last_accepted_version
        && snapshot.version <= last_accepted
    {
        return Err(SnapshotError::Rollback { version: snapshot.version, last_accepted });
    }
    VerifiedSnapshot::new(snapshot, content_hash, key_id.clone())
}

#[cfg(test)]
mod tests;
