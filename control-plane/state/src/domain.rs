//! The replicated domain data, without the ledger and the request log: what
//! a rejected command must leave exactly as it was.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::activity::Activity;
use crate::alerts::Alerts;
use crate::edge_agents::EdgeAgents;
use crate::effect::Refusal;
use crate::governance::Governance;
use crate::incidents::Incidents;
use crate::keys::ApiKeyRecord;
use crate::overrides::OverrideRecord;
use crate::policies::PolicyRecord;
use crate::signing_keys::SigningKeys;
use crate::tenants::{ActorRecord, Project, Tenant};

/// When, by whom and why something was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Unix milliseconds of the revoking proposal.
    pub at_ms: u64,
    /// The revoking actor's id.
    pub by: String,
    /// Why.
    pub reason: String,
}

/// Every tenant-independent and tenant-scoped record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Domain {
    pub(crate) tenants: BTreeMap<String, TenantState>,
    /// All API keys, tenant and operator, by key id.
    pub(crate) api_keys: BTreeMap<String, ApiKeyRecord>,
    /// Secret hash → key id, for every key ever registered (revoked ones
    /// included, so a secret is never registered twice).
    pub(crate) key_ids_by_hash: BTreeMap<String, String>,
    /// Snapshot signing keys (public) and the active signer.
    #[serde(default)]
    pub(crate) signing_keys: SigningKeys,
    /// Edge-agent join tokens and registered agents.
    #[serde(default)]
    pub(crate) edge_agents: EdgeAgents,
    /// Records ingested from edge agents.
    #[serde(default)]
    pub(crate) activity: Activity,
    /// Global and per-tenant governance modes.
    #[serde(default)]
    pub(crate) governance: Governance,
    /// Incidents made from agents' reports, suppressions, proposals.
    #[serde(default)]
    pub(crate) incidents: Incidents,
    /// Alerts, their deliveries and the tenants' alert channels.
    #[serde(default)]
    pub(crate) alerts: Alerts,
    /// Data sources, knowledge planes and tenant data keys (issue 6).
    #[serde(default)]
    pub(crate) data_access: crate::data_access::DataAccess,
    /// How many tenant snapshot versions have been issued, all tenants
    /// together: lets a node wake its snapshot watches only when something
    /// they push changed (see `State::push_generation`).
    #[serde(default)]
    pub(crate) snapshot_generation: u64,
}

/// One tenant and everything it owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TenantState {
    pub(crate) tenant: Tenant,
    pub(crate) projects: BTreeMap<String, Project>,
    pub(crate) actors: BTreeMap<String, ActorRecord>,
    pub(crate) policies: BTreeMap<String, PolicyRecord>,
    pub(crate) overrides: BTreeMap<String, OverrideRecord>,
}

impl TenantState {
    pub(crate) fn new(tenant: Tenant) -> Self {
        TenantState {
            tenant,
            projects: BTreeMap::new(),
            actors: BTreeMap::new(),
            policies: BTreeMap::new(),
            overrides: BTreeMap::new(),
        }
    }
}

impl Domain {
    /// The tenant, or a `NotFound` refusal.
    pub(crate) fn tenant(&self, tenant_id: &str) -> Result<&TenantState, Refusal> {
        self.tenants.get(tenant_id).ok_or_else(|| unknown_tenant(tenant_id))
    }

    /// The tenant, mutably, or a `NotFound` refusal.
    pub(crate) fn tenant_mut(&mut self, tenant_id: &str) -> Result<&mut TenantState, Refusal> {
        self.tenants.get_mut(tenant_id).ok_or_else(|| unknown_tenant(tenant_id))
    }

    /// Increments the tenant's snapshot version and returns it.
    pub(crate) fn bump_snapshot_version(&mut self, tenant_id: &str, at_ms: u64) -> Option<u64> {
        let tenant = &mut self.tenants.get_mut(tenant_id)?.tenant;
        // 2^64 policy changes will not happen; saturating keeps `apply`
        // panic-free regardless.
        tenant.snapshot_version = tenant.snapshot_version.saturating_add(1);
        tenant.snapshot_changed_at_ms = at_ms;
        self.snapshot_generation = self.snapshot_generation.saturating_add(1);
        Some(tenant.snapshot_version)
    }
}

fn unknown_tenant(tenant_id: &str) -> Refusal {
    Refusal::not_found(format!("unknown tenant `{tenant_id}`"))
}
