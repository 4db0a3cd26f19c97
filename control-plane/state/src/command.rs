//! What goes into the Raft log ([`Proposal`], [`Command`]) and what comes
//! out of applying it ([`CommandResult`]).
//!
//! A proposal is self-contained: the leader stamps `at_ms` before proposing,
//! so every replica applies the same command at the same logical time and no
//! replica reads a clock.

use aos_core::FieldError;
use aos_core::policy::{ActorRole, Policy, PolicyOverride, PolicyStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::actor::ActorRef;
use crate::serde_compat;

/// One entry of the replicated log, or one of the proposals a
/// [`Command::Batch`] entry carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Idempotency key, unique per client request. A proposal whose id was
    /// seen before returns the original result and changes nothing.
    pub request_id: String,
    /// Who asked.
    pub actor: ActorRef,
    /// Unix milliseconds, stamped by the leader when proposing.
    pub at_ms: u64,
    /// What to do.
    pub command: Command,
}

/// Every state change the control plane knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Command {
    /// Creates a tenant. Cluster operators only.
    CreateTenant {
        /// New tenant id.
        tenant_id: String,
        /// Display name.
        name: String,
    },
    /// Creates a project inside a tenant.
    CreateProject {
        /// Owning tenant.
        tenant_id: String,
        /// New project id, unique within the tenant.
        project_id: String,
        /// Display name.
        name: String,
    },
    /// Registers an API key by the hash of its secret.
    CreateApiKey {
        /// Owning tenant; `None` creates a cluster-operator key.
        tenant_id: Option<String>,
        /// New key id, unique in the cluster.
        key_id: String,
        /// Display name.
        name: String,
        /// Role the key acts with.
        role: ActorRole,
        /// Lowercase hex SHA-256 of the secret. The secret itself never
        /// enters the state, and the hash never enters the ledger.
        secret_hash: String,
    },
    /// Revokes an API key; it stops authenticating.
    RevokeApiKey {
        /// The key.
        key_id: String,
        /// Why.
        reason: String,
    },
    /// Registers a human actor of a tenant.
    CreateActor {
        /// Owning tenant.
        tenant_id: String,
        /// New actor id, unique within the tenant.
        actor_id: String,
        /// Display name.
        display_name: String,
        /// Role.
        role: ActorRole,
    },
    /// Creates a policy or a new version of it.
    ApplyPolicy {
        /// Owning tenant.
        tenant_id: String,
        /// The policy as authored.
        policy: Policy,
    },
    /// Moves a policy through its lifecycle (GAP-020, GAP-021).
    TransitionPolicy {
        /// Owning tenant.
        tenant_id: String,
        /// The policy.
        policy_id: String,
        /// Target state.
        to: PolicyStatus,
        /// Why; required for `SUSPENDED` and `RETIRED`.
        reason: Option<String>,
    },
    /// Grants a time-bound override of one policy (GAP-034).
    GrantOverride {
        /// Owning tenant.
        tenant_id: String,
        /// The override.
        policy_override: PolicyOverride,
    },
    /// Ends an override before it expires.
    RevokeOverride {
        /// Owning tenant.
        tenant_id: String,
        /// The override.
        override_id: String,
        /// Why.
        reason: String,
    },
    /// Trusts a new snapshot signing key (public half). Cluster operators
    /// only; the first key added becomes the signer.
    AddSigningKey {
        /// ed25519 public key, hex.
        public_key: String,
    },
    /// Makes a trusted key the snapshot signer and reissues every tenant's
    /// snapshot under it.
    ActivateSigningKey {
        /// The key.
        key_id: String,
    },
    /// Stops trusting a key that no longer signs.
    RetireSigningKey {
        /// The key.
        key_id: String,
        /// Why.
        reason: String,
    },
    /// Gives tenants a new snapshot version before the current one expires
    /// (proposed by the leader on a schedule).
    ReissueSnapshots {
        /// Tenants whose snapshots are due.
        tenant_ids: Vec<String>,
    },
    /// Creates a join token for edge agents of a tenant (tenant admins).
    CreateJoinToken {
        /// Tenant.
        tenant_id: String,
        /// New token id.
        token_id: String,
        /// SHA-256 of the secret, hex (the secret never enters the state).
        secret_hash: String,
        /// Expiry, Unix ms (at most 30 days after the proposal).
        expires_at_ms: u64,
    },
    /// Revokes a join token; agents already joined keep their identity.
    RevokeJoinToken {
        /// Token.
        token_id: String,
        /// Why.
        reason: String,
    },
    /// Registers an edge agent that proved a join token (proposed by the
    /// control plane's join handler).
    RegisterEdgeAgent {
        /// Tenant.
        tenant_id: String,
        /// New agent id.
        agent_id: String,
        /// Operator-facing name.
        name: String,
        /// Token used.
        token_id: String,
        /// SHA-256 of the issued client certificate, hex.
        cert_fingerprint: String,
    },
    /// Records an edge agent's ACK (no reason) or NACK of a snapshot.
    RecordAgentSync {
        /// Agent.
        agent_id: String,
        /// Snapshot version (0: the push carried only governance state).
        version: u64,
        /// Governance version the agent applied, if the push carried one.
        #[serde(default)]
        governance_version: Option<u64>,
        /// Why it was refused; `None` for an ACK.
        nack_reason: Option<String>,
    },
    /// Records ACKs of one tenant's edge agents in one entry (a node's
    /// batch of what its watches received since the previous batch).
    RecordAgentAcks {
        /// The tenant every agent of the batch serves.
        tenant_id: String,
        /// One per agent, at most [`crate::edge_agents::MAX_ACKS_PER_BATCH`].
        acks: Vec<crate::edge_agents::AgentAck>,
    },
    /// Sets the global (`tenant_id: None`) or a tenant's governance mode.
    SetGovernance {
        /// The tenant, or `None` for the global setting.
        tenant_id: Option<String>,
        /// The mode.
        mode: crate::governance::GovernanceMode,
        /// Why (required, audited).
        reason: String,
        /// Return to ENFORCING after this many milliseconds.
        ttl_ms: Option<u64>,
    },
    /// Ends every governance setting whose expiry has passed (proposed by
    /// the leader).
    ExpireGovernance {},
    /// Records that an edge agent opened (or left) a node's snapshot watch.
    RecordAgentConnection {
        /// Agent.
        agent_id: String,
        /// The node.
        node_id: u64,
        /// Opened (`true`) or ended.
        connected: bool,
    },
    /// Commits a batch of records from an edge agent (proposed by the
    /// gateway for the authenticated agent; filed under its tenant).
    IngestRecords {
        /// The sending edge agent.
        edge_agent_id: String,
        /// The records.
        records: Vec<crate::activity::IngestRecord>,
    },
    /// Moves an incident along its lifecycle (acknowledge, resolve).
    TransitionIncident {
        /// Tenant.
        tenant_id: String,
        /// The incident.
        incident_id: String,
        /// The status to enter.
        to: crate::incidents::IncidentStatus,
        /// Why, if said.
        note: Option<String>,
    },
    /// Keeps reports crediting a policy and/or of a category from opening
    /// incidents until a time (each one is filed as a prevention record).
    CreateSuppression {
        /// Tenant.
        tenant_id: String,
        /// New suppression id.
        suppression_id: String,
        /// Only this policy.
        policy_id: Option<String>,
        /// Only this category.
        category: Option<crate::incidents::IncidentCategory>,
        /// In force until (Unix ms).
        until_ms: u64,
        /// Why (required, audited).
        reason: String,
    },
    /// Sets (or replaces) a tenant's webhook, Slack or email alert channel.
    SetAlertChannel {
        /// Tenant.
        tenant_id: String,
        /// The channel.
        channel: crate::alerts::Channel,
        /// URL or address.
        target: String,
    },
    /// The alert dispatcher's outcome for one channel of one alert
    /// (proposed by the leader; `error: None` means delivered).
    RecordAlertDelivery {
        /// Tenant.
        tenant_id: String,
        /// The alert.
        alert_id: String,
        /// The channel.
        channel: crate::alerts::Channel,
        /// Why the attempt failed.
        error: Option<String>,
    },
    /// Stores a tenant's data key, wrapped by the master key (proposed by the
    /// API layer before the tenant's first credential is sealed).
    SetTenantDataKey {
        /// Tenant.
        tenant_id: String,
        /// The wrapped key.
        data_key: crate::data_access::WrappedDataKey,
    },
    /// Creates or reconfigures a data source (GAP-036).
    PutDataSource {
        /// Tenant.
        tenant_id: String,
        /// The source; its `status` is ignored.
        source: aos_core::access::DataSource,
    },
    /// Sets a source's credential, sealed with the tenant's data key by the
    /// API layer (the value never enters the log).
    SetSourceCredential {
        /// Tenant.
        tenant_id: String,
        /// Source.
        source_id: String,
        /// The sealed credential.
        sealed: aos_core::access::SealedCredential,
    },
    /// A verification probe's outcome (GAP-039) for the configuration with
    /// `fingerprint`.
    RecordSourceProbe {
        /// Tenant.
        tenant_id: String,
        /// Source.
        source_id: String,
        /// What was probed.
        fingerprint: String,
        /// Whether it succeeded.
        ok: bool,
        /// What the probe saw.
        detail: String,
    },
    /// Enables or disables a source.
    TransitionSource {
        /// Tenant.
        tenant_id: String,
        /// Source.
        source_id: String,
        /// `ENABLED` or `DISABLED`.
        to: aos_core::access::SourceStatus,
        /// Why (audited).
        reason: String,
    },
    /// Creates or changes a knowledge plane (GAP-037, GAP-044).
    PutKnowledgePlane {
        /// Tenant.
        tenant_id: String,
        /// The plane.
        plane: crate::data_access::PlaneSpec,
    },
    /// An owner confirms (or withdraws) a plane's activation (GAP-045).
    SetPlaneActivation {
        /// Tenant.
        tenant_id: String,
        /// Plane.
        plane_id: String,
        /// Active or not.
        active: bool,
        /// Why (audited).
        reason: String,
    },
    /// Proposals made at about the same time on one node, committed as one
    /// Raft entry (see the control plane's `proposer`): one log write, one
    /// replication and one apply instead of one per proposal. Each proposal
    /// is applied, audited and remembered by its request id exactly as if
    /// it were its own entry, in order; the batch itself writes no audit
    /// entry, and its result carries the proposals' results
    /// ([`CommandResult::batch`]). Batches do not nest: a batch inside a
    /// batch is refused (and audited) like any invalid command.
    Batch {
        /// The proposals, in the order they are applied.
        proposals: Vec<Proposal>,
    },
    /// Records that the API layer refused a request (wrong role,
    /// cross-tenant access), so that every denied admin attempt is in the
    /// ledger. Changes nothing else.
    RecordDenial {
        /// The tenant the refused request was aimed at, if any.
        tenant_id: Option<String>,
        /// What was attempted, e.g. `POST /v1/tenants/acme/policies`.
        action: String,
        /// The resource it was aimed at.
        target: String,
        /// Why it was refused.
        reason: String,
    },
    /// Sets (or clears, `None`) how long the tenant's records are kept
    /// after they reach the control plane.
    SetRetention {
        /// The tenant.
        tenant_id: String,
        /// Maximum age in seconds; `None` keeps records forever.
        max_age_seconds: Option<u64>,
    },
    /// Prunes the tenant's records received before `cutoff_ms`: proposed
    /// by the leader's retention job, which computed the cutoff.
    ApplyRetention {
        /// The tenant.
        tenant_id: String,
        /// Records received before this (Unix ms) go.
        cutoff_ms: u64,
    },
    /// An evidence bundle or report was exported (issue 8, GAP-025..027):
    /// written to the ledger so who took which evidence out is on record.
    /// Changes nothing else.
    RecordExport {
        /// The tenant the evidence belongs to.
        tenant_id: String,
        /// `EVIDENCE_BUNDLE`, `SOC2_BUNDLE`, `PDF_REPORT`,
        /// `EXECUTIVE_DEBRIEF`.
        kind: String,
        /// What it covers, e.g. `run run-1`.
        subject: String,
        /// SHA-256 of what was handed out (the bundle's manifest, the
        /// report's bytes), hex.
        sha256: String,
    },
}

impl Command {
    /// Whether the result is kept in the request log for replay by request
    /// id. Edge-agent traffic (record batches de-duplicated by record id,
    /// ACK/NACKs and connection changes that are safe to apply twice) is
    /// not.
    pub fn replayable(&self) -> bool {
        !matches!(
            self,
            Command::IngestRecords { .. }
                | Command::RecordAgentSync { .. }
                | Command::RecordAgentAcks { .. }
                | Command::RecordAgentConnection { .. }
                | Command::RecordAlertDelivery { .. }
                // Its proposals are remembered by their own request ids.
                | Command::Batch { .. }
        )
    }

    /// The variant's name as spelled on the wire, e.g. `APPLY_POLICY`.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateTenant { .. } => "CREATE_TENANT",
            Command::CreateProject { .. } => "CREATE_PROJECT",
            Command::CreateApiKey { .. } => "CREATE_API_KEY",
            Command::RevokeApiKey { .. } => "REVOKE_API_KEY",
            Command::CreateActor { .. } => "CREATE_ACTOR",
            Command::ApplyPolicy { .. } => "APPLY_POLICY",
            Command::TransitionPolicy { .. } => "TRANSITION_POLICY",
            Command::GrantOverride { .. } => "GRANT_OVERRIDE",
            Command::RevokeOverride { .. } => "REVOKE_OVERRIDE",
            Command::AddSigningKey { .. } => "ADD_SIGNING_KEY",
            Command::ActivateSigningKey { .. } => "ACTIVATE_SIGNING_KEY",
            Command::RetireSigningKey { .. } => "RETIRE_SIGNING_KEY",
            Command::ReissueSnapshots { .. } => "REISSUE_SNAPSHOTS",
            Command::CreateJoinToken { .. } => "CREATE_JOIN_TOKEN",
            Command::RevokeJoinToken { .. } => "REVOKE_JOIN_TOKEN",
            Command::RegisterEdgeAgent { .. } => "REGISTER_EDGE_AGENT",
            Command::RecordAgentSync { .. } => "RECORD_AGENT_SYNC",
            Command::RecordAgentAcks { .. } => "RECORD_AGENT_ACKS",
            Command::IngestRecords { .. } => "INGEST_RECORDS",
            Command::RecordAgentConnection { .. } => "RECORD_AGENT_CONNECTION",
            Command::SetGovernance { .. } => "SET_GOVERNANCE",
            Command::ExpireGovernance {} => "EXPIRE_GOVERNANCE",
            Command::TransitionIncident { .. } => "TRANSITION_INCIDENT",
            Command::CreateSuppression { .. } => "CREATE_SUPPRESSION",
            Command::SetAlertChannel { .. } => "SET_ALERT_CHANNEL",
            Command::RecordAlertDelivery { .. } => "RECORD_ALERT_DELIVERY",
            Command::SetTenantDataKey { .. } => "SET_TENANT_DATA_KEY",
            Command::PutDataSource { .. } => "PUT_DATA_SOURCE",
            Command::SetSourceCredential { .. } => "SET_SOURCE_CREDENTIAL",
            Command::RecordSourceProbe { .. } => "RECORD_SOURCE_PROBE",
            Command::TransitionSource { .. } => "TRANSITION_SOURCE",
            Command::PutKnowledgePlane { .. } => "PUT_KNOWLEDGE_PLANE",
            Command::SetPlaneActivation { .. } => "SET_PLANE_ACTIVATION",
            Command::RecordDenial { .. } => "RECORD_DENIAL",
            Command::Batch { .. } => "BATCH",
            Command::RecordExport { .. } => "RECORD_EXPORT",
            Command::SetRetention { .. } => "SET_RETENTION",
            Command::ApplyRetention { .. } => "APPLY_RETENTION",
        }
    }
}

/// The outcome of applying one proposal. Both arms are audited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandResult {
    /// The command changed the state (or was a recognised no-op).
    Applied(Applied),
    /// The command was refused; nothing but the ledger changed.
    Rejected(Rejection),
}

impl CommandResult {
    /// The sequence number of the audit entry written for this command.
    pub fn audit_seq(&self) -> u64 {
        match self {
            CommandResult::Applied(a) => a.audit_seq,
            CommandResult::Rejected(r) => r.audit_seq,
        }
    }

    /// Whether the command was applied.
    pub fn is_applied(&self) -> bool {
        matches!(self, CommandResult::Applied(_))
    }

    /// The result of a [`Command::Batch`]: its proposals' results, in
    /// order, under `detail.batch` of an `Applied` that has no audit entry
    /// of its own (seq 0, as blank entries), so that a Raft entry's
    /// response stays one `CommandResult` whatever it carries.
    pub fn batch(results: &[CommandResult]) -> CommandResult {
        let detail = match serde_json::to_value(results) {
            Ok(list) => serde_json::json!({ BATCH_RESULTS: list }),
            // Not reachable for these plain types; the proposer then reports
            // the batch's results as unreadable rather than guessing them.
            Err(e) => serde_json::json!({ "batch_unencodable": e.to_string() }),
        };
        CommandResult::Applied(Applied { audit_seq: 0, tenant_snapshot_version: None, detail })
    }

    /// The proposals' results, if this is a [`CommandResult::batch`].
    pub fn into_batch(self) -> Option<Vec<CommandResult>> {
        match self {
            CommandResult::Applied(Applied { audit_seq: 0, detail: Value::Object(mut fields), .. }) => {
                serde_json::from_value(fields.remove(BATCH_RESULTS)?).ok()
            }
            _ => None,
        }
    }
}

/// Field of a batch result's `detail` holding the proposals' results.
const BATCH_RESULTS: &str = "batch";

/// A successfully applied command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// The audit entry written for it.
    pub audit_seq: u64,
    /// The tenant's new snapshot version, when the command changed what the
    /// tenant's snapshot contains; `None` otherwise.
    pub tenant_snapshot_version: Option<u64>,
    /// A compact description of the result (e.g. the created record). Kept
    /// small: it is cached for idempotent replay.
    #[serde(with = "serde_compat::json_value")]
    pub detail: Value,
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectionCode {
    /// The command's content is malformed; see the field errors.
    InvalidInput,
    /// A named tenant, policy, key or override does not exist.
    NotFound,
    /// The command clashes with the current state (duplicate id, already
    /// revoked, policy not active).
    Conflict,
    /// The actor may not do this, or not in that tenant.
    Forbidden,
    /// The lifecycle move is not an edge of the state machine.
    IllegalTransition,
}

impl RejectionCode {
    /// The wire spelling, e.g. `NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionCode::InvalidInput => "INVALID_INPUT",
            RejectionCode::NotFound => "NOT_FOUND",
            RejectionCode::Conflict => "CONFLICT",
            RejectionCode::Forbidden => "FORBIDDEN",
            RejectionCode::IllegalTransition => "ILLEGAL_TRANSITION",
        }
    }
}

/// A refused command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// The class of refusal.
    pub code: RejectionCode,
    /// Human-readable explanation.
    pub message: String,
    /// Per-field problems, with paths such as `policy.limits[0].max`.
    #[serde(with = "serde_compat::field_errors")]
    pub field_errors: Vec<FieldError>,
    /// The audit entry written for the refusal.
    pub audit_seq: u64,
}
