//! One catalog across the cluster: a product, price or FX change made through one node is read,
//! found and charged by the others within the contract's 2 s, and a node that was down has
//! caught up by the time it answers.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Cluster, SERIAL, eventually};

/// API.md: "seen by every node's reads, searches and checkouts within 2 seconds".
const FRESH: Duration = Duration::from_secs(2);

/// Waits until `check` holds on each of `nodes`, failing after [`FRESH`] from `since`.
async fn on_every<F, Fut>(nodes: &[usize], since: Instant, what: &str, check: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for &i in nodes {
        let left = FRESH.saturating_sub(since.elapsed());
        eventually(left, &format!("node {i} to show {what}"), || check(i)).await;
    }
    eprintln!("{what}: on nodes {nodes:?} after {:?}", since.elapsed());
}

async fn product(cluster: &Cluster, i: usize, query: &str) -> Value {
    cluster.get(i, &format!("/v1/products/prod-cat-1{query}")).await
}

async fn found(cluster: &Cluster, i: usize, q: &str) -> Vec<String> {
    let page = cluster.get(i, &format!("/v1/products?q={q}")).await;
    page["items"].as_array().unwrap().iter().map(|p| p["sku"].as_str().unwrap().into()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_change_on_one_node_is_read_searched_and_charged_on_the_others() {
    let _serial = SERIAL.lock().await;
    let owned = Cluster::start(3, 3).await;
    let cluster = &owned;

    // Catalog version 1: the product, made through node 0.
    let made = Instant::now();
    cluster.create_product(0, "CAT-1", 10).await;
    on_every(&[1, 2], made, "the new product", |i| async move {
        cluster.try_get(i, "/v1/products/prod-cat-1").await.is_ok()
    })
    .await;

    // Version 2: renamed and repriced through node 0.
    let changed = Instant::now();
    let (status, _) = cluster
        .admin_call(
            0,
            Method::PATCH,
            "/v1/admin/products/prod-cat-1",
            json!({"name": "Aurora lantern", "price": {"amount": "7.50", "currency": "USD"}}),
        )
        .await;
    assert_eq!(status, 200);
    on_every(&[1, 2], changed, "the new price and name", |i| async move {
        let p = product(cluster, i, "").await;
        p["price"]["amount"] == "7.50" && p["name"] == "Aurora lantern"
    })
    .await;
    on_every(&[1, 2], changed, "the product under its new name", |i| async move {
        found(cluster, i, "aurora").await == ["CAT-1"]
    })
    .await;
    for i in 1..3 {
        assert!(found(cluster, i, "item").await.is_empty(), "node {i} finds the old name");
    }

    // Version 3: FX rates through node 1.
    let rated = Instant::now();
    let (status, _) = cluster
        .admin_call(
            1,
            Method::PUT,
            "/v1/admin/fx-rates",
            json!({"base": "USD", "rates": {"EUR": "0.5", "GBP": "0.8"}}),
        )
        .await;
    assert_eq!(status, 200);
    on_every(&[0, 2], rated, "the new EUR rate", |i| async move {
        product(cluster, i, "?currency=EUR").await["price"]["amount"] == "3.75"
    })
    .await;

    // A checkout on node 2 charges version 2's price at version 3's rate, and says so.
    let (_, token) = cluster.customers(2, "catalog", 1).await.remove(0);
    let answer = cluster
        .http
        .post(format!("{}/v1/checkout", cluster.nodes[2].url()))
        .bearer_auth(&token)
        .header("Idempotency-Key", "catalog-checkout-1")
        .json(&json!({"payment_token": "tok_visa", "currency": "EUR",
            "items": [{"sku": "CAT-1", "qty": 2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let placed: Value = answer.json().await.unwrap();
    assert_eq!(placed["total"], json!({"amount": "7.50", "currency": "EUR"}));
    let order_id = placed["order_id"].as_str().unwrap();
    let order = cluster.get(0, &format!("/v1/orders/{order_id}")).await;
    assert_eq!(order["items"][0]["unit_price"], json!({"amount": "3.75", "currency": "EUR"}));
    assert_eq!(order["items"][0]["product_version"], 2);
    assert_eq!(order["catalog_version"], 3);
    assert_eq!(order["fx_rate"], "0.5");

    // Version 4 while node 2 is down: it has applied it by the time it answers at all.
    cluster.kill(2);
    let (status, _) = cluster
        .admin_call(
            0,
            Method::PATCH,
            "/v1/admin/products/prod-cat-1",
            json!({"name": "Borealis lantern", "price": {"amount": "9.00", "currency": "USD"}}),
        )
        .await;
    assert_eq!(status, 200);
    cluster.start_node(2);
    cluster.wait_ready(2).await;
    let p = product(cluster, 2, "").await;
    assert_eq!((&p["name"], &p["price"]["amount"]), (&json!("Borealis lantern"), &json!("9.00")));
    assert_eq!(found(cluster, 2, "borealis").await, ["CAT-1"]);
    assert!(found(cluster, 2, "aurora").await.is_empty());
    owned.finish().await;
}
