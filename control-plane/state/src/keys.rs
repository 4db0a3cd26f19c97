//! API keys: `CREATE_API_KEY` and `REVOKE_API_KEY`.
//!
//! A key is stored by the SHA-256 of its secret, which the API layer
//! computes; the secret never enters the state. The hash stays out of the
//! ledger and out of command results: both carry an [`ApiKeySummary`].

use aos_core::FieldError;
use aos_core::policy::ActorRole;
use serde::{Deserialize, Serialize};

use crate::audit::AuditAction;
use crate::domain::{Domain, Revocation};
use crate::effect::{Ctx, Effect, Refusal};
use crate::ids::{check_id, check_sha256_hex, check_text};
use crate::serde_compat::to_json;

/// A registered API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Key id, unique in the cluster (a run's `API_KEY` scope target).
    pub key_id: String,
    /// Owning tenant; `None` for a cluster-operator key.
    pub tenant_id: Option<String>,
    /// Display name.
    pub name: String,
    /// The role the key acts with.
    pub role: ActorRole,
    /// Lowercase hex SHA-256 of the secret.
    pub secret_hash: String,
    /// Unix milliseconds of creation.
    pub created_at_ms: u64,
    /// The creating actor's id.
    pub created_by: String,
    /// Set once the key is revoked.
    pub revoked: Option<Revocation>,
}

impl ApiKeyRecord {
    /// Whether the key still authenticates.
    pub fn is_active(&self) -> bool {
        self.revoked.is_none()
    }

    /// The record without its secret hash, as written to the ledger.
    pub fn summary(&self) -> ApiKeySummary {
        ApiKeySummary {
            key_id: self.key_id.clone(),
            tenant_id: self.tenant_id.clone(),
            name: self.name.clone(),
            role: self.role,
            created_at_ms: self.created_at_ms,
            created_by: self.created_by.clone(),
            revoked: self.revoked.clone(),
        }
    }
}

/// An API key as shown in the ledger and in results: no secret hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeySummary {
    /// Key id.
    pub key_id: String,
    /// Owning tenant; `None` for a cluster-operator key.
    pub tenant_id: Option<String>,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: ActorRole,
    /// Unix milliseconds of creation.
    pub created_at_ms: u64,
    /// The creating actor's id.
    pub created_by: String,
    /// Set once revoked.
    pub revoked: Option<Revocation>,
}

/// The fields of `CREATE_API_KEY`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewKey<'a> {
    pub(crate) tenant_id: Option<&'a str>,
    pub(crate) key_id: &'a str,
    pub(crate) name: &'a str,
    pub(crate) role: ActorRole,
    pub(crate) secret_hash: &'a str,
}

/// `CREATE_API_KEY`.
pub(crate) fn create_api_key(domain: &mut Domain, ctx: &Ctx<'_>, new: NewKey<'_>) -> Result<Effect, Refusal> {
    if let Some(tenant_id) = new.tenant_id {
        domain.tenant(tenant_id)?;
    }
    let mut errors = Vec::new();
    check_id(&mut errors, "key_id", new.key_id);
    check_text(&mut errors, "name", new.name);
    check_sha256_hex(&mut errors, "secret_hash", new.secret_hash);
    if new.role == ActorRole::Workload && new.tenant_id.is_none() {
        errors.push(FieldError::new("role", "a `workload` key belongs to a tenant"));
    }
    Refusal::check(errors)?;
    if domain.api_keys.contains_key(new.key_id) {
        return Err(Refusal::conflict(format!("API key `{}` already exists", new.key_id)));
    }
    if domain.key_ids_by_hash.contains_key(new.secret_hash) {
        // Never say which key holds it.
        return Err(Refusal::conflict("this secret is already registered to another API key"));
    }
    let record = ApiKeyRecord {
        key_id: new.key_id.to_owned(),
        tenant_id: new.tenant_id.map(str::to_owned),
        name: new.name.to_owned(),
        role: new.role,
        secret_hash: new.secret_hash.to_owned(),
        created_at_ms: ctx.at_ms,
        created_by: ctx.actor.actor_id.clone(),
        revoked: None,
    };
    let summary = to_json(&record.summary());
    domain.key_ids_by_hash.insert(new.secret_hash.to_owned(), new.key_id.to_owned());
    domain.api_keys.insert(new.key_id.to_owned(), record);
    let scope = new.tenant_id.map_or_else(|| "cluster operator".to_owned(), |t| format!("tenant `{t}`"));
    let effect = Effect::new(
        AuditAction::ApiKeyCreated,
        format!("API key `{}` created for {scope} with role {}", new.key_id, new.role.as_str()),
    )
    .after(summary.clone())
    .result(summary);
    // Workload keys travel in the tenant's snapshot: a new one is a new
    // snapshot version, so edge agents accept it.
    Ok(if new.role == ActorRole::Workload { effect.touches_snapshot() } else { effect })
}

/// `REVOKE_API_KEY`.
pub(crate) fn revoke_api_key(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    key_id: &str,
    reason: &str,
) -> Result<Effect, Refusal> {
    let Some(record) = domain.api_keys.get_mut(key_id) else {
        return Err(Refusal::not_found(format!("unknown API key `{key_id}`")));
    };
    let mut errors = Vec::new();
    check_text(&mut errors, "reason", reason);
    Refusal::check(errors)?;
    if record.revoked.is_some() {
        return Err(Refusal::conflict(format!("API key `{key_id}` is already revoked")));
    }
    let before = to_json(&record.summary());
    record.revoked =
        Some(Revocation { at_ms: ctx.at_ms, by: ctx.actor.actor_id.clone(), reason: reason.to_owned() });
    let after = to_json(&record.summary());
    let effect = Effect::new(AuditAction::ApiKeyRevoked, format!("API key `{key_id}` revoked: {reason}"))
        .before(before)
        .after(after.clone())
        .result(after);
    // A revoked workload key leaves the next snapshot: edge agents refuse
    // it once they have that version.
    Ok(if record.role == ActorRole::Workload { effect.touches_snapshot() } else { effect })
}
