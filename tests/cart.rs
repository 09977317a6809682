//! Carts: line rules, idle expiry, durability.
// Test code: an unmet expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Node, eventually, fast_settings};
use storefront_actors::cart::{CartCommand, CartLine};
use storefront_actors::{DomainError, EntitySettings, Quantity, Sku};

fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap()
}

fn add(s: &str, qty: u32) -> CartCommand {
    CartCommand::Add { sku: sku(s), qty: Quantity::new(qty).unwrap() }
}

fn lines(pairs: &[(&str, u32)]) -> Vec<CartLine> {
    pairs.iter().map(|(s, q)| CartLine { sku: (*s).into(), qty: *q }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_follow_the_rules_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), fast_settings()).await;
    let r = &node.regions;
    assert!(r.cart("u1").await.unwrap().lines.is_empty());
    r.update_cart("u1", add("B", 2)).await.unwrap();
    r.update_cart("u1", add("A", 1)).await.unwrap();
    let cart = r.update_cart("u1", add("B", 3)).await.unwrap();
    assert_eq!(cart.lines, lines(&[("A", 1), ("B", 5)]));
    assert!(matches!(r.update_cart("u1", add("B", 96)).await, Err(DomainError::Invalid { .. })));
    let cart = r.update_cart("u1", CartCommand::SetQty { sku: sku("B"), qty: 100 }).await.unwrap();
    assert_eq!(cart.lines, lines(&[("A", 1), ("B", 100)]));
    assert!(matches!(
        r.update_cart("u1", CartCommand::SetQty { sku: sku("B"), qty: 101 }).await,
        Err(DomainError::Invalid { .. })
    ));
    let cart = r.update_cart("u1", CartCommand::SetQty { sku: sku("A"), qty: 0 }).await.unwrap();
    assert_eq!(cart.lines, lines(&[("B", 100)]));
    let cart = r.update_cart("u1", CartCommand::Remove { sku: sku("B") }).await.unwrap();
    assert!(cart.lines.is_empty());
    for i in 0..100 {
        r.update_cart("u2", add(&format!("S{i}"), 1)).await.unwrap();
    }
    assert!(matches!(
        r.update_cart("u2", add("ONE-TOO-MANY", 1)).await,
        Err(DomainError::Invalid { .. })
    ));
    r.update_cart("u3", add("K", 7)).await.unwrap();

    node.stop().await;
    let node = Node::start(dir.path(), fast_settings()).await;
    assert_eq!(node.regions.cart("u2").await.unwrap().lines.len(), 100);
    assert_eq!(node.regions.cart("u3").await.unwrap().lines, lines(&[("K", 7)]));
    let cleared = node.regions.update_cart("u3", CartCommand::Clear).await.unwrap();
    assert!(cleared.lines.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cart_expires() {
    let dir = tempfile::tempdir().unwrap();
    let settings =
        EntitySettings { cart_idle_expiry: Duration::from_millis(100), ..fast_settings() };
    let node = Node::start(dir.path(), settings).await;
    node.regions.update_cart("u1", add("A", 1)).await.unwrap();
    eventually(Duration::from_secs(10), "the cart to expire", || async {
        node.regions.cart("u1").await.unwrap().lines.is_empty()
    })
    .await;
    // An expired cart takes new lines as an empty one.
    let cart = node.regions.update_cart("u1", add("B", 2)).await.unwrap();
    assert_eq!(cart.lines, lines(&[("B", 2)]));
}
