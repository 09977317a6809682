//! The machine's RabbitMQ stopped (`rabbitmqctl stop_app`) while a node takes checkouts, then
//! started again: every checkout answers as without a broker, and afterwards every event is
//! published and every mail sent, each exactly once.
//!
//! A test binary of its own: stopping the broker would fail any other broker test running beside
//! it, and Cargo runs test binaries one after another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "events/broker.rs"]
#[allow(dead_code)]
mod broker;
#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "events/smtp.rs"]
#[allow(dead_code)]
mod smtp;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use storefront_config::Secret;
use storefront_events::notify::{Notifier, NotifySettings};
use storefront_events::{CloudEvent, EventData};
use storefront_storage::embedded::EmbeddedStore;

use broker::Vhost;
use smtp::Smtp;

/// Waits (up to 60 s) until `check` holds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rabbitmqctl(command: &str) {
    let out = std::process::Command::new("rabbitmqctl").arg(command).output().unwrap();
    assert!(
        out.status.success(),
        "rabbitmqctl {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The broker is started again however the test ends.
struct StartAgain;

impl Drop for StartAgain {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl").arg("start_app").output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_stopped_during_checkouts_delays_events_and_loses_none() {
    let vhost = Vhost::new();
    let smtp = Smtp::start().await;
    let (conn, channel) = vhost.bound_queue("audit", "order.confirmed").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = helpers::test_config(&dir.path().join("node"));
    config.events.amqp_url = Some(Secret::new(vhost.url()));
    let app = helpers::start(config).await;
    let settings = NotifySettings {
        amqp_url: vhost.url(),
        mail_from: "shop@example.com".into(),
        smtp_url: Some(smtp.url()),
        mail_dir: dir.path().join("mail"),
        sms: None,
        max_attempts: 5,
        retry_base: Duration::from_millis(50),
        prefetch: 8,
        send_timeout: Duration::from_secs(5),
        templates_dir: None,
    };
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("notify")).await.unwrap());
    let notifier = Notifier::new(settings, store).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let notifying = tokio::spawn(async move {
        notifier
            .run(async move {
                let _ = stopped.await;
            })
            .await;
    });
    let admin = app.admin().await;
    app.product(&admin, "BRK-1", "3.00", 100).await;
    let token = app.customer("bea@example.com").await;
    let buy = |i: u32| {
        let (app, token) = (&app, &token);
        async move {
            let body = json!({"payment_token": "tok_visa", "items": [{"sku": "BRK-1", "qty": 1}]});
            let order = app.checkout(token, &format!("brk-{i}"), &body).await.ok(201);
            assert_eq!(order["status"], "confirmed");
            order["order_id"].as_str().unwrap().to_owned()
        }
    };
    let mut orders = Vec::new();
    for i in 0..5 {
        orders.push(buy(i).await);
    }
    // Everything so far is out before the broker stops (no batch is in flight at the stop).
    let mut seen = broker::take(&channel, "audit", 5, Duration::from_secs(30)).await;
    assert_eq!(seen.len(), 5);
    drop((channel, conn));

    let restart = StartAgain;
    rabbitmqctl("stop_app");
    for i in 5..15 {
        // Answered as without a broker.
        orders.push(buy(i).await);
    }
    rabbitmqctl("start_app");
    drop(restart);

    let (_conn, channel) = vhost.channel().await;
    seen.extend(broker::take(&channel, "audit", 10, Duration::from_secs(60)).await);
    let published: Vec<String> = seen
        .iter()
        .map(|m| match CloudEvent::parse(&m.delivery.data).unwrap().data {
            EventData::OrderConfirmed(d) => d.order_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(published.len(), 15, "every event published");
    assert_eq!(published.iter().collect::<HashSet<_>>().len(), 15, "each once");
    assert_eq!(published.iter().collect::<HashSet<_>>(), orders.iter().collect::<HashSet<_>>());
    assert!(broker::take(&channel, "audit", 1, Duration::from_millis(500)).await.is_empty());
    eventually("a mail for every order", || async {
        let mails = smtp.mails();
        orders.iter().all(|id| mails.iter().any(|m| m.contains(id.as_str())))
    })
    .await;
    let mails = smtp.mails();
    for id in &orders {
        let subject = format!("Your order {id} is confirmed");
        assert_eq!(mails.iter().filter(|m| m.contains(&subject)).count(), 1, "{id} mailed once");
    }
    let _ = stop.send(());
    notifying.await.unwrap();
}
