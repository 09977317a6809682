//! Redis (`[redis] url`): rate limits shared by every node, and cached searches, against a real
//! Redis this test starts and kills. Redis down never fails a request: limits fall back to each
//! node's own and the cache is skipped; both return to Redis once it is back.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use storefront_config::Secret;

use crate::helpers::{TestApp, start, test_config};

/// A `redis-server` of the machine's, on its own port, without persistence.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Self { port, child: None };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port and waits until it answers.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server on {} did not come up", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(
            Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap().success()
        );
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// One command through `redis-cli`; its output, trimmed.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn node(redis: &RedisServer, per_ip_per_second: Option<u32>) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.redis.url = Some(Secret::new(redis.url()));
    // Generous, so a busy test machine does not turn a slow answer into a fallback: what is
    // tested is the fallback on failure, not the default of a few milliseconds.
    config.redis.timeout_ms = 250;
    match per_ip_per_second {
        Some(n) => config.rate_limit.per_ip_per_second = n,
        None => config.rate_limit.enabled = false,
    }
    (start(config).await, dir)
}

async fn status(app: &TestApp, path: &str) -> u16 {
    app.client.get(format!("{}{path}", app.base)).send().await.unwrap().status().as_u16()
}

const BUDGET: &str = "storefront:limit:ip:127.0.0.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_shared_through_redis_and_each_nodes_own_while_it_is_down() {
    let mut redis = RedisServer::start();
    // One request a second per client IP, on two nodes with stores of their own.
    let (a, _a) = node(&redis, Some(1)).await;
    let (b, _b) = node(&redis, Some(1)).await;

    // Shared: the client's one request this second was spent on A, so B refuses it.
    assert_eq!(status(&a, "/v1/currencies").await, 200);
    assert_eq!(status(&b, "/v1/currencies").await, 429, "B did not count A's request");

    // Redis hung (stopped, its connections open): B's request waits out the timeout and is
    // decided by B's own limiter, whose budget is untouched.
    redis.signal("STOP");
    assert_eq!(status(&b, "/v1/currencies").await, 200, "B's own limiter");
    redis.signal("CONT");

    // Redis gone: no request fails; each node limits on its own.
    redis.kill();
    assert_eq!(status(&a, "/v1/currencies").await, 200, "A's own budget is untouched");
    assert_eq!(status(&a, "/v1/currencies").await, 429, "A's own limit");

    // Back: each node decides through Redis again (its decision leaves the budget there).
    redis.restart();
    for (name, app) in [("A", &a), ("B", &b)] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            redis.cli(&["DEL", BUDGET]);
            let _ = status(app, "/v1/currencies").await;
            if redis.cli(&["EXISTS", BUDGET]) == "1" {
                break;
            }
            assert!(Instant::now() < deadline, "{name} never used Redis again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    redis.cli(&["DEL", BUDGET]);
    assert_eq!(status(&a, "/v1/currencies").await, 200);
    assert_eq!(status(&b, "/v1/currencies").await, 429, "shared again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_are_cached_by_catalog_version_and_served_without_redis() {
    let mut redis = RedisServer::start();
    let (app, _dir) = node(&redis, None).await;
    let admin = app.admin().await;
    app.product(&admin, "CACHE-1", "10.00", 3).await;
    let names = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().into())
            .collect()
    };

    let first = app.get("/v1/products?q=cache", None).await.ok(200);
    assert_eq!(names(&first), ["Product CACHE-1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.cli(&["--scan", "--pattern", "storefront:search:*"]).is_empty() {
        assert!(Instant::now() < deadline, "the search was never cached");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let again = app.get("/v1/products?q=cache", None).await.ok(200);
    assert_eq!(again, first, "the cached page reads as the first");

    // A change is a new catalog version: never answered from the older page.
    app.send(
        reqwest::Method::PATCH,
        "/v1/admin/products/prod-cache-1",
        Some(&admin),
        Some(&json!({"name": "Renamed cache"})),
        &[],
    )
    .await
    .ok(200);
    assert_eq!(names(&app.get("/v1/products?q=cache", None).await.ok(200)), ["Renamed cache"]);

    // Without Redis the same searches are answered from the index.
    redis.kill();
    assert_eq!(names(&app.get("/v1/products?q=renamed", None).await.ok(200)), ["Renamed cache"]);
    assert_eq!(names(&app.get("/v1/products?q=cache", None).await.ok(200)), ["Renamed cache"]);
}
