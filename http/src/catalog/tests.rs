use std::collections::BTreeSet;

use std::time::Duration;

use storefront_actors::StockUpdate;
use storefront_storage::embedded::EmbeddedStore;

use super::feed::FOLLOW_EVERY;
use super::search::SearchHits;

use super::*;

fn usd(amount: &str) -> Money {
    Money::parse(amount, Currency::USD).unwrap()
}

fn new(sku: &str, name: &str, description: &str, category: &str) -> NewProduct {
    NewProduct {
        sku: Sku::parse(sku).unwrap(),
        name: name.into(),
        description: description.into(),
        category: category.into(),
        price: usd("9.99"),
        max_per_customer: None,
    }
}

async fn find(
    catalog: &Catalog,
    text: Option<&str>,
    category: Option<&str>,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Page, CatalogError> {
    let search = Search { text, category, limit, cursor, ..Search::default() };
    catalog.search(search, Currency::USD).await
}

async fn open(dir: &Path) -> Catalog {
    let store = Arc::new(EmbeddedStore::open(&dir.join("store")).await.unwrap());
    Catalog::open(store, &dir.join("search"), Currency::USD).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_are_created_validated_and_updated() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = open(dir.path()).await;
    let mug =
        catalog.create(new("MUG-1", "Blue mug", "A mug for coffee", "kitchen")).await.unwrap();
    assert_eq!(mug.product_id, "prod-mug-1");
    assert_eq!(catalog.get("prod-mug-1").await.unwrap().as_deref(), Some(&mug));
    assert_eq!(catalog.by_sku(&Sku::parse("MUG-1").unwrap()).await.unwrap().as_deref(), Some(&mug));
    assert_eq!(
        catalog.create(new("MUG-1", "Other", "", "kitchen")).await,
        Err(CatalogError::SkuExists("MUG-1".into()))
    );
    for (field, bad) in [
        ("name", new("A-1", " ", "", "kitchen")),
        ("category", new("A-2", "Name", "", "Kitchen Stuff")),
        ("description", new("A-3", "Name", &"x".repeat(5001), "kitchen")),
    ] {
        assert!(
            matches!(catalog.create(bad).await, Err(CatalogError::Invalid { field: f, .. }) if f == field)
        );
    }
    let mut eur = new("A-4", "Name", "", "kitchen");
    eur.price = Money::parse("1", Currency::EUR).unwrap();
    assert!(matches!(catalog.create(eur).await, Err(CatalogError::Invalid { field: "price", .. })));

    let patch = ProductPatch {
        name: Some("Red mug".into()),
        price: Some(usd("12.50")),
        ..ProductPatch::default()
    };
    let red = catalog.update("prod-mug-1", patch).await.unwrap();
    assert_eq!(
        (red.name.as_str(), red.price, red.description.as_str()),
        ("Red mug", usd("12.50"), "A mug for coffee")
    );
    assert_eq!(
        catalog.update("prod-none", ProductPatch::default()).await,
        Err(CatalogError::NotFound("prod-none".into()))
    );
    // The index follows updates: the old name no longer matches.
    assert!(find(&catalog, Some("blue"), None, 10, None).await.unwrap().items.is_empty());
    assert_eq!(
        find(&catalog, Some("red"), None, 10, None).await.unwrap().items,
        vec![Arc::new(red)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_matches_text_filters_categories_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = open(dir.path()).await;
    for product in demo::products(120, Currency::USD) {
        catalog.create(product).await.unwrap();
    }
    let tents = find(&catalog, Some("tent"), None, 100, None).await.unwrap();
    assert!(!tents.items.is_empty());
    assert!(tents.items.iter().all(|p| p.name.to_lowercase().contains("tent")));
    // Words of the description count too, and odd syntax never fails.
    assert!(!find(&catalog, Some("warranty"), None, 5, None).await.unwrap().items.is_empty());
    assert!(find(&catalog, Some("AND OR (( \"unclosed"), None, 5, None).await.is_ok());
    let books = find(&catalog, None, Some("books"), 100, None).await.unwrap();
    assert_eq!(books.items.len(), 15);
    assert!(books.items.iter().all(|p| p.category == "books"));

    // Pages of 7 cover all 120 exactly once.
    let mut seen = BTreeSet::new();
    let mut cursor = None;
    loop {
        let page = find(&catalog, None, None, 7, cursor.as_deref()).await.unwrap();
        for product in page.items {
            assert!(seen.insert(product.product_id.clone()), "a product appeared twice");
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 120);
    assert!(matches!(
        find(&catalog, None, None, 0, None).await,
        Err(CatalogError::Invalid { field: "limit", .. })
    ));
    assert!(matches!(
        find(&catalog, None, None, 101, None).await,
        Err(CatalogError::Invalid { .. })
    ));
    assert!(matches!(
        find(&catalog, None, None, 5, Some("x")).await,
        Err(CatalogError::Invalid { field: "cursor", .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_survives_a_restart_and_is_rebuilt_when_lost() {
    let dir = tempfile::tempdir().unwrap();
    {
        let catalog = open(dir.path()).await;
        catalog.create(new("LAMP-1", "Desk lamp", "Warm light", "home")).await.unwrap();
        catalog.create(new("LAMP-2", "Floor lamp", "Tall and warm", "home")).await.unwrap();
    }
    let catalog = open(dir.path()).await;
    assert_eq!(find(&catalog, Some("lamp"), None, 10, None).await.unwrap().items.len(), 2);
    drop(catalog);
    std::fs::remove_dir_all(dir.path().join("search")).unwrap();
    let catalog = open(dir.path()).await;
    assert_eq!(find(&catalog, Some("warm"), None, 10, None).await.unwrap().items.len(), 2);
}

#[test]
fn the_demo_catalog_is_deterministic_and_varied() {
    let first = demo::products(1000, Currency::USD);
    assert_eq!(first, demo::products(1000, Currency::USD));
    let categories: BTreeSet<_> = first.iter().map(|p| p.category.as_str()).collect();
    assert_eq!(categories.len(), demo::CATEGORIES.len());
    let skus: BTreeSet<_> = first.iter().map(|p| p.sku.as_str()).collect();
    assert_eq!(skus.len(), 1000);
    let names: BTreeSet<_> = first.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 1000);
    assert!(first.iter().all(|p| !p.price.is_negative() && p.price.currency() == Currency::USD));
    let yen = demo::products(3, Currency::JPY);
    assert_eq!(yen[0].price.amount().scale(), 0);
    assert!((10..=209).contains(&demo::initial_stock(999)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogs_sharing_a_store_agree_through_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("store")).await.unwrap());
    let a = Catalog::open(store.clone(), &dir.path().join("a"), Currency::USD).await.unwrap();
    let b = Catalog::open(store.clone(), &dir.path().join("b"), Currency::USD).await.unwrap();
    a.create(new("MUG-1", "Blue mug", "", "kitchen")).await.unwrap();
    assert_eq!(b.get("prod-mug-1").await.unwrap(), None, "b has not applied version 1 yet");
    // A write decides on the catalog as of the stream's end, whatever its node had applied.
    assert_eq!(
        b.create(new("mug-1", "Other", "", "kitchen")).await,
        Err(CatalogError::SkuExists("mug-1".into()))
    );
    let patch = ProductPatch {
        name: Some("Red mug".into()),
        price: Some(usd("12.00")),
        ..ProductPatch::default()
    };
    let red = b.update("prod-mug-1", patch).await.unwrap();
    assert_eq!((red.version, b.version()), (2, 2));
    assert_eq!(a.get("prod-mug-1").await.unwrap().unwrap().price, usd("9.99"));

    a.catch_up().await.unwrap();
    assert_eq!(a.get("prod-mug-1").await.unwrap().as_deref(), Some(&red));
    assert_eq!(find(&a, Some("red"), None, 10, None).await.unwrap().items.len(), 1);
    assert!(find(&a, Some("blue"), None, 10, None).await.unwrap().items.is_empty());

    let rates =
        FxRates::new(Currency::USD, [(Currency::EUR, "0.5".parse().unwrap())].into()).unwrap();
    b.replace_fx(rates.clone()).await.unwrap();
    a.catch_up().await.unwrap();
    assert_eq!(*a.fx(), rates);
    assert_eq!(a.fx_versioned().1, 3);

    // A node that was down: its index (at version 3) is brought to the stream's end at open.
    drop(a);
    b.update("prod-mug-1", ProductPatch { name: Some("Green mug".into()), ..Default::default() })
        .await
        .unwrap();
    let a = Catalog::open(store, &dir.path().join("a"), Currency::USD).await.unwrap();
    assert_eq!(a.version(), 4);
    assert_eq!(find(&a, Some("green"), None, 10, None).await.unwrap().items.len(), 1);
    assert!(find(&a, Some("red"), None, 10, None).await.unwrap().items.is_empty());
    assert_eq!(*a.fx(), rates);
}

/// A shared index whose writes wait until the test lets them through.
#[derive(Debug)]
struct GatedSharedIndex {
    inner: Arc<dyn SearchIndex>,
    entered: tokio::sync::Notify,
    gate: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl SearchIndex for GatedSharedIndex {
    fn shared(&self) -> bool {
        true
    }
    async fn upsert(&self, docs: Vec<Indexed>) -> Result<(), CatalogError> {
        self.entered.notify_one();
        self.gate.acquire().await.map_err(backend)?.forget();
        self.inner.upsert(docs).await
    }
    async fn rebuild(&self, docs: Vec<Indexed>) -> Result<(), CatalogError> {
        self.inner.rebuild(docs).await
    }
    async fn search(&self, query: SearchQuery) -> Result<SearchHits, CatalogError> {
        self.inner.search(query).await
    }
}

fn stock(sku: &str, available: u64, seq: u64) -> StockUpdate {
    let levels =
        storefront_actors::StockLevels { on_hand: available, reserved: 0, available, sold: 0 };
    StockUpdate { sku: Arc::from(sku), levels, seq, from_peer: false }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_shared_index_write_does_not_hold_up_applying_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("store")).await.unwrap());
    let index = Arc::new(GatedSharedIndex {
        inner: search::embedded::open(&dir.path().join("index")).unwrap(),
        entered: tokio::sync::Notify::new(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let slow = Catalog::open_with(store.clone(), index.clone(), Currency::USD).await.unwrap();
    let other = Catalog::open(store, &dir.path().join("other"), Currency::USD).await.unwrap();
    other.create(new("MUG-1", "Blue mug", "", "kitchen")).await.unwrap();
    slow.catch_up().await.unwrap();

    // The SKU comes into stock: the shared index write hangs.
    let (updates, receiver) = tokio::sync::broadcast::channel(16);
    let following = tokio::spawn(slow.clone().follow_stock(receiver));
    updates.send(stock("MUG-1", 3, 1)).unwrap();
    index.entered.notified().await;

    // Meanwhile another node renames the product: this node applies it all the same.
    let patch = ProductPatch { name: Some("Red mug".into()), ..ProductPatch::default() };
    other.update("prod-mug-1", patch).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), slow.catch_up())
        .await
        .expect("catching up waited for the index write")
        .unwrap();
    assert_eq!(slow.get("prod-mug-1").await.unwrap().unwrap().name, "Red mug");
    index.gate.add_permits(100);
    following.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_changes_the_index_missed_are_read_back_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("store")).await.unwrap());
    let catalog =
        Catalog::open(store.clone(), &dir.path().join("index"), Currency::USD).await.unwrap();
    for sku in ["A-1", "A-2", "A-3"] {
        catalog.create(new(sku, &format!("Lamp {sku}"), "", "lights")).await.unwrap();
    }
    let stocked = |catalog: Catalog| async move {
        let search = Search { in_stock: Some(true), limit: 10, ..Search::default() };
        let page = catalog.search(search, Currency::USD).await.unwrap();
        page.items.iter().map(|p| p.sku.to_string()).collect::<BTreeSet<_>>()
    };
    // came into stock, as their actors recorded; the feed overflows before the
    // catalog hears of them.
    for sku in ["A-2", "A-3"] {
        store.put(Table::SkuAvailability, sku.as_bytes(), b"1").await.unwrap();
    }
    let (updates, receiver) = tokio::sync::broadcast::channel(1);
    updates.send(stock("A-1", 5, 1)).unwrap();
    updates.send(stock("A-2", 5, 1)).unwrap();
    let following = tokio::spawn(catalog.clone().follow_stock(receiver));
    let want = BTreeSet::from(["A-2".to_owned(), "A-3".to_owned()]);
    let mut waits = 0;
    while stocked(catalog.clone()).await != want {
        waits += 1;
        assert!(waits < 200, "still {:?}", stocked(catalog.clone()).await);
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
    following.abort();
}

/// A shared index that has not yet dropped the copies a change replaced (Quickwit deletes
/// late): here, one that keeps the first copy of every product.
#[derive(Debug)]
struct StaleSharedIndex(Arc<dyn SearchIndex>);

#[async_trait::async_trait]
impl SearchIndex for StaleSharedIndex {
    fn shared(&self) -> bool {
        true
    }
    async fn upsert(&self, _: Vec<Indexed>) -> Result<(), CatalogError> {
        Ok(())
    }
    async fn rebuild(&self, docs: Vec<Indexed>) -> Result<(), CatalogError> {
        self.0.rebuild(docs).await
    }
    async fn search(&self, query: SearchQuery) -> Result<SearchHits, CatalogError> {
        self.0.search(query).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_a_shared_index_still_holds_as_it_was_is_not_listed_where_it_no_longer_belongs() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("store")).await.unwrap());
    let writer = Catalog::open(store.clone(), &dir.path().join("w"), Currency::USD).await.unwrap();
    writer.create(new("MUG-1", "Blue mug", "", "kitchen")).await.unwrap();
    writer.create(new("MUG-2", "Blue cup", "", "kitchen")).await.unwrap();
    let index = StaleSharedIndex(search::embedded::open(&dir.path().join("shared")).unwrap());
    let reader = Catalog::open_with(store, Arc::new(index), Currency::USD).await.unwrap();
    let patch = ProductPatch {
        name: Some("Red mug".into()),
        category: Some("gifts".into()),
        price: Some(usd("50.00")),
        ..ProductPatch::default()
    };
    writer.update("prod-mug-1", patch).await.unwrap();
    reader.catch_up().await.unwrap();

    let skus = |page: Page| page.items.iter().map(|p| p.sku.to_string()).collect::<Vec<_>>();
    assert_eq!(skus(find(&reader, Some("blue"), None, 10, None).await.unwrap()), ["MUG-2"]);
    assert_eq!(skus(find(&reader, None, Some("kitchen"), 10, None).await.unwrap()), ["MUG-2"]);
    let cheap = Search { max_price: Some(usd("20.00")), limit: 10, ..Search::default() };
    assert_eq!(skus(reader.search(cheap, Currency::USD).await.unwrap()), ["MUG-2"]);
}
