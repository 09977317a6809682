//! The edge's metrics and the Prometheus exposition.
//!
//! Names are defined once, here and in `storefront_actors::metrics`, with their unit in the name;
//! labels are bounded (route templates, status codes, entity kinds). Exposed on `GET /metrics`:
//! - `storefront_http_request_duration_seconds{route}`: latency per route template (histogram);
//! - `storefront_http_responses_total{route,status}`: responses by status;
//! - `storefront_reservations_total{outcome}`, `storefront_sagas_total{outcome}`,
//!   `storefront_journal_batch_events{kind}`, `storefront_journal_append_seconds{kind}`: recorded
//!   by the entity actors;
//! - `storefront_live_entities{kind}`: entity actors in memory;
//! - `storefront_entity_calls_in_flight{kind}`: commands sent to entities and not yet answered,
//!   queued in a mailbox, being handled, or waiting for an outcome (ractor does not expose
//!   mailbox lengths: this is the nearest measure, and includes long waits such as a checkout
//!   waiting for its saga);
//! - `storefront_sse_clients`: open stock streams;
//! - `storefront_ready`: 1 when the node can serve (what `/readyz` answers at the scrape), else 0.
//!
//! Every series whose labels are known in advance (each crate's `zero_initialise`) is exported
//! from a node's start at zero, so a dashboard of a quiet shop shows 0, not "no data".

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use storefront_cluster::Regions;

/// Latency of a request, by route template.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "storefront_http_request_duration_seconds";
/// Responses, by route template and status.
pub const HTTP_RESPONSES_TOTAL: &str = "storefront_http_responses_total";
/// Entity actors in memory, by kind.
pub const LIVE_ENTITIES: &str = "storefront_live_entities";
/// Unanswered commands to entities, by kind.
pub const ENTITY_CALLS_IN_FLIGHT: &str = "storefront_entity_calls_in_flight";
/// Open server-sent-event stock streams.
pub const SSE_CLIENTS: &str = "storefront_sse_clients";
/// Whether the node can serve (1) or not (0), as `/readyz` answers when scraped.
pub const READY: &str = "storefront_ready";

const SECONDS_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const EVENTS_BUCKETS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0];

/// Registers the edge's gauges at zero, so that a node exports them from its start (the
/// per-route series are registered with their routes, [`RouteMetrics::new`]).
pub fn zero_initialise() {
    metrics::gauge!(SSE_CLIENTS).increment(0.0);
}

/// Installs the process's Prometheus recorder (once; later calls return the same handle). The
/// binary calls this at start; library code only records.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_events".into()), EVENTS_BUCKETS)
                })
                .map_err(|e| e.to_string())?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
            let upkeep = handle.clone();
            // Histograms are drained into the exposition lazily; keep that bounded.
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .map_err(|e| e.to_string())?;
            Ok(handle)
        })
        .clone()
}

/// Per-route handles, looked up once when the routes are built.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    route: &'static str,
    duration: metrics::Histogram,
}

impl RouteMetrics {
    /// Handles for `route` (a template such as `GET /v1/products/{product_id}`). Its latency
    /// series and its count of 200 answers are exported from the start, at zero.
    pub fn new(route: &'static str) -> Self {
        metrics::counter!(HTTP_RESPONSES_TOTAL, "route" => route, "status" => "200").increment(0);
        Self {
            route,
            duration: metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, "route" => route),
        }
    }

    /// Records one response.
    pub fn record(&self, status: http::StatusCode, elapsed: Duration) {
        self.duration.record(elapsed.as_secs_f64());
        metrics::counter!(HTTP_RESPONSES_TOTAL, "route" => self.route, "status" => status.as_str().to_owned())
            .increment(1);
    }
}

/// The exposition, with the gauges read from the regions (and `ready`) first.
pub fn render(handle: &PrometheusHandle, regions: &Regions, ready: bool) -> String {
    metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
    for (kind, live, depth) in [
        ("sku", regions.skus().live_entities(), regions.skus().calls_in_flight()),
        ("cart", regions.carts().live_entities(), regions.carts().calls_in_flight()),
        ("order", regions.orders().live_entities(), regions.orders().calls_in_flight()),
    ] {
        metrics::gauge!(LIVE_ENTITIES, "kind" => kind).set(live as f64);
        metrics::gauge!(ENTITY_CALLS_IN_FLIGHT, "kind" => kind).set(depth as f64);
    }
    if let Some(ownership) = regions.ownership() {
        metrics::gauge!(storefront_cluster::metrics::SHARDS_HELD)
            .set(ownership.held_shards() as f64);
    }
    handle.render()
}
