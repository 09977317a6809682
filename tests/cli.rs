//! The `storefront` binary: bad configuration is refused with one line and a failing status;
//! a node runs on a fresh data dir and stops cleanly on SIGTERM.
// Test code: an unmet expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn storefront() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_storefront"));
    // The test's own environment must not configure the node.
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("STOREFRONT_")) {
        command.env_remove(name);
    }
    command
}

fn refused(args: &[&str], envs: &[(&str, &str)]) -> String {
    let output = storefront().args(args).envs(envs.iter().copied()).output().unwrap();
    assert!(!output.status.success(), "{args:?} {envs:?} was accepted");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_configuration_is_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[entities]\nshard_cuont = 3\n").unwrap();
    let message = refused(&["serve", "--config", bad.to_str().unwrap()], &[]);
    assert!(message.contains("entities.shard_cuont"), "{message}");

    std::fs::write(&bad, "http_addr = 8080\n").unwrap();
    assert!(refused(&["serve", "--config", bad.to_str().unwrap()], &[]).contains("http_addr"));

    std::fs::write(&bad, "not toml [").unwrap();
    assert!(refused(&["serve", "--config", bad.to_str().unwrap()], &[]).contains("not valid toml"));

    let missing = dir.path().join("missing.toml");
    assert!(
        refused(&["serve", "--config", missing.to_str().unwrap()], &[]).contains("cannot read")
    );

    let message = refused(&["serve"], &[("STOREFRONT_ENTITIES__SHARD_COUNT", "0")]);
    assert!(message.contains("entities.shard_count"), "{message}");
    let message = refused(&["serve", "--seeds", "n2:7000"], &[]);
    assert!(message.contains("shared store"), "{message}");

    // Only a shared search index is rebuilt by hand; a bad one is named.
    let message = refused(&["search", "rebuild"], &[]);
    assert!(message.contains("embedded index is each node's own"), "{message}");
    let data_dir = dir.path().to_str().unwrap();
    let envs = [("STOREFRONT_DATA_DIR", data_dir)];
    let message = refused(&["search", "rebuild", "--search", "quickwit://127.0.0.1:9"], &envs);
    assert!(message.contains("names no index"), "{message}");
}

/// The node's HTTP address, from its JSON "node running" log line.
fn running_addr(lines: &mut impl Iterator<Item = String>) -> String {
    let line = lines.find(|line| line.contains("node running")).expect("the node reports running");
    let log: serde_json::Value = serde_json::from_str(&line).unwrap();
    log["fields"]["http"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_ends_streams_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = storefront()
        .args([
            "serve",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--http-addr",
            "127.0.0.1:0",
            "--no-demo-data",
        ])
        .env("STOREFRONT_LOG__JSON", "true")
        .env("STOREFRONT_ADMIN_EMAIL", "admin@example.com")
        .env("STOREFRONT_ADMIN_PASSWORD", "admin-password-1")
        // A checkout that retries the gateway for about 3 s, answered after at most 10 s.
        .env("STOREFRONT_CHECKOUT__GATEWAY_RETRY_BASE_MS", "1000")
        .env("STOREFRONT_CHECKOUT__WAIT_MS", "10000")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines().map(Result::unwrap);
    let base = format!("http://{}", running_addr(&mut lines));
    // Keep reading the logs, or the node would block writing them.
    std::thread::spawn(move || lines.for_each(drop));
    let client = reqwest::Client::new();
    let post = |path: &str, token: Option<&str>, body: serde_json::Value| {
        let mut request = client.post(format!("{base}{path}")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.header("idempotency-key", path.to_owned()).send()
    };
    let login = post(
        "/v1/auth/login",
        None,
        serde_json::json!({"email": "admin@example.com", "password": "admin-password-1"}),
    )
    .await
    .unwrap()
    .json::<serde_json::Value>()
    .await
    .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let product = serde_json::json!({"sku": "SIG-1", "name": "n", "category": "c", "price": {"amount": "1.00", "currency": "USD"}, "initial_stock": 5});
    assert_eq!(post("/v1/admin/products", Some(&token), product).await.unwrap().status(), 201);
    let stream = client.get(format!("{base}/v1/inventory/stream?sku=SIG-1")).send().await.unwrap();
    let checkout = post(
        "/v1/checkout",
        Some(&token),
        serde_json::json!({"payment_token": "tok_processingError", "items": [{"sku": "SIG-1", "qty": 1}]}),
    );
    let in_flight = tokio::spawn(checkout);
    // The checkout is running once its units are held (its gateway retries take seconds).
    let mut held = false;
    for _ in 0..10_000 {
        let levels: serde_json::Value = client
            .get(format!("{base}/v1/inventory/SIG-1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if levels["reserved"] == 1 {
            held = true;
            break;
        }
    }
    assert!(held, "the checkout never reserved its unit");
    let status = Command::new("kill").args(["-TERM", &node.id().to_string()]).status().unwrap();
    assert!(status.success());
    // The request in flight gets its answer (the saga's outcome), not a reset connection.
    let answer = in_flight.await.unwrap().expect("an answer, not a dropped connection");
    assert_eq!(answer.status(), 502, "{:?}", answer.text().await);
    // The open stream ends rather than holding the shutdown.
    let rest = tokio::time::timeout(std::time::Duration::from_secs(20), stream.bytes()).await;
    assert!(rest.is_ok(), "the stock stream did not end");
    let exit = tokio::task::spawn_blocking(move || node.wait().unwrap()).await.unwrap();
    assert!(exit.success(), "a SIGTERM stop must exit 0: {exit:?}");
    assert!(dir.path().join("store").is_dir(), "the embedded store lives in the data dir");
}
