//! The snapshot's content: everything an edge agent needs to enforce one
//! tenant's policies, and nothing it must not see.

use serde::{Deserialize, Serialize};

use crate::access::{DataSource, SealedCredential, SourceCredential, check_sources};
use crate::compile::{CompiledPolicy, check_id, check_scope, compile_policy_at, is_enforceable};
use crate::error::{FieldError, FieldErrors};
use crate::path::FieldPath;
use crate::policy::{Policy, PolicyOverride, ScopeType};

use super::SnapshotError;

/// Sensitivity of a knowledge plane (GAP-037).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Sensitivity {
    /// Public knowledge.
    Public,
    /// Internal to the customer.
    Internal,
    /// Need-to-know.
    Confidential,
    /// Regulated or secret.
    Restricted,
}

/// What a plane allows when no policy says otherwise (GAP-044).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlaneDefault {
    /// Access allowed unless a policy forbids it.
    Allow,
    /// Access refused unless a policy allows it.
    Deny,
}

/// A knowledge plane as the edge agent sees it (GAP-056). Connector details
/// travel separately; this is what policies bind to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KnowledgePlane {
    /// Plane id, referenced by policies.
    pub plane_id: String,
    /// Display name.
    pub name: String,
    /// Sensitivity.
    pub sensitivity: Sensitivity,
    /// Default access.
    pub default_policy: PlaneDefault,
    /// Sources serving the plane (several per plane), sorted.
    #[serde(default)]
    pub bound_source_ids: Vec<String>,
    /// Whether an owner confirmed activation (GAP-045); an inactive plane
    /// refuses every access.
    #[serde(default)]
    pub active: bool,
}

/// A workload API key the edge agent accepts on its local API (issue 4):
/// the control plane's `workload` keys of the tenant, not revoked. Only the
/// SHA-256 of the secret travels; secrets are 32 random bytes, so the hash
/// reveals nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkloadKey {
    /// The key's id (a run's `api_key_id`).
    pub key_id: String,
    /// Lowercase hex SHA-256 of the secret.
    pub secret_sha256: String,
}

/// One tenant's policy snapshot.
///
/// Build it with [`PolicySnapshot::new`], which validates and puts every
/// collection in canonical (id) order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySnapshot {
    /// The tenant the snapshot governs.
    pub tenant_id: String,
    /// Strictly increasing per tenant.
    pub version: u64,
    /// When the control plane issued it, Unix milliseconds.
    pub issued_at_ms: u64,
    /// Maximum staleness: after this instant the snapshot is frozen.
    pub not_after_ms: u64,
    /// `ACTIVE` policies, sorted by id.
    pub policies: Vec<Policy>,
    /// Policy overrides (GAP-034), sorted by id.
    pub overrides: Vec<PolicyOverride>,
    /// Knowledge planes, sorted by id.
    pub knowledge_planes: Vec<KnowledgePlane>,
    /// Workload API keys for the edge agent's local API, sorted by id.
    pub workload_keys: Vec<WorkloadKey>,
    /// Data sources the planes bind, sorted by id (issue 6).
    pub data_sources: Vec<DataSource>,
    /// Sealed connector credentials, sorted by source id. Only the tenant's
    /// own agents receive the data key that opens them.
    pub credentials: Vec<SourceCredential>,
}

impl PolicySnapshot {
    /// Validates the parts and assembles a snapshot in canonical order.
    pub fn new(
        tenant_id: impl Into<String>,
        version: u64,
        issued_at_ms: u64,
        not_after_ms: u64,
        mut policies: Vec<Policy>,
        mut overrides: Vec<PolicyOverride>,
        mut knowledge_planes: Vec<KnowledgePlane>,
    ) -> Result<Self, SnapshotError> {
        policies.sort_by(|a, b| a.id.cmp(&b.id));
        overrides.sort_by(|a, b| a.override_id.cmp(&b.override_id));
        knowledge_planes.sort_by(|a, b| a.plane_id.cmp(&b.plane_id));
        let snapshot = PolicySnapshot {
            tenant_id: tenant_id.into(),
            version,
            issued_at_ms,
            not_after_ms,
            policies,
            overrides,
            knowledge_planes,
            workload_keys: Vec::new(),
            data_sources: Vec::new(),
            credentials: Vec::new(),
        };
        snapshot.compile().map_err(SnapshotError::Invalid)?;
        Ok(snapshot)
    }

    /// The same snapshot carrying `keys` (canonical order, validated).
    pub fn with_workload_keys(mut self, mut keys: Vec<WorkloadKey>) -> Result<Self, SnapshotError> {
        keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        self.workload_keys = keys;
        self.compile().map_err(SnapshotError::Invalid)?;
        Ok(self)
    }

    /// The same snapshot carrying knowledge planes (replacing any given to
    /// [`PolicySnapshot::new`]), the data sources they bind and the sealed
    /// credentials, in canonical order and validated together.
    pub fn with_data_access(
        mut self,
        mut planes: Vec<KnowledgePlane>,
        mut sources: Vec<DataSource>,
        mut credentials: Vec<SourceCredential>,
    ) -> Result<Self, SnapshotError> {
        planes.sort_by(|a, b| a.plane_id.cmp(&b.plane_id));
        for plane in &mut planes {
            plane.bound_source_ids.sort();
        }
        self.knowledge_planes = planes;
        sources.sort_by(|a, b| a.source_id.cmp(&b.source_id));
        credentials.sort_by(|a, b| a.source_id.cmp(&b.source_id));
        self.data_sources = sources;
        self.credentials = credentials;
        self.compile().map_err(SnapshotError::Invalid)?;
        Ok(self)
    }

    /// The sealed credential of `source_id`, if one is set.
    pub fn credential(&self, source_id: &str) -> Option<&SealedCredential> {
        self.credentials
            .binary_search_by(|c| c.source_id.as_str().cmp(source_id))
            .ok()
            .and_then(|i| self.credentials.get(i))
            .map(|c| &c.sealed)
    }

    /// The workload key whose secret hashes to `secret_sha256`, if any.
    pub fn workload_key(&self, secret_sha256: &str) -> Option<&WorkloadKey> {
        self.workload_keys.iter().find(|k| k.secret_sha256 == secret_sha256)
    }

    /// Checks every rule and compiles the policies, in id order.
    pub(crate) fn compile(&self) -> Result<Vec<CompiledPolicy>, FieldErrors> {
        let mut errors = Vec::new();
        let root = FieldPath::ROOT;
        check_id(&self.tenant_id, &root.field("tenant_id"), &mut errors);
        if self.version == 0 {
            errors.push(FieldError::new("version", "must be at least 1"));
        }
        if self.not_after_ms <= self.issued_at_ms {
            errors.push(FieldError::new(
                "not_after_ms",
                format!("must be after issued_at_ms ({}), got {}", self.issued_at_ms, self.not_after_ms),
            ));
        }

        let mut compiled = Vec::with_capacity(self.policies.len());
        let policies_path = root.field("policies");
        for (i, policy) in self.policies.iter().enumerate() {
            let path = policies_path.index(i);
            if i > 0 && self.policies[i - 1].id >= policy.id {
                errors.push(FieldError::at(
                    &path.field("id"),
                    format!("{:?} is duplicated or out of canonical order", policy.id),
                ));
            }
            if !is_enforceable(policy) {
                errors.push(FieldError::at(
                    &path.field("status"),
                    format!("a snapshot carries only ACTIVE policies, got {}", policy.status),
                ));
            }
            if policy.scope.scope_type == ScopeType::Tenant
                && let Some(other) = policy.scope.ids.iter().find(|id| **id != self.tenant_id)
            {
                errors.push(FieldError::at(
                    &path.field("scope.ids"),
                    format!("names tenant {other:?} but the snapshot is for {:?}", self.tenant_id),
                ));
            }
            if let Some(c) = compile_policy_at(policy, &path, &mut errors) {
                compiled.push(c);
            }
        }

        let overrides_path = root.field("overrides");
        for (i, o) in self.overrides.iter().enumerate() {
            let path = overrides_path.index(i);
            check_id(&o.override_id, &path.field("override_id"), &mut errors);
            if i > 0 && self.overrides[i - 1].override_id >= o.override_id {
                errors.push(FieldError::at(
                    &path.field("override_id"),
                    format!("{:?} is duplicated or out of canonical order", o.override_id),
                ));
            }
            if self.policies.binary_search_by(|p| p.id.as_str().cmp(&o.policy_id)).is_err() {
                errors.push(FieldError::at(
                    &path.field("policy_id"),
                    format!("unknown policy {:?}", o.policy_id),
                ));
            }
            check_scope(&o.scope, &path.field("scope"), &mut errors);
            check_id(&o.granted_by.actor_id, &path.field("granted_by.actor_id"), &mut errors);
            if !o.granted_by.role.can_grant_override() {
                errors.push(FieldError::at(
                    &path.field("granted_by.role"),
                    format!(
                        "role {} may not grant overrides (admin or sre required)",
                        o.granted_by.role.as_str()
                    ),
                ));
            }
            if o.reason.trim().is_empty() {
                errors.push(FieldError::at(&path.field("reason"), "must not be empty"));
            }
            if o.expires_at_ms <= o.starts_at_ms {
                errors.push(FieldError::at(&path.field("expires_at_ms"), "must be after starts_at_ms"));
            } else if o.expires_at_ms - o.starts_at_ms > PolicyOverride::MAX_DURATION_MS {
                errors.push(FieldError::at(
                    &path.field("expires_at_ms"),
                    "an override may last at most 7 days",
                ));
            }
        }

        let planes_path = root.field("knowledge_planes");
        for (i, plane) in self.knowledge_planes.iter().enumerate() {
            let path = planes_path.index(i);
            check_id(&plane.plane_id, &path.field("plane_id"), &mut errors);
            if i > 0 && self.knowledge_planes[i - 1].plane_id >= plane.plane_id {
                errors.push(FieldError::at(
                    &path.field("plane_id"),
                    format!("{:?} is duplicated or out of canonical order", plane.plane_id),
                ));
            }
        }
        let bindings: Vec<(String, Vec<String>)> = if self.data_sources.is_empty()
            && self.knowledge_planes.iter().all(|p| p.bound_source_ids.is_empty())
        {
            Vec::new()
        } else {
            self.knowledge_planes.iter().map(|p| (p.plane_id.clone(), p.bound_source_ids.clone())).collect()
        };
        check_sources(&self.data_sources, &bindings, &mut errors);
        let credentials_path = root.field("credentials");
        for (i, c) in self.credentials.iter().enumerate() {
            let path = credentials_path.index(i);
            if i > 0 && self.credentials[i - 1].source_id >= c.source_id {
                errors.push(FieldError::at(
                    &path.field("source_id"),
                    format!("{:?} is duplicated or out of canonical order", c.source_id),
                ));
            }
            if self.data_sources.binary_search_by(|s| s.source_id.as_str().cmp(&c.source_id)).is_err() {
                errors.push(FieldError::at(
                    &path.field("source_id"),
                    format!("unknown source {:?}", c.source_id),
                ));
            }
        }

        let keys_path = root.field("workload_keys");
        for (i, key) in self.workload_keys.iter().enumerate() {
            let path = keys_path.index(i);
            check_id(&key.key_id, &path.field("key_id"), &mut errors);
            if i > 0 && self.workload_keys[i - 1].key_id >= key.key_id {
                errors.push(FieldError::at(
                    &path.field("key_id"),
                    format!("{:?} is duplicated or out of canonical order", key.key_id),
                ));
            }
            let hex = &key.secret_sha256;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                errors.push(FieldError::at(
                    &path.field("secret_sha256"),
                    "must be 64 lowercase hex characters (a SHA-256)",
                ));
            }
        }

        if errors.is_empty() { Ok(compiled) } else { Err(FieldErrors(errors)) }
    }
}
