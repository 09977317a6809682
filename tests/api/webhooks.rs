//! `/v1/admin/webhooks*` without a broker: subscriptions are validated, kept and listed (their
//! secret shown once); nothing is delivered.

use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_validated_kept_listed_without_secrets_and_deleted() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let customer = app.customer("cy@example.com").await;
    let create = |url: &str, events: serde_json::Value| json!({"url": url, "events": events});
    app.post(
        "/v1/admin/webhooks",
        Some(&customer),
        &create("https://93.184.216.34/h", json!(["*"])),
    )
    .await
    .problem(403, "/problems/forbidden");
    for (url, events, field) in [
        ("ftp://93.184.216.34/h", json!(["*"]), "url"),
        ("http://127.0.0.1:8080/h", json!(["*"]), "url"),
        ("http://localhost:8080/h", json!(["*"]), "url"),
        ("http://192.168.0.10/h", json!(["*"]), "url"),
        ("http://169.254.169.254/latest/meta-data", json!(["*"]), "url"),
        ("https://93.184.216.34/h", json!(["order.shipped"]), "events"),
        ("https://93.184.216.34/h", json!(["user.password_reset_requested"]), "events"),
        ("https://93.184.216.34/h", json!([]), "events"),
    ] {
        let refused = app.post("/v1/admin/webhooks", Some(&admin), &create(url, events)).await;
        let problem = refused.problem(400, "/problems/validation");
        assert_eq!(problem["errors"][0]["field"], field, "{url}: {problem}");
    }
    let created = app
        .post(
            "/v1/admin/webhooks",
            Some(&admin),
            &json!({"url": "https://93.184.216.34/h", "events": ["order.confirmed", "stock.low"], "description": "ERP"}),
        )
        .await
        .ok(201);
    let id = created["webhook_id"].as_str().unwrap();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert!(created["created_at"].is_string());
    let listed = app.get("/v1/admin/webhooks", Some(&admin)).await.ok(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["webhook_id"], id);
    assert_eq!(listed["items"][0]["events"], json!(["order.confirmed", "stock.low"]));
    assert!(listed["items"][0].get("secret").is_none(), "the secret is never listed");
    let log = app.get(&format!("/v1/admin/webhooks/{id}/deliveries"), Some(&admin)).await.ok(200);
    assert_eq!(log, json!({"items": [], "next_cursor": null}), "no broker: nothing delivered");
    app.get("/v1/admin/webhooks/wh_nope/deliveries", Some(&admin))
        .await
        .problem(404, "/problems/not-found");
    let deleted = app
        .send(reqwest::Method::DELETE, &format!("/v1/admin/webhooks/{id}"), Some(&admin), None, &[])
        .await;
    assert_eq!(deleted.status.as_u16(), 204);
    let again = app
        .send(reqwest::Method::DELETE, &format!("/v1/admin/webhooks/{id}"), Some(&admin), None, &[])
        .await;
    again.problem(404, "/problems/not-found");
    let spec = app.get("/openapi.json", None).await.ok(200);
    for path in [
        "/v1/admin/webhooks",
        "/v1/admin/webhooks/{webhook_id}",
        "/v1/admin/webhooks/{webhook_id}/deliveries",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} in /openapi.json");
    }
}
