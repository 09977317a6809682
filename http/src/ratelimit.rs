//! Request rate limits: GCRA (`governor`) per client IP, per user, and a stricter one per IP for
//! registering and logging in. A refused request gets 429 with `Retry-After`.
//!
//! [`RateLimiter`] is the seam: this in-process limiter is the default; a limiter shared by all
//! nodes (Redis) implements the same trait. Limits are per node here, so a cluster of N nodes
//! admits up to N times a limit.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use storefront_config::RateLimitConfig;

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
