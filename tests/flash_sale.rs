//! One hot SKU under a burst of concurrent reservations: exactly the stock is sold, and the same
//! holds after the node restarts from its journal.
// Test code: an unmet expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Node, fast_settings};
use storefront_actors::{DomainError, StockCommand};

const STOCK: u64 = 1_000;
const ATTEMPTS: usize = 20_000;

fn reserve(i: usize) -> StockCommand {
    StockCommand::Reserve {
        reservation_id: format!("flash/{i}"),
        order_id: format!("order-{i}"),
        qty: 1,
        ttl_ms: 3_600_000,
    }
}

async fn burst(node: &Arc<Node>) -> Vec<usize> {
    let tasks: Vec<_> = (0..ATTEMPTS)
        .map(|i| {
            let node = node.clone();
            tokio::spawn(async move { (i, node.regions.stock("HOT-1", reserve(i)).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (i, Ok(_)) => winners.push(i),
            (_, Err(DomainError::OutOfStock { .. })) => {}
            (i, Err(other)) => panic!("attempt {i} failed unexpectedly: {other}"),
        }
    }
    winners.sort_unstable();
    winners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_stock_is_reserved_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(Node::start(dir.path(), fast_settings()).await);
    node.stock_sku("HOT-1", STOCK).await;

    let winners = burst(&node).await;
    assert_eq!(winners.len() as u64, STOCK);
    let levels = node.regions.stock_levels("HOT-1").await.unwrap();
    assert_eq!(levels, common::levels(STOCK, STOCK, 0));

    // The hot SKU saves snapshots as its journal grows, so the restart below recovers from one. A
    // snapshot is saved after the append it follows is answered: the last may land just after the
    // burst's last answer, so it is waited for (bounded), not read once.
    let store = node.store.clone();
    common::eventually(std::time::Duration::from_secs(10), "a snapshot of HOT-1", || {
        let store = store.clone();
        async move {
            let snapshot =
                storefront_storage::Store::load_snapshot(&*store, "sku/HOT-1").await.unwrap();
            snapshot.is_some_and(|s| s.seq >= 50)
        }
    })
    .await;
    drop(store);

    let node = Arc::into_inner(node).unwrap();
    node.stop().await;
    let node = Arc::new(Node::start(dir.path(), fast_settings()).await);
    let levels = node.regions.stock_levels("HOT-1").await.unwrap();
    assert_eq!(levels, common::levels(STOCK, STOCK, 0));

    // The same burst again after the restart: the winners' repeats are recognized, nobody else wins.
    assert_eq!(burst(&node).await, winners);
    let levels = node.regions.stock_levels("HOT-1").await.unwrap();
    assert_eq!(levels.reserved, STOCK);
}
