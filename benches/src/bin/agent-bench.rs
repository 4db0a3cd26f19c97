//! Edge-agent benchmark for `benches/README.md`: step decisions over the
//! local HTTP API from clients on loopback, at concurrency 1 and 64, and
//! the agent's resident memory idle and under load.
//!
//! ```sh
//! cargo build --release -p aos-edge-agent -p aos-benches
//! cargo run --release -p aos-benches --bin agent-bench -- [--duration SECS] [--warmup SECS] \
//!     [--client async|threads] [--client-threads N] [--no-floor]
//! ```
//!
//! One step is what a workload does per LLM call: the pre-step check
//! (`POST /api/v1/runs/{run}/steps`) then the usage report
//! (`POST …/steps/{step}/usage`); both are timed, separately. Each client
//! thread drives its own run. The agent is a real release process with its
//! sled store in a temporary directory and a signed snapshot of 10
//! policies.
//!
//! The workloads run on the event-driven client ([`http_load`]) unless
//! `--client threads` asks for the first harness (a thread each). The same
//! client is then pointed at a server that does nothing, in this process:
//! the *floor* rows are what the client and loopback HTTP cost on this
//! machine alone, the most any server could do here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aos_benches::cluster::{agent, fmt_duration, percentile, post_json, standalone_agent};
use aos_benches::http_load::{self, Target};
use aos_core::snapshot::{PolicySnapshot, SnapshotSigner};
use bytes::Bytes;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    /// Every workload a task on `client_threads` tokio threads.
    Async,
    /// A thread and a blocking HTTP agent per workload.
    Threads,
}

struct Args {
    duration: Duration,
    warmup: Duration,
    client: ClientKind,
    client_threads: usize,
    floor: bool,
}

const USAGE: &str = "usage: agent-bench [--duration SECS (5)] [--warmup SECS (1)] [--client async|threads (async)] [--client-threads N (1)] [--no-floor]";

fn parse_args() -> Result<Args> {
    let mut args = Args {
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        client: ClientKind::Async,
        client_threads: 1,
        floor: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut secs = |name: &str| -> Result<Duration> {
            let v = it.next().with_context(|| format!("{name} needs a value"))?;
            Ok(Duration::from_secs_f64(v.parse::<f64>().with_context(|| format!("{name}: not a number"))?))
        };
        match flag.as_str() {
            "--duration" => args.duration = secs("--duration")?,
            "--warmup" => args.warmup = secs("--warmup")?,
            "--client" => {
                args.client = match it.next().as_deref() {
                    Some("async") => ClientKind::Async,
                    Some("threads") => ClientKind::Threads,
                    _ => bail!("--client takes async or threads; {USAGE}"),
                }
            }
            "--client-threads" => {
                let v = it.next().context("--client-threads needs a value")?;
                args.client_threads =
                    v.parse().with_context(|| format!("--client-threads: {v} is not a count"))?;
            }
            "--no-floor" => args.floor = false,
            other => bail!("unknown flag {other}; {USAGE}"),
        }
    }
    Ok(args)
}

/// Ten policies: per-run token and cost limits far above what the bench
/// uses, so every step is decided against all of them and allowed.
fn snapshot(tenant: &str, signer: &SnapshotSigner) -> Result<Vec<u8>> {
    let policies: Vec<aos_core::policy::Policy> = (0..10)
        .map(|i| {
            serde_json::from_value(json!({
                "id": format!("pol-{i:02}"),
                "name": format!("budget {i}"),
                "status": "ACTIVE",
                "scope": { "type": "ALL_RUNS" },
                "monitors": { "tokens": true, "cost": true },
                "limits": [
                    { "signal": "TOKENS", "max": 1_000_000_000_u64 + i, "window": "PER_RUN" },
                    { "signal": "COST_USD", "max": 1_000_000.0, "window": "PER_RUN" }
                ],
            }))
        })
        .collect::<Result<_, _>>()?;
    let now = aos_edge_agent::ids::now_ms();
    let snapshot = PolicySnapshot::new(tenant, 1, now, now + 3_600_000, policies, vec![], vec![])?;
    Ok(aos_core::sign(&snapshot, signer)?)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[derive(Default)]
struct Samples {
    check: Vec<Duration>,
    usage: Vec<Duration>,
    errors: u64,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.check.extend(other.check);
        self.usage.extend(other.usage);
        self.errors += other.errors;
    }

    /// Counts a step: pre-step check from `t[0]` to `t[1]`, usage report
    /// to `t[2]`; timed only when it started after the warm-up (`from`).
    fn note(&mut self, usage_ok: bool, from: Instant, t: [Instant; 3]) {
        if !usage_ok {
            self.errors += 1;
        } else if t[0] >= from {
            self.check.push(t[1] - t[0]);
            self.usage.push(t[2] - t[1]);
        }
    }

    fn sorted(mut self) -> Samples {
        self.check.sort_unstable();
        self.usage.sort_unstable();
        self
    }
}

/// One simulated workload on the event-driven client: its own run, steps
/// back to back.
async fn drive_run(base: String, from: Instant, end: Instant) -> Result<Samples> {
    let mut http = http_load::Client::new(Duration::from_secs(10));
    let runs = Target::parse(&format!("{base}/api/v1/runs"))?;
    let (status, body) = http.post_json(&runs, None, Bytes::from_static(b"{}")).await?;
    if status != 201 {
        bail!("start run: {status} {}", String::from_utf8_lossy(&body));
    }
    let run: Value = serde_json::from_slice(&body)?;
    let run_id = run["run_id"].as_str().context("run id")?.to_owned();
    let steps = Target::parse(&format!("{base}/api/v1/runs/{run_id}/steps"))?;
    let check_body = Bytes::from_static(br#"{"estimated_tokens":500}"#);
    let usage_body = Bytes::from_static(br#"{"input_tokens":300,"output_tokens":200,"cost_usd":0.001}"#);
    let mut mine = Samples::default();
    while Instant::now() < end {
        let t0 = Instant::now();
        let (status, body) = http.post_json(&steps, None, check_body.clone()).await?;
        let t1 = Instant::now();
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let Some(step) = answer["step_id"].as_str().filter(|_| status == 200 && answer["allowed"] == true)
        else {
            mine.errors += 1;
            continue;
        };
        let usage =
            Target { authority: steps.authority.clone(), path: format!("{}/{step}/usage", steps.path) };
        let (status, _) = http.post_json(&usage, None, usage_body.clone()).await?;
        mine.note(status == 200, from, [t0, t1, Instant::now()]);
    }
    Ok(mine)
}

/// `concurrency` workloads on the event-driven client (`client_threads`
/// tokio threads).
fn load_async(
    base: &str,
    concurrency: usize,
    client_threads: usize,
    warmup: Duration,
    window: Duration,
) -> Result<Samples> {
    let runtime = http_load::runtime(client_threads)?;
    let start = Instant::now();
    let (from, end) = (start + warmup, start + warmup + window);
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            tasks.spawn(drive_run(base.to_owned(), from, end));
        }
        let mut all = Samples::default();
        while let Some(done) = tasks.join_next().await {
            all.merge(done??);
        }
        Ok::<_, anyhow::Error>(all.sorted())
    })
}

/// `concurrency` workloads, one OS thread and blocking HTTP agent each
/// (the first harness, kept for comparison: `--client threads`).
fn load_threads(base: &str, concurrency: usize, warmup: Duration, window: Duration) -> Result<Samples> {
    let all = Mutex::new(Samples::default());
    let start = Instant::now();
    let (from, end) = (start + warmup, start + warmup + window);
    std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        for _ in 0..concurrency {
            handles.push(s.spawn(|| -> Result<()> {
                let http = agent(Duration::from_secs(10));
                let (status, body) = post_json(&http, &format!("{base}/api/v1/runs"), None, &json!({}))?;
                if status != 201 {
                    bail!("start run: {status} {body}");
                }
                let run: Value = serde_json::from_str(&body)?;
                let run_id = run["run_id"].as_str().context("run id")?.to_owned();
                let steps = format!("{base}/api/v1/runs/{run_id}/steps");
                let mut mine = Samples::default();
                while Instant::now() < end {
                    let t0 = Instant::now();
                    let (status, body) = post_json(&http, &steps, None, &json!({"estimated_tokens": 500}))?;
                    let t1 = Instant::now();
                    let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let Some(step) =
                        answer["step_id"].as_str().filter(|_| status == 200 && answer["allowed"] == true)
                    else {
                        mine.errors += 1;
                        continue;
                    };
                    let usage = format!("{steps}/{step}/usage");
                    let (status, _) = post_json(
                        &http,
                        &usage,
                        None,
                        &json!({"input_tokens": 300, "output_tokens": 200, "cost_usd": 0.001}),
                    )?;
                    mine.note(status == 200, from, [t0, t1, Instant::now()]);
                }
                all.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.merge(mine);
                Ok(())
            }));
        }
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(all.into_inner().map_err(|_| anyhow::anyhow!("poisoned"))?.sorted())
}

fn load(base: &str, concurrency: usize, args: &Args) -> Result<Samples> {
    match args.client {
        ClientKind::Async => load_async(base, concurrency, args.client_threads, args.warmup, args.duration),
        ClientKind::Threads => load_threads(base, concurrency, args.warmup, args.duration),
    }
}

fn print_row(server: &str, concurrency: usize, samples: &Samples, window: Duration) {
    let steps = u32::try_from(samples.check.len()).map_or(f64::INFINITY, f64::from) / window.as_secs_f64();
    println!(
        "| {server} | {concurrency} | {steps:.0} | {} | {} | {} | {} | {} |",
        fmt_duration(percentile(&samples.check, 50)),
        fmt_duration(percentile(&samples.check, 99)),
        fmt_duration(percentile(&samples.usage, 50)),
        fmt_duration(percentile(&samples.usage, 99)),
        samples.errors
    );
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let signer = SnapshotSigner::from_secret_bytes(&[9u8; 32])?;
    let file = dir.path().join("snapshot.bin");
    std::fs::write(&file, snapshot("bench", &signer)?)?;
    let (proc, base) = standalone_agent(dir.path(), "bench", &hex_key(&signer), &file)?;
    let pid = proc.pid().context("agent pid")?;
    let idle_rss = rss_kib(pid);

    println!(
        "| server | concurrency | steps/s | pre-step p50 | pre-step p99 | usage p50 | usage p99 | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut loaded_rss = None;
    for concurrency in [1usize, 64] {
        eprintln!("concurrency {concurrency} …");
        let samples = load(&base, concurrency, &args)?;
        loaded_rss = rss_kib(pid).max(loaded_rss);
        print_row("edge agent", concurrency, &samples, args.duration);
    }
    if args.floor {
        // The same client against a server that does nothing: what the
        // client and loopback HTTP cost on this machine by themselves.
        let floor = http_load::spawn_floor_server()?;
        for concurrency in [1usize, 64] {
            eprintln!("floor, concurrency {concurrency} …");
            let samples = load(&floor, concurrency, &args)?;
            print_row("no-op server (floor)", concurrency, &samples, args.duration);
        }
    }
    let mb = |kib: Option<u64>| {
        kib.map_or_else(|| "-".to_owned(), |k| format!("{}.{} MB", k / 1024, (k % 1024) * 10 / 1024))
    };
    println!();
    println!("| agent RSS idle | agent RSS after load |");
    println!("|---:|---:|");
    println!("| {} | {} |", mb(idle_rss), mb(loaded_rss));
    Ok(())
}

fn hex_key(signer: &SnapshotSigner) -> String {
    signer.verifying_key().as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}
