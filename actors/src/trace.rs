//! Traces across tasks and nodes: the one target every Storefront span is made under
//! ([`TARGET`]), and the W3C trace context (`traceparent`) that a forwarded command and an order's
//! placement carry, so that the spans a checkout makes on every node it touches (its request, the
//! calls forwarded to other nodes, its saga's steps) form one trace. A context is carried as text
//! rather than as a span handle, which would keep its span open for as long as it is held.
//!
//! The context is read and written through the process's global propagator, which the binary
//! sets (with the exporter) only when traces are exported: otherwise no context is carried and
//! spans of [`TARGET`] are disabled, so none of this costs more than a check.

use std::collections::HashMap;

use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span made for traces, and of those only: the log output leaves them out,
/// the trace exporter takes them alone.
pub const TARGET: &str = "storefront_trace";

/// The current span's context as a W3C `traceparent`, if traces are exported.
pub fn traceparent() -> Option<String> {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return None;
    }
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&span.context(), &mut carrier);
    });
    carrier.remove("traceparent")
}

/// Makes `span` a child of the (remote) span `traceparent` names.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    if span.is_disabled() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    // Fails only once the span has started its OpenTelemetry span, which a new span has not.
    let _ = span.set_parent(parent);
}
