//! Policies with their full version history: `APPLY_POLICY` and
//! `TRANSITION_POLICY`.
//!
//! - Every apply is validated by aos-core's single validator
//!   ([`aos_core::compile::validate_policy`]) with paths under `policy`, so
//!   anything stored can later be put in a snapshot.
//! - A new id creates version 1 (`POLICY_CREATED`); the document's status
//!   is kept but must be `DRAFT` or `ACTIVE`.
//! - An existing id creates version latest+1. The lifecycle status (and its
//!   reason) carries over from the previous version: an edit never silently
//!   activates or deactivates a policy. The entry is `LIMIT_ADJUSTED` when
//!   the `threshold_hash` (GAP-022) changed and `POLICY_UPDATED` otherwise.
//!   Content identical to the latest version creates no version.
//! - Lifecycle moves go through [`PolicyStatus::transition`] (GAP-020,
//!   GAP-021) and change the latest version's status in place: the status
//!   is the policy's state, not part of its authored content, so it does
//!   not mint a version. Earlier versions keep the status they had when
//!   they were superseded.

use aos_core::FieldError;
use aos_core::compile::validate_policy;
use aos_core::policy::{LifecycleError, Policy, PolicyStatus, ScopeType};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::AuditAction;
use crate::domain::Domain;
use crate::effect::{Ctx, Effect, Refusal};
use crate::serde_compat::to_json;

/// One stored version of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// The policy as stored: `version` assigned by the control plane,
    /// `status` as described in the module docs.
    pub policy: Policy,
    /// [`Policy::threshold_hash_hex`] of this version (GAP-022).
    pub threshold_hash: String,
    /// Unix milliseconds of the apply that created this version.
    pub created_at_ms: u64,
    /// The actor who applied it.
    pub created_by: String,
    /// The ledger entry recording its creation.
    pub audit_seq: u64,
}

/// A policy and every version of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// Owning tenant.
    pub tenant_id: String,
    /// Policy id, unique within the tenant.
    pub policy_id: String,
    /// The latest version; its status is the policy's status.
    pub current: PolicyVersion,
    /// Earlier versions, oldest first (`previous[i]` is version `i + 1`).
    pub previous: Vec<PolicyVersion>,
}

impl PolicyRecord {
    /// The latest version of the policy.
    pub fn latest(&self) -> &Policy {
        &self.current.policy
    }

    /// The latest version number.
    pub fn latest_version(&self) -> u64 {
        self.current.policy.version
    }

    /// The policy's lifecycle status.
    pub fn status(&self) -> PolicyStatus {
        self.current.policy.status
    }

    /// Version `version`, if it exists.
    pub fn version(&self, version: u64) -> Option<&PolicyVersion> {
        self.versions().find(|v| v.policy.version == version)
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> impl Iterator<Item = &PolicyVersion> {
        self.previous.iter().chain(std::iter::once(&self.current))
    }
}

/// `Applied::detail` of an apply.
#[derive(Debug, Serialize)]
struct ApplySummary<'a> {
    policy_id: &'a str,
    version: u64,
    status: PolicyStatus,
    threshold_hash: &'a str,
    created: bool,
    changed: bool,
    limit_adjusted: bool,
}

/// `APPLY_POLICY`.
pub(crate) fn apply_policy(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    policy: &Policy,
) -> Result<Effect, Refusal> {
    crate::data_access::check_policy_planes(domain, tenant_id, policy)?;
    let tenant = domain.tenant_mut(tenant_id)?;
    match tenant.policies.get_mut(&policy.id) {
        Some(record) => update(record, ctx, policy),
        None => {
            let record = create(tenant_id, ctx, policy)?;
            let effect = created_effect(&record);
            tenant.policies.insert(record.policy_id.clone(), record);
            Ok(effect)
        }
    }
}

fn create(tenant_id: &str, ctx: &Ctx<'_>, policy: &Policy) -> Result<PolicyRecord, Refusal> {
    let mut candidate = policy.clone();
    candidate.version = 1;
    let mut errors = validate(&candidate, tenant_id);
    if !matches!(candidate.status, PolicyStatus::Draft | PolicyStatus::Active) {
        errors.push(FieldError::new(
            "policy.status",
            format!("a new policy must be DRAFT or ACTIVE, got {}", candidate.status),
        ));
    }
    Refusal::check(errors)?;
    Ok(PolicyRecord {
        tenant_id: tenant_id.to_owned(),
        policy_id: candidate.id.clone(),
        current: new_version(candidate, ctx),
        previous: Vec::new(),
    })
}

fn created_effect(record: &PolicyRecord) -> Effect {
    let current = &record.current;
    let summary = ApplySummary {
        policy_id: &record.policy_id,
        version: 1,
        status: current.policy.status,
        threshold_hash: &current.threshold_hash,
        created: true,
        changed: true,
        limit_adjusted: false,
    };
    Effect::new(
        AuditAction::PolicyCreated,
        format!(
            "policy `{}` created as version 1 ({}), threshold hash {}",
            record.policy_id, current.policy.status, current.threshold_hash
        ),
    )
    .after(version_json(current))
    .result(to_json(&summary))
    .touches_snapshot()
}

fn update(record: &mut PolicyRecord, ctx: &Ctx<'_>, policy: &Policy) -> Result<Effect, Refusal> {
    let previous = &record.current.policy;
    if previous.status == PolicyStatus::Retired {
        return Err(Refusal::conflict(format!(
            "policy `{}` is RETIRED; RETIRED is terminal, create a new policy instead",
            record.policy_id
        )));
    }
    let mut candidate = policy.clone();
    candidate.status = previous.status;
    candidate.status_reason.clone_from(&previous.status_reason);
    candidate.version = previous.version;
    let unchanged = candidate == *previous;
    let Some(next) = previous.version.checked_add(1) else {
        return Err(Refusal::conflict(format!("policy `{}` has no version numbers left", record.policy_id)));
    };
    candidate.version = next;
    Refusal::check(validate(&candidate, &record.tenant_id))?;

    if unchanged {
        let current = &record.current;
        let summary = ApplySummary {
            policy_id: &record.policy_id,
            version: current.policy.version,
            status: current.policy.status,
            threshold_hash: &current.threshold_hash,
            created: false,
            changed: false,
            limit_adjusted: false,
        };
        return Ok(Effect::new(
            AuditAction::PolicyUpdated,
            format!(
                "policy `{}` unchanged at version {}; no new version",
                record.policy_id, current.policy.version
            ),
        )
        .result(to_json(&summary)));
    }

    let version = new_version(candidate, ctx);
    let limit_adjusted = version.threshold_hash != record.current.threshold_hash;
    let before = version_json(&record.current);
    let after = version_json(&version);
    let detail = if limit_adjusted {
        format!(
            "policy `{}` updated to version {}; thresholds changed, threshold hash {} -> {}",
            record.policy_id, next, record.current.threshold_hash, version.threshold_hash
        )
    } else {
        format!(
            "policy `{}` updated to version {}; thresholds unchanged ({})",
            record.policy_id, next, version.threshold_hash
        )
    };
    let old = std::mem::replace(&mut record.current, version);
    record.previous.push(old);
    let current = &record.current;
    let summary = ApplySummary {
        policy_id: &record.policy_id,
        version: next,
        status: current.policy.status,
        threshold_hash: &current.threshold_hash,
        created: false,
        changed: true,
        limit_adjusted,
    };
    let action = if limit_adjusted { AuditAction::LimitAdjusted } else { AuditAction::PolicyUpdated };
    Ok(Effect::new(action, detail).before(before).after(after).result(to_json(&summary)).touches_snapshot())
}

/// aos-core validation plus the tenant rule a snapshot enforces: a
/// `TENANT` scope may only name the owning tenant.
fn validate(policy: &Policy, tenant_id: &str) -> Vec<FieldError> {
    let mut errors = validate_policy(policy, "policy").err().unwrap_or_default();
    if policy.scope.scope_type == ScopeType::Tenant {
        for (i, id) in policy.scope.ids.iter().enumerate() {
            if id != tenant_id {
                errors.push(FieldError::new(
                    format!("policy.scope.ids[{i}]"),
                    format!("names tenant {id:?} but the policy belongs to tenant {tenant_id:?}"),
                ));
            }
        }
    }
    errors
}

fn new_version(policy: Policy, ctx: &Ctx<'_>) -> PolicyVersion {
    PolicyVersion {
        threshold_hash: policy.threshold_hash_hex(),
        policy,
        created_at_ms: ctx.at_ms,
        created_by: ctx.actor.actor_id.clone(),
        audit_seq: ctx.audit_seq,
    }
}

/// A version as recorded in the ledger: the policy and its threshold hash.
fn version_json(version: &PolicyVersion) -> serde_json::Value {
    json!({ "policy": to_json(&version.policy), "threshold_hash": version.threshold_hash })
}

/// `TRANSITION_POLICY`.
pub(crate) fn transition_policy(
    domain: &mut Domain,
    tenant_id: &str,
    policy_id: &str,
    to: PolicyStatus,
    reason: Option<&str>,
) -> Result<Effect, Refusal> {
    let tenant = domain.tenant_mut(tenant_id)?;
    let Some(record) = tenant.policies.get_mut(policy_id) else {
        return Err(Refusal::not_found(format!("unknown policy `{policy_id}` in tenant `{tenant_id}`")));
    };
    let policy = &mut record.current.policy;
    let from = policy.status;
    let to = from.transition(to, reason).map_err(|e| match e {
        LifecycleError::IllegalTransition { .. } => Refusal::illegal_transition(e.to_string()),
        LifecycleError::ReasonRequired { .. } => {
            Refusal::invalid(vec![FieldError::new("reason", e.to_string())])
        }
    })?;
    let action = match to {
        PolicyStatus::Active => AuditAction::PolicyActivated,
        PolicyStatus::Suspended => AuditAction::PolicySuspended,
        PolicyStatus::Retired => AuditAction::PolicyRetired,
        // `transition` never allows a move to DRAFT.
        PolicyStatus::Draft => AuditAction::PolicyUpdated,
    };
    let before = status_json(policy);
    policy.status = to;
    policy.status_reason = reason.map(str::to_owned);
    let after = status_json(policy);
    let detail = match reason {
        Some(reason) => format!("policy `{policy_id}` version {}: {from} -> {to}: {reason}", policy.version),
        None => format!("policy `{policy_id}` version {}: {from} -> {to}", policy.version),
    };
    let result = json!({
        "policy_id": policy_id,
        "version": policy.version,
        "from": from,
        "to": to,
        "reason": reason,
    });
    Ok(Effect::new(action, detail).before(before).after(after).result(result).touches_snapshot())
}

fn status_json(policy: &Policy) -> serde_json::Value {
    json!({ "version": policy.version, "status": policy.status, "status_reason": policy.status_reason })
}

#[cfg(test)]
mod tests;
