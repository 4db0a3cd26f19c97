//! # aos-cp-state
//!
//! The control plane's state machine: tenants, projects, API keys, actors,
//! versioned policies, overrides, and the hash-chained audit ledger, as one
//! deterministic value that Raft replicates. Like `aos-core` it does no
//! I/O, spawns nothing and reads no clock: the leader stamps time on each
//! [`Proposal`], every replica applies the same proposals in log order with
//! [`ControlState::apply`], and so every replica holds the same state and
//! the same ledger, hash for hash. The Raft storage, network and REST API
//! live elsewhere and code against this crate's types.
//!
//! ## Rules
//! - Every new proposal appends exactly one [`AuditEntry`], applied or
//!   rejected, in the same `apply` call; a rejected command changes nothing
//!   else (GAP-050: the audit record is committed with the change).
//! - A repeated `request_id` returns the original [`CommandResult`] and
//!   changes nothing (bounded idempotency log).
//! - Every change to a tenant's policies or overrides increments its
//!   snapshot version; [`ControlState::policy_snapshot`] assembles the
//!   [`aos_core::PolicySnapshot`] at that version for signing.
//! - Policies are validated by aos-core's single validator, keep every
//!   version, and move through the lifecycle only along
//!   `PolicyStatus::transition` (GAP-020, GAP-021, GAP-022).
//! - Overrides are time-bound and role-checked (GAP-034).
//!
//! ## Layout
//! - [`command`]: proposals, commands and their results.
//! - [`logged`]: a proposal as a Raft entry carries it (its JSON text).
//! - [`actor`]: who proposed.
//! - [`state`]: [`ControlState`], `apply` and the read side.
//! - `dispatch`: subject, authorisation and routing of a command.
//! - [`tenants`], [`keys`], [`policies`], [`overrides`]: records and their
//!   command handlers.
//! - [`edge_agents`]: join tokens, registered edge agents, snapshot
//!   ACK/NACK status.
//! - [`signing_keys`]: trusted snapshot signing keys, the active signer,
//!   and reissue before expiry.
//! - [`data_access`]: data sources, sealed credentials, knowledge planes
//!   and tenant data keys (issue 6).
//! - [`audit`]: ledger, entry hashing, [`verify_chain`].
//! - [`requests`]: the idempotency log.
//! - `effect`, `domain`, `ids`, `serde_compat`: handler plumbing, the
//!   domain records, input checks, serde adapters for binary formats.

pub mod activity;
pub mod actor;
pub mod alerts;
pub mod audit;
pub mod command;
pub mod data_access;
mod dispatch;
mod domain;
pub mod edge_agents;
mod effect;
mod error;
pub mod governance;
mod ids;
pub mod incidents;
pub mod keys;
pub mod logged;
pub mod overrides;
pub mod policies;
pub mod requests;
mod serde_compat;
pub mod signing_keys;
pub mod state;
pub mod tenants;
#[cfg(test)]
mod test_support;

pub use activity::{
    Activity, IngestRecord, RecordFilter, RecordText, RetentionView, StoredRecord, record_policy,
};
pub use actor::{ActorRef, ActorType};
pub use alerts::{
    Alert, AlertStats, Alerts, Channel, ChannelConfig, Delivery, DeliveryStatus, email_recipients,
};
pub use audit::{
    AuditAction, AuditEntry, AuditLedger, AuditOutcome, ChainError, GENESIS_HASH, verify_chain,
    verify_chain_after,
};
pub use command::{Applied, Command, CommandResult, Proposal, Rejection, RejectionCode};
pub use domain::Revocation;
pub use edge_agents::{AgentAck, EdgeAgentRecord, MAX_ACKS_PER_BATCH};
pub use error::StateError;
pub use governance::{Governance, GovernanceMode, GovernanceSetting, effective_mode};
pub use incidents::{
    Incident, IncidentCategory, IncidentFilter, IncidentStatus, Incidents, PolicyProposal, Prevention,
    Severity, Suppression,
};
pub use keys::{ApiKeyRecord, ApiKeySummary};
pub use logged::LoggedProposal;
pub use overrides::OverrideRecord;
pub use policies::{PolicyRecord, PolicyVersion};
pub use requests::{DEFAULT_REQUEST_CAPACITY, RequestLog};
pub use signing_keys::{SigningKeyRecord, SigningKeys};
pub use state::ControlState;
pub use tenants::{ActorRecord, Project, Tenant};
