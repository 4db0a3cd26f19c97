//! Snapshot signing keys and the verifier's trust store.
//!
//! A key id is derived from the public key (the first 8 bytes of its SHA-256,
//! in hex) so two different keys can never share an id and operators cannot
//! mislabel one. Several keys may be trusted at once, which is how rotation
//! works: trust the new key everywhere, switch the signer, then drop the old
//! key.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::SnapshotError;

/// Identifies a signing key: 16 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Length of the textual form.
    pub const LEN: usize = 16;

    /// The id of a public key.
    pub fn of(key: &VerifyingKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        KeyId(hex::encode(&digest[..Self::LEN / 2]))
    }

    /// Parses the textual form.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        if text.len() == Self::LEN && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(KeyId(text.to_owned()))
        } else {
            Err(KeyError::BadKeyId(text.to_owned()))
        }
    }

    /// The textual form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Problems with key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 16 lowercase hex characters.
    #[error("`{0}` is not a key id (expected 16 lowercase hex characters)")]
    BadKeyId(String),
    /// Not 32 bytes of key material.
    #[error("key material must be 32 bytes, got {0}")]
    BadLength(usize),
    /// Not a valid ed25519 public key.
    #[error("not a valid ed25519 public key")]
    BadPublicKey,
    /// Not hex.
    #[error("key material is not valid hex")]
    BadHex,
}

/// The control plane's signing key. The secret never leaves this type: no
/// `Debug` output of it, no accessor.
pub struct SnapshotSigner {
    key: SigningKey,
    key_id: KeyId,
}

impl fmt::Debug for SnapshotSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotSigner").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl SnapshotSigner {
    /// A signer from 32 secret-key bytes.
    pub fn from_secret_bytes(secret: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; 32] = secret.try_into().map_err(|_| KeyError::BadLength(secret.len()))?;
        let key = SigningKey::from_bytes(&bytes);
        let key_id = KeyId::of(&key.verifying_key());
        Ok(SnapshotSigner { key, key_id })
    }

    /// A signer from 64 hex characters.
    pub fn from_secret_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::BadHex)?;
        Self::from_secret_bytes(&bytes)
    }

    /// The secret as hex, for writing a freshly generated key to a 0600 file.
    pub fn secret_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    /// This key's id.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The public half, to distribute to verifiers.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// The set of public keys a verifier accepts, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<KeyId, VerifyingKey>,
}

impl TrustedKeys {
    /// An empty trust store: verifies nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `key`; returns its id.
    pub fn insert(&mut self, key: VerifyingKey) -> KeyId {
        let id = KeyId::of(&key);
        self.keys.insert(id.clone(), key);
        id
    }

    /// Trusts a public key given as 64 hex characters.
    pub fn insert_hex(&mut self, text: &str) -> Result<KeyId, KeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::BadHex)?;
        let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::BadLength(bytes.len()))?;
        let key = VerifyingKey::from_bytes(&array).map_err(|_| KeyError::BadPublicKey)?;
        Ok(self.insert(key))
    }

    /// Stops trusting a key.
    pub fn remove(&mut self, id: &KeyId) -> bool {
        self.keys.remove(id).is_some()
    }

    /// The key with this id.
    pub fn get(&self, id: &KeyId) -> Option<&VerifyingKey> {
        self.keys.get(id)
    }

    /// Trusted key ids, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.keys()
    }
}

pub(crate) fn verify_signature(
    key: &VerifyingKey,
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), SnapshotError> {
    let signature = Signature::from_bytes(signature);
    key.verify_strict(message, &signature)
        .map_err(|_| SnapshotError::BadSignature { reason: "ed25519 signature does not verify" })
}
