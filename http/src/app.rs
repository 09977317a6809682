//! Building and running a node's HTTP edge: [`App::build`] opens the store, starts the regions,
//! loads the catalog, keys and rates, seeds the demo shop and binds the listener; [`App::run`]
//! serves until its shutdown future fires, then stops accepting, lets in-flight requests finish
//! (within the grace period), ends the stock streams and drains the entities (their journals
//! flushed) before it returns.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use storefront_actors::{Clock, Currency, EntitySettings, SimulatedGateway, StockFeed};
use storefront_cluster::{OwnershipConfig, Regions, RegionsConfig, TlsFiles, TransportConfig};
use storefront_config::Config;
use storefront_storage::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{AccessTokens, RefreshTokens, SigningKey, Users};
use crate::catalog::Catalog;
use crate::fx::FxBook;
use crate::idempotency::IdempotencyKeys;
use crate::ratelimit::{LocalLimiter, RateLimiter, Unlimited};
use crate::{routes, seed};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is unusable.
    #[error("invalid config key `{key}`: {reason}")]
    Config {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// The store, the data dir or the listener failed.
    #[error("{what}: {reason}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        reason: String,
    },
}

/// Connections the kernel keeps waiting for `accept` (it caps this at `net.core.somaxconn`). The
/// default of 128 overflowed when thousands of clients connected at once: the overflowing
/// handshakes were dropped and retried by TCP after seconds (BENCHMARKS.md, 10,000 connections).
const LISTEN_BACKLOG: u32 = 8192;

/// A listener on `addr` with [`LISTEN_BACKLOG`].
fn listen(addr: std::net::SocketAddr) -> Result<TcpListener, String> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| e.to_string())?;
    socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
    socket.bind(addr).map_err(|e| e.to_string())?;
    socket.listen(LISTEN_BACKLOG).map_err(|e| e.to_string())
}

fn io(what: impl Into<String>) -> impl FnOnce(String) -> StartError {
    let what = what.into();
    move |reason| StartError::Io { what, reason }
}

/// Everything a handler may use.
#[derive(Debug)]
pub struct AppState {
    /// This node's id.
    pub node_id: String,
    /// Shards per entity kind.
    pub shard_count: u32,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The entity regions.
    pub regions: Regions,
    /// Products and search.
    pub catalog: Catalog,
    /// Accounts.
    pub users: Users,
    /// Access tokens.
    pub tokens: AccessTokens,
    /// Refresh tokens.
    pub refresh: RefreshTokens,
    /// Idempotency keys.
    pub idempotency: IdempotencyKeys,
    /// Rate limits.
    pub limiter: Arc<dyn RateLimiter>,
    /// FX rates.
    pub fx: FxBook,
    /// Live stock levels.
    pub feed: StockFeed,
    /// The metrics exposition.
    pub metrics: PrometheusHandle,
    /// The shop's base currency.
    pub base: Currency,
    /// How long a checkout waits for its saga before answering 202.
    pub checkout_wait: Duration,
    /// Largest request body.
    pub body_limit: u64,
    /// `true` once the node is stopping: readiness fails and streams end.
    pub stopping: watch::Receiver<bool>,
    /// Whether `/metrics` is served on its own address (and so not on the API's).
    pub metrics_apart: bool,
}

/// A bound, ready-to-serve node.
#[derive(Debug)]
pub struct App {
    state: Arc<AppState>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    stop: watch::Sender<bool>,
    grace: Duration,
    limiter_upkeep: Arc<dyn RateLimiter>,
}

/// The entity settings a configuration gives.
fn entity_settings(config: &Config) -> EntitySettings {
    let e = &config.entities;
    EntitySettings {
        snapshot_every: e.snapshot_every,
        passivate_after: Duration::from_secs(e.passivate_after_secs),
        cart_idle_expiry: Duration::from_secs(e.cart_idle_expiry_secs),
        reservation_ttl: Duration::from_secs(e.reservation_ttl_secs),
        stock_low_threshold: e.stock_low_threshold,
        gateway_max_attempts: config.checkout.gateway_max_attempts,
        gateway_retry_base: Duration::from_millis(config.checkout.gateway_retry_base_ms),
    }
}

impl App {
    /// Opens and starts everything `config` describes and binds the HTTP listener.
    pub async fn build(config: &Config, metrics: PrometheusHandle) -> Result<App, StartError> {
        let base = Currency::parse(&config.shop.base_currency)
            .map_err(|e| StartError::Config { key: "shop.base_currency", reason: e.to_string() })?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| e.to_string())
            .map_err(io(format!("cannot create the data dir {}", config.data_dir.display())))?;
        let store = storefront_storage::open(&config.store, &config.data_dir)
            .await
            .map_err(|e| e.to_string())
            .map_err(io(format!(
                "cannot open the store `{}` under {}",
                storefront_storage::redact_url(&config.store),
                config.data_dir.display()
            )))?;
        let clock = Clock::system();
        let tokens = access_tokens(config)?;
        let feed = StockFeed::default();
        let regions = Regions::start(
            store.clone(),
            Arc::new(SimulatedGateway::new()),
            clock,
            RegionsConfig {
                shard_count: config.entities.shard_count,
                settings: entity_settings(config),
                stock_feed: feed.clone(),
                cluster: Some(OwnershipConfig {
                    node_id: config.cluster.node_id.clone(),
                    cluster_addr: config.cluster.addr.clone(),
                    http_addr: config.http_addr.clone(),
                    shard_count: config.entities.shard_count,
                    heartbeat: Duration::from_millis(config.cluster.heartbeat_ms),
                    member_ttl: Duration::from_millis(config.cluster.member_ttl_ms),
                }),
                transport: config.cluster.addr.as_ref().map(|listen| TransportConfig {
                    listen: listen.clone(),
                    seeds: config.cluster.seeds.clone(),
                    cookie: config
                        .cluster
                        .cookie
                        .as_ref()
                        .map(|c| c.expose().to_owned())
                        .unwrap_or_default(),
                    heartbeat: Duration::from_millis(config.cluster.heartbeat_ms),
                    tls: match (
                        &config.cluster.tls_cert,
                        &config.cluster.tls_key,
                        &config.cluster.tls_ca,
                    ) {
                        (Some(cert), Some(key), Some(ca)) => {
                            Some(TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() })
                        }
                        _ => None,
                    },
                }),
                ..RegionsConfig::default()
            },
        )
        .await
        .map_err(|e| e.to_string())
        .map_err(io("cannot start the entity regions"))?;
        let resumed = regions
            .resume_open_orders()
            .await
            .map_err(|e| e.to_string())
            .map_err(io("cannot resume open checkouts"))?;
        let catalog = Catalog::open(store.clone(), &config.data_dir.join("search-index"), base)
            .await
            .map_err(|e| e.to_string())
            .map_err(io("cannot open the catalog"))?;
        let fx = FxBook::load(store.clone(), base)
            .await
            .map_err(|e| e.to_string())
            .map_err(io("cannot load the FX rates"))?;
        let users = Users::new(store.clone());
        if let (Some(email), Some(password)) = (&config.admin_email, &config.admin_password) {
            users
                .ensure_admin(email, password.expose())
                .await
                .map_err(|e| StartError::Config { key: "admin_email", reason: e.to_string() })?;
        }
        if config.demo_data {
            seed::demo_shop(&store, &catalog, &regions)
                .await
                .map_err(|e| e.to_string())
                .map_err(io("cannot seed the demo catalog"))?;
        }
        let checkout_wait = Duration::from_millis(config.checkout.wait_ms);
        let limiter: Arc<dyn RateLimiter> = if config.rate_limit.enabled {
            Arc::new(LocalLimiter::new(&config.rate_limit))
        } else {
            Arc::new(Unlimited)
        };
        let addr: SocketAddr =
            config.http_addr.parse().map_err(|e: std::net::AddrParseError| StartError::Config {
                key: "http_addr",
                reason: e.to_string(),
            })?;
        let listener = listen(addr).map_err(io(format!("cannot listen on {addr}")))?;
        let metrics_listener = match &config.http.metrics_addr {
            Some(addr) => {
                let parsed = addr.parse().map_err(|e: std::net::AddrParseError| {
                    StartError::Config { key: "http.metrics_addr", reason: e.to_string() }
                })?;
                Some(listen(parsed).map_err(io(format!("cannot listen on {addr} for metrics")))?)
            }
            None => None,
        };
        let (stop, stopping) = watch::channel(false);
        let state = Arc::new(AppState {
            node_id: config.cluster.node_id.clone(),
            shard_count: config.entities.shard_count,
            refresh: RefreshTokens::new(
                store.clone(),
                Duration::from_secs(config.auth.refresh_ttl_secs),
                clock,
            ),
            idempotency: IdempotencyKeys::new(
                store.clone(),
                clock,
                (checkout_wait * 4).max(Duration::from_secs(60)),
            ),
            store,
            regions,
            catalog,
            users,
            tokens,
            limiter: limiter.clone(),
            fx,
            feed,
            metrics,
            base,
            checkout_wait,
            body_limit: config.http.body_limit_bytes,
            stopping,
            metrics_apart: metrics_listener.is_some(),
        });
        tracing::info!(resumed_checkouts = resumed, products = state.catalog.len(), "node ready");
        Ok(App {
            state,
            listener,
            metrics_listener,
            stop,
            grace: Duration::from_secs(config.http.shutdown_grace_secs),
            limiter_upkeep: limiter,
        })
    }

    /// Where the HTTP edge listens.
    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has an address (the OS gave it at bind).
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Where `/metrics` is served, when it has its own address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains (see the module doc).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let App { state, listener, metrics_listener, stop, grace, limiter_upkeep } = self;
        if let Some(listener) = metrics_listener {
            let mut stopping = state.stopping.clone();
            let server = warp::serve(routes::metrics_only(state.clone()))
                .incoming(listener)
                .graceful(async move {
                    let _ = stopping.wait_for(|stopping| *stopping).await;
                });
            tokio::spawn(server.run());
        }
        let keys = state.idempotency.clone();
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            for minute in 0u64.. {
                tick.tick().await;
                limiter_upkeep.forget_quiet();
                if minute % 60 == 0 {
                    match keys.sweep_expired().await {
                        Ok(0) => {}
                        Ok(deleted) => tracing::info!(deleted, "expired idempotency keys deleted"),
                        Err(e) => tracing::warn!(error = %e, "idempotency key sweep failed"),
                    }
                }
            }
        });
        let mut stopping = state.stopping.clone();
        let server =
            warp::serve(routes::routes(state.clone())).incoming(listener).graceful(async move {
                let _ = stopping.wait_for(|stopping| *stopping).await;
            });
        let serving = server.run();
        tokio::pin!(serving);
        tokio::select! {
            () = &mut serving => tracing::error!("the HTTP server stopped by itself"),
            () = shutdown => {
                tracing::info!("shutting down: no new connections; finishing in-flight requests");
                // Stops accepting, fails readiness and ends the stock streams, all at once.
                let _ = stop.send(true);
                if tokio::time::timeout(grace, &mut serving).await.is_err() {
                    tracing::warn!(grace_secs = grace.as_secs(), "requests still running after the grace period");
                }
            }
        }
        upkeep.abort();
        if tokio::time::timeout(grace, state.idempotency.stored_all()).await.is_err() {
            tracing::warn!(
                "some checkout answers were sent but not stored (a retry recomputes them)"
            );
        }
        tracing::info!("draining entities");
        state.regions.shutdown(grace).await;
        tracing::info!("stopped");
    }
}

/// The access-token keys: configured ones, or this node's own key kept in the data dir.
fn access_tokens(config: &Config) -> Result<AccessTokens, StartError> {
    let mut keys = Vec::new();
    for key in &config.auth.signing_keys {
        let (id, secret) = key.expose().split_once(':').ok_or_else(|| StartError::Config {
            key: "auth.signing_keys",
            reason: "expected KID:SECRET".into(),
        })?;
        keys.push(SigningKey { id: id.to_owned(), secret: secret.as_bytes().to_vec() });
    }
    if keys.is_empty() {
        keys.push(local_key(&config.data_dir)?);
    }
    let active = keys[0].id.clone();
    AccessTokens::new(
        keys,
        &active,
        Duration::from_secs(config.auth.access_ttl_secs),
        Duration::from_secs(config.auth.clock_leeway_secs),
    )
    .map_err(|e| StartError::Config { key: "auth.signing_keys", reason: e.to_string() })
}

/// The node's generated key (`auth-signing-key` in the data dir, mode 0600), made on first start.
fn local_key(data_dir: &Path) -> Result<SigningKey, StartError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let path = data_dir.join("auth-signing-key");
    let describe = |what: &str| format!("cannot {what} {}", path.display());
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let secret = decode_hex(text.trim()).ok_or_else(|| StartError::Io {
                what: describe("use"),
                reason: "not a hex key".into(),
            })?;
            Ok(SigningKey { id: "local".into(), secret })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = jwt_simple::algorithms::HS256Key::generate().to_bytes();
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| e.to_string())
                .map_err(io(describe("create")))?;
            file.write_all(hex.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| e.to_string())
                .map_err(io(describe("write")))?;
            Ok(SigningKey { id: "local".into(), secret })
        }
        Err(e) => Err(StartError::Io { what: describe("read"), reason: e.to_string() }),
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}
