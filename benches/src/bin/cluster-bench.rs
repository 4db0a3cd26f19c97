//! Cluster benchmarks for `benches/README.md`: policy-store write
//! throughput and latency of a 3-node AOS cluster (optionally side by side
//! with a 3-member etcd) and leader failover time.
//!
//! ```sh
//! cargo build --release -p aos-control-plane
//! cargo run --release -p aos-benches --bin cluster-bench -- [--etcd] [--rounds N] \
//!     [--duration SECS] [--warmup SECS] [--client-threads N] [--node I]
//! ```
//!
//! `--node I` (0, 1 or 2) sends every write to that one node (member)
//! instead of round-robin over the three: node 0 is the leader AOS elects
//! first, so `--node 0` against `--node 1` shows what forwarding a write
//! from a follower costs.
//!
//! Writers are tasks on one client thread (`--client-threads`; 0 runs the
//! first harness, a thread per writer), so the client takes as little of
//! the two cores as it can from the clusters it measures.
//!
//! Every node is a real process on loopback in a fresh temporary directory;
//! all of them are killed when the benchmark ends, also on error.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use std::sync::Arc;

use aos_benches::cluster::aos::{AosCluster, control_plane_bin, create_tenant, create_tenant_body};
use aos_benches::cluster::etcd::{EtcdCluster, INSTALL_HINT, find_etcd, put, put_acked, put_body};
use aos_benches::cluster::load::{self, LoadResult, Writes};
use aos_benches::cluster::{failover, fmt_duration, percentile, value_of_size};

const CONCURRENCY: [usize; 3] = [1, 16, 256];
/// Bytes of the written value: the tenant name for AOS, the value for etcd.
const VALUE_SIZE: usize = 200;

#[derive(Debug)]
struct Args {
    etcd: bool,
    rounds: usize,
    warmup: Duration,
    duration: Duration,
    /// Writers as tasks on this many client threads; 0: the first harness,
    /// a thread and blocking HTTP agent per writer.
    client_threads: usize,
    /// Only this node (member) takes writes; `None`: round-robin.
    node: Option<usize>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        etcd: false,
        rounds: 20,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(5),
        client_threads: 1,
        node: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--etcd" => args.etcd = true,
            "--rounds" => args.rounds = value("--rounds")?.parse().context("--rounds")?,
            "--warmup" => args.warmup = secs(&value("--warmup")?).context("--warmup")?,
            "--duration" => args.duration = secs(&value("--duration")?).context("--duration")?,
            "--client-threads" => {
                args.client_threads = value("--client-threads")?.parse().context("--client-threads")?;
            }
            "--node" => args.node = Some(value("--node")?.parse().context("--node")?),
            "-h" | "--help" => {
                println!(
                    "usage: cluster-bench [--etcd] [--rounds N (20)] [--duration SECS (5)] [--warmup SECS (1)] [--client-threads N (1; 0 = a thread per writer)] [--node I (every write to node I of 0..3)]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if args.node.is_some_and(|i| i >= 3) {
        bail!("--node must be 0, 1 or 2");
    }
    Ok(args)
}

/// The write targets: all of `urls`, or only the one `--node` names.
fn targets(urls: Vec<String>, node: Option<usize>) -> Result<Vec<String>> {
    match node {
        None => Ok(urls),
        Some(i) => Ok(vec![urls.into_iter().nth(i).with_context(|| format!("no node {i}"))?]),
    }
}

fn secs(s: &str) -> Result<Duration> {
    Ok(Duration::try_from_secs_f64(s.parse()?)?)
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

fn aos_load(bin: &Path, args: &Args, name: &str) -> Result<Vec<LoadResult>> {
    eprintln!("starting a 3-node AOS cluster …");
    let cluster = AosCluster::start(bin)?;
    eprintln!("AOS cluster up in {}", cluster.dir().display());
    let urls = targets(cluster.write_urls(), args.node)?;
    let key = cluster.key.as_str();
    let mut results = Vec::new();
    for c in CONCURRENCY {
        eprintln!("AOS: concurrency {c} …");
        let r = if args.client_threads == 0 {
            load::run_threads(&urls, c, args.warmup, args.duration, |agent, url, t, seq| {
                create_tenant(agent, url, key, &format!("bench-c{c}-t{t}-{seq}"), name)
            })?
        } else {
            let name = name.to_owned();
            let writes = Writes {
                bearer: Some(key.to_owned()),
                body: Arc::new(move |t, seq| create_tenant_body(&format!("bench-c{c}-t{t}-{seq}"), &name)),
                acked: Arc::new(|status, _| status == 200),
            };
            load::run(&urls, c, args.client_threads, args.warmup, args.duration, &writes)?
        };
        eprintln!("  {} writes/s, {} errors", r.writes_per_sec(), r.errors);
        if let Some(e) = &r.last_error {
            eprintln!("  last error: {e}");
        }
        results.push(r);
    }
    Ok(results)
}

fn etcd_load(bin: &Path, args: &Args, value: &str) -> Result<Vec<LoadResult>> {
    eprintln!("starting a 3-member etcd cluster ({}) …", bin.display());
    let cluster = EtcdCluster::start(bin)?;
    let urls = targets(cluster.write_urls(), args.node)?;
    let mut results = Vec::new();
    for c in CONCURRENCY {
        eprintln!("etcd: concurrency {c} …");
        let r = if args.client_threads == 0 {
            load::run_threads(&urls, c, args.warmup, args.duration, |agent, url, t, seq| {
                put(agent, url, &format!("bench-c{c}-t{t}-{seq}"), value)
            })?
        } else {
            let value = value.to_owned();
            let writes = Writes {
                bearer: None,
                body: Arc::new(move |t, seq| put_body(&format!("bench-c{c}-t{t}-{seq}"), &value)),
                acked: Arc::new(put_acked),
            };
            load::run(&urls, c, args.client_threads, args.warmup, args.duration, &writes)?
        };
        eprintln!("  {} writes/s, {} errors", r.writes_per_sec(), r.errors);
        results.push(r);
    }
    Ok(results)
}

fn failover_rounds(bin: &Path, rounds: usize, name: &str) -> Result<Vec<Duration>> {
    eprintln!("starting a fresh 3-node AOS cluster for failover …");
    let mut cluster = AosCluster::start(bin)?;
    let mut times = Vec::new();
    for round in 1..=rounds {
        let t = failover::round(&mut cluster, round, name)?;
        eprintln!("  round {round}: {}", fmt_duration(t));
        times.push(t);
    }
    times.sort_unstable();
    Ok(times)
}

#[allow(clippy::cast_precision_loss, reason = "a ratio of throughputs for display")]
fn ratio(a: u64, b: u64) -> String {
    if b == 0 { "–".to_owned() } else { format!("{:.2}×", a as f64 / b as f64) }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let bin = control_plane_bin()?;
    let value = value_of_size(VALUE_SIZE);
    let etcd_bin = if args.etcd {
        let found = find_etcd();
        if found.is_none() {
            eprintln!(
                "etcd not found on PATH; skipping the etcd comparison. Install it with:\n  {INSTALL_HINT}"
            );
        }
        found
    } else {
        None
    };

    // One system at a time: they share the machine's cores.
    let aos = aos_load(&bin, &args, &value)?;
    let etcd = etcd_bin.as_deref().map(|b| etcd_load(b, &args, &value)).transpose()?;
    let failover = if args.rounds > 0 { failover_rounds(&bin, args.rounds, &value)? } else { Vec::new() };

    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cmd: Vec<String> = std::env::args().skip(1).collect();
    println!();
    println!("Machine: {cores} cores ({}), loopback, release build.", cpu_model().unwrap_or_default());
    println!();
    println!("```sh");
    println!("cargo run --release -p aos-benches --bin cluster-bench -- {}", cmd.join(" "));
    println!("```");
    println!();
    println!(
        "### Write throughput and latency (3 nodes, {VALUE_SIZE}-byte value, {} s per concurrency after {} s warm-up)",
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64()
    );
    println!();
    match &etcd {
        Some(etcd) => {
            println!(
                "| concurrency | AOS writes/s | AOS p50 | AOS p99 | AOS errors | etcd writes/s | etcd p50 | etcd p99 | etcd errors | AOS ÷ etcd |"
            );
            println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for ((c, a), e) in CONCURRENCY.iter().zip(&aos).zip(etcd) {
                println!(
                    "| {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    a.writes_per_sec(),
                    fmt_duration(a.p(50)),
                    fmt_duration(a.p(99)),
                    a.errors,
                    e.writes_per_sec(),
                    fmt_duration(e.p(50)),
                    fmt_duration(e.p(99)),
                    e.errors,
                    ratio(a.writes_per_sec(), e.writes_per_sec())
                );
            }
        }
        None => {
            println!("| concurrency | AOS writes/s | AOS p50 | AOS p99 | AOS errors |");
            println!("|---:|---:|---:|---:|---:|");
            for (c, a) in CONCURRENCY.iter().zip(&aos) {
                println!(
                    "| {c} | {} | {} | {} | {} |",
                    a.writes_per_sec(),
                    fmt_duration(a.p(50)),
                    fmt_duration(a.p(99)),
                    a.errors
                );
            }
        }
    }
    println!();
    println!(
        "AOS write: `POST /api/v1/tenants` (unique tenant id, {VALUE_SIZE}-byte name), round-robin over the 3 nodes."
    );
    if etcd.is_some() {
        println!(
            "etcd write: `POST /v3/kv/put` (JSON gateway, unique key, {VALUE_SIZE}-byte value), round-robin over the 3 members."
        );
    }
    if !failover.is_empty() {
        println!();
        println!("### Failover (kill -9 of the leader → first acknowledged write issued after the kill)");
        println!();
        println!("| rounds | p50 | p99 | max |");
        println!("|---:|---:|---:|---:|");
        println!(
            "| {} | {} | {} | {} |",
            failover.len(),
            fmt_duration(percentile(&failover, 50)),
            fmt_duration(percentile(&failover, 99)),
            fmt_duration(failover.last().copied().unwrap_or_default())
        );
    }
    Ok(())
}
