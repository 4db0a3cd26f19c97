//! Runs: their lifecycle, what is persisted about them, and the per-run
//! cancel signal.
//!
//! ```text
//! queued → running ⇄ paused
//!             └──→ succeeded | failed | failed_policy | cancelled | retry
//! ```
//!
//! A run's scope (tenant, project, workload agent, API key, human actor,
//! session) and the snapshot version it started under are fixed at start
//! (GAP-004, GAP-028, GAP-031). Once a run has ended it accepts no step
//! (GAP-016, GAP-030); reports of steps that were already open still land,
//! because the LLM call they describe did happen.

use std::collections::{BTreeMap, BTreeSet};

use aos_core::VerifiedSnapshot;
use aos_core::evaluate::RunScope;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::counters::Usage;

/// Run status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted, not started.
    Queued,
    /// Taking steps.
    Running,
    /// Suspended by a PAUSE until resumed.
    Paused,
    /// Finished normally.
    Succeeded,
    /// Finished with an error of the workload.
    Failed,
    /// Ended by a policy (STOP or KILL).
    FailedPolicy,
    /// Cancelled by the caller or an operator.
    Cancelled,
    /// Ended to be retried by the workload.
    Retry,
}

impl RunStatus {
    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running | RunStatus::Paused)
    }
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TerminationReason {
    /// A policy stopped it (not a limit).
    PolicyBlock,
    /// A cost limit.
    BudgetExceeded,
    /// A rate or request limit.
    RateLimited,
    /// No step for too long.
    Timeout,
    /// The workload or the agent failed.
    SystemFailure,
    /// Cancelled by the caller.
    UserAbort,
    /// Finished normally.
    Completed,
}

/// A step that passed its pre-step check and has not reported usage yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenStep {
    /// What the pre-step check reserved against the counters.
    pub reserved: Usage,
    /// When (the reservation's time bucket).
    pub at_ms: u64,
}

/// What is persisted about a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id.
    pub run_id: String,
    /// Resolved scope.
    pub scope: RunScope,
    /// Status.
    pub status: RunStatus,
    /// Why it ended.
    pub termination_reason: Option<TerminationReason>,
    /// Human-readable detail of the ending.
    pub termination_detail: Option<String>,
    /// Snapshot version in force at start (RUN_START bindings).
    pub run_start_snapshot_version: u64,
    /// Snapshot version at the first step (FIRST_TOKEN bindings).
    pub first_token_snapshot_version: Option<u64>,
    /// Whether resuming from PAUSE needs an acknowledgement (GAP-015).
    pub requires_ack: bool,
    /// Unix ms.
    pub started_at_ms: u64,
    /// Unix ms of the last change.
    pub updated_at_ms: u64,
    /// Steps admitted by their pre-step check.
    pub steps: u64,
    /// Usage reported (actual, not reservations).
    pub usage: Usage,
    /// Steps admitted and not yet reported.
    pub open_steps: BTreeMap<String, OpenStep>,
    /// `policy/kind` of incidents already raised (one per run, policy and
    /// kind).
    pub incidents: BTreeSet<String>,
    /// Steps of an earlier boot whose admission was lost in a crash and
    /// whose usage was then reported late (so a repeat is refused).
    #[serde(default)]
    pub late_steps: BTreeSet<String>,
    /// What the run is for, as the workload said at start.
    #[serde(default)]
    pub goal: Option<String>,
    /// Outbox sequence of the last LLM run record whose usage this record
    /// counts. A usage report's record is made durable in the outbox
    /// alone; after a crash, the engine re-applies the LLM run records
    /// still in the outbox with a later sequence (see `Engine::open`).
    #[serde(default)]
    pub counted_through_seq: u64,
}

/// A run in memory: the record plus what is not persisted.
#[derive(Debug)]
pub struct Run {
    /// Persisted part.
    pub record: RunRecord,
    /// Snapshot at run start (RUN_START bindings).
    pub run_start: Option<VerifiedSnapshot>,
    /// Snapshot at the first step (FIRST_TOKEN bindings).
    pub first_token: Option<VerifiedSnapshot>,
    /// Flipped to `true` when the run is killed or cancelled.
    pub cancel: watch::Sender<bool>,
    /// The status last reported in a `RUN_STATE` record (`None`: never).
    pub reported_status: Option<RunStatus>,
    /// What the run retrieved, for the hallucination detector (memory only).
    pub passages: crate::grounding::RetrievedPassages,
}

impl Run {
    /// A run from its record (new, or restored after a restart, in which
    /// case the bound snapshots are the current one: only the newest
    /// snapshot is kept on disk).
    pub fn new(record: RunRecord, run_start: Option<VerifiedSnapshot>) -> Run {
        let (cancel, _) = watch::channel(record.status == RunStatus::Cancelled);
        let first_token = record.first_token_snapshot_version.and(run_start.clone());
        Run { record, run_start, first_token, cancel, reported_status: None, passages: Default::default() }
    }

    /// Whether a `RUN_STATE` record already reports the run's status.
    pub fn status_reported(&self) -> bool {
        self.reported_status == Some(self.record.status)
    }

    /// A run restored after a restart: its status was reported before.
    pub fn restored(record: RunRecord, run_start: Option<VerifiedSnapshot>) -> Run {
        let status = record.status;
        Run { reported_status: Some(status), ..Run::new(record, run_start) }
    }

    /// Ends the run (no-op if it has ended already); fires the cancel
    /// signal when `cancel_in_flight`.
    pub fn end(
        &mut self,
        status: RunStatus,
        reason: TerminationReason,
        detail: String,
        now_ms: u64,
        cancel_in_flight: bool,
    ) {
        if self.record.status.is_terminal() {
            return;
        }
        self.record.status = status;
        self.record.termination_reason = Some(reason);
        self.record.termination_detail = Some(detail);
        self.record.updated_at_ms = now_ms;
        self.passages = Default::default();
        if cancel_in_flight {
            self.cancel.send_replace(true);
        }
    }
}
