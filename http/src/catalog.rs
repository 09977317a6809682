//! The catalog: products (SKU unique) and the FX rates, one truth across the cluster. Every
//! change is an event of the shared store's `catalog` stream (see [`feed`]); each node applies the
//! stream in order to its memory and its embedded full-text index (tantivy), so every node
//! answers from the same versions within a poll of the stream.
//!
//! Owns product records, their validation, the FX rates, search and the demo catalog. Does not
//! own stock (the SKU actors).

mod cache;
pub mod demo;
mod feed;
mod price;
pub mod search;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use storefront_actors::{Currency, FxRates, Money, Sku};
use storefront_storage::{Store, Table};

pub use feed::FOLLOW_EVERY;
pub use price::PriceBucket;
use search::{Indexed, SearchIndex, SearchQuery, Sort};

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
    /// The catalog version that last changed it (0 for a product stored before the catalog
    /// had versions).
    #[serde(default)]
    pub version: u64,
    /// When it was created (ms since the epoch; 0 for a product stored before Step 7).
    #[serde(default)]
    pub created_at_ms: u64,
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

/// A search of the catalog, prices in the display currency.
#[derive(Debug, Clone, Default)]
pub struct Search<'a> {
    /// Words to find (all products when `None`).
    pub text: Option<&'a str>,
    /// Only this category.
    pub category: Option<&'a str>,
    /// Only prices shown at or above this.
    pub min_price: Option<Money>,
    /// Only prices shown at or below this.
    pub max_price: Option<Money>,
    /// Only products in stock (`true`) or out of stock (`false`).
    pub in_stock: Option<bool>,
    /// The order (default: relevance with text, else newest).
    pub sort: Option<Sort>,
    /// Products per page, 1 to [`MAX_PAGE`].
    pub limit: usize,
    /// Where the page starts: a previous page's `next_cursor`.
    pub cursor: Option<&'a str>,
}

/// One page of products, with the facets of every result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The products, in the search's order.
    pub items: Vec<Arc<Product>>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<String>,
    /// Results per category, most first.
    pub categories: Vec<(String, u64)>,
    /// Results per price bucket, in the display currency (empty buckets left out).
    pub prices: Vec<PriceBucket>,
    /// Results in stock and out of stock.
    pub in_stock: (u64, u64),
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
    product_id_of(sku.as_str())
}

/// The catalog of one shop, as this node has applied it.
#[derive(Clone)]
pub struct Catalog {
    store: Arc<dyn Store>,
    index: Arc<dyn SearchIndex>,
    base: Currency,
    /// What this node has applied of the catalog stream: read by every product read, search and
    /// checkout, written only by [`Catalog::catch_up`].
    applied: Arc<RwLock<Applied>>,
    /// This node's catalog writes one at a time (other nodes' are ordered by the stream).
    writes: Arc<tokio::sync::Mutex<()>>,
    /// One catch-up at a time, so events are applied once and in order.
    applying: Arc<tokio::sync::Mutex<()>>,
    /// One writer of this node's index at a time, each writing what it reads of `applied`
    /// under it, so the last write holds the newest of both the catalog and the stock states.
    index_writes: Arc<tokio::sync::Mutex<()>>,
    /// Search pages in Redis, when configured.
    cache: Option<Arc<cache::SearchCache>>,
}

/// The catalog as of one version of its stream.
#[derive(Debug)]
struct Applied {
    version: u64,
    products: HashMap<String, Arc<Product>>,
    fx: Arc<FxRates>,
    /// Product ids whose SKU has units available, as the SKU actors last said.
    in_stock: HashSet<String>,
}

impl Applied {
    fn indexed(&self, product: &Product) -> Indexed {
        Indexed::of(product, self.in_stock.contains(&product.product_id))
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("base", &self.base).finish()
    }
}

impl Catalog {
    /// Opens the catalog over `store` with its embedded index under `index_dir`, caught up
    /// with the catalog stream: a node that was down applies what it missed before it serves.
    pub async fn open(
        store: Arc<dyn Store>,
        index_dir: &Path,
        base: Currency,
    ) -> Result<Self, CatalogError> {
        Self::open_with(store, search::embedded::open(index_dir)?, base).await
    }

    /// [`Catalog::open`] with another search index.
    pub async fn open_with(
        store: Arc<dyn Store>,
        index: Arc<dyn SearchIndex>,
        base: Currency,
    ) -> Result<Self, CatalogError> {
        let mut applied = feed::load(&*store, base).await?;
        applied.in_stock = in_stock(&store, &applied.products).await?;
        let docs = applied.products.values().map(|p| applied.indexed(p)).collect();
        // A node's own index is rebuilt whole at every start: it then holds exactly the stored
        // catalog and stock states, however it was left. (A shared one is filled once.)
        index.rebuild(docs).await?;
        let catalog = Self {
            store,
            index,
            base,
            applied: Arc::new(RwLock::new(applied)),
            writes: Arc::default(),
            applying: Arc::default(),
            index_writes: Arc::default(),
            cache: None,
        };
        catalog.catch_up().await?;
        Ok(catalog)
    }

    /// Caches search pages in `redis` for `ttl` (keyed by the catalog version, so a change is
    /// never served from an older page).
    pub fn with_search_cache(
        mut self,
        redis: Arc<crate::redis::Redis>,
        ttl: std::time::Duration,
    ) -> Self {
        self.cache = Some(Arc::new(cache::SearchCache::new(redis, ttl)));
        self
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Applied> {
        // A poisoned lock only means a writer panicked between whole-value inserts: still usable.
        self.applied.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the search index for writing (at a node's stop): later changes reach no index.
    pub fn close(&self) {
        self.index.close();
    }

    /// The catalog version this node has applied.
    pub fn version(&self) -> u64 {
        self.read().version
    }

    /// Products this node knows.
    pub fn len(&self) -> usize {
        self.read().products.len()
    }

    /// Whether the catalog has no products.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shop's base currency.
    pub fn base_currency(&self) -> Currency {
        self.base
    }

    /// The FX rates as of the applied version.
    pub fn fx(&self) -> Arc<FxRates> {
        self.read().fx.clone()
    }

    /// The FX rates with the catalog version they are at (what a checkout prices from).
    pub fn fx_versioned(&self) -> (Arc<FxRates>, u64) {
        let applied = self.read();
        (applied.fx.clone(), applied.version)
    }

    /// Replaces the FX rates; returns them once this node has applied them.
    pub async fn replace_fx(&self, rates: FxRates) -> Result<Arc<FxRates>, CatalogError> {
        if rates.base() != self.base {
            return Err(invalid("base", format!("must be the base currency {}", self.base)));
        }
        self.write(|_| Ok(feed::Change::FxRates(rates.clone()))).await?;
        Ok(self.fx())
    }

    /// Creates a product; its SKU must be new.
    pub async fn create(&self, new: NewProduct) -> Result<Product, CatalogError> {
        let mut created = self.create_many(vec![new]).await?;
        created.pop().ok_or_else(|| CatalogError::Backend("nothing created".into()))
    }

    /// Creates many products (the demo seed); every SKU must be new. They are validated all
    /// before any is written, then written in changes of up to `MAX_PRODUCTS_PER_CHANGE`, each
    /// all or none: a change refused (a SKU another node created meanwhile) leaves the ones
    /// before it created (the seed, which creates only the missing ones, finishes at a restart).
    pub async fn create_many(&self, new: Vec<NewProduct>) -> Result<Vec<Product>, CatalogError> {
        let mut products = Vec::with_capacity(new.len());
        for new in new {
            let product = Product {
                created_at_ms: now_ms(),
                product_id: product_id(&new.sku),
                sku: new.sku,
                name: new.name,
                description: new.description,
                category: new.category,
                price: new.price,
                max_per_customer: new.max_per_customer,
                version: 0,
            };
            self.validate(&product)?;
            products.push(product);
        }
        let mut created = Vec::with_capacity(products.len());
        for chunk in products.chunks(feed::MAX_PRODUCTS_PER_CHANGE) {
            let version = self
                .write(|applied| {
                    // SKUs are unique regardless of case (product ids are lower case); the
                    // stream orders every write, so a product absent here is absent everywhere.
                    if let Some(taken) =
                        chunk.iter().find(|p| applied.products.contains_key(&p.product_id))
                    {
                        return Err(CatalogError::SkuExists(taken.sku.to_string()));
                    }
                    Ok(feed::Change::Products(chunk.to_vec()))
                })
                .await?;
            created.extend(chunk.iter().cloned().map(|p| Product { version, ..p }));
        }
        Ok(created)
    }

    /// Changes a product.
    pub async fn update(
        &self,
        product_id: &str,
        patch: ProductPatch,
    ) -> Result<Product, CatalogError> {
        self.write(|applied| {
            let current = applied.products.get(product_id);
            let current = current.ok_or_else(|| CatalogError::NotFound(product_id.to_owned()))?;
            let mut product = Product::clone(current);
            let ProductPatch { name, description, category, price, max_per_customer } =
                patch.clone();
            product.name = name.unwrap_or(product.name);
            product.description = description.unwrap_or(product.description);
            product.category = category.unwrap_or(product.category);
            product.price = price.unwrap_or(product.price);
            product.max_per_customer = max_per_customer.unwrap_or(product.max_per_customer);
            self.validate(&product)?;
            Ok(feed::Change::Products(vec![product]))
        })
        .await?;
        // Applied by the write (or replaced since by a later change of another node's).
        let product = self.get(product_id).await?;
        product.map(|p| Product::clone(&p)).ok_or_else(|| CatalogError::NotFound(product_id.into()))
    }

    /// A product by id, as of the applied version.
    pub async fn get(&self, product_id: &str) -> Result<Option<Arc<Product>>, CatalogError> {
        Ok(self.read().products.get(product_id).cloned())
    }

    /// A product by SKU.
    pub async fn by_sku(&self, sku: &Sku) -> Result<Option<Arc<Product>>, CatalogError> {
        self.get(&product_id(sku)).await
    }

    /// One page of the products `search` finds, prices shown in `currency`, with the facets
    /// of every result.
    pub async fn search(
        &self,
        search: Search<'_>,
        currency: Currency,
    ) -> Result<Page, CatalogError> {
        if !(1..=MAX_PAGE).contains(&search.limit) {
            return Err(invalid("limit", format!("must be between 1 and {MAX_PAGE}")));
        }
        let offset = match search.cursor {
            Some(cursor) => cursor
                .parse::<usize>()
                .ok()
                .filter(|offset| *offset <= MAX_OFFSET)
                .ok_or_else(|| invalid("cursor", "not a cursor of this list"))?,
            None => 0,
        };
        let text = search.text.map(str::trim).filter(|t| !t.is_empty());
        let sort =
            search.sort.unwrap_or(if text.is_some() { Sort::Relevance } else { Sort::Newest });
        let prices = price::Shown::new(self.fx(), self.base, currency)?;
        let bounds = prices.bucket_bounds()?;
        let query = SearchQuery {
            text: text.map(str::to_owned),
            category: search.category.map(str::to_owned),
            min_price: search.min_price.map(|min| prices.lowest_at_or_above(&min)).transpose()?,
            max_price: search.max_price.map(|max| prices.highest_at_or_below(&max)).transpose()?,
            in_stock: search.in_stock,
            sort,
            offset,
            limit: search.limit,
            price_bounds: bounds.iter().map(|(_, base)| *base).collect(),
        };
        let shared = self.index.shared().then(|| query.clone());
        let key = self.cache.as_ref().map(|cache| cache.key(self.version(), &query, currency));
        let cached = match (&self.cache, &key) {
            (Some(cache), Some(key)) => cache.get(key).await,
            _ => None,
        };
        let found = match cached {
            Some(found) => found,
            None => {
                let found = self.found(query, &prices, &bounds, offset).await?;
                if let (Some(cache), Some(key)) = (&self.cache, key) {
                    cache.put(key, &found);
                }
                found
            }
        };
        let applied = self.read();
        // A node's own index follows the applied products (both written by the catch-up); a
        // shared one may be behind or ahead of them, and may still hold replaced copies: its
        // results are those the applied products still answer.
        let items = found
            .ids
            .iter()
            .filter_map(|id| applied.products.get(id))
            .filter(|p| shared.as_ref().is_none_or(|query| query.matches(&applied.indexed(p))))
            .cloned()
            .collect();
        Ok(Page {
            items,
            next_cursor: found.next_cursor,
            categories: found.categories,
            prices: found.prices,
            in_stock: found.in_stock,
        })
    }

    /// What the index finds for `query`, prices shown as `prices` says.
    async fn found(
        &self,
        query: SearchQuery,
        prices: &price::Shown,
        bounds: &[(Money, i64)],
        offset: usize,
    ) -> Result<cache::Found, CatalogError> {
        let limit = query.limit;
        let hits = self.index.search(query).await?;
        Ok(cache::Found {
            // A page past the deepest a cursor may reach has no next.
            next_cursor: (hits.more && offset + limit <= MAX_OFFSET)
                .then(|| (offset + limit).to_string()),
            ids: hits.ids,
            categories: hits.categories,
            prices: prices.buckets(bounds, &hits.prices),
            in_stock: hits.in_stock,
        })
    }

    fn validate(&self, product: &Product) -> Result<(), CatalogError> {
        let chars = |s: &str| s.chars().count();
        if !(1..=200).contains(&chars(product.name.trim())) {
            return Err(invalid("name", "1 to 200 characters"));
        }
        if chars(&product.description) > 5000 {
            return Err(invalid("description", "at most 5000 characters"));
        }
        if !is_category(&product.category) {
            return Err(invalid("category", CATEGORY_RULE));
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
}

/// The product ids of the SKUs the store records as in stock. A product whose SKU has no
/// state (a store from before they were kept) has it recorded now, from its SKU's journal.
async fn in_stock(
    store: &Arc<dyn Store>,
    products: &HashMap<String, Arc<Product>>,
) -> Result<HashSet<String>, CatalogError> {
    let states = stock_states(&**store).await?;
    let missing: Vec<&Sku> = products
        .values()
        .map(|p| &p.sku)
        .filter(|sku| !states.contains_key(sku.as_str().as_bytes()))
        .collect();
    if !missing.is_empty() {
        tracing::info!(skus = missing.len(), "recording the stock state of SKUs that have none");
    }
    let recorded: Vec<(&Sku, bool)> =
        futures::stream::iter(missing)
            .map(|sku| async move {
                Ok::<_, CatalogError>((sku, record_availability(store, sku).await?))
            })
            .buffer_unordered(BACKFILL_CONCURRENCY)
            .try_collect()
            .await?;
    let stocked = stocked_ids(&states);
    let backfilled = recorded
        .iter()
        .filter(|(_, available)| *available)
        .map(|(sku, _)| product_id_of(sku.as_str()));
    Ok(stocked.chain(backfilled).collect())
}

/// Whether each SKU the store has a state for has units available, by SKU.
async fn stock_states(store: &dyn Store) -> Result<HashMap<Vec<u8>, bool>, CatalogError> {
    let states = storefront_storage::scan_all(store, Table::SkuAvailability).await;
    Ok(states
        .map_err(backend)?
        .into_iter()
        .map(|(sku, available)| (sku, available.as_slice() != b"0"))
        .collect())
}

/// The product ids of the SKUs `states` has in stock.
fn stocked_ids(states: &HashMap<Vec<u8>, bool>) -> impl Iterator<Item = String> + '_ {
    states
        .iter()
        .filter(|(_, available)| **available)
        .map(|(sku, _)| product_id_of(&String::from_utf8_lossy(sku)))
}

/// SKUs whose journals are read at once when recording their stock states.
const BACKFILL_CONCURRENCY: usize = 32;

/// Records whether `sku` has units available, from its journal, unless its actor recorded a
/// state meanwhile (which is then newer, and is the answer).
async fn record_availability(store: &Arc<dyn Store>, sku: &Sku) -> Result<bool, CatalogError> {
    let available =
        storefront_actors::sku::recorded_availability(store.clone(), sku).await.map_err(backend)?;
    let key = sku.as_str().as_bytes();
    let state: &[u8] = if available { b"1" } else { b"0" };
    let table = Table::SkuAvailability;
    if store.compare_and_swap(table, key, None, Some(state)).await.map_err(backend)? {
        return Ok(available);
    }
    Ok(store.get(table, key).await.map_err(backend)?.is_some_and(|s| s.as_slice() != b"0"))
}

/// What a category is, in words.
pub const CATEGORY_RULE: &str = "1 to 64 of a-z, 0-9 and -";

/// Whether `category` is a category slug: [`CATEGORY_RULE`].
pub fn is_category(category: &str) -> bool {
    (1..=64).contains(&category.len())
        && category.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The product id of a SKU as text (SKUs are case-insensitive; ids are lower case).
fn product_id_of(sku: &str) -> String {
    format!("prod-{}", sku.to_ascii_lowercase())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
