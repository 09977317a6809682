//! The live feed of stock levels: every SKU actor publishes its levels here once a change is
//! durable, peers' updates for the SKUs they hold join them (`storefront-cluster` forwards
//! them), and any number of readers (the server-sent-event stream, the search index) subscribe.
//!
//! Publishing never waits: the feed is a bounded broadcast ring, so a reader that falls behind
//! loses the oldest updates (and learns that it did) instead of slowing a SKU actor. Readers
//! coalesce; the feed does not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    /// The SKU journal's sequence the levels are as of: orders updates of one SKU whichever
    /// node's actor published them.
    pub seq: u64,
    /// Whether a peer forwarded it (its SKU is held by another node).
    pub from_peer: bool,
}

/// The node's stock feed: the levels its own SKU actors publish, and those peers forward for
/// SKUs they hold. Cloning shares it.
#[derive(Debug, Clone)]
pub struct StockFeed {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Every update, this node's and its peers': what readers see.
    all: broadcast::Sender<StockUpdate>,
    /// This node's actors' updates only: what the node forwards to its peers.
    local: broadcast::Sender<StockUpdate>,
    /// The latest sequence and units available seen per SKU: a peer's update that arrives
    /// after a newer one (the SKU moved between nodes meanwhile) is dropped, and the edge
    /// answers a checkout of a SKU known to lack the units at once ([`StockFeed::available`]).
    latest: Mutex<HashMap<Arc<str>, (u64, u64)>>,
}

impl Default for StockFeed {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                all: broadcast::Sender::new(FEED_CAPACITY),
                local: broadcast::Sender::new(FEED_CAPACITY),
                latest: Mutex::default(),
            }),
        }
    }
}

impl StockFeed {
    /// Publishes an update of this node's actor to every current reader; with no reader it
    /// costs next to nothing.
    pub fn publish(&self, update: StockUpdate) {
        self.remember(&update);
        // An error only means nobody is listening.
        let _ = self.inner.local.send(update.clone());
        let _ = self.inner.all.send(update);
    }

    /// Publishes an update a peer forwarded, unless a newer one of its SKU was seen; returns
    /// whether it was published.
    pub fn publish_remote(&self, update: StockUpdate) -> bool {
        if !self.remember(&update) {
            return false;
        }
        let _ = self.inner.all.send(update);
        true
    }

    /// Records `update` as its SKU's latest; false if a newer one was seen.
    fn remember(&self, update: &StockUpdate) -> bool {
        let seen = (update.seq, update.levels.available);
        // Held for one map update that does not panic; a poisoned map is still whole.
        let mut latest = self.inner.latest.lock().unwrap_or_else(|e| e.into_inner());
        match latest.get_mut(&update.sku) {
            Some((seq, _)) if *seq > update.seq => false,
            Some(latest) => {
                *latest = seen;
                true
            }
            None => {
                latest.insert(update.sku.clone(), seen);
                true
            }
        }
    }

    /// The units of `sku` available as this node last heard (its own actor's durable levels,
    /// or a peer's within its forwarding period); `None` if it has not heard of the SKU.
    pub fn available(&self, sku: &str) -> Option<u64> {
        let latest = self.inner.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.get(sku).map(|(_, available)| *available)
    }

    /// A new reader of every update (this node's and its peers'), from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StockUpdate> {
        self.inner.all.subscribe()
    }

    /// A new reader of this node's actors' updates only, from now on.
    pub fn subscribe_local(&self) -> broadcast::Receiver<StockUpdate> {
        self.inner.local.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(sku: &str, seq: u64, available: u64, from_peer: bool) -> StockUpdate {
        let levels = StockLevels { on_hand: available, reserved: 0, available, sold: 0 };
        StockUpdate { sku: Arc::from(sku), levels, seq, from_peer }
    }

    #[test]
    fn the_units_last_heard_of_each_sku_are_kept_and_an_older_peer_update_is_dropped() {
        let feed = StockFeed::default();
        assert_eq!(feed.available("A-1"), None);
        feed.publish(update("A-1", 5, 3, false));
        assert_eq!(feed.available("A-1"), Some(3));
        assert!(!feed.publish_remote(update("A-1", 4, 9, true)));
        assert_eq!(feed.available("A-1"), Some(3));
        assert!(feed.publish_remote(update("A-1", 6, 0, true)));
        assert_eq!((feed.available("A-1"), feed.available("B-1")), (Some(0), None));
    }
}
