//! The Quickwit backend: one index shared by every node, over Quickwit's REST API (no client
//! crate exists; written against Quickwit 0.8/0.9's documentation, and tested here only against
//! a local server that checks each request and answers as that documentation shows: see README).
//!
//! - The index is created at start when missing (`POST /api/v1/indexes`, config version `0.8`,
//!   which 0.8 and 0.9 accept) and filled once; after that the nodes keep it: a change is written
//!   by the node that made it (see [`SearchIndex::shared`]).
//! - Quickwit has no document ids and no updates: a replaced product is a delete task for its id
//!   (`POST /api/v1/{index}/delete-tasks`) and a new document (NDJSON ingest with
//!   `commit=wait_for`, so it is searchable when the write returns). Quickwit applies deletes to
//!   mature splits only, so until then a search may see both copies: pages list an id once (and
//!   the catalog drops one only its old copy matched: [`SearchQuery::matches`]), but facets may
//!   count it twice.
//! - Quickwit's query language has no fuzzy match: a word of five letters or more is searched
//!   with every spelling one edit away from it (a term set), which is what the embedded index's
//!   fuzzy query matches.
//! - `sort_by` is descending by default and `-field` ascending (Quickwit's own convention).

use std::collections::HashSet;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{FUZZY_FROM, Indexed, SearchHits, SearchIndex, SearchQuery, Sort, words};
use crate::catalog::CatalogError;

/// Documents one ingest request carries at most (Quickwit's body limit is 10 MB).
const INGEST_BATCH: usize = 5_000;
/// Letters a typo may insert or replace.
const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz0123456789";

/// A Quickwit index of the catalog.
#[derive(Debug)]
pub struct QuickwitIndex {
    http: reqwest::Client,
    /// `http://host:port/api/v1`.
    api: String,
    index: String,
    /// Whether this node created the index (and so fills it).
    created: bool,
}

fn failed(what: &str, e: impl std::fmt::Display) -> CatalogError {
    CatalogError::Backend(format!("quickwit {what}: {e}"))
}

/// An error answer: Quickwit's `{"message": ...}`, or the status.
async fn refusal(what: &str, answer: reqwest::Response) -> CatalogError {
    let status = answer.status();
    let message = answer
        .json::<Value>()
        .await
        .ok()
        .and_then(|body| body["message"].as_str().map(str::to_owned))
        .unwrap_or_default();
    failed(what, format!("{status} {message}"))
}

impl QuickwitIndex {
    /// Opens `quickwit://host:port/INDEX`, creating the index if Quickwit has none of that id.
    pub async fn open(url: &str) -> Result<Self, CatalogError> {
        let rest = url
            .strip_prefix("quickwit://")
            .ok_or_else(|| failed("url", "must be quickwit://host:port/INDEX"))?;
        let (host, index) = rest.split_once('/').ok_or_else(|| failed("url", "names no index"))?;
        let valid_id = index.len() >= 3
            && index.starts_with(|c: char| c.is_ascii_alphabetic())
            && index.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if host.is_empty() || !valid_id {
            return Err(failed("url", "host:port, then an index id of 3+ letters, digits, - or _"));
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| failed("client", e))?;
        let mut quickwit = Self {
            http,
            api: format!("http://{host}/api/v1"),
            index: index.to_owned(),
            created: false,
        };
        quickwit.created = quickwit.ensure_index().await?;
        Ok(quickwit)
    }

    /// Opens `quickwit://host:port/INDEX` as a new, empty index, dropping the one of that id
    /// (the repair for an index that drifted from the catalog: the catalog's open then fills
    /// it whole).
    pub async fn open_empty(url: &str) -> Result<Self, CatalogError> {
        let mut quickwit = Self::open(url).await?;
        if !quickwit.created {
            let url = format!("{}/indexes/{}", quickwit.api, quickwit.index);
            let dropped =
                quickwit.http.delete(&url).send().await.map_err(|e| failed("index drop", e))?;
            if !dropped.status().is_success() && dropped.status().as_u16() != 404 {
                return Err(refusal("index drop", dropped).await);
            }
            quickwit.created = quickwit.ensure_index().await?;
            if !quickwit.created {
                return Err(failed("index drop", "another node created the index again meanwhile"));
            }
        }
        Ok(quickwit)
    }

    /// Creates the index unless it exists; whether this call created it.
    async fn ensure_index(&self) -> Result<bool, CatalogError> {
        let url = format!("{}/indexes/{}", self.api, self.index);
        let found = self.http.get(&url).send().await.map_err(|e| failed("index lookup", e))?;
        match found.status().as_u16() {
            200 => return Ok(false),
            404 => {}
            _ => return Err(refusal("index lookup", found).await),
        }
        let created = self
            .http
            .post(format!("{}/indexes", self.api))
            .json(&index_config(&self.index))
            .send()
            .await
            .map_err(|e| failed("index creation", e))?;
        if created.status().is_success() {
            tracing::info!(index = %self.index, "quickwit index created");
            return Ok(true);
        }
        // Another node created it meanwhile: Quickwit answers 400 "already exist(s)".
        match refusal("index creation", created).await {
            CatalogError::Backend(m) if m.contains("already exist") => Ok(false),
            other => Err(other),
        }
    }

    async fn ingest(&self, docs: &[Indexed]) -> Result<(), CatalogError> {
        for batch in docs.chunks(INGEST_BATCH) {
            let mut body = String::new();
            for doc in batch {
                body.push_str(&document(doc).to_string());
                body.push('\n');
            }
            let answer = self
                .http
                .post(format!("{}/{}/ingest?commit=wait_for", self.api, self.index))
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .body(body)
                .send()
                .await
                .map_err(|e| failed("ingest", e))?;
            if !answer.status().is_success() {
                return Err(refusal("ingest", answer).await);
            }
            let answer: IngestAnswer =
                answer.json().await.map_err(|e| failed("ingest answer", e))?;
            if answer.num_rejected_docs.unwrap_or(0) > 0 {
                return Err(failed(
                    "ingest",
                    format!("{:?} documents rejected", answer.num_rejected_docs),
                ));
            }
        }
        Ok(())
    }

    async fn delete(&self, ids: &[&str]) -> Result<(), CatalogError> {
        let query = format!("id:IN [{}]", ids.join(" "));
        let answer = self
            .http
            .post(format!("{}/{}/delete-tasks", self.api, self.index))
            .json(&json!({ "query": query }))
            .send()
            .await
            .map_err(|e| failed("delete task", e))?;
        if !answer.status().is_success() {
            return Err(refusal("delete task", answer).await);
        }
        Ok(())
    }
}

/// The index's config: the fields the embedded index has, fast where filtered, sorted or counted.
fn index_config(index: &str) -> Value {
    let text = |name: &str| json!({"name": name, "type": "text", "tokenizer": "default", "record": "freq", "fieldnorms": true});
    json!({
        "version": "0.8",
        "index_id": index,
        "doc_mapping": {
            "mode": "strict",
            "field_mappings": [
                {"name": "id", "type": "text", "tokenizer": "raw", "record": "basic", "stored": true, "fast": true},
                text("name"),
                text("description"),
                {"name": "category", "type": "text", "tokenizer": "raw", "record": "basic", "fast": true},
                {"name": "price_minor", "type": "i64", "indexed": true, "fast": true},
                {"name": "created_at_ms", "type": "u64", "indexed": true, "fast": true},
                {"name": "in_stock", "type": "u64", "indexed": true, "fast": true},
            ],
        },
        "search_settings": {"default_search_fields": ["name", "description"]},
        "indexing_settings": {"commit_timeout_secs": 1},
    })
}

fn document(doc: &Indexed) -> Value {
    json!({
        "id": doc.id,
        "name": doc.name,
        "description": doc.description,
        "category": doc.category,
        "price_minor": doc.price_minor,
        "created_at_ms": doc.created_at_ms,
        "in_stock": u64::from(doc.in_stock),
    })
}

/// Every spelling one edit (insert, delete, replace, swap of neighbours) from `word`, and itself.
fn one_edit_away(word: &str) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    let mut all: HashSet<String> = HashSet::from([word.to_owned()]);
    let spell = |c: &[char]| c.iter().collect::<String>();
    for i in 0..=chars.len() {
        for letter in ALPHABET.chars() {
            let mut inserted = chars.clone();
            inserted.insert(i, letter);
            all.insert(spell(&inserted));
            if i < chars.len() {
                let mut replaced = chars.clone();
                replaced[i] = letter;
                all.insert(spell(&replaced));
            }
        }
        if i < chars.len() {
            let mut deleted = chars.clone();
            deleted.remove(i);
            all.insert(spell(&deleted));
        }
        if i + 1 < chars.len() {
            let mut swapped = chars.clone();
            swapped.swap(i, i + 1);
            all.insert(spell(&swapped));
        }
    }
    let mut all: Vec<String> = all.into_iter().collect();
    all.sort();
    all
}

/// The query-language text of a search.
fn query_text(q: &SearchQuery) -> String {
    let mut clauses = Vec::new();
    for word in words(q.text.as_deref().unwrap_or("")) {
        let terms = if word.chars().count() >= FUZZY_FROM {
            format!("IN [{}]", one_edit_away(&word).join(" "))
        } else {
            word
        };
        clauses.push(format!("(name:{terms} OR description:{terms})"));
    }
    if let Some(category) = &q.category {
        clauses.push(format!("category:\"{category}\""));
    }
    if q.min_price.is_some() || q.max_price.is_some() {
        let bound = |b: Option<i64>| b.map_or("*".to_owned(), |b| b.to_string());
        clauses.push(format!("price_minor:[{} TO {}]", bound(q.min_price), bound(q.max_price)));
    }
    if let Some(in_stock) = q.in_stock {
        clauses.push(format!("in_stock:{}", u64::from(in_stock)));
    }
    if clauses.is_empty() { "*".to_owned() } else { clauses.join(" AND ") }
}

/// The search request: the page, and the aggregations behind the facets.
fn search_body(q: &SearchQuery) -> Value {
    let sort_by = match q.sort {
        Sort::Relevance => "_score",
        // Quickwit sorts descending unless the field is prefixed with `-`.
        Sort::PriceAsc => "-price_minor",
        Sort::PriceDesc => "price_minor",
        Sort::Newest => "created_at_ms",
    };
    let mut ranges = Vec::new();
    let mut from: Option<i64> = None;
    for bound in &q.price_bounds {
        ranges.push(match from {
            Some(from) => json!({"from": from, "to": bound}),
            None => json!({"to": bound}),
        });
        from = Some(*bound);
    }
    ranges.push(match from {
        Some(from) => json!({"from": from}),
        None => json!({}),
    });
    json!({
        "query": query_text(q),
        "max_hits": q.limit + 1,
        "start_offset": q.offset,
        "sort_by": sort_by,
        "aggs": {
            "category": {"terms": {"field": "category", "size": 10_000}},
            "price": {"range": {"field": "price_minor", "ranges": ranges}},
            "in_stock": {"terms": {"field": "in_stock", "size": 2}},
        },
    })
}

#[derive(Debug, Deserialize)]
struct IngestAnswer {
    num_rejected_docs: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct SearchAnswer {
    num_hits: u64,
    hits: Vec<Value>,
    #[serde(default)]
    aggregations: Value,
}

/// The facets and page of Quickwit's answer.
fn hits_of(q: &SearchQuery, answer: SearchAnswer) -> Result<SearchHits, CatalogError> {
    let bad = |what: &str| failed("search answer", format!("no {what}"));
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    for hit in &answer.hits {
        let id = hit["id"].as_str().ok_or_else(|| bad("hit id"))?;
        if seen.insert(id.to_owned()) {
            ids.push(id.to_owned());
        }
    }
    let more = ids.len() > q.limit;
    ids.truncate(q.limit);
    let buckets = |agg: &str| -> Result<Vec<Value>, CatalogError> {
        answer.aggregations[agg]["buckets"].as_array().cloned().ok_or_else(|| bad(agg))
    };
    let count = |b: &Value| b["doc_count"].as_u64().unwrap_or(0);
    let mut categories: Vec<(String, u64)> = buckets("category")?
        .iter()
        .filter_map(|b| Some((b["key"].as_str()?.to_owned(), count(b))))
        .collect();
    categories.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    // One bucket per range asked for, in order, matched by their bounds (Quickwit may add
    // others around them).
    let mut prices = vec![0; q.price_bounds.len() + 1];
    for bucket in buckets("price")? {
        let from = bucket["from"].as_f64().map(|f| f as i64);
        let slot = match from {
            None => Some(0),
            Some(from) => q.price_bounds.iter().position(|b| *b == from).map(|i| i + 1),
        };
        if let Some(slot) = slot {
            prices[slot] += count(&bucket);
        }
    }
    let mut in_stock = (0, 0);
    for bucket in buckets("in_stock")? {
        match bucket["key"].as_f64() {
            Some(k) if k >= 1.0 => in_stock.0 += count(&bucket),
            Some(_) => in_stock.1 += count(&bucket),
            None => {}
        }
    }
    Ok(SearchHits { ids, more, total: answer.num_hits, categories, prices, in_stock })
}

#[async_trait]
impl SearchIndex for QuickwitIndex {
    fn shared(&self) -> bool {
        true
    }

    async fn upsert(&self, docs: Vec<Indexed>) -> Result<(), CatalogError> {
        if docs.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        self.delete(&ids).await?;
        self.ingest(&docs).await
    }

    async fn rebuild(&self, docs: Vec<Indexed>) -> Result<(), CatalogError> {
        // The nodes keep a shared index; only the node that created it fills it.
        if self.created { self.ingest(&docs).await } else { Ok(()) }
    }

    async fn search(&self, query: SearchQuery) -> Result<SearchHits, CatalogError> {
        let answer = self
            .http
            .post(format!("{}/{}/search", self.api, self.index))
            .json(&search_body(&query))
            .send()
            .await
            .map_err(|e| failed("search", e))?;
        if !answer.status().is_success() {
            return Err(refusal("search", answer).await);
        }
        let answer: SearchAnswer = answer.json().await.map_err(|e| failed("search answer", e))?;
        hits_of(&query, answer)
    }
}

#[cfg(test)]
mod tests {
    //! Against a local server that records each request, checks it as Quickwit would (its
    //! search body refuses unknown keys; ingest takes NDJSON) and answers in the shapes of
    //! Quickwit's REST API reference.

    use std::sync::{Arc, Mutex};

    use warp::Filter;
    use warp::http::StatusCode;

    use super::*;

    /// One request as the server saw it: method, path and query, body.
    type Seen = (String, String, String);

    struct FakeQuickwit {
        url: String,
        seen: Arc<Mutex<Vec<Seen>>>,
        /// Whether `GET /indexes/{id}` finds the index.
        exists: Arc<Mutex<bool>>,
    }

    /// The keys Quickwit's search body accepts (it refuses any other with 400).
    const SEARCH_KEYS: [&str; 12] = [
        "query",
        "max_hits",
        "start_offset",
        "search_field",
        "snippet_fields",
        "sort_by",
        "sort_by_field",
        "aggs",
        "start_timestamp",
        "end_timestamp",
        "format",
        "count_all",
    ];

    fn answer(status: StatusCode, body: Value) -> warp::reply::Response {
        warp::http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(body.to_string().into())
            .unwrap()
    }

    fn search_answer() -> Value {
        // Shapes from the reference: hits are the stored documents; range buckets carry their
        // bounds as floats; terms on a u64 field key by number.
        json!({
            "num_hits": 7,
            "hits": [{"id": "p4"}, {"id": "p7"}, {"id": "p7"}, {"id": "p5"}],
            "elapsed_time_micros": 812,
            "errors": [],
            "aggregations": {
                "category": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0,
                    "buckets": [{"key": "kitchen", "doc_count": 2}, {"key": "outdoor", "doc_count": 4},
                                {"key": "garden", "doc_count": 1}]},
                "price": {"buckets": [
                    {"key": "*-1000", "to": 1000.0, "doc_count": 1},
                    {"key": "1000-5000", "from": 1000.0, "to": 5000.0, "doc_count": 4},
                    {"key": "5000-*", "from": 5000.0, "doc_count": 2}]},
                "in_stock": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0,
                    "buckets": [{"key": 1.0, "doc_count": 5}, {"key": 0.0, "doc_count": 2}]},
            },
        })
    }

    async fn fake_quickwit(exists: bool) -> FakeQuickwit {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let exists = Arc::new(Mutex::new(exists));
        let (log, found) = (seen.clone(), exists.clone());
        let routes = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::body::bytes())
            .map(move |method: warp::http::Method, path: warp::path::FullPath, query: String, body: bytes::Bytes| {
                let body = String::from_utf8(body.to_vec()).unwrap();
                let path = path.as_str().to_owned();
                log.lock().unwrap().push((format!("{method} {path}"), query.clone(), body.clone()));
                match (method.as_str(), path.as_str()) {
                    ("GET", "/api/v1/indexes/products") if *found.lock().unwrap() => {
                        answer(StatusCode::OK, json!({"index_uid": "products:01H", "index_config": {}}))
                    }
                    ("GET", "/api/v1/indexes/products") => answer(
                        StatusCode::NOT_FOUND,
                        json!({"message": "index `products` not found"}),
                    ),
                    ("DELETE", "/api/v1/indexes/products") if *found.lock().unwrap() => {
                        *found.lock().unwrap() = false;
                        answer(StatusCode::OK, json!([{"file_name": "01H.split", "file_size_bytes": "1 KB"}]))
                    }
                    ("POST", "/api/v1/indexes") => {
                        *found.lock().unwrap() = true;
                        answer(StatusCode::OK, json!({"version": "0.9", "index_uid": "products:01H"}))
                    }
                    ("POST", "/api/v1/products/ingest") => {
                        // NDJSON: every line one document; a line that is not is rejected.
                        let lines: Vec<&str> = body.lines().collect();
                        let good = lines.iter().filter(|l| serde_json::from_str::<Value>(l).is_ok()).count();
                        answer(StatusCode::OK, json!({"num_docs_for_processing": lines.len(),
                            "num_ingested_docs": good, "num_rejected_docs": lines.len() - good}))
                    }
                    ("POST", "/api/v1/products/delete-tasks") => answer(
                        StatusCode::OK,
                        json!({"create_timestamp": 1_764_547_200, "opstamp": 3, "delete_query": {}}),
                    ),
                    ("POST", "/api/v1/products/search") => {
                        let request: Value = serde_json::from_str(&body).unwrap();
                        match request.as_object().unwrap().keys().find(|k| !SEARCH_KEYS.contains(&k.as_str())) {
                            Some(key) => answer(StatusCode::BAD_REQUEST, json!({
                                "message": format!("Request body deserialize error: unknown field `{key}`")})),
                            None => answer(StatusCode::OK, search_answer()),
                        }
                    }
                    _ => answer(StatusCode::NOT_FOUND, json!({"message": "no route"})),
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        FakeQuickwit { url: format!("quickwit://{addr}/products"), seen, exists }
    }

    impl FakeQuickwit {
        fn requests(&self) -> Vec<Seen> {
            std::mem::take(&mut *self.seen.lock().unwrap())
        }
    }

    #[tokio::test]
    async fn a_missing_index_is_created_with_fast_fields_and_filled_once() {
        let quickwit = fake_quickwit(false).await;
        let index = QuickwitIndex::open(&quickwit.url).await.unwrap();
        let requests = quickwit.requests();
        let paths: Vec<&str> = requests.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(paths, ["GET /api/v1/indexes/products", "POST /api/v1/indexes"]);
        let config: Value = serde_json::from_str(&requests[1].2).unwrap();
        assert_eq!(
            (config["version"].as_str(), config["index_id"].as_str()),
            (Some("0.8"), Some("products"))
        );
        let fields = config["doc_mapping"]["field_mappings"].as_array().unwrap();
        for fast in ["id", "category", "price_minor", "created_at_ms", "in_stock"] {
            let field = fields.iter().find(|f| f["name"] == fast).unwrap();
            assert_eq!(field["fast"], true, "{fast} is filtered, sorted or counted");
        }
        let id = fields.iter().find(|f| f["name"] == "id").unwrap();
        assert_eq!((id["tokenizer"].as_str(), id["stored"].as_bool()), (Some("raw"), Some(true)));

        // The node that created it fills it: NDJSON, committed before the call returns.
        index.rebuild(conformance_docs()).await.unwrap();
        let requests = quickwit.requests();
        assert_eq!(requests.len(), 1);
        let (path, query, body) = &requests[0];
        assert_eq!(
            (path.as_str(), query.as_str()),
            ("POST /api/v1/products/ingest", "commit=wait_for")
        );
        let docs: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(docs.len(), 7);
        assert_eq!(
            docs[0],
            json!({"id": "p1", "name": "Canvas tent",
            "description": "Canvas tent from the conformance catalog", "category": "outdoor",
            "price_minor": 12_000, "created_at_ms": 1, "in_stock": 1})
        );

        // Another node finds it and leaves it be.
        assert!(*quickwit.exists.lock().unwrap());
        let other = QuickwitIndex::open(&quickwit.url).await.unwrap();
        other.rebuild(conformance_docs()).await.unwrap();
        let paths: Vec<String> = quickwit.requests().into_iter().map(|(p, _, _)| p).collect();
        assert_eq!(paths, ["GET /api/v1/indexes/products"]);
    }

    #[tokio::test]
    async fn an_index_opened_empty_is_dropped_created_and_filled() {
        let quickwit = fake_quickwit(true).await;
        let index = QuickwitIndex::open_empty(&quickwit.url).await.unwrap();
        index.rebuild(conformance_docs()).await.unwrap();
        let paths: Vec<String> = quickwit.requests().into_iter().map(|(p, _, _)| p).collect();
        assert_eq!(
            paths,
            [
                "GET /api/v1/indexes/products",
                "DELETE /api/v1/indexes/products",
                "GET /api/v1/indexes/products",
                "POST /api/v1/indexes",
                "POST /api/v1/products/ingest",
            ]
        );
    }

    fn conformance_docs() -> Vec<Indexed> {
        super::super::conformance::catalog()
    }

    #[tokio::test]
    async fn a_replaced_document_is_a_delete_task_then_a_new_document() {
        let quickwit = fake_quickwit(true).await;
        let index = QuickwitIndex::open(&quickwit.url).await.unwrap();
        quickwit.requests();
        index.upsert(conformance_docs()[..2].to_vec()).await.unwrap();
        let requests = quickwit.requests();
        assert_eq!(requests[0].0, "POST /api/v1/products/delete-tasks");
        assert_eq!(
            serde_json::from_str::<Value>(&requests[0].2).unwrap(),
            json!({"query": "id:IN [p1 p2]"})
        );
        assert_eq!(
            (requests[1].0.as_str(), requests[1].1.as_str()),
            ("POST /api/v1/products/ingest", "commit=wait_for")
        );
        assert_eq!(requests[1].2.lines().count(), 2);
    }

    #[tokio::test]
    async fn a_search_asks_what_quickwit_reads_and_its_answer_becomes_page_and_facets() {
        let quickwit = fake_quickwit(true).await;
        let index = QuickwitIndex::open(&quickwit.url).await.unwrap();
        quickwit.requests();
        let query = SearchQuery {
            text: Some("Lantern, mug!".into()),
            category: Some("outdoor".into()),
            min_price: Some(2_500),
            max_price: None,
            in_stock: Some(true),
            sort: Sort::PriceAsc,
            offset: 20,
            limit: 2,
            price_bounds: vec![1_000, 5_000],
        };
        let hits = index.search(query).await.unwrap();
        let requests = quickwit.requests();
        let body: Value = serde_json::from_str(&requests[0].2).unwrap();
        let text = body["query"].as_str().unwrap();
        let lantern = format!("IN [{}]", one_edit_away("lantern").join(" "));
        assert_eq!(
            text,
            format!(
                "(name:{lantern} OR description:{lantern}) AND (name:mug OR description:mug) \
                AND category:\"outdoor\" AND price_minor:[2500 TO *] AND in_stock:1"
            )
        );
        assert_eq!((body["max_hits"].as_u64(), body["start_offset"].as_u64()), (Some(3), Some(20)));
        assert_eq!(body["sort_by"], "-price_minor", "Quickwit sorts ascending with a leading -");
        assert_eq!(
            body["aggs"]["price"]["range"]["ranges"],
            json!([{"to": 1000}, {"from": 1000, "to": 5000}, {"from": 5000}])
        );
        assert_eq!(body["aggs"]["category"]["terms"]["field"], "category");

        // A page lists an id once (a replaced document's old copy may still match).
        assert_eq!(hits.ids, ["p4", "p7"]);
        assert!(hits.more);
        assert_eq!(hits.total, 7);
        let categories: Vec<(&str, u64)> =
            hits.categories.iter().map(|(c, n)| (c.as_str(), *n)).collect();
        assert_eq!(categories, [("outdoor", 4), ("kitchen", 2), ("garden", 1)]);
        assert_eq!(hits.prices, [1, 4, 2]);
        assert_eq!(hits.in_stock, (5, 2));
    }

    #[tokio::test]
    async fn every_sort_is_asked_in_quickwits_terms_and_bad_urls_are_refused() {
        let quickwit = fake_quickwit(true).await;
        let index = QuickwitIndex::open(&quickwit.url).await.unwrap();
        for (sort, asked) in [
            (Sort::Relevance, "_score"),
            (Sort::PriceDesc, "price_minor"),
            (Sort::Newest, "created_at_ms"),
        ] {
            let query = SearchQuery { sort, ..conformance_query() };
            index.search(query).await.unwrap();
            let body: Value = serde_json::from_str(&quickwit.requests().pop().unwrap().2).unwrap();
            assert_eq!(body["sort_by"], asked);
            assert_eq!(body["query"], "*");
        }
        assert!(QuickwitIndex::open("quickwit://127.0.0.1:1/x").await.is_err(), "a bad id");
        assert!(QuickwitIndex::open("http://127.0.0.1:1/products").await.is_err());
    }

    fn conformance_query() -> SearchQuery {
        SearchQuery {
            text: None,
            category: None,
            min_price: None,
            max_price: None,
            in_stock: None,
            sort: Sort::Newest,
            offset: 0,
            limit: 20,
            price_bounds: vec![],
        }
    }

    #[test]
    fn a_typo_is_one_edit_and_two_are_not() {
        let near = one_edit_away("lantern");
        for typo in ["lantern", "lanterns", "lanern", "lantarn", "lantenr", "alntern"] {
            assert!(near.contains(&typo.to_owned()), "{typo}");
        }
        for far in ["ltanern", "lanter", "lnatren"] {
            if far == "lanter" {
                assert!(near.contains(&far.to_owned()), "a deletion is one edit");
            } else {
                assert!(!near.contains(&far.to_owned()), "{far} is two edits");
            }
        }
        // 7 letters: 8 x 36 insertions, 7 x 35 replacements, 7 deletions, 6 swaps, at most.
        assert!(near.len() <= 1 + 8 * 36 + 7 * 35 + 7 + 6);
    }
}
