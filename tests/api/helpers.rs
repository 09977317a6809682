//! `spawn_app()`: the real server on port 0 with a fresh data dir, and a client for it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use storefront::node::Node;
use storefront_actors::SimulatedGateway;
use storefront_config::{Config, Secret};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
/// The test key (`KID:SECRET`), so tests can forge tokens with it and with other keys.
pub const KEY_ID: &str = "test-1";
pub const KEY_SECRET: &str = "0123456789abcdef0123456789abcdef-test";

/// A running node.
pub struct TestApp {
    pub base: String,
    /// `http://` and the metrics address, when `/metrics` has its own.
    pub metrics_base: Option<String>,
    pub client: reqwest::Client,
    pub config: Config,
    /// The node's payment gateway, to hold or fault its calls.
    pub gateway: Arc<SimulatedGateway>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

/// A response: status, headers, body as text and JSON.
#[derive(Debug)]
pub struct Res {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Res {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Asserts a problem document with `status` and `kind`; returns it.
    #[track_caller]
    pub fn problem(&self, status: u16, kind: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.content_type(), "application/problem+json", "{}", self.text);
        let body = self.json();
        assert_eq!(body["type"], kind, "{}", self.text);
        assert_eq!(body["status"], status, "{}", self.text);
        assert!(body["title"].is_string() && body["detail"].is_string(), "{}", self.text);
        body
    }

    #[track_caller]
    pub fn ok(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        self.json()
    }
}

/// The configuration tests start from: port 0, fresh data dir, no demo data, generous limits,
/// quick gateway retries.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config {
        http_addr: "127.0.0.1:0".into(),
        data_dir: data_dir.to_owned(),
        demo_data: false,
        admin_email: Some(ADMIN_EMAIL.into()),
        admin_password: Some(Secret::new(ADMIN_PASSWORD)),
        ..Config::default()
    };
    config.auth.signing_keys = vec![Secret::new(format!("{KEY_ID}:{KEY_SECRET}"))];
    config.rate_limit.per_ip_per_second = 100_000;
    config.rate_limit.per_user_per_second = 100_000;
    config.rate_limit.auth_per_minute = 100_000;
    config.checkout.gateway_retry_base_ms = 1;
    config.entities.shard_count = 16;
    config
}

pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let mut app = start(config).await;
    app._dir = Some(dir);
    app
}

pub async fn start(config: Config) -> TestApp {
    let metrics = storefront_http::metrics::install_recorder().unwrap();
    let gateway = Arc::new(SimulatedGateway::new());
    let app = Node::build_with(&config, metrics, gateway.clone()).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let metrics_base = app.metrics_addr().map(|addr| format!("http://{addr}"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        metrics_base,
        client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        config,
        gateway,
        stop: Some(stop),
        task: Some(task),
        _dir: None,
    }
}

impl TestApp {
    /// Stops the node as SIGTERM does (drain, flush) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Stops this node and starts a new one on the same data dir.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let mut next = start(self.config.clone()).await;
        next._dir = self._dir.take();
        next
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Res {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        Res {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Res {
        self.send(Method::GET, path, token, None, &[]).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Res {
        self.send(Method::POST, path, token, Some(body), &[]).await
    }

    /// Raw bytes as the body, with a JSON content type.
    pub async fn post_raw(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> Res {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        Res {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    pub async fn checkout(&self, token: &str, key: &str, body: &Value) -> Res {
        self.send(
            Method::POST,
            "/v1/checkout",
            Some(token),
            Some(body),
            &[("idempotency-key", key)],
        )
        .await
    }

    /// A retry of a checkout: as a client honouring `Retry-After` does, it tries again while the
    /// first answer is still being stored (409 in progress), for at most 10 s.
    pub async fn checkout_retry(&self, token: &str, key: &str, body: &Value) -> Res {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let res = self.checkout(token, key, body).await;
            if res.status != StatusCode::CONFLICT
                || res.json()["type"] != "/problems/idempotency-in-progress"
            {
                return res;
            }
            assert!(tokio::time::Instant::now() < deadline, "still in progress after 10 s");
        }
    }

    /// Registers `email` and logs in; returns the access token.
    pub async fn customer(&self, email: &str) -> String {
        let password = "a-good-password";
        self.post("/v1/auth/register", None, &json!({"email": email, "password": password}))
            .await
            .ok(201);
        self.login(email, password).await["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn login(&self, email: &str, password: &str) -> Value {
        self.post("/v1/auth/login", None, &json!({"email": email, "password": password}))
            .await
            .ok(200)
    }

    pub async fn admin(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await["access_token"].as_str().unwrap().to_owned()
    }

    /// Creates a product (admin) with `stock` units; returns it.
    pub async fn product(&self, admin: &str, sku: &str, price: &str, stock: u64) -> Value {
        let body = json!({
            "sku": sku,
            "name": format!("Product {sku}"),
            "description": format!("The {sku} for tests"),
            "category": "tests",
            "price": {"amount": price, "currency": "USD"},
            "initial_stock": stock,
        });
        self.post("/v1/admin/products", Some(admin), &body).await.ok(201)
    }

    pub async fn levels(&self, sku: &str) -> Value {
        self.get(&format!("/v1/inventory/{sku}"), None).await.ok(200)
    }
}
