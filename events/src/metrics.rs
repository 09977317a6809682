//! Every metric this crate records, each name defined once with its unit.

/// Seconds since the oldest event not yet published happened (0 when the relay is caught up).
/// The name is the contract's (EVENTS.md), so it carries no unit suffix.
pub const RELAY_LAG: &str = "storefront_events_relay_lag";
/// Events the relay published and the broker confirmed.
pub const PUBLISHED_TOTAL: &str = "storefront_events_published_total";
/// Publisher confirms received, by `outcome` (`ack`, `nack`).
pub const CONFIRMS_TOTAL: &str = "storefront_events_confirms_total";
/// Relay batches that failed (broker, store), by `stage` (`connect`, `publish`, `confirm`,
/// `store`).
pub const RELAY_FAILURES_TOTAL: &str = "storefront_events_relay_failures_total";
/// Connections to the broker the relay (re)opened after the first.
pub const RELAY_RECONNECTS_TOTAL: &str = "storefront_events_relay_reconnects_total";
