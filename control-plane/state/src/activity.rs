//! Records ingested from edge agents: LLM run records, control events,
//! incidents and system records (Activity and Logs domains), kept per
//! tenant in arrival order and de-duplicated by record id.
//!
//! `INGEST_RECORDS` is proposed by the gateway for an authenticated agent.
//! The tenant a record is filed under is the *agent's* tenant from the
//! replicated registry, never a field of the record, so an agent cannot
//! write into another tenant (INV-003). A record id seen before is counted
//! as a duplicate and changes nothing (redelivery after a lost ack). A
//! record that is not a JSON object with a `kind` is kept, marked
//! `MALFORMED` with the reason, rather than dropped: evidence is never
//! silently lost, and a bad record cannot wedge the agent's outbox.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use aos_core::FieldError;

use crate::audit::AuditAction;
use crate::domain::Domain;
use crate::effect::{Ctx, Effect, Refusal};
use crate::incidents::Reported;

/// Most records one `INGEST_RECORDS` may carry.
pub const MAX_BATCH: usize = 2_000;
/// Largest record (encoded JSON) accepted as is; larger ones are kept as
/// `MALFORMED` with their size and hash.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;
/// Kind of the records that carry a run's state.
pub const RUN_STATE: &str = "RUN_STATE";

/// What [`Activity::metrics`] and the run queries read of a record.
#[derive(Default, Deserialize)]
struct Tallied {
    #[serde(default, deserialize_with = "lenient_string")]
    status: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    incident_kind: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    input_tokens: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    output_tokens: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    cost_micros: u64,
}

/// Whether a `RUN_STATE` record says the run has not ended.
fn is_live(record: &StoredRecord) -> bool {
    matches!(record.body.fields::<Tallied>().status.as_deref(), Some("running" | "paused" | "queued"))
}

/// Longest record id.
const MAX_RECORD_ID: usize = 128;

/// One record as the agent sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestRecord {
    /// The agent's record id (idempotency key).
    pub record_id: String,
    /// The record as sent (JSON, unless the agent sent something else).
    pub json: RecordText,
}

/// A committed record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// Position in the tenant's record log, from 1.
    pub seq: u64,
    /// The agent's record id.
    pub record_id: String,
    /// The edge agent that sent it.
    pub edge_agent_id: String,
    /// `LLM_RUN_RECORD`, `CONTROL_EVENT`, `INCIDENT`, `SYSTEM_RECORD`, …,
    /// or `MALFORMED`.
    pub kind: String,
    /// The run, if the record belongs to one.
    pub run_id: Option<String>,
    /// When the agent produced it (Unix ms; 0 if it did not say).
    pub at_ms: u64,
    /// When it was committed (the proposal's time).
    pub ingested_at_ms: u64,
    /// The record as sent, filed under its tenant (for `MALFORMED`: the
    /// reason, size and hash).
    pub body: RecordBody,
}

/// Every tenant's records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    tenants: BTreeMap<String, TenantRecords>,
}

use self::ids::{Digest, RecordIds, Slot};

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "TenantRecordsWire")]
struct TenantRecords {
    records: RecordLog,
    /// Every record id held, with the SHA-256 of the record as first sent:
    /// a record is written once, and a different body under a known id is
    /// a rewrite, refused and audited (records committed before digests
    /// were kept have none and are only de-duplicated). One map rather
    /// than a set of ids beside a map of digests: one lookup and one key
    /// per record. Cheap to copy (see `ids.rs`).
    ids: RecordIds,
    /// Records pruned from the front by retention: `records[0].seq` is
    /// `pruned + 1`.
    pruned: u64,
    /// How long records are kept after they reached the control plane
    /// (`None`: forever).
    max_age_ms: Option<u64>,
    /// Records produced before this (Unix ms) were pruned or are due: a
    /// record this old arriving now is refused as expired, so a pruned
    /// record cannot come back, rewritten or not.
    pruned_before_ms: u64,
}

/// [`TenantRecords`] as encoded in snapshots: ids as a set, digests (hex)
/// as a map beside it, as before the two were one map.
#[derive(Deserialize)]
struct TenantRecordsWire {
    records: RecordLog,
    ids: BTreeSet<String>,
    #[serde(default)]
    digests: BTreeMap<String, String>,
    #[serde(default)]
    pruned: u64,
    #[serde(default)]
    max_age_ms: Option<u64>,
    #[serde(default)]
    pruned_before_ms: u64,
}

impl From<TenantRecordsWire> for TenantRecords {
    fn from(wire: TenantRecordsWire) -> Self {
        let mut digests = wire.digests;
        let ids = wire
            .ids
            .into_iter()
            .map(|id| {
                let digest = digests.remove(&id).and_then(|hex| {
                    let mut digest = [0u8; 32];
                    hex::decode_to_slice(hex, &mut digest).ok().map(|()| digest)
                });
                (id, digest)
            })
            .collect();
        TenantRecords {
            records: wire.records,
            ids,
            pruned: wire.pruned,
            max_age_ms: wire.max_age_ms,
            pruned_before_ms: wire.pruned_before_ms,
        }
    }
}

impl Serialize for TenantRecords {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        /// The ids, as a set.
        struct Ids<'a>(&'a [(&'a String, &'a Option<Digest>)]);
        impl Serialize for Ids<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter().map(|(id, _)| id))
            }
        }
        /// The digests, by id, in hex.
        struct Digests<'a>(&'a [(&'a String, &'a Option<Digest>)]);
        impl Serialize for Digests<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(
                    self.0.iter().filter_map(|(id, digest)| digest.as_ref().map(|d| (id, hex::encode(d)))),
                )
            }
        }
        // In id order, as the maps were: the encoding must not depend on the layout in memory.
        let ids = self.ids.sorted();
        let mut out = serializer.serialize_struct("TenantRecords", 6)?;
        out.serialize_field("records", &self.records)?;
        out.serialize_field("ids", &Ids(&ids))?;
        out.serialize_field("digests", &Digests(&ids))?;
        out.serialize_field("pruned", &self.pruned)?;
        out.serialize_field("max_age_ms", &self.max_age_ms)?;
        out.serialize_field("pruned_before_ms", &self.pruned_before_ms)?;
        out.end()
    }
}

impl TenantRecords {
    /// The seq the next record gets.
    fn next_seq(&self) -> u64 {
        self.pruned + self.records.len() as u64 + 1
    }
}

/// What a record query selects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter<'a> {
    /// Only this kind.
    pub kind: Option<&'a str>,
    /// Only this run.
    pub run_id: Option<&'a str>,
    /// Only records produced at or after (Unix ms).
    pub from_ms: Option<u64>,
    /// Only records produced before (Unix ms).
    pub to_ms: Option<u64>,
    /// Only records with a larger seq (pagination cursor).
    pub after_seq: u64,
    /// Only records naming this policy ([`record_policy`]).
    pub policy_id: Option<&'a str>,
}

/// The policy a record names: its own `policy_id`, or its decision's
/// winning policy (control events).
pub fn record_policy(body: &Value) -> Option<&str> {
    body.get("policy_id")
        .and_then(Value::as_str)
        .or_else(|| body.pointer("/decision/winning_policy/policy_id").and_then(Value::as_str))
}

impl Activity {
    /// Records of `tenant_id` matching `filter`, oldest first, at most
    /// `limit`; the second value says whether more match.
    pub fn records(
        &self,
        tenant_id: &str,
        filter: &RecordFilter<'_>,
        limit: usize,
    ) -> (Vec<&StoredRecord>, bool) {
        let Some(tenant) = self.tenants.get(tenant_id) else {
            return (Vec::new(), false);
        };
        // Records are in seq order, seq = pruned + index + 1.
        let start = usize::try_from(filter.after_seq.saturating_sub(tenant.pruned))
            .unwrap_or(usize::MAX)
            .min(tenant.records.len());
        let mut matching = tenant.records.iter_from(start).filter(|r| {
            filter.kind.is_none_or(|k| r.kind == k)
                && filter.run_id.is_none_or(|id| r.run_id.as_deref() == Some(id))
                && filter.from_ms.is_none_or(|t| r.at_ms >= t)
                && filter.to_ms.is_none_or(|t| r.at_ms < t)
                && filter.policy_id.is_none_or(|p| record_policy(&r.body.value()) == Some(p))
        });
        let page: Vec<&StoredRecord> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        (page, more)
    }

    /// The latest `RUN_STATE` record of each run of `tenant_id` whose
    /// status is live (`running`, `paused`, `queued`) or, with
    /// `live = false`, ended; most recently changed first, at most `limit`.
    pub fn runs(&self, tenant_id: &str, live: bool, limit: usize) -> Vec<&StoredRecord> {
        let Some(tenant) = self.tenants.get(tenant_id) else {
            return Vec::new();
        };
        let mut latest: BTreeMap<&str, &StoredRecord> = BTreeMap::new();
        for record in tenant.records.iter().filter(|r| r.kind == RUN_STATE) {
            if let Some(run_id) = record.run_id.as_deref() {
                latest.insert(run_id, record);
            }
        }
        let mut runs: Vec<&StoredRecord> = latest.into_values().filter(|r| is_live(r) == live).collect();
        runs.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then(b.seq.cmp(&a.seq)));
        runs.truncate(limit);
        runs
    }

    /// Aggregates for the tenant: runs by latest status, tokens and spend
    /// reported in LLM run records, incidents by kind, records by kind.
    pub fn metrics(&self, tenant_id: &str) -> Value {
        let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
        let mut incidents: BTreeMap<String, u64> = BTreeMap::new();
        let mut latest: BTreeMap<&str, String> = BTreeMap::new();
        let (mut tokens, mut cost_micros, mut llm_calls) = (0u64, 0u64, 0u64);
        for record in self.tenants.get(tenant_id).into_iter().flat_map(|t| t.records.iter()) {
            *by_kind.entry(&record.kind).or_default() += 1;
            match record.kind.as_str() {
                "LLM_RUN_RECORD" => {
                    let usage: Tallied = record.body.fields();
                    tokens = tokens.saturating_add(usage.input_tokens).saturating_add(usage.output_tokens);
                    cost_micros = cost_micros.saturating_add(usage.cost_micros);
                    llm_calls += 1;
                }
                "INCIDENT" => {
                    let kind = record.body.fields::<Tallied>().incident_kind;
                    *incidents.entry(kind.unwrap_or_else(|| "UNKNOWN".to_owned())).or_default() += 1;
                }
                RUN_STATE => {
                    if let (Some(run), Some(status)) =
                        (record.run_id.as_deref(), record.body.fields::<Tallied>().status)
                    {
                        latest.insert(run, status);
                    }
                }
                _ => {}
            }
        }
        let mut runs_by_status: BTreeMap<&str, u64> = BTreeMap::new();
        for status in latest.values() {
            *runs_by_status.entry(status.as_str()).or_default() += 1;
        }
        serde_json::json!({
            "runs": latest.len(),
            "runs_by_status": runs_by_status,
            "llm_calls": llm_calls,
            "tokens": tokens,
            "cost_usd": aos_core::money::MicroUsd(cost_micros).to_string().trim_start_matches('$'),
            "incidents_by_kind": incidents,
            "records_by_kind": by_kind,
        })
    }

    /// Number of records held for `tenant_id`.
    pub fn count(&self, tenant_id: &str) -> usize {
        self.tenants.get(tenant_id).map_or(0, |t| t.records.len())
    }

    /// Whether a record id is already committed for the tenant.
    pub fn contains(&self, tenant_id: &str, record_id: &str) -> bool {
        self.tenants.get(tenant_id).is_some_and(|t| t.ids.contains(record_id))
    }

    /// Every tenant's record count (for metrics).
    pub fn total(&self) -> usize {
        self.tenants.values().map(|t| t.records.len()).sum()
    }
}

impl Activity {
    /// Files a record the control plane itself produced (a CRITICAL system
    /// record for a governance change) in a tenant's log. Ids are
    /// deterministic, so every replica files the same record.
    pub(crate) fn file_system_record(&mut self, tenant_id: &str, record_id: String, at_ms: u64, body: Value) {
        let tenant = self.tenants.entry(tenant_id.to_owned()).or_default();
        if !tenant.ids.insert(record_id.clone(), None) {
            return;
        }
        let seq = tenant.next_seq();
        tenant.records.push(StoredRecord {
            seq,
            record_id,
            edge_agent_id: "control-plane".to_owned(),
            kind: "SYSTEM_RECORD".to_owned(),
            run_id: None,
            at_ms,
            ingested_at_ms: at_ms,
            body: RecordBody::from_value(&body),
        });
    }
}

pub(crate) fn ingest_records(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    edge_agent_id: &str,
    records: &[IngestRecord],
) -> Result<Effect, Refusal> {
    let Some(agent) = domain.edge_agents.agent(edge_agent_id) else {
        return Err(Refusal::not_found(format!("unknown edge agent `{edge_agent_id}`")));
    };
    let tenant_id = agent.tenant_id.clone();
    if records.len() > MAX_BATCH {
        return Err(Refusal::invalid(vec![FieldError::new(
            "records",
            format!("{} records in one batch; at most {MAX_BATCH}", records.len()),
        )]));
    }
    if let Some((i, bad)) =
        records.iter().enumerate().find(|(_, r)| r.record_id.is_empty() || r.record_id.len() > MAX_RECORD_ID)
    {
        return Err(Refusal::invalid(vec![FieldError::new(
            format!("records[{i}].record_id"),
            format!("must be 1..={MAX_RECORD_ID} characters, got {}", bad.record_id.len()),
        )]));
    }
    domain.tenant(&tenant_id)?;
    let tenant = domain.activity.tenants.entry(tenant_id.clone()).or_default();
    let incidents = &mut domain.incidents;
    let alerts = &mut domain.alerts;
    let planes = &domain.data_access;
    let mut cross_tenant: Vec<String> = Vec::new();
    let mut alerts_raised = 0u64;
    let mut accepted = 0u64;
    let mut duplicates = 0u64;
    let mut malformed = 0u64;
    let (mut opened, mut repeated, mut prevented) = (Vec::new(), 0u64, 0u64);
    let mut rewrites: Vec<&str> = Vec::new();
    let mut expired = 0u64;
    for record in records {
        let digest: Digest = {
            use sha2::Digest;
            sha2::Sha256::digest(record.json.as_bytes()).into()
        };
        // Write-once: the same id with another body is refused.
        let free = match tenant.ids.slot(record.record_id.clone()) {
            Slot::Held(held) => {
                match held {
                    Some(first) if first != digest => rewrites.push(&record.record_id),
                    _ => duplicates += 1,
                }
                continue;
            }
            Slot::Free(free) => free,
        };
        let (kind, run_id, at_ms, body) = parse(record, &tenant_id);
        if at_ms > 0 && at_ms < tenant.pruned_before_ms {
            expired += 1;
            continue;
        }
        free.hold(Some(digest));
        if kind == "MALFORMED" {
            malformed += 1;
        }
        let seq = tenant.next_seq();
        let stored = StoredRecord {
            seq,
            record_id: record.record_id.clone(),
            edge_agent_id: edge_agent_id.to_owned(),
            kind,
            run_id,
            at_ms,
            ingested_at_ms: ctx.at_ms,
            body,
        };
        // The few kinds the state machine reacts to are parsed here; the
        // bulk (LLM run records) never is.
        let parsed = matches!(stored.kind.as_str(), "CONTROL_EVENT" | "RETRIEVAL_EVIDENCE" | "INCIDENT")
            .then(|| stored.body.value());
        if stored.kind == "CONTROL_EVENT"
            && let Some(body) = &parsed
        {
            for intent in crate::alerts::intents(body) {
                if alerts.raise(&tenant_id, &intent, ctx.at_ms).is_some() {
                    alerts_raised += 1;
                }
            }
        }
        // A refused access naming another tenant's plane is a cross-tenant
        // attempt: it failed hard at the edge (the plane is not in this
        // tenant's snapshot) and is called out in the ledger here.
        if stored.kind == "RETRIEVAL_EVIDENCE"
            && let Some(body) = &parsed
            && body.get("code").and_then(Value::as_str) == Some("UNKNOWN_PLANE")
            && let Some(plane) = body.get("plane_id").and_then(Value::as_str)
            && !planes.tenant(&tenant_id).is_some_and(|t| t.planes.contains_key(plane))
            && planes.plane_owner(plane).is_some()
        {
            cross_tenant.push(format!("{plane} (run {})", stored.run_id.as_deref().unwrap_or("-")));
        }
        if stored.kind == "INCIDENT"
            && let Some(body) = &parsed
        {
            match incidents.report(&tenant_id, &stored, body, edge_agent_id, ctx.at_ms) {
                Reported::Opened(id) => opened.push(id),
                Reported::Repeated(_) => repeated += 1,
                Reported::Prevented(_) => prevented += 1,
                Reported::Counted => {}
            }
        }
        tenant.records.push(stored);
        accepted += 1;
    }
    let mut detail = format!(
        "{accepted} records from edge agent `{edge_agent_id}` committed ({duplicates} duplicates, {malformed} malformed)"
    );
    if expired > 0 {
        detail.push_str(&format!("; {expired} older than the tenant's retention refused"));
    }
    if alerts_raised > 0 {
        detail.push_str(&format!("; alerts raised: {alerts_raised}"));
    }
    if !cross_tenant.is_empty() {
        detail.push_str(&format!(
            "; CROSS-TENANT ACCESS REFUSED: {} attempt(s) on knowledge planes of another tenant: [{}]",
            cross_tenant.len(),
            cross_tenant.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if !rewrites.is_empty() {
        let shown: Vec<&str> = rewrites.iter().take(10).copied().collect();
        detail.push_str(&format!(
            "; {} REWRITES REFUSED (records are write-once): [{}]{}",
            rewrites.len(),
            shown.join(", "),
            if rewrites.len() > shown.len() { ", …" } else { "" }
        ));
        // Visible in the tenant's own log too, not only in the ledger.
        domain.activity.file_system_record(
            &tenant_id,
            format!("sys-rewrite-refused-{}", ctx.audit_seq),
            ctx.at_ms,
            serde_json::json!({
                "kind": "SYSTEM_RECORD",
                "event": "RECORD_REWRITE_REFUSED",
                "severity": "CRITICAL",
                "edge_agent_id": edge_agent_id,
                "record_ids": shown,
                "refused": rewrites.len(),
                "detail": "records are write-once: a different body under a committed record id was refused",
            }),
        );
    }
    if !opened.is_empty() || repeated + prevented > 0 {
        detail.push_str(&format!(
            "; incidents opened: [{}], repeats counted: {repeated}, prevented by suppressions: {prevented}",
            opened.join(", ")
        ));
    }
    let rewrites_refused = rewrites.len();
    Ok(Effect::new(AuditAction::RecordsIngested, detail).result(serde_json::json!({
        "accepted": accepted,
        "duplicates": duplicates,
        "malformed": malformed,
        "rewrites_refused": rewrites_refused,
        "expired": expired,
        "incidents_opened": opened,
    })))
}

/// Kind, run, time and body of a record, filed under `tenant_id`;
/// anything unusable becomes a `MALFORMED` record that says why.
fn parse(record: &IngestRecord, tenant_id: &str) -> (String, Option<String>, u64, RecordBody) {
    let malformed = |reason: String| {
        use sha2::Digest;
        let hash = hex::encode(sha2::Sha256::digest(record.json.as_bytes()));
        let body = serde_json::json!({
            "reason": reason, "bytes": record.json.len(), "sha256": hash, "tenant_id": tenant_id,
        });
        ("MALFORMED".to_owned(), None, 0, RecordBody::from_value(&body))
    };
    if record.json.len() > MAX_RECORD_BYTES {
        return malformed(format!("{} bytes; at most {MAX_RECORD_BYTES}", record.json.len()));
    }
    let filed = match RecordBody::file(&record.json, tenant_id) {
        Ok(filed) => filed,
        Err(reason) => return malformed(reason),
    };
    let Some(kind) = filed.kind else {
        return malformed("no `kind` string".to_owned());
    };
    if kind.is_empty() || kind.len() > 64 || kind == "MALFORMED" {
        return malformed(format!("unusable kind `{}`", kind.chars().take(64).collect::<String>()));
    }
    (kind, filed.run_id, filed.at_ms, filed.body)
}

mod body;
mod head;
mod ids;
pub use body::{RecordBody, lenient_string, lenient_u64};
mod log;
use log::RecordLog;
mod text;
pub use text::RecordText;
mod retention;
pub use retention::RetentionView;
pub(crate) use retention::{apply_retention, set_retention};

#[cfg(test)]
mod tests;
