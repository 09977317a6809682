//! The names of the metrics the entity actors record, each defined once with its unit.
//!
//! Handles are looked up once per actor (or journal) and kept, so recording on the hot path is one
//! atomic operation.

/// Reservation commands by outcome (`reserved`, `out_of_stock`, `refused`).
pub const RESERVATIONS_TOTAL: &str = "storefront_reservations_total";
/// Checkout sagas that ended, by outcome (`confirmed`, `out_of_stock`, `payment_declined`,
/// `payment_gateway_error`, `other_failure`, `cancelled`).
pub const SAGAS_TOTAL: &str = "storefront_sagas_total";
/// Events per journal append, by entity kind.
pub const JOURNAL_BATCH_EVENTS: &str = "storefront_journal_batch_events";
/// Time from dispatching a journal append to its durable outcome, by entity kind.
pub const JOURNAL_APPEND_SECONDS: &str = "storefront_journal_append_seconds";
