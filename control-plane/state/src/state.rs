//! [`ControlState`]: the replicated state machine and its read side.

use serde::{Deserialize, Serialize};

use aos_core::PolicySnapshot;
use aos_core::policy::{ActorRole, Policy, PolicyStatus};
use aos_core::snapshot::WorkloadKey;

use crate::audit::{AuditAction, AuditDraft, AuditLedger, AuditOutcome};
use crate::command::{Applied, Command, CommandResult, Proposal, Rejection};
use crate::dispatch::{self, Subject};
use crate::domain::Domain;
use crate::error::StateError;
use crate::keys::ApiKeyRecord;
use crate::overrides::OverrideRecord;
use crate::policies::PolicyRecord;
use crate::requests::RequestLog;
use crate::tenants::{ActorRecord, Project, Tenant};

/// The control plane's replicated state: every tenant record, the audit
/// ledger, and the idempotency log.
///
/// [`ControlState::apply`] is the only way to change it. It is
/// deterministic (it reads nothing but the proposal and the state, and
/// iterates only ordered maps), never panics, and appends exactly one audit
/// entry per new proposal. The whole value is serialised for Raft
/// snapshots; it round-trips through JSON and through binary formats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    domain: Domain,
    audit: AuditLedger,
    requests: RequestLog,
    last_applied_index: u64,
}

impl ControlState {
    /// An empty state remembering at most `capacity` request ids for
    /// idempotent replay (default [`crate::DEFAULT_REQUEST_CAPACITY`]). The
    /// capacity is part of the state, so every replica uses the same.
    pub fn with_request_capacity(capacity: usize) -> Self {
        ControlState { requests: RequestLog::with_capacity(capacity), ..ControlState::default() }
    }

    /// Applies the proposal committed at Raft index `log_index`.
    ///
    /// A `request_id` seen before returns the original result and changes
    /// nothing but `last_applied_index`. Otherwise the command is authorised,
    /// validated and applied, or refused with nothing changed, and in both
    /// cases exactly one audit entry is appended. A [`Command::Batch`]
    /// applies its proposals this way, in order, and answers with their
    /// results ([`CommandResult::batch`]).
    pub fn apply(&mut self, log_index: u64, proposal: &Proposal) -> CommandResult {
        if let Command::Batch { proposals } = &proposal.command {
            self.last_applied_index = self.last_applied_index.max(log_index);
            let results: Vec<CommandResult> =
                proposals.iter().map(|p| self.apply_one(log_index, p)).collect();
            return CommandResult::batch(&results);
        }
        self.apply_one(log_index, proposal)
    }

    /// Applies one proposal that is not a top-level batch (a nested batch
    /// is refused by the dispatcher).
    fn apply_one(&mut self, log_index: u64, proposal: &Proposal) -> CommandResult {
        self.last_applied_index = self.last_applied_index.max(log_index);
        if let Some(original) = self.requests.get(&proposal.request_id) {
            return original.clone();
        }
        let result = self.execute(log_index, proposal);
        // An empty request id cannot be a key: every such proposal is
        // refused on its own, and audited on its own. Edge-agent traffic is
        // idempotent by content and never replayed by request id, so it is
        // not remembered: it would push operators' Idempotency-Keys out of
        // the bounded log within minutes under ingest load.
        if !proposal.request_id.is_empty() && proposal.command.replayable() {
            self.requests.insert(proposal.request_id.clone(), result.clone());
        }
        result
    }

    /// Runs a new proposal and appends its audit entry.
    fn execute(&mut self, log_index: u64, proposal: &Proposal) -> CommandResult {
        let audit_seq = self.audit.next_seq();
        let subject = Subject::of(&proposal.command, &self.domain);
        let mut entry = AuditDraft {
            at_ms: proposal.at_ms,
            log_index,
            request_id: proposal.request_id.clone(),
            actor: proposal.actor.clone(),
            action: AuditAction::CommandRejected,
            tenant_id: subject.tenant_id.clone(),
            target: subject.target.clone(),
            before: None,
            after: None,
            outcome: AuditOutcome::Rejected,
            detail: String::new(),
        };
        match dispatch::execute(&mut self.domain, proposal, &subject, audit_seq) {
            Ok(effect) => {
                let tenant_snapshot_version = match (&subject.tenant_id, effect.touches_snapshot) {
                    (Some(tenant_id), true) => self.domain.bump_snapshot_version(tenant_id, proposal.at_ms),
                    _ => None,
                };
                for tenant_id in &effect.reissue {
                    if subject.tenant_id.as_deref() != Some(tenant_id.as_str()) {
                        self.domain.bump_snapshot_version(tenant_id, proposal.at_ms);
                    }
                }
                entry.action = effect.action;
                entry.outcome = effect.outcome;
                entry.before = effect.before;
                entry.after = effect.after;
                entry.detail = match tenant_snapshot_version {
                    Some(version) => format!("{}; snapshot version {version}", effect.detail),
                    None => effect.detail,
                };
                let audit_seq = self.audit.append(entry);
                CommandResult::Applied(Applied { audit_seq, tenant_snapshot_version, detail: effect.result })
            }
            Err(refusal) => {
                entry.action = refusal.audit_action();
                entry.detail = format!(
                    "{} refused ({}): {}",
                    proposal.command.kind(),
                    refusal.code.as_str(),
                    refusal.message
                );
                let audit_seq = self.audit.append(entry);
                CommandResult::Rejected(Rejection {
                    code: refusal.code,
                    message: refusal.message,
                    field_errors: refusal.field_errors,
                    audit_seq,
                })
            }
        }
    }

    /// Records that Raft applied an entry carrying no proposal (a blank or
    /// membership entry), so `last_applied_index` keeps up with the log.
    pub fn advance_applied_index(&mut self, log_index: u64) {
        self.last_applied_index = self.last_applied_index.max(log_index);
    }

    /// The highest Raft log index applied.
    pub fn last_applied_index(&self) -> u64 {
        self.last_applied_index
    }

    /// Edge-agent join tokens and registered agents.
    pub fn edge_agents(&self) -> &crate::edge_agents::EdgeAgents {
        &self.domain.edge_agents
    }

    /// Global and per-tenant governance modes.
    pub fn governance(&self) -> &crate::governance::Governance {
        &self.domain.governance
    }

    /// Records ingested from edge agents.
    pub fn activity(&self) -> &crate::activity::Activity {
        &self.domain.activity
    }

    /// Alerts, their deliveries and the tenants' alert channels.
    pub fn alerts(&self) -> &crate::alerts::Alerts {
        &self.domain.alerts
    }

    /// Incidents, suppressions, preventions and policy proposals.
    pub fn incidents(&self) -> &crate::incidents::Incidents {
        &self.domain.incidents
    }

    /// The snapshot signing keys (public halves) and the active signer.
    pub fn signing_keys(&self) -> &crate::signing_keys::SigningKeys {
        &self.domain.signing_keys
    }

    /// Tenants whose current snapshot was issued at or before `cutoff_ms`
    /// (and that have one): due for reissue before they expire.
    pub fn snapshots_issued_before(&self, cutoff_ms: u64) -> Vec<String> {
        self.domain
            .tenants
            .values()
            .filter(|t| t.tenant.snapshot_version > 0 && t.tenant.snapshot_changed_at_ms <= cutoff_ms)
            .map(|t| t.tenant.tenant_id.clone())
            .collect()
    }

    /// The audit ledger.
    pub fn audit(&self) -> &AuditLedger {
        &self.audit
    }

    /// The idempotency log.
    pub fn requests(&self) -> &RequestLog {
        &self.requests
    }

    /// One tenant.
    pub fn tenant(&self, tenant_id: &str) -> Option<&Tenant> {
        self.domain.tenants.get(tenant_id).map(|t| &t.tenant)
    }

    /// Every tenant, by id.
    pub fn tenants(&self) -> impl Iterator<Item = &Tenant> {
        self.domain.tenants.values().map(|t| &t.tenant)
    }

    /// A tenant's projects, by id (empty for an unknown tenant).
    pub fn projects(&self, tenant_id: &str) -> impl Iterator<Item = &Project> {
        self.domain.tenants.get(tenant_id).into_iter().flat_map(|t| t.projects.values())
    }

    /// A tenant's human actors, by id (empty for an unknown tenant).
    pub fn actors(&self, tenant_id: &str) -> impl Iterator<Item = &ActorRecord> {
        self.domain.tenants.get(tenant_id).into_iter().flat_map(|t| t.actors.values())
    }

    /// The **active** API key whose secret hashes to `secret_hash`; a
    /// revoked key is not returned, so callers can authenticate with this
    /// alone. Use [`ControlState::api_key`] to see revoked keys.
    pub fn api_key_by_hash(&self, secret_hash: &str) -> Option<&ApiKeyRecord> {
        let key_id = self.domain.key_ids_by_hash.get(secret_hash)?;
        self.domain.api_keys.get(key_id).filter(|k| k.is_active())
    }

    /// An API key by id, revoked or not.
    pub fn api_key(&self, key_id: &str) -> Option<&ApiKeyRecord> {
        self.domain.api_keys.get(key_id)
    }

    /// The API keys of a tenant (`Some`) or the operator keys (`None`), by
    /// id, revoked ones included.
    pub fn api_keys(&self, tenant_id: Option<&str>) -> impl Iterator<Item = &ApiKeyRecord> {
        self.domain.api_keys.values().filter(move |k| k.tenant_id.as_deref() == tenant_id)
    }

    /// One policy with its history.
    pub fn policy(&self, tenant_id: &str, policy_id: &str) -> Option<&PolicyRecord> {
        self.domain.tenants.get(tenant_id)?.policies.get(policy_id)
    }

    /// A tenant's policies, by id (empty for an unknown tenant).
    pub fn policies(&self, tenant_id: &str) -> impl Iterator<Item = &PolicyRecord> {
        self.domain.tenants.get(tenant_id).into_iter().flat_map(|t| t.policies.values())
    }

    /// One stored version of a policy.
    pub fn policy_version(&self, tenant_id: &str, policy_id: &str, version: u64) -> Option<&Policy> {
        Some(&self.policy(tenant_id, policy_id)?.version(version)?.policy)
    }

    /// A tenant's overrides, by id, revoked and expired ones included
    /// (empty for an unknown tenant).
    pub fn overrides(&self, tenant_id: &str) -> impl Iterator<Item = &OverrideRecord> {
        self.domain.tenants.get(tenant_id).into_iter().flat_map(|t| t.overrides.values())
    }

    /// Data sources, knowledge planes and data keys (issue 6).
    pub fn data_access(&self) -> &crate::data_access::DataAccess {
        &self.domain.data_access
    }

    /// A number that grows whenever anything a snapshot watch pushes may
    /// have changed: any tenant's snapshot version or the governance state.
    /// Nodes wake their watches on it instead of on every applied entry, so
    /// record ingest and ACKs do not wake every watch (which made the cost
    /// of a governance round quadratic in the number of edge agents).
    pub fn push_generation(&self) -> u64 {
        self.domain.snapshot_generation.saturating_add(self.domain.governance.version())
    }

    /// The tenant's snapshot version; 0 when unknown or before the first
    /// policy or override change.
    pub fn snapshot_version(&self, tenant_id: &str) -> u64 {
        self.tenant(tenant_id).map_or(0, |t| t.snapshot_version)
    }

    /// Assembles the tenant's policy snapshot at its current version: the
    /// latest version of every `ACTIVE` policy, and every override of those
    /// policies that is neither revoked nor expired at `issued_at_ms`.
    ///
    /// Overrides that have not started yet are included: an override's
    /// start does not change the snapshot version, and the edge agent checks
    /// each override's window at every step (GAP-034). Knowledge planes
    /// (active or not: the agent refuses an inactive one by name), data
    /// sources and sealed credentials come with it (issue 6).
    pub fn policy_snapshot(
        &self,
        tenant_id: &str,
        issued_at_ms: u64,
        not_after_ms: u64,
    ) -> Result<PolicySnapshot, StateError> {
        let tenant = self
            .domain
            .tenants
            .get(tenant_id)
            .ok_or_else(|| StateError::UnknownTenant { tenant_id: tenant_id.to_owned() })?;
        let version = tenant.tenant.snapshot_version;
        if version == 0 {
            return Err(StateError::NoSnapshot { tenant_id: tenant_id.to_owned() });
        }
        let active = |policy_id: &str| {
            tenant.policies.get(policy_id).is_some_and(|p| p.status() == PolicyStatus::Active)
        };
        let policies: Vec<Policy> = tenant
            .policies
            .values()
            .filter(|p| p.status() == PolicyStatus::Active)
            .map(|p| p.latest().clone())
            .collect();
        let overrides = tenant
            .overrides
            .values()
            .filter(|o| o.is_live(issued_at_ms) && active(&o.policy_override.policy_id))
            .map(|o| o.policy_override.clone())
            .collect();
        let workload_keys = self
            .domain
            .api_keys
            .values()
            .filter(|k| {
                k.role == ActorRole::Workload
                    && k.tenant_id.as_deref() == Some(tenant_id)
                    && k.revoked.is_none()
            })
            .map(|k| WorkloadKey { key_id: k.key_id.clone(), secret_sha256: k.secret_hash.clone() })
            .collect();
        let (planes, sources, credentials) = self.domain.data_access.snapshot_parts(tenant_id);
        Ok(PolicySnapshot::new(
            tenant_id,
            version,
            issued_at_ms,
            not_after_ms,
            policies,
            overrides,
            Vec::new(),
        )?
        .with_workload_keys(workload_keys)?
        .with_data_access(planes, sources, credentials)?)
    }

    /// The tenant's snapshot as every node issues it: `issued_at` is the time
    /// of the change that produced the current version and `not_after` is
    /// `max_staleness_ms` later, so the same version always yields the same
    /// bytes once signed.
    pub fn issued_snapshot(
        &self,
        tenant_id: &str,
        max_staleness_ms: u64,
    ) -> Result<PolicySnapshot, StateError> {
        let issued_at_ms = self.tenant(tenant_id).map_or(0, |t| t.snapshot_changed_at_ms);
        self.policy_snapshot(tenant_id, issued_at_ms, issued_at_ms.saturating_add(max_staleness_ms.max(1)))
    }

    /// The domain records, without ledger and request log (tests compare
    /// them around a rejected command).
    #[cfg(test)]
    pub(crate) fn domain(&self) -> &Domain {
        &self.domain
    }
}

#[cfg(test)]
mod determinism;
#[cfg(test)]
mod tests;
