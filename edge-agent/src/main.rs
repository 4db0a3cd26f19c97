//! `aos-edge-agent`: parses flags/env, opens the store, loads the
//! snapshot, serves the local API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use aos_core::snapshot::TrustedKeys;
use aos_edge_agent::api::App;
use aos_edge_agent::auth::{Auth, AuthMode};
use aos_edge_agent::engine::Engine;
use aos_edge_agent::identity::{AgentIdentity, JoinToken};
use aos_edge_agent::jobs::{JobBoard, JobsConfig};
use aos_edge_agent::link::{Link, run_delivery, run_watch};
use aos_edge_agent::snapshots::{Offer, SnapshotSlot};
use aos_edge_agent::store::AgentStore;
use clap::Parser;

/// jemalloc instead of glibc's malloc: under concurrent steps glibc's
/// arena locks made threads wait on each other (futex waits inside
/// `malloc` and `free` in a profile at 64 concurrent workloads); see
/// benches/README.md for the A/B and ARCHITECTURE.md for the choice.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "aos-edge-agent",
    version,
    about = "AOS edge agent: enforces policy snapshots next to a workload"
)]
struct Args {
    /// The tenant this agent serves. With a control plane it comes from the
    /// join; if given too, it must match.
    #[arg(long, env = "AOS_TENANT")]
    tenant: Option<String>,
    /// Control-plane agent gateways (`host:port`, comma-separated or
    /// repeated); the agent fails over across them.
    #[arg(long = "control-plane", env = "AOS_CONTROL_PLANE", value_delimiter = ',')]
    control_plane: Vec<String>,
    /// Join token from `aosctl agent token create` (first start only; the
    /// identity is kept in the data directory afterwards).
    #[arg(long, env = "AOS_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// Name shown to operators (default: the host name).
    #[arg(long, env = "AOS_AGENT_NAME")]
    agent_name: Option<String>,
    /// Directory for the agent's database.
    #[arg(long, env = "AOS_AGENT_DATA_DIR", default_value = ".aos-agent")]
    data_dir: PathBuf,
    /// Local API address.
    #[arg(long, env = "AOS_AGENT_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Local gRPC API address (`aos.agent.local.v1.LocalAccess`, governed
    /// data access over plain HTTP/2, authenticated like the HTTP API);
    /// not served unless given.
    #[arg(long, env = "AOS_AGENT_GRPC_LISTEN")]
    grpc_listen: Option<SocketAddr>,
    /// Snapshot signing public keys to trust (hex; comma-separated or
    /// repeated). Required without a control plane, which otherwise pushes
    /// them.
    #[arg(long = "trusted-key", env = "AOS_TRUSTED_KEYS", value_delimiter = ',')]
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
    /// Local API authentication: `required` (a workload API key from the
    /// tenant's snapshot as `Authorization: Bearer`) or `off` (loopback
    /// addresses only, for development).
    #[arg(long, env = "AOS_AGENT_AUTH", value_enum, default_value = "required")]
    auth: AuthMode,
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
                // rmcp logs each MCP server's self-description (free text
                // the tenant's server supplies) at INFO: not for our logs.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rmcp=warn")),
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
    args.auth.check_listen(args.listen).map_err(anyhow::Error::msg)?;
    if let Some(grpc) = args.grpc_listen {
        args.auth.check_listen(grpc).map_err(anyhow::Error::msg)?;
    }
    std::fs::create_dir_all(&args.data_dir).context("creating the data directory")?;
    let identity = identity(&args).await?;
    let tenant = match (&identity, &args.tenant) {
        (Some(id), Some(t)) if &id.tenant_id != t => anyhow::bail!(
            "--tenant {t} but this agent joined tenant {} (its identity is in {})",
            id.tenant_id,
            AgentIdentity::path(&args.data_dir).display()
        ),
        (Some(id), _) => id.tenant_id.clone(),
        (None, Some(t)) => t.clone(),
        (None, None) => anyhow::bail!("--tenant is required without --control-plane"),
    };
    let store = AgentStore::open(&args.data_dir.join("store")).context("opening the agent store")?;
    let mut key_list = args.trusted_keys.clone();
    match store.load_trusted_keys().context("reading the trusted keys")? {
        Some(pushed) => key_list.extend(pushed),
        None => key_list.extend(identity.iter().flat_map(|i| i.trusted_snapshot_keys.iter().cloned())),
    }
    if key_list.is_empty() {
        anyhow::bail!("no snapshot key to trust: pass --trusted-key, or join a control plane");
    }
    let mut trusted = TrustedKeys::new();
    for (i, key) in key_list.iter().enumerate() {
        trusted.insert_hex(key).with_context(|| format!("trusted key #{}", i + 1))?;
    }
    let slot = SnapshotSlot::new(tenant.clone(), trusted);
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grpc_stop = stop_rx.clone();
    let link = identity.map(|id| Arc::new(Link::new(args.control_plane.clone(), id)));
    let mut link_tasks = Vec::new();
    if let Some(link) = &link {
        link_tasks.push(tokio::spawn(run_watch(Arc::clone(&engine), Arc::clone(link), stop_rx.clone())));
        link_tasks.push(tokio::spawn(run_delivery(Arc::clone(&engine), Arc::clone(link), stop_rx)));
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await.context("binding the local API")?;
    let auth = Auth::new(args.auth, Arc::clone(&engine));
    let app = App { engine: Arc::clone(&engine), jobs, link, auth, grpc_listen: args.grpc_listen };
    let grpc_task = match args.grpc_listen {
        Some(addr) => {
            // Stops with the link tasks, once the HTTP API has drained.
            let mut stop = grpc_stop;
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let server = aos_edge_agent::grpc_api::serve(app.clone(), addr, shutdown).await?;
            Some(tokio::spawn(async move {
                let result = server.await;
                if let Err(e) = &result {
                    tracing::error!(message = "local gRPC API stopped", error = %e);
                }
                result
            }))
        }
        None => None,
    };
    println!(
        "aos-edge-agent for tenant {} ready: http://{}{} (snapshot version {})",
        tenant,
        args.listen,
        args.grpc_listen.map_or_else(String::new, |a| format!(", gRPC {a}")),
        engine.slot().current().map_or_else(|| "none".to_owned(), |s| s.version().to_string())
    );
    // Small request/response exchanges on every step: no Nagle delays.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(message = "cannot set TCP_NODELAY on the local API", error = %e);
        }
    });
    axum::serve(listener, aos_edge_agent::api::router(app))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the local API")?;
    let _ = stop_tx.send(true);
    for task in link_tasks {
        let _ = task.await;
    }
    if let Some(task) = grpc_task {
        // A failure was logged when it happened; the shutdown record is
        // still written.
        let _ = task.await;
    }
    engine.record_shutdown("stopped by signal").await.context("recording the shutdown")?;
    if let Err(e) = scheduler.shutdown().await {
        tracing::warn!(message = "scheduler shutdown", error = %e);
    }
    Ok(())
}

/// The agent's identity: loaded, or obtained now with the join token.
async fn identity(args: &Args) -> anyhow::Result<Option<AgentIdentity>> {
    if args.control_plane.is_empty() {
        if args.join_token.is_some() {
            anyhow::bail!("--join-token needs --control-plane");
        }
        return Ok(None);
    }
    if let Some(identity) = AgentIdentity::load(&args.data_dir)? {
        tracing::info!(message = "identity loaded", edge_agent_id = %identity.edge_agent_id, tenant = %identity.tenant_id);
        return Ok(Some(identity));
    }
    let Some(token) = &args.join_token else {
        anyhow::bail!(
            "this agent has not joined yet: pass --join-token (from `aosctl agent token create`) on its first start"
        );
    };
    let token = JoinToken::parse(token)?;
    let name = match &args.agent_name {
        Some(name) => name.clone(),
        None => std::fs::read_to_string("/etc/hostname")
            .map_or_else(|_| "edge-agent".to_owned(), |h| h.trim().to_owned()),
    };
    let identity = aos_edge_agent::identity::join(&args.control_plane, &token, &name).await?;
    identity.save(&args.data_dir)?;
    tracing::info!(message = "joined the control plane", edge_agent_id = %identity.edge_agent_id, tenant = %identity.tenant_id);
    Ok(Some(identity))
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
