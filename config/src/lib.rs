//! Typed configuration of a Storefront node.
//!
//! Layers, each overriding the one before: built-in defaults, a TOML file, `STOREFRONT_*`
//! environment variables (`STOREFRONT_KEY` for a top-level key, `STOREFRONT_SECTION__KEY` inside a
//! section), then command-line flags. Unknown keys are rejected wherever they come from, and
//! [`Config::validate`] names the key it rejects. The loader takes the environment as an argument:
//! nothing here reads process state.
//!
//! This crate owns the shape and defaults of the configuration, not what the values do.

mod secret;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use secret::Secret;

/// Prefix of every environment variable the loader reads.
pub const ENV_PREFIX: &str = "STOREFRONT_";
/// The environment variable naming the config file; it is not a config key itself.
pub const CONFIG_FILE_ENV: &str = "STOREFRONT_CONFIG";

/// Everything a node is configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the HTTP edge listens.
    pub http_addr: String,
    /// Where the embedded store and the search index live.
    pub data_dir: PathBuf,
    /// `embedded`, `postgres://user@host:port/db` or `scylla://host:port/keyspace`.
    pub store: String,
    /// Every call of the store fails after this long without an answer (its outcome unknown).
    pub store_timeout_ms: u64,
    /// Seed the demo catalog on first start.
    pub demo_data: bool,
    /// Products in the demo catalog (a benchmark's large catalog, say).
    pub demo_products: usize,
    /// The first admin account, created (or kept) at start.
    pub admin_email: Option<String>,
    /// Its password; there is no default.
    pub admin_password: Option<Secret>,
    /// Shop-wide settings.
    pub shop: ShopConfig,
    /// Entity actors: sharding, snapshots, idle times.
    pub entities: EntitiesConfig,
    /// The checkout saga.
    pub checkout: CheckoutConfig,
    /// Cluster membership.
    pub cluster: ClusterConfig,
    /// Request rate limits at the HTTP edge.
    pub rate_limit: RateLimitConfig,
    /// Logging.
    pub log: LogConfig,
    /// Access and refresh tokens.
    pub auth: AuthConfig,
    /// The HTTP edge.
    pub http: HttpConfig,
    /// Events out: the broker, the outbox, webhooks.
    pub events: EventsConfig,
    /// `storefront notify`: the notification service.
    pub notify: NotifyConfig,
    /// Redis: rate limits shared by every node, and a search-result cache.
    pub redis: RedisConfig,
    /// The search index.
    pub search: SearchConfig,
}

/// Where the catalog's search index lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// `embedded` (tantivy under the data dir, one per node) or `quickwit://host:7280/INDEX`
    /// (one index shared by every node).
    pub url: String,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self { url: "embedded".into() }
    }
}

/// Redis, when set: every node's rate limits count in one place, and search results are cached.
/// A Redis that is down or slow never fails a request: past `timeout_ms` the node uses its own
/// limits and skips the cache, and tries Redis again a second later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:6379` (or `rediss://` for TLS); without it nothing uses Redis.
    pub url: Option<Secret>,
    /// The longest one Redis call may add to a request.
    pub timeout_ms: u64,
    /// How long a cached search stays (catalog changes make new keys at once; stock states
    /// reach the cache within this).
    pub search_ttl_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: None, timeout_ms: 5, search_ttl_ms: 1000 }
    }
}

impl RedisConfig {
    /// [`RedisConfig::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// [`RedisConfig::search_ttl_ms`] as a duration.
    pub fn search_ttl(&self) -> Duration {
        Duration::from_millis(self.search_ttl_ms)
    }
}

/// Events out (EVENTS.md): the broker the relay publishes to and webhooks are delivered from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// The broker (`amqp://user:password@host:5672/%2f`); without it nothing is published.
    pub amqp_url: Option<Secret>,
    /// How long published outbox records are kept.
    pub outbox_retention_hours: u64,
    /// Webhook URLs may name loopback and private addresses (never link-local ones).
    pub webhooks_allow_private: bool,
    /// Tries of one webhook delivery before it is `failed`.
    pub webhook_max_attempts: u32,
    /// The wait after a webhook's first failed try; doubled after each further one, at most an
    /// hour. Every node must use the same.
    pub webhook_retry_base_ms: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            amqp_url: None,
            outbox_retention_hours: 168,
            webhooks_allow_private: false,
            webhook_max_attempts: 12,
            webhook_retry_base_ms: 1_000,
        }
    }
}

impl EventsConfig {
    /// How long published outbox records are kept.
    pub fn outbox_retention(&self) -> Duration {
        Duration::from_secs(self.outbox_retention_hours * 3600)
    }

    /// The wait after a webhook's first failed try.
    pub fn webhook_retry_base(&self) -> Duration {
        Duration::from_millis(self.webhook_retry_base_ms)
    }
}

/// `storefront notify` (EVENTS.md "Notifications"); its broker is `events.amqp_url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// `smtp://host:port` or `smtps://user:password@host:465`; without it mail is written as
    /// `.eml` files under `<data_dir>/mail/`.
    pub smtp_url: Option<Secret>,
    /// The mails' sender.
    pub mail_from: String,
    /// Base URL of a Twilio-compatible Messages API; without it no SMS is sent.
    pub sms_url: Option<String>,
    /// The SMS account (the basic-auth user).
    pub sms_account: Option<String>,
    /// The SMS token (the basic-auth password).
    pub sms_token: Option<Secret>,
    /// The SMS sender number.
    pub sms_from: Option<String>,
    /// Tries of one send before the message goes to the dead-letter queue.
    pub max_attempts: u32,
    /// Messages a notifier holds unacknowledged at once.
    pub prefetch: u16,
    /// A folder of templates replacing the built-in ones, file by file.
    pub templates_dir: Option<PathBuf>,
    /// Where `/metrics` is served (HOST:PORT).
    pub metrics_addr: String,
    /// The longest one send (SMTP session, SMS request) may take.
    pub send_timeout_secs: u64,
    /// The wait after a first failed send; doubled after each further one (at most a minute).
    pub retry_base_ms: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            mail_from: "Storefront <shop@localhost>".into(),
            sms_url: None,
            sms_account: None,
            sms_token: None,
            sms_from: None,
            max_attempts: 5,
            prefetch: 32,
            templates_dir: None,
            metrics_addr: "127.0.0.1:9185".into(),
            send_timeout_secs: 10,
            retry_base_ms: 1_000,
        }
    }
}

impl NotifyConfig {
    /// The longest one send may take.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.send_timeout_secs)
    }

    /// The wait after a first failed send.
    pub fn retry_base(&self) -> Duration {
        Duration::from_millis(self.retry_base_ms)
    }
}

impl AuthConfig {
    /// Access token lifetime.
    pub fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.access_ttl_secs)
    }

    /// Accepted clock skew.
    pub fn clock_leeway(&self) -> Duration {
        Duration::from_secs(self.clock_leeway_secs)
    }

    /// Refresh token lifetime.
    pub fn refresh_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_ttl_secs)
    }
}

impl HttpConfig {
    /// How long a stopping node waits for in-flight requests.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// How long a connection may take to send a request head.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    /// How long a request may take to be answered.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

impl EntitiesConfig {
    /// Idle time before an entity is stopped.
    pub fn passivate_after(&self) -> Duration {
        Duration::from_secs(self.passivate_after_secs)
    }

    /// Idle time before a cart is emptied.
    pub fn cart_idle_expiry(&self) -> Duration {
        Duration::from_secs(self.cart_idle_expiry_secs)
    }

    /// Lifetime of an uncommitted reservation.
    pub fn reservation_ttl(&self) -> Duration {
        Duration::from_secs(self.reservation_ttl_secs)
    }
}

impl CheckoutConfig {
    /// How long a checkout waits for its saga.
    pub fn wait(&self) -> Duration {
        Duration::from_millis(self.wait_ms)
    }

    /// Back-off before the second gateway attempt.
    pub fn gateway_retry_base(&self) -> Duration {
        Duration::from_millis(self.gateway_retry_base_ms)
    }

    /// How long one gateway call may take.
    pub fn gateway_timeout(&self) -> Duration {
        Duration::from_millis(self.gateway_timeout_ms)
    }
}

impl ClusterConfig {
    /// How often a node beats.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// How long a silent member stays up.
    pub fn member_ttl(&self) -> Duration {
        Duration::from_millis(self.member_ttl_ms)
    }
}

/// Tokens. `signing_keys` are `KID:SECRET` pairs (secrets of at least 32 bytes); the first signs
/// new access tokens and every one verifies, so a key is rotated by putting a new one first and
/// dropping the old one once `access_ttl_secs` have passed. With none configured, a node
/// generates one key and keeps it in its data dir.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `KID:SECRET` signing keys, the active one first.
    pub signing_keys: Vec<Secret>,
    /// Access token lifetime.
    pub access_ttl_secs: u64,
    /// How far past its expiry a token is still accepted (clock skew between nodes).
    pub clock_leeway_secs: u64,
    /// Refresh token lifetime.
    pub refresh_ttl_secs: u64,
}

/// The HTTP edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body accepted (413 above).
    pub body_limit_bytes: u64,
    /// How long a stopping node waits for in-flight requests.
    pub shutdown_grace_secs: u64,
    /// Where `/metrics` is served instead of on `http_addr` (HOST:PORT), if set.
    pub metrics_addr: Option<String>,
    /// A connection that has not sent a whole request head within this is closed.
    pub header_timeout_secs: u64,
    /// A request not answered within this is answered 503 `/problems/timeout` (a stream's
    /// body is not counted: only until its head is sent).
    pub request_timeout_secs: u64,
    /// Open live streams one client address may hold.
    pub max_streams_per_ip: u32,
    /// Open live streams the node holds in all.
    pub max_streams: u32,
    /// Proxies (CIDR blocks) whose `X-Forwarded-For` is believed: from one of them, the client
    /// is the right-most address of that header not in the list.
    pub trusted_proxies: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            signing_keys: Vec::new(),
            access_ttl_secs: 15 * 60,
            clock_leeway_secs: 30,
            refresh_ttl_secs: 30 * 24 * 3600,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 * 1024,
            shutdown_grace_secs: 10,
            metrics_addr: None,
            header_timeout_secs: 10,
            request_timeout_secs: 30,
            max_streams_per_ip: 20,
            max_streams: 10_000,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Shop-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShopConfig {
    /// ISO 4217 code product prices are stored in.
    pub base_currency: String,
}

/// Entity actors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntitiesConfig {
    /// Shards per entity kind; fixed for the life of a cluster.
    pub shard_count: u32,
    /// An entity saves a snapshot after this many events since its last one.
    pub snapshot_every: u64,
    /// An entity that received no command for this long is stopped (it restarts on demand).
    pub passivate_after_secs: u64,
    /// A cart untouched for this long is emptied.
    pub cart_idle_expiry_secs: u64,
    /// A stock reservation neither committed nor released by then returns its stock.
    pub reservation_ttl_secs: u64,
    /// A `stock.low` event is emitted when a SKU's available stock falls to this or below.
    pub stock_low_threshold: u64,
}

/// The checkout saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckoutConfig {
    /// How long `POST /v1/checkout` waits for the saga before answering 202.
    pub wait_ms: u64,
    /// Attempts per payment operation when the gateway errors (not when it declines).
    pub gateway_max_attempts: u32,
    /// Back-off before the second attempt; doubled for each further one.
    pub gateway_retry_base_ms: u64,
    /// How long one gateway call may take before its outcome counts as unknown (and it is
    /// retried by its idempotency key).
    pub gateway_timeout_ms: u64,
    /// Checkouts of one SKU a node takes on at once however slowly the SKU is served (more while
    /// it ends them fast enough to serve them within `wait_ms`; past that: 429
    /// `/problems/sku-busy`).
    pub min_admitted_per_sku: u64,
}

/// Cluster membership.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// Where this node listens for peers.
    pub addr: Option<String>,
    /// Peers to join; empty for a cluster of one.
    pub seeds: Vec<String>,
    /// Shared secret that authenticates peers.
    pub cookie: Option<Secret>,
    /// How often a node writes its heartbeat and re-reads membership and shard leases.
    pub heartbeat_ms: u64,
    /// A node whose heartbeat has not changed for this long is down and loses its shards.
    pub member_ttl_ms: u64,
    /// TLS on the sessions between nodes (PEM files; all three or none): this node's certificate
    /// chain, its key, and the CA that signs every node's certificate.
    pub tls_cert: Option<PathBuf>,
    /// See `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// See `tls_cert`.
    pub tls_ca: Option<PathBuf>,
}

/// Request rate limits at the HTTP edge (GCRA).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Off only for load tests on a trusted network.
    pub enabled: bool,
    /// Sustained requests per second per client IP.
    pub per_ip_per_second: u32,
    /// Sustained requests per second per signed-in user.
    pub per_user_per_second: u32,
    /// Login and register attempts per minute per client IP.
    pub auth_per_minute: u32,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter, for example `info,storefront_actors=debug`.
    pub filter: String,
    /// One JSON object per line instead of text.
    pub json: bool,
}

impl Config {
    /// How long one store call may take.
    pub fn store_timeout(&self) -> Duration {
        Duration::from_millis(self.store_timeout_ms)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("data"),
            store: "embedded".into(),
            store_timeout_ms: 10_000,
            demo_data: true,
            demo_products: 1200,
            admin_email: None,
            admin_password: None,
            shop: ShopConfig::default(),
            entities: EntitiesConfig::default(),
            checkout: CheckoutConfig::default(),
            cluster: ClusterConfig::default(),
            rate_limit: RateLimitConfig::default(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            http: HttpConfig::default(),
            events: EventsConfig::default(),
            redis: RedisConfig::default(),
            search: SearchConfig::default(),
            notify: NotifyConfig::default(),
        }
    }
}

impl Default for ShopConfig {
    fn default() -> Self {
        Self { base_currency: "USD".into() }
    }
}

impl Default for EntitiesConfig {
    fn default() -> Self {
        Self {
            shard_count: 256,
            snapshot_every: 1000,
            passivate_after_secs: 120,
            cart_idle_expiry_secs: 7 * 24 * 3600,
            reservation_ttl_secs: 600,
            stock_low_threshold: 5,
        }
    }
}

impl Default for CheckoutConfig {
    fn default() -> Self {
        Self {
            wait_ms: 5_000,
            gateway_max_attempts: 3,
            gateway_retry_base_ms: 100,
            gateway_timeout_ms: 10_000,
            min_admitted_per_sku: 1_000,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: "node-1".into(),
            addr: None,
            seeds: Vec::new(),
            cookie: None,
            heartbeat_ms: 1_000,
            member_ttl_ms: 6_000,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { enabled: true, per_ip_per_second: 200, per_user_per_second: 50, auth_per_minute: 20 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { filter: "info,fjall=warn,lsm_tree=warn".into(), json: false }
    }
}

/// Why a configuration was refused. Every variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid toml: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A key is unknown or its value is of the wrong type or out of range.
    #[error("invalid config key `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the key, for example `entities.shard_count`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), reason: reason.into() }
}

/// One override from the command line: a dotted key and its value.
#[derive(Debug, Clone)]
pub struct Override {
    /// Dotted key, for example `cluster.node_id`.
    pub key: String,
    /// The value.
    pub value: toml::Value,
}

impl Override {
    /// An override of `key` with `value`.
    pub fn new(key: &str, value: impl Into<toml::Value>) -> Self {
        Self { key: key.to_owned(), value: value.into() }
    }
}

impl Config {
    /// Layers defaults, the file (if any), the `STOREFRONT_*` variables of `env` and `overrides`,
    /// then validates the result.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: Vec<Override>,
    ) -> Result<Self, ConfigError> {
        let defaults = toml::Value::try_from(Config::default())
            .map_err(|e| invalid("", format!("defaults do not serialize: {e}")))?;
        let mut merged = defaults.clone();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Read { path: path.to_owned(), reason: e.to_string() })?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                reason: e.message().to_owned(),
            })?;
            merge(&mut merged, toml::Value::Table(table));
        }
        let mut env: Vec<_> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name != CONFIG_FILE_ENV)
            .collect();
        env.sort();
        for (name, raw) in env {
            let key = name[ENV_PREFIX.len()..].to_ascii_lowercase().replace("__", ".");
            let value = env_value(&defaults, &key, &raw)?;
            set(&mut merged, &key, value)?;
        }
        for Override { key, value } in overrides {
            set(&mut merged, &key, value)?;
        }
        let config: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
            let key = e.path().to_string();
            // Parser messages may span lines; a config error is reported on one.
            let reason =
                e.into_inner().to_string().split_whitespace().collect::<Vec<_>>().join(" ");
            invalid(if key == "." { "" } else { &key }, reason)
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value that a type alone does not; the error names the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.http_addr.parse::<SocketAddr>().map_err(|e| {
            invalid("http_addr", format!("`{}` is not HOST:PORT: {e}", self.http_addr))
        })?;
        let store_ok = self.store == "embedded"
            || self.store.starts_with("postgres://")
            || self.store.starts_with("postgresql://")
            || self.store.starts_with("scylla://");
        if !store_ok {
            return Err(invalid(
                "store",
                "expected `embedded`, `postgres://...` or `scylla://...`",
            ));
        }
        let code = &self.shop.base_currency;
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid("shop.base_currency", format!("`{code}` is not an ISO 4217 code")));
        }
        let e = &self.entities;
        if !(1..=65_536).contains(&e.shard_count) {
            return Err(invalid("entities.shard_count", "must be between 1 and 65536"));
        }
        for (key, value) in [
            ("entities.snapshot_every", e.snapshot_every),
            ("entities.passivate_after_secs", e.passivate_after_secs),
            ("entities.cart_idle_expiry_secs", e.cart_idle_expiry_secs),
            ("entities.reservation_ttl_secs", e.reservation_ttl_secs),
            ("checkout.gateway_max_attempts", u64::from(self.checkout.gateway_max_attempts)),
            ("checkout.gateway_timeout_ms", self.checkout.gateway_timeout_ms),
            ("checkout.min_admitted_per_sku", self.checkout.min_admitted_per_sku),
            ("store_timeout_ms", self.store_timeout_ms),
            ("redis.timeout_ms", self.redis.timeout_ms),
            ("redis.search_ttl_ms", self.redis.search_ttl_ms),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.search.url != "embedded" && !self.search.url.starts_with("quickwit://") {
            return Err(invalid("search.url", "`embedded` or `quickwit://host:port/INDEX`"));
        }
        if self.demo_products > 1_000_000 {
            return Err(invalid("demo_products", "must be at most 1000000"));
        }
        if self.checkout.gateway_max_attempts > 10 {
            return Err(invalid("checkout.gateway_max_attempts", "must be at most 10"));
        }
        if self.cluster.node_id.is_empty() {
            return Err(invalid("cluster.node_id", "must not be empty"));
        }
        if !(50..=60_000).contains(&self.cluster.heartbeat_ms) {
            return Err(invalid("cluster.heartbeat_ms", "must be 50 to 60000"));
        }
        if self.cluster.member_ttl_ms < 3 * self.cluster.heartbeat_ms {
            return Err(invalid(
                "cluster.member_ttl_ms",
                "must be at least three heartbeats (cluster.heartbeat_ms)",
            ));
        }
        let tls = [&self.cluster.tls_cert, &self.cluster.tls_key, &self.cluster.tls_ca];
        if tls.iter().any(|f| f.is_some()) && !tls.iter().all(|f| f.is_some()) {
            return Err(invalid("cluster.tls_cert", "tls_cert, tls_key and tls_ca go together"));
        }
        if let Some(addr) = &self.cluster.addr {
            if self.store == "embedded" {
                return Err(invalid(
                    "cluster.addr",
                    "a cluster of more than one node needs a shared store (postgres or scylla), not `embedded`",
                ));
            }
            let port = addr.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
            if !matches!(port, Some(Ok(_))) {
                return Err(invalid("cluster.addr", "must be HOST:PORT"));
            }
            match &self.cluster.cookie {
                None => {
                    return Err(invalid(
                        "cluster.cookie",
                        "required with cluster.addr (set STOREFRONT_CLUSTER__COOKIE): peers authenticate with it",
                    ));
                }
                Some(cookie) if cookie.expose().len() < 16 => {
                    return Err(invalid("cluster.cookie", "must be at least 16 characters"));
                }
                Some(_) => {}
            }
        }
        if !self.cluster.seeds.is_empty() {
            if self.store == "embedded" {
                return Err(invalid(
                    "cluster.seeds",
                    "a cluster of more than one node needs a shared store (postgres or scylla), not `embedded`",
                ));
            }
            if self.cluster.addr.is_none() {
                return Err(invalid("cluster.addr", "required when seeds are given"));
            }
            if self.auth.signing_keys.is_empty() {
                return Err(invalid(
                    "auth.signing_keys",
                    "required in a cluster: every node must verify the tokens the others sign",
                ));
            }
        }
        match (&self.admin_email, &self.admin_password) {
            (Some(_), None) => return Err(invalid("admin_password", "required with admin_email")),
            (None, Some(_)) => return Err(invalid("admin_email", "required with admin_password")),
            (Some(email), Some(_)) if !email.contains('@') => {
                return Err(invalid("admin_email", "not an email address"));
            }
            _ => {}
        }
        if self.rate_limit.enabled
            && [
                self.rate_limit.per_ip_per_second,
                self.rate_limit.per_user_per_second,
                self.rate_limit.auth_per_minute,
            ]
            .contains(&0)
        {
            return Err(invalid("rate_limit", "limits must be at least 1 when enabled"));
        }
        for (i, key) in self.auth.signing_keys.iter().enumerate() {
            let well_formed = key
                .expose()
                .split_once(':')
                .is_some_and(|(kid, secret)| !kid.is_empty() && secret.len() >= 32);
            if !well_formed {
                return Err(invalid(
                    &format!("auth.signing_keys[{i}]"),
                    "expected KID:SECRET with a secret of at least 32 bytes",
                ));
            }
        }
        if !(60..=24 * 3600).contains(&self.auth.access_ttl_secs) {
            return Err(invalid("auth.access_ttl_secs", "must be between 60 and 86400"));
        }
        if self.auth.clock_leeway_secs > 300 {
            return Err(invalid("auth.clock_leeway_secs", "must be at most 300"));
        }
        if self.auth.refresh_ttl_secs < self.auth.access_ttl_secs {
            return Err(invalid("auth.refresh_ttl_secs", "must be at least auth.access_ttl_secs"));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.http.body_limit_bytes) {
            return Err(invalid("http.body_limit_bytes", "must be between 1024 and 16777216"));
        }
        for (key, value) in [
            ("http.header_timeout_secs", self.http.header_timeout_secs),
            ("http.request_timeout_secs", self.http.request_timeout_secs),
        ] {
            if !(1..=3600).contains(&value) {
                return Err(invalid(key, "must be 1 to 3600"));
            }
        }
        for (key, value) in [
            ("http.max_streams_per_ip", self.http.max_streams_per_ip),
            ("http.max_streams", self.http.max_streams),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if let Some(bad) =
            self.http.trusted_proxies.iter().find(|p| p.parse::<ipnet::IpNet>().is_err())
        {
            return Err(invalid("http.trusted_proxies", format!("`{bad}` is not a CIDR block")));
        }
        if let Some(url) = &self.events.amqp_url {
            let url = url.expose();
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                return Err(invalid("events.amqp_url", "expected `amqp://...` or `amqps://...`"));
            }
        }
        if self.events.outbox_retention_hours == 0 {
            return Err(invalid("events.outbox_retention_hours", "must be at least 1"));
        }
        if !(10..=60_000).contains(&self.events.webhook_retry_base_ms) {
            return Err(invalid("events.webhook_retry_base_ms", "must be between 10 and 60000"));
        }
        if !(1..=50).contains(&self.events.webhook_max_attempts) {
            return Err(invalid("events.webhook_max_attempts", "must be between 1 and 50"));
        }
        self.notify.validate()?;
        if let Some(addr) = &self.http.metrics_addr {
            addr.parse::<SocketAddr>().map_err(|e| {
                invalid("http.metrics_addr", format!("`{addr}` is not HOST:PORT: {e}"))
            })?;
        }
        Ok(())
    }
}

impl NotifyConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.smtp_url {
            let url = url.expose();
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                return Err(invalid("notify.smtp_url", "expected `smtp://...` or `smtps://...`"));
            }
        }
        if !self.mail_from.contains('@') {
            return Err(invalid("notify.mail_from", "not an email address"));
        }
        if let Some(url) = &self.sms_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid("notify.sms_url", "expected an http(s) URL"));
            }
            for (key, set) in [
                ("notify.sms_account", self.sms_account.is_some()),
                ("notify.sms_token", self.sms_token.is_some()),
                ("notify.sms_from", self.sms_from.is_some()),
            ] {
                if !set {
                    return Err(invalid(key, "required with notify.sms_url"));
                }
            }
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(invalid("notify.max_attempts", "must be between 1 and 100"));
        }
        if self.prefetch == 0 {
            return Err(invalid("notify.prefetch", "must be at least 1"));
        }
        if !(1..=60_000).contains(&self.retry_base_ms) {
            return Err(invalid("notify.retry_base_ms", "must be between 1 and 60000"));
        }
        if !(1..=300).contains(&self.send_timeout_secs) {
            return Err(invalid("notify.send_timeout_secs", "must be between 1 and 300"));
        }
        self.metrics_addr.parse::<SocketAddr>().map_err(|e| {
            invalid("notify.metrics_addr", format!("`{}` is not HOST:PORT: {e}", self.metrics_addr))
        })?;
        Ok(())
    }
}

/// Deep-merges `overlay` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(base), toml::Value::Table(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// Sets a dotted `key` in `root`, creating sections as needed.
fn set(root: &mut toml::Value, key: &str, value: toml::Value) -> Result<(), ConfigError> {
    let mut node = root;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let table = node.as_table_mut().ok_or_else(|| invalid(key, "is not inside a section"))?;
        if parts.peek().is_none() {
            table.insert(part.to_owned(), value);
            return Ok(());
        }
        node = table.entry(part).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    Err(invalid(key, "empty key"))
}

/// Reads an environment value as the type the key has in the defaults (text when unknown).
fn env_value(defaults: &toml::Value, key: &str, raw: &str) -> Result<toml::Value, ConfigError> {
    let default = key.split('.').try_fold(defaults, |node, part| node.get(part));
    let wrong = |what: &str| invalid(key, format!("`{raw}` is not {what}"));
    Ok(match default {
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(match raw {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(wrong("true or false")),
        }),
        Some(toml::Value::Integer(_)) => {
            toml::Value::Integer(raw.parse().map_err(|_| wrong("a whole number"))?)
        }
        Some(toml::Value::Array(_)) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_owned()),
    })
}

#[cfg(test)]
mod tests;
