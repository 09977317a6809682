//! `relay-throughput`: how fast the outbox relay empties a full outbox into the local broker.
//!
//! It fills an embedded store's outbox with `--events` `order.confirmed` events (in appends of
//! `--per-append`, as checkouts write them), declares the notification queue (so every message
//! is routed to a quorum queue, as in production), starts the relay, and times it from start
//! until its recorded position is the last record: persistent messages, publisher confirms.
//! Give it a virtual host of its own (`benches/load/events.sh` makes one).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use storefront_events::event::{Money, OrderData, OrderItem};
use storefront_events::relay::{Always, Relay, RelayConfig};
use storefront_events::{CloudEvent, EventData};
use storefront_storage::embedded::EmbeddedStore;
use storefront_storage::{AppendRequest, Store, Table};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// The broker, with a virtual host of the benchmark's own.
    #[arg(long)]
    amqp: String,
    /// Events in the outbox.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events per append.
    #[arg(long, default_value_t = 100)]
    per_append: usize,
    /// Records the relay publishes before it awaits their confirms.
    #[arg(long, default_value_t = 4096)]
    batch: usize,
}

fn order(i: usize) -> CloudEvent {
    let usd = |a: &str| Money { amount: a.into(), currency: "USD".into() };
    CloudEvent::new(
        1_700_000_000_000,
        EventData::OrderConfirmed(OrderData {
            order_id: format!("ord-{i:08}"),
            user_id: format!("user-{i:08}"),
            email: format!("shopper{i}@example.com"),
            status: "confirmed".into(),
            items: vec![OrderItem {
                sku: "HOT-1".into(),
                name: "The hot product".into(),
                qty: 1,
                unit_price: usd("19.99"),
                line_total: usd("19.99"),
            }],
            total: usd("19.99"),
            shipping_address: Some(serde_json::json!({
                "name": "A Shopper", "line1": "1 Main St", "city": "Springfield",
                "postal_code": "12345", "country": "US", "phone": "+15005550006"
            })),
            refund: None,
        }),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(dir.path()).await?);
    for (n, chunk) in (0..args.events).collect::<Vec<_>>().chunks(args.per_append).enumerate() {
        store
            .append(AppendRequest {
                stream: format!("bench/{n}"),
                expected_seq: 0,
                events: vec![b"e".to_vec()],
                outbox: chunk.iter().map(|&i| order(i).into_outbox()).collect::<Result<_, _>>()?,
                puts: vec![],
                fence: None,
            })
            .await?;
    }
    let last =
        store.read_outbox(0, usize::MAX).await?.last().map(|e| e.position).context("empty")?;
    let connection = storefront_events::amqp::connect(&args.amqp, "relay-throughput").await?;
    let channel = connection.create_channel().await?;
    storefront_events::notify::declare(&channel).await?;
    let config = RelayConfig { batch: args.batch, ..RelayConfig::new(&args.amqp) };
    let started = Instant::now();
    let relay = Relay::start(store.clone(), Arc::new(Always), config);
    loop {
        let recorded = store.get(Table::RelayOffsets, b"outbox").await?;
        if recorded.is_some_and(|b| b.as_slice() == last.to_be_bytes()) {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "not done in 10 minutes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    relay.stop().await;
    let rate = args.events as f64 / took.as_secs_f64();
    writeln!(
        std::io::stdout(),
        "relay: {} events published and confirmed in {:.2} s = {:.0} events/s",
        args.events,
        took.as_secs_f64(),
        rate
    )?;
    Ok(())
}
