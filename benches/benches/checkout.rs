//! The checkout saga end to end in process: order actor, SKU actors over 10,000 SKUs, the
//! simulated gateway, and the embedded store with group commit. Each checkout is durable at
//! every step (placed, reserved, authorized, committed, captured and confirmed).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

/// The allocator the `storefront` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rust_decimal::Decimal;
use storefront_actors::order::{OrderLine, OrderStatus, PlaceOrder};
use storefront_actors::{Currency, EntitySettings, Money, Quantity, Sku, StockCommand};
use storefront_benches::BenchNode;
use storefront_cluster::Checkout;

const SKUS: u64 = 10_000;
/// Checkouts per measured burst.
const BURST: u64 = 20_000;
/// Checkouts in flight at once.
const CALLERS: u64 = 2_000;

fn place(round: u64, n: u64) -> PlaceOrder {
    let sku = format!("SKU-{:05}", (n * 7919) % SKUS);
    PlaceOrder {
        order_id: format!("bench-{round}-{n}"),
        user_id: format!("user-{}", n % 5_000),
        lines: vec![OrderLine {
            sku: Sku::parse(&sku).unwrap(),
            qty: Quantity::new(1).unwrap(),
            unit_price: Money::parse(&Decimal::new(1999, 2).to_string(), Currency::USD).unwrap(),
            name: "Bench product".into(),
            product_version: 0,
        }],
        currency: Currency::USD,
        fx_rate: None,
        payment_token: "tok_visa".into(),
        shipping_address: None,
        email: format!("user-{}@example.com", n % 5_000),
        catalog_version: 0,
    }
}

fn checkout(c: &mut Criterion) {
    let node = BenchNode::start(EntitySettings {
        passivate_after: Duration::from_secs(5),
        ..EntitySettings::default()
    });
    let (runtime, regions) = (&node.runtime, node.regions.clone());
    runtime.block_on(async {
        let stocking: Vec<_> = (0..SKUS)
            .map(|k| {
                let regions = regions.clone();
                tokio::spawn(async move {
                    let restock =
                        StockCommand::Restock { restock_id: "initial".into(), qty: 1_000_000 };
                    regions.stock(&format!("SKU-{k:05}"), restock).await.unwrap();
                })
            })
            .collect();
        for task in stocking {
            task.await.unwrap();
        }
    });
    let mut group = c.benchmark_group("checkout");
    group.throughput(Throughput::Elements(BURST));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    // Every burst places new orders: a repeated order id would only join the finished order.
    let rounds = Arc::new(std::sync::atomic::AtomicU64::new(0));
    group.bench_function("saga_confirmed_over_10k_skus", |b| {
        b.to_async(runtime).iter_custom(|iters| {
            let (regions, rounds) = (regions.clone(), rounds.clone());
            async move {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let round = rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let start = Instant::now();
                    let callers: Vec<_> = (0..CALLERS)
                        .map(|caller| {
                            let regions = regions.clone();
                            tokio::spawn(async move {
                                for n in (caller..BURST).step_by(CALLERS as usize) {
                                    let outcome = regions
                                        .checkout(place(round, n), Duration::from_secs(60))
                                        .await
                                        .unwrap();
                                    let Checkout::Ended(view) = outcome else {
                                        panic!("checkout still pending")
                                    };
                                    assert_eq!(view.status, OrderStatus::Confirmed);
                                }
                            })
                        })
                        .collect();
                    for caller in callers {
                        caller.await.unwrap();
                    }
                    elapsed += start.elapsed();
                }
                elapsed
            }
        });
    });
    group.finish();
}

criterion_group!(benches, checkout);
criterion_main!(benches);
