//! The catalog's change feed: every product and FX change is one event of the shared store's
//! `catalog` stream, whose sequence is the catalog version. A write appends at the version its
//! node has applied (a conflict means another node wrote first: catch up and decide again), with
//! the product records and the version in the same transaction, so a starting node loads the
//! tables and replays only the events after the version they record. Every node applies the
//! stream in order, polling it every [`FOLLOW_EVERY`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use storefront_actors::{Currency, FxRates, StockUpdate};
use storefront_storage::{AppendRequest, KeyedWrite, StorageError, Store, Table, scan_all};
use tokio::sync::broadcast;

use super::{Applied, Catalog, CatalogError, Product, backend};

/// The journal stream of catalog changes.
const STREAM: &str = "catalog";
/// `Settings` key of the catalog version the `Products` table and the FX rates are at.
const VERSION_KEY: &[u8] = b"catalog_version";
/// `Settings` key of the FX rates.
const FX_KEY: &[u8] = b"fx_rates";
/// Products one event carries at most (a larger creation is several events).
pub(super) const MAX_PRODUCTS_PER_CHANGE: usize = 500;
/// Events one read of the stream takes.
const PAGE: usize = 16;
/// How often a node reads the stream for other nodes' changes: the bound, with the time to
/// apply, on how long a change takes to reach every node.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(100);
/// How often a node writes the stock states it changed to a shared index: each write there is a
/// delete task, which Quickwit asks to keep few.
const SHARED_STOCK_EVERY: Duration = Duration::from_secs(1);

/// One catalog change: an event of the stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Change {
    /// Products created or replaced whole.
    Products(Vec<Product>),
    /// New FX rates.
    FxRates(FxRates),
}

/// The catalog as the tables record it, at the version they record (the events after it are
/// still to apply).
pub(super) async fn load(store: &dyn Store, base: Currency) -> Result<Applied, CatalogError> {
    let version = match store.get(Table::Settings, VERSION_KEY).await.map_err(backend)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(backend)?,
        None => 0,
    };
    let fx = match store.get(Table::Settings, FX_KEY).await.map_err(backend)? {
        Some(bytes) => match serde_json::from_slice::<FxRates>(&bytes).map_err(backend)? {
            rates if rates.base() == base => rates,
            rates => {
                tracing::warn!(stored = %rates.base(), %base, "stored FX rates are for another base; using defaults");
                crate::fx::default_rates(base).map_err(backend)?
            }
        },
        None => crate::fx::default_rates(base).map_err(backend)?,
    };
    let mut products = HashMap::new();
    for (_, value) in scan_all(store, Table::Products).await.map_err(backend)? {
        let product: Product = serde_json::from_slice(&value).map_err(backend)?;
        products.insert(product.product_id.clone(), Arc::new(product));
    }
    Ok(Applied { version, products, fx: Arc::new(fx), in_stock: Default::default() })
}

impl Change {
    /// The change as made at `version`: products stamped with it.
    fn at(mut self, version: u64) -> Self {
        if let Change::Products(products) = &mut self {
            for product in products {
                product.version = version;
            }
        }
        self
    }

    /// The table writes that land with the event.
    fn puts(&self, version: u64) -> Result<Vec<KeyedWrite>, CatalogError> {
        let put = |table, key: &[u8], value: Vec<u8>| KeyedWrite {
            table,
            key: key.to_vec(),
            value: Some(value),
        };
        let mut puts = vec![put(Table::Settings, VERSION_KEY, version.to_string().into_bytes())];
        match self {
            Change::Products(products) => {
                for product in products {
                    let value = serde_json::to_vec(product).map_err(backend)?;
                    puts.push(put(Table::Products, product.product_id.as_bytes(), value));
                }
            }
            Change::FxRates(rates) => {
                puts.push(put(
                    Table::Settings,
                    FX_KEY,
                    serde_json::to_vec(rates).map_err(backend)?,
                ));
            }
        }
        Ok(puts)
    }
}

impl Catalog {
    /// Appends the change `decide` makes of the catalog as this node has applied it, and applies
    /// it here before returning its version. `decide` runs again, on the newer catalog, when
    /// another node wrote first.
    pub(super) async fn write(
        &self,
        decide: impl Fn(&Applied) -> Result<Change, CatalogError>,
    ) -> Result<u64, CatalogError> {
        let _one_writer = self.writes.lock().await;
        loop {
            self.catch_up().await?;
            let (version, change) = {
                let applied = self.read();
                let version = applied.version + 1;
                (version, decide(&applied)?.at(version))
            };
            let request = AppendRequest {
                stream: STREAM.to_owned(),
                expected_seq: version - 1,
                events: vec![serde_json::to_vec(&change).map_err(backend)?],
                outbox: Vec::new(),
                puts: change.puts(version)?,
                fence: None,
            };
            match self.store.append(request).await {
                Ok(_) => {
                    self.catch_up().await?;
                    if self.index.shared() {
                        self.index_shared(&change).await;
                    }
                    return Ok(version);
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(backend(e)),
            }
        }
    }

    /// Writes a change this node made to the shared index (the nodes that apply it after do
    /// not). A failure is logged: the change is stored, and the index lacks it until it is
    /// rebuilt.
    async fn index_shared(&self, change: &Change) {
        let Change::Products(products) = change else { return };
        let _one_writer = self.index_writes.lock().await;
        let docs = {
            let applied = self.read();
            products.iter().map(|p| applied.indexed(p)).collect()
        };
        if let Err(e) = self.index.upsert(docs).await {
            tracing::warn!(error = %e, "the shared search index missed a catalog change");
        }
    }

    /// Applies every event of the stream this node has not applied yet, in order: to memory and
    /// to the search index (one commit per page).
    pub async fn catch_up(&self) -> Result<(), CatalogError> {
        let _one_applier = self.applying.lock().await;
        loop {
            let from = self.version() + 1;
            let events = self.store.read_events(STREAM, from, PAGE).await.map_err(backend)?;
            let Some(last) = events.last().map(|e| e.seq) else { return Ok(()) };
            let mut changed: HashMap<String, Arc<Product>> = HashMap::new();
            let mut fx = None;
            for (expected, event) in (from..).zip(&events) {
                if event.seq != expected {
                    return Err(CatalogError::Backend(format!(
                        "catalog stream skips from {} to {}",
                        expected - 1,
                        event.seq
                    )));
                }
                match serde_json::from_slice::<Change>(&event.payload).map_err(backend)? {
                    Change::Products(products) => {
                        for product in products {
                            changed.insert(product.product_id.clone(), Arc::new(product));
                        }
                    }
                    Change::FxRates(rates) => fx = Some(Arc::new(rates)),
                }
            }
            // A shared index is written by the node that made each change, not here.
            let _one_writer =
                if self.index.shared() { None } else { Some(self.index_writes.lock().await) };
            if !self.index.shared() {
                let docs = {
                    let applied = self.read();
                    changed.values().map(|p| applied.indexed(p)).collect()
                };
                self.index.upsert(docs).await?;
            }
            let mut applied = self.applied.write().unwrap_or_else(|e| e.into_inner());
            applied.products.extend(changed);
            if let Some(fx) = fx.filter(|fx| fx.base() == self.base) {
                applied.fx = fx;
            }
            applied.version = last;
            tracing::debug!(version = last, "catalog applied");
        }
    }

    /// Keeps the index's stock states in step with the SKU actors (this node's and its
    /// peers', through the node's stock feed, subscribed to before the catalog opened so no
    /// change falls between the stored states it loaded and the first update): a product whose SKU runs out or comes back is indexed again,
    /// at most every [`FOLLOW_EVERY`] (a shared index every [`SHARED_STOCK_EVERY`]). Runs
    /// until the task is dropped.
    pub async fn follow_stock(self, mut updates: broadcast::Receiver<StockUpdate>) {
        let mut flipped: HashSet<String> = HashSet::new();
        let period = if self.index.shared() { SHARED_STOCK_EVERY } else { FOLLOW_EVERY };
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                update = updates.recv() => match update {
                    Ok(update) => {
                        let id = super::product_id_of(&update.sku);
                        let in_stock = update.levels.available > 0;
                        let mut applied = self.applied.write().unwrap_or_else(|e| e.into_inner());
                        let changed = if in_stock {
                            applied.in_stock.insert(id.clone())
                        } else {
                            applied.in_stock.remove(&id)
                        };
                        // A shared index hears of a SKU from the node that holds it.
                        if changed && !(update.from_peer && self.index.shared()) {
                            flipped.insert(id);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(lost)) => {
                        tracing::warn!(lost, "the search index missed stock changes; reading them from the store");
                        match super::stock_states(&*self.store).await {
                            Ok(states) => flipped.extend(self.restock_states(&states)),
                            Err(e) => tracing::warn!(error = %e, "cannot read the stock states; the index may show stale stock until a restart"),
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = every.tick(), if !flipped.is_empty() => {
                    let _one_writer = self.index_writes.lock().await;
                    let docs: Vec<_> = {
                        let applied = self.read();
                        flipped.drain().filter_map(|id| applied.products.get(&id).map(|p| applied.indexed(p))).collect()
                    };
                    if let Err(e) = self.index.upsert(docs).await {
                        tracing::warn!(error = %e, "cannot index stock changes");
                    }
                }
            }
        }
    }

    /// Makes the stock states those of `states` (the store's, every SKU's); the products whose
    /// state changed.
    fn restock_states(&self, states: &HashMap<Vec<u8>, bool>) -> Vec<String> {
        let stocked: HashSet<String> = super::stocked_ids(states).collect();
        let mut applied = self.applied.write().unwrap_or_else(|e| e.into_inner());
        let changed = applied.in_stock.symmetric_difference(&stocked).cloned().collect();
        applied.in_stock = stocked;
        changed
    }

    /// Applies other nodes' changes as they come, until the task is dropped.
    pub async fn follow(self) {
        let mut every = tokio::time::interval(FOLLOW_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = self.catch_up().await {
                tracing::warn!(error = %e, "cannot apply the catalog stream; retrying");
            }
        }
    }
}
