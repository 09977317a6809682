//! `storefront notify`'s service against the real broker, a real SMTP server (aiosmtpd) and a
//! local SMS gateway: what it sends, once, and what it does when a sender is down.

use std::sync::Arc;
use std::time::Duration;

use storefront_events::event::{
    Money, OrderData, OrderItem, PasswordResetRequested, UserRegistered,
};
use storefront_events::notify::sms::SmsSettings;
use storefront_events::notify::{self, DEAD_LETTERS, Notifier, NotifySettings};
use storefront_events::{CloudEvent, EventData};
use storefront_storage::embedded::EmbeddedStore;
use tokio::sync::oneshot;

use crate::broker::{self, Vhost};
use crate::sms::SmsGateway;
use crate::smtp::{self, Smtp};

pub fn settings(vhost: &Vhost, smtp_url: Option<String>, dir: &std::path::Path) -> NotifySettings {
    NotifySettings {
        amqp_url: vhost.url(),
        mail_from: "Shop <shop@example.com>".into(),
        smtp_url,
        mail_dir: dir.join("mail"),
        sms: None,
        max_attempts: 3,
        retry_base: Duration::from_millis(20),
        // One message at a time: a later message's mail proves the earlier ones were handled.
        prefetch: 1,
        send_timeout: Duration::from_secs(5),
        templates_dir: None,
    }
}

/// A running notifier and the switch that stops it.
pub struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

pub fn run(notifier: Notifier) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        notifier
            .run(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Running { stop, task }
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

fn confirmed(order_id: &str, email: &str, phone: Option<&str>) -> CloudEvent {
    let usd = |a: &str| Money { amount: a.into(), currency: "USD".into() };
    CloudEvent::new(
        1_700_000_000_000,
        EventData::OrderConfirmed(OrderData {
            order_id: order_id.into(),
            user_id: "u1".into(),
            email: email.into(),
            status: "confirmed".into(),
            items: vec![OrderItem {
                sku: "HOT-1".into(),
                name: "Hot thing".into(),
                qty: 1,
                unit_price: usd("19.99"),
                line_total: usd("19.99"),
            }],
            total: usd("19.99"),
            shipping_address: phone.map(|p| serde_json::json!({"name": "Ann", "phone": p})),
            refund: None,
        }),
    )
}

fn registered(email: &str) -> CloudEvent {
    CloudEvent::new(
        1_700_000_000_000,
        EventData::UserRegistered(UserRegistered {
            user_id: "u9".into(),
            email: email.into(),
            name: Some("Marker".into()),
        }),
    )
}

async fn declared(vhost: &Vhost) -> (lapin::Connection, lapin::Channel) {
    let (conn, channel) = vhost.channel().await;
    notify::declare(&channel).await.unwrap();
    (conn, channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_order_is_mailed_and_texted_once_across_redelivery_and_restart() {
    let vhost = Vhost::new();
    let smtp = Smtp::start().await;
    let gateway = SmsGateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_conn, channel) = declared(&vhost).await;
    let mut settings = settings(&vhost, Some(smtp.url()), dir.path());
    settings.sms = Some(SmsSettings {
        base_url: gateway.url(),
        account: "AC123".into(),
        token: "secret-token".into(),
        from: "+15005550000".into(),
    });
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("notify")).await.unwrap());
    let running = run(Notifier::new(settings.clone(), store.clone()).unwrap());
    // The gateway fails once: the text is retried, the mail is not sent again.
    gateway.fail_next(1);
    let order = confirmed("ord-1001", "ann@example.com", Some("+15005550006"));
    broker::publish(&channel, &order).await;
    let mails = smtp.wait_for(1).await;
    let mail = &mails[0];
    assert_eq!(smtp::header(mail, "To").as_deref(), Some("ann@example.com"));
    assert_eq!(smtp::header(mail, "From").as_deref(), Some("Shop <shop@example.com>"));
    assert!(smtp::header(mail, "Subject").unwrap().contains("ord-1001"), "{mail}");
    assert!(mail.contains("text/plain") && mail.contains("text/html"), "{mail}");
    crate::eventually("the text message", || async { gateway.received().len() == 1 }).await;
    let text = &gateway.received()[0];
    assert_eq!(text.path, "/2010-04-01/Accounts/AC123/Messages.json");
    // Basic auth AC123:secret-token.
    assert_eq!(text.authorization.as_deref(), Some("Basic QUMxMjM6c2VjcmV0LXRva2Vu"));
    assert_eq!(text.form["To"], "+15005550006");
    assert_eq!(text.form["From"], "+15005550000");
    assert!(text.form["Body"].contains("ord-1001"));

    // The broker delivers the same event again: nothing is sent twice.
    broker::publish(&channel, &order).await;
    broker::publish(&channel, &registered("marker-1@example.com")).await;
    smtp.wait_for(2).await;
    // A restarted notifier (the same store) gets it once more: still nothing twice.
    running.stop().await;
    let running = run(Notifier::new(settings, store).unwrap());
    broker::publish(&channel, &order).await;
    broker::publish(&channel, &registered("marker-2@example.com")).await;
    let mails = smtp.wait_for(3).await;
    let to_ann = mails.iter().filter(|m| m.contains("ord-1001")).count();
    assert_eq!(to_ann, 1, "one mail for the order");
    assert_eq!(gateway.received().len(), 1, "one text for the order");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_retries_then_dead_letters_and_a_replay_delivers_once_smtp_is_back() {
    let vhost = Vhost::new();
    let mut smtp = Smtp::stopped(smtp::free_port());
    let dir = tempfile::tempdir().unwrap();
    let (_conn, channel) = declared(&vhost).await;
    let settings = settings(&vhost, Some(smtp.url()), dir.path());
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("notify")).await.unwrap());
    let notifier = Notifier::new(settings, store).unwrap();
    let running = run(notifier.clone());
    broker::publish(&channel, &confirmed("ord-2002", "bob@example.com", None)).await;
    crate::eventually("the message in the dead letters", || async {
        broker::depth(&channel, DEAD_LETTERS).await == 1
    })
    .await;
    assert!(smtp.mails().is_empty());
    smtp.resume().await;
    assert_eq!(notifier.replay_dlq().await.unwrap(), 1);
    let mails = smtp.wait_for(1).await;
    assert!(mails[0].contains("ord-2002"));
    assert_eq!(broker::depth(&channel, DEAD_LETTERS).await, 0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_password_reset_is_dropped_and_a_live_one_mails_its_token() {
    let vhost = Vhost::new();
    let smtp = Smtp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_conn, channel) = declared(&vhost).await;
    let settings = settings(&vhost, Some(smtp.url()), dir.path());
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("notify")).await.unwrap());
    let running = run(Notifier::new(settings, store).unwrap());
    let reset = |token: &str, expires_at: &str| {
        CloudEvent::new(
            1_700_000_000_000,
            EventData::PasswordResetRequested(PasswordResetRequested {
                user_id: "u1".into(),
                email: "cid@example.com".into(),
                token: token.into(),
                expires_at: expires_at.into(),
            }),
        )
    };
    broker::publish(&channel, &reset("expired-token-1", "2020-01-01T00:00:00Z")).await;
    broker::publish(&channel, &reset("live-token-2", "2999-01-01T00:00:00Z")).await;
    let mails = smtp.wait_for(1).await;
    assert!(mails[0].contains("live-token-2"));
    broker::publish(&channel, &registered("marker@example.com")).await;
    let mails = smtp.wait_for(2).await;
    assert!(!mails.iter().any(|m| m.contains("expired-token-1")), "the expired one is not sent");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_mail_is_written_as_eml_files_under_the_data_dir() {
    let vhost = Vhost::new();
    let dir = tempfile::tempdir().unwrap();
    let (_conn, channel) = declared(&vhost).await;
    let settings = settings(&vhost, None, dir.path());
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("notify")).await.unwrap());
    let running = run(Notifier::new(settings, store).unwrap());
    broker::publish(&channel, &confirmed("ord-3003", "dee@example.com", None)).await;
    let eml = || {
        std::fs::read_dir(dir.path().join("mail"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .map(|e| std::fs::read_to_string(e.path()).unwrap())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    crate::eventually("an .eml file", || async { eml().len() == 1 }).await;
    assert!(eml()[0].contains("ord-3003"));
    running.stop().await;
}
