//! The demo shop seeded on a node's first start (unless `--no-demo-data`): the deterministic demo
//! catalog and its starting stock. A marker in the `settings` table makes it happen once per
//! store; a shop that already has products is never seeded.

use std::sync::Arc;

use futures::StreamExt;

use storefront_actors::{DomainError, StockCommand};
use storefront_cluster::Regions;
use storefront_storage::{Store, Table};

use crate::catalog::{Catalog, CatalogError, demo};

const MARKER: &[u8] = b"demo_seeded";

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The catalog refused a product or failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Stock could not be set or the store failed.
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// Seeds the demo shop unless this store was seeded (the marker) or has products of its own.
/// A seeding cut short by a crash is finished at the next start: existing demo products are kept,
/// missing ones created, and every demo SKU's stock set (idempotent by its set id). Returns the
/// products created.
pub async fn demo_shop(
    store: &Arc<dyn Store>,
    catalog: &Catalog,
    regions: &Regions,
    products: usize,
) -> Result<usize, SeedError> {
    if store.get(Table::Settings, MARKER).await.map_err(DomainError::from)?.is_some() {
        return Ok(0);
    }
    let demo = demo::products(products, catalog.base_currency());
    let mut missing = Vec::new();
    for product in &demo {
        if catalog.by_sku(&product.sku).await?.is_none() {
            missing.push(product.clone());
        }
    }
    if missing.len() == demo.len() && !catalog.is_empty() {
        // A shop with products of its own, never seeded: leave it so.
        store.put(Table::Settings, MARKER, b"0").await.map_err(DomainError::from)?;
        return Ok(0);
    }
    let created = catalog.create_many(missing).await?.len();
    let stock = demo.iter().enumerate().map(|(i, product)| {
        let set = StockCommand::Set {
            set_id: format!("demo-seed/{}", product.sku),
            on_hand: demo::initial_stock(i),
        };
        regions.stock(product.sku.as_str(), set)
    });
    // A few hundred SKU actors at a time: a large demo catalog starts as many.
    let mut stock = futures::stream::iter(stock).buffer_unordered(256);
    while let Some(levels) = stock.next().await {
        levels?;
    }
    store.put(Table::Settings, MARKER, b"1").await.map_err(DomainError::from)?;
    tracing::info!(products = created, "demo catalog seeded");
    Ok(created)
}
