//! The whole way out, through a real node: a checkout's `order.confirmed` on a queue bound to
//! the exchange, a mail at the SMTP server, a text message to the shipping phone, and a signed
//! webhook at the merchant's endpoint.

use std::sync::Arc;

use serde_json::json;
use storefront_config::Secret;
use storefront_events::notify::Notifier;
use storefront_events::notify::sms::SmsSettings;
use storefront_events::{CloudEvent, EventData};
use storefront_storage::embedded::EmbeddedStore;

use crate::broker::{self, Vhost};
use crate::helpers;
use crate::notify::{run, settings};
use crate::receiver::Receiver;
use crate::sms::SmsGateway;
use crate::smtp::Smtp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_reaches_the_exchange_the_mailbox_the_phone_and_the_merchant() {
    let vhost = Vhost::new();
    let smtp = Smtp::start().await;
    let gateway = SmsGateway::start().await;
    let receiver = Receiver::start().await;
    // An operator's own queue, bound before anything happens; and the notification and webhook
    // queues, which the notifier and the node declare as they connect (a message published
    // before a queue exists is not routed to it).
    let (_conn, channel) = vhost.bound_queue("audit", "order.confirmed").await;
    storefront_events::notify::declare(&channel).await.unwrap();
    storefront_events::webhooks::worker::declare(&channel).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = helpers::test_config(&dir.path().join("node"));
    config.events.amqp_url = Some(Secret::new(vhost.url()));
    // The merchant's endpoint is on this machine.
    config.events.webhooks_allow_private = true;
    let app = helpers::start(config).await;
    let mut notify = settings(&vhost, Some(smtp.url()), dir.path());
    notify.sms = Some(SmsSettings {
        base_url: gateway.url(),
        account: "AC1".into(),
        token: "token".into(),
        from: "+15005550000".into(),
    });
    notify.prefetch = 16;
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("notify")).await.unwrap());
    let notifier = run(Notifier::new(notify, store).unwrap());

    let admin = app.admin().await;
    let hook = app
        .post(
            "/v1/admin/webhooks",
            Some(&admin),
            &json!({"url": receiver.url("/hook"), "events": ["order.confirmed"]}),
        )
        .await
        .ok(201);
    let secret = hook["secret"].as_str().unwrap().to_owned();
    app.product(&admin, "E2E-1", "12.50", 10).await;
    let token = app.customer("ann@example.com").await;
    let body = json!({
        "payment_token": "tok_visa",
        "items": [{"sku": "E2E-1", "qty": 2}],
        "shipping_address": {
            "name": "Ann", "line1": "1 Main St", "city": "Springfield",
            "postal_code": "12345", "country": "US", "phone": "+15005550006"
        }
    });
    let order = app.checkout(&token, "e2e-1", &body).await.ok(201);
    let order_id = order["order_id"].as_str().unwrap().to_owned();

    // On the exchange, with everything a consumer needs.
    let got = broker::take(&channel, "audit", 1, std::time::Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1);
    let event = CloudEvent::parse(&got[0].delivery.data).unwrap();
    let EventData::OrderConfirmed(data) = &event.data else { panic!("{event:?}") };
    assert_eq!(data.order_id, order_id);
    assert_eq!(data.email, "ann@example.com");
    assert_eq!(data.items[0].name, "Product E2E-1");
    assert_eq!(data.items[0].qty, 2);
    assert_eq!(data.total.amount, "25.00");
    assert_eq!(data.phone(), Some("+15005550006"));

    // In the mailbox.
    crate::eventually("the confirmation mail", || async {
        smtp.mails().iter().any(|m| m.contains(&order_id) && m.contains("ann@example.com"))
    })
    .await;
    // On the phone.
    crate::eventually("the text message", || async { gateway.received().len() == 1 }).await;
    let text = &gateway.received()[0];
    assert_eq!(text.form["To"], "+15005550006");
    assert!(text.form["Body"].contains(&order_id));
    // At the merchant's endpoint, signed.
    crate::eventually("the webhook", || async { receiver.hooks().len() == 1 }).await;
    let delivered = &receiver.hooks()[0];
    assert!(delivered.verifies(&secret), "the signature verifies");
    assert_eq!(delivered.header("storefront-event-id"), event.id);
    assert_eq!(CloudEvent::parse(&delivered.body).unwrap(), event);
    let path = format!("/v1/admin/webhooks/{}/deliveries", hook["webhook_id"].as_str().unwrap());
    crate::eventually("the delivery log", || async {
        let log = app.get(&path, Some(&admin)).await.ok(200);
        log["items"][0]["status"] == "delivered"
    })
    .await;
    let log = app.get(&path, Some(&admin)).await.ok(200);
    assert_eq!(log["items"][0]["event_id"], event.id.as_str());
    assert_eq!(log["items"][0]["attempts"], 1);
    notifier.stop().await;
}
