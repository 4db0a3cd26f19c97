//! Record ingest through a 3-node control plane, for `benches/README.md`:
//! how many edge-agent records per second are committed through Raft and
//! acknowledged, and whether every one of them is there afterwards.
//!
//! ```sh
//! cargo build --release -p aos-control-plane -p aos-benches
//! cargo run --release -p aos-benches --bin ingest-bench -- [--agents 1,4,16] [--batch 500] [--duration SECS] [--node I]
//! ```
//!
//! Each simulated edge agent joins with a real join token (CA pinned,
//! mutual TLS), opens the `Ingest` stream to one node (agents spread over
//! the three) and does what the real agent's delivery loop does: one batch
//! in flight, the next sent when the previous is acked, and a move to the
//! leader's node when an ack shows the leader elsewhere
//! (`aos_edge_agent::leader_seek`). `--node I` pins every agent to node I
//! instead (no moves): `--node 1` against `--node 0` (the leader the
//! cluster elects first) shows what a follower's forward costs. Records are
//! `LLM_RUN_RECORD`s of about 400 bytes with unique ids. At the end the
//! tenant's record count on the control plane must equal the records acked
//! (as accepted, or as duplicates of an attempt answered UNAVAILABLE that
//! committed after all: only resent records can be duplicates).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aos_benches::cluster::aos::{AosCluster, control_plane_bin};
use aos_benches::cluster::{agent, fmt_duration, percentile, post_json, wait_for};
use aos_edge_agent::identity::{AgentIdentity, JoinToken, join};
use aos_edge_agent::leader_seek::LeaderSeek;
use aos_proto::agent::agent_gateway_client::AgentGatewayClient;
use aos_proto::agent::{Record, RecordBatch};
use serde_json::json;

/// How many of a row's slowest batches are printed.
const SLOWEST_SHOWN: usize = 3;

#[derive(Debug)]
struct Args {
    agents: Vec<usize>,
    batch: usize,
    duration: Duration,
    /// Every agent sends to this node; `None`: agents spread over the three.
    node: Option<usize>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args { agents: vec![1, 4, 16], batch: 500, duration: Duration::from_secs(5), node: None };
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
            "--batch" => args.batch = value("--batch")?.parse().context("--batch")?,
            "--duration" => {
                args.duration =
                    Duration::try_from_secs_f64(value("--duration")?.parse()?).context("--duration")?;
            }
            "--node" => args.node = Some(value("--node")?.parse().context("--node")?),
            "-h" | "--help" => {
                println!(
                    "usage: ingest-bench [--agents 1,4,16] [--batch 500] [--duration SECS (5)] [--node I (every agent to node I of 0..3)]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if args.node.is_some_and(|i| i >= 3) {
        bail!("--node must be 0, 1 or 2");
    }
    if args.batch == 0 || args.batch > 2_000 || args.agents.contains(&0) {
        bail!("--batch must be 1..=2000 and every --agents count at least 1");
    }
    Ok(args)
}

/// One record as the agent stores it (about 450 bytes of JSON), written
/// straight from a template: the agent's delivery loop sends the bytes its
/// outbox holds and builds no JSON, and building each record as a
/// `serde_json::Value` here took 13 % of the two cores the load generator
/// shares with the three nodes it measures. Every id is JSON-safe
/// (`agent` and `seq` are numbers), so the text needs no escaping.
fn record(agent: usize, seq: u64) -> Record {
    let record_id = format!("rec-bench-{agent}-{seq}");
    let json = format!(
        concat!(
            r#"{{"record_id":"{record_id}","tenant_id":"bench","run_id":"run-{agent}-{run}","#,
            r#""at_ms":{at_ms},"kind":"LLM_RUN_RECORD","step_id":"st-{agent}-{seq}","#,
            r#""model":"gpt-4o-mini","input_tokens":900,"output_tokens":300,"cost_micros":4000,"#,
            r#""prompt_hash":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","#,
            r#""response_hash":"60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752","#,
            r#""prompt":null,"response":null,"outcome":"CONTINUE","snapshot_version":3}}"#,
        ),
        record_id = record_id,
        agent = agent,
        run = seq / 20,
        at_ms = 1_790_000_000_000u64 + seq,
        seq = seq,
    );
    Record { record_id, json: json.into_bytes() }
}

#[derive(Debug, Default)]
struct Outcome {
    accepted: u64,
    duplicates: u64,
    latencies: Vec<Duration>,
    /// Each batch: when it was sent (from the row's start), how long its
    /// ack took, and the node it went to; the slowest are printed so a
    /// stall can be matched with the nodes' logs and a profile's window.
    batches: Vec<(Duration, Duration, usize)>,
    /// Records resent after an UNAVAILABLE answer.
    resent: u64,
    /// Streams moved to the leader's node, as the agent's delivery loop
    /// moves them (`aos_edge_agent::leader_seek`).
    moves: u64,
}

/// What every agent of a row shares.
#[derive(Debug, Clone)]
struct Row {
    /// Records per batch.
    batch: usize,
    /// The next record number (record ids are unique across rows).
    first_seq: Arc<AtomicU64>,
    started: Instant,
    deadline: Instant,
    /// Every node's agent gateway.
    gateways: Arc<Vec<String>>,
    /// Whether agents follow the acks to the leader (not with `--node`).
    follow_leader: bool,
}

/// Most times one batch is resent after the cluster answered it is
/// unavailable (no leader, or a leader without a quorum).
const MAX_RESENDS: u32 = 50;
/// Wait before resending, as the agent's delivery loop backs off.
const RESEND_AFTER: Duration = Duration::from_millis(200);

/// An open `Ingest` stream.
type IngestStream = (tokio::sync::mpsc::Sender<RecordBatch>, tonic::Streaming<aos_proto::agent::BatchAck>);

/// Opens an `Ingest` stream to `endpoint`.
async fn open_stream(identity: &AgentIdentity, endpoint: &str) -> Result<IngestStream> {
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{endpoint}"))?
        .tls_config(identity.client_tls())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut client = AgentGatewayClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel::<RecordBatch>(2);
    let acks = client.ingest(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, acks))
}

/// One simulated agent: batches until the row's deadline, one in flight.
/// A batch the cluster answers UNAVAILABLE for is resent on a new stream,
/// as the agent's delivery loop does (its records stay in the outbox); the
/// records of it already committed then come back as duplicates.
async fn run_agent(identity: AgentIdentity, index: usize, mut node: usize, row: Row) -> Result<Outcome> {
    let Row { batch, first_seq, started, deadline, gateways, follow_leader } = row;
    let mut seek = LeaderSeek::new(gateways.len());
    let (mut tx, mut acks) = open_stream(&identity, &gateways[node]).await?;
    let mut outcome = Outcome::default();
    let mut batch_seq = 0u64;
    while Instant::now() < deadline {
        let start_seq = first_seq.fetch_add(batch as u64, Ordering::Relaxed);
        let records: Vec<Record> = (0..batch as u64).map(|i| record(index, start_seq + i)).collect();
        batch_seq += 1;
        let sent = Instant::now();
        let mut resends = 0u32;
        let ack = loop {
            tx.send(RecordBatch { batch_seq, records: records.clone() })
                .await
                .context("ingest stream closed")?;
            match acks.message().await {
                Ok(Some(ack)) => break ack,
                Ok(None) => bail!("the node closed the ingest stream"),
                Err(status) if status.code() == tonic::Code::Unavailable && resends < MAX_RESENDS => {
                    resends += 1;
                    outcome.resent += records.len() as u64;
                    tokio::time::sleep(RESEND_AFTER).await;
                    (tx, acks) = open_stream(&identity, &gateways[node]).await?;
                }
                Err(status) => return Err(status.into()),
            }
        };
        let took = sent.elapsed();
        outcome.latencies.push(took);
        outcome.batches.push((sent.duration_since(started), took, node));
        if ack.batch_seq != batch_seq {
            bail!("ack for batch {} while waiting for {batch_seq}", ack.batch_seq);
        }
        outcome.accepted += u64::from(ack.accepted);
        outcome.duplicates += u64::from(ack.duplicates);
        if follow_leader && let Some(leader) = seek.after_ack(node, ack.node_id, ack.leader_id) {
            node = leader;
            outcome.moves += 1;
            (tx, acks) = open_stream(&identity, &gateways[node]).await?;
        }
    }
    Ok(outcome)
}

/// A per-record time, to a tenth of a microsecond.
fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// CPU time the three node processes have used so far (all of them
/// running and readable, or `None`).
fn cluster_cpu(cluster: &AosCluster) -> Option<Duration> {
    cluster.nodes.iter().map(aos_benches::cluster::aos::AosNode::cpu_time).sum()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let bin = control_plane_bin()?;
    eprintln!("starting a 3-node AOS cluster …");
    let cluster = tokio::task::block_in_place(|| AosCluster::start(&bin))?;
    let http = agent(Duration::from_secs(10));
    let key = cluster.key.clone();
    let base = cluster.nodes[0].url("");
    let (status, text) = post_json(
        &http,
        &format!("{base}/api/v1/tenants"),
        Some(&key),
        &json!({"tenant_id": "bench", "name": "bench"}),
    )?;
    if status != 200 {
        bail!("create tenant: HTTP {status}: {text}");
    }
    let (status, text) =
        post_json(&http, &format!("{base}/api/v1/tenants/bench/agent-tokens"), Some(&key), &json!({}))?;
    if status != 200 {
        bail!("join token: HTTP {status}: {text}");
    }
    let created: serde_json::Value = serde_json::from_str(&text)?;
    let token = JoinToken::parse(created["join_token"].as_str().context("no join_token")?)?;
    let gateways: Arc<Vec<String>> = Arc::new(cluster.nodes.iter().map(|n| n.agents.clone()).collect());
    let most = args.agents.iter().copied().max().unwrap_or(1);
    let mut identities = Vec::new();
    for i in 0..most {
        identities.push(join(&gateways, &token, &format!("bench-{i}")).await?);
    }
    let seq = Arc::new(AtomicU64::new(0));
    let mut rows = Vec::new();
    let mut total_accepted = 0u64;
    let mut total_duplicates = 0u64;
    let mut total_resent = 0u64;
    for &n in &args.agents {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        eprintln!("{n} agents, batches of {}, from Unix ms {} …", args.batch, wall.as_millis());
        let deadline = Instant::now() + args.duration;
        let cpu_before = cluster_cpu(&cluster);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (i, identity) in identities.iter().take(n).enumerate() {
            let node = args.node.unwrap_or(i % gateways.len());
            let row = Row {
                batch: args.batch,
                first_seq: Arc::clone(&seq),
                started,
                deadline,
                gateways: Arc::clone(&gateways),
                follow_leader: args.node.is_none(),
            };
            tasks.push(tokio::spawn(run_agent(identity.clone(), i, node, row)));
        }
        let mut outcome = Outcome::default();
        for task in tasks {
            let o = task.await??;
            outcome.accepted += o.accepted;
            outcome.duplicates += o.duplicates;
            outcome.resent += o.resent;
            outcome.moves += o.moves;
            outcome.latencies.extend(o.latencies);
            outcome.batches.extend(o.batches);
        }
        let elapsed = started.elapsed();
        // The nodes' CPU per record committed: on a shared machine whose
        // speed drifts between runs (±20 % in records/s), what the cluster
        // spends per record moves far less than how many it commits.
        let cpu_per_record = cluster_cpu(&cluster)
            .zip(cpu_before)
            .and_then(|(after, before)| after.checked_sub(before))
            .and_then(|spent| u32::try_from(outcome.accepted.max(1)).ok().map(|n| spent / n));
        outcome.latencies.sort_unstable();
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a rate for display"
        )]
        let per_sec = (outcome.accepted as f64 / elapsed.as_secs_f64()) as u64;
        eprintln!("  {per_sec} records/s; {} streams moved to the leader", outcome.moves);
        if let Some(cpu) = cpu_per_record {
            eprintln!("  the three nodes' CPU: {} per record", micros(cpu));
        }
        outcome.batches.sort_unstable_by_key(|&(_, took, _)| std::cmp::Reverse(took));
        for &(sent, took, node) in outcome.batches.iter().take(SLOWEST_SHOWN) {
            eprintln!(
                "  slow batch: sent at +{} to node {}, acked after {}",
                fmt_duration(sent),
                cluster.nodes[node].id,
                fmt_duration(took)
            );
        }
        rows.push((
            n,
            per_sec,
            percentile(&outcome.latencies, 50),
            percentile(&outcome.latencies, 99),
            outcome.accepted,
            cpu_per_record,
        ));
        total_accepted += outcome.accepted;
        total_duplicates += outcome.duplicates;
        total_resent += outcome.resent;
    }
    // Zero loss: every acked record is held, on every node.
    let mut held = Vec::new();
    for node in &cluster.nodes {
        let url = node.url("/api/v1/tenants/bench/activity/metrics");
        // Linearizable reads: a node without a leader (an election after the
        // load) answers 503, so ask again until one is there.
        let metrics = tokio::task::block_in_place(|| {
            let _ = &cluster;
            wait_for("the tenant's metrics", Duration::from_secs(60), || {
                let mut response = http.get(&url).header("Authorization", &format!("Bearer {key}")).call()?;
                let status = response.status().as_u16();
                let text = response.body_mut().read_to_string()?;
                match status {
                    200 => Ok(Some(serde_json::from_str::<serde_json::Value>(&text)?)),
                    503 => Ok(None),
                    _ => bail!("{url}: HTTP {status}: {text}"),
                }
            })
        });
        let metrics = match metrics {
            Ok(m) => m,
            Err(e) => {
                for n in &cluster.nodes {
                    eprintln!("--- node {} log ---\n{}", n.id, n.log_tail(3000));
                }
                return Err(e);
            }
        };
        held.push(metrics["records_by_kind"]["LLM_RUN_RECORD"].as_u64().unwrap_or(0));
    }
    println!(
        "| agents | batch | records/s | batch p50 | batch p99 | records acked | nodes' CPU per record |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (n, per_sec, p50, p99, accepted, cpu) in rows {
        println!(
            "| {n} | {} | {per_sec} | {} | {} | {accepted} | {} |",
            args.batch,
            fmt_duration(p50),
            fmt_duration(p99),
            cpu.map_or_else(|| "n/a".to_owned(), micros)
        );
    }
    println!();
    println!(
        "acked as accepted: {total_accepted}; duplicates: {total_duplicates}; resent after UNAVAILABLE: \
         {total_resent}; held per node: {held:?}"
    );
    // Every record is acked once, by the attempt that got an answer: as
    // accepted, or as a duplicate when an attempt answered UNAVAILABLE had
    // committed it after all. Both must be held, and nothing else.
    let acked = total_accepted + total_duplicates;
    if held.iter().any(|&h| h != acked) || total_duplicates > total_resent {
        bail!(
            "LOSS OR DUPLICATION: acked {acked} ({total_accepted} accepted, {total_duplicates} duplicates, \
             {total_resent} resent), held {held:?}"
        );
    }
    println!("zero loss: every acked record is held on all three nodes");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_templated_record_is_the_json_the_agent_would_store() {
        let record = record(3, 41);
        let parsed: serde_json::Value = serde_json::from_slice(&record.json).unwrap();
        let expected = json!({
                "record_id": "rec-bench-3-41",
                "tenant_id": "bench",
                "run_id": "run-3-2",
                "at_ms": 1_790_000_000_041u64,
                "kind": "LLM_RUN_RECORD",
                "step_id": "st-3-41",
                "model": "gpt-4o-mini",
                "input_tokens": 900,
                "output_tokens": 300,
                "cost_micros": 4_000,
                "prompt_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "response_hash": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
                "prompt": null,
                "response": null,
                "outcome": "CONTINUE",
                "snapshot_version": 3,
        });
        assert_eq!(parsed, expected);
        assert_eq!(record.record_id, "rec-bench-3-41");
        // Compact, like the serialiser's output: the same bytes on the wire.
        assert_eq!(record.json.len(), expected.to_string().len());
    }
}
