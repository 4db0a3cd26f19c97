//! `aos-control-plane`: parses flags/env, sets up logging, runs a node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use aos_control_plane::bootstrap::init_cluster;
use aos_control_plane::node::{Node, NodeConfig};
use aos_control_plane::signing::{SIGNING_KEY_ENV, load_signing_key};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "aos-control-plane", version, about = "AOS control-plane node")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a node.
    Start(StartArgs),
    /// Run a single-node development cluster with a demo tenant, a tenant
    /// admin key and the example policies.
    Dev(DevArgs),
}

#[derive(Debug, clap::Args)]
struct DevArgs {
    /// Where the dev cluster keeps its data (reused across runs).
    #[arg(long, env = "AOS_DATA_DIR", default_value = ".aos-dev/control-plane")]
    data_dir: PathBuf,
    /// Admin REST API address.
    #[arg(long, env = "AOS_HTTP_ADDR", default_value = "127.0.0.1:7070")]
    http_addr: SocketAddr,
    /// Raft/cluster gRPC address.
    #[arg(long, env = "AOS_GRPC_ADDR", default_value = "127.0.0.1:7071")]
    grpc_addr: SocketAddr,
}

#[derive(Debug, clap::Args)]
struct StartArgs {
    /// Raft node id (≥ 1), unique in the cluster.
    #[arg(long, env = "AOS_NODE_ID")]
    node_id: u64,
    /// Directory for this node's sled database and key files.
    #[arg(long, env = "AOS_DATA_DIR")]
    data_dir: PathBuf,
    /// Address for Raft and cluster gRPC.
    #[arg(long, env = "AOS_GRPC_ADDR")]
    grpc_addr: SocketAddr,
    /// Address for the admin REST API.
    #[arg(long, env = "AOS_HTTP_ADDR")]
    http_addr: SocketAddr,
    /// Address peers use to reach this node's gRPC (defaults to --grpc-addr).
    #[arg(long, env = "AOS_ADVERTISE_GRPC")]
    advertise_grpc: Option<String>,
    /// Build a Raft snapshot and purge the log behind it every N entries.
    #[arg(long, env = "AOS_SNAPSHOT_EVERY", default_value_t = 5_000)]
    snapshot_every: u64,
    /// Snapshot signing key file (hex, mode 0600). Defaults to
    /// `<data-dir>/signing.key`; `AOS_SIGNING_KEY` takes precedence.
    #[arg(long)]
    signing_key_file: Option<PathBuf>,
    /// Initialise a new cluster with this node as its only voter (first
    /// node, first start); creates the operator key.
    #[arg(long)]
    init: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aos-control-plane: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Start(args) => start(args).await,
        Cmd::Dev(args) => dev(args).await,
    }
}

async fn start(args: StartArgs) -> anyhow::Result<()> {
    let advertise = args.advertise_grpc.clone().unwrap_or_else(|| args.grpc_addr.to_string());
    tracing::info!(
        message = "starting control-plane node",
        node_id = args.node_id,
        data_dir = %args.data_dir.display(),
        grpc = %args.grpc_addr,
        http = %args.http_addr,
        advertise = %advertise,
        init = args.init,
    );
    std::fs::create_dir_all(&args.data_dir).context("creating the data directory")?;
    let env_key = std::env::var(SIGNING_KEY_ENV).ok();
    let signer =
        load_signing_key(env_key.as_deref(), args.signing_key_file.as_deref(), &args.data_dir, args.init)
            .context("loading the snapshot signing key")?;
    tracing::info!(message = "snapshot signing key loaded", key_id = %signer.key_id());
    let mut config =
        NodeConfig::new(args.node_id, args.data_dir.clone(), advertise, std::sync::Arc::new(signer));
    config.snapshot_every = args.snapshot_every;
    let node = Node::open(&config).await.context("opening the node")?;
    let grpc = tokio::net::TcpListener::bind(args.grpc_addr).await.context("binding the gRPC address")?;
    let http = tokio::net::TcpListener::bind(args.http_addr).await.context("binding the HTTP address")?;
    let serving = tokio::spawn(node.clone().serve(grpc, http, shutdown_signal()));
    if args.init
        && let Some(path) = init_cluster(&node, &args.data_dir).await.context("initialising the cluster")?
    {
        println!("operator key written to {} (mode 0600)", path.display());
    }
    println!(
        "aos-control-plane node {} ready: http://{} grpc {}",
        args.node_id, args.http_addr, args.grpc_addr
    );
    serving.await.context("node task")?.context("serving")?;
    Ok(())
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir).context("creating the data directory")?;
    let env_key = std::env::var(SIGNING_KEY_ENV).ok();
    let signer = load_signing_key(env_key.as_deref(), None, &args.data_dir, true)
        .context("loading the snapshot signing key")?;
    let key_id = signer.key_id().clone();
    let config =
        NodeConfig::new(1, args.data_dir.clone(), args.grpc_addr.to_string(), std::sync::Arc::new(signer));
    let node = Node::open(&config).await.context("opening the node")?;
    let grpc = tokio::net::TcpListener::bind(args.grpc_addr).await.context("binding the gRPC address")?;
    let http = tokio::net::TcpListener::bind(args.http_addr).await.context("binding the HTTP address")?;
    let serving = tokio::spawn(node.clone().serve(grpc, http, shutdown_signal()));
    init_cluster(&node, &args.data_dir).await.context("initialising the dev cluster")?;
    let seed =
        aos_control_plane::dev::seed(&node, &args.data_dir).await.context("seeding the demo tenant")?;
    let dir = args.data_dir.display();
    println!("AOS control plane (dev mode, single node)");
    println!("  admin API:          http://{}", args.http_addr);
    println!("  operator key file:  {dir}/operator.key");
    println!("  signing key id:     {key_id}");
    match (&seed.admin_key, &seed.admin_key_file) {
        (Some(secret), Some(file)) => {
            println!(
                "  demo tenant:        {} ({} example policies applied)",
                aos_control_plane::dev::DEMO_TENANT,
                seed.policies
            );
            println!("  demo admin key:     {secret}  (also in {}, mode 0600)", file.display());
        }
        _ => println!(
            "  demo tenant:        {} (kept from a previous run; key in {dir}/demo-admin.key)",
            aos_control_plane::dev::DEMO_TENANT
        ),
    }
    println!(
        "  try: curl -s -H \"Authorization: Bearer $(cat {dir}/demo-admin.key)\" http://{}/api/v1/tenants/demo/policies",
        args.http_addr
    );
    serving.await.context("node task")?.context("serving")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
