//! Governed data access on the control plane (issue 6; GAP-036..045,
//! GAP-055..057): per tenant, the data sources with their connector
//! configuration and sealed credentials, the knowledge planes that bind
//! them, and the tenant's data key wrapped by the cluster master key.
//!
//! Secrets never enter this state in clear: the API layer seals a
//! credential with the tenant's data key before proposing, and the data key
//! itself is stored wrapped (envelope encryption). The ledger records that a
//! credential changed and under which data key, never its value; views
//! rendered for the API ([`SourceRecord::view`]) carry no ciphertext either.
//!
//! Lifecycle of a source (GAP-039): `CREATED → VERIFIED → ENABLED ↔
//! DISABLED`, `→ ERROR` on a failed probe. Any change to its configuration
//! or credential sends it back to `CREATED`: what was verified is no longer
//! what would run. A probe result is tied to the fingerprint of what was
//! probed, so a probe of an older configuration cannot verify a newer one.
//!
//! Planes (GAP-044, GAP-045): `PUBLIC` planes default to `ALLOW`, all others
//! to `DENY`, and `CONFIDENTIAL`/`RESTRICTED` planes can never default to
//! `ALLOW`. A plane serves nothing until a tenant admin (its owner) confirms
//! activation; changing what a plane exposes (sensitivity, default,
//! bindings) takes it back to inactive.

use std::collections::BTreeMap;

use aos_core::FieldError;
use aos_core::access::{DataSource, SealedCredential, SourceCredential, SourceStatus};
use aos_core::policy::Policy;
use aos_core::snapshot::{KnowledgePlane, PlaneDefault, Sensitivity};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::audit::AuditAction;
use crate::domain::Domain;
use crate::effect::{Ctx, Effect, Refusal};
use crate::ids::{check_id, check_text};

#[cfg(test)]
mod tests;

/// Every tenant's data-access records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataAccess {
    tenants: BTreeMap<String, TenantData>,
}

/// One tenant's data key, sources and planes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantData {
    /// The tenant's data key, wrapped by the master key.
    pub data_key: Option<WrappedDataKey>,
    /// Sources by id.
    pub sources: BTreeMap<String, SourceRecord>,
    /// Planes by id.
    pub planes: BTreeMap<String, PlaneRecord>,
}

/// A tenant data key sealed with the cluster master key
/// (`aos_core::access::sealing`, associated data: tenant and key id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedDataKey {
    /// Public id of the data key.
    pub data_key_id: String,
    /// Public id of the master key that wraps it.
    pub master_key_id: String,
    /// Nonce, 24 bytes.
    pub nonce: Vec<u8>,
    /// The wrapped key.
    pub wrapped: Vec<u8>,
}

/// A source, its sealed credential and what is known about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The source; `status` is this record's lifecycle state.
    pub source: DataSource,
    /// Sealed credential (never rendered).
    pub credential: Option<SealedCredential>,
    /// When and by whom the credential was last set.
    pub credential_set: Option<(u64, String)>,
    /// The last probe.
    pub last_probe: Option<Probe>,
    /// Unix ms.
    pub created_at_ms: u64,
    /// Unix ms.
    pub updated_at_ms: u64,
}

/// A verification probe's outcome (GAP-039).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Unix ms.
    pub at_ms: u64,
    /// Whether it succeeded.
    pub ok: bool,
    /// What the probe saw (never a secret: the API layer redacts).
    pub detail: String,
    /// Who asked for it.
    pub by: String,
}

/// A knowledge plane and its activation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaneRecord {
    /// The plane (`active` mirrors `activated`).
    pub plane: KnowledgePlane,
    /// Who confirmed activation, when.
    pub activated: Option<(u64, String)>,
    /// Unix ms.
    pub created_at_ms: u64,
    /// Unix ms.
    pub updated_at_ms: u64,
}

/// A plane as an admin writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaneSpec {
    /// Id, unique within the tenant.
    pub plane_id: String,
    /// Display name.
    pub name: String,
    /// Sensitivity.
    pub sensitivity: Sensitivity,
    /// Defaults to `ALLOW` for `PUBLIC`, `DENY` otherwise.
    #[serde(default)]
    pub default_policy: Option<PlaneDefault>,
    /// Sources serving the plane.
    #[serde(default)]
    pub bound_source_ids: Vec<String>,
}

impl SourceRecord {
    /// The API view: the source, whether a credential is set (never the
    /// credential), the last probe and the fingerprint a probe must name.
    pub fn view(&self) -> Value {
        json!({
            "source": self.source,
            "status": self.source.status,
            "has_credential": self.credential.is_some(),
            "credential_data_key_id": self.credential.as_ref().map(|c| c.data_key_id.clone()),
            "credential_set_at_ms": self.credential_set.as_ref().map(|(at, _)| *at),
            "credential_set_by": self.credential_set.as_ref().map(|(_, by)| by.clone()),
            "last_probe": self.last_probe,
            "fingerprint": self.fingerprint(),
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
        })
    }

    /// SHA-256 over the configuration (status aside) and the credential's
    /// ciphertext: what a probe verified.
    pub fn fingerprint(&self) -> String {
        let mut config = self.source.clone();
        config.status = SourceStatus::Created;
        let mut hasher = Sha256::new();
        hasher.update(b"aos.source.fingerprint.v1\0");
        hasher.update(serde_json::to_vec(&config).unwrap_or_default());
        if let Some(c) = &self.credential {
            hasher.update(&c.nonce);
            hasher.update(&c.ciphertext);
        }
        hex::encode(hasher.finalize())
    }
}

impl PlaneRecord {
    /// The API view.
    pub fn view(&self) -> Value {
        json!({
            "plane": self.plane,
            "active": self.activated.is_some(),
            "activated_at_ms": self.activated.as_ref().map(|(at, _)| *at),
            "activated_by": self.activated.as_ref().map(|(_, by)| by.clone()),
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
        })
    }
}

impl DataAccess {
    /// A tenant's records, if it has any.
    pub fn tenant(&self, tenant_id: &str) -> Option<&TenantData> {
        self.tenants.get(tenant_id)
    }

    /// A tenant owning plane `plane_id`, if any tenant has one of that id
    /// (ids are unique per tenant, not across tenants).
    pub fn plane_owner(&self, plane_id: &str) -> Option<&str> {
        self.tenants.iter().find(|(_, t)| t.planes.contains_key(plane_id)).map(|(id, _)| id.as_str())
    }

    /// What the tenant's snapshot carries: planes (active or not), every
    /// source and the sealed credentials.
    pub(crate) fn snapshot_parts(
        &self,
        tenant_id: &str,
    ) -> (Vec<KnowledgePlane>, Vec<DataSource>, Vec<SourceCredential>) {
        let Some(t) = self.tenants.get(tenant_id) else {
            return (Vec::new(), Vec::new(), Vec::new());
        };
        let planes = t.planes.values().map(|p| p.plane.clone()).collect();
        let sources = t.sources.values().map(|s| s.source.clone()).collect();
        let credentials = t
            .sources
            .values()
            .filter_map(|s| {
                s.credential
                    .clone()
                    .map(|sealed| SourceCredential { source_id: s.source.source_id.clone(), sealed })
            })
            .collect();
        (planes, sources, credentials)
    }

    /// Creates the tenant's entry: only at the point of a mutation, so a
    /// refused command leaves no trace.
    fn tenant_entry(&mut self, tenant_id: &str) -> &mut TenantData {
        self.tenants.entry(tenant_id.to_owned()).or_default()
    }

    fn existing_mut(&mut self, tenant_id: &str) -> Option<&mut TenantData> {
        self.tenants.get_mut(tenant_id)
    }

    fn source_mut(&mut self, tenant_id: &str, source_id: &str) -> Result<&mut SourceRecord, Refusal> {
        self.existing_mut(tenant_id)
            .and_then(|t| t.sources.get_mut(source_id))
            .ok_or_else(|| unknown_source(tenant_id, source_id))
    }
}

/// A policy may only name planes its tenant has (issue 6).
pub(crate) fn check_policy_planes(domain: &Domain, tenant_id: &str, policy: &Policy) -> Result<(), Refusal> {
    let planes = domain.data_access.tenant(tenant_id).map(|t| &t.planes);
    let errors: Vec<FieldError> = policy
        .monitors
        .rag_access
        .allowed_planes
        .iter()
        .enumerate()
        .filter(|(_, id)| !planes.is_some_and(|p| p.contains_key(*id)))
        .map(|(i, id)| {
            FieldError::new(
                format!("policy.monitors.rag_access.allowed_planes[{i}]"),
                format!("unknown knowledge plane `{id}` in tenant `{tenant_id}`"),
            )
        })
        .collect();
    Refusal::check(errors)
}

/// `SET_TENANT_DATA_KEY`: the first data key of a tenant; a second one is
/// refused (rotation is not modelled yet), the same one again is a no-op.
pub(crate) fn set_data_key(
    domain: &mut Domain,
    tenant_id: &str,
    key: &WrappedDataKey,
) -> Result<Effect, Refusal> {
    domain.tenant(tenant_id)?;
    let mut errors = Vec::new();
    if key.nonce.len() != aos_core::access::sealing::NONCE_LEN {
        errors.push(FieldError::new("data_key.nonce", "must be 24 bytes"));
    }
    if key.wrapped.len() != aos_core::access::sealing::KEY_LEN + 16 {
        errors.push(FieldError::new("data_key.wrapped", "must be a sealed 32-byte key (48 bytes)"));
    }
    check_id(&mut errors, "data_key.data_key_id", &key.data_key_id);
    Refusal::check(errors)?;
    match domain.data_access.tenant(tenant_id).and_then(|t| t.data_key.as_ref()) {
        Some(existing) if existing.data_key_id == key.data_key_id => {
            return Ok(Effect::new(AuditAction::DataKeyCreated, "data key already set")
                .result(json!({"data_key_id": key.data_key_id, "created": false})));
        }
        Some(existing) => {
            return Err(Refusal::conflict(format!(
                "tenant `{tenant_id}` already has data key `{}`",
                existing.data_key_id
            )));
        }
        None => domain.data_access.tenant_entry(tenant_id).data_key = Some(key.clone()),
    }
    let detail = format!(
        "data key `{}` created for tenant `{tenant_id}`, wrapped by master key `{}`",
        key.data_key_id, key.master_key_id
    );
    Ok(Effect::new(AuditAction::DataKeyCreated, detail)
        .after(json!({"data_key_id": key.data_key_id, "master_key_id": key.master_key_id}))
        .result(json!({"data_key_id": key.data_key_id, "created": true})))
}

/// `PUT_DATA_SOURCE`: creates a source or changes its configuration
/// (which sends it back to `CREATED`).
pub(crate) fn put_source(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    source: &DataSource,
) -> Result<Effect, Refusal> {
    domain.tenant(tenant_id)?;
    if let Err(e) = source.validate() {
        return Err(Refusal::invalid(
            e.0.into_iter().map(|f| FieldError::new(format!("source.{}", f.path), f.message)).collect(),
        ));
    }
    let mut candidate = source.clone();
    candidate.status = SourceStatus::Created;
    match domain.data_access.existing_mut(tenant_id).and_then(|t| t.sources.get_mut(&source.source_id)) {
        Some(record) => {
            let mut current = record.source.clone();
            current.status = SourceStatus::Created;
            if current == candidate {
                return Ok(Effect::new(AuditAction::SourceUpdated, "no change").result(record.view()));
            }
            if current.asset_type != candidate.asset_type {
                return Err(Refusal::conflict(format!(
                    "source `{}` is {}; its asset type cannot change",
                    source.source_id,
                    current.asset_type.as_str()
                )));
            }
            let before = record.view();
            let was = record.source.status;
            // A credential belongs to the destination it was set for: a new
            // host, database, URL or server never receives the old one.
            let moved = destination(&record.source) != destination(&candidate);
            let cleared = moved && record.credential.take().is_some();
            if cleared {
                record.credential_set = None;
            }
            record.source = candidate;
            record.updated_at_ms = ctx.at_ms;
            let after = record.view();
            let detail = format!(
                "source `{}` reconfigured ({} → CREATED: verify it again before enabling){}",
                source.source_id,
                was.as_str(),
                if cleared {
                    "; its destination changed, so its credential was cleared: set it again"
                } else {
                    ""
                }
            );
            Ok(Effect::new(AuditAction::SourceUpdated, detail)
                .before(before)
                .after(after.clone())
                .result(after)
                .touches_snapshot())
        }
        None => {
            let record = SourceRecord {
                source: candidate,
                credential: None,
                credential_set: None,
                last_probe: None,
                created_at_ms: ctx.at_ms,
                updated_at_ms: ctx.at_ms,
            };
            let view = record.view();
            domain.data_access.tenant_entry(tenant_id).sources.insert(source.source_id.clone(), record);
            let detail = format!("{} source `{}` created", source.asset_type.as_str(), source.source_id);
            Ok(Effect::new(AuditAction::SourceCreated, detail)
                .after(view.clone())
                .result(view)
                .touches_snapshot())
        }
    }
}

/// `SET_SOURCE_CREDENTIAL`: stores a credential sealed with the tenant's
/// current data key. The ledger names the data key, never the value.
pub(crate) fn set_credential(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    source_id: &str,
    sealed: &SealedCredential,
) -> Result<Effect, Refusal> {
    domain.tenant(tenant_id)?;
    let Some(key) = domain.data_access.tenant(tenant_id).and_then(|t| t.data_key.as_ref()) else {
        return Err(Refusal::conflict(format!("tenant `{tenant_id}` has no data key yet")));
    };
    if key.data_key_id != sealed.data_key_id {
        return Err(Refusal::conflict(format!(
            "the credential is sealed with data key `{}`, the tenant's is `{}`",
            sealed.data_key_id, key.data_key_id
        )));
    }
    if sealed.nonce.len() != aos_core::access::sealing::NONCE_LEN || sealed.ciphertext.len() < 16 {
        return Err(Refusal::invalid(vec![FieldError::new("sealed", "is not a sealed credential")]));
    }
    let record = domain.data_access.source_mut(tenant_id, source_id)?;
    let was = record.source.status;
    let replaced = record.credential.is_some();
    record.credential = Some(sealed.clone());
    record.credential_set = Some((ctx.at_ms, ctx.actor.actor_id.clone()));
    record.source.status = SourceStatus::Created;
    record.updated_at_ms = ctx.at_ms;
    let detail = format!(
        "credential of source `{source_id}` {} (sealed with data key `{}`; {} → CREATED)",
        if replaced { "replaced" } else { "set" },
        sealed.data_key_id,
        was.as_str()
    );
    let view = record.view();
    Ok(Effect::new(AuditAction::CredentialSet, detail)
        .after(json!({"source_id": source_id, "has_credential": true, "data_key_id": sealed.data_key_id}))
        .result(view)
        .touches_snapshot())
}

/// `RECORD_SOURCE_PROBE`: a verification probe's outcome for the
/// configuration with `fingerprint`.
pub(crate) fn record_probe(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    source_id: &str,
    fingerprint: &str,
    ok: bool,
    detail: &str,
) -> Result<Effect, Refusal> {
    domain.tenant(tenant_id)?;
    let record = domain.data_access.source_mut(tenant_id, source_id)?;
    if record.fingerprint() != fingerprint {
        return Err(Refusal::conflict(format!(
            "source `{source_id}` changed while it was probed; verify it again"
        )));
    }
    let was = record.source.status;
    record.source.status = match (ok, was) {
        (false, _) => SourceStatus::Error,
        (true, SourceStatus::Created | SourceStatus::Error) => SourceStatus::Verified,
        (true, other) => other,
    };
    record.last_probe =
        Some(Probe { at_ms: ctx.at_ms, ok, detail: detail.to_owned(), by: ctx.actor.actor_id.clone() });
    record.updated_at_ms = ctx.at_ms;
    let now = record.source.status;
    let view = record.view();
    let (action, verb) = if ok {
        (AuditAction::SourceVerified, "verified")
    } else {
        (AuditAction::SourceVerificationFailed, "failed verification")
    };
    let text = format!("source `{source_id}` {verb} ({} → {}): {detail}", was.as_str(), now.as_str());
    let effect = Effect::new(action, text).after(view.clone()).result(view);
    Ok(if was == now { effect } else { effect.touches_snapshot() })
}

/// `TRANSITION_SOURCE`: enable a verified source, disable or re-enable it.
pub(crate) fn transition_source(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    source_id: &str,
    to: SourceStatus,
    reason: &str,
) -> Result<Effect, Refusal> {
    domain.tenant(tenant_id)?;
    let mut errors = Vec::new();
    check_text(&mut errors, "reason", reason);
    Refusal::check(errors)?;
    let record = domain.data_access.source_mut(tenant_id, source_id)?;
    let was = record.source.status;
    if !was.can_transition(to) {
        let hint = if matches!(was, SourceStatus::Created | SourceStatus::Error) {
            ": verify it first (GAP-039)"
        } else {
            ""
        };
        return Err(Refusal::illegal_transition(format!(
            "source `{source_id}` cannot go from {} to {}{hint}",
            was.as_str(),
            to.as_str()
        )));
    }
    let before = record.view();
    record.source.status = to;
    record.updated_at_ms = ctx.at_ms;
    let after = record.view();
    let action =
        if to == SourceStatus::Enabled { AuditAction::SourceEnabled } else { AuditAction::SourceDisabled };
    let detail = format!("source `{source_id}` {} → {}: {reason}", was.as_str(), to.as_str());
    Ok(Effect::new(action, detail).before(before).after(after.clone()).result(after).touches_snapshot())
}

/// `PUT_KNOWLEDGE_PLANE`: creates or changes a plane.
pub(crate) fn put_plane(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    spec: &PlaneSpec,
) -> Result<Effect, Refusal> {
    domain.tenant(tenant_id)?;
    let mut errors = Vec::new();
    check_id(&mut errors, "plane.plane_id", &spec.plane_id);
    check_text(&mut errors, "plane.name", &spec.name);
    let default_policy = spec.default_policy.unwrap_or(if spec.sensitivity == Sensitivity::Public {
        PlaneDefault::Allow
    } else {
        PlaneDefault::Deny
    });
    if default_policy == PlaneDefault::Allow
        && matches!(spec.sensitivity, Sensitivity::Confidential | Sensitivity::Restricted)
    {
        errors.push(FieldError::new(
            "plane.default_policy",
            "a CONFIDENTIAL or RESTRICTED plane must default to DENY",
        ));
    }
    let mut bound = spec.bound_source_ids.clone();
    bound.sort();
    let existing = domain.data_access.tenant(tenant_id);
    for (i, id) in spec.bound_source_ids.iter().enumerate() {
        if !existing.is_some_and(|t| t.sources.contains_key(id)) {
            errors.push(FieldError::new(
                format!("plane.bound_source_ids[{i}]"),
                format!("unknown source `{id}` in tenant `{tenant_id}`"),
            ));
        }
    }
    if bound.windows(2).any(|w| w[0] == w[1]) {
        errors.push(FieldError::new("plane.bound_source_ids", "lists a source twice"));
    }
    Refusal::check(errors)?;
    let plane = KnowledgePlane {
        plane_id: spec.plane_id.clone(),
        name: spec.name.clone(),
        sensitivity: spec.sensitivity,
        default_policy,
        bound_source_ids: bound,
        active: false,
    };
    match domain.data_access.existing_mut(tenant_id).and_then(|t| t.planes.get_mut(&spec.plane_id)) {
        Some(record) => {
            let exposure_changed = record.plane.sensitivity != plane.sensitivity
                || record.plane.default_policy != plane.default_policy
                || record.plane.bound_source_ids != plane.bound_source_ids;
            if !exposure_changed && record.plane.name == plane.name {
                return Ok(Effect::new(AuditAction::PlaneUpdated, "no change").result(record.view()));
            }
            let before = record.view();
            let deactivated = exposure_changed && record.activated.is_some();
            if exposure_changed {
                record.activated = None;
            }
            record.plane = KnowledgePlane { active: record.activated.is_some(), ..plane };
            record.updated_at_ms = ctx.at_ms;
            let after = record.view();
            let detail = format!(
                "plane `{}` changed{}",
                spec.plane_id,
                if deactivated {
                    "; what it exposes changed, so it is inactive until confirmed again"
                } else {
                    ""
                }
            );
            Ok(Effect::new(AuditAction::PlaneUpdated, detail)
                .before(before)
                .after(after.clone())
                .result(after)
                .touches_snapshot())
        }
        None => {
            let record =
                PlaneRecord { plane, activated: None, created_at_ms: ctx.at_ms, updated_at_ms: ctx.at_ms };
            let view = record.view();
            domain.data_access.tenant_entry(tenant_id).planes.insert(spec.plane_id.clone(), record);
            let detail = format!(
                "plane `{}` ({:?}, default {:?}) created, inactive until an owner confirms",
                spec.plane_id, spec.sensitivity, default_policy
            );
            Ok(Effect::new(AuditAction::PlaneCreated, detail)
                .after(view.clone())
                .result(view)
                .touches_snapshot())
        }
    }
}

/// `SET_PLANE_ACTIVATION`: an owner confirms (or withdraws) a plane's
/// activation (GAP-045).
pub(crate) fn set_plane_activation(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    plane_id: &str,
    active: bool,
    reason: &str,
) -> Result<Effect, Refusal> {
    domain.tenant(tenant_id)?;
    let mut errors = Vec::new();
    check_text(&mut errors, "reason", reason);
    Refusal::check(errors)?;
    let record =
        domain.data_access.existing_mut(tenant_id).and_then(|t| t.planes.get_mut(plane_id)).ok_or_else(
            || Refusal::not_found(format!("unknown knowledge plane `{plane_id}` in tenant `{tenant_id}`")),
        )?;
    if record.activated.is_some() == active {
        return Err(Refusal::conflict(format!(
            "plane `{plane_id}` is already {}",
            if active { "active" } else { "inactive" }
        )));
    }
    let before = record.view();
    record.activated = active.then(|| (ctx.at_ms, ctx.actor.actor_id.clone()));
    record.plane.active = active;
    record.updated_at_ms = ctx.at_ms;
    let after = record.view();
    let (action, verb) = if active {
        (AuditAction::PlaneActivated, "activated")
    } else {
        (AuditAction::PlaneDeactivated, "deactivated")
    };
    let detail = format!("plane `{plane_id}` {verb} by `{}`: {reason}", ctx.actor.actor_id);
    Ok(Effect::new(action, detail).before(before).after(after.clone()).result(after).touches_snapshot())
}

/// Where a source connects: what a credential is bound to.
fn destination(source: &DataSource) -> Value {
    json!({
        "sql": source.sql.as_ref().map(|s| (s.engine, &s.target)),
        "http": source.http.as_ref().map(|h| &h.base_url),
        "mcp": source.mcp.as_ref().map(|m| (&m.command, &m.args, &m.url)),
    })
}

fn unknown_source(tenant_id: &str, source_id: &str) -> Refusal {
    Refusal::not_found(format!("unknown source `{source_id}` in tenant `{tenant_id}`"))
}
