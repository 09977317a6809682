//! The `storefront` binary: parses the command line, loads the configuration and runs a node.
//!
//! This is the only place that reads the process environment, installs the allocator and the
//! log subscriber, and turns errors into an exit status (`anyhow` lives here and nowhere else).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use storefront::telemetry::Telemetry;
use storefront_actors::Currency;
use storefront_config::{Config, Override};

/// mimalloc: the allocator the benchmarks were measured with (glibc's malloc cost about a quarter
/// of the checkout throughput under load, see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "storefront",
    version,
    about = "An e-commerce backend of sharded, event-sourced actors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node.
    Serve(ServeArgs),
    /// Apply the store's schema (PostgreSQL, ScyllaDB; idempotent), then exit.
    Migrate(MigrateArgs),
    /// Operate the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Run the notification service: mail and text messages for the shop's events (EVENTS.md).
    Notify(NotifyArgs),
    /// Operate the shared search index.
    #[command(subcommand)]
    Search(SearchCommand),
}

#[derive(Debug, Subcommand)]
enum SearchCommand {
    /// Drop the shared (Quickwit) index and fill a new one from the catalog and stock states in
    /// the store: the repair for an index that missed writes. Searches fail while it runs.
    Rebuild(RebuildArgs),
}

#[derive(Debug, clap::Args)]
struct RebuildArgs {
    /// TOML configuration file (the nodes' own).
    #[arg(long, env = "STOREFRONT_CONFIG")]
    config: Option<PathBuf>,
    /// The cluster's shared store (`postgres://...` or `scylla://...`).
    #[arg(long)]
    store: Option<String>,
    /// The shared index (`quickwit://HOST:PORT/INDEX`).
    #[arg(long)]
    search: Option<String>,
}

#[derive(Debug, clap::Args)]
struct NotifyArgs {
    /// TOML configuration file (the `[events]` and `[notify]` sections).
    #[arg(long, env = "STOREFRONT_CONFIG")]
    config: Option<PathBuf>,
    /// The broker (default: `events.amqp_url`, `STOREFRONT_EVENTS__AMQP_URL`).
    #[arg(long)]
    amqp: Option<String>,
    /// Where the notifier keeps what it sent (`<dir>/notify`) and, without an SMTP server, its
    /// mail (`<dir>/mail`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A shared store for what was sent, instead of the embedded one (`postgres://...`).
    #[arg(long)]
    store: Option<String>,
    /// `smtp://host:port` or `smtps://user:password@host:465`.
    #[arg(long)]
    smtp_url: Option<String>,
    /// The mails' sender.
    #[arg(long)]
    mail_from: Option<String>,
    /// Base URL of a Twilio-compatible Messages API.
    #[arg(long)]
    sms_url: Option<String>,
    /// The SMS account.
    #[arg(long)]
    sms_account: Option<String>,
    /// The SMS token (or `STOREFRONT_NOTIFY__SMS_TOKEN`).
    #[arg(long)]
    sms_token: Option<String>,
    /// The SMS sender number.
    #[arg(long)]
    sms_from: Option<String>,
    /// Tries of one send before the message is dead-lettered.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// A folder of templates replacing the built-in ones, file by file.
    #[arg(long)]
    templates: Option<PathBuf>,
    /// Where `/metrics` is served (HOST:PORT).
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Move every dead-lettered message back to the notification queue, then exit.
    #[arg(long)]
    replay_dlq: bool,
}

impl NotifyArgs {
    fn overrides(&self) -> Vec<Override> {
        let mut overrides = Vec::new();
        let mut text = |key: &str, value: &Option<String>| {
            if let Some(value) = value {
                overrides.push(Override::new(key, value.as_str()));
            }
        };
        text("events.amqp_url", &self.amqp);
        text("store", &self.store);
        text("notify.smtp_url", &self.smtp_url);
        text("notify.mail_from", &self.mail_from);
        text("notify.sms_url", &self.sms_url);
        text("notify.sms_account", &self.sms_account);
        text("notify.sms_token", &self.sms_token);
        text("notify.sms_from", &self.sms_from);
        text("notify.metrics_addr", &self.metrics_addr);
        for (key, path) in [("data_dir", &self.data_dir), ("notify.templates_dir", &self.templates)]
        {
            if let Some(path) = path {
                overrides.push(Override::new(key, path.to_string_lossy().as_ref()));
            }
        }
        if let Some(attempts) = self.max_attempts {
            overrides.push(Override::new("notify.max_attempts", i64::from(attempts)));
        }
        overrides
    }
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Print the cluster's nodes and shard ownership as the shared store shows them (the same
    /// document as `GET /v1/admin/cluster`; takes two heartbeats to tell live nodes from dead).
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// TOML configuration file (the nodes' own).
    #[arg(long, env = "STOREFRONT_CONFIG")]
    config: Option<PathBuf>,
    /// The cluster's shared store (`postgres://...` or `scylla://...`).
    #[arg(long)]
    store: Option<String>,
}

#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// The store: `postgres://...` or `scylla://...` (`embedded` needs no schema).
    #[arg(long, env = "STOREFRONT_STORE")]
    store: String,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "STOREFRONT_CONFIG")]
    config: Option<PathBuf>,
    /// Where the HTTP edge listens (HOST:PORT).
    #[arg(long)]
    http_addr: Option<String>,
    /// Where the embedded store lives.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `embedded`, `postgres://...` or `scylla://...`.
    #[arg(long)]
    store: Option<String>,
    /// Start with an empty catalog.
    #[arg(long)]
    no_demo_data: bool,
    /// This node's id in the cluster.
    #[arg(long)]
    node_id: Option<String>,
    /// Where this node listens for peers (HOST:PORT).
    #[arg(long)]
    cluster_addr: Option<String>,
    /// Peers to join, comma separated (HOST:PORT,...).
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<String>>,
    /// Redis (`redis://HOST:PORT`): rate limits shared by every node, and cached searches.
    #[arg(long)]
    redis: Option<String>,
    /// The search index: `embedded` (default) or `quickwit://HOST:PORT/INDEX`.
    #[arg(long)]
    search: Option<String>,
}

impl ServeArgs {
    fn overrides(&self) -> Vec<Override> {
        let mut overrides = Vec::new();
        let mut text = |key: &str, value: &Option<String>| {
            if let Some(value) = value {
                overrides.push(Override::new(key, value.as_str()));
            }
        };
        text("http_addr", &self.http_addr);
        text("store", &self.store);
        text("cluster.node_id", &self.node_id);
        text("cluster.addr", &self.cluster_addr);
        text("redis.url", &self.redis);
        text("search.url", &self.search);
        if let Some(dir) = &self.data_dir {
            overrides.push(Override::new("data_dir", dir.to_string_lossy().as_ref()));
        }
        if let Some(seeds) = &self.seeds {
            let seeds: Vec<toml::Value> =
                seeds.iter().map(|s| toml::Value::from(s.as_str())).collect();
            overrides.push(Override::new("cluster.seeds", seeds));
        }
        if self.no_demo_data {
            overrides.push(Override::new("demo_data", false));
        }
        overrides
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS crypto provider for the process (aws-lc-rs): libraries that take rustls's default
    // (SMTP, AMQP over TLS) find it, though the HTTP client also compiles in ring. Fails only if
    // one was installed already, which nothing here does before this line.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let outcome = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Migrate(args) => migrate(args),
        Command::Cluster(ClusterCommand::Status(args)) => cluster_status(args),
        Command::Notify(args) => notify(args),
        Command::Search(SearchCommand::Rebuild(args)) => search_rebuild(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, the whole cause chain: `{:#}`.
            eprintln!("storefront: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), std::env::vars(), args.overrides())?;
    let telemetry = Telemetry::init(&config, &config.cluster.node_id)?;
    Currency::parse(&config.shop.base_currency)
        .context("invalid config key `shop.base_currency`")?;
    // Every client connection is an open file: take the hard limit (a distribution's soft limit
    // of 1,024 would refuse the thousands of connections a node is built to hold).
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = runtime.block_on(run_node(config));
    // The exporter's last batch goes out on its own thread, after the runtime is gone.
    drop(runtime);
    telemetry.shutdown();
    outcome
}

fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(storefront_storage::migrate(&args.store)).with_context(|| {
        format!("cannot migrate the store `{}`", storefront_storage::redact_url(&args.store))
    })?;
    writeln!(
        std::io::stdout(),
        "storefront: schema applied to {}",
        storefront_storage::redact_url(&args.store)
    )?;
    Ok(())
}

fn cluster_status(args: StatusArgs) -> anyhow::Result<()> {
    let overrides = args.store.iter().map(|store| Override::new("store", store.as_str())).collect();
    let config = Config::load(args.config.as_deref(), std::env::vars(), overrides)?;
    if config.store == "embedded" {
        anyhow::bail!(
            "the embedded store belongs to its one running node: ask it with GET /v1/admin/cluster, \
             or give the cluster's shared store with --store"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let document = runtime.block_on(async {
        let store =
            storefront_storage::open(&config.store, &config.data_dir).await.with_context(|| {
                format!("cannot open the store `{}`", storefront_storage::redact_url(&config.store))
            })?;
        let ownership = storefront_cluster::OwnershipConfig {
            node_id: config.cluster.node_id.clone(),
            cluster_addr: None,
            http_addr: String::new(),
            shard_count: config.entities.shard_count,
            heartbeat: config.cluster.heartbeat(),
            member_ttl: config.cluster.member_ttl(),
        };
        let view = storefront_cluster::observe(store.as_ref(), &ownership)
            .await
            .context("cannot read the cluster's members and leases")?;
        anyhow::Ok(view.status(None, config.entities.shard_count))
    })?;
    writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&document)?)?;
    Ok(())
}

fn search_rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let mut overrides = Vec::new();
    if let Some(store) = &args.store {
        overrides.push(Override::new("store", store.as_str()));
    }
    if let Some(search) = &args.search {
        overrides.push(Override::new("search.url", search.as_str()));
    }
    let config = Config::load(args.config.as_deref(), std::env::vars(), overrides)?;
    if config.search.url == "embedded" {
        anyhow::bail!(
            "the embedded index is each node's own and is rebuilt at its every start; \
             give the shared index with --search quickwit://HOST:PORT/INDEX"
        );
    }
    let base = Currency::parse(&config.shop.base_currency)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let products = runtime.block_on(async {
        let store =
            storefront_storage::open(&config.store, &config.data_dir).await.with_context(|| {
                format!("cannot open the store `{}`", storefront_storage::redact_url(&config.store))
            })?;
        let index = storefront_http::catalog::search::quickwit::QuickwitIndex::open_empty(
            &config.search.url,
        )
        .await?;
        let catalog = storefront_http::catalog::Catalog::open_with(store, Arc::new(index), base)
            .await
            .context("cannot fill the index from the catalog")?;
        anyhow::Ok(catalog.len())
    })?;
    writeln!(std::io::stdout(), "storefront: search index rebuilt with {products} products")?;
    Ok(())
}

fn notify(args: NotifyArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), std::env::vars(), args.overrides())?;
    // The notifier makes no trace spans: this installs its logs.
    let telemetry = Telemetry::init(&config, "notifier")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        let notifier = storefront::notify::start(&config).await?;
        if args.replay_dlq {
            let moved = notifier.replay_dlq().await.context("cannot replay the dead letters")?;
            writeln!(
                std::io::stdout(),
                "storefront: {moved} messages moved back to the notification queue"
            )?;
            return Ok(());
        }
        let metrics = storefront::notify::serve_metrics(&config.notify.metrics_addr).await?;
        tracing::info!(metrics = %metrics, "storefront notify running");
        notifier.run(shutdown).await;
        anyhow::Ok(())
    });
    drop(runtime);
    telemetry.shutdown();
    outcome
}

async fn run_node(config: Config) -> anyhow::Result<()> {
    let metrics = storefront_http::metrics::install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    // Handlers first: a signal that arrives once the node says it is running must stop it cleanly.
    let shutdown = shutdown_signal()?;
    let node = storefront::node::Node::build(&config, metrics).await?;
    tracing::info!(
        http = %node.local_addr(),
        data_dir = %config.data_dir.display(),
        store = %storefront_storage::redact_url(&config.store),
        "storefront node running"
    );
    node.run(shutdown).await;
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now; the future completes on the first signal.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
