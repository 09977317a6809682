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
use opentelemetry_sdk::trace::SdkTracerProvider;
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
        // The log output leaves trace spans out (they would prefix every line logged within).
        let directives = format!("{},{}=off", config.log.filter, trace::TARGET);
        let filter = EnvFilter::try_new(&directives)
            .with_context(|| format!("invalid config key `log.filter`: `{}`", config.log.filter))?;
        let logs: Box<dyn Layer<Registry> + Send + Sync> = if config.log.json {
            tracing_subscriber::fmt::layer().json().with_filter(filter).boxed()
        } else {
            tracing_subscriber::fmt::layer().with_filter(filter).boxed()
        };
        let traces = exported().then(|| provider(instance)).transpose()?;
        let spans = traces.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("storefront"))
                .with_filter(Targets::new().with_target(trace::TARGET, tracing::Level::INFO))
        });
        tracing_subscriber::registry()
            .with(logs)
            .with(spans)
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
