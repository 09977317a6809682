//! The embedded search index: tantivy, in its own directory under the data dir, rebuilt from the
//! catalog at start and kept in step with every change after.
//!
//! Text is matched per word: every word of the query must occur in the name (weighted 3) or the
//! description. A word of five letters or more that the index does not hold as typed (a typo)
//! matches the words one Damerau-Levenshtein edit from it instead; a word it holds is matched as
//! typed (walking the term dictionaries for its neighbours was most of the cost of a search).
//! Facets come from one pass over every result's fast fields ([`FacetCollector`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tantivy::collector::{Collector, SegmentCollector, TopDocs};
use tantivy::columnar::{Column, StrColumn};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TEXT, Value,
};
use tantivy::{
    DocAddress, DocId, Index, IndexReader, IndexWriter, Order, ReloadPolicy, Score, Searcher,
    SegmentReader, TantivyDocument, Term, doc,
};

use super::{FUZZY_FROM, Indexed, SearchHits, SearchIndex, SearchQuery, Sort, words};
use crate::catalog::{CatalogError, backend};

/// Memory the index writer may use.
const WRITER_MEMORY: usize = 32 * 1024 * 1024;
/// How much a match in the name outweighs one in the description.
const NAME_BOOST: Score = 3.0;

/// The tantivy index of one node.
pub struct EmbeddedIndex {
    reader: IndexReader,
    /// `None` once closed.
    writer: Mutex<Option<IndexWriter>>,
    fields: Fields,
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    name: Field,
    description: Field,
    category: Field,
    price: Field,
    created: Field,
    in_stock: Field,
}

impl std::fmt::Debug for EmbeddedIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedIndex").finish_non_exhaustive()
    }
}

/// The embedded index in `dir`, as the catalog uses it.
pub fn open(dir: &Path) -> Result<Arc<dyn SearchIndex>, CatalogError> {
    Ok(Arc::new(Arc::new(EmbeddedIndex::open(dir)?)))
}

impl EmbeddedIndex {
    /// Opens the index in `dir`, starting it over when it has another schema (an older version's:
    /// the catalog rebuilds it at start anyway).
    pub fn open(dir: &Path) -> Result<Self, CatalogError> {
        let mut schema = Schema::builder();
        let fields = Fields {
            id: schema.add_text_field("id", STRING | STORED),
            name: schema.add_text_field("name", TEXT),
            description: schema.add_text_field("description", TEXT),
            category: schema.add_text_field("category", STRING | FAST),
            price: schema.add_i64_field("price_minor", INDEXED | FAST),
            created: schema.add_u64_field("created_at_ms", FAST),
            in_stock: schema.add_u64_field("in_stock", INDEXED | FAST),
        };
        let schema = schema.build();
        std::fs::create_dir_all(dir).map_err(backend)?;
        let index = match Index::open_in_dir(dir) {
            Ok(index) if index.schema() == schema => index,
            _ => {
                std::fs::remove_dir_all(dir).map_err(backend)?;
                std::fs::create_dir_all(dir).map_err(backend)?;
                Index::create_in_dir(dir, schema).map_err(backend)?
            }
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(backend)?;
        let writer = index.writer(WRITER_MEMORY).map_err(backend)?;
        Ok(Self { reader, writer: Mutex::new(Some(writer)), fields })
    }

    fn document(&self, doc: &Indexed) -> TantivyDocument {
        let f = self.fields;
        doc!(
            f.id => doc.id.as_str(),
            f.name => doc.name.as_str(),
            f.description => doc.description.as_str(),
            f.category => doc.category.as_str(),
            f.price => doc.price_minor,
            f.created => doc.created_at_ms,
            f.in_stock => u64::from(doc.in_stock),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<IndexWriter>> {
        // A panic mid-write leaves uncommitted operations, which tantivy discards; the writer
        // itself stays usable.
        self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self, docs: &[Indexed], replace_all: bool) -> Result<(), CatalogError> {
        let mut writer = self.lock();
        let writer = writer.as_mut().ok_or_else(|| backend("the index is closed"))?;
        if replace_all {
            writer.delete_all_documents().map_err(backend)?;
        }
        for doc in docs {
            if !replace_all {
                writer.delete_term(Term::from_field_text(self.fields.id, &doc.id));
            }
            writer.add_document(self.document(doc)).map_err(backend)?;
        }
        writer.commit().map_err(backend)?;
        self.reader.reload().map_err(backend)
    }

    fn query(&self, q: &SearchQuery, searcher: &Searcher) -> Result<Box<dyn Query>, CatalogError> {
        let f = self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for word in words(q.text.as_deref().unwrap_or("")) {
            let fields = [(f.name, NAME_BOOST), (f.description, 1.0)];
            let terms = fields.map(|(field, boost)| (Term::from_field_text(field, &word), boost));
            let mut held = 0;
            for (term, _) in &terms {
                held += searcher.doc_freq(term).map_err(backend)?;
            }
            let typo = held == 0 && word.chars().count() >= FUZZY_FROM;
            let mut either: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            for (term, boost) in terms {
                let one: Box<dyn Query> = if typo {
                    // Distance 1, a swap of neighbours counting as one edit.
                    Box::new(FuzzyTermQuery::new(term, 1, true))
                } else {
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))
                };
                either.push((Occur::Should, Box::new(BoostQuery::new(one, boost))));
            }
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(either))));
        }
        if let Some(category) = &q.category {
            let term = Term::from_field_text(f.category, category);
            clauses.push((Occur::Must, Box::new(TermQuery::new(term, IndexRecordOption::Basic))));
        }
        if q.min_price.is_some() || q.max_price.is_some() {
            let lower = q.min_price.unwrap_or(i64::MIN);
            let upper = q.max_price.unwrap_or(i64::MAX);
            let range = RangeQuery::new(
                std::ops::Bound::Included(Term::from_field_i64(f.price, lower)),
                std::ops::Bound::Included(Term::from_field_i64(f.price, upper)),
            );
            clauses.push((Occur::Must, Box::new(range)));
        }
        if let Some(in_stock) = q.in_stock {
            let term = Term::from_field_u64(f.in_stock, u64::from(in_stock));
            clauses.push((Occur::Must, Box::new(TermQuery::new(term, IndexRecordOption::Basic))));
        }
        Ok(if clauses.is_empty() {
            Box::new(AllQuery)
        } else {
            Box::new(BooleanQuery::new(clauses))
        })
    }

    fn run(&self, q: &SearchQuery) -> Result<SearchHits, CatalogError> {
        let searcher = self.reader.searcher();
        let query = self.query(q, &searcher)?;
        let top = TopDocs::with_limit(q.limit + 1).and_offset(q.offset);
        let bounds = Arc::new(q.price_bounds.clone());
        let facets = || FacetCollector { bounds: bounds.clone() };
        let addresses = |hits: Vec<(_, DocAddress)>| hits.into_iter().map(|(_, a)| a).collect();
        let (found, counts): (Vec<DocAddress>, FacetCounts) = match q.sort {
            Sort::Relevance => {
                let (hits, counts) =
                    searcher.search(&query, &(top.order_by_score(), facets())).map_err(backend)?;
                (addresses(hits), counts)
            }
            Sort::PriceAsc | Sort::PriceDesc => {
                let order = if q.sort == Sort::PriceAsc { Order::Asc } else { Order::Desc };
                let by_price = top.order_by_fast_field::<i64>("price_minor", order);
                let (hits, counts) =
                    searcher.search(&query, &(by_price, facets())).map_err(backend)?;
                (hits.into_iter().map(|(_, a)| a).collect(), counts)
            }
            Sort::Newest => {
                let by_age = top.order_by_fast_field::<u64>("created_at_ms", Order::Desc);
                let (hits, counts) =
                    searcher.search(&query, &(by_age, facets())).map_err(backend)?;
                (hits.into_iter().map(|(_, a)| a).collect(), counts)
            }
        };
        let more = found.len() > q.limit;
        let mut ids = Vec::with_capacity(q.limit);
        for address in found.into_iter().take(q.limit) {
            let document: TantivyDocument = searcher.doc(address).map_err(backend)?;
            if let Some(id) = document.get_first(self.fields.id).and_then(|v| v.as_str()) {
                ids.push(id.to_owned());
            }
        }
        let mut categories: Vec<(String, u64)> = counts.categories.into_iter().collect();
        categories.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(SearchHits {
            ids,
            more,
            total: counts.total,
            categories,
            prices: counts.prices,
            in_stock: (counts.in_stock[1], counts.in_stock[0]),
        })
    }
}

#[async_trait]
impl SearchIndex for Arc<EmbeddedIndex> {
    async fn upsert(&self, docs: Vec<Indexed>) -> Result<(), CatalogError> {
        let index = self.clone();
        tokio::task::spawn_blocking(move || index.write(&docs, false)).await.map_err(backend)?
    }

    async fn rebuild(&self, docs: Vec<Indexed>) -> Result<(), CatalogError> {
        let index = self.clone();
        tokio::task::spawn_blocking(move || index.write(&docs, true)).await.map_err(backend)?
    }

    fn close(&self) {
        // Dropping the writer releases the directory's lock.
        drop(self.lock().take());
    }

    async fn search(&self, query: SearchQuery) -> Result<SearchHits, CatalogError> {
        let index = self.clone();
        tokio::task::spawn_blocking(move || index.run(&query)).await.map_err(backend)?
    }
}

/// Counts every result by category, price bucket and stock state, from the fast fields.
struct FacetCollector {
    bounds: Arc<Vec<i64>>,
}

/// The facets of one search.
#[derive(Default)]
struct FacetCounts {
    total: u64,
    categories: HashMap<String, u64>,
    prices: Vec<u64>,
    /// Out of stock, in stock.
    in_stock: [u64; 2],
}

struct SegmentFacets {
    bounds: Arc<Vec<i64>>,
    price: Column<i64>,
    in_stock: Column<u64>,
    category: Option<StrColumn>,
    by_ordinal: Vec<u64>,
    prices: Vec<u64>,
    stock: [u64; 2],
    total: u64,
}

impl Collector for FacetCollector {
    type Fruit = FacetCounts;
    type Child = SegmentFacets;

    fn for_segment(
        &self,
        _segment: tantivy::SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentFacets> {
        let fast = reader.fast_fields();
        let category = fast.str("category")?;
        let terms = category.as_ref().map_or(0, |c| c.num_terms());
        Ok(SegmentFacets {
            bounds: self.bounds.clone(),
            price: fast.i64("price_minor")?,
            in_stock: fast.u64("in_stock")?,
            category,
            by_ordinal: vec![0; terms],
            prices: vec![0; self.bounds.len() + 1],
            stock: [0; 2],
            total: 0,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, segments: Vec<FacetCounts>) -> tantivy::Result<FacetCounts> {
        let mut all =
            FacetCounts { prices: vec![0; self.bounds.len() + 1], ..FacetCounts::default() };
        for segment in segments {
            all.total += segment.total;
            for (category, n) in segment.categories {
                *all.categories.entry(category).or_default() += n;
            }
            for (sum, n) in all.prices.iter_mut().zip(segment.prices) {
                *sum += n;
            }
            all.in_stock[0] += segment.in_stock[0];
            all.in_stock[1] += segment.in_stock[1];
        }
        Ok(all)
    }
}

impl SegmentCollector for SegmentFacets {
    type Fruit = FacetCounts;

    fn collect(&mut self, doc: DocId, _score: Score) {
        self.total += 1;
        if let Some(price) = self.price.first(doc) {
            self.prices[self.bounds.partition_point(|b| *b <= price)] += 1;
        }
        let in_stock = self.in_stock.first(doc).unwrap_or(0).min(1);
        // `min(1)` above: the index holds 0 or 1.
        self.stock[in_stock as usize] += 1;
        let ordinal = self.category.as_ref().and_then(|c| c.ords().first(doc));
        if let Some(n) = ordinal.and_then(|o| self.by_ordinal.get_mut(o as usize)) {
            *n += 1;
        }
    }

    fn harvest(self) -> FacetCounts {
        let mut categories = HashMap::new();
        if let Some(column) = &self.category {
            let mut name = String::new();
            for (ordinal, n) in self.by_ordinal.iter().enumerate().filter(|(_, n)| **n > 0) {
                if column.ord_to_str(ordinal as u64, &mut name).unwrap_or(false) {
                    categories.insert(name.clone(), *n);
                }
            }
        }
        FacetCounts { total: self.total, categories, prices: self.prices, in_stock: self.stock }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_embedded_index_passes_the_search_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(EmbeddedIndex::open(dir.path()).unwrap());
        super::super::conformance::run(&index).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_index_frees_its_directory_while_still_held() {
        let dir = tempfile::tempdir().unwrap();
        let held = open(dir.path()).unwrap();
        held.close();
        let docs = super::super::conformance::catalog();
        assert!(held.upsert(docs.clone()).await.is_err(), "a closed index takes no writes");
        // A task of the stopped node may still hold it: the next node opens the directory.
        let next = open(dir.path()).unwrap();
        next.rebuild(docs).await.unwrap();
        drop(held);
    }
}
