//! Closed-loop write load: `concurrency` threads, each with its own HTTP
//! agent, round-robin over the target URLs, for a warm-up and then a
//! measured window.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::{agent, percentile};

/// What one load run measured (only requests issued after the warm-up and
/// answered before the window closed count).
#[derive(Debug, Default)]
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
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
}

/// Runs `write(agent, url, thread, seq)` from `concurrency` threads.
/// `write` returns whether the write was acknowledged.
pub fn run<F>(
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
                    loop {
                        let t0 = Instant::now();
                        if t0 >= end {
                            break;
                        }
                        let url = &targets[(t + usize::try_from(seq).unwrap_or(0)) % targets.len()];
                        let acked = write(&http, url, t, seq);
                        seq += 1;
                        let t1 = Instant::now();
                        if t0 < measure_from || t1 > end {
                            continue;
                        }
                        if acked {
                            r.ok += 1;
                            r.latencies.push(t1 - t0);
                        } else {
                            r.errors += 1;
                        }
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
    let mut total = LoadResult { window, ..LoadResult::default() };
    for r in per_thread {
        let r = r?;
        total.ok += r.ok;
        total.errors += r.errors;
        total.latencies.extend(r.latencies);
    }
    total.latencies.sort_unstable();
    Ok(total)
}
