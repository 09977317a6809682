//! Products, search, currencies, inventory.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::json;

use storefront_storage::embedded::EmbeddedStore;
use storefront_storage::{Store, Table};

use crate::helpers::{spawn_app, start};

#[tokio::test]
async fn admins_manage_products_and_prices_are_validated() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let created = app.product(&admin, "MUG-1", "12.50", 7).await;
    assert_eq!(created["product_id"], "prod-mug-1");
    assert_eq!(created["price"], json!({"amount": "12.50", "currency": "USD"}));
    assert_eq!(created["available"], 7);

    let body = |sku: &str, price: serde_json::Value| json!({"sku": sku, "name": "N", "description": "", "category": "tests", "price": price});
    app.post(
        "/v1/admin/products",
        Some(&admin),
        &body("MUG-1", json!({"amount": "1.00", "currency": "USD"})),
    )
    .await
    .problem(409, "/problems/sku-exists");
    // SKUs differing only in case are the same product id, so the same SKU.
    app.post(
        "/v1/admin/products",
        Some(&admin),
        &body("mug-1", json!({"amount": "1.00", "currency": "USD"})),
    )
    .await
    .problem(409, "/problems/sku-exists");
    for price in [
        json!({"amount": "1.001", "currency": "USD"}),
        json!({"amount": 1.5, "currency": "USD"}),
        json!({"amount": "1.00", "currency": "XYZ"}),
        json!({"amount": "1.00", "currency": "EUR"}),
        json!({"amount": "-1.00", "currency": "USD"}),
        json!({"amount": "1e3", "currency": "USD"}),
        json!({"amount": "10000000000.00", "currency": "USD"}),
    ] {
        let refused =
            app.post("/v1/admin/products", Some(&admin), &body("NEW-1", price.clone())).await;
        assert_eq!(refused.status, 400, "{price}: {}", refused.text);
        assert_eq!(refused.content_type(), "application/problem+json");
        assert!(!refused.json()["errors"].as_array().unwrap().is_empty(), "{}", refused.text);
    }
    app.get("/v1/products/prod-new-1", None).await.problem(404, "/problems/not-found");

    let changed = app
        .send(
            Method::PATCH,
            "/v1/admin/products/prod-mug-1",
            Some(&admin),
            Some(&json!({"name": "Big mug", "price": {"amount": "14.00", "currency": "USD"}})),
            &[],
        )
        .await
        .ok(200);
    assert_eq!(changed["name"], "Big mug");
    let read = app.get("/v1/products/prod-mug-1", None).await.ok(200);
    assert_eq!(read["price"]["amount"], "14.00");
    assert_eq!(read["description"], "The MUG-1 for tests");
    app.send(
        Method::PATCH,
        "/v1/admin/products/prod-none",
        Some(&admin),
        Some(&json!({"name": "x"})),
        &[],
    )
    .await
    .problem(404, "/problems/not-found");

    // Prices in other currencies, converted at the current rates; rates replaced by an admin.
    let eur = app.get("/v1/products/prod-mug-1?currency=EUR", None).await.ok(200);
    assert_eq!(eur["price"]["currency"], "EUR");
    assert_eq!(eur["price"]["amount"], "12.89", "14.00 USD * 0.9210 = 12.894");
    let jpy = app.get("/v1/products/prod-mug-1?currency=JPY", None).await.ok(200);
    assert_eq!(jpy["price"]["amount"], "2117", "JPY has no minor digits");
    app.get("/v1/products/prod-mug-1?currency=XYZ", None)
        .await
        .problem(400, "/problems/unknown-currency");
    let rates = json!({"base": "USD", "rates": {"EUR": "0.5", "KWD": "0.3"}});
    let set =
        app.send(Method::PUT, "/v1/admin/fx-rates", Some(&admin), Some(&rates), &[]).await.ok(200);
    assert_eq!(set["base"], "USD");
    let eur = app.get("/v1/products/prod-mug-1?currency=EUR", None).await.ok(200);
    assert_eq!(eur["price"]["amount"], "7.00");
    let kwd = app.get("/v1/products/prod-mug-1?currency=KWD", None).await.ok(200);
    assert_eq!(kwd["price"]["amount"], "4.200");
    let currencies = app.get("/v1/currencies", None).await.ok(200);
    let codes: Vec<&str> = currencies["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["USD", "EUR", "KWD"]);
    app.send(
        Method::PUT,
        "/v1/admin/fx-rates",
        Some(&admin),
        Some(&json!({"base": "EUR", "rates": {}})),
        &[],
    )
    .await
    .problem(400, "/problems/validation");
    app.send(
        Method::PUT,
        "/v1/admin/fx-rates",
        Some(&admin),
        Some(&json!({"base": "USD", "rates": {"EUR": "-1"}})),
        &[],
    )
    .await
    .problem(400, "/problems/validation");
    // A rate above the bound is refused; the highest and a tiny one still show prices and count
    // the price facet.
    for (rate, status) in [("1000001", 400), ("0.0000000001", 200), ("1000000", 200)] {
        let rates = json!({"base": "USD", "rates": {"EUR": rate}});
        let answer = app.send(Method::PUT, "/v1/admin/fx-rates", Some(&admin), Some(&rates), &[]);
        assert_eq!(answer.await.status, status, "{rate}");
    }
    let eur = app.get("/v1/products/prod-mug-1?currency=EUR", None).await.ok(200);
    assert_eq!(eur["price"]["amount"], "14000000.00");
    let found = app.get("/v1/products?currency=EUR&min_price=1", None).await.ok(200);
    assert_eq!(found["facets"]["price"][0]["count"], 1, "{found}");
}

#[tokio::test]
async fn search_filters_by_text_and_category_and_pages_with_cursors() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for (i, (name, category)) in
        [("Red kettle", "kitchen"), ("Blue kettle", "kitchen"), ("Red tent", "outdoor")]
            .iter()
            .enumerate()
    {
        let body = json!({
            "sku": format!("S-{i}"), "name": name, "description": format!("a {name} you will love"),
            "category": category, "price": {"amount": "10.00", "currency": "USD"}, "initial_stock": 3,
        });
        app.post("/v1/admin/products", Some(&admin), &body).await.ok(201);
    }
    for i in 0..25 {
        app.product(&admin, &format!("P-{i:02}"), "1.00", 1).await;
    }
    let names = |v: &serde_json::Value| -> BTreeSet<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let red = app.get("/v1/products?q=red", None).await.ok(200);
    assert_eq!(names(&red), BTreeSet::from(["Red kettle".into(), "Red tent".into()]));
    let red_kitchen = app.get("/v1/products?q=red&category=kitchen", None).await.ok(200);
    assert_eq!(names(&red_kitchen), BTreeSet::from(["Red kettle".into()]));
    let kettles = app.get("/v1/products?q=kettle&currency=GBP", None).await.ok(200);
    assert!(kettles["items"].as_array().unwrap().iter().all(|p| p["price"]["currency"] == "GBP"));
    assert_eq!(kettles["items"][0]["available"], 3);

    // Every product exactly once over the pages.
    let mut seen = BTreeSet::new();
    let mut path = "/v1/products?limit=7".to_owned();
    loop {
        let page = app.get(&path, None).await.ok(200);
        for p in page["items"].as_array().unwrap() {
            assert!(seen.insert(p["product_id"].as_str().unwrap().to_owned()), "repeated: {p}");
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/products?limit=7&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 28);
    app.get("/v1/products?limit=0", None).await.problem(400, "/problems/validation");
    app.get("/v1/products?limit=101", None).await.problem(400, "/problems/validation");
    app.get("/v1/products?cursor=zz", None).await.problem(400, "/problems/validation");
    app.get("/v1/products?cursor=100000000000000000", None)
        .await
        .problem(400, "/problems/validation");
}

#[tokio::test]
async fn inventory_is_read_restocked_and_set_by_admins() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let customer = app.customer("c@example.com").await;
    app.product(&admin, "INV-1", "5.00", 10).await;
    assert_eq!(
        app.levels("INV-1").await,
        json!({"sku": "INV-1", "on_hand": 10, "reserved": 0, "available": 10})
    );
    app.get("/v1/inventory/NOPE-1", None).await.problem(404, "/problems/not-found");
    app.get("/v1/inventory/bad%20sku", None).await.problem(400, "/problems/validation");

    let restocked = app
        .post("/v1/admin/inventory/INV-1/restock", Some(&admin), &json!({"qty": 5}))
        .await
        .ok(200);
    assert_eq!(restocked["on_hand"], 15);
    app.post("/v1/admin/inventory/INV-1/restock", Some(&customer), &json!({"qty": 5}))
        .await
        .problem(403, "/problems/forbidden");
    for bad in
        [json!({"qty": 0}), json!({"qty": -3}), json!({"qty": 1.5}), json!({"qty": "2"}), json!({})]
    {
        let res = app.post("/v1/admin/inventory/INV-1/restock", Some(&admin), &bad).await;
        res.problem(400, "/problems/validation");
    }
    // A retried restock with the same key is applied once.
    for _ in 0..2 {
        let res = app
            .send(
                Method::POST,
                "/v1/admin/inventory/INV-1/restock",
                Some(&admin),
                Some(&json!({"qty": 1})),
                &[("idempotency-key", "restock-1")],
            )
            .await
            .ok(200);
        assert_eq!(res["on_hand"], 16);
    }
    let set = app
        .send(
            Method::PUT,
            "/v1/admin/inventory/INV-1",
            Some(&admin),
            Some(&json!({"on_hand": 3})),
            &[],
        )
        .await
        .ok(200);
    assert_eq!(set, json!({"sku": "INV-1", "on_hand": 3, "reserved": 0, "available": 3}));
}

#[tokio::test]
async fn the_demo_catalog_is_seeded_once_on_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.demo_data = true;
    let app = crate::helpers::start(config).await;
    let mut categories = BTreeSet::new();
    let mut count = 0;
    let mut path = "/v1/products?limit=100".to_owned();
    loop {
        let page = app.get(&path, None).await.ok(200);
        for p in page["items"].as_array().unwrap() {
            categories.insert(p["category"].as_str().unwrap().to_owned());
            count += 1;
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/products?limit=100&cursor={cursor}"),
            None => break,
        }
    }
    assert!(count >= 1000, "{count} products");
    assert!(categories.len() >= 5, "{categories:?}");
    let coffee = app.get("/v1/products?q=grinder&category=coffee", None).await.ok(200);
    assert!(!coffee["items"].as_array().unwrap().is_empty());
    let first = app.get("/v1/products/prod-demo-00000", None).await.ok(200);
    assert!(first["available"].as_u64().unwrap() >= 10, "demo stock is set");
    // A restart does not seed again (the products are the same 1,200, with the same stock).
    let app = app.restart().await;
    let again = app.get("/v1/products/prod-demo-00000", None).await.ok(200);
    assert_eq!(again, first);
}

#[tokio::test]
async fn a_sku_is_one_stock_counter_whatever_its_case() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let ann = app.customer("case@example.com").await;
    app.product(&admin, "CASE-1", "2.00", 3).await;

    // An admin restock under the lower-case SKU adds to the product's one counter.
    let restocked = app
        .post("/v1/admin/inventory/case-1/restock", Some(&admin), &json!({"qty": 2}))
        .await
        .ok(200);
    assert_eq!(
        (restocked["sku"].as_str(), restocked["on_hand"].as_u64()),
        (Some("CASE-1"), Some(5))
    );
    let levels = app.levels("Case-1").await;
    assert_eq!((levels["sku"].as_str(), levels["available"].as_u64()), (Some("CASE-1"), Some(5)));

    // A cart line and a checkout in any case draw from that counter, shown as the product's SKU.
    let cart =
        app.post("/v1/cart/items", Some(&ann), &json!({"sku": "case-1", "qty": 1})).await.ok(200);
    assert_eq!(cart["items"][0]["sku"], "CASE-1");
    let body = json!({
        "items": [{"sku": "case-1", "qty": 2}, {"sku": "CASE-1", "qty": 1}],
        "payment_token": "tok_visa",
    });
    let placed = app.checkout(&ann, "case-order", &body).await.ok(201);
    let path = format!("/v1/orders/{}", placed["order_id"].as_str().unwrap());
    let order = app.get(&path, Some(&ann)).await.ok(200);
    assert_eq!(order["items"].as_array().map(Vec::len), Some(1), "{order}");
    assert_eq!(
        (order["items"][0]["sku"].as_str(), order["items"][0]["qty"].as_u64()),
        (Some("CASE-1"), Some(3))
    );
    assert_eq!(app.levels("CASE-1").await["available"], 2);
    // 3 more units of 2 left, in lower case, is out of stock: there is no second counter.
    app.checkout(
        &ann,
        "case-order-2",
        &json!({"items": [{"sku": "case-1", "qty": 3}], "payment_token": "tok_visa"}),
    )
    .await
    .problem(409, "/problems/out-of-stock");

    // A SKU with no product is 404 on every inventory and cart route.
    app.get("/v1/inventory/stream?sku=CASE-1,NO-SUCH-1", None)
        .await
        .problem(404, "/problems/not-found");
    app.send(Method::DELETE, "/v1/cart/items/NO-SUCH-1", Some(&ann), None, &[])
        .await
        .problem(404, "/problems/not-found");
    app.post("/v1/admin/inventory/no-such-1/restock", Some(&admin), &json!({"qty": 2}))
        .await
        .problem(404, "/problems/not-found");
}

#[tokio::test]
async fn search_filters_sorts_and_counts_facets_over_every_result() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    // (sku, name, category, price USD, stock), created in this order.
    let catalog = [
        ("F-1", "Canvas tent", "outdoor", "120.00", 2),
        ("F-2", "Dome tent", "outdoor", "80.00", 0),
        ("F-3", "Camping stove", "outdoor", "45.00", 5),
        ("F-4", "Coffee mug", "kitchen", "9.00", 1),
        ("F-5", "Garden lantern", "garden", "10.00", 4),
    ];
    for (sku, name, category, price, stock) in catalog {
        let body = json!({
            "sku": sku, "name": name, "description": "", "category": category,
            "price": {"amount": price, "currency": "USD"}, "initial_stock": stock,
        });
        app.post("/v1/admin/products", Some(&admin), &body).await.ok(201);
    }
    let skus = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["sku"].as_str().unwrap().into())
            .collect()
    };

    // The index learns stock states from the SKU actors' feed, a moment after each change.
    let until = |path: &'static str, done: fn(&serde_json::Value) -> bool| {
        let app = &app;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let page = app.get(path, None).await.ok(200);
                if done(&page) {
                    return page;
                }
                assert!(std::time::Instant::now() < deadline, "{path} never settled: {page}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    };

    // Facets over all five, though the page holds one; `newest` by default without `q`.
    let page = until("/v1/products?limit=1", |p| p["facets"]["in_stock"]["true"] == 4).await;
    assert_eq!(skus(&page), ["F-5"]);
    assert_eq!(
        page["facets"],
        json!({
            "category": [{"value": "outdoor", "count": 3}, {"value": "garden", "count": 1},
                         {"value": "kitchen", "count": 1}],
            "price": [
                {"from": {"amount": "0.00", "currency": "USD"}, "to": {"amount": "10.00", "currency": "USD"}, "count": 1},
                {"from": {"amount": "10.00", "currency": "USD"}, "to": {"amount": "25.00", "currency": "USD"}, "count": 1},
                {"from": {"amount": "25.00", "currency": "USD"}, "to": {"amount": "50.00", "currency": "USD"}, "count": 1},
                {"from": {"amount": "50.00", "currency": "USD"}, "to": {"amount": "100.00", "currency": "USD"}, "count": 1},
                {"from": {"amount": "100.00", "currency": "USD"}, "to": {"amount": "250.00", "currency": "USD"}, "count": 1},
            ],
            "in_stock": {"true": 4, "false": 1},
        })
    );

    // Price bounds are inclusive and in the display currency (EUR at the default 0.9210):
    // 45.00 USD shows as 41.45 EUR, 80.00 as 73.68.
    let eur =
        app.get("/v1/products?currency=EUR&min_price=41.45&max_price=73.68", None).await.ok(200);
    assert_eq!(skus(&eur), ["F-3", "F-2"]);
    let eur =
        app.get("/v1/products?currency=EUR&min_price=41.46&max_price=73.67", None).await.ok(200);
    assert!(skus(&eur).is_empty());
    assert_eq!(eur["facets"]["in_stock"], json!({"true": 0, "false": 0}));

    // Sorts.
    let cheapest = app.get("/v1/products?sort=price_asc", None).await.ok(200);
    assert_eq!(skus(&cheapest), ["F-4", "F-5", "F-3", "F-2", "F-1"]);
    let dearest = app.get("/v1/products?sort=price_desc&category=outdoor", None).await.ok(200);
    assert_eq!(skus(&dearest), ["F-1", "F-2", "F-3"]);
    // A typo per word of five letters or more; every word must match.
    let typo = app.get("/v1/products?q=campign%20stove", None).await.ok(200);
    assert_eq!(skus(&typo), ["F-3"]);
    assert!(skus(&app.get("/v1/products?q=tent%20stove", None).await.ok(200)).is_empty());

    // The in-stock filter and counts follow the SKU actors: F-4's last unit sold.
    let in_stock = app.get("/v1/products?in_stock=true&sort=price_asc", None).await.ok(200);
    assert_eq!(skus(&in_stock), ["F-4", "F-5", "F-3", "F-1"]);
    let buyer = app.customer("facets@example.com").await;
    let order = json!({"payment_token": "tok_visa", "items": [{"sku": "F-4", "qty": 1}]});
    app.checkout(&buyer, "facets-1", &order).await.ok(201);
    let sold_out = until("/v1/products?in_stock=false&sort=price_asc", |p| {
        p["items"].as_array().unwrap().len() == 2
    })
    .await;
    assert_eq!(skus(&sold_out), ["F-4", "F-2"]);
    let counts = app.get("/v1/products", None).await.ok(200);
    assert_eq!(counts["facets"]["in_stock"], json!({"true": 3, "false": 2}));

    let many = (0..17).map(|i| format!("w{i}")).collect::<Vec<_>>().join("+");
    for bad in [
        "sort=cheap",
        "in_stock=yes",
        "min_price=-1",
        "max_price=1.001",
        "min_price=x",
        "min_price=10&max_price=9.99",
        "category=a%22b",
        &format!("q={many}"),
    ] {
        app.get(&format!("/v1/products?{bad}"), None).await.problem(400, "/problems/validation");
    }
}

#[tokio::test]
async fn a_store_from_before_stock_states_were_kept_is_searched_by_stock_after_a_restart() {
    let mut old = spawn_app().await;
    let admin = old.admin().await;
    old.product(&admin, "OLD-FULL", "3.00", 4).await;
    old.product(&admin, "OLD-EMPTY", "3.00", 0).await;
    old.stop().await;
    // A store written before Step 7 has no stock states: remove them.
    {
        let store = EmbeddedStore::open(&old.config.data_dir).await.unwrap();
        for sku in ["OLD-FULL", "OLD-EMPTY"] {
            store.delete(Table::SkuAvailability, sku.as_bytes()).await.unwrap();
        }
    }

    let mut app = start(old.config.clone()).await;
    let stocked = app.get("/v1/products?in_stock=true", None).await.ok(200);
    let ids: Vec<&str> = stocked["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["product_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["prod-old-full"], "{stocked}");
    let all = app.get("/v1/products", None).await.ok(200);
    assert_eq!(all["facets"]["in_stock"], json!({"true": 1, "false": 1}));
    // Recorded once: the states are in the store again.
    app.stop().await;
    let store = EmbeddedStore::open(&old.config.data_dir).await.unwrap();
    for (sku, state) in [("OLD-FULL", b"1"), ("OLD-EMPTY", b"0")] {
        let row = store.get(Table::SkuAvailability, sku.as_bytes()).await.unwrap();
        assert_eq!(row.as_deref(), Some(&state[..]), "{sku}");
    }
}
