//! `aos-edge-agent`: parses flags/env, opens the store, loads the
//! snapshot, serves the local API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use aos_core::snapshot::TrustedKeys;
use aos_edge_agent::api::App;
use aos_edge_agent::engine::Engine;
use aos_edge_agent::jobs::{JobBoard, JobsConfig};
use aos_edge_agent::snapshots::{Offer, SnapshotSlot};
use aos_edge_agent::store::AgentStore;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "aos-edge-agent",
    version,
    about = "AOS edge agent: enforces policy snapshots next to a workload"
)]
struct Args {
    /// The tenant this agent serves.
    #[arg(long, env = "AOS_TENANT")]
    tenant: String,
    /// Directory for the agent's database.
    #[arg(long, env = "AOS_AGENT_DATA_DIR", default_value = ".aos-agent")]
    data_dir: PathBuf,
    /// Local API address.
    #[arg(long, env = "AOS_AGENT_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Snapshot signing public keys to trust (hex; comma-separated or
    /// repeated).
    #[arg(long = "trusted-key", env = "AOS_TRUSTED_KEYS", value_delimiter = ',', required = true)]
    trusted_keys: Vec<String>,
    /// A signed snapshot file to offer at start (verified like any other).
    #[arg(long, env = "AOS_SNAPSHOT_FILE")]
    snapshot_file: Option<PathBuf>,
    /// Outbox disk budget in MiB; when full, new runs are refused.
    #[arg(long, env = "AOS_OUTBOX_BUDGET_MB", default_value_t = 512)]
    outbox_budget_mb: u64,
    /// A run with no step for this many seconds is ended as TIMEOUT.
    #[arg(long, env = "AOS_STALE_RUN_AFTER_SECS", default_value_t = 1800)]
    stale_run_after_secs: u64,
    /// Cron schedule (with seconds) of the stale-run sweep.
    #[arg(long, env = "AOS_STALE_RUN_SCHEDULE", default_value = "*/30 * * * * *")]
    stale_run_schedule: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aos-edge-agent: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut trusted = TrustedKeys::new();
    for (i, key) in args.trusted_keys.iter().enumerate() {
        trusted.insert_hex(key).with_context(|| format!("--trusted-key #{}", i + 1))?;
    }
    std::fs::create_dir_all(&args.data_dir).context("creating the data directory")?;
    let store = AgentStore::open(&args.data_dir.join("store")).context("opening the agent store")?;
    let slot = SnapshotSlot::new(args.tenant.clone(), trusted);
    let engine = Arc::new(
        Engine::open(
            slot,
            store,
            args.outbox_budget_mb.saturating_mul(1024 * 1024),
            aos_edge_agent::events::EVENT_BUFFER,
        )
        .context("opening the engine")?,
    );
    if let Some(path) = &args.snapshot_file {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        match engine.offer_snapshot(&bytes).await.context("storing the snapshot")? {
            Offer::Accepted { version } => tracing::info!(message = "snapshot file applied", version),
            Offer::Rejected { reason, .. } => {
                tracing::warn!(message = "snapshot file rejected; keeping the current one", reason = %reason);
            }
        }
    }
    let _alert_log = engine.events().spawn_alert_log();
    let jobs = JobBoard::default();
    let config = JobsConfig {
        stale_run_schedule: args.stale_run_schedule.clone(),
        stale_run_after: std::time::Duration::from_secs(args.stale_run_after_secs),
        ..JobsConfig::default()
    };
    let mut scheduler = aos_edge_agent::jobs::start(Arc::clone(&engine), config, jobs.clone())
        .await
        .context("starting scheduled jobs")?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.context("binding the local API")?;
    println!(
        "aos-edge-agent for tenant {} ready: http://{} (snapshot version {})",
        args.tenant,
        args.listen,
        engine.slot().current().map_or_else(|| "none".to_owned(), |s| s.version().to_string())
    );
    axum::serve(listener, aos_edge_agent::api::router(App { engine, jobs }))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the local API")?;
    if let Err(e) = scheduler.shutdown().await {
        tracing::warn!(message = "scheduler shutdown", error = %e);
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}
