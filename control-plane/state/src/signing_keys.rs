//! The cluster's snapshot signing keys as replicated state: which public
//! keys edge agents should trust and which one signs (key rotation).
//!
//! Private keys never enter the state: each node loads them from its
//! environment or key files, and signs with the one the state names as
//! active. Because the choice is replicated, every node signs a given
//! snapshot version with the same key and serves the same bytes.
//!
//! Rotation, as an operator runs it: generate a key, give it to every node
//! (restart each with the extra key), `ADD_SIGNING_KEY` (trusted, not yet
//! signing — agents learn it), `ACTIVATE_SIGNING_KEY` (it signs from now
//! on; every tenant's snapshot is reissued so agents move off the old
//! signature), and finally `RETIRE_SIGNING_KEY` for the old one.

use std::collections::BTreeMap;

use aos_core::FieldError;
use aos_core::snapshot::TrustedKeys;
use serde::{Deserialize, Serialize};

use crate::audit::AuditAction;
use crate::domain::{Domain, Revocation};
use crate::effect::{Ctx, Effect, Refusal};
use crate::ids::check_text;
use crate::serde_compat::to_json;

/// Every signing key the cluster has known, by key id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SigningKeys {
    keys: BTreeMap<String, SigningKeyRecord>,
    /// The key that signs new snapshots.
    active: Option<String>,
}

/// One public signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    /// Key id derived from the public key.
    pub key_id: String,
    /// The ed25519 public key, lowercase hex.
    pub public_key: String,
    /// When it was added (Unix ms).
    pub added_at_ms: u64,
    /// Who added it.
    pub added_by: String,
    /// When it stopped being trusted; `None` while trusted.
    pub retired: Option<Revocation>,
}

/// A key as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SigningKeyView<'a> {
    /// The record.
    #[serde(flatten)]
    pub record: &'a SigningKeyRecord,
    /// `active` (signs), `trusted` (verifies only) or `retired`.
    pub state: &'static str,
}

impl SigningKeys {
    /// The id of the key that signs new snapshots.
    pub fn active(&self) -> Option<&str> {
        self.active.as_deref()
    }

    /// Every key with its state, ordered by key id.
    pub fn list(&self) -> Vec<SigningKeyView<'_>> {
        self.keys.values().map(|record| SigningKeyView { record, state: self.state_of(record) }).collect()
    }

    /// The public keys agents should trust (active and trusted, not
    /// retired), hex.
    pub fn trusted_public_keys(&self) -> Vec<&str> {
        self.keys.values().filter(|r| r.retired.is_none()).map(|r| r.public_key.as_str()).collect()
    }

    fn state_of(&self, record: &SigningKeyRecord) -> &'static str {
        if record.retired.is_some() {
            "retired"
        } else if self.active.as_deref() == Some(record.key_id.as_str()) {
            "active"
        } else {
            "trusted"
        }
    }
}

/// `ADD_SIGNING_KEY`: trust a new public key. The first key ever added
/// becomes the signer (cluster bootstrap).
pub(crate) fn add_signing_key(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    public_key: &str,
) -> Result<Effect, Refusal> {
    let mut probe = TrustedKeys::new();
    let key_id = probe.insert_hex(public_key).map_err(|e| {
        Refusal::invalid(vec![FieldError::new("public_key", format!("not an ed25519 public key: {e}"))])
    })?;
    let key_id = key_id.as_str().to_owned();
    let keys = &mut domain.signing_keys;
    if let Some(existing) = keys.keys.get(&key_id) {
        let why =
            if existing.retired.is_some() { "was retired and cannot return" } else { "is already trusted" };
        return Err(Refusal::conflict(format!("signing key `{key_id}` {why}")));
    }
    let record = SigningKeyRecord {
        key_id: key_id.clone(),
        public_key: public_key.trim().to_ascii_lowercase(),
        added_at_ms: ctx.at_ms,
        added_by: ctx.actor.actor_id.clone(),
        retired: None,
    };
    keys.keys.insert(key_id.clone(), record);
    let first = keys.active.is_none();
    if first {
        keys.active = Some(key_id.clone());
    }
    let view = to_json(&keys.list().into_iter().find(|v| v.record.key_id == key_id));
    let detail = if first {
        format!("signing key `{key_id}` added and signing (first key)")
    } else {
        format!("signing key `{key_id}` added (trusted, not signing)")
    };
    Ok(Effect::new(AuditAction::SigningKeyAdded, detail).after(view.clone()).result(view))
}

/// `ACTIVATE_SIGNING_KEY`: make a trusted key the signer. The caller
/// reissues every tenant snapshot that exists.
pub(crate) fn activate_signing_key(domain: &mut Domain, key_id: &str) -> Result<Effect, Refusal> {
    let keys = &mut domain.signing_keys;
    let Some(record) = keys.keys.get(key_id) else {
        return Err(Refusal::not_found(format!("unknown signing key `{key_id}`")));
    };
    if record.retired.is_some() {
        return Err(Refusal::conflict(format!("signing key `{key_id}` is retired")));
    }
    if keys.active.as_deref() == Some(key_id) {
        return Err(Refusal::conflict(format!("signing key `{key_id}` is already the signer")));
    }
    let before = keys.active.replace(key_id.to_owned());
    let tenants: Vec<String> = domain
        .tenants
        .values()
        .filter(|t| t.tenant.snapshot_version > 0)
        .map(|t| t.tenant.tenant_id.clone())
        .collect();
    Ok(Effect::new(
        AuditAction::SigningKeyActivated,
        format!("signing key `{key_id}` now signs snapshots; {} tenant snapshot(s) reissued", tenants.len()),
    )
    .before(serde_json::json!({ "active": before }))
    .after(serde_json::json!({ "active": key_id }))
    .result(serde_json::json!({ "active": key_id, "reissued_tenants": tenants.len() }))
    .reissue(tenants))
}

/// `RETIRE_SIGNING_KEY`: stop trusting a key that no longer signs.
pub(crate) fn retire_signing_key(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    key_id: &str,
    reason: &str,
) -> Result<Effect, Refusal> {
    let mut errors = Vec::new();
    check_text(&mut errors, "reason", reason);
    Refusal::check(errors)?;
    let keys = &mut domain.signing_keys;
    if keys.active.as_deref() == Some(key_id) {
        return Err(Refusal::conflict(format!(
            "signing key `{key_id}` is the signer; activate another key before retiring it"
        )));
    }
    let Some(record) = keys.keys.get_mut(key_id) else {
        return Err(Refusal::not_found(format!("unknown signing key `{key_id}`")));
    };
    if record.retired.is_some() {
        return Err(Refusal::conflict(format!("signing key `{key_id}` is already retired")));
    }
    record.retired =
        Some(Revocation { at_ms: ctx.at_ms, by: ctx.actor.actor_id.clone(), reason: reason.to_owned() });
    let after = to_json(&*record);
    Ok(Effect::new(AuditAction::SigningKeyRetired, format!("signing key `{key_id}` retired: {reason}"))
        .after(after.clone())
        .result(after))
}

/// `REISSUE_SNAPSHOTS`: give the named tenants a new snapshot version at
/// this proposal's time, so agents receive a fresh `not_after` before the
/// current one passes. Unknown tenants and tenants without a snapshot are
/// skipped, not refused: the leader proposes this from its own schedule
/// and a tenant may have been created or changed meanwhile.
pub(crate) fn reissue_snapshots(domain: &Domain, tenant_ids: &[String]) -> Result<Effect, Refusal> {
    if tenant_ids.is_empty() {
        return Err(Refusal::invalid(vec![FieldError::new("tenant_ids", "must name at least one tenant")]));
    }
    let due: Vec<String> = tenant_ids
        .iter()
        .filter(|t| domain.tenants.get(t.as_str()).is_some_and(|s| s.tenant.snapshot_version > 0))
        .cloned()
        .collect();
    Ok(Effect::new(
        AuditAction::SnapshotsReissued,
        format!("{} tenant snapshot(s) reissued before expiry", due.len()),
    )
    .result(serde_json::json!({ "reissued": due }))
    .reissue(due))
}

#[cfg(test)]
mod tests;
