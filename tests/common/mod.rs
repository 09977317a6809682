//! Shared by the integration tests (a `mod.rs` so Cargo does not build it as a test of its own).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use storefront_actors::order::{OrderLine, PlaceOrder};
use storefront_actors::{
    Clock, Currency, EntitySettings, Money, Quantity, SimulatedGateway, Sku, StockCommand,
};
use storefront_cluster::{Regions, RegionsConfig};
use storefront_storage::embedded::EmbeddedStore;
use storefront_storage::{
    AppendRequest, Lease, OutboxEntry, Snapshot, StorageError, Store, StoredEvent, Table,
};

/// A node's core (store and regions) on a data dir, as `storefront serve` runs it.
pub struct Node {
    pub regions: Regions,
    pub store: Arc<EmbeddedStore>,
    pub gateway: Arc<SimulatedGateway>,
}

/// Quick retries, and snapshots often enough that recovery exercises them.
pub fn fast_settings() -> EntitySettings {
    EntitySettings {
        gateway_retry_base: Duration::from_millis(1),
        snapshot_every: 3,
        ..EntitySettings::default()
    }
}

impl Node {
    pub async fn start(dir: &Path, settings: EntitySettings) -> Node {
        Self::start_with_clock(dir, settings, Clock::system()).await
    }

    pub async fn start_with_clock(dir: &Path, settings: EntitySettings, clock: Clock) -> Node {
        Self::start_with(dir, settings, clock, |store| store).await
    }

    /// A node whose entities see the store as `wrap` makes it.
    pub async fn start_with(
        dir: &Path,
        settings: EntitySettings,
        clock: Clock,
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> Node {
        // Logs show with `RUST_LOG=...` (for example `RUST_LOG=warn`); quiet otherwise.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
        let store = Arc::new(EmbeddedStore::open(dir).await.expect("open store"));
        let gateway = Arc::new(SimulatedGateway::new());
        let config = RegionsConfig {
            shard_count: 64,
            settings,
            call_timeout: Duration::from_secs(30),
            ..RegionsConfig::default()
        };
        let regions = Regions::start(wrap(store.clone()), gateway.clone(), clock, config)
            .await
            .expect("start regions");
        regions.resume_open_orders().await.expect("resume open orders");
        Node { regions, store, gateway }
    }

    /// Stops every entity and waits until nothing holds the store, so the data dir can be
    /// opened again.
    pub async fn stop(self) {
        self.regions.shutdown(Duration::from_secs(10)).await;
        drop(self.regions);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.store) > 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the store is still held after shutdown"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn stock_sku(&self, sku: &str, qty: u64) {
        self.regions
            .stock(sku, StockCommand::Restock { restock_id: format!("{sku}/initial"), qty })
            .await
            .expect("restock");
    }
}

pub fn usd(amount: &str) -> Money {
    Money::parse(amount, Currency::USD).expect("valid amount")
}

pub fn order(
    order_id: &str,
    user_id: &str,
    token: &str,
    lines: &[(&str, u32, &str)],
) -> PlaceOrder {
    PlaceOrder {
        order_id: order_id.to_owned(),
        user_id: user_id.to_owned(),
        lines: lines
            .iter()
            .map(|(sku, qty, price)| OrderLine {
                sku: Sku::parse(sku).expect("valid sku"),
                qty: Quantity::new(*qty).expect("valid qty"),
                unit_price: usd(price),
                name: format!("Product {sku}"),
                product_version: 0,
            })
            .collect(),
        currency: Currency::USD,
        fx_rate: None,
        payment_token: token.to_owned(),
        shipping_address: None,
        email: format!("{user_id}@example.com"),
        catalog_version: 0,
    }
}

/// Waits (up to `limit`) until `check` holds, checking after each `step`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The levels a SKU with these counts reports.
pub fn levels(on_hand: u64, reserved: u64, sold: u64) -> storefront_actors::StockLevels {
    storefront_actors::StockLevels { on_hand, reserved, available: on_hand - reserved, sold }
}

/// The events of `topic` in the node's outbox, read back as CloudEvents, oldest first.
pub async fn outbox_events(node: &Node, topic: &str) -> Vec<storefront_events::CloudEvent> {
    let outbox = storefront_storage::Store::read_outbox(&*node.store, 0, usize::MAX).await.unwrap();
    outbox
        .iter()
        .filter(|e| e.record.topic == topic)
        .map(|e| {
            let event = storefront_events::CloudEvent::parse(&e.record.payload).unwrap();
            assert_eq!(event.id, e.record.event_id, "the record's id is the event's");
            event
        })
        .collect()
}

/// How many outbox records of `topic` the node's store holds.
pub async fn outbox_count(node: &Node, topic: &str) -> usize {
    let outbox = storefront_storage::Store::read_outbox(&*node.store, 0, usize::MAX).await.unwrap();
    outbox.iter().filter(|e| e.record.topic == topic).count()
}

/// The store, tapped: it records the stream of every append, in order; and an append to the
/// stream `lost` names (if any) waits until its watch says so, and then fails: a write in flight
/// that never lands (its node killed, its lease lost).
#[derive(Debug)]
pub struct Tapped {
    pub inner: Arc<dyn Store>,
    pub lost: Option<(String, tokio::sync::watch::Receiver<bool>)>,
    pub appends: Arc<std::sync::Mutex<Vec<String>>>,
}

/// How many of the `appends` a [`Tapped`] store recorded were to `stream`.
pub fn appends_to(appends: &std::sync::Mutex<Vec<String>>, stream: &str) -> usize {
    appends.lock().unwrap().iter().filter(|s| *s == stream).count()
}

#[async_trait::async_trait]
impl Store for Tapped {
    async fn append(&self, request: AppendRequest) -> Result<u64, StorageError> {
        self.appends.lock().unwrap().push(request.stream.clone());
        match &self.lost {
            Some((stream, lose)) if *stream == request.stream => {
                let _ = lose.clone().wait_for(|lose| *lose).await;
                Err(StorageError::Backend("the write was lost".into()))
            }
            _ => self.inner.append(request).await,
        }
    }

    async fn read_events(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        self.inner.read_events(stream, from_seq, limit).await
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<(), StorageError> {
        self.inner.save_snapshot(stream, snapshot).await
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StorageError> {
        self.inner.load_snapshot(stream).await
    }

    async fn read_outbox(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        self.inner.read_outbox(after, limit).await
    }

    async fn trim_outbox(&self, up_to: u64) -> Result<(), StorageError> {
        self.inner.trim_outbox(up_to).await
    }

    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(table, key).await
    }

    async fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.inner.put(table, key, value).await
    }

    async fn delete(&self, table: Table, key: &[u8]) -> Result<(), StorageError> {
        self.inner.delete(table, key).await
    }

    async fn compare_and_swap(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StorageError> {
        self.inner.compare_and_swap(table, key, expected, new).await
    }

    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        self.inner.scan(table, prefix, start_after, limit).await
    }

    async fn leases(&self) -> Result<Vec<Lease>, StorageError> {
        self.inner.leases().await
    }

    async fn set_lease(
        &self,
        shard: u32,
        expected_epoch: u64,
        owner: Option<&str>,
    ) -> Result<bool, StorageError> {
        self.inner.set_lease(shard, expected_epoch, owner).await
    }
}
