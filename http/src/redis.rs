//! Redis, when configured (`[redis] url`): the connection every shared limit and cache uses,
//! bounded so that Redis being down or slow never fails or slows a request beyond
//! `[redis] timeout_ms`.
//!
//! One auto-reconnecting connection (`redis`'s `ConnectionManager`, created lazily so a node
//! starts whether or not Redis is up). A request served under [`one_budget`] waits on Redis for
//! at most the timeout in all, however many calls it makes (rate limits, then a cache): its first
//! call sets the deadline, later ones get what is left, and none is made once it has passed. A
//! call that fails, or takes the whole timeout, opens a breaker for [`REST`], during which
//! callers skip Redis entirely (their own limits, no cache) instead of each waiting out the
//! timeout. The first call after the rest tries Redis again, so everything returns to Redis once
//! it is back.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long callers skip Redis after it failed them.
pub const REST: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// When the Redis calls of the request being served must have answered by (set by its first).
    static REQUEST_DEADLINE: Cell<Option<Instant>>;
}

/// Runs `request` with one Redis budget: all its calls together wait at most the timeout.
pub async fn one_budget<F: Future>(request: F) -> F::Output {
    REQUEST_DEADLINE.scope(Cell::new(None), request).await
}

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

    /// Runs `call` on the connection within the timeout (or what is left of the request's
    /// budget): its value, or `None` (logged) when Redis failed, was too slow or is resting after
    /// a failure.
    pub async fn run<T, F, Fut>(&self, what: &'static str, call: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = ::redis::RedisResult<T>>,
    {
        if self.now_ms() < self.resting_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let now = Instant::now();
        let deadline = REQUEST_DEADLINE
            .try_with(|deadline| {
                let at = deadline.get().unwrap_or(now + self.timeout);
                deadline.set(Some(at));
                at
            })
            .unwrap_or(now + self.timeout);
        let wait = deadline.saturating_duration_since(now);
        if wait.is_zero() {
            return None;
        }
        let outcome = tokio::time::timeout(wait, call(self.connection.clone())).await;
        let error = match outcome {
            Ok(Ok(value)) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis answers again");
                }
                return Some(value);
            }
            Ok(Err(e)) => e.to_string(),
            // Cut short by the request's budget: Redis was not given the whole timeout.
            Err(_) if wait < self.timeout => return None,
            Err(_) => format!("no answer in {:?}", self.timeout),
        };
        self.resting_until_ms.store(self.now_ms() + REST.as_millis() as u64, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, what, "redis failed; using local limits and no cache until it answers");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that answers after 3 ms.
    async fn slow(_: ConnectionManager) -> ::redis::RedisResult<u8> {
        tokio::time::sleep(Duration::from_millis(3)).await;
        Ok(1)
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_on_redis_for_one_timeout_in_all() {
        let redis = Redis::new("redis://127.0.0.1:1", Duration::from_millis(5)).unwrap();
        let started = Instant::now();
        let answers = one_budget(async {
            [redis.run("a", slow).await, redis.run("b", slow).await, redis.run("c", slow).await]
        })
        .await;
        // The second call had 2 ms left, the third none.
        assert_eq!(answers, [Some(1), None, None]);
        assert_eq!(started.elapsed(), Duration::from_millis(5));
        // A call cut short by a budget does not rest Redis for the next request.
        assert_eq!(one_budget(redis.run("d", slow)).await, Some(1));
        // Outside a request (background writes), each call has the whole timeout.
        assert_eq!(redis.run("e", slow).await, Some(1));
        assert_eq!(redis.run("f", slow).await, Some(1));
    }
}
