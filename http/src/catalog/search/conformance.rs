//! What every [`SearchIndex`] backend must do, as one suite each backend's tests run: words,
//! typos, filters, sorts, pages and facets over a small known catalog.

use super::{Indexed, SearchHits, SearchIndex, SearchQuery, Sort};

fn doc(
    id: &str,
    name: &str,
    category: &str,
    price_minor: i64,
    created: u64,
    stock: bool,
) -> Indexed {
    Indexed {
        id: id.into(),
        name: name.into(),
        description: format!("{name} from the conformance catalog"),
        category: category.into(),
        price_minor,
        created_at_ms: created,
        in_stock: stock,
    }
}

/// The catalog every backend is tested on.
pub fn catalog() -> Vec<Indexed> {
    vec![
        doc("p1", "Canvas tent", "outdoor", 12_000, 1, true),
        doc("p2", "Dome tent", "outdoor", 8_000, 2, false),
        doc("p3", "Camping stove", "outdoor", 4_500, 3, true),
        doc("p4", "Coffee mug", "kitchen", 900, 4, true),
        doc("p5", "Teapot", "kitchen", 2_500, 5, true),
        doc("p6", "Blue lantern", "outdoor", 2_500, 6, false),
        doc("p7", "Garden lantern", "garden", 1_000, 7, true),
    ]
}

fn query(text: Option<&str>) -> SearchQuery {
    SearchQuery {
        text: text.map(str::to_owned),
        category: None,
        min_price: None,
        max_price: None,
        in_stock: None,
        sort: if text.is_some() { Sort::Relevance } else { Sort::Newest },
        offset: 0,
        limit: 100,
        price_bounds: vec![1_000, 5_000],
    }
}

async fn ids(index: &dyn SearchIndex, q: SearchQuery) -> Vec<String> {
    let mut ids = index.search(q).await.unwrap().ids;
    ids.sort();
    ids
}

/// Runs the suite against `index`, which it fills with [`catalog`].
pub async fn run(index: &dyn SearchIndex) {
    index.rebuild(catalog()).await.unwrap();

    // Every word must match, in name or description.
    assert_eq!(ids(index, query(Some("tent"))).await, ["p1", "p2"]);
    assert_eq!(ids(index, query(Some("dome tent"))).await, ["p2"]);
    assert_eq!(ids(index, query(Some("conformance lantern"))).await, ["p6", "p7"]);
    assert!(ids(index, query(Some("tent teapot"))).await.is_empty());
    // One typo in a word of five letters or more: inserted, deleted, replaced, swapped.
    for typo in ["lanterns", "lanern", "lantarn", "lantenr", "ltanern"] {
        let found = ids(index, query(Some(typo))).await;
        if typo == "ltanern" {
            assert!(found.is_empty(), "two edits found {found:?}");
        } else {
            assert_eq!(found, ["p6", "p7"], "{typo}");
        }
    }
    // None in shorter words.
    assert!(ids(index, query(Some("mig"))).await.is_empty());
    assert_eq!(ids(index, query(Some("mug"))).await, ["p4"]);

    // Filters: category, price (inclusive), stock.
    let outdoor = SearchQuery { category: Some("outdoor".into()), ..query(None) };
    assert_eq!(ids(index, outdoor).await, ["p1", "p2", "p3", "p6"]);
    let priced = SearchQuery { min_price: Some(2_500), max_price: Some(8_000), ..query(None) };
    assert_eq!(ids(index, priced).await, ["p2", "p3", "p5", "p6"]);
    let available = SearchQuery { in_stock: Some(true), ..query(Some("lantern")) };
    assert_eq!(ids(index, available).await, ["p7"]);
    let gone = SearchQuery { in_stock: Some(false), ..query(None) };
    assert_eq!(ids(index, gone).await, ["p2", "p6"]);

    // Sorts and pages.
    let sorted =
        |sort| async move { index.search(SearchQuery { sort, ..query(None) }).await.unwrap().ids };
    assert_eq!(sorted(Sort::Newest).await, ["p7", "p6", "p5", "p4", "p3", "p2", "p1"]);
    let cheapest = sorted(Sort::PriceAsc).await;
    assert_eq!(
        (cheapest[0].as_str(), cheapest[1].as_str(), cheapest[6].as_str()),
        ("p4", "p7", "p1")
    );
    assert_eq!(sorted(Sort::PriceDesc).await[..2], ["p1", "p2"]);
    let page = index.search(SearchQuery { offset: 2, limit: 3, ..query(None) }).await.unwrap();
    assert_eq!((page.ids.as_slice(), page.more), (&["p5", "p4", "p3"].map(String::from)[..], true));
    let last = index.search(SearchQuery { offset: 5, limit: 3, ..query(None) }).await.unwrap();
    assert_eq!((last.ids.len(), last.more), (2, false));

    // Facets count every result, not the page.
    let SearchHits { total, categories, prices, in_stock, .. } =
        index.search(SearchQuery { limit: 1, ..query(None) }).await.unwrap();
    assert_eq!(total, 7);
    let categories: Vec<(&str, u64)> = categories.iter().map(|(c, n)| (c.as_str(), *n)).collect();
    assert_eq!(categories, [("outdoor", 4), ("kitchen", 2), ("garden", 1)]);
    assert_eq!(prices, [1, 4, 2], "[0, 10), [10, 50), [50, ∞) in minor units");
    assert_eq!(in_stock, (5, 2));
    let lanterns = index.search(query(Some("lantern"))).await.unwrap();
    assert_eq!((lanterns.total, lanterns.in_stock, lanterns.prices), (2, (1, 1), vec![0, 2, 0]));

    // What every query above found is what the catalog's own check says it answers.
    let docs = catalog();
    for q in [
        query(Some("dome tent")),
        query(Some("lantarn")),
        query(Some("mug")),
        SearchQuery { category: Some("outdoor".into()), ..query(Some("campnig")) },
        SearchQuery { min_price: Some(2_500), max_price: Some(8_000), ..query(None) },
        SearchQuery { in_stock: Some(true), ..query(Some("lantern")) },
    ] {
        let found = ids(index, q.clone()).await;
        let matching: Vec<&str> =
            docs.iter().filter(|d| q.matches(d)).map(|d| d.id.as_str()).collect();
        assert_eq!(found, matching, "{q:?}");
    }

    // A replaced document is found by its new text only, and counted once.
    index.upsert(vec![doc("p4", "Coffee cup", "kitchen", 900, 4, false)]).await.unwrap();
    assert!(ids(index, query(Some("mug"))).await.is_empty());
    assert_eq!(ids(index, query(Some("cup"))).await, ["p4"]);
    assert_eq!(index.search(query(None)).await.unwrap().in_stock, (4, 3));
}
