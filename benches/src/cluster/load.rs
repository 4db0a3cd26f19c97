//! Closed-loop write load: `concurrency` writers round-robin over the
//! target URLs, for a warm-up and then a measured window. [`run`] drives
//! the writers as tasks on the event-driven client
//! ([`crate::http_load`]); [`run_threads`] is the first harness (a thread
//! and a blocking HTTP agent per writer), kept for comparison.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use bytes::Bytes;

use super::{agent, percentile};
use crate::http_load::{self, Target};

/// What one load run measured (only requests issued after the warm-up and
/// answered before the window closed count).
#[derive(Debug, Default)]
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    /// What the last unacknowledged write got back (status and body, or
    /// the transport error), to say why there were errors.
    pub last_error: Option<String>,
    pub window: Duration,
    /// Latencies of acknowledged writes, sorted.
    pub latencies: Vec<Duration>,
}

impl LoadResult {
    /// Acknowledged writes per second over the window.
    pub fn writes_per_sec(&self) -> u64 {
        let ms = self.window.as_millis().max(1);
        u64::try_from(u128::from(self.ok) * 1000 / ms).unwrap_or(u64::MAX)
    }

    pub fn p(&self, p: usize) -> Duration {
        percentile(&self.latencies, p)
    }

    /// Counts a write issued at `t0` and answered at `t1` if both fall
    /// within the measured window `[from, end]`.
    fn note(&mut self, t0: Instant, t1: Instant, acked: bool, from: Instant, end: Instant) {
        if t0 < from || t1 > end {
            return;
        }
        if acked {
            self.ok += 1;
            self.latencies.push(t1 - t0);
        } else {
            self.errors += 1;
        }
    }

    /// Sums the writers' results over `window`.
    fn total(window: Duration, per_writer: Vec<Result<LoadResult>>) -> Result<LoadResult> {
        let mut total = LoadResult { window, ..LoadResult::default() };
        for r in per_writer {
            let r = r?;
            total.ok += r.ok;
            total.errors += r.errors;
            if r.last_error.is_some() {
                total.last_error = r.last_error;
            }
            total.latencies.extend(r.latencies);
        }
        total.latencies.sort_unstable();
        Ok(total)
    }
}

/// Makes writer `w`'s `seq`-th write body.
pub type BodyFn = dyn Fn(usize, u64) -> Bytes + Send + Sync;
/// Tells whether a response (status, body) acknowledges a write.
pub type AckFn = dyn Fn(u16, &[u8]) -> bool + Send + Sync;

/// What to write and how to tell an acknowledgement, for [`run`].
#[derive(Clone)]
pub struct Writes {
    /// Bearer key sent with every write.
    pub bearer: Option<String>,
    /// The body of writer `w`'s `seq`-th write.
    pub body: Arc<BodyFn>,
    /// Whether a response (status, body) acknowledges the write.
    pub acked: Arc<AckFn>,
}

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writes")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Now, if it is before `end`: when a writer may issue its next write.
fn started_before(end: Instant) -> Option<Instant> {
    Some(Instant::now()).filter(|now| *now < end)
}

/// Writer `writer`'s target for its `seq`-th write: each writer starts at
/// its own target and moves on by one per write.
fn round_robin<T>(targets: &[T], writer: usize, seq: u64) -> &T {
    &targets[(writer + usize::try_from(seq).unwrap_or(0)) % targets.len()]
}

/// Runs `concurrency` writers as tasks on `client_threads` client threads.
pub fn run(
    targets: &[String],
    concurrency: usize,
    client_threads: usize,
    warmup: Duration,
    window: Duration,
    writes: &Writes,
) -> Result<LoadResult> {
    if targets.is_empty() {
        return Err(anyhow!("no targets"));
    }
    let targets: Arc<Vec<Target>> =
        Arc::new(targets.iter().map(|u| Target::parse(u)).collect::<Result<_>>()?);
    let runtime = http_load::runtime(client_threads)?;
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + window;
    let per_writer = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..concurrency {
            let (targets, writes) = (Arc::clone(&targets), writes.clone());
            tasks.spawn(async move {
                let mut http = http_load::Client::new(Duration::from_secs(10));
                let mut r = LoadResult::default();
                let mut seq = 0u64;
                while let Some(t0) = started_before(end) {
                    let target = round_robin(&targets, w, seq);
                    let body = (writes.body)(w, seq);
                    let acked = match http.post_json(target, writes.bearer.as_deref(), body).await {
                        Ok((status, body)) if (writes.acked)(status, &body) => true,
                        Ok((status, body)) => {
                            r.last_error = Some(format!("{status} {}", String::from_utf8_lossy(&body)));
                            false
                        }
                        Err(e) => {
                            r.last_error = Some(format!("{e:#}"));
                            false
                        }
                    };
                    seq += 1;
                    r.note(t0, Instant::now(), acked, measure_from, end);
                }
                r
            });
        }
        let mut results = Vec::new();
        while let Some(done) = tasks.join_next().await {
            results.push(done.map_err(|e| anyhow!("a writer task failed: {e}")));
        }
        results
    });
    LoadResult::total(window, per_writer)
}

/// Runs `write(agent, url, thread, seq)` from `concurrency` threads.
/// `write` returns whether the write was acknowledged.
pub fn run_threads<F>(
    targets: &[String],
    concurrency: usize,
    warmup: Duration,
    window: Duration,
    write: F,
) -> Result<LoadResult>
where
    F: Fn(&ureq::Agent, &str, usize, u64) -> bool + Sync,
{
    if targets.is_empty() {
        return Err(anyhow!("no targets"));
    }
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + window;
    let write = &write;
    let per_thread = std::thread::scope(|s| {
        let handles: Vec<_> = (0..concurrency)
            .map(|t| {
                s.spawn(move || {
                    let http = agent(Duration::from_secs(10));
                    let mut r = LoadResult::default();
                    let mut seq = 0u64;
                    while let Some(t0) = started_before(end) {
                        let url = round_robin(targets, t, seq);
                        let acked = write(&http, url, t, seq);
                        seq += 1;
                        r.note(t0, Instant::now(), acked, measure_from, end);
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a writer thread panicked")))
            .collect::<Vec<_>>()
    });
    LoadResult::total(window, per_thread)
}
