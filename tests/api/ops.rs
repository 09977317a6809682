//! Service endpoints, bad input, the live stock stream, metrics.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use storefront_http::api::inventory::COALESCE;
use tokio::io::AsyncWriteExt;

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_readiness_openapi_and_unknown_routes() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz", None).await.ok(200)["status"], "ok");
    assert_eq!(app.get("/readyz", None).await.ok(200)["status"], "ready");
    let doc = app.get("/openapi.json", None).await.ok(200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/checkout",
        "/v1/products/{product_id}",
        "/v1/inventory/stream",
        "/v1/admin/cluster/locate",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let mut operation_ids = std::collections::BTreeSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            let id = operation["operationId"].as_str().unwrap();
            assert!(operation_ids.insert(id.to_owned()), "operationId {id} twice");
            assert!(operation["responses"]["429"].is_object(), "{id} documents 429");
        }
    }
    assert_eq!(operation_ids.len(), 37);
    let page = app.get("/admin", None).await;
    assert_eq!(page.status, 200);
    assert!(page.content_type().starts_with("text/html"));
    app.get("/v1/nothing-here", None).await.problem(404, "/problems/not-found");
    let not_allowed = app.send(Method::DELETE, "/v1/products", None, None, &[]).await;
    not_allowed.problem(405, "/problems/method-not-allowed");
    assert_eq!(not_allowed.headers["allow"], "GET");
}

/// One route table gives both the document and the routes: every operation the document lists
/// is served (a request with made-up ids and no token reaches a handler, not "no such
/// endpoint"), and its path answers a method it lacks with an `Allow` that names the method.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json", None).await.ok(200);
    let mut served = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        let path: Vec<&str> = template
            .split('/')
            .map(|segment| if segment.starts_with('{') { "no-such-id" } else { segment })
            .collect();
        let path = format!("{}?sku=NO-SUCH-SKU", path.join("/"));
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let res = app.send(method.clone(), &path, None, None, &[]).await;
            let unmatched = res.status == 405 || res.text.contains("no such endpoint");
            assert!(!unmatched, "{method} {template} is not served: {} {}", res.status, res.text);
            let other = app.send(Method::TRACE, &path, None, None, &[]).await;
            other.problem(405, "/problems/method-not-allowed");
            let allow = other.headers["allow"].to_str().unwrap();
            assert!(allow.split(", ").any(|m| m == method.as_str()), "{template}: Allow {allow}");
            served += 1;
        }
    }
    assert_eq!(served, 37);
}

#[tokio::test]
async fn bad_bodies_are_client_errors_never_500() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let p = "/v1/admin/products";
    app.post_raw(p, Some(&admin), b"{\"sku\": ".to_vec())
        .await
        .problem(400, "/problems/malformed-json");
    app.post_raw(p, Some(&admin), b"[1,2,3]".to_vec()).await.problem(400, "/problems/validation");
    app.post_raw(p, Some(&admin), Vec::new()).await.problem(400, "/problems/malformed-json");
    app.post_raw(p, Some(&admin), vec![0xff, 0xfe, 0x00])
        .await
        .problem(400, "/problems/malformed-json");
    let unknown = app
        .post(p, Some(&admin), &json!({"sku": "A-1", "name": "n", "category": "c", "price": {"amount": "1.00", "currency": "USD"}, "colour": "red"}))
        .await
        .problem(400, "/problems/validation");
    assert_eq!(unknown["errors"][0]["field"], "colour");
    let huge = format!("{{\"email\": \"{}\", \"password\": \"x\"}}", "a".repeat(70 * 1024));
    app.post_raw("/v1/auth/register", None, huge.into_bytes())
        .await
        .problem(413, "/problems/payload-too-large");
    let form = app
        .client
        .post(format!("{}/v1/auth/login", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=a&password=b")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    // A huge body sent without a length (chunked) is cut off at the limit too.
    let chunks = futures::stream::iter((0..100).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let chunked = app
        .client
        .post(format!("{}/v1/auth/login", app.base))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status(), 413);
}

#[tokio::test]
async fn the_stock_stream_sends_current_levels_then_coalesced_changes() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    app.product(&admin, "LIVE-1", "1.00", 10).await;
    app.product(&admin, "LIVE-2", "1.00", 10).await;
    let stream = app
        .client
        .get(format!("{}/v1/inventory/stream?sku=LIVE-1", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut body = stream;
    // 50 restocks of LIVE-1 (and changes to LIVE-2, not asked for) as fast as they go.
    let started = std::time::Instant::now();
    let writes = async {
        for i in 0..50 {
            for sku in ["LIVE-1", "LIVE-2"] {
                let path = format!("/v1/admin/inventory/{sku}/restock");
                let key = format!("{sku}-{i}");
                app.send(
                    Method::POST,
                    &path,
                    Some(&admin),
                    Some(&json!({"qty": 1})),
                    &[("idempotency-key", &key)],
                )
                .await
                .ok(200);
            }
        }
    };
    let first = {
        let mut chunk = String::new();
        while !chunk.contains("\n\n") {
            chunk.push_str(std::str::from_utf8(&body.chunk().await.unwrap().unwrap()).unwrap());
        }
        chunk
    };
    assert!(
        first.contains(r#""sku":"LIVE-1","on_hand":10,"reserved":0,"available":10"#),
        "{first}"
    );
    writes.await;
    // Changes arrive until the last one, coalesced (fewer events than the 50 changes), all LIVE-1.
    let mut seen = Vec::new();
    let mut stream = body;
    loop {
        let mut got = events_from(&mut stream).await;
        let done = got.iter().any(|e| e["on_hand"] == 60);
        seen.append(&mut got);
        if done {
            break;
        }
    }
    assert!(seen.iter().all(|e| e["sku"] == "LIVE-1"), "{seen:?}");
    // Coalesced: at most one event per 100 ms tick while the changes came (however slow the
    // machine made them), and never more than one per change.
    let ticks = started.elapsed().as_millis() / COALESCE.as_millis() + 2;
    let most = usize::try_from(ticks).unwrap().min(50);
    assert!(seen.len() <= most, "{} events for 50 changes in {ticks} ticks", seen.len());
    assert_eq!(
        seen.last().unwrap(),
        &json!({"sku": "LIVE-1", "on_hand": 60, "reserved": 0, "available": 60})
    );
    let on_hand: Vec<u64> = seen.iter().map(|e| e["on_hand"].as_u64().unwrap()).collect();
    assert!(on_hand.windows(2).all(|w| w[0] < w[1]), "in order: {on_hand:?}");
}

async fn events_from(response: &mut reqwest::Response) -> Vec<Value> {
    let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .expect("the stream stays open");
    std::str::from_utf8(&chunk)
        .unwrap()
        .split("\n\n")
        .filter(|block| block.contains("event:stock"))
        .map(|block| {
            serde_json::from_str(block.lines().find_map(|l| l.strip_prefix("data:")).unwrap())
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_slow_the_shop() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    app.product(&admin, "BUSY-1", "1.00", 0).await;
    // A raw client that asks for every SKU's stream and then never reads a byte.
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    silent.write_all(b"GET /v1/inventory/stream HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    // Writes go on at full speed while it sits there.
    let writes = (0..2000).map(|i| {
        let (app, admin) = (&app, &admin);
        async move {
            let key = format!("busy-{i}");
            app.send(
                Method::POST,
                "/v1/admin/inventory/BUSY-1/restock",
                Some(admin),
                Some(&json!({"qty": 1})),
                &[("idempotency-key", &key)],
            )
            .await
            .ok(200);
        }
    });
    futures::stream::iter(writes).buffer_unordered(32).collect::<Vec<()>>().await;
    assert_eq!(app.levels("BUSY-1").await["on_hand"], 2000);
    drop(silent);
}

/// Set in the child process in which [`metrics_count_routes_reservations_and_sagas`] runs alone.
const METRICS_ALONE: &str = "STOREFRONT_METRICS_TEST_ALONE";

#[tokio::test]
async fn metrics_count_routes_reservations_and_sagas() {
    // The recorder is the process's, shared with every other test of this binary (a checkout of
    // theirs counts here too): the test runs again alone in a child process, where every count
    // is its own.
    if std::env::var_os(METRICS_ALONE).is_none() {
        let alone = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["ops::metrics_count_routes_reservations_and_sagas", "--exact"])
            .env(METRICS_ALONE, "1")
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&alone.stdout);
        assert!(
            alone.status.success() && report.contains("1 passed"),
            "{report}{}",
            String::from_utf8_lossy(&alone.stderr)
        );
        return;
    }
    let app = spawn_app().await;
    let admin = app.admin().await;
    let ann = app.customer("ann@example.com").await;
    app.product(&admin, "MET-1", "1.00", 5).await;
    app.checkout(
        &ann,
        "m1",
        &json!({"payment_token": "tok_visa", "items": [{"sku": "MET-1", "qty": 1}]}),
    )
    .await
    .ok(201);
    app.get("/v1/products/prod-met-1", None).await.ok(200);
    let text = app.get("/metrics", None).await.text;
    for needle in [
        r#"storefront_http_request_duration_seconds_bucket{route="GET /v1/products/{product_id}""#,
        r#"storefront_http_responses_total{route="POST /v1/checkout",status="201"}"#,
        r#"storefront_reservations_total{outcome="reserved"}"#,
        r#"storefront_sagas_total{outcome="confirmed"}"#,
        r#"storefront_journal_batch_events_bucket{kind="sku""#,
        r#"storefront_journal_append_seconds_bucket{kind="order""#,
        r#"storefront_live_entities{kind="sku"}"#,
        r#"storefront_entity_calls_in_flight{kind="order"}"#,
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
    // One product read, one checkout, one reservation, one saga: each counted once.
    for series in [
        r#"storefront_http_request_duration_seconds_count{route="GET /v1/products/{product_id}"}"#,
        r#"storefront_http_responses_total{route="POST /v1/checkout",status="201"}"#,
        r#"storefront_reservations_total{outcome="reserved"}"#,
        r#"storefront_sagas_total{outcome="confirmed"}"#,
    ] {
        let line = text.lines().find(|l| l.starts_with(series)).unwrap();
        assert_eq!(line[series.len()..].trim(), "1", "{line}");
    }
}

#[tokio::test]
async fn the_cluster_endpoints_describe_a_cluster_of_one() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let customer = app.customer("c@example.com").await;
    let cluster = app.get("/v1/admin/cluster", Some(&admin)).await.ok(200);
    assert_eq!(cluster["node_id"], "node-1");
    assert_eq!(cluster["shard_count"], 16);
    assert_eq!(cluster["nodes"][0]["status"], "up");
    assert_eq!(cluster["shards_by_node"]["node-1"], 16);
    let located = app.get("/v1/admin/cluster/locate?kind=sku&id=HOT-1", Some(&admin)).await.ok(200);
    assert_eq!(located["node_id"], "node-1");
    assert_eq!(
        located["shard"],
        storefront_cluster::shard_of(storefront_actors::EntityKind::Sku, "HOT-1", 16)
    );
    app.get("/v1/admin/cluster/locate?kind=planet&id=x", Some(&admin))
        .await
        .problem(400, "/problems/validation");
    app.get("/v1/admin/cluster/locate?kind=sku", Some(&admin))
        .await
        .problem(400, "/problems/validation");
    app.post("/v1/admin/cluster/leave", Some(&admin), &json!({}))
        .await
        .problem(409, "/problems/last-node");
    app.get("/v1/admin/cluster", Some(&customer)).await.problem(403, "/problems/forbidden");
    app.post("/v1/admin/cluster/leave", None, &json!({}))
        .await
        .problem(401, "/problems/unauthorized");
}

#[tokio::test]
async fn metrics_can_have_their_own_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.http.metrics_addr = Some("127.0.0.1:0".into());
    let app = crate::helpers::start(config).await;
    app.get("/metrics", None).await.problem(404, "/problems/not-found");
    let metrics_base = app.metrics_base.clone().unwrap();
    let text = app.client.get(format!("{metrics_base}/metrics")).send().await.unwrap();
    assert_eq!(text.status(), 200);
    assert!(text.text().await.unwrap().contains("storefront_live_entities"));
    let api = app.client.get(format!("{metrics_base}/v1/products")).send().await.unwrap();
    assert_eq!(api.status(), 404, "the metrics address serves nothing else");
}

/// Reads from `stream` until the server closes it; `false` if it is still open after 10 s.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn slow_clients_that_never_finish_a_request_head_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.http.header_timeout_secs = 1;
    let app = crate::helpers::start(config).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Half a request head, then nothing.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    assert!(closed_by_server(&mut stalled).await, "a stalled request head kept its connection");
    // A slowloris: a byte every 100 ms, never the end of the head.
    let mut trickle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    trickle.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let dripping = async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for _ in 0..200 {
            tick.tick().await;
            if trickle.write_all(b"x").await.is_err() {
                return true;
            }
        }
        false
    };
    assert!(dripping.await, "a request head sent a byte at a time kept its connection");
    // A prompt client is served as ever.
    app.get("/healthz", None).await.ok(200);
}

#[tokio::test]
async fn live_streams_are_capped_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.http.max_streams_per_ip = 2;
    let app = crate::helpers::start(config).await;
    let open = || app.client.get(format!("{}/v1/inventory/stream", app.base)).send();
    let first = open().await.unwrap();
    let second = open().await.unwrap();
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = open().await.unwrap();
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    let problem: Value = third.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/rate-limited");
    // Other routes are not held back by the cap.
    app.get("/healthz", None).await.ok(200);
    drop((first, second));
}
