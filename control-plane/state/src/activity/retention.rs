//! Record retention per tenant (issue 8): how long the edge agents' records
//! are kept after they reached the control plane, and the pruning the
//! leader's retention job proposes.
//!
//! `SET_RETENTION` (tenant `admin`) sets or clears the maximum age.
//! `APPLY_RETENTION` (cluster operator: the leader's job) carries the
//! cutoff the leader computed, so every replica prunes the same records:
//! the longest prefix of the tenant's log received before the cutoff
//! (records are in arrival order; stopping at the first newer one keeps the
//! log contiguous, so `seq` arithmetic holds). Their ids and digests go
//! with them; instead the cutoff becomes a watermark: a record produced
//! before it that arrives later (a redelivery, a rewrite, an agent that was
//! away longer than the retention) is refused as expired, counted in the
//! ingest's ledger entry, so write-once holds across pruning.
//!
//! The audit ledger is never pruned. The `RETENTION_APPLIED` entry is the
//! checkpoint: chained to the ledger's head before the pruning, it records
//! how many records went, their seq range and a SHA-256 over their ids and
//! digests, so what was removed stays provable and `aosctl audit verify`
//! passes unchanged.

use serde::Serialize;
use serde_json::json;

use super::Activity;
use crate::audit::AuditAction;
use crate::domain::Domain;
use crate::effect::{Ctx, Effect, Refusal};

/// Shortest maximum age accepted.
pub const MIN_MAX_AGE_MS: u64 = 1_000;

/// A tenant's retention, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionView {
    /// Maximum age in seconds (`None`: kept forever).
    pub max_age_seconds: Option<u64>,
    /// Records pruned so far.
    pub pruned: u64,
    /// Records held.
    pub held: u64,
    /// The oldest held record's seq, if any.
    pub oldest_seq: Option<u64>,
}

impl Activity {
    /// The tenant's retention setting and counts.
    pub fn retention(&self, tenant_id: &str) -> RetentionView {
        let tenant = self.tenants.get(tenant_id);
        RetentionView {
            max_age_seconds: tenant.and_then(|t| t.max_age_ms).map(|ms| ms / 1000),
            pruned: tenant.map_or(0, |t| t.pruned),
            held: tenant.map_or(0, |t| t.records.len() as u64),
            oldest_seq: tenant.and_then(|t| t.records.first()).map(|r| r.seq),
        }
    }

    /// `(tenant, cutoff)` for every tenant with records older than its
    /// maximum age at `now_ms`: what the retention job proposes.
    pub fn due_for_retention(&self, now_ms: u64) -> Vec<(String, u64)> {
        self.tenants
            .iter()
            .filter_map(|(tenant_id, t)| {
                let cutoff = now_ms.checked_sub(t.max_age_ms?)?;
                let oldest = t.records.first()?;
                (oldest.ingested_at_ms < cutoff).then(|| (tenant_id.clone(), cutoff))
            })
            .collect()
    }
}

/// `SET_RETENTION`.
pub(crate) fn set_retention(
    domain: &mut Domain,
    tenant_id: &str,
    max_age_seconds: Option<u64>,
) -> Result<Effect, Refusal> {
    domain.tenant(tenant_id)?;
    let max_age_ms = match max_age_seconds {
        Some(secs) => {
            let ms = secs.saturating_mul(1000);
            if ms < MIN_MAX_AGE_MS {
                return Err(Refusal::invalid(vec![aos_core::FieldError::new(
                    "max_age_seconds",
                    format!("must be at least {} (or null to keep records forever)", MIN_MAX_AGE_MS / 1000),
                )]));
            }
            Some(ms)
        }
        None => None,
    };
    let tenant = domain.activity.tenants.entry(tenant_id.to_owned()).or_default();
    let before = json!({ "max_age_seconds": tenant.max_age_ms.map(|ms| ms / 1000) });
    tenant.max_age_ms = max_age_ms;
    let after = json!({ "max_age_seconds": max_age_seconds });
    let detail = match max_age_seconds {
        Some(secs) => format!("records of tenant `{tenant_id}` are kept {secs} s after they arrive"),
        None => format!("records of tenant `{tenant_id}` are kept forever"),
    };
    Ok(Effect::new(AuditAction::RetentionSet, detail).before(before).after(after.clone()).result(after))
}

/// `APPLY_RETENTION`: prunes the tenant's records received before
/// `cutoff_ms` (see the module docs).
pub(crate) fn apply_retention(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    cutoff_ms: u64,
) -> Result<Effect, Refusal> {
    domain.tenant(tenant_id)?;
    let forever = || Refusal::conflict(format!("tenant `{tenant_id}` keeps its records forever"));
    // Looked up, not created: a refusal must leave the state as it was.
    let tenant = domain.activity.tenants.get_mut(tenant_id).ok_or_else(forever)?;
    let Some(max_age_ms) = tenant.max_age_ms else {
        return Err(forever());
    };
    // The leader computed the cutoff; it may not reach past the setting.
    if cutoff_ms > ctx.at_ms.saturating_sub(max_age_ms) {
        return Err(Refusal::conflict(format!(
            "cutoff {cutoff_ms} is later than now minus the maximum age ({})",
            ctx.at_ms.saturating_sub(max_age_ms)
        )));
    }
    let count = tenant.records.iter().take_while(|r| r.ingested_at_ms < cutoff_ms).count();
    let mut digest = <sha2::Sha256 as sha2::Digest>::new();
    for record in tenant.records.iter().take(count) {
        let body = tenant.ids.get(&record.record_id).flatten().map(hex::encode);
        let body = body.as_deref().unwrap_or("");
        sha2::Digest::update(
            &mut digest,
            format!("{}\0{}\0{body}\n", record.seq, record.record_id).as_bytes(),
        );
    }
    let first = tenant.records.first().map(|r| r.seq);
    let last = count.checked_sub(1).and_then(|i| tenant.records.get(i)).map(|r| r.seq);
    for record in tenant.records.remove_front(count) {
        tenant.ids.remove(&record.record_id);
    }
    tenant.pruned += count as u64;
    tenant.pruned_before_ms = tenant.pruned_before_ms.max(cutoff_ms);
    let pruned_sha256 = hex::encode(sha2::Digest::finalize(digest));
    let after = json!({
        "cutoff_ms": cutoff_ms,
        "pruned": count,
        "first_seq": first.filter(|_| count > 0),
        "last_seq": last,
        "pruned_sha256": pruned_sha256,
        "held": tenant.records.len(),
    });
    Ok(Effect::new(
        AuditAction::RetentionApplied,
        format!(
            "{count} records of tenant `{tenant_id}` received before {cutoff_ms} pruned (sha256 of their ids and digests {pruned_sha256}); this entry checkpoints the ledger head before the pruning"
        ),
    )
    .after(after.clone())
    .result(after))
}
