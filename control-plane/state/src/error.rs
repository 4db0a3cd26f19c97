//! The crate-boundary error for the read side. Commands never fail with an
//! error: a refused command is a [`crate::Rejection`], which is data and is
//! audited.

use aos_core::SnapshotError;

/// Why a read-side operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    /// No tenant with that id.
    #[error("unknown tenant `{tenant_id}`")]
    UnknownTenant {
        /// The id asked for.
        tenant_id: String,
    },
    /// The tenant exists but no policy or override change has been applied
    /// yet, so there is no snapshot version to issue.
    #[error("tenant `{tenant_id}` has no snapshot yet (no policy or override has been applied)")]
    NoSnapshot {
        /// The tenant.
        tenant_id: String,
    },
    /// aos-core refused to assemble the snapshot. The write path validates
    /// with the same rules, so this indicates a bug, not bad input.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}
