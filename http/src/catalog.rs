//! The catalog: products as plain stored records (SKU unique), with an embedded full-text index
//! (tantivy) kept in step with every product write and rebuilt from the store if it is not.
//!
//! Owns product records, their validation, search and the demo catalog. Does not own stock (the
//! SKU actors) or prices in other currencies (converted at the edge with the FX rates).

pub mod demo;
mod search;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use storefront_actors::{Currency, Money, Sku};
use storefront_storage::{Store, Table};

use search::SearchIndex;

/// Most products one page returns.
pub const MAX_PAGE: usize = 100;
/// How deep into one result list pages may go (the index ranks `offset + limit` hits per page).
pub const MAX_OFFSET: usize = 100_000;
/// The highest price a product may have, in units of the base currency.
pub const MAX_PRICE_UNITS: i64 = 1_000_000_000;

/// A product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Stable id, derived from the SKU.
    pub product_id: String,
    /// The SKU, unique.
    pub sku: Sku,
    /// Name, 1 to 200 characters.
    pub name: String,
    /// Description, at most 5,000 characters.
    pub description: String,
    /// Category slug: 1 to 64 of `a-z 0-9 -`.
    pub category: String,
    /// Price in the shop's base currency.
    pub price: Money,
    /// Units one customer may buy across their orders (not failed or cancelled); no limit if
    /// `None`. The SKU's actor enforces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_customer: Option<u32>,
}

/// A product to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    /// The SKU.
    pub sku: Sku,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Category slug.
    pub category: String,
    /// Price in the base currency.
    pub price: Money,
    /// Units one customer may buy, if limited.
    pub max_per_customer: Option<u32>,
}

/// Changes to a product; `None` keeps a field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductPatch {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New category.
    pub category: Option<String>,
    /// New price.
    pub price: Option<Money>,
    /// New purchase limit (`Some(None)` lifts it).
    pub max_per_customer: Option<Option<u32>>,
}

/// One page of products.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The products, best match first.
    pub items: Vec<Arc<Product>>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<String>,
}

/// Why a catalog operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// Another product has this SKU.
    #[error("sku {0} already exists")]
    SkuExists(String),
    /// No such product.
    #[error("product {0} not found")]
    NotFound(String),
    /// A field does not validate.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The store or the index failed.
    #[error("catalog backend failed: {0}")]
    Backend(String),
}

fn backend(err: impl std::fmt::Display) -> CatalogError {
    CatalogError::Backend(err.to_string())
}

fn invalid(field: &'static str, reason: impl Into<String>) -> CatalogError {
    CatalogError::Invalid { field, reason: reason.into() }
}

/// The product id of a SKU.
pub fn product_id(sku: &Sku) -> String {
    format!("prod-{}", sku.as_str().to_ascii_lowercase())
}

/// The catalog of one shop.
#[derive(Clone)]
pub struct Catalog {
    store: Arc<dyn Store>,
    index: Arc<SearchIndex>,
    base: Currency,
    /// Every product this node has read or written, by id: product reads are the hottest read
    /// of a shop and products change rarely. (With several nodes writing one shared store, a
    /// node learns of another's writes only through the store; Step 4 owns that.)
    cache: Arc<RwLock<HashMap<String, Arc<Product>>>>,
    /// Product writes one at a time, so the store, the index and the cache end in one order.
    writes: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("base", &self.base).finish()
    }
}

impl Catalog {
    /// Opens the catalog over `store` with its index under `index_dir`, rebuilding the index from
    /// the store when it does not hold exactly the stored products.
    pub async fn open(
        store: Arc<dyn Store>,
        index_dir: &Path,
        base: Currency,
    ) -> Result<Self, CatalogError> {
        let index = Arc::new(SearchIndex::open(index_dir)?);
        let catalog = Self { store, index, base, cache: Arc::default(), writes: Arc::default() };
        let products = catalog.all().await?;
        for product in &products {
            catalog.remember(product);
        }
        if catalog.index.count()? != products.len() as u64 {
            tracing::info!(products = products.len(), "rebuilding the search index from the store");
            let index = catalog.index.clone();
            tokio::task::spawn_blocking(move || index.rebuild(&products))
                .await
                .map_err(backend)??;
        }
        Ok(catalog)
    }

    /// Products this node knows (all of them, on a single node).
    pub fn len(&self) -> usize {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the catalog has no products.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shop's base currency.
    pub fn base_currency(&self) -> Currency {
        self.base
    }

    /// Creates a product; its SKU must be new.
    pub async fn create(&self, new: NewProduct) -> Result<Product, CatalogError> {
        let _one_writer = self.writes.lock().await;
        let product = self.claim(new).await?;
        self.save(std::slice::from_ref(&product)).await?;
        Ok(product)
    }

    /// Creates many products (the demo seed) with one index commit; stops at the first failure.
    pub async fn create_many(&self, new: Vec<NewProduct>) -> Result<Vec<Product>, CatalogError> {
        let _one_writer = self.writes.lock().await;
        let mut products = Vec::with_capacity(new.len());
        for new in new {
            products.push(self.claim(new).await?);
        }
        self.save(&products).await?;
        Ok(products)
    }

    /// Validates a new product and claims its SKU.
    async fn claim(&self, new: NewProduct) -> Result<Product, CatalogError> {
        let product = Product {
            product_id: product_id(&new.sku),
            sku: new.sku,
            name: new.name,
            description: new.description,
            category: new.category,
            price: new.price,
            max_per_customer: new.max_per_customer,
        };
        self.validate(&product)?;
        // SKUs are unique regardless of case (product ids are lower case).
        let sku_key = product.sku.as_str().to_ascii_lowercase();
        let sku_key = sku_key.as_bytes();
        let claimed = self
            .store
            .compare_and_swap(
                Table::ProductSkus,
                sku_key,
                None,
                Some(product.product_id.as_bytes()),
            )
            .await
            .map_err(backend)?;
        // A claim without its product is what a crash between the two writes leaves: take it over.
        if !claimed && self.get(&product.product_id).await?.is_some() {
            return Err(CatalogError::SkuExists(product.sku.to_string()));
        }
        Ok(product)
    }

    /// Changes a product.
    pub async fn update(
        &self,
        product_id: &str,
        patch: ProductPatch,
    ) -> Result<Product, CatalogError> {
        let _one_writer = self.writes.lock().await;
        let current = self.get(product_id).await?;
        let current = current.ok_or_else(|| CatalogError::NotFound(product_id.to_owned()))?;
        let mut product = Product::clone(&current);
        let ProductPatch { name, description, category, price, max_per_customer } = patch;
        product.name = name.unwrap_or(product.name);
        product.description = description.unwrap_or(product.description);
        product.category = category.unwrap_or(product.category);
        product.price = price.unwrap_or(product.price);
        product.max_per_customer = max_per_customer.unwrap_or(product.max_per_customer);
        self.validate(&product)?;
        self.save(std::slice::from_ref(&product)).await?;
        Ok(product)
    }

    /// A product by id.
    pub async fn get(&self, product_id: &str) -> Result<Option<Arc<Product>>, CatalogError> {
        if let Some(product) = self.cached(product_id) {
            return Ok(Some(product));
        }
        match self.store.get(Table::Products, product_id.as_bytes()).await.map_err(backend)? {
            Some(bytes) => {
                let product: Product = serde_json::from_slice(&bytes).map_err(backend)?;
                Ok(Some(self.remember(&product)))
            }
            None => Ok(None),
        }
    }

    fn cached(&self, product_id: &str) -> Option<Arc<Product>> {
        // A poisoned lock only means a writer panicked mid-insert of a whole value: still usable.
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache.get(product_id).cloned()
    }

    fn remember(&self, product: &Product) -> Arc<Product> {
        let product = Arc::new(product.clone());
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.insert(product.product_id.clone(), product.clone());
        product
    }

    /// A product by SKU.
    pub async fn by_sku(&self, sku: &Sku) -> Result<Option<Arc<Product>>, CatalogError> {
        self.get(&product_id(sku)).await
    }

    /// Products matching `query` (full text over name and description; all when `None`) in
    /// `category` (any when `None`), `limit` (1 to [`MAX_PAGE`]) at a time from `cursor`.
    pub async fn search(
        &self,
        query: Option<&str>,
        category: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page, CatalogError> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(invalid("limit", format!("must be between 1 and {MAX_PAGE}")));
        }
        let offset = match cursor {
            Some(cursor) => cursor
                .parse::<usize>()
                .ok()
                .filter(|offset| *offset <= MAX_OFFSET)
                .ok_or_else(|| invalid("cursor", "not a cursor of this list"))?,
            None => 0,
        };
        let (index, query, category) =
            (self.index.clone(), query.map(str::to_owned), category.map(str::to_owned));
        let (ids, more) = tokio::task::spawn_blocking(move || {
            index.search(query.as_deref(), category.as_deref(), offset, limit)
        })
        .await
        .map_err(backend)??;
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            // The index and the store agree (both written per product); a miss is skipped.
            if let Some(product) = self.get(&id).await? {
                items.push(product);
            }
        }
        let next_cursor = more.then(|| (offset + limit).to_string());
        Ok(Page { items, next_cursor })
    }

    fn validate(&self, product: &Product) -> Result<(), CatalogError> {
        let chars = |s: &str| s.chars().count();
        if !(1..=200).contains(&chars(product.name.trim())) {
            return Err(invalid("name", "1 to 200 characters"));
        }
        if chars(&product.description) > 5000 {
            return Err(invalid("description", "at most 5000 characters"));
        }
        let c = &product.category;
        if !(1..=64).contains(&c.len())
            || !c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid("category", "1 to 64 of a-z, 0-9 and -"));
        }
        if product.price.currency() != self.base {
            return Err(invalid(
                "price",
                format!("prices are set in the shop's base currency {}", self.base),
            ));
        }
        if product.price.is_negative() {
            return Err(invalid("price", "must not be negative"));
        }
        if product.price.amount() > rust_decimal::Decimal::from(MAX_PRICE_UNITS) {
            return Err(invalid("price", format!("at most {MAX_PRICE_UNITS}")));
        }
        Ok(())
    }

    /// Stores `products`, then indexes them (one commit).
    async fn save(&self, products: &[Product]) -> Result<(), CatalogError> {
        for product in products {
            let value = serde_json::to_vec(product).map_err(backend)?;
            self.store
                .put(Table::Products, product.product_id.as_bytes(), &value)
                .await
                .map_err(backend)?;
            self.remember(product);
        }
        let (index, products) = (self.index.clone(), products.to_vec());
        tokio::task::spawn_blocking(move || index.upsert(&products)).await.map_err(backend)?
    }

    async fn all(&self) -> Result<Vec<Product>, CatalogError> {
        let mut products = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .store
                .scan(Table::Products, b"", after.as_deref(), 1000)
                .await
                .map_err(backend)?;
            for (_, value) in &page {
                products.push(serde_json::from_slice(value).map_err(backend)?);
            }
            match page.last() {
                Some((key, _)) if page.len() == 1000 => after = Some(key.clone()),
                _ => return Ok(products),
            }
        }
    }
}

#[cfg(test)]
mod tests;
