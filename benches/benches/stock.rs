//! One hot SKU's reservations: the decision core in memory, and durable through the SKU region,
//! its actor and the embedded store with group commit (one fsync per group, every reservation
//! acknowledged only after its fsync).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

/// The allocator the `storefront` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use storefront_actors::sku::SkuStockState;
use storefront_actors::{EntitySettings, StockCommand};
use storefront_benches::BenchNode;

/// Reservations per measured burst.
const BURST: u64 = 100_000;
/// Concurrent callers (think HTTP requests in flight) during a burst.
const CALLERS: u64 = 2_000;

fn reserve(id: u64) -> StockCommand {
    StockCommand::Reserve {
        reservation_id: format!("r-{id}"),
        order_id: format!("o-{id}"),
        qty: 1,
        ttl_ms: 3_600_000,
    }
}

fn in_memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("stock/in_memory");
    group.throughput(Throughput::Elements(BURST));
    let commands: Vec<StockCommand> = (0..BURST).map(reserve).collect();
    group.bench_function("reserve_one_unit", |b| {
        b.iter_batched(
            || {
                let mut state = SkuStockState::default();
                let restock =
                    StockCommand::Restock { restock_id: "initial".into(), qty: u64::MAX / 2 };
                state.execute("HOT", &restock, 0).unwrap();
                state
            },
            |mut state| {
                for command in &commands {
                    state.execute("HOT", command, 1).unwrap();
                }
                state
            },
            criterion::BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn durable(c: &mut Criterion) {
    let node =
        BenchNode::start(EntitySettings { snapshot_every: 100_000, ..EntitySettings::default() });
    let (runtime, regions) = (&node.runtime, node.regions.clone());
    let mut group = c.benchmark_group("stock/durable");
    group.throughput(Throughput::Elements(BURST));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    let mut round = 0u64;
    group.bench_function("hot_sku_reserve_one_unit", |b| {
        b.to_async(runtime).iter_custom(|iters| {
            let regions = regions.clone();
            round += 1;
            let first_round = round;
            async move {
                let mut elapsed = Duration::ZERO;
                for i in 0..iters {
                    // A fresh SKU per burst keeps each actor's state the size of one sale.
                    let sku = format!("HOT-{first_round}-{i}");
                    regions
                        .stock(
                            &sku,
                            StockCommand::Restock { restock_id: "initial".into(), qty: BURST },
                        )
                        .await
                        .unwrap();
                    let start = Instant::now();
                    let callers: Vec<_> = (0..CALLERS)
                        .map(|caller| {
                            let (regions, sku) = (regions.clone(), sku.clone());
                            tokio::spawn(async move {
                                for n in (caller..BURST).step_by(CALLERS as usize) {
                                    regions.stock(&sku, reserve(n)).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for caller in callers {
                        caller.await.unwrap();
                    }
                    elapsed += start.elapsed();
                    let levels = regions.stock_levels(&sku).await.unwrap();
                    assert_eq!(levels.available, 0, "every unit reserved exactly once");
                }
                elapsed
            }
        });
    });
    group.finish();
}

criterion_group!(benches, in_memory, durable);
criterion_main!(benches);
