//! Human-readable reports (issue 8, GAP-026, GAP-027, GAP-025): PDF
//! reports of an incident or a run, the one-page executive debrief of a
//! period, and the SOC2 control mapping that goes into a SOC2 bundle. All
//! are rendered from [`crate::exports::Evidence`], so a report says exactly
//! what the matching evidence bundle proves.

pub mod pdf;

use std::collections::BTreeMap;

use aos_core::export::{BundleFile, Subject};
use serde_json::{Value, json};

use crate::exports::Evidence;
use pdf::Document;

pub use aos_cp_state::record_policy;

fn time(ms: u64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    // Civil date from days since the epoch (Howard Hinnant's algorithm),
    // so the report needs no time zone database: always UTC.
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every field of a JSON object as `label: value` lines; nested objects and
/// arrays of objects indented below their label.
fn fields(doc: &mut Document, object: &Value) {
    let Some(map) = object.as_object() else {
        doc.paragraph(&scalar(object));
        return;
    };
    for (key, value) in map {
        match value {
            Value::Object(_) => {
                doc.field(key, "");
                doc.indented(&serde_json::to_string_pretty(value).unwrap_or_default());
            }
            Value::Array(items) if items.iter().any(Value::is_object) => {
                doc.field(key, &format!("{} item(s)", items.len()));
                for item in items {
                    doc.indented(&serde_json::to_string_pretty(item).unwrap_or_default());
                }
            }
            Value::Array(items) => {
                doc.field(key, &items.iter().map(scalar).collect::<Vec<_>>().join(", "));
            }
            _ => doc.field(key, &scalar(value)),
        }
    }
}

/// The decision trail: every record of the evidence, oldest first, one
/// line each with what was decided and why.
fn decision_trail(doc: &mut Document, evidence: &Evidence) {
    doc.heading("Decision trail");
    if evidence.records.is_empty() {
        doc.paragraph("No records.");
    }
    for record in &evidence.records {
        let body = &record.body.value();
        let outcome = body
            .pointer("/decision/outcome")
            .or_else(|| body.get("outcome"))
            .or_else(|| body.get("status"))
            .or_else(|| body.get("incident_kind"))
            .or_else(|| body.get("event"))
            .map(scalar)
            .unwrap_or_default();
        let policy = record_policy(body).unwrap_or("-");
        let step = body.get("step_id").map(scalar).unwrap_or_else(|| "-".to_owned());
        doc.paragraph(&format!(
            "{}  {}  {outcome}  step {step}  policy {policy}",
            time(record.at_ms),
            record.kind
        ));
        let reasons: Vec<String> = body
            .get("reasons")
            .and_then(Value::as_array)
            .map(|r| r.iter().map(scalar).collect())
            .or_else(|| body.get("summary").map(|s| vec![scalar(s)]))
            .or_else(|| body.get("reason").filter(|r| !r.is_null()).map(|r| vec![scalar(r)]))
            .unwrap_or_default();
        for reason in reasons {
            doc.indented(&reason);
        }
    }
}

/// The policies in force: every version the evidence holds.
fn policies_in_force(doc: &mut Document, evidence: &Evidence) {
    doc.heading("Policies in force");
    if evidence.policies.is_empty() {
        doc.paragraph("No policy decided.");
    }
    for (policy_id, versions) in &evidence.policies {
        for version in versions {
            doc.field(
                "policy",
                &format!(
                    "{policy_id} v{} ({:?}) threshold hash {}",
                    version.policy.version, version.policy.status, version.threshold_hash
                ),
            );
            doc.field("applied", &format!("{} by {}", time(version.created_at_ms), version.created_by));
            doc.indented(&serde_json::to_string_pretty(&version.policy).unwrap_or_default());
        }
    }
    if !evidence.snapshots.is_empty() {
        doc.heading("Snapshots in force");
        for (version, hash) in &evidence.snapshots {
            doc.field(&format!("version {version}"), if hash.is_empty() { "-" } else { hash });
        }
    }
}

fn provenance(doc: &mut Document, evidence: &Evidence, generated_at_ms: u64) {
    doc.heading("Provenance");
    doc.field("tenant", &evidence.tenant_id);
    doc.field("generated", &time(generated_at_ms));
    doc.field("ledger head", &format!("#{} {}", evidence.ledger_head.seq, evidence.ledger_head.hash));
    doc.paragraph(
        "The signed evidence bundle of the same subject (aosctl export evidence) holds the records, \
         ledger entries and policy versions this report is rendered from; aosctl export verify checks it.",
    );
}

/// The PDF report of an incident or a run (GAP-027): every field of the
/// incident(s), the decision trail and the policies in force.
pub fn subject_report(evidence: &Evidence, generated_at_ms: u64) -> Vec<u8> {
    let title = match &evidence.subject {
        Subject::Incident { incident_id } => format!("AOS incident report: {incident_id}"),
        Subject::Run { run_id } => format!("AOS run report: {run_id}"),
        Subject::Range { from_ms, to_ms } => format!("AOS report: {} to {}", time(*from_ms), time(*to_ms)),
    };
    let mut doc = Document::new(&title);
    for incident in &evidence.incidents {
        doc.heading(&format!("Incident {}", incident.incident_id));
        let mut value = json!(incident);
        // Times as dates next to the raw numbers.
        for key in ["first_seen_ms", "last_seen_ms"] {
            if let Some(ms) = value.get(key).and_then(Value::as_u64) {
                value[key] = json!(format!("{ms} ({})", time(ms)));
            }
        }
        fields(&mut doc, &value);
    }
    if evidence.incidents.is_empty() {
        doc.heading("Incidents");
        doc.paragraph("None.");
    }
    if let Some(run) = evidence.records.iter().rev().find(|r| r.kind == "RUN_STATE") {
        doc.heading("Run");
        fields(&mut doc, &run.body.value());
    }
    decision_trail(&mut doc, evidence);
    policies_in_force(&mut doc, evidence);
    provenance(&mut doc, evidence, generated_at_ms);
    doc.finish()
}

/// What the debrief counts over a period.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Debrief {
    /// Distinct runs with records.
    pub runs: u64,
    /// Runs by their last status.
    pub runs_by_status: BTreeMap<String, u64>,
    /// LLM calls.
    pub llm_calls: u64,
    /// Tokens (input + output).
    pub tokens: u64,
    /// Spend, micro-USD.
    pub cost_micros: u64,
    /// Incidents by category.
    pub incidents_by_category: BTreeMap<String, u64>,
    /// Control events (non-CONTINUE decisions) by winning policy.
    pub policies_triggered: BTreeMap<String, u64>,
    /// Governed data accesses and how many were refused.
    pub accesses: (u64, u64),
}

impl Debrief {
    /// Counts `evidence`.
    pub fn of(evidence: &Evidence) -> Debrief {
        let mut d = Debrief::default();
        let mut last_status: BTreeMap<&str, String> = BTreeMap::new();
        for record in &evidence.records {
            let body = &record.body.value();
            let n = |f: &str| body.get(f).and_then(Value::as_u64).unwrap_or(0);
            match record.kind.as_str() {
                "LLM_RUN_RECORD" => {
                    d.llm_calls += 1;
                    d.tokens = d.tokens.saturating_add(n("input_tokens")).saturating_add(n("output_tokens"));
                    d.cost_micros = d.cost_micros.saturating_add(n("cost_micros"));
                }
                "CONTROL_EVENT" => {
                    if let Some(policy) = record_policy(body) {
                        *d.policies_triggered.entry(policy.to_owned()).or_default() += 1;
                    }
                }
                "RETRIEVAL_EVIDENCE" => {
                    d.accesses.0 += 1;
                    if body.get("outcome").and_then(Value::as_str) != Some("ALLOWED") {
                        d.accesses.1 += 1;
                    }
                }
                "RUN_STATE" => {
                    if let (Some(run), Some(status)) =
                        (record.run_id.as_deref(), body.get("status").and_then(Value::as_str))
                    {
                        last_status.insert(run, status.to_owned());
                    }
                }
                _ => {}
            }
        }
        d.runs = last_status.len() as u64;
        for status in last_status.values() {
            *d.runs_by_status.entry(status.clone()).or_default() += 1;
        }
        for incident in &evidence.incidents {
            *d.incidents_by_category.entry(incident.category.as_str().to_owned()).or_default() += 1;
        }
        d
    }
}

/// The one-page executive debrief of a period (GAP-026).
pub fn debrief(evidence: &Evidence, generated_at_ms: u64) -> Vec<u8> {
    let d = Debrief::of(evidence);
    let (from, to) = match &evidence.subject {
        Subject::Range { from_ms, to_ms } => (time(*from_ms), time(*to_ms)),
        _ => (time(evidence.window.0), time(evidence.window.1)),
    };
    let mut doc = Document::new(&format!("AOS executive debrief: {}", evidence.tenant_id));
    doc.field("period", &format!("{from} to {to}"));
    doc.heading("Activity");
    let statuses = d.runs_by_status.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join(", ");
    doc.field("runs", &format!("{} ({})", d.runs, if statuses.is_empty() { "none" } else { &statuses }));
    doc.field("LLM calls", &d.llm_calls.to_string());
    doc.field("tokens", &d.tokens.to_string());
    doc.field("spend", &aos_core::money::MicroUsd(d.cost_micros).to_string());
    doc.field("data accesses", &format!("{} ({} refused)", d.accesses.0, d.accesses.1));
    doc.heading("Incidents by category");
    if d.incidents_by_category.is_empty() {
        doc.paragraph("None.");
    }
    for (category, count) in &d.incidents_by_category {
        doc.field(category, &count.to_string());
    }
    doc.heading("Top policies triggered");
    let mut top: Vec<(&String, &u64)> = d.policies_triggered.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    if top.is_empty() {
        doc.paragraph("None.");
    }
    for (policy, count) in top.into_iter().take(10) {
        doc.field(policy, &format!("{count} enforcement event(s)"));
    }
    doc.gap();
    doc.field("generated", &format!("{} (ledger head #{})", time(generated_at_ms), evidence.ledger_head.seq));
    doc.finish()
}

/// A SOC2 trust-services criterion and the system control that meets it.
struct Control {
    criterion: &'static str,
    title: &'static str,
    control: &'static str,
    /// Ledger actions that evidence it.
    actions: &'static [&'static str],
    /// Record kinds that evidence it.
    records: &'static [&'static str],
}

const CONTROLS: &[Control] = &[
    Control {
        criterion: "CC6.1",
        title: "Logical access security",
        control: "Every admin request is authenticated with a hashed API key and authorised by tenant and role; refusals are written to the audit ledger. Edge agents hold per-agent mTLS certificates; data access goes through knowledge planes that deny by default.",
        actions: &[
            "API_KEY_CREATED",
            "API_KEY_REVOKED",
            "ACTOR_CREATED",
            "JOIN_TOKEN_CREATED",
            "JOIN_TOKEN_REVOKED",
            "ACCESS_DENIED",
            "PLANE_ACTIVATED",
            "PLANE_DEACTIVATED",
            "CREDENTIAL_SET",
        ],
        records: &["RETRIEVAL_EVIDENCE"],
    },
    Control {
        criterion: "CC6.6",
        title: "Boundary protection",
        control: "Connector credentials are sealed per tenant (XChaCha20-Poly1305 under a master-key-wrapped data key) and reach only the tenant's agents; outbound alert and probe targets are limited to public addresses unless the operator allows private ones (--alert-private-targets).",
        actions: &[
            "DATA_KEY_CREATED",
            "SOURCE_CREATED",
            "SOURCE_VERIFIED",
            "SOURCE_ENABLED",
            "SOURCE_DISABLED",
        ],
        records: &[],
    },
    Control {
        criterion: "CC7.2",
        title: "System monitoring",
        control: "Every enforcement decision beyond CONTINUE is a control event; violations become incidents (one per run and policy); near-threshold and breach alerts are delivered durably or dead-lettered.",
        actions: &[
            "INCIDENT_ACKNOWLEDGED",
            "INCIDENT_RESOLVED",
            "SUPPRESSION_CREATED",
            "ALERT_CHANNEL_SET",
            "ALERT_DELIVERY",
        ],
        records: &["CONTROL_EVENT", "INCIDENT"],
    },
    Control {
        criterion: "CC7.3",
        title: "Incident evaluation and response",
        control: "Incidents carry their inflection point (step, signal, value, threshold, snapshot and policy version) and move open -> acknowledged -> resolved by named actors; the kill switch, degraded mode and halt are consensus-committed and audited.",
        actions: &["GOVERNANCE_CHANGED", "GOVERNANCE_EXPIRED", "INCIDENT_ACKNOWLEDGED", "INCIDENT_RESOLVED"],
        records: &["INCIDENT"],
    },
    Control {
        criterion: "CC8.1",
        title: "Change management",
        control: "Policies are validated on write, every version is kept with its threshold hash, lifecycle transitions are audited, and agents enforce only signed, versioned snapshots.",
        actions: &[
            "POLICY_CREATED",
            "POLICY_UPDATED",
            "POLICY_ACTIVATED",
            "POLICY_SUSPENDED",
            "POLICY_RETIRED",
            "LIMIT_ADJUSTED",
            "OVERRIDE_GRANTED",
            "OVERRIDE_REVOKED",
            "EVIDENCE_EXPORTED",
            "RETENTION_SET",
            "RETENTION_APPLIED",
        ],
        records: &["SYSTEM_RECORD"],
    },
    Control {
        criterion: "A1.2",
        title: "Availability: recovery",
        control: "The control plane is a Raft cluster; edge agents keep the last good snapshot on disk and a durable outbox, so enforcement continues and no record is lost while the control plane is away.",
        actions: &["EDGE_AGENT_JOINED", "SNAPSHOT_ACKED", "SNAPSHOT_NACKED", "RECORDS_INGESTED"],
        records: &["RUN_STATE"],
    },
];

/// The SOC2 bundle's extra files (GAP-025): `soc2/controls.json` (each
/// criterion, the control, and the count of ledger entries and records
/// that evidence it in the period) and `soc2/controls.pdf`.
pub fn soc2_files(evidence: &Evidence, generated_at_ms: u64) -> Vec<BundleFile> {
    let mut by_action: BTreeMap<String, u64> = BTreeMap::new();
    for entry in &evidence.audit {
        *by_action.entry(entry.action.as_str().to_owned()).or_default() += 1;
    }
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for record in &evidence.records {
        *by_kind.entry(record.kind.as_str()).or_default() += 1;
    }
    let mut doc = Document::new(&format!("AOS SOC2 control evidence: {}", evidence.tenant_id));
    if let Subject::Range { from_ms, to_ms } = &evidence.subject {
        doc.field("period", &format!("{} to {}", time(*from_ms), time(*to_ms)));
    }
    let mut mapped = Vec::new();
    for control in CONTROLS {
        let ledger: BTreeMap<&str, u64> =
            control.actions.iter().map(|a| (*a, by_action.get(*a).copied().unwrap_or(0))).collect();
        let records: BTreeMap<&str, u64> =
            control.records.iter().map(|k| (*k, by_kind.get(k).copied().unwrap_or(0))).collect();
        let total: u64 = ledger.values().chain(records.values()).sum();
        doc.heading(&format!("{} {}", control.criterion, control.title));
        doc.paragraph(control.control);
        doc.field("evidence", &format!("{total} item(s) in audit.jsonl and records.jsonl"));
        for (name, count) in ledger.iter().chain(records.iter()).filter(|(_, n)| **n > 0) {
            doc.indented(&format!("{name}: {count}"));
        }
        mapped.push(json!({
            "criterion": control.criterion,
            "title": control.title,
            "control": control.control,
            "evidence": {
                "ledger_actions": ledger,
                "record_kinds": records,
                "files": ["audit.jsonl", "records.jsonl", "policies.json"],
                "total": total,
            },
        }));
    }
    doc.gap();
    doc.field("generated", &time(generated_at_ms));
    let controls =
        json!({ "framework": "SOC2 trust services criteria (2017, rev. 2022)", "controls": mapped });
    vec![
        BundleFile {
            path: "soc2/controls.json".into(),
            bytes: serde_json::to_vec_pretty(&controls).unwrap_or_default(),
        },
        BundleFile { path: "soc2/controls.pdf".into(), bytes: doc.finish() },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1_700_000_000_123), "2023-11-14 22:13:20.123 UTC");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00.000 UTC");
    }

    #[test]
    fn the_winning_policy_is_found_in_a_decision() {
        let event = json!({"decision": {"winning_policy": {"policy_id": "pol-a"}}});
        assert_eq!(record_policy(&event), Some("pol-a"));
        assert_eq!(record_policy(&json!({"policy_id": "pol-b"})), Some("pol-b"));
        assert_eq!(record_policy(&json!({})), None);
    }
}
