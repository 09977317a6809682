//! Webhook delivery against the real broker and a local endpoint: retries, the signature, the
//! delivery log, and the SSRF rules checked again when the delivery is made.

use std::sync::Arc;
use std::time::Duration;

use storefront_events::event::StockSoldOut;
use storefront_events::webhooks::worker::{WebhookWorker, WorkerSettings};
use storefront_events::webhooks::{DeliveryStatus, NewWebhook, Webhooks};
use storefront_events::{CloudEvent, EventData};
use storefront_storage::embedded::EmbeddedStore;
use warp::Filter;

use crate::broker::{self, Vhost};
use crate::receiver::Receiver;

fn sold_out(sku: &str) -> CloudEvent {
    CloudEvent::new(
        1_700_000_000_000,
        EventData::StockSoldOut(StockSoldOut { sku: sku.into(), on_hand: 3, reserved: 3 }),
    )
}

fn worker(vhost: &Vhost, webhooks: &Webhooks) -> WebhookWorker {
    let settings = WorkerSettings {
        amqp_url: vhost.url(),
        max_attempts: 4,
        retry_base: Duration::from_millis(50),
    };
    WebhookWorker::start(webhooks.clone(), settings).unwrap()
}

/// Declares the webhook queues, so that events published before the worker connects are kept.
async fn declared(vhost: &Vhost) -> (lapin::Connection, lapin::Channel) {
    let (conn, channel) = vhost.channel().await;
    storefront_events::webhooks::worker::declare(&channel).await.unwrap();
    (conn, channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_twice_gets_the_event_on_the_third_try_signed() {
    let vhost = Vhost::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let webhooks = Webhooks::new(store, true);
    let receiver = Receiver::start().await;
    let new = |events: &[&str]| NewWebhook {
        url: receiver.url("/hooks/storefront"),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        description: Some("tests".into()),
    };
    let hook = webhooks.create(new(&["stock.sold_out"])).await.unwrap().unwrap();
    let other = webhooks.create(new(&["order.confirmed"])).await.unwrap().unwrap();
    let (_conn, channel) = declared(&vhost).await;
    receiver.fail_next(2);
    let running = worker(&vhost, &webhooks);
    let event = sold_out("HOT-1");
    broker::publish(&channel, &event).await;
    crate::eventually("three tries", || async { receiver.hooks().len() == 3 }).await;
    crate::eventually("the delivery logged as delivered", || async {
        webhooks
            .delivery(&hook.webhook_id, &event.id)
            .await
            .unwrap()
            .is_some_and(|d| d.status == DeliveryStatus::Delivered)
    })
    .await;
    let logged = webhooks.delivery(&hook.webhook_id, &event.id).await.unwrap().unwrap();
    assert_eq!(logged.attempts, 3, "every try counts, the successful one included");
    assert_eq!(logged.last_status_code, Some(204));
    assert_eq!(logged.last_error, None);
    assert_eq!(logged.kind, "stock.sold_out");
    for hook_request in receiver.hooks() {
        assert_eq!(hook_request.path, "/hooks/storefront");
        assert_eq!(hook_request.header("content-type"), "application/json");
        assert_eq!(hook_request.header("storefront-event-id"), event.id);
        assert_eq!(hook_request.header("storefront-event-type"), "stock.sold_out");
        assert!(hook_request.verifies(&hook.secret), "the signature verifies with the secret");
        assert!(!hook_request.verifies(&other.secret), "and with no other");
        assert_eq!(CloudEvent::parse(&hook_request.body).unwrap(), event);
    }
    let (page, next) = webhooks.deliveries(&hook.webhook_id, 10, None).await.unwrap();
    assert_eq!((page.len(), next), (1, None));
    assert!(
        webhooks.delivery(&other.webhook_id, &event.id).await.unwrap().is_none(),
        "a webhook not subscribed to the type gets nothing"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_at_delivery_is_refused_and_failed_with_the_reason() {
    let vhost = Vhost::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let receiver = Receiver::start().await;
    // Created where private addresses were allowed (as a name that resolved elsewhere when it
    // was created would be) ...
    let lax = Webhooks::new(store.clone(), true);
    let port = receiver.addr.unwrap().port();
    let url = format!("http://localhost:{port}/hook");
    let hook = lax
        .create(NewWebhook { url, events: vec!["*".into()], description: None })
        .await
        .unwrap()
        .unwrap();
    // ... and delivered by nodes that do not allow them: the rules hold on what the name
    // resolves to now.
    let strict = Webhooks::new(store, false);
    let (_conn, channel) = declared(&vhost).await;
    let running = worker(&vhost, &strict);
    let event = sold_out("HOT-2");
    broker::publish(&channel, &event).await;
    crate::eventually("the delivery logged as failed", || async {
        strict
            .delivery(&hook.webhook_id, &event.id)
            .await
            .unwrap()
            .is_some_and(|d| d.status == DeliveryStatus::Failed)
    })
    .await;
    let logged = strict.delivery(&hook.webhook_id, &event.id).await.unwrap().unwrap();
    assert_eq!(logged.attempts, 1, "a refusal is not retried");
    let reason = logged.last_error.unwrap();
    assert!(reason.contains("loopback"), "{reason}");
    assert!(receiver.hooks().is_empty(), "nothing reached the endpoint");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_an_endpoint_that_never_succeeds_ends_failed() {
    let vhost = Vhost::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let webhooks = Webhooks::new(store, true);
    // An endpoint that answers every request with a redirect to another one.
    let target = Receiver::start().await;
    let location = target.url("/elsewhere");
    let redirect = warp::any().map(move || {
        warp::http::Response::builder()
            .status(307)
            .header("location", location.clone())
            .body(String::new())
            .unwrap()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(redirect).incoming(listener).run());
    let hook = webhooks
        .create(NewWebhook {
            url: format!("http://{addr}/hook"),
            events: vec!["*".into()],
            description: None,
        })
        .await
        .unwrap()
        .unwrap();
    let (_conn, channel) = declared(&vhost).await;
    let running = worker(&vhost, &webhooks);
    let event = sold_out("HOT-3");
    broker::publish(&channel, &event).await;
    crate::eventually("the delivery logged as failed", || async {
        webhooks
            .delivery(&hook.webhook_id, &event.id)
            .await
            .unwrap()
            .is_some_and(|d| d.status == DeliveryStatus::Failed)
    })
    .await;
    let logged = webhooks.delivery(&hook.webhook_id, &event.id).await.unwrap().unwrap();
    assert_eq!(logged.attempts, 4, "max_attempts tries");
    assert_eq!(logged.last_status_code, Some(307));
    assert!(target.hooks().is_empty(), "the redirect was not followed");
    running.stop().await;
}
