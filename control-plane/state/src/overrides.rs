//! Policy overrides (GAP-034): `GRANT_OVERRIDE` and `REVOKE_OVERRIDE`.
//!
//! A grant is checked in three layers: its own fields (grantor is the
//! proposing actor, whose role may grant; a reason; a validity window of at
//! most [`PolicyOverride::MAX_DURATION_MS`] that has not already ended),
//! then the state (the policy exists and is `ACTIVE`, the id is new), and
//! finally aos-core's snapshot validator, so that a granted override can
//! never make the tenant's snapshot unbuildable. Revoked overrides are
//! kept, with their revocation, for the record.

use aos_core::policy::{Policy, PolicyOverride, PolicyStatus, ScopeType};
use aos_core::{FieldError, PolicySnapshot, SnapshotError};
use serde::{Deserialize, Serialize};

use crate::audit::AuditAction;
use crate::domain::{Domain, Revocation};
use crate::effect::{Ctx, Effect, Refusal};
use crate::ids::{check_id, check_text};
use crate::serde_compat::to_json;

/// A granted override and, once revoked, its revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideRecord {
    /// Owning tenant.
    pub tenant_id: String,
    /// The override as granted.
    pub policy_override: PolicyOverride,
    /// Unix milliseconds of the grant.
    pub granted_at_ms: u64,
    /// Set once revoked.
    pub revoked: Option<Revocation>,
}

impl OverrideRecord {
    /// Whether the override is in force at `at_ms`: not revoked and inside
    /// its validity window.
    pub fn is_in_force(&self, at_ms: u64) -> bool {
        self.revoked.is_none() && self.policy_override.is_override_active(at_ms)
    }

    /// Whether the override still matters at `at_ms`: not revoked and not
    /// yet expired (it may not have started). This is what a snapshot
    /// issued at `at_ms` carries; the edge agent checks the window itself.
    pub fn is_live(&self, at_ms: u64) -> bool {
        self.revoked.is_none() && at_ms < self.policy_override.expires_at_ms
    }
}

const PATH: &str = "policy_override";

/// `GRANT_OVERRIDE`.
pub(crate) fn grant_override(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    grant: &PolicyOverride,
) -> Result<Effect, Refusal> {
    let tenant = domain.tenant_mut(tenant_id)?;
    Refusal::check(check_fields(ctx, tenant_id, grant))?;
    let Some(policy) = tenant.policies.get(&grant.policy_id) else {
        return Err(Refusal::not_found(format!(
            "unknown policy `{}` in tenant `{tenant_id}`",
            grant.policy_id
        )));
    };
    let policy = policy.latest();
    if policy.status != PolicyStatus::Active {
        return Err(Refusal::conflict(format!(
            "policy `{}` is {}; only an ACTIVE policy can be overridden",
            grant.policy_id, policy.status
        )));
    }
    if tenant.overrides.contains_key(&grant.override_id) {
        return Err(Refusal::conflict(format!(
            "override `{}` already exists in tenant `{tenant_id}`",
            grant.override_id
        )));
    }
    Refusal::check(check_snapshot_rules(tenant_id, policy, grant))?;

    let record = OverrideRecord {
        tenant_id: tenant_id.to_owned(),
        policy_override: grant.clone(),
        granted_at_ms: ctx.at_ms,
        revoked: None,
    };
    let after = to_json(&record);
    tenant.overrides.insert(grant.override_id.clone(), record);
    let detail = format!(
        "override `{}` of policy `{}` granted by {} ({}) for [{}, {}): {}",
        grant.override_id,
        grant.policy_id,
        grant.granted_by.actor_id,
        grant.granted_by.role.as_str(),
        grant.starts_at_ms,
        grant.expires_at_ms,
        grant.reason
    );
    Ok(Effect::new(AuditAction::OverrideGranted, detail)
        .after(after.clone())
        .result(after)
        .touches_snapshot())
}

fn check_fields(ctx: &Ctx<'_>, tenant_id: &str, grant: &PolicyOverride) -> Vec<FieldError> {
    let at = |field: &str| format!("{PATH}.{field}");
    let mut errors = Vec::new();
    check_id(&mut errors, &at("override_id"), &grant.override_id);
    check_id(&mut errors, &at("policy_id"), &grant.policy_id);
    check_text(&mut errors, &at("reason"), &grant.reason);
    let grantor = &grant.granted_by;
    if grantor.actor_id != ctx.actor.actor_id {
        errors.push(FieldError::new(
            at("granted_by.actor_id"),
            format!("must be the proposing actor `{}`, got `{}`", ctx.actor.actor_id, grantor.actor_id),
        ));
    }
    if !grantor.role.can_grant_override() {
        errors.push(FieldError::new(
            at("granted_by.role"),
            format!("role {} may not grant overrides (admin or sre required)", grantor.role.as_str()),
        ));
    } else if grantor.role != ctx.actor.role {
        errors.push(FieldError::new(
            at("granted_by.role"),
            format!(
                "must be the proposing actor's role {}, got {}",
                ctx.actor.role.as_str(),
                grantor.role.as_str()
            ),
        ));
    }
    if grant.expires_at_ms <= grant.starts_at_ms {
        errors.push(FieldError::new(at("expires_at_ms"), "must be after starts_at_ms"));
    } else if grant.expires_at_ms - grant.starts_at_ms > PolicyOverride::MAX_DURATION_MS {
        errors.push(FieldError::new(
            at("expires_at_ms"),
            format!(
                "an override may last at most 7 days ({} ms), got {} ms",
                PolicyOverride::MAX_DURATION_MS,
                grant.expires_at_ms - grant.starts_at_ms
            ),
        ));
    } else if grant.expires_at_ms <= ctx.at_ms {
        errors.push(FieldError::new(
            at("expires_at_ms"),
            format!("the override would already have ended (now {})", ctx.at_ms),
        ));
    }
    if grant.scope.scope_type == ScopeType::Tenant {
        for (i, id) in grant.scope.ids.iter().enumerate() {
            if id != tenant_id {
                errors.push(FieldError::new(
                    format!("{PATH}.scope.ids[{i}]"),
                    format!("names tenant {id:?} but the override belongs to tenant {tenant_id:?}"),
                ));
            }
        }
    }
    errors
}

/// Runs the override through aos-core's snapshot validator, next to its
/// (valid, ACTIVE) policy, and reports its problems under `policy_override`.
fn check_snapshot_rules(tenant_id: &str, policy: &Policy, grant: &PolicyOverride) -> Vec<FieldError> {
    let probe = PolicySnapshot::new(
        tenant_id,
        1,
        grant.starts_at_ms,
        grant.expires_at_ms,
        vec![policy.clone()],
        vec![grant.clone()],
        Vec::new(),
    );
    match probe {
        Ok(_) => Vec::new(),
        Err(SnapshotError::Invalid(errors)) => errors
            .0
            .into_iter()
            .map(|mut e| {
                if let Some(rest) = e.path.strip_prefix("overrides[0]") {
                    e.path = format!("{PATH}{rest}");
                }
                e
            })
            .collect(),
        Err(other) => vec![FieldError::new(PATH, other.to_string())],
    }
}

/// `REVOKE_OVERRIDE`.
pub(crate) fn revoke_override(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    override_id: &str,
    reason: &str,
) -> Result<Effect, Refusal> {
    let tenant = domain.tenant_mut(tenant_id)?;
    let Some(record) = tenant.overrides.get_mut(override_id) else {
        return Err(Refusal::not_found(format!("unknown override `{override_id}` in tenant `{tenant_id}`")));
    };
    let mut errors = Vec::new();
    check_text(&mut errors, "reason", reason);
    Refusal::check(errors)?;
    if record.revoked.is_some() {
        return Err(Refusal::conflict(format!("override `{override_id}` is already revoked")));
    }
    let before = to_json(&record);
    record.revoked =
        Some(Revocation { at_ms: ctx.at_ms, by: ctx.actor.actor_id.clone(), reason: reason.to_owned() });
    let after = to_json(&record);
    Ok(Effect::new(AuditAction::OverrideRevoked, format!("override `{override_id}` revoked: {reason}"))
        .before(before)
        .after(after.clone())
        .result(after)
        .touches_snapshot())
}

#[cfg(test)]
mod tests;
