//! Redis, when configured (`[redis] url`): the connection every shared limit and cache uses,
//! bounded so that Redis being down or slow never fails or slows a request beyond
//! `[redis] timeout_ms`.
//!
//! One auto-reconnecting connection (`redis`'s `ConnectionManager`, created lazily so a node
//! starts whether or not Redis is up). Every call runs under the timeout; a call that fails or
//! times out opens a breaker for [`REST`], during which callers skip Redis entirely (their own
//! limits, no cache) instead of each waiting out the timeout. The first call after the rest tries
//! Redis again, so everything returns to Redis once it is back.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long callers skip Redis after it failed them.
pub const REST: Duration = Duration::from_secs(1);

/// Why Redis cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL does not parse.
    #[error("redis url: {0}")]
    Url(String),
}

/// The node's Redis.
pub struct Redis {
    connection: ConnectionManager,
    timeout: Duration,
    started: Instant,
    /// Until when (ms after `started`) callers skip Redis.
    resting_until_ms: AtomicU64,
    /// Whether the last call failed (to log a change once, not every call).
    failing: AtomicBool,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Redis {
    /// A connection to `url`, made on first use (Redis need not be up yet).
    pub fn new(url: &str, timeout: Duration) -> Result<Self, RedisError> {
        let client = ::redis::Client::open(url).map_err(|e| RedisError::Url(e.to_string()))?;
        // Reconnects run in the background; no caller waits longer than `timeout` for one.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(REST);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| RedisError::Url(e.to_string()))?;
        Ok(Self {
            connection,
            timeout,
            started: Instant::now(),
            resting_until_ms: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        })
    }

    /// Connects now, allowing up to a second (the first connection's handshake), so the first
    /// requests do not spend their timeout on it; a Redis that is down is only logged.
    pub async fn connect(&self) {
        let ping = async {
            let mut connection = self.connection.clone();
            ::redis::cmd("PING").query_async::<String>(&mut connection).await
        };
        match tokio::time::timeout(Duration::from_secs(1), ping).await {
            Ok(Ok(_)) => tracing::info!("redis connected"),
            Ok(Err(e)) => tracing::warn!(error = %e, "redis is not answering yet"),
            Err(_) => tracing::warn!("redis did not answer within a second"),
        }
    }

    /// A clone of the connection, for work outside [`Redis::run`]'s timeout (start-up only).
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Runs `call` on the connection within the timeout: its value, or `None` (logged) when
    /// Redis failed, was too slow or is resting after a failure.
    pub async fn run<T, F, Fut>(&self, what: &'static str, call: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = ::redis::RedisResult<T>>,
    {
        if self.now_ms() < self.resting_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let outcome = tokio::time::timeout(self.timeout, call(self.connection.clone())).await;
        let error = match outcome {
            Ok(Ok(value)) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis answers again");
                }
                return Some(value);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer in {:?}", self.timeout),
        };
        self.resting_until_ms.store(self.now_ms() + REST.as_millis() as u64, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, what, "redis failed; using local limits and no cache until it answers");
        }
        None
    }
}
