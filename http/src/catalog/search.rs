//! The embedded full-text index of the catalog (tantivy), in its own directory.

use std::path::Path;
use std::sync::Mutex;

use tantivy::collector::{Count, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, STORED, STRING, Schema, TEXT, Value};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};

use super::{CatalogError, Product, backend};

/// Memory the index writer may use.
const WRITER_MEMORY: usize = 32 * 1024 * 1024;

pub(super) struct SearchIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    id: Field,
    name: Field,
    description: Field,
    category: Field,
}

impl SearchIndex {
    pub(super) fn open(dir: &Path) -> Result<Self, CatalogError> {
        let mut schema = Schema::builder();
        let id = schema.add_text_field("id", STRING | STORED);
        let name = schema.add_text_field("name", TEXT);
        let description = schema.add_text_field("description", TEXT);
        let category = schema.add_text_field("category", STRING);
        let schema = schema.build();
        std::fs::create_dir_all(dir).map_err(backend)?;
        let index = match Index::open_in_dir(dir) {
            Ok(index) if index.schema() == schema => index,
            Ok(_) => {
                return Err(CatalogError::Backend("the search index has another schema".into()));
            }
            Err(_) => Index::create_in_dir(dir, schema).map_err(backend)?,
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(backend)?;
        let writer = index.writer(WRITER_MEMORY).map_err(backend)?;
        Ok(Self { index, reader, writer: Mutex::new(writer), id, name, description, category })
    }

    fn document(&self, product: &Product) -> TantivyDocument {
        doc!(
            self.id => product.product_id.as_str(),
            self.name => product.name.as_str(),
            self.description => product.description.as_str(),
            self.category => product.category.as_str(),
        )
    }

    /// Commits, recording that the index now holds the catalog as of `version`.
    fn commit(&self, writer: &mut IndexWriter, version: u64) -> Result<(), CatalogError> {
        let mut commit = writer.prepare_commit().map_err(backend)?;
        commit.set_payload(&version.to_string());
        commit.commit().map_err(backend)?;
        self.reader.reload().map_err(backend)
    }

    /// The catalog version the index holds, as its last commit recorded; `None` for an index
    /// written before versions were recorded (or never committed).
    pub(super) fn version(&self) -> Result<Option<u64>, CatalogError> {
        let metas = self.index.load_metas().map_err(backend)?;
        Ok(metas.payload.and_then(|payload| payload.parse().ok()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        // A panic mid-write leaves uncommitted operations, which tantivy discards; the writer
        // itself stays usable.
        self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the documents of `products` and commits once as of catalog `version` (blocking).
    pub(super) fn upsert<'a>(
        &self,
        products: impl IntoIterator<Item = &'a Product>,
        version: u64,
    ) -> Result<(), CatalogError> {
        let mut writer = self.lock();
        for product in products {
            writer.delete_term(Term::from_field_text(self.id, &product.product_id));
            writer.add_document(self.document(product)).map_err(backend)?;
        }
        self.commit(&mut writer, version)
    }

    /// Replaces the whole index with `products`, as of catalog `version` (blocking).
    pub(super) fn rebuild<'a>(
        &self,
        products: impl IntoIterator<Item = &'a Product>,
        version: u64,
    ) -> Result<(), CatalogError> {
        let mut writer = self.lock();
        writer.delete_all_documents().map_err(backend)?;
        for product in products {
            writer.add_document(self.document(product)).map_err(backend)?;
        }
        self.commit(&mut writer, version)
    }

    /// Documents in the index.
    pub(super) fn count(&self) -> Result<u64, CatalogError> {
        self.reader.searcher().search(&AllQuery, &Count).map(|n| n as u64).map_err(backend)
    }

    /// Ids of the products matching, best first, from `offset`; and whether more follow.
    pub(super) fn search(
        &self,
        text: Option<&str>,
        category: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<String>, bool), CatalogError> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(text) = text.filter(|t| !t.trim().is_empty()) {
            let parser = QueryParser::for_index(&self.index, vec![self.name, self.description]);
            // Lenient: whatever a shopper types searches for its words, never errors.
            let (query, _) = parser.parse_query_lenient(text);
            clauses.push((Occur::Must, query));
        }
        if let Some(category) = category {
            let term = Term::from_field_text(self.category, category);
            clauses.push((Occur::Must, Box::new(TermQuery::new(term, IndexRecordOption::Basic))));
        }
        let query: Box<dyn Query> = if clauses.is_empty() {
            Box::new(AllQuery)
        } else {
            Box::new(BooleanQuery::new(clauses))
        };
        let searcher = self.reader.searcher();
        let top = TopDocs::with_limit(limit + 1).and_offset(offset).order_by_score();
        let hits = searcher.search(&query, &top).map_err(backend)?;
        let more = hits.len() > limit;
        let mut ids = Vec::with_capacity(limit);
        for (_, address) in hits.into_iter().take(limit) {
            let document: TantivyDocument = searcher.doc(address).map_err(backend)?;
            if let Some(id) = document.get_first(self.id).and_then(|v| v.as_str()) {
                ids.push(id.to_owned());
            }
        }
        Ok((ids, more))
    }
}
