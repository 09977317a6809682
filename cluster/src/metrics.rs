//! The names of the metrics the cluster records, each defined once.

/// Shards this node holds now (a gauge, set when metrics are rendered).
pub const SHARDS_HELD: &str = "storefront_cluster_shards_held";
/// Shards this node stopped serving without handing them off, by reason (`lease_lost`: another
/// node holds the lease now; `not_renewed`: this node could not beat in time; `isolated`: it
/// could not reach most of the cluster).
pub const SHARDS_LOST_TOTAL: &str = "storefront_cluster_shards_lost_total";
/// Shards handed off to another node.
pub const SHARDS_HANDED_OFF_TOTAL: &str = "storefront_cluster_shards_handed_off_total";
/// Journal appends refused because this node no longer held the entity's shard lease.
pub const APPENDS_FENCED_TOTAL: &str = "storefront_cluster_appends_fenced_total";
/// Calls sent to the node holding their entity's shard, by entity kind.
pub const FORWARDED_CALLS_TOTAL: &str = "storefront_cluster_forwarded_calls_total";
