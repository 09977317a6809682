//! The names of the metrics the entity actors record, each defined once with its unit.
//!
//! Handles are looked up once per actor (or journal) and kept, so recording on the hot path is one
//! atomic operation.

/// Reservation commands by outcome ([`RESERVATION_OUTCOMES`]).
pub const RESERVATIONS_TOTAL: &str = "storefront_reservations_total";
/// The outcomes of a reservation command.
pub const RESERVATION_OUTCOMES: [&str; 3] = ["reserved", "out_of_stock", "refused"];
/// Checkout sagas that ended, by outcome ([`SAGA_OUTCOMES`]).
pub const SAGAS_TOTAL: &str = "storefront_sagas_total";
/// The outcomes of a checkout saga.
pub const SAGA_OUTCOMES: [&str; 6] = [
    "confirmed",
    "out_of_stock",
    "payment_declined",
    "payment_gateway_error",
    "other_failure",
    "cancelled",
];
/// Events per journal append, by entity kind.
pub const JOURNAL_BATCH_EVENTS: &str = "storefront_journal_batch_events";
/// Time from dispatching a journal append to its durable outcome, by entity kind.
pub const JOURNAL_APPEND_SECONDS: &str = "storefront_journal_append_seconds";

/// Registers every series above at zero, for each outcome and entity kind, so that a node
/// exports them from its start (a quiet shop's dashboard shows 0, not "no data").
pub fn zero_initialise() {
    for outcome in RESERVATION_OUTCOMES {
        metrics::counter!(RESERVATIONS_TOTAL, "outcome" => outcome).increment(0);
    }
    for outcome in SAGA_OUTCOMES {
        metrics::counter!(SAGAS_TOTAL, "outcome" => outcome).increment(0);
    }
    for kind in crate::EntityKind::ALL.map(crate::EntityKind::as_str) {
        // Registering a histogram exports it (count 0); nothing is recorded.
        let _registered = metrics::histogram!(JOURNAL_BATCH_EVENTS, "kind" => kind);
        let _registered = metrics::histogram!(JOURNAL_APPEND_SECONDS, "kind" => kind);
    }
}
