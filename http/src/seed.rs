//! The demo shop seeded on a node's first start (unless `--no-demo-data`): the deterministic demo
//! catalog and its starting stock. A marker in the `settings` table makes it happen once per
//! store; a shop that already has products is never seeded.

use std::sync::Arc;

use storefront_actors::{DomainError, StockCommand};
use storefront_cluster::Regions;
use storefront_storage::{Store, Table};

use crate::catalog::{Catalog, CatalogError, demo};

/// Products in the demo catalog.
pub const DEMO_PRODUCTS: usize = 1200;

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

/// Seeds the demo shop if this store never was and has no products. Returns products created.
pub async fn demo_shop(
    store: &Arc<dyn Store>,
    catalog: &Catalog,
    regions: &Regions,
) -> Result<usize, SeedError> {
    if store.get(Table::Settings, MARKER).await.map_err(DomainError::from)?.is_some()
        || !catalog.is_empty()
    {
        return Ok(0);
    }
    let products =
        catalog.create_many(demo::products(DEMO_PRODUCTS, catalog.base_currency())).await?;
    let stock = products.iter().enumerate().map(|(i, product)| {
        let set = StockCommand::Set {
            set_id: format!("demo-seed/{}", product.sku),
            on_hand: demo::initial_stock(i),
        };
        regions.stock(product.sku.as_str(), set)
    });
    for levels in futures::future::join_all(stock).await {
        levels?;
    }
    store.put(Table::Settings, MARKER, b"1").await.map_err(DomainError::from)?;
    tracing::info!(products = products.len(), "demo catalog seeded");
    Ok(products.len())
}
