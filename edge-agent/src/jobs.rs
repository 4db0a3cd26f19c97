//! Scheduled jobs (GAP-052) on `tokio-cron-scheduler`: stale-run
//! detection, the snapshot staleness check and heartbeats onto the event
//! reactor. Each job's runs, last run and last error are visible in
//! `/health` and `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::engine::Engine;
use crate::events::AgentEvent;
use crate::ids::now_ms;

/// When jobs run.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Cron expression (with seconds) for the stale-run sweep.
    pub stale_run_schedule: String,
    /// A run with no step for this long is ended as `TIMEOUT`.
    pub stale_run_after: Duration,
    /// Cron expression for the snapshot staleness check.
    pub staleness_schedule: String,
    /// Heartbeat interval.
    pub heartbeat_every: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            stale_run_schedule: "*/30 * * * * *".to_owned(),
            stale_run_after: Duration::from_secs(30 * 60),
            staleness_schedule: "*/10 * * * * *".to_owned(),
            heartbeat_every: Duration::from_secs(10),
        }
    }
}

/// What one job has done.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobStatus {
    /// Completed runs.
    pub runs: u64,
    /// Unix ms of the last completed run.
    pub last_run_ms: Option<u64>,
    /// Error of the last run, if it failed.
    pub last_error: Option<String>,
    /// Items the last run acted on (runs expired, …).
    pub last_count: u64,
}

/// Job statuses by job name.
#[derive(Debug, Default, Clone)]
pub struct JobBoard(Arc<Mutex<BTreeMap<&'static str, JobStatus>>>);

impl JobBoard {
    fn record(&self, name: &'static str, result: Result<u64, String>) {
        let mut board = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let status = board.entry(name).or_default();
        status.runs += 1;
        status.last_run_ms = Some(now_ms());
        match result {
            Ok(count) => {
                status.last_error = None;
                status.last_count = count;
            }
            Err(e) => status.last_error = Some(e),
        }
    }

    /// A copy of every job's status.
    pub fn snapshot(&self) -> BTreeMap<&'static str, JobStatus> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Starts the scheduler with the agent's jobs; keep the returned scheduler
/// alive for as long as jobs should run.
pub async fn start(
    engine: Arc<Engine>,
    config: JobsConfig,
    board: JobBoard,
) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    for name in ["stale_runs", "snapshot_staleness", "heartbeat"] {
        board.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(name).or_default();
    }

    let (e, b) = (Arc::clone(&engine), board.clone());
    let max_idle_ms = u64::try_from(config.stale_run_after.as_millis()).unwrap_or(u64::MAX);
    scheduler
        .add(Job::new_async(config.stale_run_schedule.as_str(), move |_, _| {
            let (engine, board) = (Arc::clone(&e), b.clone());
            Box::pin(async move {
                let result = engine.expire_stale_runs(max_idle_ms).await;
                if let Ok(n) = &result
                    && *n > 0
                {
                    tracing::warn!(message = "stale runs ended as TIMEOUT", runs = n);
                }
                board.record("stale_runs", result.map(|n| n as u64).map_err(|e| e.to_string()));
            })
        })?)
        .await?;

    let (e, b) = (Arc::clone(&engine), board.clone());
    scheduler
        .add(Job::new_async(config.staleness_schedule.as_str(), move |_, _| {
            let (engine, board) = (Arc::clone(&e), b.clone());
            Box::pin(async move {
                let result = engine.check_staleness().await;
                board.record("snapshot_staleness", result.map(u64::from).map_err(|e| e.to_string()));
            })
        })?)
        .await?;

    let (e, b) = (Arc::clone(&engine), board.clone());
    scheduler
        .add(Job::new_repeated_async(config.heartbeat_every, move |_, _| {
            let (engine, board) = (Arc::clone(&e), b.clone());
            Box::pin(async move {
                engine.events().publish(AgentEvent::Heartbeat { at_ms: now_ms() });
                board.record("heartbeat", Ok(1));
            })
        })?)
        .await?;

    scheduler.start().await?;
    Ok(scheduler)
}
