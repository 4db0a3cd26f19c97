//! The enforcement engine: run lifecycle and per-step decisions (SPINE).
//!
//! Every operation takes one lock over the counters and the runs, decides
//! with `aos_core::decide`, applies the outcome to the run and the
//! counters, writes the run and its records to the store, releases the
//! lock, and only then flushes the store and answers. So:
//! - check-and-add is atomic: concurrent steps of a run or a session are
//!   decided one after another, and a limit is overshot by at most the one
//!   step that crossed it (pre-step checks *reserve* their estimate; the
//!   usage report replaces the reservation by the actual amount);
//! - a STOP or KILL takes effect in the same step (GAP-016, GAP-030): the
//!   run is ended under the lock, so no later step is admitted, and KILL
//!   fires the run's cancel signal at once;
//! - what the answer acknowledges is on disk before it leaves.
//!
//! Alerts and notifications are not sent from here: records go to the
//! outbox and the EVENT path (INV-001) picks them up asynchronously.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aos_core::counters::CounterWindow;
use aos_core::evaluate::{
    Decision, RunScope, SignalKind, SignalLevel, SnapshotBindings, StepContext, StepInput, StepPhase,
};
use aos_core::money::MicroUsd;
use aos_core::pii::PiiScanner;
use aos_core::policy::Action;
use aos_core::{VerifiedSnapshot, decide};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::counters::{CounterTable, Usage};
use crate::error::AgentError;
use crate::events::{AgentEvent, EventReactor};
use crate::governance::{GovernanceView, Mode as GovernanceMode};
use crate::ids::{now_ms, random_id, sha256_hex};
use crate::records::{
    ControlEvent, Incident, LlmRunRecord, Record, RecordBody, RunState, SystemRecord, incident_kind,
};
use crate::runs::{OpenStep, Run, RunRecord, RunStatus, TerminationReason};
use crate::snapshots::{BootGuard, SnapshotSlot, Staleness};
use crate::store::AgentStore;

mod access;
pub use access::{ACTIONS as ACCESS_ACTIONS, AccessAnswer, AccessRequest};

/// What `Engine::open` takes back from the outbox log: changes that were
/// acknowledged once their record was durable in the log, whose database
/// write (made but not flushed) a crash may have lost.
///
/// - Usage: a plain usage report is acknowledged once its LLM run record is
///   durable; its run is written at the next checkpoint. The usage of every
///   LLM run record past its run's `counted_through_seq` is counted (once:
///   the run then says the last sequence it counts through).
/// - Governance: a state is acknowledged to the control plane (and in
///   force) once its `GOVERNANCE_APPLIED` record, which carries it, is
///   durable. A newer state there than the database's is the one in force.
///
/// What changed is written back and flushed before the engine serves.
fn replay_outbox(
    store: &AgentStore,
    runs: Vec<RunRecord>,
    mut governance: GovernanceView,
) -> Result<(Vec<RunRecord>, GovernanceView), AgentError> {
    let mut runs: HashMap<String, RunRecord> = runs.into_iter().map(|r| (r.run_id.clone(), r)).collect();
    let mut changed = std::collections::BTreeSet::new();
    let mut governance_changed = false;
    let mut from = None;
    loop {
        let batch = store.pending_from(from, 4_096)?;
        let Some(last) = batch.last() else { break };
        from = Some(last.next);
        for pending in batch {
            // Unreadable records are the delivery loop's to report.
            let Ok(record) = serde_json::from_slice::<Record>(&pending.json) else { continue };
            let (run_id, llm) = match (&record.run_id, record.body) {
                (Some(run_id), RecordBody::LlmRunRecord(llm)) => (run_id, llm),
                (_, RecordBody::SystemRecord(SystemRecord { governance: Some(view), .. })) => {
                    if view.version > governance.version {
                        governance = view;
                        governance_changed = true;
                    }
                    continue;
                }
                _ => continue,
            };
            let Some(run) = runs.get_mut(run_id) else { continue };
            if pending.seq <= run.counted_through_seq {
                continue;
            }
            if run.open_steps.remove(&llm.step_id).is_none() {
                // Admitted without a write (a plain admission) or before an
                // earlier crash (a late report): its step was not counted.
                run.steps += 1;
                if llm.late_report {
                    run.late_steps.insert(llm.step_id.clone());
                }
            }
            let tokens = llm.input_tokens.saturating_add(llm.output_tokens);
            run.usage.add(&Usage { tokens, cost_micros: llm.cost_micros, requests: 1, db_queries: 0 });
            run.counted_through_seq = pending.seq;
            changed.insert(run_id.clone());
        }
    }
    for run_id in &changed {
        if let Some(run) = runs.get(run_id) {
            store.put_run(run_id, run)?;
        }
    }
    if governance_changed {
        store.save_governance(&governance)?;
    }
    if !changed.is_empty() || governance_changed {
        store.flush_database_blocking()?;
        tracing::info!(
            message = "took back from the outbox what a crash lost of the database",
            runs_recounted = changed.len(),
            governance_version = governance_changed.then_some(governance.version),
        );
    }
    Ok((runs.into_values().collect(), governance))
}

/// Why an operation was refused; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No usable snapshot (GAP-067) or a fail-closed stale snapshot: 503.
    #[error("{message}")]
    Unavailable {
        /// Machine-readable code.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// Unknown run or step: 404.
    #[error("{0}")]
    NotFound(String),
    /// The run's state does not allow this: 409.
    #[error("{message}")]
    Conflict {
        /// Machine-readable code.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// Bad input: 400.
    #[error("{field}: {message}")]
    Invalid {
        /// Field path.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Storage failed: 500, nothing acknowledged.
    #[error(transparent)]
    Store(#[from] AgentError),
    /// A governed data access was refused (403) or its connector failed
    /// (400 for parameters, 502, 504); the evidence was written either way.
    #[error("{}", .0.message)]
    Access(Box<AccessError>),
}

/// A refused or failed data access, with its evidence record.
#[derive(Debug)]
pub struct AccessError {
    /// HTTP status: 403 refused, 400 bad parameters, 502/504 connector.
    pub status: u16,
    /// `UNKNOWN_PLANE`, `PLANE_DENIED`, `POLICY_DENIED`, `TIMEOUT`, …
    pub code: &'static str,
    /// Why.
    pub message: String,
    /// The evidence record written for the attempt.
    pub evidence_id: String,
    /// The run's status after the decision.
    pub run_status: &'static str,
    /// The policy decision, when a policy decided.
    pub decision: Option<Value>,
}

/// Longest run goal accepted.
const MAX_GOAL_CHARS: usize = 2_000;

/// `POST /api/v1/runs`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// Client-chosen id (idempotent start); generated when absent.
    pub run_id: Option<String>,
    /// Project.
    pub project_id: Option<String>,
    /// The customer's workload agent.
    pub agent_id: Option<String>,
    /// API key the workload used.
    pub api_key_id: Option<String>,
    /// Human actor the run acts for.
    pub human_actor_id: Option<String>,
    /// Session grouping several runs.
    pub session_id: Option<String>,
    /// What the run is for, in the workload's words (shown to operators;
    /// at most 2,000 characters).
    pub goal: Option<String>,
}

/// `POST /api/v1/runs/{id}/steps`: the intended request.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    /// Estimated tokens (input + output).
    #[serde(default)]
    pub estimated_tokens: u64,
    /// Estimated cost in USD.
    #[serde(default)]
    pub estimated_cost_usd: f64,
    /// Model to be called.
    pub model: Option<String>,
    /// Tool or skill to be used.
    pub tool: Option<String>,
    /// Prompt text, scanned for PII (never stored unless allowed).
    pub prompt: Option<String>,
}

/// `POST /api/v1/runs/{id}/steps/{step}/usage`: what the LLM call used.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// Input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Cost in USD.
    #[serde(default)]
    pub cost_usd: f64,
    /// Model used.
    pub model: Option<String>,
    /// Prompt text: hashed always, stored only if every policy allows.
    pub prompt: Option<String>,
    /// Response text: same rule.
    pub response: Option<String>,
    /// Response hash when the text is not sent.
    pub response_hash: Option<String>,
    /// Hallucination score of the response, 0..=1, when the workload
    /// scored it itself. A `response` of a run that retrieved documents is
    /// also scored by the grounding check (GAP-023), and the higher of the
    /// two is decided on: the workload cannot talk the score down.
    pub hallucination_score: Option<f64>,
    /// Ids of the retrieved documents the response relies on (checked
    /// against what the run retrieved, with `[doc:ID]` citations in the
    /// text).
    #[serde(default)]
    pub cited_doc_ids: Vec<String>,
}

/// `POST /api/v1/runs/{id}/end`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndRun {
    /// `succeeded`, `failed` or `retry`.
    pub status: RunStatus,
    /// Error text for `failed`.
    pub error: Option<String>,
}

/// The answer to a step check or usage report.
#[derive(Debug, Clone, Serialize)]
pub struct StepAnswer {
    /// Step id (use it for the usage report).
    pub step_id: String,
    /// Whether the step may proceed (`CONTINUE` or `WARN`).
    pub allowed: bool,
    /// The run's status after this step.
    pub run_status: RunStatus,
    /// The decision, serialised as it is: going through a `Value` tree
    /// first cost ~5 % of the agent's CPU per step (benches/README.md).
    pub decision: Decision,
    /// Human-readable reasons.
    pub reasons: Vec<String>,
    /// Present when governance state changed what was enforced
    /// (`DOWNGRADED` to WARN, or `BYPASSED`), with what it would have been.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub governance: Option<Value>,
    /// The grounding check of a usage report's response (GAP-023): score,
    /// claims, unsupported claims, unknown citations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grounding: Option<Value>,
}

#[derive(Debug)]
struct State {
    counters: CounterTable,
    runs: HashMap<String, Run>,
    /// Runs changed by plain usage reports since their last write to the
    /// database (see `report_usage` and `checkpoint_runs`).
    unsaved_runs: std::collections::HashSet<String>,
}

/// The engine; one per agent.
#[derive(Debug)]
pub struct Engine {
    slot: SnapshotSlot,
    store: AgentStore,
    state: Mutex<State>,
    pii: Option<PiiScanner>,
    outbox_budget_bytes: u64,
    outbox_bytes: AtomicU64,
    outbox_records: AtomicU64,
    steps_decided: AtomicU64,
    events: Arc<EventReactor>,
    stale_reported: std::sync::atomic::AtomicBool,
    /// Wakes the delivery loop when records are appended.
    outbox_signal: tokio::sync::Notify,
    /// This start's number (see [`AgentStore::next_boot_epoch`]).
    boot_epoch: u64,
    /// `step-e{boot_epoch}`: step ids are this plus a random suffix.
    step_prefix: String,
    /// Governance state in force (pushed by the control plane).
    governance: std::sync::RwLock<GovernanceView>,
    /// Connectors of the mediation layer.
    connectors: aos_connectors::Connectors,
    /// The tenant data key opening connector credentials (id, key).
    data_key: std::sync::RwLock<Option<(String, [u8; 32])>>,
}

impl Engine {
    /// Opens the engine over `store`: re-verifies the persisted snapshot and
    /// restores runs and their counters.
    pub fn open(
        slot: SnapshotSlot,
        store: AgentStore,
        outbox_budget_bytes: u64,
        event_buffer: usize,
    ) -> Result<Engine, AgentError> {
        let now = now_ms();
        let guard = slot.boot(&store, now)?;
        let current = slot.current();
        let longest_rolling_ms = current.as_ref().map_or(0, |s| {
            s.required_counters()
                .iter()
                .filter_map(|k| match k.window {
                    CounterWindow::Rolling { seconds } => Some(seconds.saturating_mul(1000)),
                    _ => None,
                })
                .max()
                .unwrap_or(0)
        });
        let mut counters = CounterTable::after_restart(now, longest_rolling_ms);
        let mut runs = HashMap::new();
        let (restored, governance) = replay_outbox(
            &store,
            store.load_runs::<RunRecord>()?,
            store.load_governance()?.unwrap_or_default(),
        )?;
        for record in restored {
            let mut usage = record.usage;
            for open in record.open_steps.values() {
                usage.add(&open.reserved);
            }
            counters.restore_run(
                &record.run_id,
                record.scope.session_id.as_deref(),
                &usage,
                record.updated_at_ms,
            );
            runs.insert(record.run_id.clone(), Run::restored(record, current.clone()));
        }
        let (count, bytes) = store.outbox_usage();
        let boot_epoch = store.next_boot_epoch()?;
        let data_key = match store.load_data_key() {
            Ok(key) => key,
            Err(e) => {
                tracing::error!(message = "stored tenant data key unusable; connector credentials unavailable until the control plane sends it again", error = %e);
                None
            }
        };
        let pii = match PiiScanner::new() {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(message = "PII scanner unavailable; PII monitors fail per policy", error = %e);
                None
            }
        };
        let engine = Engine {
            slot,
            store,
            state: Mutex::new(State { counters, runs, unsaved_runs: Default::default() }),
            pii,
            outbox_budget_bytes,
            outbox_bytes: AtomicU64::new(bytes),
            outbox_records: AtomicU64::new(count),
            steps_decided: AtomicU64::new(0),
            events: Arc::new(EventReactor::with_capacity(event_buffer)),
            stale_reported: std::sync::atomic::AtomicBool::new(false),
            outbox_signal: tokio::sync::Notify::new(),
            boot_epoch,
            step_prefix: format!("step-e{boot_epoch}"),
            governance: std::sync::RwLock::new(governance),
            connectors: aos_connectors::Connectors::new(),
            data_key: std::sync::RwLock::new(data_key),
        };
        let detail = match &guard {
            BootGuard::Ready => {
                format!("snapshot version {}", engine.slot.current().map_or(0, |s| s.version()))
            }
            BootGuard::NoSnapshot => "no snapshot yet: runs refused until one arrives".to_owned(),
            BootGuard::Invalid(e) => format!("persisted snapshot invalid: {e}"),
        };
        engine.append(vec![engine.system("STARTUP", detail)])?;
        Ok(engine)
    }

    /// The snapshot slot.
    pub fn slot(&self) -> &SnapshotSlot {
        &self.slot
    }

    /// The store.
    pub fn store(&self) -> &AgentStore {
        &self.store
    }

    /// The event reactor (EVENT path).
    pub fn events(&self) -> &Arc<EventReactor> {
        &self.events
    }

    /// Ends every running or paused run with no activity for `max_idle_ms`
    /// as `failed`/`TIMEOUT` with an `EXECUTION_FAILURE` incident, releasing
    /// the reservations of its unreported steps. Returns how many ended.
    pub async fn expire_stale_runs(&self, max_idle_ms: u64) -> Result<usize, AgentError> {
        let now = now_ms();
        let ended = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let mut ended = 0;
            let mut records = Vec::new();
            for run in state.runs.values_mut() {
                if run.record.status.is_terminal()
                    || run.record.updated_at_ms.saturating_add(max_idle_ms) > now
                {
                    continue;
                }
                let session = run.record.scope.session_id.clone();
                for (_, open) in std::mem::take(&mut run.record.open_steps) {
                    state.counters.subtract(
                        &run.record.run_id,
                        session.as_deref(),
                        &open.reserved,
                        open.at_ms,
                    );
                }
                let detail = format!("no step for {} s", max_idle_ms / 1000);
                run.end(RunStatus::Failed, TerminationReason::Timeout, detail.clone(), now, true);
                if run.record.incidents.insert("-/EXECUTION_FAILURE".to_owned()) {
                    records.push(Record::new(
                        self.slot.tenant_id(),
                        Some(&run.record.run_id),
                        now,
                        RecordBody::Incident(Incident {
                            incident_kind: "EXECUTION_FAILURE".to_owned(),
                            policy_id: None,
                            summary: format!("run timed out: {detail}"),
                            inflection: None,
                            blocking: None,
                        }),
                    ));
                }
                records.extend(self.save_run(run)?);
                self.events
                    .publish(AgentEvent::RunEnded { run_id: run.record.run_id.clone(), status: "failed" });
                ended += 1;
            }
            self.append(records)?;
            ended
        };
        if ended > 0 {
            self.store.flush().await?;
        }
        Ok(ended)
    }

    /// Writes a system record the first time the current snapshot is found
    /// past `not_after` (and again after a fresh one expires). Returns
    /// whether it is stale now.
    pub async fn check_staleness(&self) -> Result<bool, AgentError> {
        let now = now_ms();
        let Some(snapshot) = self.slot.current() else { return Ok(false) };
        let stale = snapshot.is_expired(now);
        if !stale {
            self.stale_reported.store(false, Ordering::Relaxed);
            return Ok(false);
        }
        if !self.stale_reported.swap(true, Ordering::Relaxed) {
            tracing::warn!(message = "policy snapshot is stale", version = snapshot.version());
            self.append(vec![self.system(
                "SNAPSHOT_STALE",
                format!(
                    "snapshot version {} passed not_after {}; fail_closed policies refuse new runs",
                    snapshot.version(),
                    snapshot.snapshot().not_after_ms
                ),
            )])?;
            self.store.flush().await?;
        }
        Ok(true)
    }

    /// Offers a snapshot (from the control plane or an operator file) and
    /// records the result.
    pub async fn offer_snapshot(&self, bytes: &[u8]) -> Result<crate::snapshots::Offer, AgentError> {
        let offer = self.slot.offer(&self.store, bytes, now_ms()).await?;
        let record = match &offer {
            crate::snapshots::Offer::Accepted { version } => {
                self.system("SNAPSHOT_APPLIED", format!("snapshot version {version} applied"))
            }
            crate::snapshots::Offer::Rejected { version, reason } => {
                self.system("SNAPSHOT_REJECTED", format!("snapshot {version:?} rejected: {reason}"))
            }
        };
        self.append(vec![record])?;
        self.store.flush().await?;
        Ok(offer)
    }

    /// The governance state in force.
    pub fn governance(&self) -> GovernanceView {
        self.governance.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn enforce(&self, decision: &Decision) -> Enforced {
        let view = self.governance.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let outcome = view.enforced(decision.outcome);
        Enforced { outcome, annotation: view.annotation(decision.outcome, outcome) }
    }

    /// Applies governance state pushed by the control plane: in force from
    /// the next decision, and durable (kept across restarts and outages)
    /// before this returns — the caller acknowledges it to the control
    /// plane only then. Entering HALTED kills every in-flight run at once
    /// (their cancel signals fire). An older or equal version is ignored.
    ///
    /// The state is made durable by its `GOVERNANCE_APPLIED` record in the
    /// outbox log (one fsync), which carries it: the database's write of it
    /// is flushed later, at the latest by the delivery checkpoint before the
    /// record leaves the log, and after a crash `Engine::open` takes the
    /// newer state from the log. A fleet-wide change reaches every edge
    /// agent at once, so this is on the path of the kill switch's fan-out
    /// (benches/README.md, governance propagation).
    pub async fn apply_governance(&self, view: GovernanceView) -> Result<bool, AgentError> {
        if view.version <= self.governance().version {
            return Ok(false);
        }
        self.store.save_governance(&view)?;
        let now = now_ms();
        let applied = self.system_carrying(
            "GOVERNANCE_APPLIED",
            format!(
                "governance version {} {}: {} (set by {})",
                view.version,
                view.mode.as_str(),
                view.reason,
                view.set_by
            ),
            Some(view.clone()),
        );
        let mut records = vec![applied];
        let mut runs_written = false;
        {
            let mut guard = self.lock();
            *self.governance.write().unwrap_or_else(std::sync::PoisonError::into_inner) = view.clone();
            self.events.publish(AgentEvent::GovernanceChanged {
                version: view.version,
                mode: view.mode.as_str(),
                reason: view.reason.clone(),
                set_by: view.set_by.clone(),
            });
            if view.mode == GovernanceMode::Halted {
                let detail = format!("governance HALTED by {}: {}", view.set_by, view.reason);
                for run in guard.runs.values_mut().filter(|r| !r.record.status.is_terminal()) {
                    run.end(
                        RunStatus::FailedPolicy,
                        TerminationReason::PolicyBlock,
                        detail.clone(),
                        now,
                        true,
                    );
                    run.record.updated_at_ms = now;
                    self.events.publish(AgentEvent::RunEnded {
                        run_id: run.record.run_id.clone(),
                        status: "failed_policy",
                    });
                    records.extend(self.save_run(run)?);
                    runs_written = true;
                }
            }
        }
        self.append(records)?;
        // Runs the halt ended are in the database only.
        if runs_written {
            self.store.flush().await?;
        } else {
            self.store.flush_outbox().await?;
        }
        Ok(true)
    }

    /// Writes the `SHUTDOWN` system record, durably, on a graceful stop
    /// (it is delivered after the next start if the link is down).
    pub async fn record_shutdown(&self, why: &str) -> Result<(), AgentError> {
        let live = self.lock().runs.values().filter(|r| !r.record.status.is_terminal()).count();
        self.append(vec![self.system("SHUTDOWN", format!("{why}; {live} runs not ended"))])?;
        // The next start then finds every run as it is, with nothing to
        // count again from the outbox.
        self.checkpoint_runs()?;
        self.store.flush().await
    }

    /// Writes the runs changed by plain usage reports since their last
    /// write to the database (not flushed). Under the engine lock, so no
    /// step's newer write of the same run can be overtaken by this one.
    fn checkpoint_runs(&self) -> Result<(), AgentError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        // A run leaves the set only once written: after a failed write the
        // next checkpoint tries it again (and no record is retired before).
        let unsaved: Vec<String> = state.unsaved_runs.iter().cloned().collect();
        for run_id in unsaved {
            if let Some(run) = state.runs.get(&run_id) {
                self.store.put_run(&run_id, &run.record)?;
            }
            state.unsaved_runs.remove(&run_id);
        }
        Ok(())
    }

    fn system(&self, event: &str, detail: String) -> Record {
        self.system_carrying(event, detail, None)
    }

    /// A system record carrying the governance state it reports.
    fn system_carrying(&self, event: &str, detail: String, governance: Option<GovernanceView>) -> Record {
        Record::new(
            self.slot.tenant_id(),
            None,
            now_ms(),
            RecordBody::SystemRecord(SystemRecord { event: event.to_owned(), detail, governance }),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The snapshot runs may use now, or why there is none.
    fn usable_snapshot(&self) -> Result<VerifiedSnapshot, EngineError> {
        match self.slot.guard() {
            BootGuard::Ready => {}
            BootGuard::NoSnapshot => {
                return Err(EngineError::Unavailable {
                    code: "BOOT_GUARD",
                    message: "no verified policy snapshot yet: runs are refused until one arrives (GAP-067)"
                        .to_owned(),
                });
            }
            BootGuard::Invalid(e) => {
                return Err(EngineError::Unavailable {
                    code: "BOOT_GUARD",
                    message: format!("the persisted policy snapshot failed verification: {e}"),
                });
            }
        }
        self.slot.current().ok_or_else(|| EngineError::Unavailable {
            code: "BOOT_GUARD",
            message: "no verified policy snapshot".to_owned(),
        })
    }

    fn outbox_has_room(&self) -> Result<(), EngineError> {
        let bytes = self.outbox_bytes.load(Ordering::Relaxed);
        if bytes >= self.outbox_budget_bytes {
            return Err(EngineError::Unavailable {
                code: "OUTBOX_FULL",
                message: format!(
                    "the outbox holds {bytes} bytes not yet delivered (budget {}); new runs are refused rather than drop evidence",
                    self.outbox_budget_bytes
                ),
            });
        }
        Ok(())
    }

    /// Starts a run.
    pub async fn start_run(&self, req: StartRun) -> Result<Value, EngineError> {
        let snapshot = self.usable_snapshot()?;
        let now = now_ms();
        if let Staleness::Expired { not_after_ms } = SnapshotSlot::staleness(&snapshot, now) {
            let closed = SnapshotSlot::fail_closed_policies(&snapshot);
            if !closed.is_empty() {
                return Err(EngineError::Unavailable {
                    code: "STALE_SNAPSHOT",
                    message: format!(
                        "policy snapshot version {} expired at {not_after_ms} (max staleness) and policies {} fail closed: new runs are refused until a fresh snapshot arrives",
                        snapshot.version(),
                        closed.join(", ")
                    ),
                });
            }
        }
        self.outbox_has_room()?;
        let governance = self.governance();
        if matches!(governance.mode, GovernanceMode::Halted | GovernanceMode::Degraded) {
            return Err(EngineError::Unavailable {
                code: if governance.mode == GovernanceMode::Halted {
                    "GOVERNANCE_HALTED"
                } else {
                    "GOVERNANCE_DEGRADED"
                },
                message: format!(
                    "governance is {} (version {}, set by {}): {}; new runs are refused",
                    governance.mode.as_str(),
                    governance.version,
                    governance.set_by,
                    governance.reason
                ),
            });
        }
        if let Some(id) = &req.run_id
            && (id.is_empty() || id.len() > 128 || id.contains('/'))
        {
            return Err(EngineError::Invalid {
                field: "run_id",
                message: "must be 1–128 characters without `/`".to_owned(),
            });
        }
        if let Some(goal) = &req.goal
            && goal.chars().count() > MAX_GOAL_CHARS
        {
            return Err(EngineError::Invalid {
                field: "goal",
                message: format!("at most {MAX_GOAL_CHARS} characters, got {}", goal.chars().count()),
            });
        }
        let run_id = req.run_id.clone().unwrap_or_else(|| random_id("run"));
        let view = {
            let mut state = self.lock();
            if let Some(existing) = state.runs.get(&run_id) {
                // Idempotent start: the same id returns the same run.
                return Ok(run_view(&existing.record));
            }
            let record = RunRecord {
                run_id: run_id.clone(),
                scope: RunScope {
                    tenant_id: self.slot.tenant_id().to_owned(),
                    project_id: req.project_id,
                    agent_id: req.agent_id,
                    api_key_id: req.api_key_id,
                    human_actor_id: req.human_actor_id,
                    session_id: req.session_id,
                },
                status: RunStatus::Running,
                termination_reason: None,
                termination_detail: None,
                run_start_snapshot_version: snapshot.version(),
                first_token_snapshot_version: None,
                requires_ack: false,
                started_at_ms: now,
                updated_at_ms: now,
                steps: 0,
                usage: Usage::default(),
                open_steps: Default::default(),
                incidents: Default::default(),
                late_steps: Default::default(),
                goal: req.goal,
                counted_through_seq: 0,
            };
            let view = run_view(&record);
            let mut run = Run::new(record, Some(snapshot));
            let started = self.save_run(&mut run)?;
            self.append(started.into_iter().collect())?;
            state.runs.insert(run_id.clone(), run);
            view
        };
        self.store.flush().await?;
        Ok(view)
    }

    /// A run as JSON.
    pub fn run(&self, run_id: &str) -> Result<Value, EngineError> {
        let state = self.lock();
        state.runs.get(run_id).map(|r| run_view(&r.record)).ok_or_else(|| not_found(run_id))
    }

    /// The run's status as spelled on the wire (`Err` when there is no
    /// such run).
    pub fn run_status(&self, run_id: &str) -> Result<&'static str, EngineError> {
        let state = self.lock();
        state.runs.get(run_id).map(|r| status_str(r.record.status)).ok_or_else(|| not_found(run_id))
    }

    /// The API key the run was started with (`Err` when there is no such
    /// run).
    pub fn run_api_key(&self, run_id: &str) -> Result<Option<String>, EngineError> {
        let state = self.lock();
        state.runs.get(run_id).map(|r| r.record.scope.api_key_id.clone()).ok_or_else(|| not_found(run_id))
    }

    /// The run's cancel signal.
    pub fn cancel_signal(&self, run_id: &str) -> Result<watch::Receiver<bool>, EngineError> {
        let state = self.lock();
        state.runs.get(run_id).map(|r| r.cancel.subscribe()).ok_or_else(|| not_found(run_id))
    }

    /// Pre-step check: decides whether the intended step may run and, if
    /// so, reserves its estimate.
    pub async fn pre_step(&self, run_id: &str, req: StepRequest) -> Result<StepAnswer, EngineError> {
        let cost = money("estimated_cost_usd", req.estimated_cost_usd)?;
        let current = self.usable_snapshot()?;
        let pii = match (&req.prompt, &self.pii) {
            (Some(text), Some(scanner)) => scanner.kinds(text),
            _ => Default::default(),
        };
        let now = now_ms();
        let step_id = random_id(&self.step_prefix);
        let (answer, durable) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let run = state.runs.get_mut(run_id).ok_or_else(|| not_found(run_id))?;
            require_running(run, "the next step")?;
            if run.first_token.is_none() {
                run.first_token = Some(current.clone());
                run.record.first_token_snapshot_version = Some(current.version());
            }
            let step = StepInput {
                phase: StepPhase::PreStep,
                tokens: Some(req.estimated_tokens),
                cost: Some(cost),
                data_access: None,
                pii,
                hallucination_score: None,
            };
            let session = run.record.scope.session_id.clone();
            let decision = self.decide_for(run, &state.counters, &current, &step, now);
            let enforced = self.enforce(&decision);
            let allowed = matches!(enforced.outcome, Action::Continue | Action::Warn);
            if allowed {
                let reserved =
                    Usage { tokens: req.estimated_tokens, cost_micros: cost.0, requests: 1, db_queries: 0 };
                state.counters.add(run_id, session.as_deref(), &reserved, now);
                run.record.open_steps.insert(step_id.clone(), OpenStep { reserved, at_ms: now });
                run.record.steps += 1;
            }
            let mut records = self.apply_outcome(run, &decision, &enforced, Some(&step_id), "PRE_STEP", now);
            run.record.updated_at_ms = now;
            // A plain admission produces no record and is neither written
            // nor fsynced: the run (its reservation, its step count) is
            // written with the step's usage report. If the agent crashes
            // first, that report is still taken (as a late report, see
            // `report_usage`), so nothing the workload does goes
            // uncounted; only the reservation is lost. Anything with a
            // record (WARN and up, signals, a run ending or pausing) is
            // written and durable before the answer leaves. Skipping the
            // write saves a JSON encoding of the run and a copy of a sled
            // leaf on every step (benches/README.md, edge agent).
            let plain = records.is_empty() && run.status_reported();
            if !plain {
                records.extend(self.save_run(run)?);
            }
            let durable = !records.is_empty();
            self.append(records)?;
            (answer(&step_id, allowed, run.record.status, decision, &enforced), durable)
        };
        if durable {
            self.store.flush().await?;
        }
        Ok(answer)
    }

    /// Usage report after the LLM call returned: replaces the step's
    /// reservation with actual usage, decides, and writes the LLM run
    /// record.
    pub async fn report_usage(
        &self,
        run_id: &str,
        step_id: &str,
        req: UsageReport,
    ) -> Result<StepAnswer, EngineError> {
        let cost = money("cost_usd", req.cost_usd)?;
        if let Some(score) = req.hallucination_score
            && !(0.0..=1.0).contains(&score)
        {
            return Err(EngineError::Invalid {
                field: "hallucination_score",
                message: format!("{score} is not within 0..=1"),
            });
        }
        let current = self.usable_snapshot()?;
        // The grounding check runs outside the engine lock, on a shared
        // copy of the run's passages, with bounded work (see
        // `aos_core::grounding`). The workload cannot talk the score down:
        // the higher of its own score and the check's is the one decided on.
        // Small checks (microseconds) run in place; large ones (up to tens
        // of milliseconds at the limits, see benches/README.md) on the
        // blocking pool, so they never hold up other runs' steps.
        let corpus = match &req.response {
            Some(_) => self.lock().runs.get(run_id).map(|r| r.passages.shared()).filter(|p| !p.is_empty()),
            None => None,
        };
        let grounding = match (&req.response, corpus) {
            (Some(response), Some(corpus)) if corpus.len() <= 64 && response.len() <= 8 * 1024 => {
                Some(aos_core::grounding::check(response, &req.cited_doc_ids, &corpus))
            }
            (Some(response), Some(corpus)) => {
                let (response, cited) = (response.clone(), req.cited_doc_ids.clone());
                match tokio::task::spawn_blocking(move || {
                    aos_core::grounding::check(&response, &cited, &corpus)
                })
                .await
                {
                    Ok(report) => Some(report),
                    Err(e) => {
                        tracing::warn!(message = "grounding check failed; response not scored", run_id, error = %e);
                        None
                    }
                }
            }
            _ => None,
        };
        let hallucination_score = match (req.hallucination_score, grounding.as_ref().map(|g| g.score)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let mut pii = aos_core::pii::PiiKinds::default();
        if let Some(scanner) = &self.pii {
            for text in [&req.prompt, &req.response].into_iter().flatten() {
                for kind in scanner.kinds(text).iter() {
                    pii.insert(kind);
                }
            }
        }
        let now = now_ms();
        let tokens = req.input_tokens.saturating_add(req.output_tokens);
        let (answer, usage_only) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let run = state.runs.get_mut(run_id).ok_or_else(|| not_found(run_id))?;
            let session = run.record.scope.session_id.clone();
            let late_report = match run.record.open_steps.remove(step_id) {
                Some(open) => {
                    state.counters.subtract(run_id, session.as_deref(), &open.reserved, open.at_ms);
                    false
                }
                // Admitted before a crash that lost the admission: the
                // call happened, so its usage counts (once).
                None if step_epoch(step_id).is_some_and(|e| e < self.boot_epoch)
                    && run.record.late_steps.insert(step_id.to_owned()) =>
                {
                    run.record.steps += 1;
                    true
                }
                None => {
                    return Err(EngineError::NotFound(format!(
                        "run `{run_id}` has no open step `{step_id}` (unknown, refused, or already reported)"
                    )));
                }
            };
            let step = StepInput {
                phase: StepPhase::Usage,
                tokens: Some(tokens),
                cost: Some(cost),
                data_access: None,
                pii,
                hallucination_score,
            };
            let decision = self.decide_for(run, &state.counters, &current, &step, now);
            let enforced = self.enforce(&decision);
            // The call happened: its usage counts whatever the decision.
            let actual = Usage { tokens, cost_micros: cost.0, requests: 1, db_queries: 0 };
            state.counters.add(run_id, session.as_deref(), &actual, now);
            run.record.usage.add(&actual);
            let inspection = &decision.inspection;
            let llm = Record::new(
                self.slot.tenant_id(),
                Some(run_id),
                now,
                RecordBody::LlmRunRecord(LlmRunRecord {
                    step_id: step_id.to_owned(),
                    model: req.model.clone(),
                    input_tokens: req.input_tokens,
                    output_tokens: req.output_tokens,
                    cost_micros: cost.0,
                    prompt_hash: req.prompt.as_deref().map(sha256_hex),
                    response_hash: req.response.as_deref().map(sha256_hex).or(req.response_hash.clone()),
                    prompt: req.prompt.clone().filter(|_| inspection.allow_prompt_logging),
                    response: req.response.clone().filter(|_| inspection.allow_response_logging),
                    outcome: decision.outcome.as_str().to_owned(),
                    policy_id: decision.winning_policy.as_ref().map(|w| w.policy_id.to_string()),
                    snapshot_version: decision.snapshot_version,
                    late_report,
                    // The unsupported claims are response text: kept only
                    // where response logging is allowed (GAP-033).
                    grounding: grounding.as_ref().map(|g| {
                        let mut kept = json!(g);
                        if !inspection.allow_response_logging {
                            kept["unsupported_claims"] = json!([]);
                            kept["unsupported_claims_redacted"] = json!(true);
                        }
                        kept
                    }),
                }),
            );
            let mut records = vec![llm];
            records.extend(self.apply_outcome(run, &decision, &enforced, Some(step_id), "USAGE", now));
            run.record.updated_at_ms = now;
            records.extend(self.run_state_record(run));
            // Only the LLM run record: the usage is durable with it in the
            // outbox log (one fsync) and the run is not written; the run
            // notes which record it counts through. Until a checkpoint
            // writes the run (`checkpoint_runs`: before the delivery loop
            // retires records, and at shutdown) the record is the durable
            // copy of this change, and after a crash `Engine::open` counts
            // it again. Anything more (a signal, a run ending) writes the
            // run and flushes both.
            let usage_only = records.len() == 1;
            if let Some(seq) = self.append(records)? {
                run.record.counted_through_seq = seq;
            }
            if usage_only {
                state.unsaved_runs.insert(run_id.to_owned());
            } else {
                self.store.put_run(&run.record.run_id, &run.record)?;
                state.unsaved_runs.remove(run_id);
            }
            let allowed = matches!(enforced.outcome, Action::Continue | Action::Warn);
            let mut answer = answer(step_id, allowed, run.record.status, decision, &enforced);
            answer.grounding = grounding.as_ref().map(|g| json!(g));
            (answer, usage_only)
        };
        if usage_only {
            self.store.flush_outbox().await?;
        } else {
            self.store.flush().await?;
        }
        Ok(answer)
    }

    /// Side-effect-free decision for a hypothetical step.
    pub fn simulate(
        &self,
        scope: RunScope,
        run_id: Option<&str>,
        step: StepInput,
    ) -> Result<Value, EngineError> {
        let current = self.usable_snapshot()?;
        let now = now_ms();
        let scope = RunScope { tenant_id: self.slot.tenant_id().to_owned(), ..scope };
        let state = self.lock();
        let run_key = run_id.unwrap_or("");
        let counters = state.counters.view(run_key, scope.session_id.as_deref(), now);
        let decision = decide(
            &SnapshotBindings::single(&current),
            &StepContext { now_ms: now, scope: &scope, step: &step, counters: &counters },
        );
        Ok(json!({ "decision": decision, "reasons": decision.reasons() }))
    }

    /// Resumes a paused run; `acknowledged_by` is required when the pause
    /// requires acknowledgement (GAP-015).
    pub async fn resume(&self, run_id: &str, acknowledged_by: Option<String>) -> Result<Value, EngineError> {
        let now = now_ms();
        let view = {
            let mut state = self.lock();
            let run = state.runs.get_mut(run_id).ok_or_else(|| not_found(run_id))?;
            if run.record.status != RunStatus::Paused {
                return Err(EngineError::Conflict {
                    code: "NOT_PAUSED",
                    message: format!("run `{run_id}` is {}, not paused", status_str(run.record.status)),
                });
            }
            if run.record.requires_ack && acknowledged_by.as_deref().is_none_or(|a| a.trim().is_empty()) {
                return Err(EngineError::Invalid {
                    field: "acknowledged_by",
                    message: "this pause requires an acknowledgement: name who acknowledges it".to_owned(),
                });
            }
            run.record.status = RunStatus::Running;
            run.record.requires_ack = false;
            run.record.updated_at_ms = now;
            let event = Record::new(
                self.slot.tenant_id(),
                Some(run_id),
                now,
                RecordBody::ControlEvent(ControlEvent {
                    step_id: None,
                    phase: "RESUME".to_owned(),
                    decision: json!({"acknowledged_by": acknowledged_by}),
                    reasons: vec!["run resumed".to_owned()],
                    governance: None,
                }),
            );
            let mut records = vec![event];
            records.extend(self.save_run(run)?);
            self.append(records)?;
            run_view(&run.record)
        };
        self.store.flush().await?;
        Ok(view)
    }

    /// Cancels a run: in-flight work waiting on its cancel signal returns.
    pub async fn cancel(&self, run_id: &str, reason: Option<String>) -> Result<Value, EngineError> {
        self.finish(
            run_id,
            RunStatus::Cancelled,
            TerminationReason::UserAbort,
            reason.unwrap_or_else(|| "cancelled by the caller".into()),
            true,
        )
        .await
    }

    /// Ends a run with the workload's verdict.
    pub async fn end(&self, run_id: &str, req: EndRun) -> Result<Value, EngineError> {
        let (reason, detail) = match req.status {
            RunStatus::Succeeded => (TerminationReason::Completed, "completed".to_owned()),
            RunStatus::Failed => (
                TerminationReason::SystemFailure,
                req.error.unwrap_or_else(|| "the workload reported a failure".into()),
            ),
            RunStatus::Retry => {
                (TerminationReason::SystemFailure, req.error.unwrap_or_else(|| "to be retried".into()))
            }
            other => {
                return Err(EngineError::Invalid {
                    field: "status",
                    message: format!(
                        "`{}` is not a final status a workload may set (succeeded, failed, retry)",
                        status_str(other)
                    ),
                });
            }
        };
        self.finish(run_id, req.status, reason, detail, false).await
    }

    async fn finish(
        &self,
        run_id: &str,
        status: RunStatus,
        reason: TerminationReason,
        detail: String,
        cancel_in_flight: bool,
    ) -> Result<Value, EngineError> {
        let now = now_ms();
        let view = {
            let mut state = self.lock();
            let run = state.runs.get_mut(run_id).ok_or_else(|| not_found(run_id))?;
            if run.record.status.is_terminal() {
                return Err(EngineError::Conflict {
                    code: "RUN_ENDED",
                    message: format!("run `{run_id}` has already ended ({})", status_str(run.record.status)),
                });
            }
            run.end(status, reason, detail.clone(), now, cancel_in_flight);
            self.events
                .publish(AgentEvent::RunEnded { run_id: run_id.to_owned(), status: status_str(status) });
            let mut records = Vec::new();
            if status == RunStatus::Failed && run.record.incidents.insert("-/EXECUTION_FAILURE".to_owned()) {
                records.push(Record::new(
                    self.slot.tenant_id(),
                    Some(run_id),
                    now,
                    RecordBody::Incident(Incident {
                        incident_kind: "EXECUTION_FAILURE".to_owned(),
                        policy_id: None,
                        summary: detail,
                        inflection: None,
                        blocking: None,
                    }),
                ));
            }
            records.extend(self.save_run(run)?);
            self.append(records)?;
            run_view(&run.record)
        };
        self.store.flush().await?;
        Ok(view)
    }

    /// Writes the run (not flushed) and, when its status changed since the
    /// last report, returns the `RUN_STATE` record that says so.
    fn save_run(&self, run: &mut Run) -> Result<Option<Record>, AgentError> {
        self.store.put_run(&run.record.run_id, &run.record)?;
        Ok(self.run_state_record(run))
    }

    /// The `RUN_STATE` record saying the run's status changed since the
    /// last report, if it did.
    fn run_state_record(&self, run: &mut Run) -> Option<Record> {
        if run.status_reported() {
            return None;
        }
        run.reported_status = Some(run.record.status);
        let r = &run.record;
        Some(Record::new(
            self.slot.tenant_id(),
            Some(&r.run_id),
            r.updated_at_ms,
            RecordBody::RunState(RunState {
                status: status_str(r.status).to_owned(),
                termination_reason: r
                    .termination_reason
                    .and_then(|t| serde_json::to_value(t).ok())
                    .and_then(|v| v.as_str().map(str::to_owned)),
                termination_detail: r.termination_detail.clone(),
                project_id: r.scope.project_id.clone(),
                agent_id: r.scope.agent_id.clone(),
                api_key_id: r.scope.api_key_id.clone(),
                human_actor_id: r.scope.human_actor_id.clone(),
                session_id: r.scope.session_id.clone(),
                steps: r.steps,
                tokens: r.usage.tokens,
                cost_micros: r.usage.cost_micros,
                run_start_snapshot_version: r.run_start_snapshot_version,
                started_at_ms: r.started_at_ms,
                goal: r.goal.clone(),
            }),
        ))
    }

    /// Decides one step of `run` against its bound snapshots and the
    /// counters as they stand (the caller holds the lock).
    fn decide_for(
        &self,
        run: &Run,
        counters: &CounterTable,
        current: &VerifiedSnapshot,
        step: &StepInput,
        now: u64,
    ) -> Decision {
        let bindings = SnapshotBindings {
            current,
            run_start: run.run_start.as_ref(),
            first_token: run.first_token.as_ref(),
        };
        let view = counters.view(&run.record.run_id, run.record.scope.session_id.as_deref(), now);
        self.steps_decided.fetch_add(1, Ordering::Relaxed);
        decide(&bindings, &StepContext { now_ms: now, scope: &run.record.scope, step, counters: &view })
    }

    /// Applies a decision's outcome to the run (under the lock) and returns
    /// the records it produces: a control event for anything above
    /// CONTINUE or any signal, an incident per policy and kind on STOP/KILL.
    fn apply_outcome(
        &self,
        run: &mut Run,
        decision: &Decision,
        enforced: &Enforced,
        step_id: Option<&str>,
        phase: &str,
        now: u64,
    ) -> Vec<Record> {
        let tenant = self.slot.tenant_id();
        let run_id = run.record.run_id.clone();
        let mut records = Vec::new();
        for alert in &decision.alerts {
            self.events.publish(AgentEvent::Alert { run_id: run_id.clone(), alert: alert.clone() });
        }
        if decision.outcome != Action::Continue || !decision.signals.is_empty() {
            records.push(Record::new(
                tenant,
                Some(&run_id),
                now,
                RecordBody::ControlEvent(ControlEvent {
                    step_id: step_id.map(str::to_owned),
                    phase: phase.to_owned(),
                    decision: serde_json::to_value(decision).unwrap_or(Value::Null),
                    reasons: decision.reasons(),
                    governance: enforced.annotation.clone(),
                }),
            ));
        }
        match enforced.outcome {
            Action::Continue | Action::Warn => {}
            Action::Pause => {
                if run.record.status == RunStatus::Running {
                    run.record.status = RunStatus::Paused;
                    run.record.requires_ack = decision.requires_ack;
                }
            }
            Action::Stop | Action::Kill => {
                let kind = incident_kind(decision);
                let termination = match kind {
                    "BUDGET_EXCEEDED" | "TOKEN_LIMIT" => TerminationReason::BudgetExceeded,
                    "RATE_LIMIT" => TerminationReason::RateLimited,
                    _ => TerminationReason::PolicyBlock,
                };
                // Rendered only here: CONTINUE, the common case, formats nothing.
                let reasons = decision.reasons().join("; ");
                let kill = enforced.outcome == Action::Kill;
                if !run.record.status.is_terminal() {
                    self.events
                        .publish(AgentEvent::RunEnded { run_id: run_id.clone(), status: "failed_policy" });
                }
                run.end(RunStatus::FailedPolicy, termination, reasons.clone(), now, kill);
                let policy = decision.winning_policy.as_ref().map(|w| w.policy_id.to_string());
                let key = format!("{}/{kind}", policy.as_deref().unwrap_or("-"));
                let steps = run.record.steps;
                file_incident_once(&mut run.record.incidents, key, &mut records, || {
                    Record::new(
                        tenant,
                        Some(&run_id),
                        now,
                        RecordBody::Incident(Incident {
                            incident_kind: kind.to_owned(),
                            policy_id: policy,
                            summary: reasons,
                            inflection: Some(inflection(decision, steps, step_id)),
                            blocking: Some(true),
                        }),
                    )
                });
            }
        }
        // GAP-023, INV-002: a hallucination no policy blocks on is still an
        // incident, raised on the EVENT path (a record, delivered later)
        // and marked non-blocking; the run goes on.
        for signal in decision
            .signals
            .iter()
            .filter(|s| s.kind == SignalKind::Hallucination && s.level == SignalLevel::Breach && !s.blocking)
        {
            let key = format!("{}/HALLUCINATION", signal.policy_id);
            let steps = run.record.steps;
            file_incident_once(&mut run.record.incidents, key, &mut records, || {
                Record::new(
                    tenant,
                    Some(&run_id),
                    now,
                    RecordBody::Incident(Incident {
                        incident_kind: "HALLUCINATION".to_owned(),
                        policy_id: Some(signal.policy_id.to_string()),
                        summary: format!(
                            "response grounding: hallucination score {:.3} reached the policy's threshold {:.3} (not blocking)",
                            f64::from(u32::try_from(signal.value).unwrap_or(u32::MAX)) / 1000.0,
                            f64::from(u32::try_from(signal.threshold).unwrap_or(u32::MAX)) / 1000.0
                        ),
                        inflection: Some(json!({
                            "step_index": steps,
                            "step_id": step_id,
                            "signal": signal.kind,
                            "value": signal.value,
                            "threshold": signal.threshold,
                            "snapshot_version": signal.snapshot_version,
                            "policy_version": signal.policy_version,
                        })),
                        blocking: Some(false),
                    }),
                )
            });
        }
        records
    }

    /// Appends records to the outbox (the caller flushes); returns the
    /// last one's sequence.
    fn append(&self, records: Vec<Record>) -> Result<Option<u64>, AgentError> {
        if records.is_empty() {
            return Ok(None);
        }
        let appended = self.store.append_records(&records)?;
        self.outbox_bytes.fetch_add(appended.bytes, Ordering::Relaxed);
        self.outbox_records.fetch_add(records.len() as u64, Ordering::Relaxed);
        self.outbox_signal.notify_one();
        Ok(Some(appended.last_seq))
    }

    /// Signalled whenever records enter the outbox (the delivery loop
    /// waits on it instead of polling).
    pub fn outbox_signal(&self) -> &tokio::sync::Notify {
        &self.outbox_signal
    }

    /// Retires the records the control plane has committed: every pending
    /// record before `next` (see [`crate::outbox::PendingRecord::next`]),
    /// `records` of them holding `bytes` of JSON.
    ///
    /// Records leave the log only once the runs counting them are durable
    /// in the database: the checkpoint writes the runs plain usage reports
    /// left unwritten (under the engine lock, which also waits out any step
    /// between appending its record and writing its run), and the flush
    /// that follows makes those writes durable.
    pub async fn outbox_delivered(
        &self,
        next: crate::outbox::Position,
        records: u64,
        bytes: u64,
    ) -> Result<(), AgentError> {
        self.checkpoint_runs()?;
        self.store.flush().await?;
        self.store.records_delivered(next)?;
        let sub = |counter: &AtomicU64, n: u64| {
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
        };
        sub(&self.outbox_bytes, bytes);
        sub(&self.outbox_records, records);
        Ok(())
    }

    /// Outbox gauges: pending records, pending bytes, budget.
    pub fn outbox_stats(&self) -> (u64, u64, u64) {
        (
            self.outbox_records.load(Ordering::Relaxed),
            self.outbox_bytes.load(Ordering::Relaxed),
            self.outbox_budget_bytes,
        )
    }

    /// Steps decided since start.
    pub fn steps_decided(&self) -> u64 {
        self.steps_decided.load(Ordering::Relaxed)
    }

    /// Runs by status.
    pub fn run_counts(&self) -> HashMap<&'static str, u64> {
        let state = self.lock();
        let mut counts = HashMap::new();
        for run in state.runs.values() {
            *counts.entry(status_str(run.record.status)).or_insert(0) += 1;
        }
        counts
    }
}

fn answer(
    step_id: &str,
    allowed: bool,
    run_status: RunStatus,
    decision: Decision,
    enforced: &Enforced,
) -> StepAnswer {
    StepAnswer {
        step_id: step_id.to_owned(),
        allowed,
        run_status,
        reasons: decision.reasons(),
        decision,
        governance: enforced.annotation.clone(),
        grounding: None,
    }
}

/// What governance state made of a decision.
#[derive(Debug)]
struct Enforced {
    outcome: Action,
    annotation: Option<Value>,
}

/// The boot epoch a step id was issued in (`step-e{epoch}-…`).
fn step_epoch(step_id: &str) -> Option<u64> {
    step_id.strip_prefix("step-e")?.split('-').next()?.parse().ok()
}

fn money(field: &'static str, usd: f64) -> Result<MicroUsd, EngineError> {
    MicroUsd::from_usd(usd).map_err(|e| EngineError::Invalid { field, message: e.to_string() })
}

/// 409 unless the run is running: `RUN_PAUSED` (resume it before `next`)
/// or `RUN_ENDED`.
fn require_running(run: &Run, next: &str) -> Result<(), EngineError> {
    let run_id = &run.record.run_id;
    match run.record.status {
        RunStatus::Running => Ok(()),
        RunStatus::Paused => Err(EngineError::Conflict {
            code: "RUN_PAUSED",
            message: format!("run `{run_id}` is paused: resume it before {next}"),
        }),
        status => Err(EngineError::Conflict {
            code: "RUN_ENDED",
            message: format!("run `{run_id}` has ended ({})", status_str(status)),
        }),
    }
}

fn not_found(run_id: &str) -> EngineError {
    EngineError::NotFound(format!("unknown run `{run_id}`"))
}

/// The status as spelled on the wire.
pub fn status_str(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Queued => "queued",
        RunStatus::Running => "running",
        RunStatus::Paused => "paused",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::FailedPolicy => "failed_policy",
        RunStatus::Cancelled => "cancelled",
        RunStatus::Retry => "retry",
    }
}

/// The inflection point of a stopping decision (GAP-024): the winning
/// policy's blocking signal, the step it happened in and the policy
/// version (with its threshold hash) and snapshot version in force.
/// Files an incident record once per run and `key` (policy and kind):
/// a run that keeps breaching gets one incident, not one per step. The
/// record is built only when it is filed.
fn file_incident_once(
    filed: &mut std::collections::BTreeSet<String>,
    key: String,
    records: &mut Vec<Record>,
    record: impl FnOnce() -> Record,
) {
    if filed.insert(key) {
        records.push(record());
    }
}

fn inflection(decision: &Decision, steps: u64, step_id: Option<&str>) -> Value {
    let winner = decision.winning_policy.as_ref();
    let signal =
        decision.signals.iter().find(|s| winner.is_some_and(|w| w.policy_id == s.policy_id) && s.blocking);
    json!({
        "step_index": steps,
        "step_id": step_id,
        "signal": signal.map(|s| s.kind),
        "window": signal.and_then(|s| s.window),
        "value": signal.map(|s| s.value),
        "threshold": signal.map(|s| s.threshold),
        "snapshot_version": winner.map(|w| w.snapshot_version),
        "policy_version": winner.map(|w| w.policy_version),
        "policy_version_hash": winner.map(|w| w.threshold_hash.as_str()),
    })
}

fn run_view(record: &RunRecord) -> Value {
    json!({
        "run_id": record.run_id,
        "goal": record.goal,
        "scope": record.scope,
        "status": record.status,
        "termination_reason": record.termination_reason,
        "termination_detail": record.termination_detail,
        "run_start_snapshot_version": record.run_start_snapshot_version,
        "first_token_snapshot_version": record.first_token_snapshot_version,
        "requires_ack": record.requires_ack,
        "started_at_ms": record.started_at_ms,
        "updated_at_ms": record.updated_at_ms,
        "steps": record.steps,
        "usage": record.usage,
        "open_steps": record.open_steps.keys().collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::step_epoch;

    #[test]
    fn step_ids_carry_their_boot_epoch() {
        assert_eq!(step_epoch("step-e7-0a1b2c"), Some(7));
        assert_eq!(step_epoch(&crate::ids::random_id("step-e12")), Some(12));
        for bad in ["step-0a1b", "step-e-1", "step-ex-1", "run-e3-1", ""] {
            assert_eq!(step_epoch(bad), None, "{bad}");
        }
    }
}
