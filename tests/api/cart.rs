//! The cart.

use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_cart_is_priced_validated_and_private() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let ann = app.customer("ann@example.com").await;
    let bob = app.customer("bob@example.com").await;
    app.product(&admin, "TEA-1", "3.25", 5).await;
    app.product(&admin, "CUP-1", "10.00", 50).await;

    let cart = app.get("/v1/cart", Some(&ann)).await.ok(200);
    assert_eq!(cart["items"], json!([]));
    assert_eq!(cart["total"], json!({"amount": "0.00", "currency": "USD"}));
    app.post("/v1/cart/items", Some(&ann), &json!({"sku": "TEA-1", "qty": 2})).await.ok(200);
    let cart =
        app.post("/v1/cart/items", Some(&ann), &json!({"sku": "CUP-1", "qty": 3})).await.ok(200);
    assert_eq!(cart["items"][0]["sku"], "CUP-1");
    assert_eq!(cart["items"][0]["line_total"], json!({"amount": "30.00", "currency": "USD"}));
    assert_eq!(cart["items"][1]["unit_price"], json!({"amount": "3.25", "currency": "USD"}));
    assert_eq!(cart["total"], json!({"amount": "36.50", "currency": "USD"}));
    let eur = app.get("/v1/cart?currency=EUR", Some(&ann)).await.ok(200);
    assert_eq!(eur["total"]["currency"], "EUR");

    // Bob's cart is his own.
    assert_eq!(app.get("/v1/cart", Some(&bob)).await.ok(200)["items"], json!([]));
    app.get("/v1/cart", None).await.problem(401, "/problems/unauthorized");

    for bad in [
        json!({"sku": "TEA-1", "qty": 0}),
        json!({"sku": "TEA-1", "qty": 101}),
        json!({"sku": "TEA-1", "qty": -1}),
        json!({"sku": "TEA-1", "qty": 1.5}),
        json!({"sku": "TEA-1"}),
        json!({"sku": "TEA-1", "qty": 1, "price": "0.01"}),
        json!({"sku": "", "qty": 1}),
    ] {
        app.post("/v1/cart/items", Some(&ann), &bad).await.problem(400, "/problems/validation");
    }
    app.post("/v1/cart/items", Some(&ann), &json!({"sku": "NOPE-1", "qty": 1}))
        .await
        .problem(404, "/problems/not-found");
    // 2 in the cart + 4 > 5 available.
    app.post("/v1/cart/items", Some(&ann), &json!({"sku": "TEA-1", "qty": 4}))
        .await
        .problem(409, "/problems/out-of-stock");

    let cart = app
        .send(Method::PUT, "/v1/cart/items/TEA-1", Some(&ann), Some(&json!({"qty": 5})), &[])
        .await
        .ok(200);
    assert_eq!(cart["items"][1]["qty"], 5);
    app.send(Method::PUT, "/v1/cart/items/TEA-1", Some(&ann), Some(&json!({"qty": 6})), &[])
        .await
        .problem(409, "/problems/out-of-stock");
    let cart = app
        .send(Method::PUT, "/v1/cart/items/TEA-1", Some(&ann), Some(&json!({"qty": 0})), &[])
        .await
        .ok(200);
    assert_eq!(cart["items"].as_array().unwrap().len(), 1);
    let cart =
        app.send(Method::DELETE, "/v1/cart/items/CUP-1", Some(&ann), None, &[]).await.ok(200);
    assert_eq!(cart["items"], json!([]));
    app.post("/v1/cart/items", Some(&ann), &json!({"sku": "CUP-1", "qty": 1})).await.ok(200);
    let cart = app.send(Method::DELETE, "/v1/cart", Some(&ann), None, &[]).await.ok(200);
    assert_eq!(cart["items"], json!([]));
    // A cart holds no stock.
    assert_eq!(app.levels("TEA-1").await["reserved"], 0);
}
