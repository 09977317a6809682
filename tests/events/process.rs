//! The binaries under SIGKILL, as an operator runs them: a node killed after its append and
//! before publishing, and `storefront notify` killed while messages are in flight.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use storefront_events::event::{Money, OrderData};
use storefront_events::{CloudEvent, EventData};

use crate::broker::{self, Vhost};
use crate::smtp::{Smtp, free_port};

/// A child process killed (SIGKILL) when dropped.
pub(crate) struct Process(Child);

impl Process {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn storefront() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_storefront"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("STOREFRONT_")) {
        command.env_remove(name);
    }
    command.stdout(Stdio::null()).stderr(Stdio::null());
    command
}

const ADMIN: (&str, &str) = ("ops@example.com", "ops-password-1");

pub(crate) async fn node(data_dir: &std::path::Path, port: u16, amqp_url: &str) -> Process {
    let child = storefront()
        .args(["serve", "--no-demo-data", "--http-addr", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env("STOREFRONT_EVENTS__AMQP_URL", amqp_url)
        .env("STOREFRONT_ADMIN_EMAIL", ADMIN.0)
        .env("STOREFRONT_ADMIN_PASSWORD", ADMIN.1)
        .env("STOREFRONT_RATE_LIMIT__ENABLED", "false")
        .spawn()
        .unwrap();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    crate::eventually("the node to be ready", || async {
        reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    Process(child)
}

/// Posts `body` and answers the JSON of a 2xx (panics otherwise).
async fn post(
    base: &str,
    path: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> serde_json::Value {
    let client = reqwest::Client::new();
    let mut request = client.post(format!("{base}{path}")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token).header("idempotency-key", "process-test-1");
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_after_its_append_publishes_the_event_once_restarted() {
    let vhost = Vhost::new();
    let (_conn, channel) = vhost.bound_queue("audit", "order.confirmed").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // A broker no one can reach: the append happens, the publish cannot.
    let mut first = node(dir.path(), port, "amqp://guest:guest@127.0.0.1:9/%2f").await;
    let login = |email: &'static str, password: &'static str| {
        let base = base.clone();
        async move {
            post(&base, "/v1/auth/login", None, json!({"email": email, "password": password})).await
                ["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let admin = login(ADMIN.0, ADMIN.1).await;
    let product = json!({"sku": "KILL-1", "name": "Killer", "description": "", "category": "tests",
        "price": {"amount": "5.00", "currency": "USD"}, "initial_stock": 3});
    post(&base, "/v1/admin/products", Some(&admin), product).await;
    post(
        &base,
        "/v1/auth/register",
        None,
        json!({"email": "kim@example.com", "password": "kim-password-1"}),
    )
    .await;
    let customer = login("kim@example.com", "kim-password-1").await;
    let order = post(
        &base,
        "/v1/checkout",
        Some(&customer),
        json!({"payment_token": "tok_visa", "items": [{"sku": "KILL-1", "qty": 1}]}),
    )
    .await;
    assert_eq!(order["status"], "confirmed");
    first.kill();
    assert_eq!(broker::depth(&channel, "audit").await, 0, "nothing was published before the kill");
    let _second = node(dir.path(), port, &vhost.url()).await;
    let got = broker::take(&channel, "audit", 2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "published after the restart, once");
    let event = CloudEvent::parse(&got[0].delivery.data).unwrap();
    assert!(matches!(&event.data, EventData::OrderConfirmed(d) if d.order_id == order["order_id"]));
}

fn order_event(order_id: &str) -> CloudEvent {
    let usd = |a: &str| Money { amount: a.into(), currency: "USD".into() };
    CloudEvent::new(
        1_700_000_000_000,
        EventData::OrderConfirmed(OrderData {
            order_id: order_id.into(),
            user_id: "u".into(),
            email: format!("{order_id}@example.com"),
            status: "confirmed".into(),
            items: vec![],
            total: usd("1.00"),
            shipping_address: None,
            refund: None,
        }),
    )
}

pub(crate) fn notify(
    vhost: &Vhost,
    smtp: &Smtp,
    data_dir: &std::path::Path,
    metrics_port: u16,
) -> Process {
    notify_on(vhost, smtp, data_dir, metrics_port, None)
}

/// [`notify`], recording what it sent in `store` (a shared PostgreSQL) when given, instead of
/// under its data dir.
fn notify_on(
    vhost: &Vhost,
    smtp: &Smtp,
    data_dir: &std::path::Path,
    metrics_port: u16,
    store: Option<&str>,
) -> Process {
    let mut command = storefront();
    command
        .args(["notify", "--amqp", &vhost.url(), "--smtp-url", &smtp.url()])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(["--max-attempts", "100"])
        // One message at a time, retried quickly while the SMTP server is away.
        .env("STOREFRONT_NOTIFY__PREFETCH", "1")
        .env("STOREFRONT_NOTIFY__RETRY_BASE_MS", "20");
    if let Some(store) = store {
        command.args(["--store", store]);
    }
    Process(command.spawn().unwrap())
}

/// Waits until the notifier serving metrics on `port` has counted a failed mail send.
async fn a_failed_send(port: u16) {
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    crate::eventually("failed sends while the SMTP server is away", || async {
        let Ok(answer) = reqwest::get(&metrics).await else { return false };
        let text = answer.text().await.unwrap_or_default();
        // The series is exported from the start at zero: wait for a failure counted.
        text.lines()
            .filter_map(|l| l.strip_prefix("storefront_notify_failed_total{channel=\"email\"} "))
            .any(|value| value.trim().parse::<f64>().is_ok_and(|failed| failed > 0.0))
    })
    .await;
}

/// A fresh PostgreSQL database (on `TEST_POSTGRES_URL`) with the store's schema applied by
/// `storefront migrate`: its URL, and how to drop it.
async fn fresh_database() -> (String, impl Future<Output = ()>) {
    let server = std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let (admin, connection) =
        tokio_postgres::connect(&server, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let db = format!("storefront_notify_{}_{}", std::process::id(), free_port());
    admin.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let store = format!("{}/{db}", server.rsplit_once('/').unwrap().0);
    let migrated = storefront().args(["migrate", "--store", &store]).status().unwrap();
    assert!(migrated.success(), "storefront migrate --store {store}");
    let drop = async move {
        admin.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)")).await.unwrap();
    };
    (store, drop)
}

/// How many of `mails` carry `order_id`.
fn count(mails: &[String], order_id: &str) -> usize {
    mails.iter().filter(|m| m.contains(&format!("{order_id} is confirmed"))).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_killed_mid_stream_and_restarted_sends_no_mail_twice() {
    let vhost = Vhost::new();
    let mut smtp = Smtp::start().await;
    let (_conn, channel) = vhost.channel().await;
    storefront_events::notify::declare(&channel).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let first: Vec<String> = (0..20).map(|i| format!("ord-a{i}")).collect();
    let second: Vec<String> = (0..20).map(|i| format!("ord-b{i}")).collect();
    let sent_first: Vec<CloudEvent> = first.iter().map(|id| order_event(id)).collect();
    for event in &sent_first {
        broker::publish(&channel, event).await;
    }
    let mut running = notify(&vhost, &smtp, dir.path(), metrics_port);
    smtp.wait_for(20).await;
    // The SMTP server goes away: the notifier holds its message and keeps retrying.
    smtp.stop();
    for id in &second {
        broker::publish(&channel, &order_event(id)).await;
    }
    // The broker delivers some of the first ones again, as after a lost connection.
    for event in &sent_first[..5] {
        broker::publish(&channel, event).await;
    }
    a_failed_send(metrics_port).await;
    running.kill();
    smtp.resume().await;
    let _restarted = notify(&vhost, &smtp, dir.path(), metrics_port);
    broker::publish(&channel, &order_event("ord-marker")).await;
    crate::eventually("every mail, the marker last", || async {
        count(&smtp.mails(), "ord-marker") == 1
    })
    .await;
    let mails = smtp.mails();
    for id in first.iter().chain(&second) {
        assert_eq!(count(&mails, id), 1, "{id} mailed once");
    }
    assert_eq!(mails.len(), 41);
}

/// The notifier as `k8s/notifier.yaml` runs it: two replicas on one queue, recording what they
/// sent in the shared PostgreSQL. One dies holding a message it could not send; the other gets it
/// again, and the events the broker delivers twice, and sends each mail once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_notifiers_on_a_shared_store_send_each_mail_once_when_one_dies() {
    let vhost = Vhost::new();
    let mut smtp = Smtp::start().await;
    let (_conn, channel) = vhost.channel().await;
    storefront_events::notify::declare(&channel).await.unwrap();
    let (store, drop_database) = fresh_database().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    let first: Vec<String> = (0..20).map(|i| format!("ord-p{i}")).collect();
    let second: Vec<String> = (0..20).map(|i| format!("ord-q{i}")).collect();
    let sent_first: Vec<CloudEvent> = first.iter().map(|id| order_event(id)).collect();
    for event in &sent_first {
        broker::publish(&channel, event).await;
    }
    let mut a = notify_on(&vhost, &smtp, dir_a.path(), port_a, Some(&store));
    let mut b = notify_on(&vhost, &smtp, dir_b.path(), port_b, Some(&store));
    smtp.wait_for(20).await;
    smtp.stop();
    for id in &second {
        broker::publish(&channel, &order_event(id)).await;
    }
    // Delivered again: either replica may get a copy of a mail the other sent.
    for event in &sent_first {
        broker::publish(&channel, event).await;
    }
    a_failed_send(port_a).await;
    a.kill();
    smtp.resume().await;
    broker::publish(&channel, &order_event("ord-last")).await;
    crate::eventually("every mail, the last one too", || async {
        count(&smtp.mails(), "ord-last") == 1
    })
    .await;
    b.kill();
    let mails = smtp.mails();
    for id in first.iter().chain(&second) {
        assert_eq!(count(&mails, id), 1, "{id} mailed once");
    }
    assert_eq!(mails.len(), 41);
    drop_database.await;
}
