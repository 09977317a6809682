//! The names of the metrics the cluster records, each defined once.

/// Shards this node holds now (a gauge, set when metrics are rendered).
pub const SHARDS_HELD: &str = "storefront_cluster_shards_held";
/// Shards this node stopped serving without handing them off, by reason (`lease_lost`: another
/// node holds the lease now; `not_renewed`: this node could not beat in time; `isolated`: it
/// could not reach most of the cluster).
pub const SHARDS_LOST_TOTAL: &str = "storefront_cluster_shards_lost_total";
/// The reasons a shard is lost.
pub const SHARD_LOSS_REASONS: [&str; 3] = ["lease_lost", "not_renewed", "isolated"];
/// Shards handed off to another node.
pub const SHARDS_HANDED_OFF_TOTAL: &str = "storefront_cluster_shards_handed_off_total";
/// Journal appends refused because this node no longer held the entity's shard lease.
pub const APPENDS_FENCED_TOTAL: &str = "storefront_cluster_appends_fenced_total";
/// Calls sent to the node holding their entity's shard, by entity kind.
pub const FORWARDED_CALLS_TOTAL: &str = "storefront_cluster_forwarded_calls_total";

/// Registers every series above at zero (per reason and entity kind), so that a node exports
/// them from its start.
pub fn zero_initialise() {
    metrics::gauge!(SHARDS_HELD).increment(0.0);
    for reason in SHARD_LOSS_REASONS {
        metrics::counter!(SHARDS_LOST_TOTAL, "reason" => reason).increment(0);
    }
    metrics::counter!(SHARDS_HANDED_OFF_TOTAL).increment(0);
    metrics::counter!(APPENDS_FENCED_TOTAL).increment(0);
    for kind in storefront_actors::EntityKind::ALL.map(storefront_actors::EntityKind::as_str) {
        metrics::counter!(FORWARDED_CALLS_TOTAL, "kind" => kind).increment(0);
    }
}
