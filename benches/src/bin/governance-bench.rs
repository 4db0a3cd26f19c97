//! Governance propagation, for `benches/README.md` (issue 5): how long
//! from a `halt`/`enable` API call until the last edge agent has it in
//! force, for 1, 10 and 100 agents, side by side with the same fan-out on
//! etcd's watch.
//!
//! ```sh
//! cargo build --release -p aos-control-plane -p aos-benches
//! cargo run --release -p aos-benches --bin governance-bench -- [--agents 1,10,100] [--rounds 20] [--warmup 1] [--no-etcd] [--windows FILE]
//! ```
//!
//! AOS: a 3-node cluster; each simulated edge agent is the real agent's
//! sync client — an `Engine` on its own sled store, joined with a real
//! join token (CA pinned, mutual TLS), running `link::run_watch` and
//! `link::run_delivery` against its node list (rotated so agents spread
//! over the three nodes). A round flips the tenant between HALTED and
//! ENFORCING through one node's REST API; an agent has the change when its
//! engine puts the new version in force (for the next decision; the agent
//! persists it before it ACKs): the instant is noted when the engine's
//! `GovernanceChanged` event arrives, as etcd's watchers note theirs (until
//! session 34 versions were polled every 0.5 ms, on tokio's 1 ms timer,
//! which added up to ~1 ms to AOS's side only). Between rounds every
//! agent's outbox is drained (each change files a record that is ingested
//! through Raft) and, after the warm-up, its record delivery is on the
//! leader's node (where the acks of its records move it). `--warmup N` rounds (1) run
//! first on both sides and are printed, not counted: with 20 rounds the
//! p99 is the slowest round, and the first one carried start-up work (the
//! first ACK and ingest commits, first uses of every path) on either side.
//!
//! etcd: a 3-member cluster, N watchers spread over the members through the
//! JSON gateway's streaming `/v3/watch`; a round is one put.
//!
//! Latency is measured from the moment the call *returns* (the issue's
//! definition; a push may even arrive first, counted as 0) and from the
//! moment it was *sent*.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aos_benches::cluster::aos::{AosCluster, control_plane_bin};
use aos_benches::cluster::etcd::{EtcdCluster, INSTALL_HINT, find_etcd, put, spawn_watcher};
use aos_benches::cluster::{agent, fmt_duration, percentile, post_json};
use aos_core::snapshot::TrustedKeys;
use aos_edge_agent::engine::Engine;
use aos_edge_agent::events::AgentEvent;
use aos_edge_agent::identity::{JoinToken, join};
use aos_edge_agent::link::{Link, run_delivery, run_watch};
use aos_edge_agent::snapshots::SnapshotSlot;
use aos_edge_agent::store::AgentStore;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

const TENANT: &str = "bench";

#[derive(Debug)]
struct Args {
    agents: Vec<usize>,
    rounds: usize,
    /// Rounds run first and not counted, on both sides (`--warmup`).
    warmup: usize,
    etcd: bool,
    /// Where to write each AOS round's window (`--windows FILE`).
    windows: Option<std::path::PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args { agents: vec![1, 10, 100], rounds: 20, warmup: 1, etcd: true, windows: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--agents" => {
                args.agents = value("--agents")?
                    .split(',')
                    .map(|n| n.trim().parse::<usize>().context("--agents"))
                    .collect::<Result<_>>()?;
            }
            "--rounds" => args.rounds = value("--rounds")?.parse().context("--rounds")?,
            "--warmup" => args.warmup = value("--warmup")?.parse().context("--warmup")?,
            "--no-etcd" => args.etcd = false,
            "--windows" => args.windows = Some(value("--windows")?.into()),
            "-h" | "--help" => {
                println!(
                    "usage: governance-bench [--agents 1,10,100] [--rounds 20] [--warmup 1] [--no-etcd] [--windows FILE]"
                );
                println!(
                    "  --warmup N      rounds run before the counted ones, on both sides, and only printed"
                );
                println!("  --windows FILE  writes each AOS round's window (sent → last agent applied) as");
                println!(
                    "                  `agents start,end` in seconds of CLOCK_REALTIME, to cut a profile"
                );
                println!("                  to the rounds: perf record -a -k CLOCK_REALTIME, then");
                println!("                  perf report --time start,end");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if args.rounds == 0 || args.agents.contains(&0) {
        bail!("--rounds and every --agents count must be at least 1");
    }
    Ok(args)
}

/// p50 and p99 of one fan-out size, from the call's return and from its
/// start.
#[derive(Debug)]
struct Row {
    agents: usize,
    from_return: (Duration, Duration),
    from_send: (Duration, Duration),
}

fn row(agents: usize, mut from_return: Vec<Duration>, mut from_send: Vec<Duration>) -> Row {
    from_return.sort_unstable();
    from_send.sort_unstable();
    Row {
        agents,
        from_return: (percentile(&from_return, 50), percentile(&from_return, 99)),
        from_send: (percentile(&from_send, 50), percentile(&from_send, 99)),
    }
}

/// Prints a warm-up round's latencies (not counted).
fn warmed_up(round: usize, last: Instant, returned: Instant, sent: Instant) {
    eprintln!(
        "  warm-up round {round}: {} from return, {} from send (not counted)",
        fmt_duration(last.saturating_duration_since(returned)),
        fmt_duration(last.saturating_duration_since(sent))
    );
}

/// One simulated edge agent: the real engine and sync loops.
struct SimAgent {
    engine: Arc<Engine>,
    link: Arc<Link>,
    /// The newest governance version the engine put in force, and when.
    applied: Arc<Mutex<(u64, Instant)>>,
    _dir: tempfile::TempDir,
}

/// Notes the instant each governance version is in force at `engine`:
/// the engine publishes `GovernanceChanged` on its event reactor as it
/// puts a state in force, as etcd's watchers note the instant a put
/// reaches them, so neither side is measured by polling.
fn note_changes(engine: &Engine, changed: Arc<tokio::sync::Notify>) -> Arc<Mutex<(u64, Instant)>> {
    let mut events = engine.events().subscribe();
    let applied = Arc::new(Mutex::new((engine.governance().version, Instant::now())));
    let slot = Arc::clone(&applied);
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let AgentEvent::GovernanceChanged { version, .. } = event.as_ref() {
                        let at = Instant::now();
                        *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (*version, at);
                        changed.notify_one();
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
    applied
}

async fn start_agents(
    cluster: &AosCluster,
    token: &JoinToken,
    count: usize,
    stop: &tokio::sync::watch::Receiver<bool>,
    changed: &Arc<tokio::sync::Notify>,
) -> Result<Vec<SimAgent>> {
    let gateways: Vec<String> = cluster.nodes.iter().map(|n| n.agents.clone()).collect();
    let mut agents = Vec::with_capacity(count);
    for i in 0..count {
        let identity = join(&gateways, token, &format!("gov-bench-{i}")).await?;
        let dir = tempfile::Builder::new().prefix("gov-bench-agent").tempdir()?;
        let store = AgentStore::open(dir.path())?;
        let mut trusted = TrustedKeys::new();
        for key in &identity.trusted_snapshot_keys {
            trusted.insert_hex(key)?;
        }
        let engine = Arc::new(Engine::open(
            SnapshotSlot::new(TENANT.to_owned(), trusted),
            store,
            64 * 1024 * 1024,
            aos_edge_agent::events::EVENT_BUFFER,
        )?);
        let mut endpoints = gateways.clone();
        endpoints.rotate_left(i % gateways.len());
        let link = Arc::new(Link::new(endpoints, identity));
        let applied = note_changes(&engine, Arc::clone(changed));
        tokio::spawn(run_watch(Arc::clone(&engine), Arc::clone(&link), stop.clone()));
        tokio::spawn(run_delivery(Arc::clone(&engine), Arc::clone(&link), stop.clone()));
        agents.push(SimAgent { engine, link, applied, _dir: dir });
    }
    Ok(agents)
}

/// Waits until every agent has governance version `version` in force; the
/// instant the last one got there.
async fn all_applied(
    agents: &[SimAgent],
    changed: &tokio::sync::Notify,
    version: u64,
    deadline: Duration,
) -> Result<Instant> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        // Registered before the check, so a change noted meanwhile wakes it.
        let notified = changed.notified();
        let mut last = None;
        let mut behind = 0;
        for agent in agents {
            let (applied, at) = *agent.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if applied >= version {
                last = last.max(Some(at));
            } else {
                behind += 1;
            }
        }
        if behind == 0 {
            return Ok(last.unwrap_or_else(Instant::now));
        }
        if tokio::time::timeout_at(until, notified).await.is_err() {
            bail!(
                "{behind} of {} agents did not apply governance v{version} within {deadline:?}",
                agents.len()
            );
        }
    }
}

async fn drained(agents: &[SimAgent], deadline: Duration) -> Result<()> {
    let started = Instant::now();
    while agents.iter().any(|a| a.engine.outbox_stats().0 > 0) {
        if started.elapsed() > deadline {
            bail!("outboxes not drained within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Waits, at most `deadline`, until every agent's record delivery is
/// connected to the leader's node, where the acks of its records move it
/// (`aos_edge_agent::leader_seek`): a move dials the leader at once, and a
/// fleet's handshakes belong to its start, not to a measured round. Returns
/// how many are elsewhere then (an ack names only a leader its node has
/// confirmed, so an agent may still be on its way).
async fn settled(agents: &[SimAgent], leader_gateway: &str, deadline: Duration) -> usize {
    let started = Instant::now();
    loop {
        let away = agents.iter().filter(|a| a.link.delivery_endpoint() != Some(leader_gateway)).count();
        if away == 0 || started.elapsed() > deadline {
            return away;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn aos_rounds(cluster: &AosCluster, args: &Args) -> Result<Vec<Row>> {
    let http = agent(Duration::from_secs(10));
    let key = cluster.key.clone();
    let base = cluster.nodes[0].url("");
    let (status, text) = post_json(
        &http,
        &format!("{base}/api/v1/tenants"),
        Some(&key),
        &json!({"tenant_id": TENANT, "name": TENANT}),
    )?;
    if status != 200 {
        bail!("create tenant: HTTP {status}: {text}");
    }
    let (status, text) =
        post_json(&http, &format!("{base}/api/v1/tenants/{TENANT}/agent-tokens"), Some(&key), &json!({}))?;
    if status != 200 {
        bail!("join token: HTTP {status}: {text}");
    }
    let created: serde_json::Value = serde_json::from_str(&text)?;
    let token = JoinToken::parse(created["join_token"].as_str().context("no join_token")?)?;
    let mut rows = Vec::new();
    let mut windows = Vec::new();
    for &n in &args.agents {
        eprintln!("AOS: {n} edge agents …");
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let changed = Arc::new(tokio::sync::Notify::new());
        let agents = start_agents(cluster, &token, n, &stop, &changed).await?;
        let state =
            aos_benches::cluster::get_json(&http, &format!("{base}/api/v1/ops/governance/state"), Some(&key))
                .context("governance state")?;
        let mut version = state["version"].as_u64().unwrap_or(0);
        all_applied(&agents, &changed, version, Duration::from_secs(60)).await.context("initial sync")?;
        let cluster_state =
            aos_benches::cluster::get_json(&http, &format!("{base}/api/v1/cluster"), Some(&key))
                .context("cluster state")?;
        let leader = cluster_state["leader"].as_u64().context("no leader")?;
        let leader_gateway = cluster
            .nodes
            .iter()
            .find(|node| node.id == leader)
            .map(|node| node.agents.clone())
            .context("leader")?;
        let (mut from_return, mut from_send) = (Vec::new(), Vec::new());
        for round in 0..args.warmup + args.rounds {
            drained(&agents, Duration::from_secs(60)).await?;
            // An ack names the leader only once its node has confirmed it,
            // so the first records of a fresh cluster may not move an agent;
            // the warm-up round's do.
            if args.warmup > 0 && round == args.warmup {
                let away = settled(&agents, &leader_gateway, Duration::from_secs(5)).await;
                if away > 0 {
                    eprintln!("  {away} agents' record delivery not on the leader's node yet");
                }
            }
            let action = if round % 2 == 0 { "halt" } else { "enable" };
            // Rotate the node taking the call: followers forward.
            let url =
                cluster.nodes[round % cluster.nodes.len()].url(&format!("/api/v1/ops/governance/{action}"));
            let body = json!({"reason": format!("governance-bench round {round}"), "tenant": TENANT});
            let sent = Instant::now();
            let (status, text) = tokio::task::block_in_place(|| post_json(&http, &url, Some(&key), &body))?;
            let returned = Instant::now();
            if status != 200 {
                bail!("{action}: HTTP {status}: {text}");
            }
            version += 1;
            let last = all_applied(&agents, &changed, version, Duration::from_secs(30)).await?;
            if round < args.warmup {
                warmed_up(round, last, returned, sent);
                continue;
            }
            from_return.push(last.saturating_duration_since(returned));
            from_send.push(last.saturating_duration_since(sent));
            if args.windows.is_some() {
                let now = (std::time::SystemTime::now(), Instant::now());
                let at = |instant: Instant| {
                    let back = now.1.saturating_duration_since(instant);
                    now.0.checked_sub(back).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                };
                if let (Some(start), Some(end)) = (at(sent), at(last)) {
                    windows.push(format!("{n} {:.6},{:.6}", start.as_secs_f64(), end.as_secs_f64()));
                }
            }
        }
        let _ = stop_tx.send(true);
        rows.push(row(n, from_return, from_send));
    }
    if let Some(path) = &args.windows {
        std::fs::write(path, windows.join("\n") + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(rows)
}

fn etcd_rounds(bin: &std::path::Path, args: &Args) -> Result<Vec<Row>> {
    eprintln!("starting a 3-member etcd cluster ({}) …", bin.display());
    let etcd = EtcdCluster::start(bin)?;
    let http = agent(Duration::from_secs(10));
    let mut rows = Vec::new();
    for (size_index, &n) in args.agents.iter().enumerate() {
        eprintln!("etcd: {n} watchers …");
        let key = format!("governance-bench-{size_index}");
        let (tx, rx) = std::sync::mpsc::channel();
        for w in 0..n {
            spawn_watcher(&etcd.client_urls[w % etcd.client_urls.len()], &key, w, tx.clone())?;
        }
        drop(tx);
        let urls = etcd.write_urls();
        let (mut from_return, mut from_send) = (Vec::new(), Vec::new());
        for round in 0..args.warmup + args.rounds {
            let value = round as u64 + 1;
            let sent = Instant::now();
            if !put(&http, &urls[round % urls.len()], &key, &value.to_string()) {
                bail!("etcd put failed");
            }
            let returned = Instant::now();
            let mut seen = vec![false; n];
            let mut left = n;
            let mut last = returned;
            while left > 0 {
                let (watcher, got, at) =
                    rx.recv_timeout(Duration::from_secs(30)).context("etcd watchers not notified in 30 s")?;
                if got == value && !seen[watcher] {
                    seen[watcher] = true;
                    left -= 1;
                    last = last.max(at);
                }
            }
            if round < args.warmup {
                warmed_up(round, last, returned, sent);
                continue;
            }
            // A notification may arrive before the put's answer.
            from_return.push(last.saturating_duration_since(returned));
            from_send.push(last.saturating_duration_since(sent));
        }
        rows.push(row(n, from_return, from_send));
    }
    Ok(rows)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let bin = control_plane_bin()?;
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
    let etcd = etcd_bin.as_deref().map(|b| etcd_rounds(b, &args)).transpose()?;
    eprintln!("starting a 3-node AOS cluster …");
    let cluster = tokio::task::block_in_place(|| AosCluster::start(&bin))?;
    let aos = aos_rounds(&cluster, &args).await?;

    println!(
        "Governance propagation, {} rounds per size after {} warm-up (tenant halt ↔ enable; etcd: one put).",
        args.rounds, args.warmup
    );
    println!();
    match &etcd {
        Some(etcd) => {
            println!(
                "| agents | AOS p50 | AOS p99 | etcd p50 | etcd p99 | AOS p99 ÷ etcd p99 | AOS p50 / p99 from send | etcd p50 / p99 from send |"
            );
            println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
            for (a, e) in aos.iter().zip(etcd) {
                #[allow(clippy::cast_precision_loss, reason = "a ratio for display")]
                let ratio = a.from_return.1.as_secs_f64() / e.from_return.1.as_secs_f64().max(1e-6);
                println!(
                    "| {} | {} | {} | {} | {} | {ratio:.1}× | {} / {} | {} / {} |",
                    a.agents,
                    fmt_duration(a.from_return.0),
                    fmt_duration(a.from_return.1),
                    fmt_duration(e.from_return.0),
                    fmt_duration(e.from_return.1),
                    fmt_duration(a.from_send.0),
                    fmt_duration(a.from_send.1),
                    fmt_duration(e.from_send.0),
                    fmt_duration(e.from_send.1),
                );
            }
        }
        None => {
            println!("| agents | p50 | p99 | p50 / p99 from send |");
            println!("|---:|---:|---:|---:|");
            for a in &aos {
                println!(
                    "| {} | {} | {} | {} / {} |",
                    a.agents,
                    fmt_duration(a.from_return.0),
                    fmt_duration(a.from_return.1),
                    fmt_duration(a.from_send.0),
                    fmt_duration(a.from_send.1),
                );
            }
        }
    }
    println!();
    println!("Latency from the API call's return (or the put's) until the last agent (watcher) has it.");
    Ok(())
}
