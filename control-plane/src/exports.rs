//! Evidence exports (issue 8, seed §5.5, GAP-025..027): what the control
//! plane knows about a run, an incident or a period, gathered from the
//! replicated state and sealed into a signed bundle
//! ([`aos_core::export`]) that `aosctl export verify` checks offline.
//!
//! A bundle holds, for its subject:
//!
//! - `records.jsonl`: the edge agents' records (LLM run records, control
//!   events, incidents, retrieval evidence, run states), as committed.
//! - `incidents.json`: the incidents, with history and inflection point.
//! - `audit.jsonl`: the tenant's ledger entries in the subject's time
//!   window or naming it, each with its chain hashes.
//! - `policies.json`: every version of every policy the records name (all
//!   of the tenant's for a period), with threshold hashes.
//! - `snapshots.json`: the snapshot versions and content hashes the records
//!   say were in force.
//! - `README.txt`: what each file is and how to check the bundle.
//!
//! Collection reads the state machine in short chunks (Raft applies wait
//! for readers); sealing signs with the cluster's active snapshot key.

use std::collections::{BTreeMap, BTreeSet};

use aos_core::export::{BundleFile, BundleHeader, BundleKind, LedgerHead, Subject};
use aos_cp_state::{AuditEntry, Incident, IncidentFilter, PolicyVersion, RecordFilter, StoredRecord};
use serde_json::{Value, json};

use crate::raft::store::StateReader;

/// Most records one bundle may hold; a larger period must be split.
pub const MAX_RECORDS: usize = 200_000;
/// Most record bytes (JSON) one bundle may hold, well under what
/// `aosctl` downloads (256 MiB) and `aos_core::export::open` reads (1 GiB).
pub const MAX_EXPORT_BYTES: usize = 128 * 1024 * 1024;

/// Why an export cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// No record of the run in the tenant.
    #[error("no records of run `{0}` in this tenant")]
    UnknownRun(String),
    /// No such incident in the tenant.
    #[error("no incident `{0}` in this tenant")]
    UnknownIncident(String),
    /// A period that is empty or reversed.
    #[error("the period must have from_ms < to_ms (got {from_ms}..{to_ms})")]
    BadRange {
        /// Start.
        from_ms: u64,
        /// End.
        to_ms: u64,
    },
    /// More than [`MAX_RECORDS`] records or [`MAX_EXPORT_BYTES`] of them.
    #[error("more than {MAX_RECORDS} records or {} MiB of them match; export a shorter period", MAX_EXPORT_BYTES >> 20)]
    TooLarge,
    /// The bundle could not be sealed.
    #[error("cannot seal the bundle: {0}")]
    Bundle(#[from] aos_core::export::BundleError),
    /// JSON encoding failed.
    #[error("cannot encode the evidence: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The evidence about one subject.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The tenant.
    pub tenant_id: String,
    /// What it is about.
    pub subject: Subject,
    /// Records, in commit order.
    pub records: Vec<StoredRecord>,
    /// Incidents, oldest first.
    pub incidents: Vec<Incident>,
    /// Ledger entries, in chain order.
    pub audit: Vec<AuditEntry>,
    /// Policy id → every version.
    pub policies: BTreeMap<String, Vec<PolicyVersion>>,
    /// Snapshot version → content hash (empty when a record did not say).
    pub snapshots: BTreeMap<u64, String>,
    /// The ledger's head when collected.
    pub ledger_head: LedgerHead,
    /// The subject's time window, Unix ms, inclusive.
    pub window: (u64, u64),
}

/// Records read per hold of the state lock: applying Raft entries waits
/// for readers, so an export reads in small chunks.
const CHUNK: usize = 1_000;

/// Gathers the evidence about `subject` in `tenant_id`. Records are read in
/// chunks of [`CHUNK`] (each under a short read of the state machine), so
/// an export never holds up Raft applies for long; records pruned between
/// chunks are simply not in it. At most [`MAX_RECORDS`] records and
/// [`MAX_EXPORT_BYTES`] of them.
pub fn collect(state: &StateReader, tenant_id: &str, subject: Subject) -> Result<Evidence, ExportError> {
    // The subject first: its filter, extra ids and the incidents.
    let (filter_run, wanted_ids, incidents, ids, range) = state.read(|s| -> Result<_, ExportError> {
        let s = &s.0;
        Ok(match &subject {
            Subject::Run { run_id } => {
                let filter = IncidentFilter { run_id: Some(run_id), ..IncidentFilter::default() };
                let mut found: Vec<Incident> =
                    s.incidents().list(tenant_id, &filter, usize::MAX).into_iter().cloned().collect();
                found.sort_by_key(|i| i.first_seen_ms);
                (Some(run_id.clone()), None, found, vec![run_id.clone()], None)
            }
            Subject::Incident { incident_id } => {
                let incident = s
                    .incidents()
                    .get(tenant_id, incident_id)
                    .ok_or_else(|| ExportError::UnknownIncident(incident_id.clone()))?
                    .clone();
                let wanted = match &incident.run_id {
                    Some(_) => None,
                    None => Some(incident.record_ids.iter().cloned().collect::<BTreeSet<String>>()),
                };
                let mut ids = vec![incident_id.clone()];
                ids.extend(incident.run_id.clone());
                (incident.run_id.clone(), wanted, vec![incident], ids, None)
            }
            Subject::Range { from_ms, to_ms } => {
                if from_ms >= to_ms {
                    return Err(ExportError::BadRange { from_ms: *from_ms, to_ms: *to_ms });
                }
                let mut found: Vec<Incident> = s
                    .incidents()
                    .list(tenant_id, &IncidentFilter::default(), usize::MAX)
                    .into_iter()
                    .filter(|i| i.first_seen_ms >= *from_ms && i.first_seen_ms < *to_ms)
                    .cloned()
                    .collect();
                found.sort_by_key(|i| i.first_seen_ms);
                (None, None, found, Vec::new(), Some((*from_ms, *to_ms)))
            }
        })
    })?;
    // Then the records, chunk by chunk.
    let mut records = Vec::new();
    let mut bytes = 0usize;
    let mut after_seq = 0;
    loop {
        let filter = RecordFilter {
            run_id: filter_run.as_deref(),
            from_ms: range.map(|r| r.0),
            to_ms: range.map(|r| r.1),
            after_seq,
            ..RecordFilter::default()
        };
        let (chunk, more, last) = state.read(|s| {
            let (page, more) = s.0.activity().records(tenant_id, &filter, CHUNK);
            let last = page.last().map(|r| r.seq);
            let kept: Vec<StoredRecord> = page
                .into_iter()
                .filter(|r| wanted_ids.as_ref().is_none_or(|w| w.contains(&r.record_id)))
                .cloned()
                .collect();
            (kept, more, last)
        });
        for record in chunk {
            bytes = bytes.saturating_add(record.body.text().len());
            if records.len() >= MAX_RECORDS || bytes > MAX_EXPORT_BYTES {
                return Err(ExportError::TooLarge);
            }
            records.push(record);
        }
        match (more, last) {
            (true, Some(last)) => after_seq = last,
            _ => break,
        }
    }
    if let Subject::Run { run_id } = &subject
        && records.is_empty()
    {
        return Err(ExportError::UnknownRun(run_id.clone()));
    }
    let window = match range {
        Some((from, to)) => (from, to.saturating_sub(1)),
        None => span(
            records
                .iter()
                .flat_map(|r| [r.at_ms, r.ingested_at_ms])
                .chain(incidents.iter().flat_map(|i| [i.first_seen_ms, i.last_seen_ms]))
                .chain(incidents.iter().flat_map(|i| i.history.iter().map(|t| t.at_ms))),
        ),
    };
    // One parse per record: the policies it names and the snapshot it ran under.
    let mut named: BTreeSet<String> = incidents.iter().filter_map(|i| i.policy_id.clone()).collect();
    let mut snapshots = BTreeMap::new();
    for record in &records {
        let body = record.body.value();
        if let Some(policy) = crate::reports::record_policy(&body) {
            named.insert(policy.to_owned());
        }
        let version = ["policy_snapshot_version", "snapshot_version", "run_start_snapshot_version"]
            .iter()
            .find_map(|f| body.get(*f).and_then(Value::as_u64));
        if let Some(version) = version.filter(|v| *v > 0) {
            let hash = body.get("policy_snapshot_hash").and_then(Value::as_str).unwrap_or_default();
            let entry = snapshots.entry(version).or_insert_with(String::new);
            if entry.is_empty() {
                hash.clone_into(entry);
            }
        }
    }
    let (audit, policies, ledger_head) = state.read(|s| {
        let s = &s.0;
        // The ledger is scanned (never cloned whole): entries of this tenant
        // in the window, or whose target names the subject as a path segment.
        let audit: Vec<AuditEntry> = s
            .audit()
            .entries()
            .iter()
            .filter(|e| e.tenant_id.as_deref() == Some(tenant_id))
            .filter(|e| {
                (window.0..=window.1).contains(&e.at_ms)
                    || ids.iter().any(|id| e.target.split('/').any(|segment| segment == id))
            })
            .cloned()
            .collect();
        if range.is_some() {
            named.extend(s.policies(tenant_id).map(|p| p.policy_id.clone()));
        }
        let policies: BTreeMap<String, Vec<PolicyVersion>> = named
            .iter()
            .filter_map(|id| Some((id.clone(), s.policy(tenant_id, id)?.versions().cloned().collect())))
            .collect();
        let head = s.audit().last().map_or(LedgerHead { seq: 0, hash: String::new() }, |e| LedgerHead {
            seq: e.seq,
            hash: e.hash.clone(),
        });
        (audit, policies, head)
    });
    Ok(Evidence {
        tenant_id: tenant_id.to_owned(),
        subject,
        records,
        incidents,
        audit,
        policies,
        snapshots,
        ledger_head,
        window,
    })
}

fn span(times: impl Iterator<Item = u64>) -> (u64, u64) {
    times.filter(|t| *t > 0).fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)))
}

/// The bundle's files for `evidence` (the sealing adds manifest and
/// signature).
pub fn bundle_files(evidence: &Evidence) -> Result<Vec<BundleFile>, ExportError> {
    let jsonl =
        |items: &mut dyn Iterator<Item = Result<String, serde_json::Error>>| -> Result<Vec<u8>, ExportError> {
            let mut out = Vec::new();
            for line in items {
                out.extend_from_slice(line?.as_bytes());
                out.push(b'\n');
            }
            Ok(out)
        };
    let records = jsonl(&mut evidence.records.iter().map(serde_json::to_string))?;
    let audit = jsonl(&mut evidence.audit.iter().map(serde_json::to_string))?;
    let policies: Vec<Value> = evidence
        .policies
        .iter()
        .map(|(id, versions)| json!({ "policy_id": id, "versions": versions }))
        .collect();
    let snapshots: Vec<Value> = evidence
        .snapshots
        .iter()
        .map(|(version, hash)| json!({ "version": version, "content_hash": hash }))
        .collect();
    Ok(vec![
        BundleFile { path: "README.txt".into(), bytes: readme(evidence).into_bytes() },
        BundleFile { path: "records.jsonl".into(), bytes: records },
        BundleFile { path: "incidents.json".into(), bytes: serde_json::to_vec_pretty(&evidence.incidents)? },
        BundleFile { path: "audit.jsonl".into(), bytes: audit },
        BundleFile { path: "policies.json".into(), bytes: serde_json::to_vec_pretty(&policies)? },
        BundleFile { path: "snapshots.json".into(), bytes: serde_json::to_vec_pretty(&snapshots)? },
    ])
}

/// The header sealing `evidence` as a `kind` bundle, by `actor_id` at
/// `now_ms`.
pub fn header(evidence: &Evidence, kind: BundleKind, actor_id: &str, now_ms: u64) -> BundleHeader {
    BundleHeader {
        kind,
        tenant_id: evidence.tenant_id.clone(),
        subject: evidence.subject.clone(),
        generated_at_ms: now_ms,
        generated_by: actor_id.to_owned(),
        ledger_head: evidence.ledger_head.clone(),
    }
}

fn readme(evidence: &Evidence) -> String {
    let subject = match &evidence.subject {
        Subject::Run { run_id } => format!("run {run_id}"),
        Subject::Incident { incident_id } => format!("incident {incident_id}"),
        Subject::Range { from_ms, to_ms } => format!("the period {from_ms}..{to_ms} (Unix ms)"),
    };
    format!(
        "AOS evidence bundle: tenant {tenant}, {subject}.\n\n\
         records.jsonl   {records} records from the edge agents, as committed\n\
         incidents.json  {incidents} incidents with their history and inflection point\n\
         audit.jsonl     {audit} audit ledger entries (hash-chained: prev_hash, hash)\n\
         policies.json   every version of {policies} policies, with threshold hashes\n\
         snapshots.json  {snapshots} policy snapshot versions in force, with content hashes\n\
         manifest.json   every file's SHA-256 and size, the ledger head at export time\n\
         manifest.sig    ed25519 signature of the manifest by the cluster's snapshot key\n\n\
         Check it offline, against the cluster's published snapshot keys:\n\
         \x20 aosctl export verify BUNDLE.tar --keys snapshot-keys.json\n\
         (snapshot-keys.json: `aosctl -o json snapshot keys` or GET /api/v1/snapshot-keys).\n",
        tenant = evidence.tenant_id,
        records = evidence.records.len(),
        incidents = evidence.incidents.len(),
        audit = evidence.audit.len(),
        policies = evidence.policies.len(),
        snapshots = evidence.snapshots.len(),
    )
}
