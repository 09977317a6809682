//! The HTTP edge of a running node: [`AppState`] (everything a handler may use) and [`App`], which
//! serves the route table on its listeners until its shutdown future fires, then stops accepting,
//! lets in-flight requests finish (within the grace period) and ends the stock streams.
//!
//! It does not build the parts it serves (the binary's `node` module does) or stop the entities.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use storefront_actors::{Currency, StockFeed};
use storefront_cluster::Regions;
use storefront_events::webhooks::Webhooks;
use storefront_storage::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{AccessTokens, PasswordResets, RefreshTokens, Users};
use crate::catalog::Catalog;
use crate::edge::{EdgeSettings, Streams};
use crate::idempotency::IdempotencyKeys;
use crate::ratelimit::RateLimiter;
use crate::routes;
use crate::serve::{Limits, serve};

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
    /// Products, FX rates and search, as this node has applied the catalog's change feed.
    pub catalog: Catalog,
    /// Accounts.
    pub users: Users,
    /// Access tokens.
    pub tokens: AccessTokens,
    /// Refresh tokens.
    pub refresh: RefreshTokens,
    /// Password-reset tokens.
    pub resets: PasswordResets,
    /// Idempotency keys.
    pub idempotency: IdempotencyKeys,
    /// Rate limits.
    pub limiter: Arc<dyn RateLimiter>,
    /// Merchants' webhooks.
    pub webhooks: Webhooks,
    /// Live stock levels.
    pub feed: StockFeed,
    /// The metrics exposition.
    pub metrics: PrometheusHandle,
    /// The shop's base currency.
    pub base: Currency,
    /// How long a checkout waits for its saga before answering 202.
    pub checkout_wait: Duration,
    /// Per-SKU admission of checkouts.
    pub admission: crate::admission::Admission,
    /// Largest request body.
    pub body_limit: u64,
    /// Client addresses, rate-limit buckets and the caps on streams.
    pub edge: EdgeSettings,
    /// The open live streams.
    pub streams: Streams,
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
    limits: Limits,
    limiter_upkeep: Arc<dyn RateLimiter>,
}

impl App {
    /// The edge serving `state` on `listener` (and `/metrics` on `metrics_listener`, if given);
    /// `stop` is the sender of `state.stopping`, `grace` how long in-flight requests may finish,
    /// `limits` the server's time limits.
    pub fn new(
        state: AppState,
        listener: TcpListener,
        metrics_listener: Option<TcpListener>,
        stop: watch::Sender<bool>,
        (grace, limits): (Duration, Limits),
    ) -> App {
        let limiter_upkeep = state.limiter.clone();
        let state = Arc::new(state);
        App { state, listener, metrics_listener, stop, grace, limits, limiter_upkeep }
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

    /// Serves until `shutdown` completes, then stops (see the module doc); returns once the
    /// checkout answers sent are stored.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let App { state, listener, metrics_listener, stop, grace, limits, limiter_upkeep } = self;
        if let Some(listener) = metrics_listener {
            let mut stopping = state.stopping.clone();
            tokio::spawn(serve(
                listener,
                routes::metrics_only(state.clone()),
                limits,
                async move {
                    let _ = stopping.wait_for(|stopping| *stopping).await;
                },
            ));
        }
        let (keys, refresh, resets) =
            (state.idempotency.clone(), state.refresh.clone(), state.resets.clone());
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
                    match refresh.sweep().await {
                        Ok(0) => {}
                        Ok(deleted) => tracing::info!(deleted, "expired refresh tokens deleted"),
                        Err(e) => tracing::warn!(error = %e, "refresh token sweep failed"),
                    }
                    match resets.sweep().await {
                        Ok(0) => {}
                        Ok(deleted) => tracing::info!(deleted, "expired reset tokens deleted"),
                        Err(e) => tracing::warn!(error = %e, "reset token sweep failed"),
                    }
                }
            }
        });
        let mut stopping = state.stopping.clone();
        let serving = serve(listener, routes::routes(state.clone()), limits, async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        });
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
    }
}
