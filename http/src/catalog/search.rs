//! Search over the catalog: one [`SearchIndex`] trait, what the index holds of a product
//! ([`Indexed`]), what a search asks ([`SearchQuery`]) and answers ([`SearchHits`]). Prices in
//! the index and in queries are minor units of the base currency; the catalog converts to and
//! from the display currency.
//!
//! Backends: [`embedded`] (tantivy under the data dir, the default) and [`quickwit`] (one index
//! shared by every node, over Quickwit's REST API).

#[cfg(test)]
pub(crate) mod conformance;
pub mod embedded;
pub mod quickwit;

use async_trait::async_trait;

use super::{CatalogError, Product};

/// What the index holds of one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed {
    /// The product id.
    pub id: String,
    /// Searched text, weighted above the description.
    pub name: String,
    /// Searched text.
    pub description: String,
    /// Filtered and counted exactly.
    pub category: String,
    /// Minor units of the base currency.
    pub price_minor: i64,
    /// When the product was created (ms since the epoch).
    pub created_at_ms: u64,
    /// Whether its SKU has units available.
    pub in_stock: bool,
}

impl Indexed {
    /// The document of `product` with its stock state.
    pub fn of(product: &Product, in_stock: bool) -> Self {
        Self {
            id: product.product_id.clone(),
            name: product.name.clone(),
            description: product.description.clone(),
            category: product.category.clone(),
            // Validated prices are at most 10^9 units with the currency's minor digits.
            price_minor: product.price.minor_units().unwrap_or(i64::MAX),
            created_at_ms: product.created_at_ms,
            in_stock,
        }
    }
}

/// The order of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Best text match first.
    Relevance,
    /// Cheapest first.
    PriceAsc,
    /// Dearest first.
    PriceDesc,
    /// Most recently created first.
    Newest,
}

/// One search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// Words to find in name or description (each must match, one typo tolerated in words of
    /// five letters or more); all products when `None`.
    pub text: Option<String>,
    /// Only this category.
    pub category: Option<String>,
    /// Only prices at or above this, in base minor units.
    pub min_price: Option<i64>,
    /// Only prices at or below this, in base minor units.
    pub max_price: Option<i64>,
    /// Only products in stock (`true`) or out of stock (`false`).
    pub in_stock: Option<bool>,
    /// The order.
    pub sort: Sort,
    /// Results to skip.
    pub offset: usize,
    /// Results to return.
    pub limit: usize,
    /// Where the price facet's buckets start, ascending, in base minor units: the buckets are
    /// `[0, b1)`, `[b1, b2)`, ..., `[bn, ∞)`.
    pub price_bounds: Vec<i64>,
}

impl SearchQuery {
    /// Whether `doc` answers this query: every word in its name or description (as typed, or
    /// one edit away in a word of [`FUZZY_FROM`]+ letters) and every filter. Results of a
    /// shared index are checked with it against the catalog, as such an index may still hold
    /// the copy of a product from before a change.
    pub fn matches(&self, doc: &Indexed) -> bool {
        let held = words(&format!("{} {}", doc.name, doc.description));
        let found = |word: &String| {
            held.contains(word)
                || (word.chars().count() >= FUZZY_FROM
                    && held.iter().any(|h| strsim::osa_distance(h, word) == 1))
        };
        words(self.text.as_deref().unwrap_or("")).iter().all(found)
            && self.category.as_ref().is_none_or(|c| *c == doc.category)
            && self.min_price.is_none_or(|min| doc.price_minor >= min)
            && self.max_price.is_none_or(|max| doc.price_minor <= max)
            && self.in_stock.is_none_or(|in_stock| in_stock == doc.in_stock)
    }
}

/// What a search found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchHits {
    /// The page's product ids, in order.
    pub ids: Vec<String>,
    /// Whether more results follow the page.
    pub more: bool,
    /// Results in all.
    pub total: u64,
    /// Results per category, most first (ties by name).
    pub categories: Vec<(String, u64)>,
    /// Results per price bucket (one more than `price_bounds`).
    pub prices: Vec<u64>,
    /// Results in stock and out of stock.
    pub in_stock: (u64, u64),
}

/// Words of at least this many letters tolerate one typo.
pub const FUZZY_FROM: usize = 5;

/// The words of `text` as every backend indexes and searches them: runs of letters and digits,
/// lower-cased, at most 40 bytes each, each once.
pub fn words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in
        text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty() && w.len() <= 40)
    {
        let word = word.to_lowercase();
        if !words.contains(&word) {
            words.push(word);
        }
    }
    words
}

/// A full-text index of the catalog.
#[async_trait]
pub trait SearchIndex: Send + Sync + std::fmt::Debug {
    /// Whether every node shares this index (then each change is written by the node that made
    /// it), rather than each node keeping its own (then each node writes every change).
    fn shared(&self) -> bool {
        false
    }
    /// Adds or replaces these documents.
    async fn upsert(&self, docs: Vec<Indexed>) -> Result<(), CatalogError>;
    /// Makes the index hold exactly these documents.
    async fn rebuild(&self, docs: Vec<Indexed>) -> Result<(), CatalogError>;
    /// Runs a search: the page and the facets over every result.
    async fn search(&self, query: SearchQuery) -> Result<SearchHits, CatalogError>;
    /// Lets go of what the index holds for writing (a node's own: its lock on the directory),
    /// at stop; writes after it fail.
    fn close(&self) {}
}
