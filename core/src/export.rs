//! Signed evidence bundles (seed §5.5, GAP-025..027): the archive format the
//! control plane exports and `aosctl export verify` checks offline.
//!
//! A bundle is a POSIX tar of regular files with a `manifest.json` listing
//! every other file with its SHA-256 and size, and `manifest.sig` holding an
//! ed25519 signature over the manifest's bytes by a cluster signing key
//! (the snapshot signing key; the message is domain-separated so a bundle
//! signature can never pass for a snapshot signature, nor the reverse).
//!
//! [`open`] refuses, each with its own [`BundleError`]: anything that is
//! not a tar of regular files with safe relative paths, a duplicated or
//! unlisted file, a listed file that is missing, a size or hash mismatch, a
//! manifest that does not parse, a signature by a key the verifier does not
//! trust, and a signature that does not verify. Trust is the caller's: the
//! bundle names its key but is never believed about it.
//!
//! Like the rest of this crate it does no I/O: archives are byte slices.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::snapshot::{KeyId, SnapshotSigner, TrustedKeys};

/// The manifest's `format`.
pub const BUNDLE_FORMAT: &str = "aos-evidence-bundle/v1";
/// The manifest's path in the archive.
pub const MANIFEST_PATH: &str = "manifest.json";
/// The signature's path in the archive.
pub const SIGNATURE_PATH: &str = "manifest.sig";
/// Largest archive [`open`] reads.
pub const MAX_BUNDLE_BYTES: usize = 1 << 30;
/// Most files in one bundle.
pub const MAX_FILES: usize = 10_000;
/// Domain separation of the signed message.
const SIGNED_PREFIX: &[u8] = b"AOS-EVIDENCE-BUNDLE\x00v1\x00";

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// Relative path, `/`-separated.
    pub path: String,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// What a bundle is evidence of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Subject {
    /// One run.
    Run {
        /// The run.
        run_id: String,
    },
    /// One incident.
    Incident {
        /// The incident.
        incident_id: String,
    },
    /// A period `[from_ms, to_ms)`.
    Range {
        /// Start, Unix ms.
        from_ms: u64,
        /// End (exclusive), Unix ms.
        to_ms: u64,
    },
}

/// What kind of bundle it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BundleKind {
    /// Evidence of a run, an incident or a period.
    Evidence,
    /// Evidence of a period mapped to SOC2 trust-services criteria.
    Soc2,
}

/// The audit ledger's head when the bundle was made, so an auditor can tie
/// the bundle to a ledger `aosctl audit verify` has checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerHead {
    /// Sequence number of the last entry.
    pub seq: u64,
    /// Its hash, hex.
    pub hash: String,
}

/// One listed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path in the archive.
    pub path: String,
    /// SHA-256 of the contents, hex.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// What kind of bundle.
    pub kind: BundleKind,
    /// The tenant the evidence belongs to.
    pub tenant_id: String,
    /// What it is evidence of.
    pub subject: Subject,
    /// When it was made, Unix ms.
    pub generated_at_ms: u64,
    /// Who asked for it (actor id).
    pub generated_by: String,
    /// The ledger head at that time.
    pub ledger_head: LedgerHead,
    /// The signing key's id.
    pub key_id: String,
    /// Every other file, sorted by path.
    pub files: Vec<ManifestFile>,
}

/// `manifest.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSignature {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signing key's id.
    pub key_id: String,
    /// The signature, hex.
    pub signature: String,
}

/// What the bundle is about, before it is sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleHeader {
    /// What kind of bundle.
    pub kind: BundleKind,
    /// The tenant.
    pub tenant_id: String,
    /// The subject.
    pub subject: Subject,
    /// When, Unix ms.
    pub generated_at_ms: u64,
    /// Who.
    pub generated_by: String,
    /// The ledger head.
    pub ledger_head: LedgerHead,
}

/// A sealed bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBundle {
    /// The tar archive.
    pub archive: Vec<u8>,
    /// SHA-256 of its manifest, hex: what the ledger records of the export.
    pub manifest_sha256: String,
}

/// A bundle whose every check passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBundle {
    /// The manifest.
    pub manifest: Manifest,
    /// SHA-256 of the manifest's bytes, hex (as the ledger recorded it).
    pub manifest_sha256: String,
    /// The listed files by path.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Why a bundle cannot be made or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not a readable tar archive.
    #[error("not an evidence bundle (tar archive): {0}")]
    NotAnArchive(String),
    /// Larger than [`MAX_BUNDLE_BYTES`] or more than [`MAX_FILES`] files.
    #[error("the bundle is too large: {0}")]
    TooLarge(String),
    /// An entry that is not a regular file, or a path that is absolute or
    /// climbs out (`..`).
    #[error("entry `{path}` is refused: {why}")]
    BadEntry {
        /// The entry's path.
        path: String,
        /// Why.
        why: &'static str,
    },
    /// The same path twice.
    #[error("`{0}` appears more than once")]
    Duplicate(String),
    /// `manifest.json` or `manifest.sig` is missing or does not parse.
    #[error("{path}: {why}")]
    BadManifest {
        /// Which file.
        path: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A listed file is not in the archive.
    #[error("`{0}` is listed in the manifest but missing")]
    Missing(String),
    /// A file the manifest does not list.
    #[error("`{0}` is in the archive but not in the manifest")]
    Unlisted(String),
    /// A file's contents differ from the manifest.
    #[error("`{path}` was altered: manifest says sha256 {expected}, the file has {actual}")]
    Altered {
        /// The file.
        path: String,
        /// Listed hash (and size).
        expected: String,
        /// Actual hash (and size).
        actual: String,
    },
    /// Signed with a key the verifier does not trust.
    #[error("signed with key `{0}`, which is not trusted (pass the cluster's snapshot keys)")]
    UntrustedKey(String),
    /// The signature does not verify.
    #[error("the manifest signature does not verify: the manifest was altered or signed by another key")]
    BadSignature,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNED_PREFIX.len() + 32);
    message.extend_from_slice(SIGNED_PREFIX);
    message.extend_from_slice(&Sha256::digest(manifest));
    message
}

/// Seals `files` into a signed bundle (tar bytes). Paths must be unique,
/// relative and not the manifest's or signature's. The archive is
/// deterministic: same inputs, same bytes.
pub fn seal(
    header: BundleHeader,
    files: Vec<BundleFile>,
    signer: &SnapshotSigner,
) -> Result<SealedBundle, BundleError> {
    let mut by_path = BTreeMap::new();
    for file in files {
        check_path(&file.path)?;
        if file.path == MANIFEST_PATH || file.path == SIGNATURE_PATH {
            return Err(BundleError::BadEntry { path: file.path, why: "reserved for the manifest" });
        }
        if by_path.contains_key(&file.path) {
            return Err(BundleError::Duplicate(file.path));
        }
        by_path.insert(file.path, file.bytes);
    }
    let manifest = Manifest {
        format: BUNDLE_FORMAT.to_owned(),
        kind: header.kind,
        tenant_id: header.tenant_id,
        subject: header.subject,
        generated_at_ms: header.generated_at_ms,
        generated_by: header.generated_by,
        ledger_head: header.ledger_head,
        key_id: signer.key_id().to_string(),
        files: by_path
            .iter()
            .map(|(path, bytes)| ManifestFile {
                path: path.clone(),
                sha256: sha256_hex(bytes),
                bytes: bytes.len() as u64,
            })
            .collect(),
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BundleError::BadManifest { path: MANIFEST_PATH, why: e.to_string() })?;
    let signature = ManifestSignature {
        algorithm: "ed25519".to_owned(),
        key_id: signer.key_id().to_string(),
        signature: hex::encode(signer.sign(&signed_message(&manifest_bytes))),
    };
    let signature_bytes = serde_json::to_vec_pretty(&signature)
        .map_err(|e| BundleError::BadManifest { path: SIGNATURE_PATH, why: e.to_string() })?;
    let mtime = header.generated_at_ms / 1000;
    let mut builder = tar::Builder::new(Vec::new());
    let mut append = |path: &str, bytes: &[u8]| {
        let mut entry = tar::Header::new_ustar();
        entry.set_size(bytes.len() as u64);
        entry.set_mode(0o644);
        entry.set_mtime(mtime);
        entry.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut entry, path, bytes)
            .map_err(|e| BundleError::BadEntry { path: path.to_owned(), why: tar_path_error(&e) })
    };
    append(MANIFEST_PATH, &manifest_bytes)?;
    append(SIGNATURE_PATH, &signature_bytes)?;
    for (path, bytes) in &by_path {
        append(path, bytes)?;
    }
    let archive = builder.into_inner().map_err(|e| BundleError::NotAnArchive(e.to_string()))?;
    Ok(SealedBundle { archive, manifest_sha256: sha256_hex(&manifest_bytes) })
}

fn tar_path_error(_: &std::io::Error) -> &'static str {
    "cannot be written to a tar header (too long or not representable)"
}

fn check_path(path: &str) -> Result<(), BundleError> {
    let bad = |why| Err(BundleError::BadEntry { path: path.to_owned(), why });
    if path.is_empty() || path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return bad("paths must be relative and /-separated");
    }
    if path.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return bad("paths may not contain empty, `.` or `..` components");
    }
    Ok(())
}

/// Reads and checks a bundle against `trusted` keys. See the module docs.
pub fn open(archive: &[u8], trusted: &TrustedKeys) -> Result<VerifiedBundle, BundleError> {
    if archive.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge(format!("{} bytes, at most {MAX_BUNDLE_BYTES}", archive.len())));
    }
    let mut files = BTreeMap::new();
    // Where the last entry's data ends: past it only zero padding may
    // follow, so no unauthenticated bytes ride along in a valid bundle.
    let mut end = 0u64;
    let mut reader = tar::Archive::new(archive);
    let entries = reader.entries().map_err(|e| BundleError::NotAnArchive(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| BundleError::NotAnArchive(e.to_string()))?;
        let Ok(path) = String::from_utf8(entry.path_bytes().into_owned()) else {
            return Err(BundleError::BadEntry {
                path: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                why: "paths must be UTF-8",
            });
        };
        end = end.max(entry.raw_file_position().saturating_add(entry.size().div_ceil(512) * 512));
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(BundleError::BadEntry { path, why: "only regular files may be in a bundle" });
        }
        check_path(&path)?;
        if files.len() >= MAX_FILES + 2 {
            return Err(BundleError::TooLarge(format!("more than {MAX_FILES} files")));
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(|e| BundleError::NotAnArchive(e.to_string()))?;
        if files.insert(path.clone(), bytes).is_some() {
            return Err(BundleError::Duplicate(path));
        }
    }
    let tail = archive.get(usize::try_from(end).unwrap_or(usize::MAX)..).unwrap_or_default();
    if tail.iter().any(|b| *b != 0) {
        return Err(BundleError::NotAnArchive(format!("{} bytes of data after the last entry", tail.len())));
    }
    let manifest_bytes = files
        .remove(MANIFEST_PATH)
        .ok_or_else(|| BundleError::BadManifest { path: MANIFEST_PATH, why: "missing".to_owned() })?;
    let signature_bytes = files
        .remove(SIGNATURE_PATH)
        .ok_or_else(|| BundleError::BadManifest { path: SIGNATURE_PATH, why: "missing".to_owned() })?;
    let signature: ManifestSignature = serde_json::from_slice(&signature_bytes)
        .map_err(|e| BundleError::BadManifest { path: SIGNATURE_PATH, why: e.to_string() })?;
    // The signature first: nothing else in an unauthenticated manifest is
    // worth reporting on.
    let key_id =
        KeyId::parse(&signature.key_id).map_err(|_| BundleError::UntrustedKey(signature.key_id.clone()))?;
    let key = trusted.get(&key_id).ok_or_else(|| BundleError::UntrustedKey(signature.key_id.clone()))?;
    let raw: [u8; 64] = hex::decode(&signature.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(BundleError::BadSignature)?;
    if signature.algorithm != "ed25519"
        || key
            .verify_strict(&signed_message(&manifest_bytes), &ed25519_dalek::Signature::from_bytes(&raw))
            .is_err()
    {
        return Err(BundleError::BadSignature);
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| BundleError::BadManifest { path: MANIFEST_PATH, why: e.to_string() })?;
    if manifest.format != BUNDLE_FORMAT || manifest.key_id != signature.key_id {
        return Err(BundleError::BadManifest {
            path: MANIFEST_PATH,
            why: format!(
                "format `{}` signed by `{}` is not {BUNDLE_FORMAT}",
                manifest.format, manifest.key_id
            ),
        });
    }
    let mut listed = BTreeMap::new();
    for file in &manifest.files {
        let bytes = files.remove(&file.path).ok_or_else(|| BundleError::Missing(file.path.clone()))?;
        let actual = sha256_hex(&bytes);
        if actual != file.sha256 || bytes.len() as u64 != file.bytes {
            return Err(BundleError::Altered {
                path: file.path.clone(),
                expected: format!("{} ({} bytes)", file.sha256, file.bytes),
                actual: format!("{actual} ({} bytes)", bytes.len()),
            });
        }
        listed.insert(file.path.clone(), bytes);
    }
    if let Some(path) = files.into_keys().next() {
        return Err(BundleError::Unlisted(path));
    }
    Ok(VerifiedBundle { manifest, manifest_sha256: sha256_hex(&manifest_bytes), files: listed })
}

#[cfg(test)]
mod tests;
