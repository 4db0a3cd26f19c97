//! The hash-chained audit ledger (seed §5.4).
//!
//! Every proposal appends exactly one [`AuditEntry`] in the same `apply` call
//! that changes (or refuses to change) the state, so the entry is part of the
//! same Raft log entry and is committed to a quorum before the client is
//! answered. That is the durability guarantee GAP-050 asks for: no admin
//! change is acknowledged unless its audit record is as durable as the
//! change itself.
//!
//! Each entry's `hash` is SHA-256 over a canonical encoding of every other
//! field, including `prev_hash`, the previous entry's hash (64 zeros for the
//! first). [`verify_chain`] recomputes the chain and names the first entry
//! that does not check out. Entries never contain secrets: API keys are
//! recorded by id, name and role, never by their hash.

mod chain;

pub use chain::{ChainError, GENESIS_HASH, verify_chain, verify_chain_after};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::actor::ActorRef;
use crate::serde_compat;

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuditAction {
    /// A tenant was created.
    TenantCreated,
    /// A project was created.
    ProjectCreated,
    /// An API key was registered.
    ApiKeyCreated,
    /// An API key was revoked.
    ApiKeyRevoked,
    /// A human actor was registered.
    ActorCreated,
    /// A new policy (version 1).
    PolicyCreated,
    /// A new version of a policy whose thresholds are unchanged, or an
    /// apply of identical content (no new version; `before`/`after` empty).
    PolicyUpdated,
    /// A new version of a policy whose thresholds changed: its
    /// `threshold_hash` (GAP-022) differs from the previous version's.
    LimitAdjusted,
    /// A policy moved to `ACTIVE`.
    PolicyActivated,
    /// A policy moved to `SUSPENDED`.
    PolicySuspended,
    /// A policy moved to `RETIRED`.
    PolicyRetired,
    /// An override was granted (GAP-034).
    OverrideGranted,
    /// An override was revoked.
    OverrideRevoked,
    /// A snapshot signing key became trusted.
    SigningKeyAdded,
    /// A signing key became the signer.
    SigningKeyActivated,
    /// A signing key stopped being trusted.
    SigningKeyRetired,
    /// Tenant snapshots were reissued before they expire.
    SnapshotsReissued,
    /// A join token for edge agents was created.
    JoinTokenCreated,
    /// A join token was revoked.
    JoinTokenRevoked,
    /// An edge agent joined (and received its certificate).
    EdgeAgentJoined,
    /// An edge agent applied a snapshot version.
    SnapshotAcked,
    /// An edge agent refused a snapshot version.
    SnapshotNacked,
    /// A batch of edge-agent records was committed.
    RecordsIngested,
    /// The global or a tenant's governance mode changed.
    GovernanceChanged,
    /// Governance settings lapsed and returned to ENFORCING.
    GovernanceExpired,
    /// An incident was acknowledged.
    IncidentAcknowledged,
    /// An incident was resolved.
    IncidentResolved,
    /// An incident suppression was set.
    SuppressionCreated,
    /// A tenant's alert channel was set.
    AlertChannelSet,
    /// The alert dispatcher reported a delivery attempt.
    AlertDelivery,
    /// An edge agent opened a node's snapshot watch.
    EdgeAgentConnected,
    /// An edge agent's snapshot watch on a node ended.
    EdgeAgentDisconnected,
    /// An actor was refused for lack of authority or for crossing tenants,
    /// by the state machine or (via `RECORD_DENIAL`) by the API layer.
    AccessDenied,
    /// A command was refused for any other reason.
    CommandRejected,
    /// Evidence (a bundle, a report) was exported.
    EvidenceExported,
    /// A tenant's record retention was set.
    RetentionSet,
    /// Records were pruned by retention (the entry checkpoints the ledger).
    RetentionApplied,
    /// A tenant data key was created (issue 6).
    DataKeyCreated,
    /// A data source was registered.
    SourceCreated,
    /// A data source was reconfigured.
    SourceUpdated,
    /// A source's credential was set or replaced (never its value).
    CredentialSet,
    /// A verification probe succeeded.
    SourceVerified,
    /// A verification probe failed.
    SourceVerificationFailed,
    /// A source was enabled.
    SourceEnabled,
    /// A source was disabled.
    SourceDisabled,
    /// A knowledge plane was created.
    PlaneCreated,
    /// A knowledge plane was changed.
    PlaneUpdated,
    /// An owner confirmed a plane's activation.
    PlaneActivated,
    /// A plane's activation was withdrawn.
    PlaneDeactivated,
}

impl AuditAction {
    /// The ledger spelling, e.g. `POLICY_CREATED`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::TenantCreated => "TENANT_CREATED",
            AuditAction::ProjectCreated => "PROJECT_CREATED",
            AuditAction::ApiKeyCreated => "API_KEY_CREATED",
            AuditAction::ApiKeyRevoked => "API_KEY_REVOKED",
            AuditAction::ActorCreated => "ACTOR_CREATED",
            AuditAction::PolicyCreated => "POLICY_CREATED",
            AuditAction::PolicyUpdated => "POLICY_UPDATED",
            AuditAction::LimitAdjusted => "LIMIT_ADJUSTED",
            AuditAction::PolicyActivated => "POLICY_ACTIVATED",
            AuditAction::PolicySuspended => "POLICY_SUSPENDED",
            AuditAction::PolicyRetired => "POLICY_RETIRED",
            AuditAction::OverrideGranted => "OVERRIDE_GRANTED",
            AuditAction::OverrideRevoked => "OVERRIDE_REVOKED",
            AuditAction::SigningKeyAdded => "SIGNING_KEY_ADDED",
            AuditAction::SigningKeyActivated => "SIGNING_KEY_ACTIVATED",
            AuditAction::SigningKeyRetired => "SIGNING_KEY_RETIRED",
            AuditAction::SnapshotsReissued => "SNAPSHOTS_REISSUED",
            AuditAction::JoinTokenCreated => "JOIN_TOKEN_CREATED",
            AuditAction::JoinTokenRevoked => "JOIN_TOKEN_REVOKED",
            AuditAction::EdgeAgentJoined => "EDGE_AGENT_JOINED",
            AuditAction::SnapshotAcked => "SNAPSHOT_ACKED",
            AuditAction::SnapshotNacked => "SNAPSHOT_NACKED",
            AuditAction::RecordsIngested => "RECORDS_INGESTED",
            AuditAction::EdgeAgentConnected => "EDGE_AGENT_CONNECTED",
            AuditAction::GovernanceChanged => "GOVERNANCE_CHANGED",
            AuditAction::GovernanceExpired => "GOVERNANCE_EXPIRED",
            AuditAction::IncidentAcknowledged => "INCIDENT_ACKNOWLEDGED",
            AuditAction::IncidentResolved => "INCIDENT_RESOLVED",
            AuditAction::SuppressionCreated => "SUPPRESSION_CREATED",
            AuditAction::AlertChannelSet => "ALERT_CHANNEL_SET",
            AuditAction::AlertDelivery => "ALERT_DELIVERY",
            AuditAction::EdgeAgentDisconnected => "EDGE_AGENT_DISCONNECTED",
            AuditAction::AccessDenied => "ACCESS_DENIED",
            AuditAction::CommandRejected => "COMMAND_REJECTED",
            AuditAction::EvidenceExported => "EVIDENCE_EXPORTED",
            AuditAction::RetentionSet => "RETENTION_SET",
            AuditAction::RetentionApplied => "RETENTION_APPLIED",
            AuditAction::DataKeyCreated => "DATA_KEY_CREATED",
            AuditAction::SourceCreated => "SOURCE_CREATED",
            AuditAction::SourceUpdated => "SOURCE_UPDATED",
            AuditAction::CredentialSet => "CREDENTIAL_SET",
            AuditAction::SourceVerified => "SOURCE_VERIFIED",
            AuditAction::SourceVerificationFailed => "SOURCE_VERIFICATION_FAILED",
            AuditAction::SourceEnabled => "SOURCE_ENABLED",
            AuditAction::SourceDisabled => "SOURCE_DISABLED",
            AuditAction::PlaneCreated => "PLANE_CREATED",
            AuditAction::PlaneUpdated => "PLANE_UPDATED",
            AuditAction::PlaneActivated => "PLANE_ACTIVATED",
            AuditAction::PlaneDeactivated => "PLANE_DEACTIVATED",
        }
    }
}

/// Whether the attempt an entry records took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuditOutcome {
    /// The change was made.
    Applied,
    /// The attempt was refused. Every `ACCESS_DENIED` entry is `REJECTED`,
    /// including those recorded for the API layer by `RECORD_DENIAL`.
    Rejected,
}

impl AuditOutcome {
    /// The ledger spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Applied => "APPLIED",
            AuditOutcome::Rejected => "REJECTED",
        }
    }
}

/// One ledger record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the ledger, from 1, without gaps.
    pub seq: u64,
    /// When the proposal was stamped by the leader, Unix milliseconds.
    pub at_ms: u64,
    /// The Raft log index of the proposal.
    pub log_index: u64,
    /// The proposal's idempotency key.
    pub request_id: String,
    /// Who asked.
    pub actor: ActorRef,
    /// What happened.
    pub action: AuditAction,
    /// The tenant concerned; `None` for cluster-level records.
    pub tenant_id: Option<String>,
    /// The resource, e.g. `tenants/acme/policies/pol-a`.
    pub target: String,
    /// The resource before the change, for changes.
    #[serde(with = "serde_compat::opt_json_value")]
    pub before: Option<Value>,
    /// The resource after the change, for changes.
    #[serde(with = "serde_compat::opt_json_value")]
    pub after: Option<Value>,
    /// Whether it took effect.
    pub outcome: AuditOutcome,
    /// Human-readable summary or refusal reason.
    pub detail: String,
    /// The previous entry's `hash`; [`GENESIS_HASH`] for the first.
    pub prev_hash: String,
    /// Lowercase hex SHA-256 over every other field.
    pub hash: String,
}

impl AuditEntry {
    /// Recomputes this entry's hash from its content (ignoring `hash`).
    pub fn compute_hash(&self) -> String {
        chain::entry_hash(self)
    }
}

/// An entry before it is placed in the chain.
#[derive(Debug, Clone)]
pub(crate) struct AuditDraft {
    pub(crate) at_ms: u64,
    pub(crate) log_index: u64,
    pub(crate) request_id: String,
    pub(crate) actor: ActorRef,
    pub(crate) action: AuditAction,
    pub(crate) tenant_id: Option<String>,
    pub(crate) target: String,
    pub(crate) before: Option<Value>,
    pub(crate) after: Option<Value>,
    pub(crate) outcome: AuditOutcome,
    pub(crate) detail: String,
}

/// The ledger: an append-only vector whose position `i` holds seq `i + 1`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditLedger {
    entries: Vec<AuditEntry>,
}

impl AuditLedger {
    /// Every entry, oldest first.
    pub fn entries(&self) -> &[AuditEntry] {
        &self.entries
    }

    /// Number of entries (equal to the last seq).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry with sequence number `seq`.
    pub fn get(&self, seq: u64) -> Option<&AuditEntry> {
        let index = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.entries.get(index)
    }

    /// The newest entry.
    pub fn last(&self) -> Option<&AuditEntry> {
        self.entries.last()
    }

    /// The hash the next entry will link to.
    pub fn head_hash(&self) -> &str {
        self.entries.last().map_or(GENESIS_HASH, |e| e.hash.as_str())
    }

    /// The seq the next entry will get.
    pub fn next_seq(&self) -> u64 {
        self.last().map_or(1, |e| e.seq.saturating_add(1))
    }

    /// A page of entries with `seq > since_seq`, oldest first, at most
    /// `limit` of them. `tenant: Some(t)` keeps only entries about tenant
    /// `t`; `None` keeps all (cluster operators). To page, pass the last seq
    /// received as the next `since_seq`.
    pub fn query(&self, tenant: Option<&str>, since_seq: u64, limit: usize) -> Vec<&AuditEntry> {
        let start = usize::try_from(since_seq).unwrap_or(usize::MAX).min(self.entries.len());
        self.entries[start..]
            .iter()
            .filter(|e| tenant.is_none_or(|t| e.tenant_id.as_deref() == Some(t)))
            .take(limit)
            .collect()
    }

    /// Verifies the whole chain; see [`verify_chain`].
    pub fn verify(&self) -> Result<(), ChainError> {
        verify_chain(&self.entries)
    }

    /// Places `draft` at the end of the chain and returns its seq.
    pub(crate) fn append(&mut self, draft: AuditDraft) -> u64 {
        let seq = self.next_seq();
        let mut entry = AuditEntry {
            seq,
            at_ms: draft.at_ms,
            log_index: draft.log_index,
            request_id: draft.request_id,
            actor: draft.actor,
            action: draft.action,
            tenant_id: draft.tenant_id,
            target: draft.target,
            before: draft.before,
            after: draft.after,
            outcome: draft.outcome,
            detail: draft.detail,
            prev_hash: self.head_hash().to_owned(),
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        self.entries.push(entry);
        seq
    }

    /// Test access for tampering.
    #[cfg(test)]
    pub(crate) fn entries_mut(&mut self) -> &mut Vec<AuditEntry> {
        &mut self.entries
    }
}

#[cfg(test)]
mod tests;
