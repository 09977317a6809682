//! Request rate limits: GCRA per client IP, per user, and a stricter one per IP for registering
//! and logging in. A refused request gets 429 with `Retry-After`.
//!
//! [`RateLimiter`] is the seam. [`LocalLimiter`] (`governor`, in process) is the default: limits
//! are per node, so a cluster of N nodes admits up to N times a limit. [`SharedLimiter`] keeps
//! every budget in Redis (one Lua script a decision, the time from the Redis server), so a client's
//! budget is the same whichever node it reaches; when Redis cannot answer in time it decides
//! with the node's own limiter.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use storefront_config::RateLimitConfig;

use crate::redis::Redis;

/// Which limit a request counts against, and for whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit<'a> {
    /// Every API request, by client IP.
    Ip(IpAddr),
    /// Every authenticated request, by user.
    User(&'a str),
    /// Registration and login, by client IP.
    Auth(IpAddr),
}

/// Decides whether a request may go ahead.
#[async_trait]
pub trait RateLimiter: Send + Sync + std::fmt::Debug + 'static {
    /// `Ok` to go ahead, or how long to wait before the next request can be admitted.
    async fn check(&self, limit: Limit<'_>) -> Result<(), Duration>;

    /// Drops state of keys that are quiet again (called now and then).
    fn forget_quiet(&self) {}
}

/// Admits everything (rate limits switched off).
#[derive(Debug, Default)]
pub struct Unlimited;

#[async_trait]
impl RateLimiter for Unlimited {
    async fn check(&self, _: Limit<'_>) -> Result<(), Duration> {
        Ok(())
    }
}

/// The in-process limiter.
#[derive(Debug)]
pub struct LocalLimiter {
    ip: DefaultKeyedRateLimiter<IpAddr>,
    user: DefaultKeyedRateLimiter<String>,
    auth: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

fn at_least_one(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl LocalLimiter {
    /// Limits as configured. Bursts may reach one second's worth (one minute's for `Auth`).
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            ip: governor::RateLimiter::keyed(Quota::per_second(at_least_one(
                config.per_ip_per_second,
            ))),
            user: governor::RateLimiter::keyed(Quota::per_second(at_least_one(
                config.per_user_per_second,
            ))),
            auth: governor::RateLimiter::keyed(Quota::per_minute(at_least_one(
                config.auth_per_minute,
            ))),
            clock: DefaultClock::default(),
        }
    }
}

#[async_trait]
impl RateLimiter for LocalLimiter {
    async fn check(&self, limit: Limit<'_>) -> Result<(), Duration> {
        let outcome = match limit {
            Limit::Ip(ip) => self.ip.check_key(&ip),
            Limit::User(user) => self.user.check_key(&user.to_owned()),
            Limit::Auth(ip) => self.auth.check_key(&ip),
        };
        outcome.map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    fn forget_quiet(&self) {
        self.ip.retain_recent();
        self.user.retain_recent();
        self.auth.retain_recent();
    }
}

/// GCRA over Redis: `KEYS[1]` the budget, `ARGV[1]` the emission interval and `ARGV[2]` the
/// burst tolerance, in µs; answers `{admitted 0|1, wait ms}`. The time is the Redis server's, so
/// every node decides on one clock; the key expires when its budget is whole again.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
if now < tat - tolerance then
  return {0, math.ceil((tat - tolerance - now) / 1000)}
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil((next_tat - now) / 1000))
return {1, 0}
";

/// Limits kept in Redis, shared by every node; the node's own when Redis cannot answer.
#[derive(Debug)]
pub struct SharedLimiter {
    redis: Arc<Redis>,
    script: ::redis::Script,
    local: LocalLimiter,
    /// (emission interval, burst tolerance) in µs for `Ip`, `User` and `Auth`.
    quotas: [(u64, u64); 3],
}

/// GCRA's interval and tolerance for `per` requests per `period`, with a burst of `per`.
fn gcra(per: u32, period: Duration) -> (u64, u64) {
    let interval = (period.as_micros() as u64 / u64::from(per.max(1))).max(1);
    (interval, interval * u64::from(per.max(1) - 1))
}

impl SharedLimiter {
    /// The configured limits, kept in `redis`.
    pub fn new(config: &RateLimitConfig, redis: Arc<Redis>) -> Self {
        let second = Duration::from_secs(1);
        Self {
            redis,
            script: ::redis::Script::new(GCRA),
            local: LocalLimiter::new(config),
            quotas: [
                gcra(config.per_ip_per_second, second),
                gcra(config.per_user_per_second, second),
                gcra(config.auth_per_minute, Duration::from_secs(60)),
            ],
        }
    }
}

impl SharedLimiter {
    /// Loads the script into Redis now (allowing a second), so decisions take one round trip
    /// from the first; a Redis that is down loads it when it first answers.
    pub async fn load(&self) {
        let mut connection = self.redis.connection();
        let load = self.script.load_async(&mut connection);
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(1), load).await {
            tracing::warn!(error = %e, "cannot load the rate-limit script into redis yet");
        }
    }
}

#[async_trait]
impl RateLimiter for SharedLimiter {
    async fn check(&self, limit: Limit<'_>) -> Result<(), Duration> {
        let (key, (interval, tolerance)) = match limit {
            Limit::Ip(ip) => (format!("storefront:limit:ip:{ip}"), self.quotas[0]),
            Limit::User(user) => (format!("storefront:limit:user:{user}"), self.quotas[1]),
            Limit::Auth(ip) => (format!("storefront:limit:auth:{ip}"), self.quotas[2]),
        };
        let script = &self.script;
        let decided = self
            .redis
            .run("rate limit", |mut connection| async move {
                let mut call = script.prepare_invoke();
                call.key(key).arg(interval).arg(tolerance);
                call.invoke_async::<(i64, i64)>(&mut connection).await
            })
            .await;
        match decided {
            Some((1, _)) => Ok(()),
            Some((_, wait_ms)) => Err(Duration::from_millis(wait_ms.max(1) as u64)),
            None => self.local.check(limit).await,
        }
    }

    fn forget_quiet(&self) {
        self.local.forget_quiet();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_over_the_quota_is_refused_with_a_wait_and_other_keys_are_not() {
        let limiter = LocalLimiter::new(&RateLimitConfig {
            enabled: true,
            per_ip_per_second: 5,
            per_user_per_second: 2,
            auth_per_minute: 3,
        });
        let (first, second) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        for _ in 0..3 {
            limiter.check(Limit::Auth(first)).await.unwrap();
        }
        let wait = limiter.check(Limit::Auth(first)).await.unwrap_err();
        assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(20), "{wait:?}");
        limiter.check(Limit::Auth(second)).await.unwrap();
        limiter.check(Limit::User("u1")).await.unwrap();
        limiter.check(Limit::User("u1")).await.unwrap();
        assert!(limiter.check(Limit::User("u1")).await.is_err());
        limiter.check(Limit::User("u2")).await.unwrap();
    }
}
