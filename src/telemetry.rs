//! The process's logs and traces. Logs: `tracing-subscriber`'s fmt output, filtered by
//! `log.filter` (JSON with `log.json`). Traces, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: the spans of [`trace::TARGET`] (one per request,
//! per call forwarded from another node and per saga step) exported over OTLP/HTTP (protobuf) in
//! batches, with W3C trace context propagation; the other standard `OTEL_*` variables
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, headers
//! and timeouts) apply as the OpenTelemetry SDK reads them.

use anyhow::Context;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use storefront_actors::trace;
use storefront_config::Config;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// What must be flushed before the process exits.
#[derive(Debug)]
#[must_use = "traces are flushed when it is shut down"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the log subscriber and, if an OTLP endpoint is configured, the trace exporter of
    /// `service` (`storefront` unless `OTEL_SERVICE_NAME` says otherwise), whose spans name this
    /// process `instance` (`service.instance.id`, the node id). Call outside any async runtime.
    pub fn init(config: &Config, instance: &str) -> anyhow::Result<Telemetry> {
        let traces = exported().then(|| provider(instance)).transpose()?;
        let tracer = traces.as_ref().map(|provider| provider.tracer("storefront"));
        subscriber(&config.log.filter, config.log.json, tracer)?
            .try_init()
            .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
        if traces.is_some() {
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            tracing::info!("exporting traces over OTLP/HTTP");
        }
        Ok(Telemetry { traces })
    }

    /// Exports the spans not yet sent (waiting at most the exporter's timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.traces
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "traces not all exported at exit");
        }
    }
}

/// The process's subscriber: the log output by `filter` ([`log_filter`]), and the spans of
/// [`trace::TARGET`] exported by `tracer` if there is one. The layers are a list, not an optional
/// second layer: `tracing-subscriber` counts a `None` layer as interested in every span and event
/// at every level, so each would be built only for the log filter to drop it.
fn subscriber(
    filter: &str,
    json: bool,
    tracer: Option<SdkTracer>,
) -> anyhow::Result<impl tracing::Subscriber + Send + Sync + 'static> {
    let filter = log_filter(filter)?;
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![if json {
        tracing_subscriber::fmt::layer().json().with_filter(filter).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_filter(filter).boxed()
    }];
    if let Some(tracer) = tracer {
        let spans = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_target(trace::TARGET, tracing::Level::INFO));
        layers.push(spans.boxed());
    }
    Ok(tracing_subscriber::registry().with(layers))
}

/// The log output's filter: `filter` (the config's `log.filter`), except for spans no log line
/// wants. Trace spans are left out (they would prefix every line logged within), and so is the
/// actor runtime's info span per actor started and per message handled (`ractor` instruments
/// both; with the spans above, about 4% of the node's CPU in the checkout profile, BENCHMARKS.md).
/// `ractor`'s warnings and errors still show, and a `log.filter` that names `ractor` itself
/// decides for it.
fn log_filter(filter: &str) -> anyhow::Result<EnvFilter> {
    let directives = format!("ractor=warn,{filter},{}=off", trace::TARGET);
    EnvFilter::try_new(&directives)
        .with_context(|| format!("invalid config key `log.filter`: `{filter}`"))
}

/// Whether an OTLP endpoint for traces is configured.
fn exported() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

/// The tracer provider: OTLP/HTTP exporter (it reads the endpoint from the environment),
/// batched, with this process's resource.
fn provider(instance: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("cannot set up the OTLP trace exporter")?;
    let mut resource = Resource::builder()
        .with_attribute(KeyValue::new("service.instance.id", instance.to_owned()))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("storefront");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    /// Runs `check` with the subscriber of a process that logs by `filter` and exports no traces.
    fn with_logs(filter: &str, check: impl FnOnce()) {
        tracing::subscriber::with_default(subscriber(filter, false, None).expect("valid"), check);
    }

    #[test]
    fn the_logs_leave_out_the_actor_runtimes_spans_and_the_trace_spans() {
        with_logs("info,fjall=warn,lsm_tree=warn", || {
            // ractor's span per actor and per message: `#[instrument(name = "Actor")]`, info.
            assert!(!tracing::enabled!(target: "ractor::actor", Level::INFO));
            assert!(tracing::enabled!(target: "ractor::actor", Level::WARN));
            assert!(!tracing::enabled!(target: trace::TARGET, Level::INFO));
            assert!(tracing::enabled!(target: "storefront_http::serve", Level::INFO));
            // Nothing below the filter's level is built for the log output to drop.
            assert!(!tracing::enabled!(target: "storefront_actors::order", Level::DEBUG));
        });
        // A filter that names ractor itself decides for it.
        with_logs("info,ractor=debug", || {
            assert!(tracing::enabled!(target: "ractor::actor", Level::INFO));
        });
    }
}
