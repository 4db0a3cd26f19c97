//! Governance state (issue 5; seed GAP-069 kill switch, GAP-070 degraded
//! mode, INV-004): one global setting and optional per-tenant settings,
//! versioned together, changed only through Raft.
//!
//! | mode | new runs | in-flight runs |
//! |---|---|---|
//! | `ENFORCING` | decided | decided |
//! | `DEGRADED` | refused (503, reason, who) | continue; outcomes downgraded to WARN, flagged |
//! | `DISABLED` | allowed | decisions computed and recorded `BYPASSED`, not enforced |
//! | `HALTED` | refused | KILLed at once |
//!
//! How a global and a tenant setting combine ([`effective_mode`]): HALTED
//! anywhere wins; then DEGRADED anywhere; otherwise a tenant's own setting
//! (ENFORCING or DISABLED) wins over the global one, and an unset tenant
//! follows the global one. So a tenant can be made stricter than the
//! cluster, or disabled alone, but never less restricted than a global
//! HALT or DEGRADED.
//!
//! A setting may carry an expiry (`ttl`): the leader proposes
//! `EXPIRE_GOVERNANCE` once it passes, returning the global setting to
//! ENFORCING and removing an expired tenant setting, itself audited.

use std::collections::BTreeMap;

use aos_core::FieldError;
use serde::{Deserialize, Serialize};

use crate::audit::AuditAction;
use crate::domain::Domain;
use crate::effect::{Ctx, Effect, Refusal};
use crate::ids::check_text;
use crate::serde_compat::to_json;

/// Longest TTL accepted: 7 days.
pub const MAX_TTL_MS: u64 = 7 * 24 * 3_600_000;

/// A governance mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GovernanceMode {
    /// Normal enforcement.
    Enforcing,
    /// New runs refused; in-flight outcomes downgraded to WARN.
    Degraded,
    /// Governance bypassed; decisions recorded as BYPASSED.
    Disabled,
    /// Emergency stop: in-flight runs killed, new runs refused.
    Halted,
}

impl GovernanceMode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GovernanceMode::Enforcing => "ENFORCING",
            GovernanceMode::Degraded => "DEGRADED",
            GovernanceMode::Disabled => "DISABLED",
            GovernanceMode::Halted => "HALTED",
        }
    }
}

/// One setting (global or a tenant's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceSetting {
    /// The mode.
    pub mode: GovernanceMode,
    /// Why it was set.
    pub reason: String,
    /// Actor id that set it.
    pub set_by: String,
    /// Unix ms.
    pub set_at_ms: u64,
    /// When it lapses (back to ENFORCING / inherit), if ever.
    pub expires_at_ms: Option<u64>,
    /// The governance version that introduced it.
    pub version: u64,
}

impl GovernanceSetting {
    fn initial() -> GovernanceSetting {
        GovernanceSetting {
            mode: GovernanceMode::Enforcing,
            reason: "initial state".to_owned(),
            set_by: "control-plane".to_owned(),
            set_at_ms: 0,
            expires_at_ms: None,
            version: 0,
        }
    }
}

/// The replicated governance state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Governance {
    /// Bumped by every change, global or tenant.
    version: u64,
    global: GovernanceSetting,
    tenants: BTreeMap<String, GovernanceSetting>,
}

impl Default for Governance {
    fn default() -> Self {
        Governance { version: 0, global: GovernanceSetting::initial(), tenants: BTreeMap::new() }
    }
}

/// Combines a global and a tenant mode (see the module table).
pub fn effective_mode(global: GovernanceMode, tenant: Option<GovernanceMode>) -> GovernanceMode {
    use GovernanceMode::{Degraded, Halted};
    let modes = [Some(global), tenant];
    if modes.contains(&Some(Halted)) {
        Halted
    } else if modes.contains(&Some(Degraded)) {
        Degraded
    } else {
        tenant.unwrap_or(global)
    }
}

impl Governance {
    /// The version of the whole governance state.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The global setting.
    pub fn global(&self) -> &GovernanceSetting {
        &self.global
    }

    /// A tenant's own setting, if it has one.
    pub fn tenant(&self, tenant_id: &str) -> Option<&GovernanceSetting> {
        self.tenants.get(tenant_id)
    }

    /// Every tenant setting.
    pub fn tenants(&self) -> &BTreeMap<String, GovernanceSetting> {
        &self.tenants
    }

    /// The mode a tenant's agents enforce.
    pub fn effective(&self, tenant_id: &str) -> GovernanceMode {
        effective_mode(self.global.mode, self.tenant(tenant_id).map(|s| s.mode))
    }

    /// The effective mode for a tenant with the setting it comes from
    /// (the tenant's own when that decides it, else the global one).
    pub fn effective_setting(&self, tenant_id: &str) -> (GovernanceMode, &GovernanceSetting) {
        let mode = self.effective(tenant_id);
        let source = match self.tenant(tenant_id) {
            Some(own) if own.mode == mode => own,
            _ => &self.global,
        };
        (mode, source)
    }

    /// Whether any setting's expiry is at or before `now_ms`.
    pub fn lapsed(&self, now_ms: u64) -> bool {
        std::iter::once(&self.global)
            .chain(self.tenants.values())
            .any(|s| s.expires_at_ms.is_some_and(|t| t <= now_ms))
    }
}

/// What `SET_GOVERNANCE` carries.
pub(crate) struct NewSetting<'a> {
    pub(crate) tenant_id: Option<&'a str>,
    pub(crate) mode: GovernanceMode,
    pub(crate) reason: &'a str,
    pub(crate) ttl_ms: Option<u64>,
}

pub(crate) fn set_governance(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    new: &NewSetting<'_>,
) -> Result<Effect, Refusal> {
    let mut errors = Vec::new();
    check_text(&mut errors, "reason", new.reason);
    if let Some(ttl) = new.ttl_ms
        && (ttl == 0 || ttl > MAX_TTL_MS)
    {
        errors.push(FieldError::new("ttl_ms", format!("must be 1..={MAX_TTL_MS} ms, got {ttl}")));
    }
    Refusal::check(errors)?;
    if let Some(tenant_id) = new.tenant_id {
        domain.tenant(tenant_id)?;
    }
    let governance = &mut domain.governance;
    governance.version = governance.version.saturating_add(1);
    let setting = GovernanceSetting {
        mode: new.mode,
        reason: new.reason.to_owned(),
        set_by: ctx.actor.actor_id.clone(),
        set_at_ms: ctx.at_ms,
        expires_at_ms: new.ttl_ms.map(|ttl| ctx.at_ms.saturating_add(ttl)),
        version: governance.version,
    };
    let after = to_json(&setting);
    let version = governance.version;
    let (before, scope) = match new.tenant_id {
        None => (Some(std::mem::replace(&mut governance.global, setting)), "global".to_owned()),
        Some(tenant_id) => {
            (governance.tenants.insert(tenant_id.to_owned(), setting), format!("tenant `{tenant_id}`"))
        }
    };
    critical_records(domain, new.tenant_id, ctx.at_ms, version, new.mode, new.reason, &ctx.actor.actor_id);
    let mut effect = Effect::new(
        AuditAction::GovernanceChanged,
        format!("governance {scope} set to {} (version {}): {}", new.mode.as_str(), version, new.reason),
    )
    .after(after.clone())
    .result(serde_json::json!({ "governance_version": version, "setting": after }));
    if let Some(before) = before {
        effect = effect.before(to_json(&before));
    }
    Ok(effect)
}

/// A CRITICAL system record of the change in the log of every tenant it
/// concerns (all of them for a global change), so each tenant's logs say
/// when and why governance changed under it.
fn critical_records(
    domain: &mut Domain,
    tenant_id: Option<&str>,
    at_ms: u64,
    version: u64,
    mode: GovernanceMode,
    reason: &str,
    set_by: &str,
) {
    let tenants: Vec<String> = match tenant_id {
        Some(t) => vec![t.to_owned()],
        None => domain.tenants.keys().cloned().collect(),
    };
    let scope = if tenant_id.is_some() { "TENANT" } else { "GLOBAL" };
    for tenant in tenants {
        let body = serde_json::json!({
            "kind": "SYSTEM_RECORD",
            "event": "GOVERNANCE_CHANGED",
            "severity": "CRITICAL",
            "scope": scope,
            "mode": mode.as_str(),
            "effective": domain.governance.effective(&tenant).as_str(),
            "governance_version": version,
            "reason": reason,
            "set_by": set_by,
            "tenant_id": tenant,
        });
        domain.activity.file_system_record(&tenant, format!("governance-{version}-{tenant}"), at_ms, body);
    }
}

pub(crate) fn expire_governance(domain: &mut Domain, ctx: &Ctx<'_>) -> Result<Effect, Refusal> {
    let governance = &mut domain.governance;
    if !governance.lapsed(ctx.at_ms) {
        return Err(Refusal::conflict("no governance setting has lapsed".to_owned()));
    }
    governance.version = governance.version.saturating_add(1);
    let version = governance.version;
    let mut lapsed = Vec::new();
    if governance.global.expires_at_ms.is_some_and(|t| t <= ctx.at_ms) {
        lapsed.push(format!("global {}", governance.global.mode.as_str()));
        governance.global = GovernanceSetting {
            reason: format!("{} expired", governance.global.mode.as_str()),
            set_at_ms: ctx.at_ms,
            version,
            ..GovernanceSetting::initial()
        };
    }
    let expired: Vec<String> = governance
        .tenants
        .iter()
        .filter(|(_, s)| s.expires_at_ms.is_some_and(|t| t <= ctx.at_ms))
        .map(|(t, _)| t.clone())
        .collect();
    for tenant_id in expired {
        if let Some(setting) = governance.tenants.remove(&tenant_id) {
            lapsed.push(format!("tenant `{tenant_id}` {}", setting.mode.as_str()));
        }
    }
    Ok(Effect::new(
        AuditAction::GovernanceExpired,
        format!("governance settings expired (version {version}): {}", lapsed.join(", ")),
    )
    .result(serde_json::json!({ "governance_version": version, "expired": lapsed })))
}

#[cfg(test)]
mod tests;
