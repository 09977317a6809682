//! The live feed of stock levels: every SKU actor publishes its levels here once a change is
//! durable, and any number of readers (the server-sent-event stream) subscribe.
//!
//! Publishing never waits: the feed is a bounded broadcast ring, so a reader that falls behind
//! loses the oldest updates (and learns that it did) instead of slowing a SKU actor. Readers
//! coalesce; the feed does not.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::StockLevels;

/// Updates a reader may fall behind by before it starts losing them.
pub const FEED_CAPACITY: usize = 8192;

/// One SKU's levels after a durable change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockUpdate {
    /// The SKU.
    pub sku: Arc<str>,
    /// Its levels.
    pub levels: StockLevels,
}

/// The node's stock feed. Cloning shares it.
#[derive(Debug, Clone)]
pub struct StockFeed {
    sender: broadcast::Sender<StockUpdate>,
}

impl Default for StockFeed {
    fn default() -> Self {
        Self { sender: broadcast::Sender::new(FEED_CAPACITY) }
    }
}

impl StockFeed {
    /// Publishes an update to every current reader; with no reader it costs next to nothing.
    pub fn publish(&self, update: StockUpdate) {
        // An error only means nobody is listening.
        let _ = self.sender.send(update);
    }

    /// A new reader, seeing updates published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StockUpdate> {
        self.sender.subscribe()
    }
}
