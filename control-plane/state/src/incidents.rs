//! The incident engine (issue 8, seed §4.1/§4.2, GAP-023/024): incidents
//! made from the `INCIDENT` records edge agents deliver, deterministically
//! inside the same Raft apply as the ingest, so every replica holds the same
//! incidents and no report is ever counted twice.
//!
//! Flow for each new `INCIDENT` record (a repeated record id never gets
//! here; the ingest de-duplicates first):
//!
//! 1. **Suppression, read before write**: a live suppression of the tenant
//!    matching the record's policy and/or category files a
//!    [`Prevention`] and no incident.
//! 2. **At most one incident per (run, policy)**: a second report of the
//!    same violation — a retry, or a second edge agent running the same
//!    run — is counted on the existing incident (`reports`, the agents
//!    that saw it), never opened again. Without a policy the category
//!    stands in for it; without a run, each record is its own incident.
//! 3. **Open** the incident with its inflection point (GAP-024: step,
//!    signal, value, threshold, snapshot version, policy version hash) as
//!    the agent reported it, and link it to the run (`for_run`).
//! 4. **HIGH or CRITICAL** with a policy: a [`PolicyProposal`] for an
//!    operator to review (a suggestion, never applied by itself).
//!
//! Lifecycle `OPEN → ACKNOWLEDGED → RESOLVED` (or `OPEN → RESOLVED`) by
//! `sre` or `admin` actors of the tenant, each transition audited
//! (`INCIDENT_ACKNOWLEDGED`, `INCIDENT_RESOLVED`) and kept in the
//! incident's history. `EXECUTION_SUCCESS` records are success tracking,
//! counted and never opened as incidents.

use std::collections::{BTreeMap, BTreeSet};

use aos_core::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::activity::StoredRecord;
use crate::audit::AuditAction;
use crate::domain::Domain;
use crate::effect::{Ctx, Effect, Refusal};
use crate::ids::{check_id, check_text};
use crate::serde_compat::to_json;

/// How many source record ids an incident keeps (the first ones).
const MAX_SOURCE_RECORDS: usize = 32;
/// Prevention records kept per tenant (the newest; `prevented` counts all).
pub const MAX_PREVENTIONS: usize = 10_000;
/// Largest inflection object kept (encoded bytes).
const MAX_INFLECTION_BYTES: usize = 4_096;
/// Longest a suppression may last: 30 days.
pub const MAX_SUPPRESSION_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// Incident categories (seed §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IncidentCategory {
    /// The run failed for a reason other than policy.
    ExecutionFailure,
    /// A cost budget was exceeded.
    BudgetExceeded,
    /// A request or query rate limit was exceeded.
    RateLimit,
    /// A token limit was exceeded.
    TokenLimit,
    /// Content policy violated.
    ContentPolicy,
    /// Personal data detected.
    PiiDetected,
    /// A safety rule was violated.
    SafetyViolation,
    /// A successful run (success tracking; never opened).
    ExecutionSuccess,
    /// A response not grounded in the run's evidence (GAP-023).
    Hallucination,
    /// Any other policy stop (a rule without a more specific category).
    PolicyViolation,
}

impl IncidentCategory {
    /// The category of an agent's `incident_kind`, if it names one.
    pub fn parse(kind: &str) -> Option<IncidentCategory> {
        serde_json::from_value(Value::String(kind.to_owned())).ok()
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentCategory::ExecutionFailure => "EXECUTION_FAILURE",
            IncidentCategory::BudgetExceeded => "BUDGET_EXCEEDED",
            IncidentCategory::RateLimit => "RATE_LIMIT",
            IncidentCategory::TokenLimit => "TOKEN_LIMIT",
            IncidentCategory::ContentPolicy => "CONTENT_POLICY",
            IncidentCategory::PiiDetected => "PII_DETECTED",
            IncidentCategory::SafetyViolation => "SAFETY_VIOLATION",
            IncidentCategory::ExecutionSuccess => "EXECUTION_SUCCESS",
            IncidentCategory::Hallucination => "HALLUCINATION",
            IncidentCategory::PolicyViolation => "POLICY_VIOLATION",
        }
    }

    /// Severity when the record does not give one.
    pub fn default_severity(self) -> Severity {
        match self {
            IncidentCategory::ExecutionSuccess | IncidentCategory::RateLimit => Severity::Low,
            IncidentCategory::ExecutionFailure
            | IncidentCategory::TokenLimit
            | IncidentCategory::Hallucination
            | IncidentCategory::PolicyViolation => Severity::Medium,
            IncidentCategory::BudgetExceeded
            | IncidentCategory::ContentPolicy
            | IncidentCategory::PiiDetected => Severity::High,
            IncidentCategory::SafetyViolation => Severity::Critical,
        }
    }
}

/// How bad an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    /// Informational.
    Low,
    /// Needs a look.
    Medium,
    /// Needs action; a policy proposal is made.
    High,
    /// Needs action now; a policy proposal is made.
    Critical,
}

/// Where an incident is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IncidentStatus {
    /// New.
    Open,
    /// Someone is on it.
    Acknowledged,
    /// Done.
    Resolved,
}

impl IncidentStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "OPEN",
            IncidentStatus::Acknowledged => "ACKNOWLEDGED",
            IncidentStatus::Resolved => "RESOLVED",
        }
    }
}

/// One step of an incident's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The status entered.
    pub status: IncidentStatus,
    /// When (the proposal's time).
    pub at_ms: u64,
    /// Who (actor id; `edge-agent:<id>` for the report that opened it).
    pub by: String,
    /// Why, if said.
    pub note: Option<String>,
}

/// An incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `inc-<n>`, unique in the tenant.
    pub incident_id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// The run it happened in.
    pub run_id: Option<String>,
    /// The policy credited.
    pub policy_id: Option<String>,
    /// Category.
    pub category: IncidentCategory,
    /// Severity.
    pub severity: Severity,
    /// Lifecycle status.
    pub status: IncidentStatus,
    /// Whether enforcement stopped the run for it (`false` for
    /// non-blocking detections such as hallucinations, INV-002).
    pub blocking: bool,
    /// What happened (the first report's summary).
    pub summary: String,
    /// When the first report was produced (agent's clock).
    pub first_seen_ms: u64,
    /// When the latest report was produced (agent's clock).
    pub last_seen_ms: u64,
    /// Reports counted (retries and other agents included).
    pub reports: u64,
    /// Edge agents that reported it.
    pub edge_agent_ids: BTreeSet<String>,
    /// Ids of the records that reported it (the first few).
    pub record_ids: Vec<String>,
    /// The inflection point as reported (GAP-024).
    pub inflection: Option<Value>,
    /// The policy proposal made for it, if any.
    pub proposal_id: Option<String>,
    /// Every status change.
    pub history: Vec<Transition>,
}

/// A tenant's rule not to open incidents for a policy and/or category for
/// a while (e.g. a known issue being fixed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    /// Id, unique in the tenant.
    pub suppression_id: String,
    /// Only reports crediting this policy.
    pub policy_id: Option<String>,
    /// Only reports of this category.
    pub category: Option<IncidentCategory>,
    /// In force until (Unix ms).
    pub until_ms: u64,
    /// Why.
    pub reason: String,
    /// Who set it.
    pub created_by: String,
    /// When.
    pub created_at_ms: u64,
    /// Reports it prevented.
    pub prevented: u64,
}

impl Suppression {
    fn matches(&self, policy_id: Option<&str>, category: IncidentCategory, at_ms: u64) -> bool {
        at_ms < self.until_ms
            && self.policy_id.as_deref().is_none_or(|p| Some(p) == policy_id)
            && self.category.is_none_or(|c| c == category)
    }
}

/// A report a suppression kept from becoming an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prevention {
    /// The suppression that applied.
    pub suppression_id: String,
    /// The report's record id.
    pub record_id: String,
    /// Its run.
    pub run_id: Option<String>,
    /// Its policy.
    pub policy_id: Option<String>,
    /// Its category.
    pub category: IncidentCategory,
    /// When it was committed.
    pub at_ms: u64,
}

/// A suggestion to review a policy after a HIGH or CRITICAL incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyProposal {
    /// `prop-<incident id>`.
    pub proposal_id: String,
    /// The incident that prompted it.
    pub incident_id: String,
    /// The policy to review.
    pub policy_id: String,
    /// Always `PENDING_REVIEW`: a proposal is never applied by itself.
    pub status: String,
    /// What to look at.
    pub suggestion: String,
    /// When.
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct TenantIncidents {
    incidents: BTreeMap<String, Incident>,
    /// Dedup key (run, policy or category) → incident id.
    by_key: BTreeMap<String, String>,
    suppressions: BTreeMap<String, Suppression>,
    preventions: Vec<Prevention>,
    proposals: BTreeMap<String, PolicyProposal>,
    next: u64,
    successes: u64,
}

/// Every tenant's incidents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Incidents {
    tenants: BTreeMap<String, TenantIncidents>,
}

/// What one report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reported {
    /// A new incident.
    Opened(String),
    /// Counted on an existing incident.
    Repeated(String),
    /// Kept out by a suppression.
    Prevented(String),
    /// Success tracking, or no usable category.
    Counted,
}

/// Which incidents a query selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IncidentFilter<'a> {
    /// Only this status.
    pub status: Option<IncidentStatus>,
    /// Only this category.
    pub category: Option<IncidentCategory>,
    /// Only this run.
    pub run_id: Option<&'a str>,
    /// Only this policy.
    pub policy_id: Option<&'a str>,
}

impl Incidents {
    /// Turns one committed `INCIDENT` record into an incident (see the
    /// module docs). `at_ms` is the proposal's time: suppressions are
    /// judged by it, so every replica decides alike.
    pub(crate) fn report(
        &mut self,
        tenant_id: &str,
        record: &StoredRecord,
        body: &Value,
        edge_agent_id: &str,
        at_ms: u64,
    ) -> Reported {
        let text = |field: &str| body.get(field).and_then(Value::as_str);
        let Some(category) = text("category").or(text("incident_kind")).and_then(IncidentCategory::parse)
        else {
            return Reported::Counted;
        };
        let tenant = self.tenants.entry(tenant_id.to_owned()).or_default();
        if category == IncidentCategory::ExecutionSuccess {
            tenant.successes += 1;
            return Reported::Counted;
        }
        // Agent-supplied ids are held to the policy id rules, so a bad
        // record cannot fill the state with made-up keys.
        let policy_id =
            text("policy_id").filter(|p| aos_core::compile::id_problem(p).is_none()).map(str::to_owned);
        if let Some(suppression) =
            tenant.suppressions.values_mut().find(|s| s.matches(policy_id.as_deref(), category, at_ms))
        {
            suppression.prevented += 1;
            let id = suppression.suppression_id.clone();
            if tenant.preventions.len() >= MAX_PREVENTIONS {
                tenant.preventions.remove(0);
            }
            tenant.preventions.push(Prevention {
                suppression_id: id.clone(),
                record_id: record.record_id.clone(),
                run_id: record.run_id.clone(),
                policy_id,
                category,
                at_ms,
            });
            return Reported::Prevented(id);
        }
        let key = match (&record.run_id, &policy_id) {
            (Some(run), Some(policy)) => format!("{run}\u{1f}policy:{policy}"),
            (Some(run), None) => format!("{run}\u{1f}category:{}", category.as_str()),
            (None, _) => format!("record:{}", record.record_id),
        };
        // A resolved incident is history: the same violation again is a
        // new incident.
        if let Some(existing) = tenant
            .by_key
            .get(&key)
            .and_then(|id| tenant.incidents.get_mut(id))
            .filter(|i| i.status != IncidentStatus::Resolved)
        {
            existing.reports += 1;
            existing.last_seen_ms = existing.last_seen_ms.max(record.at_ms);
            existing.edge_agent_ids.insert(edge_agent_id.to_owned());
            if existing.record_ids.len() < MAX_SOURCE_RECORDS {
                existing.record_ids.push(record.record_id.clone());
            }
            return Reported::Repeated(existing.incident_id.clone());
        }
        tenant.next += 1;
        let incident_id = format!("inc-{}", tenant.next);
        let severity = text("severity")
            .and_then(|s| serde_json::from_value(Value::String(s.to_owned())).ok())
            .unwrap_or_else(|| category.default_severity());
        let blocking = body
            .get("blocking")
            .and_then(Value::as_bool)
            .unwrap_or(category != IncidentCategory::Hallucination);
        let proposal_id = match (&policy_id, severity >= Severity::High) {
            (Some(policy), true) => {
                let proposal = PolicyProposal {
                    proposal_id: format!("prop-{incident_id}"),
                    incident_id: incident_id.clone(),
                    policy_id: policy.clone(),
                    status: "PENDING_REVIEW".to_owned(),
                    suggestion: format!(
                        "{} incident {incident_id} ({}) credited to policy `{policy}`: review its limits, \
                         actions and scope; if the run was legitimate, raise the limit or add an override, \
                         otherwise consider a stricter action (PAUSE with acknowledgement, or KILL)",
                        severity_str(severity),
                        category.as_str()
                    ),
                    created_at_ms: at_ms,
                };
                let id = proposal.proposal_id.clone();
                tenant.proposals.insert(id.clone(), proposal);
                Some(id)
            }
            _ => None,
        };
        let incident = Incident {
            incident_id: incident_id.clone(),
            tenant_id: tenant_id.to_owned(),
            run_id: record.run_id.clone(),
            policy_id,
            category,
            severity,
            status: IncidentStatus::Open,
            blocking,
            summary: text("summary").unwrap_or("").chars().take(2_000).collect(),
            first_seen_ms: record.at_ms,
            last_seen_ms: record.at_ms,
            reports: 1,
            edge_agent_ids: BTreeSet::from([edge_agent_id.to_owned()]),
            record_ids: vec![record.record_id.clone()],
            inflection: body
                .get("inflection")
                .filter(|v| v.is_object() && v.to_string().len() <= MAX_INFLECTION_BYTES)
                .map(without_floats),
            proposal_id,
            history: vec![Transition {
                status: IncidentStatus::Open,
                at_ms,
                by: format!("edge-agent:{edge_agent_id}"),
                note: None,
            }],
        };
        tenant.by_key.insert(key, incident_id.clone());
        tenant.incidents.insert(incident_id.clone(), incident);
        Reported::Opened(incident_id)
    }

    /// The tenant's incidents matching `filter`, newest first, at most
    /// `limit`.
    pub fn list(&self, tenant_id: &str, filter: &IncidentFilter<'_>, limit: usize) -> Vec<&Incident> {
        let Some(tenant) = self.tenants.get(tenant_id) else {
            return Vec::new();
        };
        let mut found: Vec<&Incident> = tenant
            .incidents
            .values()
            .filter(|i| {
                filter.status.is_none_or(|s| i.status == s)
                    && filter.category.is_none_or(|c| i.category == c)
                    && filter.run_id.is_none_or(|r| i.run_id.as_deref() == Some(r))
                    && filter.policy_id.is_none_or(|p| i.policy_id.as_deref() == Some(p))
            })
            .collect();
        found.sort_by(|a, b| b.first_seen_ms.cmp(&a.first_seen_ms).then(b.incident_id.cmp(&a.incident_id)));
        found.truncate(limit);
        found
    }

    /// One incident.
    pub fn get(&self, tenant_id: &str, incident_id: &str) -> Option<&Incident> {
        self.tenants.get(tenant_id)?.incidents.get(incident_id)
    }

    /// The tenant's suppressions, by id.
    pub fn suppressions(&self, tenant_id: &str) -> Vec<&Suppression> {
        self.tenants.get(tenant_id).map(|t| t.suppressions.values().collect()).unwrap_or_default()
    }

    /// Reports kept out by suppressions, oldest first.
    pub fn preventions(&self, tenant_id: &str) -> &[Prevention] {
        self.tenants.get(tenant_id).map_or(&[], |t| &t.preventions)
    }

    /// Policy proposals, by id.
    pub fn proposals(&self, tenant_id: &str) -> Vec<&PolicyProposal> {
        self.tenants.get(tenant_id).map(|t| t.proposals.values().collect()).unwrap_or_default()
    }

    /// `EXECUTION_SUCCESS` reports counted.
    pub fn successes(&self, tenant_id: &str) -> u64 {
        self.tenants.get(tenant_id).map_or(0, |t| t.successes)
    }
}

/// The value with every non-integer number turned into its decimal text:
/// floats do not survive a JSON round trip through a Raft snapshot bit for
/// bit, and the incident is hashed into the audit chain when it changes.
fn without_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) if n.as_i64().is_none() && n.as_u64().is_none() => Value::String(n.to_string()),
        Value::Array(items) => Value::Array(items.iter().map(without_floats).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), without_floats(v))).collect())
        }
        other => other.clone(),
    }
}

fn severity_str(severity: Severity) -> &'static str {
    match severity {
        Severity::Low => "LOW",
        Severity::Medium => "MEDIUM",
        Severity::High => "HIGH",
        Severity::Critical => "CRITICAL",
    }
}

/// `TRANSITION_INCIDENT`.
pub(crate) fn transition_incident(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    incident_id: &str,
    to: IncidentStatus,
    note: Option<&str>,
) -> Result<Effect, Refusal> {
    domain.tenant(tenant_id)?;
    let mut errors = Vec::new();
    if let Some(note) = note {
        check_text(&mut errors, "note", note);
    }
    Refusal::check(errors)?;
    let Some(incident) =
        domain.incidents.tenants.get_mut(tenant_id).and_then(|t| t.incidents.get_mut(incident_id))
    else {
        return Err(Refusal::not_found(format!("unknown incident `{incident_id}` in tenant `{tenant_id}`")));
    };
    let from = incident.status;
    let action = match (from, to) {
        (IncidentStatus::Open, IncidentStatus::Acknowledged) => AuditAction::IncidentAcknowledged,
        (IncidentStatus::Open | IncidentStatus::Acknowledged, IncidentStatus::Resolved) => {
            AuditAction::IncidentResolved
        }
        _ => {
            return Err(Refusal::illegal_transition(format!(
                "incident `{incident_id}` is {}; it cannot become {}",
                from.as_str(),
                to.as_str()
            )));
        }
    };
    let before = to_json(&*incident);
    incident.status = to;
    incident.history.push(Transition {
        status: to,
        at_ms: ctx.at_ms,
        by: ctx.actor.actor_id.clone(),
        note: note.map(str::to_owned),
    });
    let after = to_json(&*incident);
    Ok(Effect::new(action, format!("incident `{incident_id}` {} → {}", from.as_str(), to.as_str()))
        .before(before)
        .after(after.clone())
        .result(after))
}

/// The fields of `CREATE_SUPPRESSION`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewSuppression<'a> {
    pub(crate) tenant_id: &'a str,
    pub(crate) suppression_id: &'a str,
    pub(crate) policy_id: Option<&'a str>,
    pub(crate) category: Option<IncidentCategory>,
    pub(crate) until_ms: u64,
    pub(crate) reason: &'a str,
}

/// `CREATE_SUPPRESSION`.
pub(crate) fn create_suppression(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    new: &NewSuppression<'_>,
) -> Result<Effect, Refusal> {
    domain.tenant(new.tenant_id)?;
    let mut errors = Vec::new();
    check_id(&mut errors, "suppression_id", new.suppression_id);
    check_text(&mut errors, "reason", new.reason);
    if let Some(policy) = new.policy_id {
        check_id(&mut errors, "policy_id", policy);
    }
    if new.policy_id.is_none() && new.category.is_none() {
        errors.push(FieldError::new("policy_id", "name a policy, a category, or both"));
    }
    if new.until_ms <= ctx.at_ms || new.until_ms - ctx.at_ms > MAX_SUPPRESSION_MS {
        errors.push(FieldError::new("until_ms", "must be in the future and at most 30 days away"));
    }
    Refusal::check(errors)?;
    let tenant = domain.incidents.tenants.entry(new.tenant_id.to_owned()).or_default();
    if tenant.suppressions.contains_key(new.suppression_id) {
        return Err(Refusal::conflict(format!("suppression `{}` already exists", new.suppression_id)));
    }
    let suppression = Suppression {
        suppression_id: new.suppression_id.to_owned(),
        policy_id: new.policy_id.map(str::to_owned),
        category: new.category,
        until_ms: new.until_ms,
        reason: new.reason.to_owned(),
        created_by: ctx.actor.actor_id.clone(),
        created_at_ms: ctx.at_ms,
        prevented: 0,
    };
    let after = to_json(&suppression);
    tenant.suppressions.insert(new.suppression_id.to_owned(), suppression);
    Ok(Effect::new(
        AuditAction::SuppressionCreated,
        format!("incident suppression `{}` until {}: {}", new.suppression_id, new.until_ms, new.reason),
    )
    .after(after.clone())
    .result(after))
}

#[cfg(test)]
mod tests;
