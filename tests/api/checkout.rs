//! Checkout, orders, cancellation, idempotency.

use reqwest::Method;
use serde_json::{Value, json};

use storefront_actors::gateway::GatewayOp;

use crate::helpers::{spawn_app, start, test_config};

#[tokio::test]
async fn a_full_purchase_from_cart_to_cancelled_order() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let ann = app.customer("ann@example.com").await;
    app.product(&admin, "LAMP-1", "20.00", 10).await;
    app.post("/v1/cart/items", Some(&ann), &json!({"sku": "LAMP-1", "qty": 2})).await.ok(200);

    app.send(
        Method::POST,
        "/v1/checkout",
        Some(&ann),
        Some(&json!({"payment_token": "tok_visa"})),
        &[],
    )
    .await
    .problem(400, "/problems/validation");
    let res =
        app.checkout(&ann, "buy-1", &json!({"payment_token": "tok_visa", "currency": "EUR"})).await;
    let order = res.ok(201);
    assert_eq!(order["status"], "confirmed");
    assert_eq!(
        order["total"],
        json!({"amount": "36.84", "currency": "EUR"}),
        "40.00 USD at 0.9210"
    );
    let order_id = order["order_id"].as_str().unwrap().to_owned();
    assert_eq!(res.headers["location"], format!("/v1/orders/{order_id}").as_str());
    assert_eq!(
        app.get("/v1/cart", Some(&ann)).await.ok(200)["items"],
        json!([]),
        "the cart is emptied"
    );
    assert_eq!(
        app.levels("LAMP-1").await,
        json!({"sku": "LAMP-1", "on_hand": 8, "reserved": 0, "available": 8})
    );

    // The same key and body: the same response, byte for byte.
    let again = app
        .checkout_retry(&ann, "buy-1", &json!({"payment_token": "tok_visa", "currency": "EUR"}))
        .await;
    assert_eq!((again.status.as_u16(), again.text.as_str()), (201, res.text.as_str()));
    assert_eq!(again.headers["idempotent-replayed"], "true");
    app.checkout(&ann, "buy-1", &json!({"payment_token": "tok_mastercard"}))
        .await
        .problem(422, "/problems/idempotency-key-reused");
    assert_eq!(app.levels("LAMP-1").await["on_hand"], 8, "a replay buys nothing");

    let read = app.get(&format!("/v1/orders/{order_id}"), Some(&ann)).await.ok(200);
    assert_eq!(read["status"], "confirmed");
    assert_eq!(read["fx_rate"], "0.921");
    assert_eq!(read["catalog_version"], 1, "the product's creation, at the default rates");
    assert_eq!(
        read["items"],
        json!([{"sku": "LAMP-1", "qty": 2, "unit_price": {"amount": "18.42", "currency": "EUR"}, "line_total": {"amount": "36.84", "currency": "EUR"}, "product_version": 1}])
    );
    let statuses: Vec<&str> =
        read["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["pending", "reserved", "paid", "confirmed"]);
    assert!(read["created_at"].as_str().unwrap().ends_with('Z'));

    // Another customer can neither read nor cancel it; an admin can read it.
    let bob = app.customer("bob@example.com").await;
    app.get(&format!("/v1/orders/{order_id}"), Some(&bob))
        .await
        .problem(404, "/problems/not-found");
    app.post(&format!("/v1/orders/{order_id}/cancel"), Some(&bob), &json!({}))
        .await
        .problem(404, "/problems/not-found");
    app.get(&format!("/v1/orders/{order_id}"), Some(&admin)).await.ok(200);
    app.get("/v1/orders/ord_doesnotexist", Some(&ann)).await.problem(404, "/problems/not-found");

    let cancelled =
        app.post(&format!("/v1/orders/{order_id}/cancel"), Some(&ann), &json!({})).await.ok(200);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(app.levels("LAMP-1").await["on_hand"], 10, "cancel restocks");
    // The key still answers as its checkout did: the order confirmed, byte for byte.
    let after_cancel = app
        .checkout_retry(&ann, "buy-1", &json!({"payment_token": "tok_visa", "currency": "EUR"}))
        .await;
    assert_eq!(
        (after_cancel.status.as_u16(), after_cancel.text.as_str()),
        (201, res.text.as_str())
    );
    assert_eq!(after_cancel.headers["idempotent-replayed"], "true");
    app.post(&format!("/v1/orders/{order_id}/cancel"), Some(&ann), &json!({}))
        .await
        .problem(409, "/problems/invalid-order-state");
}

#[tokio::test]
async fn failed_checkouts_answer_their_problem_and_hold_nothing() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let ann = app.customer("ann@example.com").await;
    app.product(&admin, "BOOK-1", "9.99", 3).await;
    let items = |qty: u32| json!([{"sku": "BOOK-1", "qty": qty}]);

    let oos = json!({"payment_token": "tok_visa", "items": items(4)});
    let first = app.checkout(&ann, "k-oos", &oos).await;
    first.problem(409, "/problems/out-of-stock");
    // Answered without an order, and nothing kept under the key (API.md: it changed nothing):
    // a retry is decided afresh, the same while the stock is short.
    let retry = app.checkout_retry(&ann, "k-oos", &oos).await;
    retry.problem(409, "/problems/out-of-stock");
    assert!(!retry.headers.contains_key("idempotent-replayed"));
    assert_eq!(retry.text, first.text);
    // The order a failed checkout placed, as its problem names it (`order ord_...: ...`).
    let placed_by = |problem: Value| {
        let detail = problem["detail"].as_str().unwrap();
        detail.strip_prefix("order ").and_then(|d| d.split_once(':')).unwrap().0.to_owned()
    };
    let mut placed = Vec::new();
    for (key, token) in [("k-dec", "tok_chargeDeclined"), ("k-funds", "tok_insufficientFunds")] {
        let declined = app
            .checkout(&ann, key, &json!({"payment_token": token, "items": items(1)}))
            .await
            .problem(402, "/problems/payment-declined");
        placed.push(placed_by(declined));
    }
    let gateway_error = app
        .checkout(
            &ann,
            "k-err",
            &json!({"payment_token": "tok_processingError", "items": items(1)}),
        )
        .await
        .problem(502, "/problems/payment-gateway-error");
    placed.push(placed_by(gateway_error));
    assert_eq!(
        app.levels("BOOK-1").await,
        json!({"sku": "BOOK-1", "on_hand": 3, "reserved": 0, "available": 3})
    );

    for bad in [
        json!({"payment_token": "4242424242424242", "items": items(1)}),
        json!({"payment_token": "tok_visa", "items": []}),
        json!({"payment_token": "tok_visa", "items": [{"sku": "BOOK-1", "qty": -1}]}),
        json!({"payment_token": "tok_visa", "items": [{"sku": "BOOK-1", "qty": 0.5}]}),
        json!({"payment_token": "tok_visa", "items": items(1), "currency": "ABC"}),
        json!({"payment_token": "tok_visa", "items": items(1), "coupon": "FREE"}),
    ] {
        let res = app.checkout(&ann, &format!("k-bad-{bad}"), &bad).await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text);
    }
    // The same key with another body is refused even when that body is invalid.
    app.checkout(&ann, "k-dec", &json!({"payment_token": "tok_visa", "items": []}))
        .await
        .problem(422, "/problems/idempotency-key-reused");
    app.send(
        Method::POST,
        "/v1/checkout",
        Some(&ann),
        Some(&json!({"payment_token": "tok_visa"})),
        &[("idempotency-key", "caf\u{e9}")],
    )
    .await
    .problem(400, "/problems/validation");
    app.checkout(&ann, "k-empty-cart", &json!({"payment_token": "tok_visa"}))
        .await
        .problem(400, "/problems/validation");
    app.checkout(
        &ann,
        "k-nosku",
        &json!({"payment_token": "tok_visa", "items": [{"sku": "NOPE-9", "qty": 1}]}),
    )
    .await
    .problem(404, "/problems/not-found");

    // History: the failed orders are listed, newest first, with their status. The out-of-stock
    // attempt placed no order (the SKU could not fill it when asked): three orders, not four.
    let orders = app.get("/v1/orders?limit=2", Some(&ann)).await.ok(200);
    assert_eq!(orders["items"].as_array().unwrap().len(), 2);
    let next = orders["next_cursor"].as_str().unwrap();
    let rest = app.get(&format!("/v1/orders?cursor={next}"), Some(&ann)).await.ok(200);
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());
    let pages = [&orders["items"], &rest["items"]];
    let listed: Vec<&Value> = pages.into_iter().flat_map(|p| p.as_array().unwrap()).collect();
    assert!(listed.iter().all(|o| o["status"] == "failed"), "{listed:?}");
    let ids: Vec<&str> = listed.iter().map(|o| o["order_id"].as_str().unwrap()).collect();
    placed.reverse();
    assert_eq!(ids, placed, "newest first: the reverse of the order they were placed in");
    let failed = app.get("/v1/admin/orders?status=failed", Some(&admin)).await.ok(200);
    assert_eq!(failed["items"].as_array().unwrap().len(), 3);
    let confirmed = app.get("/v1/admin/orders?status=confirmed", Some(&admin)).await.ok(200);
    assert_eq!(confirmed["items"], json!([]));
    app.get("/v1/admin/orders?status=lost", Some(&admin))
        .await
        .problem(400, "/problems/validation");
}

/// A checkout still running after the wait answers 202 naming its placed order; a retry with
/// the key asks that order again (202 while it runs, never a replay), and once the saga has
/// ended, the retry gets its final answer. The gateway holds the saga at its payment for as long
/// as the test needs, so nothing here depends on how fast the machine is.
#[tokio::test]
async fn a_slow_checkout_answers_202_and_a_retry_gets_the_final_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.checkout.wait_ms = 0;
    let app = start(config).await;
    let admin = app.admin().await;
    let ann = app.customer("ann@example.com").await;
    app.product(&admin, "SLOW-1", "1.00", 5).await;
    let held = app.gateway.hold(GatewayOp::Authorize);
    let body = json!({"payment_token": "tok_visa", "items": [{"sku": "SLOW-1", "qty": 2}]});
    // Two identical requests at once: one order, whichever answers (a duplicate still running
    // is refused; one after it asks the same order).
    let (a, b) = tokio::join!(app.checkout(&ann, "slow", &body), app.checkout(&ann, "slow", &body));
    let (res, other) = if a.status == 202 { (a, b) } else { (b, a) };
    let pending = res.ok(202);
    assert_eq!(pending["status"], "pending");
    let order_id = pending["order_id"].as_str().unwrap().to_owned();
    assert_eq!(res.headers["location"], format!("/v1/orders/{order_id}").as_str());
    if other.status == 409 {
        other.problem(409, "/problems/idempotency-in-progress");
        assert_eq!(other.headers["retry-after"], "1");
    } else {
        assert_eq!(other.ok(202)["order_id"], order_id.as_str());
    }
    // The 202 names an order that is there, on every read.
    let order = app.get(&format!("/v1/orders/{order_id}"), Some(&ann)).await.ok(200);
    assert!(["pending", "reserved"].contains(&order["status"].as_str().unwrap()), "{order}");
    // The key is bound to this request even while its outcome is unknown.
    let another = json!({"payment_token": "tok_visa", "items": [{"sku": "SLOW-1", "qty": 1}]});
    app.checkout(&ann, "slow", &another).await.problem(422, "/problems/idempotency-key-reused");
    // While it runs, its units are held: on hand cannot go below them.
    assert_eq!(app.levels("SLOW-1").await["reserved"], 2);
    app.send(
        Method::PUT,
        "/v1/admin/inventory/SLOW-1",
        Some(&admin),
        Some(&json!({"on_hand": 1})),
        &[],
    )
    .await
    .problem(409, "/problems/below-reserved");
    // A retry while it runs asks the order again: 202, not a replay.
    let again = app.checkout_retry(&ann, "slow", &body).await;
    assert_eq!(again.ok(202)["order_id"], order_id.as_str());
    assert!(again.headers.get("idempotent-replayed").is_none());
    // The payment goes through; the order is polled until the saga ends.
    drop(held);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(50));
    loop {
        poll.tick().await;
        let order = app.get(&format!("/v1/orders/{order_id}"), Some(&ann)).await.ok(200);
        if order["status"] == "confirmed" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the saga never ended: {order}");
    }
    // Now a retry gets the final answer, and that answer is the key's from then on.
    let done = app.checkout_retry(&ann, "slow", &body).await;
    assert_eq!(done.headers["idempotent-replayed"], "true", "the first request's outcome");
    let confirmed = done.ok(201);
    assert_eq!(
        (confirmed["order_id"].as_str(), confirmed["status"].as_str()),
        (Some(order_id.as_str()), Some("confirmed"))
    );
    let replayed = app.checkout_retry(&ann, "slow", &body).await;
    assert_eq!((replayed.status, &replayed.text), (done.status, &done.text));
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
    let levels = app.levels("SLOW-1").await;
    assert_eq!((levels["on_hand"].as_u64(), levels["reserved"].as_u64()), (Some(3), Some(0)));
}

/// A retry while the confirmed order is being cancelled (its refund held at the gateway) answers
/// as the checkout did, at once: 201 confirmed, not 202 for the cancellation under way.
#[tokio::test]
async fn a_retry_while_the_order_is_cancelled_answers_as_the_checkout_did() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let ann = app.customer("ann@example.com").await;
    app.product(&admin, "MUG-1", "5.00", 3).await;
    let body = json!({"payment_token": "tok_visa", "items": [{"sku": "MUG-1", "qty": 1}]});
    let first = app.checkout(&ann, "mug", &body).await;
    let order_id = first.ok(201)["order_id"].as_str().unwrap().to_owned();
    let held = app.gateway.hold(GatewayOp::Refund);
    let (cancel_path, no_body) = (format!("/v1/orders/{order_id}/cancel"), json!({}));
    let cancel = app.post(&cancel_path, Some(&ann), &no_body);
    let retry = async {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut poll = tokio::time::interval(std::time::Duration::from_millis(10));
        while held.waiting() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the refund never started");
            poll.tick().await;
        }
        let retried = app.checkout_retry(&ann, "mug", &body).await;
        drop(held);
        retried
    };
    let (cancelled, retried) = tokio::join!(cancel, retry);
    assert_eq!((retried.status.as_u16(), retried.text.as_str()), (201, first.text.as_str()));
    assert_eq!(retried.headers["idempotent-replayed"], "true");
    assert_eq!(cancelled.ok(200)["status"], "cancelled");
}

#[tokio::test]
async fn everything_acknowledged_survives_a_restart() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    app.post(
        "/v1/auth/register",
        None,
        &json!({"email": "ann@example.com", "password": "a-good-password"}),
    )
    .await
    .ok(201);
    let pair = app.login("ann@example.com", "a-good-password").await;
    let ann = pair["access_token"].as_str().unwrap().to_owned();
    app.product(&admin, "KEEP-1", "2.50", 9).await;
    let body = json!({"payment_token": "tok_visa", "items": [{"sku": "KEEP-1", "qty": 4}]});
    let first = app.checkout(&ann, "keep", &body).await;
    first.ok(201);
    let order_id = first.json()["order_id"].as_str().unwrap().to_owned();
    let order = app.get(&format!("/v1/orders/{order_id}"), Some(&ann)).await.ok(200);

    let app = app.restart().await;
    // Users (and their refresh tokens), products, stock, orders and idempotency keys.
    app.login("ann@example.com", "a-good-password").await;
    app.post("/v1/auth/refresh", None, &json!({"refresh_token": pair["refresh_token"]}))
        .await
        .ok(200);
    app.get(&format!("/v1/orders/{order_id}"), Some(&ann)).await.ok(200);
    assert_eq!(app.get(&format!("/v1/orders/{order_id}"), Some(&ann)).await.json(), order);
    assert_eq!(app.get("/v1/products/prod-keep-1", None).await.ok(200)["name"], "Product KEEP-1");
    assert_eq!(
        app.levels("KEEP-1").await,
        json!({"sku": "KEEP-1", "on_hand": 5, "reserved": 0, "available": 5})
    );
    let replay = app.checkout_retry(&ann, "keep", &body).await;
    assert_eq!((replay.status, replay.text), (first.status, first.text));
    assert_eq!(app.levels("KEEP-1").await["on_hand"], 5);
    assert_eq!(
        app.get("/v1/orders", Some(&ann)).await.ok(200)["items"].as_array().unwrap().len(),
        1
    );
    let found = app.get("/v1/products?q=KEEP", None).await.ok(200);
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "the search index is intact");
}

#[tokio::test]
async fn a_purchase_limit_holds_for_parallel_checkouts_of_one_customer() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let body = json!({
        "sku": "DROP-1", "name": "Limited sneaker", "category": "shoes",
        "price": {"amount": "100.00", "currency": "USD"}, "initial_stock": 100,
        "max_per_customer": 2,
    });
    let product = app.post("/v1/admin/products", Some(&admin), &body).await.ok(201);
    assert_eq!(product["max_per_customer"], 2);
    let bot = app.customer("bot@example.com").await;
    let one = json!({"items": [{"sku": "DROP-1", "qty": 1}], "payment_token": "tok_visa"});

    // Ten checkouts at once, each with its own key: exactly two pass.
    let attempts = (0..10).map(|i| {
        let (app, bot, one) = (&app, &bot, &one);
        async move { app.checkout(bot, &format!("bot-{i}"), one).await }
    });
    let answers = futures::future::join_all(attempts).await;
    let mut bought = Vec::new();
    for answer in answers {
        match answer.status.as_u16() {
            201 => bought.push(answer.json()["order_id"].as_str().unwrap().to_owned()),
            409 => {
                answer.problem(409, "/problems/purchase-limit");
            }
            other => panic!("unexpected {other}: {}", answer.text),
        }
    }
    assert_eq!(bought.len(), 2, "the limit of 2 let {} through", bought.len());
    assert_eq!(app.levels("DROP-1").await["available"], 98, "the refused ones hold nothing");
    // Another customer has their own two.
    let ann = app.customer("ann@example.com").await;
    let two = json!({"items": [{"sku": "drop-1", "qty": 2}], "payment_token": "tok_visa"});
    app.checkout(&ann, "ann-1", &two).await.ok(201);
    app.checkout(&ann, "ann-2", &one).await.problem(409, "/problems/purchase-limit");

    // A cancelled order no longer counts.
    app.post(&format!("/v1/orders/{}/cancel", bought[0]), Some(&bot), &json!({})).await.ok(200);
    app.checkout(&bot, "bot-after-cancel", &one).await.ok(201);
    app.checkout(&bot, "bot-over-again", &one).await.problem(409, "/problems/purchase-limit");
    // Lifted: no limit.
    let id = product["product_id"].as_str().unwrap();
    let lifted = app
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/admin/products/{id}"),
            Some(&admin),
            Some(&json!({"max_per_customer": null})),
            &[],
        )
        .await
        .ok(200);
    assert!(lifted.get("max_per_customer").is_none(), "{lifted}");
    app.checkout(&bot, "bot-unlimited", &one).await.ok(201);
    app.post(
        "/v1/admin/products",
        Some(&admin),
        &json!({
            "sku": "DROP-2", "name": "Zero", "category": "shoes",
            "price": {"amount": "1.00", "currency": "USD"}, "max_per_customer": 0,
        }),
    )
    .await
    .problem(400, "/problems/validation");
}

#[tokio::test]
async fn a_sold_out_answer_is_not_kept_under_its_key_and_a_restock_is_bought() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let ann = app.customer("ann@example.com").await;
    app.product(&admin, "DROP-1", "5.00", 1).await;
    let body = json!({"payment_token": "tok_visa", "items": [{"sku": "DROP-1", "qty": 1}]});
    app.checkout(&ann, "first", &body).await.ok(201);
    app.checkout(&ann, "late", &body).await.problem(409, "/problems/out-of-stock");

    // A restock: the same key, retried, is decided afresh (API.md: an answer that changed
    // nothing need not be kept) as soon as the node's stock view has it.
    app.post("/v1/admin/inventory/DROP-1/restock", Some(&admin), &json!({"qty": 1})).await.ok(200);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    let bought = loop {
        let retry = app.checkout_retry(&ann, "late", &body).await;
        if retry.status != 409 || tokio::time::Instant::now() > deadline {
            break retry;
        }
    };
    assert_eq!(bought.ok(201)["status"], "confirmed");
    assert_eq!(app.levels("DROP-1").await["available"], 0);
}

/// Per-SKU admission (API.md, "Stock stream and per-SKU admission"): a SKU with more checkouts
/// under way than it serves within the wait turns the next one away with 429 `/problems/sku-busy`
/// and `Retry-After`, holding nothing and keeping nothing under the key, while a checkout of
/// another SKU is taken on as usual. The gateway holds the sagas at their payment, so the hot
/// SKU's two checkouts stay under way for as long as the test needs.
#[tokio::test]
async fn a_busy_sku_is_turned_away_while_other_skus_are_bought() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.checkout.min_admitted_per_sku = 2;
    let app = start(config).await;
    let admin = app.admin().await;
    let ann = app.customer("ann@example.com").await;
    app.product(&admin, "HOT-1", "5.00", 10).await;
    app.product(&admin, "COLD-1", "5.00", 10).await;
    let hot = json!({"payment_token": "tok_visa", "items": [{"sku": "HOT-1", "qty": 1}]});
    let cold = json!({"payment_token": "tok_visa", "items": [{"sku": "COLD-1", "qty": 1}]});
    let held = app.gateway.hold(GatewayOp::Authorize);
    let (first, second) = (app.checkout(&ann, "hot-1", &hot), app.checkout(&ann, "hot-2", &hot));
    let under_way = async {
        // Both hot checkouts hold their unit and wait at the payment.
        while app.levels("HOT-1").await["reserved"] != 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let busy = app.checkout(&ann, "hot-3", &hot).await;
        let problem = busy.problem(429, "/problems/sku-busy");
        assert!(problem["detail"].as_str().unwrap().contains("HOT-1"), "{problem}");
        assert_eq!(busy.headers["retry-after"], "1");
        assert_eq!(app.levels("HOT-1").await["reserved"], 2, "the busy answer held nothing");
        // Another SKU is taken on: its checkout reaches the payment too.
        let cold = app.checkout(&ann, "cold-1", &cold);
        let reached = async {
            while app.levels("COLD-1").await["reserved"] != 1 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            drop(held);
        };
        let (cold, ()) = tokio::join!(cold, reached);
        cold
    };
    let (first, second, cold) = tokio::join!(first, second, under_way);
    for res in [first, second, cold] {
        assert_eq!(res.ok(201)["status"], "confirmed");
    }
    // The busy answer was not kept: the same key, retried now, buys.
    assert_eq!(app.checkout_retry(&ann, "hot-3", &hot).await.ok(201)["status"], "confirmed");
    assert_eq!(app.levels("HOT-1").await["on_hand"], 7, "three sold");
}
