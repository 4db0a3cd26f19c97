//! The snapshot slot: the newest verified snapshot this edge agent
//! enforces, how it gets there (verify → persist → swap), and the boot
//! guard (GAP-067).
//!
//! A snapshot is accepted only if `aos_core::verify` passes for this
//! agent's tenant with a version newer than the current one; it is written
//! to disk before it replaces the current one, so what the agent ACKs is
//! what it would load after a crash. At start the persisted snapshot is
//! re-verified (signature, tenant) and served at once even when the control
//! plane is unreachable; an expired one is kept and handled per policy
//! failure mode by the caller ([`Staleness`]).

use std::sync::RwLock;

use aos_core::policy::FailureMode;
use aos_core::snapshot::{SnapshotError, TrustedKeys, VerifyOptions};
use aos_core::{VerifiedSnapshot, verify, verify_allowing_expired};

use crate::error::AgentError;
use crate::store::AgentStore;

/// Why the agent refuses runs before it has a usable snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootGuard {
    /// A verified snapshot is loaded.
    Ready,
    /// No snapshot yet (first start, nothing persisted).
    NoSnapshot,
    /// The persisted snapshot failed re-verification.
    Invalid(String),
}

/// How old the current snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staleness {
    /// Within `not_after`.
    Fresh,
    /// Past `not_after`: fail_closed policies stop new runs.
    Expired {
        /// The snapshot's `not_after`.
        not_after_ms: u64,
    },
}

/// Outcome of offering a snapshot.
#[derive(Debug)]
pub enum Offer {
    /// Verified, persisted and now current.
    Accepted {
        /// Its version.
        version: u64,
    },
    /// Refused; the current snapshot is unchanged.
    Rejected {
        /// The offered version, when it could be read.
        version: Option<u64>,
        /// Why.
        reason: String,
    },
}

/// The current snapshot and the trust it is checked against.
#[derive(Debug)]
pub struct SnapshotSlot {
    tenant_id: String,
    trusted: RwLock<TrustedKeys>,
    current: RwLock<Option<VerifiedSnapshot>>,
    guard: RwLock<BootGuard>,
}

impl SnapshotSlot {
    /// An empty slot for `tenant_id` trusting `trusted`.
    pub fn new(tenant_id: String, trusted: TrustedKeys) -> SnapshotSlot {
        SnapshotSlot {
            tenant_id,
            trusted: RwLock::new(trusted),
            current: RwLock::new(None),
            guard: RwLock::new(BootGuard::NoSnapshot),
        }
    }

    /// The tenant this agent serves.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// Loads and re-verifies the persisted snapshot, if any.
    pub fn boot(&self, store: &AgentStore, now_ms: u64) -> Result<BootGuard, AgentError> {
        let guard = match store.load_snapshot()? {
            None => BootGuard::NoSnapshot,
            Some(bytes) => {
                let options =
                    VerifyOptions { tenant_id: &self.tenant_id, last_accepted_version: None, now_ms };
                let trusted = self.trusted.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                match verify_allowing_expired(&bytes, &trusted, &options) {
                    Ok(snapshot) => {
                        tracing::info!(
                            message = "persisted snapshot re-verified",
                            version = snapshot.version(),
                            expired = snapshot.is_expired(now_ms)
                        );
                        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(snapshot);
                        BootGuard::Ready
                    }
                    Err(e) => {
                        tracing::error!(message = "persisted snapshot failed verification", error = %e);
                        BootGuard::Invalid(e.to_string())
                    }
                }
            }
        };
        *self.guard.write().unwrap_or_else(std::sync::PoisonError::into_inner) = guard.clone();
        Ok(guard)
    }

    /// Verifies `bytes`; if it is newer and valid, persists it and makes it
    /// current.
    pub async fn offer(&self, store: &AgentStore, bytes: &[u8], now_ms: u64) -> Result<Offer, AgentError> {
        let last = self.current().map(|s| s.version());
        let verified = {
            let options = VerifyOptions { tenant_id: &self.tenant_id, last_accepted_version: last, now_ms };
            let trusted = self.trusted.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            verify(bytes, &trusted, &options)
        };
        let snapshot = match verified {
            Ok(s) => s,
            Err(e) => {
                let version = match &e {
                    SnapshotError::Rollback { version, .. } | SnapshotError::Expired { version, .. } => {
                        Some(*version)
                    }
                    _ => None,
                };
                return Ok(Offer::Rejected { version, reason: e.to_string() });
            }
        };
        store.save_snapshot(bytes).await?;
        let version = snapshot.version();
        {
            let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            // A concurrent offer may have installed a newer one meanwhile.
            if current.as_ref().is_some_and(|c| c.version() >= version) {
                return Ok(Offer::Rejected {
                    version: Some(version),
                    reason: "a newer snapshot arrived first".into(),
                });
            }
            *current = Some(snapshot);
        }
        *self.guard.write().unwrap_or_else(std::sync::PoisonError::into_inner) = BootGuard::Ready;
        Ok(Offer::Accepted { version })
    }

    /// Replaces the trusted key set (pushed by the control plane over
    /// mutual TLS ahead of a key rotation).
    pub fn set_trusted(&self, trusted: TrustedKeys) {
        *self.trusted.write().unwrap_or_else(std::sync::PoisonError::into_inner) = trusted;
    }

    /// The current snapshot.
    pub fn current(&self) -> Option<VerifiedSnapshot> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The boot guard state.
    pub fn guard(&self) -> BootGuard {
        self.guard.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Staleness of `snapshot` at `now_ms`.
    pub fn staleness(snapshot: &VerifiedSnapshot, now_ms: u64) -> Staleness {
        if snapshot.is_expired(now_ms) {
            Staleness::Expired { not_after_ms: snapshot.snapshot().not_after_ms }
        } else {
            Staleness::Fresh
        }
    }

    /// Policies of an expired snapshot that fail closed: while any exists,
    /// new runs are refused (their ids, sorted).
    pub fn fail_closed_policies(snapshot: &VerifiedSnapshot) -> Vec<String> {
        snapshot
            .snapshot()
            .policies
            .iter()
            .filter(|p| p.failure_mode == FailureMode::FailClosed)
            .map(|p| p.id.clone())
            .collect()
    }
}
