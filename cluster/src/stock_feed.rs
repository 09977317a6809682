//! The stock feed between nodes: each node forwards the level changes of the SKUs it holds to
//! every live peer, which publishes them into its own feed, so a stock stream on any node shows
//! every SKU. Forwarding coalesces per SKU (the latest levels every [`COALESCE`]), sends at most
//! [`MAX_NOTICES`] per message, and reads the node's feed like any other reader: a forwarder
//! that falls behind loses updates, never slows an actor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use storefront_actors::{EntityKind, StockFeed, StockUpdate};
use tokio::sync::{broadcast, watch};

use crate::call::StockNotice;
use crate::remote::{HostMsg, cast_to};
use crate::{MemberStatus, Ownership};

/// How long changes gather before they go out: each SKU's latest levels in that time.
pub const COALESCE: Duration = Duration::from_millis(50);
/// Notices one message carries at most.
const MAX_NOTICES: usize = 4096;

/// Forwards this node's level changes to its peers until `stopped` turns true.
pub(crate) async fn forward(
    feed: StockFeed,
    ownership: Ownership,
    mut stopped: watch::Receiver<bool>,
) {
    let mut local = feed.subscribe_local();
    let mut pending: HashMap<Arc<str>, StockUpdate> = HashMap::new();
    let mut every = tokio::time::interval(COALESCE);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            update = local.recv() => match update {
                Ok(update) => {
                    pending.insert(update.sku.clone(), update);
                }
                Err(broadcast::error::RecvError::Lagged(lost)) => {
                    tracing::warn!(lost, "the stock forwarder fell behind; peers miss these changes");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = every.tick(), if !pending.is_empty() => send(&ownership, pending.drain()),
        }
    }
}

/// Casts `updates` to every live peer (a peer without a session now misses them).
fn send(ownership: &Ownership, updates: impl Iterator<Item = (Arc<str>, StockUpdate)>) {
    let notices: Vec<StockNotice> = updates
        .map(|(sku, u)| StockNotice { sku: sku.to_string(), levels: u.levels, seq: u.seq })
        .collect();
    let me = ownership.node_id();
    let view = ownership.view();
    let peers = view.members.iter().filter(|m| m.node_id != me && m.status != MemberStatus::Down);
    for peer in peers {
        for chunk in notices.chunks(MAX_NOTICES) {
            cast_to(EntityKind::Sku, &peer.node_id, &chunk, HostMsg::Stock);
        }
    }
}
