//! `aos-control-plane`: parses flags/env, sets up logging, runs a node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use aos_control_plane::bootstrap::{init_cluster, write_secret};
use aos_control_plane::config::{ConfigFile, StartConfig, Supplied};
use aos_control_plane::email::Mailer;
use aos_control_plane::master_key::{MASTER_KEY_ENV, MasterKey};
use aos_control_plane::node::{Node, NodeConfig};
use aos_control_plane::pki::{CA_KEY_ENV, load_ca};
use aos_control_plane::signing::{SIGNING_KEY_ENV, generate_key, load_key_ring};
use clap::{Parser, Subcommand};

/// jemalloc instead of glibc's malloc: a node's tokio workers, sled's IO
/// threads and the flusher allocate concurrently, and glibc's arena locks
/// make them wait on each other (measured on the edge agent, the same
/// stack; see benches/README.md and ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "aos-control-plane", version, about = "AOS control-plane node")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a node.
    Start(Box<StartArgs>),
    /// Run a single-node development cluster with a demo tenant, a tenant
    /// admin key and the example policies.
    Dev(DevArgs),
    /// Generate a snapshot signing key into a new file (mode 0600) and
    /// print its key id and public key, for a key rotation.
    Keygen {
        /// The file to create (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
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
    /// The demo tenant's edge agent (local API for the workload).
    #[arg(long, env = "AOS_AGENT_LISTEN", default_value = "127.0.0.1:8000")]
    agent_listen: SocketAddr,
    /// Gateway where further edge agents join (gRPC over mutual TLS).
    #[arg(long, env = "AOS_AGENT_ADDR", default_value = "127.0.0.1:7072")]
    agent_addr: SocketAddr,
}

/// Flags for `start`. Each may also come from its `AOS_*` variable or the
/// `--config` TOML file (flag > env > file > default).
#[derive(Debug, clap::Args)]
struct StartArgs {
    /// TOML config file (keys as the flags, with `_` for `-`).
    #[arg(long, env = "AOS_CONFIG")]
    config: Option<PathBuf>,
    /// Raft node id (≥ 1), unique in the cluster.
    #[arg(long, env = "AOS_NODE_ID")]
    node_id: Option<u64>,
    /// Directory for this node's sled database and key files.
    #[arg(long, env = "AOS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address for Raft and cluster gRPC.
    #[arg(long, env = "AOS_GRPC_ADDR")]
    grpc_addr: Option<SocketAddr>,
    /// Address for the admin REST API.
    #[arg(long, env = "AOS_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// Address peers use to reach this node's gRPC (defaults to --grpc-addr).
    #[arg(long, env = "AOS_ADVERTISE_GRPC")]
    advertise_grpc: Option<String>,
    /// Build a Raft snapshot (and purge the log behind it) at most every N
    /// entries (default 5000), and only once the log has grown by the size
    /// of the last snapshot.
    #[arg(long, env = "AOS_SNAPSHOT_EVERY")]
    snapshot_every: Option<u64>,
    /// Raft heartbeat in milliseconds (default 50; elections time out after
    /// 3–6 heartbeats).
    #[arg(long, env = "AOS_HEARTBEAT_MS")]
    heartbeat_ms: Option<u64>,
    /// How long an issued policy snapshot stays valid, in seconds (default
    /// 86400).
    #[arg(long, env = "AOS_MAX_STALENESS_SECS")]
    max_staleness_secs: Option<u64>,
    /// Snapshot signing key file (hex, mode 0600); repeat during a key
    /// rotation, primary first. Defaults to `<data-dir>/signing.key`;
    /// `AOS_SIGNING_KEY` takes precedence.
    #[arg(long, env = "AOS_SIGNING_KEY_FILE", value_delimiter = ',')]
    signing_key_file: Vec<PathBuf>,
    /// Edge-agent gateway address (gRPC over mutual TLS). Without it the
    /// node serves no edge agents.
    #[arg(long, env = "AOS_AGENT_ADDR")]
    agent_addr: Option<SocketAddr>,
    /// Cluster CA key file (hex, mode 0600). Defaults to
    /// `<data-dir>/ca.key`; `AOS_CA_KEY` takes precedence.
    #[arg(long, env = "AOS_CA_KEY_FILE")]
    ca_key_file: Option<PathBuf>,
    /// Master key file (hex, mode 0600) wrapping tenants' data keys, the
    /// same on every node. Defaults to `<data-dir>/master.key` (created by
    /// `--init`); `AOS_MASTER_KEY` takes precedence. Without one the node
    /// refuses connector credential operations.
    #[arg(long, env = "AOS_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Extra host names or IPs for the gateway certificate (agents verify
    /// `aos-control-plane.internal`, so these are optional).
    #[arg(long = "tls-name", env = "AOS_TLS_NAMES", value_delimiter = ',')]
    tls_names: Vec<String>,
    /// Let tenants' alert webhooks target loopback, private and link-local
    /// addresses (default: refused, so a tenant cannot make the leader
    /// call internal services).
    #[arg(long, env = "AOS_ALERT_PRIVATE_TARGETS")]
    alert_private_targets: bool,
    /// SMTP relay for EMAIL alert channels: `smtps://host[:port]` (TLS),
    /// `smtp://host[:port]` (STARTTLS required) or `smtp+plain://host[:port]`
    /// (no TLS: a local relay). Credentials: `AOS_SMTP_USERNAME` and
    /// `AOS_SMTP_PASSWORD`, never in the URL.
    #[arg(long, env = "AOS_SMTP_URL")]
    smtp_url: Option<String>,
    /// Sender of alert emails, e.g. `AOS <alerts@example.com>`.
    #[arg(long, env = "AOS_SMTP_FROM")]
    smtp_from: Option<String>,
    /// How often the leader prunes records past their tenant's retention,
    /// in milliseconds (default 60000).
    #[arg(long, env = "AOS_RETENTION_INTERVAL_MS")]
    retention_interval_ms: Option<u64>,
    /// Initialise a new cluster with this node as its only voter (first
    /// node, first start); creates the operator key.
    #[arg(long)]
    init: bool,
}

impl StartArgs {
    /// Merges flags/env with the config file.
    fn resolve(&self) -> anyhow::Result<StartConfig> {
        let file = match &self.config {
            Some(path) => Some((path.clone(), ConfigFile::read(path)?)),
            None => None,
        };
        let supplied = Supplied {
            node_id: self.node_id,
            data_dir: self.data_dir.clone(),
            grpc_addr: self.grpc_addr,
            http_addr: self.http_addr,
            advertise_grpc: self.advertise_grpc.clone(),
            snapshot_every: self.snapshot_every,
            signing_key_files: (!self.signing_key_file.is_empty()).then(|| self.signing_key_file.clone()),
            heartbeat_ms: self.heartbeat_ms,
            max_staleness_secs: self.max_staleness_secs,
            agent_addr: self.agent_addr,
            ca_key_file: self.ca_key_file.clone(),
            master_key_file: self.master_key_file.clone(),
            tls_names: (!self.tls_names.is_empty()).then(|| self.tls_names.clone()),
            alert_private_targets: self.alert_private_targets.then_some(true),
            smtp_url: self.smtp_url.clone(),
            smtp_from: self.smtp_from.clone(),
            retention_interval_ms: self.retention_interval_ms,
        };
        let key_in_env = std::env::var(SIGNING_KEY_ENV).is_ok_and(|v| !v.trim().is_empty());
        let ca_in_env = std::env::var(CA_KEY_ENV).is_ok_and(|v| !v.trim().is_empty());
        Ok(StartConfig::resolve(supplied, file, key_in_env, ca_in_env)?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr; stdout carries only what an operator must read
    // (ready lines, the dev-mode summary).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,rmcp=warn")),
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
        Cmd::Start(args) => start(*args).await,
        Cmd::Dev(args) => dev(args).await,
        Cmd::Keygen { out } => keygen(&out),
    }
}

async fn start(args: StartArgs) -> anyhow::Result<()> {
    let config = args.resolve().context("configuration")?;
    tracing::info!(message = "starting control-plane node", init = args.init, effective_config = %config.redacted_json());
    std::fs::create_dir_all(&config.data_dir).context("creating the data directory")?;
    let env_key = std::env::var(SIGNING_KEY_ENV).ok();
    let keys =
        load_key_ring(env_key.as_deref(), &config.explicit_signing_key_files, &config.data_dir, args.init)
            .context("loading the snapshot signing keys")?;
    tracing::info!(message = "snapshot signing keys loaded", keys = ?keys);
    let mut node_config = NodeConfig::new(
        config.node_id,
        config.data_dir.clone(),
        config.advertise_grpc.clone(),
        std::sync::Arc::new(keys),
    );
    node_config.snapshot_every = config.snapshot_every;
    node_config.heartbeat = config.heartbeat();
    node_config.max_staleness = std::time::Duration::from_secs(config.max_staleness_secs);
    let env_ca = std::env::var(CA_KEY_ENV).ok();
    let ca = load_ca(env_ca.as_deref(), config.explicit_ca_key_file.as_deref(), &config.data_dir, args.init);
    node_config.ca = match (ca, config.agent_addr) {
        (Ok(ca), _) => {
            tracing::info!(message = "cluster CA loaded", ca_cert_sha256 = ca.sha256_hex());
            Some(std::sync::Arc::new(ca))
        }
        (Err(e), Some(_)) => return Err(e).context("loading the cluster CA for the agent gateway"),
        (Err(e), None) => {
            tracing::info!(message = "no agent gateway (no --agent-addr)", ca = %e);
            None
        }
    };
    node_config.tls_names.clone_from(&config.tls_names);
    node_config.alert_private_targets = config.alert_private_targets;
    node_config.master_key = load_master_key(config.master_key_file.as_deref(), &config.data_dir, args.init)?;
    node_config.retention_interval = std::time::Duration::from_millis(config.retention_interval_ms);
    if let (Some(url), Some(from)) = (&config.smtp_url, &config.smtp_from) {
        let credentials = Mailer::credentials_from_env()?;
        let authenticated = credentials.is_some();
        let mailer = Mailer::new(url, from, credentials, aos_control_plane::alerting::DELIVERY_TIMEOUT)
            .context("configuring the SMTP relay")?;
        tracing::info!(message = "email alerts on", relay = ?mailer.relay(), authenticated);
        node_config.mailer = Some(std::sync::Arc::new(mailer));
    }
    if let Some(addr) = config.agent_addr {
        node_config.tls_names.push(addr.ip().to_string());
    }
    let node = Node::open(&node_config).await.context("opening the node")?;
    let grpc = tokio::net::TcpListener::bind(config.grpc_addr).await.context("binding the gRPC address")?;
    let http = tokio::net::TcpListener::bind(config.http_addr).await.context("binding the HTTP address")?;
    let agents = match config.agent_addr {
        Some(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.context("binding the agent gateway address")?)
        }
        None => None,
    };
    let serving = tokio::spawn(node.clone().serve(grpc, http, agents, shutdown_signal()));
    if args.init
        && let Some(path) = init_cluster(&node, &config.data_dir).await.context("initialising the cluster")?
    {
        println!("operator key written to {} (mode 0600)", path.display());
    }
    match config.agent_addr {
        Some(agents) => println!(
            "aos-control-plane node {} ready: http://{} grpc {} agents {}",
            config.node_id, config.http_addr, config.grpc_addr, agents
        ),
        None => println!(
            "aos-control-plane node {} ready: http://{} grpc {}",
            config.node_id, config.http_addr, config.grpc_addr
        ),
    }
    serving.await.context("node task")?.context("serving")?;
    Ok(())
}

fn load_master_key(
    file: Option<&std::path::Path>,
    data_dir: &std::path::Path,
    generate: bool,
) -> anyhow::Result<Option<std::sync::Arc<MasterKey>>> {
    let env = std::env::var(MASTER_KEY_ENV).ok();
    let key = MasterKey::load(env.as_deref(), file, data_dir, generate).context("loading the master key")?;
    match &key {
        Some(k) => tracing::info!(message = "master key loaded", master_key_id = k.id()),
        None => tracing::warn!(
            message =
                "no master key: connector credentials cannot be set, verified or sent to agents on this node"
        ),
    }
    Ok(key.map(std::sync::Arc::new))
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir).context("creating the data directory")?;
    let env_key = std::env::var(SIGNING_KEY_ENV).ok();
    let keys = load_key_ring(env_key.as_deref(), &[], &args.data_dir, true)
        .context("loading the snapshot signing key")?;
    let key_id = keys.primary().key_id().clone();
    let mut config =
        NodeConfig::new(1, args.data_dir.clone(), args.grpc_addr.to_string(), std::sync::Arc::new(keys));
    // Dev mode is one machine: a webhook receiver on localhost is the
    // normal way to try alerts.
    config.alert_private_targets = true;
    let env_ca = std::env::var(CA_KEY_ENV).ok();
    config.ca = Some(std::sync::Arc::new(
        load_ca(env_ca.as_deref(), None, &args.data_dir, true).context("loading the cluster CA")?,
    ));
    config.tls_names.push(args.agent_addr.ip().to_string());
    config.master_key = load_master_key(None, &args.data_dir, true)?;
    let node = Node::open(&config).await.context("opening the node")?;
    let grpc = tokio::net::TcpListener::bind(args.grpc_addr).await.context("binding the gRPC address")?;
    let http = tokio::net::TcpListener::bind(args.http_addr).await.context("binding the HTTP address")?;
    let agents =
        tokio::net::TcpListener::bind(args.agent_addr).await.context("binding the agent gateway address")?;
    let serving = tokio::spawn(node.clone().serve(grpc, http, Some(agents), shutdown_signal()));
    init_cluster(&node, &args.data_dir).await.context("initialising the dev cluster")?;
    let seed =
        aos_control_plane::dev::seed(&node, &args.data_dir).await.context("seeding the demo tenant")?;
    aos_control_plane::dev_agent::start(
        &node,
        aos_control_plane::dev::DEMO_TENANT,
        &args.data_dir,
        args.agent_listen,
        args.agent_addr,
    )
    .await
    .context("starting the dev edge agent")?;
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
    println!("  edge agent (demo):  http://{}  (local API for the workload)", args.agent_listen);
    println!(
        "  agent gateway:      {}  (mTLS; more agents join with `aosctl agent token create`)",
        args.agent_addr
    );
    println!(
        "  try: curl -s -H \"Authorization: Bearer $(cat {dir}/demo-admin.key)\" http://{}/api/v1/tenants/demo/policies",
        args.http_addr
    );
    println!(
        "       curl -s -X POST http://{}/api/v1/runs -d '{{\"agent_id\": \"research-bot\"}}'",
        args.agent_listen
    );
    serving.await.context("node task")?.context("serving")?;
    Ok(())
}

fn keygen(out: &std::path::Path) -> anyhow::Result<()> {
    if out.exists() {
        anyhow::bail!("{} exists; refusing to overwrite a key", out.display());
    }
    let signer = generate_key()?;
    write_secret(out, &signer.secret_hex()).with_context(|| format!("writing {}", out.display()))?;
    println!("key file:   {} (mode 0600)", out.display());
    println!("key id:     {}", signer.key_id());
    println!("public key: {}", hex::encode(signer.verifying_key().as_bytes()));
    println!("next: give the file to every node (--signing-key-file), then");
    println!("      aosctl cluster signing-key add --public-key <public key>");
    println!("      aosctl cluster signing-key activate {}", signer.key_id());
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
