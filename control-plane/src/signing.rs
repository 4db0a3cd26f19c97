//! The node's snapshot signing keys: where they come from and how they are
//! protected.
//!
//! Every node holds the same ed25519 keys so that any node serves
//! byte-identical signed snapshots. Sources, first match wins:
//! 1. `AOS_SIGNING_KEY` (64 hex characters; several comma-separated during
//!    a rotation) — for secret managers;
//! 2. the key files (`--signing-key-file`, repeatable, default
//!    `<data-dir>/signing.key`), which must not be readable by group or
//!    others;
//! 3. on `--init` only, a freshly generated key written to the default file
//!    with mode 0600.
//!
//! Which held key signs is replicated state (`aos_cp_state::signing_keys`),
//! so a rotation switches every node at the same log index. The secret is
//! never logged: only key ids (derived from the public key) are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aos_core::snapshot::SnapshotSigner;

/// Environment variable holding the key as hex.
pub const SIGNING_KEY_ENV: &str = "AOS_SIGNING_KEY";

/// The default key file name inside the data directory.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// Why no signing key is available.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The key material is not a valid key.
    #[error("signing key from {source_name} is invalid: {reason}")]
    Invalid {
        /// Where it came from (never the value).
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The key file is readable by others.
    #[error(
        "signing key file {path} has mode {mode:o}; it must not be readable by group or others (chmod 600)"
    )]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// No key anywhere and not allowed to create one.
    #[error(
        "no signing key: set {SIGNING_KEY_ENV}, pass --signing-key-file, or start the first node with --init"
    )]
    Missing,
    /// An explicitly named key file does not exist.
    #[error("signing key file {path} does not exist")]
    FileMissing {
        /// The file.
        path: String,
    },
    /// The replicated state names a signer this node does not hold.
    #[error(
        "the cluster signs with key `{key_id}`, which this node does not hold: add it to {SIGNING_KEY_ENV} or --signing-key-file and restart"
    )]
    NotHeld {
        /// The active key id.
        key_id: String,
    },
    /// Reading or writing the file failed.
    #[error("signing key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The signing keys this node holds (private halves), by key id. The first
/// loaded is the primary: it is registered at `--init` and signs while the
/// replicated state names no signer. During a rotation a node holds the old
/// and the new key; the replicated state says which one signs.
#[derive(Clone)]
pub struct KeyRing {
    primary: Arc<SnapshotSigner>,
    by_id: BTreeMap<String, Arc<SnapshotSigner>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key ids only: the secrets never reach a log line.
        f.debug_struct("KeyRing")
            .field("primary", self.primary.key_id())
            .field("keys", &self.by_id.keys())
            .finish()
    }
}

impl KeyRing {
    /// A ring of one key.
    pub fn single(signer: SnapshotSigner) -> KeyRing {
        let primary = Arc::new(signer);
        let by_id = BTreeMap::from([(primary.key_id().as_str().to_owned(), Arc::clone(&primary))]);
        KeyRing { primary, by_id }
    }

    fn push(&mut self, signer: SnapshotSigner) {
        self.by_id.entry(signer.key_id().as_str().to_owned()).or_insert_with(|| Arc::new(signer));
    }

    /// The primary key.
    pub fn primary(&self) -> &SnapshotSigner {
        &self.primary
    }

    /// The ids of every key held, sorted.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }

    /// Every key held, by id.
    pub fn signers(&self) -> impl Iterator<Item = &SnapshotSigner> {
        self.by_id.values().map(AsRef::as_ref)
    }

    /// Whether the node holds this key.
    pub fn holds(&self, key_id: &str) -> bool {
        self.by_id.contains_key(key_id)
    }

    /// The key that must sign now: the replicated `active` key, or the
    /// primary while the state names none.
    pub fn signer_for(&self, active: Option<&str>) -> Result<&SnapshotSigner, SigningKeyError> {
        match active {
            None => Ok(&self.primary),
            Some(id) => self
                .by_id
                .get(id)
                .map(AsRef::as_ref)
                .ok_or_else(|| SigningKeyError::NotHeld { key_id: id.to_owned() }),
        }
    }
}

/// Loads this node's signing keys, generating the default key file when
/// `generate` is set and no key exists anywhere.
///
/// `env_value` is the content of [`SIGNING_KEY_ENV`] (one or more hex keys,
/// comma-separated), passed in so tests never touch the process
/// environment; when set it is the only source. Otherwise `key_files` are
/// read in order (every one must exist), or the default
/// `<data_dir>/signing.key` when none is given.
pub fn load_key_ring(
    env_value: Option<&str>,
    key_files: &[PathBuf],
    data_dir: &Path,
    generate: bool,
) -> Result<KeyRing, SigningKeyError> {
    if let Some(list) = env_value.map(str::trim).filter(|v| !v.is_empty()) {
        let mut ring: Option<KeyRing> = None;
        for (i, hex) in list.split(',').map(str::trim).enumerate() {
            let signer = SnapshotSigner::from_secret_hex(hex).map_err(|e| SigningKeyError::Invalid {
                source_name: format!("{SIGNING_KEY_ENV} (key {} of the list)", i + 1),
                reason: e.to_string(),
            })?;
            match ring.as_mut() {
                None => ring = Some(KeyRing::single(signer)),
                Some(ring) => ring.push(signer),
            }
        }
        return ring.ok_or(SigningKeyError::Missing);
    }
    let Some((first, rest)) = key_files.split_first() else {
        return load_signing_key(None, None, data_dir, generate).map(KeyRing::single);
    };
    let mut ring = KeyRing::single(load_signing_key(None, Some(first), data_dir, false)?);
    for file in rest {
        ring.push(load_signing_key(None, Some(file), data_dir, false)?);
    }
    Ok(ring)
}

/// Loads one signing key, generating it when `generate` is set and none
/// exists. `env_value` is the content of [`SIGNING_KEY_ENV`] (one key).
pub fn load_signing_key(
    env_value: Option<&str>,
    key_file: Option<&Path>,
    data_dir: &Path,
    generate: bool,
) -> Result<SnapshotSigner, SigningKeyError> {
    if let Some(hex) = env_value.map(str::trim).filter(|v| !v.is_empty()) {
        return SnapshotSigner::from_secret_hex(hex).map_err(|e| SigningKeyError::Invalid {
            source_name: SIGNING_KEY_ENV.to_owned(),
            reason: e.to_string(),
        });
    }
    let path: PathBuf = key_file.map_or_else(|| data_dir.join(SIGNING_KEY_FILE), Path::to_path_buf);
    let display = path.display().to_string();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            check_private(&path)?;
            SnapshotSigner::from_secret_hex(&text)
                .map_err(|e| SigningKeyError::Invalid { source_name: display, reason: e.to_string() })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if key_file.is_some() {
                return Err(SigningKeyError::FileMissing { path: display });
            }
            if !generate {
                return Err(SigningKeyError::Missing);
            }
            let signer = generate_key()?;
            crate::bootstrap::write_secret(&path, &signer.secret_hex())
                .map_err(|source| SigningKeyError::Io { path: display, source })?;
            Ok(signer)
        }
        Err(source) => Err(SigningKeyError::Io { path: display, source }),
    }
}

/// A fresh random key.
pub fn generate_key() -> Result<SnapshotSigner, SigningKeyError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| SigningKeyError::Io {
        path: "(random generator)".to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    SnapshotSigner::from_secret_bytes(&secret)
        .map_err(|e| SigningKeyError::Invalid { source_name: "generator".to_owned(), reason: e.to_string() })
}

#[cfg(unix)]
pub(crate) fn check_private(path: &Path) -> Result<(), SigningKeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|source| SigningKeyError::Io { path: path.display().to_string(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SigningKeyError::Permissions { path: path.display().to_string(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn check_private(_path: &Path) -> Result<(), SigningKeyError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_private_permissions_then_reloads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_signing_key(None, None, dir.path(), true).unwrap();
        let again = load_signing_key(None, None, dir.path(), false).unwrap();
        assert_eq!(first.key_id(), again.key_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                std::fs::metadata(dir.path().join("signing.key")).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn missing_key_without_init_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load_signing_key(None, None, dir.path(), false), Err(SigningKeyError::Missing)));
        let explicit = dir.path().join("nope.key");
        assert!(matches!(
            load_signing_key(None, Some(&explicit), dir.path(), true),
            Err(SigningKeyError::FileMissing { .. })
        ));
    }

    #[test]
    fn environment_wins_and_bad_material_is_named_without_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "11".repeat(32);
        let from_env = load_signing_key(Some(&hex), None, dir.path(), false).unwrap();
        assert_eq!(from_env.secret_hex(), hex);
        let err = load_signing_key(Some("zz-not-hex"), None, dir.path(), false).unwrap_err().to_string();
        assert!(err.contains(SIGNING_KEY_ENV) && !err.contains("zz-not-hex"), "{err}");
    }

    #[test]
    fn a_ring_holds_every_listed_key_and_signs_with_the_replicated_choice() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = ("11".repeat(32), "22".repeat(32));
        let ring = load_key_ring(Some(&format!("{a}, {b}")), &[], dir.path(), false).unwrap();
        let id_a = SnapshotSigner::from_secret_hex(&a).unwrap().key_id().as_str().to_owned();
        let id_b = SnapshotSigner::from_secret_hex(&b).unwrap().key_id().as_str().to_owned();
        assert_eq!(ring.primary().key_id().as_str(), id_a);
        assert!(ring.holds(&id_a) && ring.holds(&id_b));
        assert_eq!(ring.signer_for(None).unwrap().key_id().as_str(), id_a);
        assert_eq!(ring.signer_for(Some(&id_b)).unwrap().key_id().as_str(), id_b);
        let err = ring.signer_for(Some("k-elsewhere")).unwrap_err().to_string();
        assert!(err.contains("k-elsewhere") && err.contains("does not hold"), "{err}");
        assert!(!format!("{ring:?}").contains(&a), "Debug shows key ids only");

        // From files: the first is the primary, each must exist.
        let write = |name: &str, hex: &str| {
            let path = dir.path().join(name);
            crate::bootstrap::write_secret(&path, hex).unwrap();
            path
        };
        let files = [write("b.key", &b), write("a.key", &a)];
        let ring = load_key_ring(None, &files, dir.path(), false).unwrap();
        assert_eq!(ring.primary().key_id().as_str(), id_b);
        assert_eq!(ring.key_ids().count(), 2);
        let missing = [files[0].clone(), dir.path().join("gone.key")];
        let err = load_key_ring(None, &missing, dir.path(), true).unwrap_err();
        assert!(matches!(err, SigningKeyError::FileMissing { .. }), "{err}");
        let err = load_key_ring(Some(&format!("{a},zz")), &[], dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("key 2 of the list") && !err.contains(&a), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        std::fs::write(&path, "22".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_signing_key(None, None, dir.path(), false).unwrap_err();
        assert!(matches!(err, SigningKeyError::Permissions { mode: 0o644, .. }), "{err}");
    }
}
