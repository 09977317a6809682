//! The values that cross the storage trait.

/// One atomic journal write: events for one stream plus the outbox records they produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    /// The entity's stream, for example `sku/ABC-1`.
    pub stream: String,
    /// The last sequence the writer has seen; the append fails with a conflict if the store has
    /// another.
    pub expected_seq: u64,
    /// Encoded events, in order; they get sequences `expected_seq + 1 ..`.
    pub events: Vec<Vec<u8>>,
    /// Domain events for the outside world, written in the same transaction.
    pub outbox: Vec<OutboxRecord>,
    /// Keyed-table writes that must land with these events (an index entry, an open-saga marker).
    pub puts: Vec<KeyedWrite>,
    /// In a cluster: the shard lease the writer holds. The append fails with
    /// [`StorageError::Fenced`](crate::StorageError::Fenced), writing nothing, unless that shard's
    /// lease still has this epoch.
    pub fence: Option<Fence>,
}

/// The shard lease an append is made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The shard of the appending entity.
    pub shard: u32,
    /// The lease epoch the writer holds.
    pub epoch: u64,
}

/// Who holds a shard, as the store records it. Every change of holder raises the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard.
    pub shard: u32,
    /// The node holding it; `None` once released.
    pub owner: Option<String>,
    /// Raised by one on every change; appends fenced with an older epoch fail.
    pub epoch: u64,
}

/// A write to a keyed table carried by an append; `value: None` deletes the key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyedWrite {
    /// The table.
    pub table: Table,
    /// The key.
    pub key: Vec<u8>,
    /// The new value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

/// An event read back from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in its stream, from 1.
    pub seq: u64,
    /// The encoded event.
    pub payload: Vec<u8>,
}

/// An entity's state as of `seq`, so that recovery replays only later events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last event folded into `state`.
    pub seq: u64,
    /// The encoded state.
    pub state: Vec<u8>,
}

/// A domain event for the outside world (transactional outbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Unique id consumers deduplicate on.
    pub event_id: String,
    /// Routing key, for example `order.confirmed`.
    pub topic: String,
    /// The event body (JSON).
    pub payload: Vec<u8>,
}

/// An outbox record with its position in the store-wide outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Strictly increasing position, from 1.
    pub position: u64,
    /// The record.
    pub record: OutboxRecord,
}

/// The keyed tables of the read side. Keys and values are opaque bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Table {
    /// user id -> user record.
    Users,
    /// normalized email -> user id (uniqueness by compare-and-swap).
    UserEmails,
    /// refresh token id -> token record.
    RefreshTokens,
    /// product id -> product record.
    Products,
    /// SKU -> product id.
    ProductSkus,
    /// user id + inverted creation time + order id -> order summary, for a user's order history.
    OrdersByUser,
    /// inverted creation time + order id -> order summary, for the admin's list of all orders.
    Orders,
    /// setting name -> value (the FX rates).
    Settings,
    /// scope + idempotency key -> stored response.
    IdempotencyKeys,
    /// order id -> empty: checkouts whose saga has not ended, resumed at start.
    OpenOrders,
    /// relay name -> last outbox position published.
    RelayOffsets,
    /// node id -> the node's membership record (address, heartbeat).
    ClusterNodes,
    /// event id + channel -> when the notifier sent it (its deduplication).
    NotificationsSent,
    /// webhook id -> the subscription.
    Webhooks,
    /// webhook id + event id -> the delivery's state and log.
    WebhookDeliveries,
    /// SHA-256 of a password-reset token -> its user and expiry (single use: spent by delete).
    PasswordResets,
    /// SKU -> `1` when it has units available, `0` when not (written with the SKU's events
    /// when that changes; the search index's in-stock state at start).
    SkuAvailability,
}

impl Table {
    /// Every table, for backends that create them up front.
    pub const ALL: [Table; 17] = [
        Table::Users,
        Table::UserEmails,
        Table::RefreshTokens,
        Table::Products,
        Table::ProductSkus,
        Table::OrdersByUser,
        Table::Orders,
        Table::Settings,
        Table::IdempotencyKeys,
        Table::OpenOrders,
        Table::RelayOffsets,
        Table::ClusterNodes,
        Table::NotificationsSent,
        Table::Webhooks,
        Table::WebhookDeliveries,
        Table::PasswordResets,
        Table::SkuAvailability,
    ];

    /// The table's stable name in every backend.
    pub fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::UserEmails => "user_emails",
            Table::RefreshTokens => "refresh_tokens",
            Table::Products => "products",
            Table::ProductSkus => "product_skus",
            Table::OrdersByUser => "orders_by_user",
            Table::Orders => "orders",
            Table::Settings => "settings",
            Table::IdempotencyKeys => "idempotency_keys",
            Table::OpenOrders => "open_orders",
            Table::RelayOffsets => "relay_offsets",
            Table::ClusterNodes => "cluster_nodes",
            Table::NotificationsSent => "notifications_sent",
            Table::Webhooks => "webhooks",
            Table::WebhookDeliveries => "webhook_deliveries",
            Table::PasswordResets => "password_resets",
            Table::SkuAvailability => "sku_availability",
        }
    }
}
