//! Authenticated encryption of connector credentials (issue 6): one
//! XChaCha20-Poly1305 primitive shared by the control plane (which seals a
//! credential with the tenant's data key, and wraps that data key with the
//! cluster master key) and the edge agent (which opens it just before a
//! connector needs it).
//!
//! Associated data binds every ciphertext to what it is for — a credential
//! to its tenant and source, a data key to its tenant — so a ciphertext
//! copied to another source or tenant does not open. Random nonces (24
//! bytes, so random choice is safe) come from the caller.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

/// Key length, bytes.
pub const KEY_LEN: usize = 32;
/// Nonce length, bytes.
pub const NONCE_LEN: usize = 24;

/// Why a ciphertext did not open (or a plaintext did not seal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Wrong length of nonce.
    #[error("nonce must be {NONCE_LEN} bytes, got {0}")]
    Nonce(usize),
    /// Wrong key, wrong associated data, or tampered ciphertext.
    #[error("ciphertext does not authenticate under this key and context")]
    Authentication,
}

/// Seals `plaintext` under `key` with `aad`.
pub fn seal(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    // Encryption fails only for plaintexts beyond the cipher's 256 GiB
    // bound, far above any credential; an empty result would fail to open.
    cipher.encrypt(XNonce::from_slice(nonce), Payload { msg: plaintext, aad }).unwrap_or_default()
}

/// Opens what [`seal`] produced.
pub fn open(key: &[u8; KEY_LEN], nonce: &[u8], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, SealError> {
    if nonce.len() != NONCE_LEN {
        return Err(SealError::Nonce(nonce.len()));
    }
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad })
        .map_err(|_| SealError::Authentication)
}

/// Associated data of a source credential.
pub fn credential_aad(tenant_id: &str, source_id: &str) -> Vec<u8> {
    [b"aos.credential.v1\0".as_slice(), tenant_id.as_bytes(), b"\0", source_id.as_bytes()].concat()
}

/// Associated data of a tenant data key wrapped by the master key.
pub fn data_key_aad(tenant_id: &str, data_key_id: &str) -> Vec<u8> {
    [b"aos.datakey.v1\0".as_slice(), tenant_id.as_bytes(), b"\0", data_key_id.as_bytes()].concat()
}

/// A key's public id: 16 hex characters of a domain-separated SHA-256.
/// Names the key without revealing anything usable about it.
pub fn key_id(key: &[u8; KEY_LEN]) -> String {
    let digest = Sha256::new_with_prefix(b"aos.key.id.v1\0").chain_update(key).finalize();
    hex::encode(&digest[..8])
}
