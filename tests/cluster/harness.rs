//! Node processes of this build on 127.0.0.1, sharing a fresh PostgreSQL database, and the API
//! calls the cluster tests make against them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub use crate::common::eventually;

/// Shards per kind in the test clusters (the default).
pub const SHARDS: u64 = 256;
const HEARTBEAT_MS: u64 = 250;
pub const MEMBER_TTL_MS: u64 = 2_000;
const ADMIN_EMAIL: &str = "cluster-admin@example.com";
const ADMIN_PASSWORD: &str = "cluster-admin-password";

/// One cluster test at a time: three node processes each, on two cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The PostgreSQL server the tests use.
pub fn server_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn admin_connection() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL (TEST_POSTGRES_URL)");
    tokio::spawn(connection);
    client
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Where a node runs: its address (HTTP and peers), and optionally a network namespace and the
/// address it reaches PostgreSQL at.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub ip: Option<String>,
    pub netns: Option<String>,
    pub postgres: Option<String>,
    /// More environment for the node.
    pub env: Vec<(String, String)>,
    /// The host name peers reach it by (its cluster address and its seed entry), instead of
    /// its address.
    pub host_name: Option<String>,
}

pub struct Node {
    pub id: String,
    pub http: u16,
    pub peer: u16,
    place: Placement,
    child: std::sync::Mutex<Option<Child>>,
}

impl Node {
    pub fn ip(&self) -> &str {
        self.place.ip.as_deref().unwrap_or("127.0.0.1")
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.ip(), self.http)
    }

    /// Where peers reach it.
    pub fn cluster_addr(&self) -> String {
        format!("{}:{}", self.place.host_name.as_deref().unwrap_or(self.ip()), self.peer)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }
}

pub struct Cluster {
    db: String,
    store: String,
    dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub http: reqwest::Client,
    admin: String,
}

impl Cluster {
    /// `count` node slots on a fresh database; the first `running` nodes are started and have
    /// agreed on their shards.
    pub async fn start(count: usize, running: usize) -> Cluster {
        Self::start_placed(vec![Placement::default(); count], running).await
    }

    /// [`Cluster::start`] with a placement per node.
    pub async fn start_placed(places: Vec<Placement>, running: usize) -> Cluster {
        let cluster = Self::start_ready(places, running).await;
        cluster.wait_settled(running).await;
        cluster
    }

    /// [`Cluster::start_placed`], returning as soon as the first `running` nodes answer
    /// `/readyz` 200 (the shards may not be spread yet).
    pub async fn start_ready(places: Vec<Placement>, running: usize) -> Cluster {
        let db = format!(
            "storefront_cluster_{}_{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
        );
        admin_connection().await.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
        let base = server_url();
        let (server, _) = base.rsplit_once('/').unwrap();
        let store = format!("{server}/{db}");
        let migrated = Command::new(env!("CARGO_BIN_EXE_storefront"))
            .args(["migrate", "--store", &store])
            .output()
            .unwrap();
        assert!(
            migrated.status.success(),
            "migrate: {}",
            String::from_utf8_lossy(&migrated.stderr)
        );
        let nodes = places
            .into_iter()
            .enumerate()
            .map(|(n, place)| Node {
                id: format!("n{}", n + 1),
                http: free_port(),
                peer: free_port(),
                place,
                child: std::sync::Mutex::new(None),
            })
            .collect();
        let mut cluster = Cluster {
            db,
            store,
            dir: tempfile::tempdir().unwrap(),
            nodes,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            admin: String::new(),
        };
        for i in 0..running {
            cluster.start_node(i);
        }
        for i in 0..running {
            cluster.wait_ready(i).await;
        }
        cluster.admin = cluster.login(0, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        cluster
    }

    /// The cluster's shared store.
    pub fn store_url(&self) -> &str {
        &self.store
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.nodes[i].id))
    }

    /// Starts node `i` (again, after a kill: same id, ports and data directory).
    pub fn start_node(&self, i: usize) {
        let seeds: Vec<String> = self.nodes.iter().map(Node::cluster_addr).collect();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log(i)).unwrap();
        let node = &self.nodes[i];
        let store = match &node.place.postgres {
            Some(addr) => self.store.replacen("127.0.0.1:5432", addr, 1),
            None => self.store.clone(),
        };
        let mut command = match &node.place.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_storefront")]);
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_storefront")),
        };
        let child = command
            .args(["serve", "--no-demo-data", "--store", &store, "--node-id", &node.id])
            .args(["--http-addr", &format!("{}:{}", node.ip(), node.http)])
            .args(["--cluster-addr", &node.cluster_addr()])
            .args(["--seeds", &seeds.join(",")])
            .arg("--data-dir")
            .arg(self.dir.path().join(&node.id))
            .env("STOREFRONT_AUTH__SIGNING_KEYS", "k1:0123456789abcdef0123456789abcdef")
            .env("STOREFRONT_CLUSTER__COOKIE", "cluster-tests-cookie")
            .env("STOREFRONT_CLUSTER__HEARTBEAT_MS", HEARTBEAT_MS.to_string())
            .env("STOREFRONT_CLUSTER__MEMBER_TTL_MS", MEMBER_TTL_MS.to_string())
            .env("STOREFRONT_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("STOREFRONT_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("STOREFRONT_RATE_LIMIT__ENABLED", "false")
            .env("STOREFRONT_LOG__FILTER", "info,ractor_cluster=warn,ractor=warn")
            .env("NO_COLOR", "1")
            .envs(node.place.env.iter().cloned())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        *self.nodes[i].child.lock().unwrap() = Some(child);
    }

    /// SIGKILLs node `i` and reaps it.
    pub fn kill(&self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.lock().unwrap().take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Waits (up to `limit`) for node `i` to exit by itself, and reaps it.
    pub async fn wait_exit(&self, i: usize, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.nodes[i].child.lock().unwrap().take().expect("node running");
        let exit = tokio::task::spawn_blocking(move || child.wait());
        let waited = tokio::time::timeout(limit, exit).await;
        waited.unwrap_or_else(|_| panic!("node {i} did not exit")).unwrap().unwrap()
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`) to node `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i].pid().expect("node running");
        let sent = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status();
        assert!(sent.unwrap().success(), "kill -{signal} {pid}");
    }

    pub async fn wait_ready(&self, i: usize) {
        let url = format!("{}/readyz", self.nodes[i].url());
        eventually(Duration::from_secs(60), &format!("node {i} to be ready"), || async {
            matches!(self.http.get(&url).send().await, Ok(r) if r.status() == 200)
        })
        .await;
    }

    /// Waits until the first `running` nodes each see `running` nodes up and every shard held.
    pub async fn wait_settled(&self, running: usize) {
        eventually(Duration::from_secs(60), "the cluster to settle", || async {
            for i in 0..running {
                let Ok(view) = self.try_get(i, "/v1/admin/cluster").await else { return false };
                let up = view["nodes"]
                    .as_array()
                    .map_or(0, |n| n.iter().filter(|n| n["status"] == "up").count());
                if up != running || view["unowned_shards"] != 0 {
                    return false;
                }
                // Every shard held by the node the up members' rendezvous gives it: the split is
                // done (a handoff moves shards over several rounds, each a heartbeat apart).
                let members: Vec<&str> = view["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|n| n["status"] == "up")
                    .filter_map(|n| n["node_id"].as_str())
                    .collect();
                let mut desired: BTreeMap<&str, u64> = BTreeMap::new();
                for shard in 0..u32::try_from(SHARDS).unwrap() {
                    if let Some(node) = storefront_cluster::rendezvous(&members, shard) {
                        *desired.entry(node).or_default() += 1;
                    }
                }
                if view["shards_by_node"] != json!(desired) {
                    return false;
                }
            }
            true
        })
        .await;
    }

    pub async fn login(&self, i: usize, email: &str, password: &str) -> String {
        let answer = self
            .http
            .post(format!("{}/v1/auth/login", self.nodes[i].url()))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    /// GET as the admin; an error for a non-2xx answer or no answer.
    pub async fn try_get(&self, i: usize, path: &str) -> Result<Value, String> {
        let answer = self
            .http
            .get(format!("{}{path}", self.nodes[i].url()))
            .bearer_auth(&self.admin)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !answer.status().is_success() {
            return Err(format!("{path}: {}", answer.status()));
        }
        answer.json().await.map_err(|e| e.to_string())
    }

    pub async fn get(&self, i: usize, path: &str) -> Value {
        self.try_get(i, path).await.unwrap()
    }

    /// The node (by index) holding `kind`/`id` now, as node `i` sees it.
    pub async fn owner(&self, i: usize, kind: &str, id: &str) -> Option<usize> {
        let located =
            self.try_get(i, &format!("/v1/admin/cluster/locate?kind={kind}&id={id}")).await.ok()?;
        let owner = located["node_id"].as_str()?;
        self.nodes.iter().position(|n| n.id == owner)
    }

    /// `method path` with `body` through node `i` as the admin: the status and the JSON body.
    pub async fn admin_call(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let answer = self
            .http
            .request(method, format!("{}{path}", self.nodes[i].url()))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_product(&self, i: usize, sku: &str, stock: u64) {
        self.create_limited_product(i, sku, stock, None).await;
    }

    /// A product of which one customer may buy `limit` units, if given.
    pub async fn create_limited_product(
        &self,
        i: usize,
        sku: &str,
        stock: u64,
        limit: Option<u32>,
    ) {
        let answer = self
            .http
            .post(format!("{}/v1/admin/products", self.nodes[i].url()))
            .bearer_auth(&self.admin)
            .json(&json!({
                "sku": sku, "name": format!("Item {sku}"), "description": "cluster test",
                "category": "test", "price": {"amount": "5.00", "currency": "USD"},
                "initial_stock": stock, "max_per_customer": limit,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
        // Every running node has it once it has applied the catalog's change (API.md: within
        // 2 s; about one 100 ms poll here).
        let path = format!("/v1/products/prod-{}", sku.to_lowercase());
        for n in 0..self.nodes.len() {
            if self.nodes[n].pid().is_some() {
                eventually(Duration::from_secs(10), &format!("node {n} to have {sku}"), || async {
                    self.try_get(n, &path).await.is_ok()
                })
                .await;
            }
        }
    }

    /// `count` customers: (user id, access token).
    pub async fn customers(&self, i: usize, prefix: &str, count: usize) -> Vec<(String, String)> {
        let mut all = Vec::new();
        for first in (0..count).step_by(1000) {
            let users: Vec<Value> = (first..(first + 1000).min(count))
                .map(|n| json!({"email": format!("{prefix}-{n}@example.com")}))
                .collect();
            let answer = self
                .http
                .post(format!("{}/v1/admin/users", self.nodes[i].url()))
                .bearer_auth(&self.admin)
                .json(&json!({"password": "customer-password", "users": users}))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 201);
            let body: Value = answer.json().await.unwrap();
            for user in body["users"].as_array().unwrap() {
                all.push((
                    user["user_id"].as_str().unwrap().to_owned(),
                    user["access_token"].as_str().unwrap().to_owned(),
                ));
            }
        }
        all
    }

    /// `(on_hand, reserved)` of `sku`, read through node `i`.
    pub async fn levels(&self, i: usize, sku: &str) -> (u64, u64) {
        let levels = self.get(i, &format!("/v1/inventory/{sku}")).await;
        (levels["on_hand"].as_u64().unwrap(), levels["reserved"].as_u64().unwrap())
    }

    /// Every order of the cluster with `status`, as the admin lists them.
    pub async fn orders_with(&self, i: usize, status: &str) -> Vec<Value> {
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/admin/orders?status={status}&limit=100");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.get(i, &path).await;
            orders.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return orders,
            }
        }
    }

    /// The node's metric `name` (summed over its labels).
    pub async fn metric(&self, i: usize, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.nodes[i].url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Stops every node and drops the database.
    pub async fn finish(self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        admin_connection()
            .await
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.db))
            .await
            .unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                let log = std::fs::read_to_string(self.log(i)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- last lines of {}:", self.nodes[i].id);
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// One checkout attempt of one unit of `sku` through node `i`, by `token`, with its own key.
/// `Ok(status, body)` for an answer, `Err` for none (a refused connection, a timeout).
pub async fn checkout(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    sku: &str,
    key: &str,
) -> Result<(u16, Value), String> {
    let answer = http
        .post(format!("{url}/v1/checkout"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&json!({"payment_token": "tok_visa", "items": [{"sku": sku, "qty": 1}]}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.status().as_u16();
    let body = answer.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// A network namespace joined to the host by a veth pair: `10.231.<net>.1` on the host side,
/// `10.231.<net>.2` inside. Cutting the link partitions whatever runs inside from everything
/// else (peers and PostgreSQL alike), the way a failed switch port would.
pub struct Netns {
    pub name: String,
    host_link: String,
    pub host_ip: String,
    pub inner_ip: String,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run `ip` (iproute2)");
    assert!(status.success(), "ip {}", args.join(" "));
}

impl Netns {
    /// Needs root (CAP_NET_ADMIN) and iproute2.
    pub fn create() -> Netns {
        let uid = Command::new("id").arg("-u").output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "the partition test makes a network namespace and a veth pair: it must run as root"
        );
        let tag = std::process::id() % 200 + 20;
        let netns = Netns {
            name: format!("sfpart{tag}"),
            host_link: format!("sfpart{tag}h"),
            host_ip: format!("10.231.{tag}.1"),
            inner_ip: format!("10.231.{tag}.2"),
        };
        let inner_link = format!("sfpart{tag}n");
        // Leftovers of an aborted run go first.
        let _ = Command::new("ip").args(["netns", "del", &netns.name]).status();
        let _ = Command::new("ip").args(["link", "del", &netns.host_link]).status();
        ip(&["netns", "add", &netns.name]);
        ip(&["link", "add", &netns.host_link, "type", "veth", "peer", "name", &inner_link]);
        ip(&["link", "set", &inner_link, "netns", &netns.name]);
        ip(&["addr", "add", &format!("{}/24", netns.host_ip), "dev", &netns.host_link]);
        ip(&["link", "set", &netns.host_link, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &netns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/24", netns.inner_ip), "dev", &inner_link]);
        inside(&["link", "set", &inner_link, "up"]);
        inside(&["link", "set", "lo", "up"]);
        netns
    }

    /// Cuts the namespace off.
    pub fn cut(&self) {
        ip(&["link", "set", &self.host_link, "down"]);
    }

    /// Joins it again.
    pub fn heal(&self) {
        ip(&["link", "set", &self.host_link, "up"]);
    }

    /// `curl` run inside the namespace: the HTTP status (`000` for none) and the body.
    pub async fn curl(&self, args: Vec<String>) -> (String, String) {
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            let out = Command::new("ip")
                .args(["netns", "exec", &name, "curl", "-s", "--max-time", "25"])
                .args(["-w", "\n%{http_code}"])
                .args(args)
                .output()
                .expect("run curl in the namespace");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (body, status) = text.rsplit_once('\n').unwrap_or(("", "000"));
            (status.to_owned(), body.to_owned())
        })
        .await
        .unwrap()
    }

    /// Forwards `host_ip:<port>` to the local PostgreSQL, so that a node inside reaches it (through
    /// the link); returns the address.
    pub async fn postgres_proxy(&self) -> String {
        let listener = tokio::net::TcpListener::bind(format!("{}:0", self.host_ip)).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        addr
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = Command::new("ip").args(["link", "del", &self.host_link]).status();
    }
}

/// A certificate authority for the TLS test: it signs node certificates for 127.0.0.1.
pub struct TestCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pub pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { params, key, pem }
    }

    /// Writes a certificate for 127.0.0.1 signed by this CA, its key and the CA's certificate
    /// under `dir`; the node environment that points at them.
    pub fn node_env(&self, dir: &std::path::Path, name: &str) -> Vec<(String, String)> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let file = |suffix: &str, text: &str| {
            let path = dir.join(format!("{name}-{suffix}.pem"));
            std::fs::write(&path, text).unwrap();
            path.to_string_lossy().into_owned()
        };
        vec![
            ("STOREFRONT_CLUSTER__TLS_CERT".to_owned(), file("cert", &cert.pem())),
            ("STOREFRONT_CLUSTER__TLS_KEY".to_owned(), file("key", &key.serialize_pem())),
            ("STOREFRONT_CLUSTER__TLS_CA".to_owned(), file("ca", &self.pem)),
        ]
    }
}
