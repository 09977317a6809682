//! Every metric this crate records, each name defined once with its unit.

/// Seconds since the oldest event not yet published happened (0 when the relay is caught up),
/// by `relay` (the name its position is recorded under). The name is the contract's (EVENTS.md),
/// so it carries no unit suffix.
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
/// Webhook delivery tries, by `outcome` (`delivered`, `retried`, `failed`, `refused`).
pub const WEBHOOK_ATTEMPTS_TOTAL: &str = "storefront_webhook_attempts_total";
/// Notifications sent, by `channel` (`email`, `sms`).
pub const NOTIFY_SENT_TOTAL: &str = "storefront_notify_sent_total";
/// Failed tries of a notification send, by `channel`.
pub const NOTIFY_FAILED_TOTAL: &str = "storefront_notify_failed_total";
/// Sends tried again after a failure, by `channel`.
pub const NOTIFY_RETRIED_TOTAL: &str = "storefront_notify_retried_total";
/// Messages moved to the dead-letter queue, by the `channel` that kept failing (`none`: not an
/// event).
pub const NOTIFY_DEAD_LETTERED_TOTAL: &str = "storefront_notify_dead_lettered_total";
/// Messages acknowledged without a send, by `reason` (`expired`).
pub const NOTIFY_DROPPED_TOTAL: &str = "storefront_notify_dropped_total";

/// The stages at which a relay batch fails.
const RELAY_STAGES: [&str; 4] = ["connect", "publish", "confirm", "store"];
/// The outcomes of a webhook delivery try.
const WEBHOOK_OUTCOMES: [&str; 4] = ["delivered", "retried", "failed", "refused"];
/// The channels a notification goes out on.
const CHANNELS: [&str; 2] = ["email", "sms"];

/// Registers a node's series of this crate (relay, webhooks) at zero, so that it exports them
/// from its start. The relay's lag gauge is registered by the relay itself, when a broker is
/// configured.
pub fn zero_initialise_node() {
    metrics::counter!(PUBLISHED_TOTAL).increment(0);
    for outcome in ["ack", "nack"] {
        metrics::counter!(CONFIRMS_TOTAL, "outcome" => outcome).increment(0);
    }
    for stage in RELAY_STAGES {
        metrics::counter!(RELAY_FAILURES_TOTAL, "stage" => stage).increment(0);
    }
    metrics::counter!(RELAY_RECONNECTS_TOTAL).increment(0);
    for outcome in WEBHOOK_OUTCOMES {
        metrics::counter!(WEBHOOK_ATTEMPTS_TOTAL, "outcome" => outcome).increment(0);
    }
}

/// Registers the notifier's series at zero, per channel, so that it exports them from its start.
pub fn zero_initialise_notifier() {
    for channel in CHANNELS {
        metrics::counter!(NOTIFY_SENT_TOTAL, "channel" => channel).increment(0);
        metrics::counter!(NOTIFY_FAILED_TOTAL, "channel" => channel).increment(0);
        metrics::counter!(NOTIFY_RETRIED_TOTAL, "channel" => channel).increment(0);
    }
    for channel in CHANNELS.into_iter().chain(["none"]) {
        metrics::counter!(NOTIFY_DEAD_LETTERED_TOTAL, "channel" => channel).increment(0);
    }
    metrics::counter!(NOTIFY_DROPPED_TOTAL, "reason" => "expired").increment(0);
}
