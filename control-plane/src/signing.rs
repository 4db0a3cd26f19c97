//! The cluster's snapshot signing key: where it comes from and how it is
//! protected.
//!
//! Every node holds the same ed25519 key so that any node serves
//! byte-identical signed snapshots. Sources, first match wins:
//! 1. `AOS_SIGNING_KEY` (64 hex characters) — for secret managers;
//! 2. the key file (`--signing-key-file`, default `<data-dir>/signing.key`),
//!    which must not be readable by group or others;
//! 3. on `--init` only, a freshly generated key written to the default file
//!    with mode 0600.
//!
//! The secret is never logged: only the key id (derived from the public key)
//! is.

use std::path::{Path, PathBuf};

use aos_core::snapshot::SnapshotSigner;

/// Environment variable holding the key as hex.
pub const SIGNING_KEY_ENV: &str = "AOS_SIGNING_KEY";

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
    /// Reading or writing the file failed.
    #[error("signing key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Loads the signing key, generating it when `generate` is set and none
/// exists. `env_value` is the content of [`SIGNING_KEY_ENV`], passed in so
/// tests never touch the process environment.
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
    let path: PathBuf = key_file.map_or_else(|| data_dir.join("signing.key"), Path::to_path_buf);
    let display = path.display().to_string();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            check_private(&path)?;
            SnapshotSigner::from_secret_hex(&text)
                .map_err(|e| SigningKeyError::Invalid { source_name: display, reason: e.to_string() })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !generate || key_file.is_some() {
                return Err(SigningKeyError::Missing);
            }
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| SigningKeyError::Io {
                path: display.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            let signer = SnapshotSigner::from_secret_bytes(&secret).map_err(|e| {
                SigningKeyError::Invalid { source_name: "generator".to_owned(), reason: e.to_string() }
            })?;
            crate::bootstrap::write_secret(&path, &signer.secret_hex())
                .map_err(|source| SigningKeyError::Io { path: display, source })?;
            Ok(signer)
        }
        Err(source) => Err(SigningKeyError::Io { path: display, source }),
    }
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), SigningKeyError> {
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
fn check_private(_path: &Path) -> Result<(), SigningKeyError> {
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
            Err(SigningKeyError::Missing)
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
