//! A node's start-up and shutdown: [`Node::build`] turns a configuration into running parts (the
//! store, the entity regions with their cluster membership, the edge's catalog, accounts, keys
//! and rates, the demo seed, and with a broker the outbox relay and the webhook delivery worker)
//! and binds the listeners; [`Node::run`] serves until the shutdown future fires, then stops the
//! edge (in-flight requests finish within the grace period), the relay, the webhook worker, and
//! the entities (journals flushed).
//!
//! It owns the wiring, not what the parts do: the edge is `storefront-http`'s, the entities
//! `storefront-actors`' and `storefront-cluster`'s, the relay `storefront-events`'.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use storefront_actors::{Clock, Currency, EntitySettings, SimulatedGateway, StockFeed};
use storefront_cluster::{
    Ownership, OwnershipConfig, Regions, RegionsConfig, TlsFiles, TransportConfig,
};
use storefront_config::Config;
use storefront_events::relay::{self, Leadership, Relay, RelayConfig};
use storefront_events::webhooks::Webhooks;
use storefront_events::webhooks::worker::{WebhookWorker, WorkerSettings};
use storefront_http::admission::Admission;
use storefront_http::auth::{
    AccessTokens, AuthError, PasswordResets, RefreshTokens, SigningKey, Users,
};
use storefront_http::catalog::Catalog;
use storefront_http::catalog::search::{self, SearchIndex};
use storefront_http::edge::{EdgeSettings, Streams};
use storefront_http::idempotency::IdempotencyKeys;
use storefront_http::ratelimit::{LocalLimiter, RateLimiter, SharedLimiter, Unlimited};
use storefront_http::redis::Redis;
use storefront_http::serve::Limits;
use storefront_http::{App, AppState, seed};
use storefront_storage::Store;
use storefront_storage::timed::Timed;
use tokio::net::TcpListener;
use tokio::sync::watch;

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

fn io(what: impl Into<String>) -> impl FnOnce(String) -> StartError {
    let what = what.into();
    move |reason| StartError::Io { what, reason }
}

/// Connections the kernel keeps waiting for `accept` (it caps this at `net.core.somaxconn`). The
/// default of 128 overflowed when thousands of clients connected at once: the overflowing
/// handshakes were dropped and retried by TCP after seconds (BENCHMARKS.md, 10,000 connections).
const LISTEN_BACKLOG: u32 = 8192;

/// The shard whose lease makes its holder the cluster's one outbox relay.
const RELAY_SHARD: u32 = 0;

/// A listener on `addr` with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> Result<TcpListener, String> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| e.to_string())?;
    socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
    socket.bind(addr).map_err(|e| e.to_string())?;
    socket.listen(LISTEN_BACKLOG).map_err(|e| e.to_string())
}

/// Parses and binds `addr`, naming `key` when it is not an address.
fn bind(key: &'static str, addr: &str) -> Result<TcpListener, StartError> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|e: std::net::AddrParseError| StartError::Config { key, reason: e.to_string() })?;
    listen(parsed).map_err(io(format!("cannot listen on {addr}")))
}

/// The entity settings a configuration gives.
fn entity_settings(config: &Config) -> EntitySettings {
    let e = &config.entities;
    EntitySettings {
        snapshot_every: e.snapshot_every,
        passivate_after: e.passivate_after(),
        cart_idle_expiry: e.cart_idle_expiry(),
        reservation_ttl: e.reservation_ttl(),
        stock_low_threshold: e.stock_low_threshold,
        gateway_max_attempts: config.checkout.gateway_max_attempts,
        gateway_retry_base: config.checkout.gateway_retry_base(),
        gateway_timeout: config.checkout.gateway_timeout(),
    }
}

/// The regions' settings: sharding, entities, membership, the transport to peers.
fn regions_config(config: &Config, feed: StockFeed) -> RegionsConfig {
    let cluster = &config.cluster;
    RegionsConfig {
        shard_count: config.entities.shard_count,
        settings: entity_settings(config),
        stock_feed: feed,
        cluster: Some(OwnershipConfig {
            node_id: cluster.node_id.clone(),
            cluster_addr: cluster.addr.clone(),
            http_addr: config.http_addr.clone(),
            shard_count: config.entities.shard_count,
            heartbeat: cluster.heartbeat(),
            member_ttl: cluster.member_ttl(),
        }),
        transport: cluster.addr.as_ref().map(|listen| TransportConfig {
            listen: listen.clone(),
            seeds: cluster.seeds.clone(),
            cookie: cluster.cookie.as_ref().map(|c| c.expose().to_owned()).unwrap_or_default(),
            heartbeat: cluster.heartbeat(),
            tls: match (&cluster.tls_cert, &cluster.tls_key, &cluster.tls_ca) {
                (Some(cert), Some(key), Some(ca)) => {
                    Some(TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() })
                }
                _ => None,
            },
        }),
        ..RegionsConfig::default()
    }
}

/// The relay publishes while this node holds [`RELAY_SHARD`]'s lease: one relay in the cluster
/// at a time, moved with the lease when its holder leaves or dies.
#[derive(Debug)]
struct ShardLease(Ownership);

impl Leadership for ShardLease {
    fn may_publish(&self) -> bool {
        self.0.serves(RELAY_SHARD)
    }
}

/// A started node, its listeners bound.
#[derive(Debug)]
pub struct Node {
    app: App,
    regions: Regions,
    relay: Option<Relay>,
    webhook_worker: Option<WebhookWorker>,
    trimming: Option<tokio::task::JoinHandle<()>>,
    catalog_follower: tokio::task::JoinHandle<()>,
    stock_follower: tokio::task::JoinHandle<()>,
    /// Closed at stop, so the data dir's search index is free for the next node on it.
    catalog: Catalog,
    grace: Duration,
}

impl Node {
    /// Opens and starts everything `config` describes and binds the listeners.
    pub async fn build(config: &Config, metrics: PrometheusHandle) -> Result<Node, StartError> {
        Self::build_with(config, metrics, Arc::new(SimulatedGateway::new())).await
    }

    /// [`Node::build`] with the payment gateway given (a test's, to hold or fault its calls).
    pub async fn build_with(
        config: &Config,
        metrics: PrometheusHandle,
        gateway: Arc<SimulatedGateway>,
    ) -> Result<Node, StartError> {
        // Every series whose labels are known in advance is exported from the start, at zero.
        storefront_actors::metrics::zero_initialise();
        storefront_cluster::metrics::zero_initialise();
        storefront_events::metrics::zero_initialise_node();
        storefront_http::metrics::zero_initialise();
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
        // Every call of a handler, an entity's journal and the cluster under one deadline.
        let store: Arc<dyn Store> = Arc::new(Timed::new(store, config.store_timeout()));
        let clock = Clock::system();
        let tokens = access_tokens(config)?;
        let feed = StockFeed::default();
        let regions =
            Regions::start(store.clone(), gateway, clock, regions_config(config, feed.clone()))
                .await
                .map_err(|e| e.to_string())
                .map_err(io("cannot start the entity regions"))?;
        let resumed = regions
            .resume_open_orders()
            .await
            .map_err(|e| e.to_string())
            .map_err(io("cannot resume open checkouts"))?;
        // Before the catalog reads the stored stock states, so no change falls in between.
        let stock_updates = feed.subscribe();
        let index: Arc<dyn SearchIndex> = match config.search.url.as_str() {
            "embedded" => search::embedded::open(&config.data_dir.join("search-index")),
            url => search::quickwit::QuickwitIndex::open(url)
                .await
                .map(|index| Arc::new(index) as Arc<dyn SearchIndex>),
        }
        .map_err(|e| e.to_string())
        .map_err(io("cannot open the search index"))?;
        let catalog = Catalog::open_with(store.clone(), index, base)
            .await
            .map_err(|e| e.to_string())
            .map_err(io("cannot open the catalog"))?;
        let redis = match &config.redis.url {
            Some(url) => {
                let redis = Redis::new(url.expose(), config.redis.timeout())
                    .map_err(|e| StartError::Config { key: "redis.url", reason: e.to_string() })?;
                redis.connect().await;
                Some(Arc::new(redis))
            }
            None => None,
        };
        let catalog = match &redis {
            Some(redis) => catalog.with_search_cache(redis.clone(), config.redis.search_ttl()),
            None => catalog,
        };
        let catalog_follower = tokio::spawn(catalog.clone().follow());
        let stock_follower = tokio::spawn(catalog.clone().follow_stock(stock_updates));
        let users = Users::new(store.clone());
        if let (Some(email), Some(password)) = (&config.admin_email, &config.admin_password) {
            users.ensure_admin(email, password.expose()).await.map_err(|e| StartError::Config {
                key: "admin_email",
                reason: match e {
                    AuthError::EmailTaken => "an account registered through the API has this \
                            address, and such an account is never made an admin: choose another"
                        .into(),
                    other => other.to_string(),
                },
            })?;
        }
        if config.demo_data {
            seed::demo_shop(&store, &catalog, &regions, config.demo_products)
                .await
                .map_err(|e| e.to_string())
                .map_err(io("cannot seed the demo catalog"))?;
        }
        let relay = match (&config.events.amqp_url, regions.ownership()) {
            (Some(url), Some(ownership)) => Some(Relay::start(
                store.clone(),
                Arc::new(ShardLease(ownership.clone())),
                RelayConfig::new(url.expose()),
            )),
            _ => None,
        };
        let trimming = regions.ownership().map(|ownership| {
            tokio::spawn(trim_outbox_hourly(
                store.clone(),
                ownership.clone(),
                config.events.amqp_url.is_some(),
                config.events.outbox_retention(),
            ))
        });
        let webhooks = Webhooks::new(store.clone(), config.events.webhooks_allow_private);
        // Without a broker, subscriptions are kept and nothing is delivered (EVENTS.md).
        let webhook_worker = match &config.events.amqp_url {
            Some(url) => Some(
                WebhookWorker::start(
                    webhooks.clone(),
                    WorkerSettings {
                        amqp_url: url.expose().to_owned(),
                        max_attempts: config.events.webhook_max_attempts,
                        retry_base: config.events.webhook_retry_base(),
                    },
                )
                .map_err(|e| StartError::Config { key: "events", reason: e.to_string() })?,
            ),
            None => None,
        };
        let checkout_wait = config.checkout.wait();
        let limiter: Arc<dyn RateLimiter> = match (config.rate_limit.enabled, &redis) {
            (false, _) => Arc::new(Unlimited),
            (true, None) => Arc::new(LocalLimiter::new(&config.rate_limit)),
            (true, Some(redis)) => {
                let limiter = SharedLimiter::new(&config.rate_limit, redis.clone());
                limiter.load().await;
                Arc::new(limiter)
            }
        };
        let listener = bind("http_addr", &config.http_addr)?;
        let metrics_listener = match &config.http.metrics_addr {
            Some(addr) => Some(bind("http.metrics_addr", addr)?),
            None => None,
        };
        let (stop, stopping) = watch::channel(false);
        let state = AppState {
            node_id: config.cluster.node_id.clone(),
            shard_count: config.entities.shard_count,
            refresh: RefreshTokens::new(store.clone(), config.auth.refresh_ttl(), clock),
            resets: PasswordResets::new(store.clone(), clock),
            idempotency: IdempotencyKeys::new(
                store.clone(),
                clock,
                (checkout_wait * 4).max(Duration::from_secs(60)),
            ),
            store,
            regions: regions.clone(),
            catalog,
            users,
            tokens,
            limiter,
            webhooks,
            feed,
            metrics,
            base,
            checkout_wait,
            admission: Admission::new(checkout_wait, config.checkout.min_admitted_per_sku),
            body_limit: config.http.body_limit_bytes,
            stopping,
            metrics_apart: metrics_listener.is_some(),
            edge: EdgeSettings {
                // Checked by `Config::validate`: every entry is a CIDR block.
                trusted_proxies: (config.http.trusted_proxies.iter())
                    .filter_map(|net| net.parse().ok())
                    .collect(),
                max_streams_per_ip: config.http.max_streams_per_ip as usize,
                max_streams: config.http.max_streams as usize,
            },
            streams: Streams::default(),
        };
        tracing::info!(resumed_checkouts = resumed, products = state.catalog.len(), "node ready");
        let grace = config.http.shutdown_grace();
        let limits = Limits {
            header_timeout: config.http.header_timeout(),
            request_timeout: config.http.request_timeout(),
        };
        let catalog = state.catalog.clone();
        let app = App::new(state, listener, metrics_listener, stop, (grace, limits));
        Ok(Node {
            app,
            regions,
            relay,
            webhook_worker,
            trimming,
            catalog_follower,
            stock_follower,
            catalog,
            grace,
        })
    }

    /// Where the HTTP edge listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.app.local_addr()
    }

    /// Where `/metrics` is served, when it has its own address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.app.metrics_addr()
    }

    /// Serves until `shutdown` completes, then stops the edge, the relay and the entities.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Node {
            app,
            regions,
            relay,
            webhook_worker,
            trimming,
            catalog_follower,
            stock_follower,
            catalog,
            grace,
        } = self;
        app.run(shutdown).await;
        catalog_follower.abort();
        stock_follower.abort();
        let _ = catalog_follower.await;
        let _ = stock_follower.await;
        // Whatever task still holds the catalog, its index lets go of the data dir now: a node
        // started again on it (a restart in process) opens the index at once.
        catalog.close();
        if let Some(trimming) = trimming {
            trimming.abort();
        }
        if let Some(relay) = relay {
            relay.stop().await;
        }
        if let Some(worker) = webhook_worker {
            worker.stop().await;
        }
        tracing::info!("draining entities");
        regions.shutdown(grace).await;
        tracing::info!("stopped");
    }
}

/// Once an hour, the holder of the relay's shard deletes the outbox records past their
/// retention (EVENTS.md: published ones, or all where no broker was ever configured).
async fn trim_outbox_hourly(
    store: Arc<dyn Store>,
    ownership: Ownership,
    broker: bool,
    retention: Duration,
) {
    let mut hours = tokio::time::interval(Duration::from_secs(3600));
    hours.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        hours.tick().await;
        if !ownership.serves(RELAY_SHARD) {
            continue;
        }
        let now = std::time::SystemTime::now();
        match relay::trim_outbox(store.as_ref(), relay::OUTBOX_RELAY, broker, retention, now).await
        {
            Ok(Some(up_to)) => tracing::info!(up_to, "outbox trimmed past its retention"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot trim the outbox"),
        }
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
    AccessTokens::new(keys, &active, config.auth.access_ttl(), config.auth.clock_leeway())
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
            let secret = hex::decode(text.trim()).map_err(|_| StartError::Io {
                what: describe("use"),
                reason: "not a hex key".into(),
            })?;
            Ok(SigningKey { id: "local".into(), secret })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = jwt_simple::algorithms::HS256Key::generate().to_bytes();
            let hex = hex::encode(&secret);
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
