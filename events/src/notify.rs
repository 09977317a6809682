//! `storefront notify`: the notification service of EVENTS.md. It consumes the quorum queue
//! `storefront.notifications` (bound to the events customers hear of), sends one mail per event
//! (and one text message for a confirmed order with a phone), and acknowledges a message only
//! once every send it owes has succeeded.
//!
//! - Each send is recorded in its own store (`notifications_sent`, by event id and channel)
//!   right after it succeeded, and skipped when already recorded: a redelivered message (after a
//!   restart, a lost connection, a replay) sends nothing twice.
//! - A failed send is retried with exponential back-off, up to `max_attempts` tries; then the
//!   message goes to `storefront.notifications.dlq` (published with a confirm before the original
//!   is acknowledged), and [`Notifier::replay_dlq`] moves such messages back.
//! - Password reset events past their expiry are dropped unsent.
//! - It declares everything it uses, may start before any node, and after a lost connection
//!   connects again with back-off (lapin's auto-recovery is not used, see [`crate::amqp`]).
//!
//! It does not own the texts (operators replace [`templates`]) or where events come from.

pub mod mail;
pub mod sms;
pub mod templates;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::BackoffBuilder;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lettre::message::Mailbox;
use storefront_storage::{Store, Table};

use crate::amqp::{self, QueueConsumer};
use crate::keyed::KeyedLocks;
use crate::metrics::{
    NOTIFY_DEAD_LETTERED_TOTAL, NOTIFY_DROPPED_TOTAL, NOTIFY_FAILED_TOTAL, NOTIFY_RETRIED_TOTAL,
    NOTIFY_SENT_TOTAL,
};
use crate::{CloudEvent, EventData, EventType, EventsError};
use mail::Mailer;
use sms::{SmsClient, SmsSettings};
use templates::Templates;

/// The notification queue (quorum, durable).
pub const QUEUE: &str = "storefront.notifications";
/// Where messages go after their last failed try (quorum, durable).
pub const DEAD_LETTERS: &str = "storefront.notifications.dlq";
/// The event types the notification queue is bound to.
pub const SUBSCRIBED: [EventType; 5] = [
    EventType::UserRegistered,
    EventType::OrderConfirmed,
    EventType::OrderCancelled,
    EventType::PaymentFailed,
    EventType::PasswordResetRequested,
];
/// How long a stopping notifier lets the sends in progress finish.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// How the notifier runs.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// The broker.
    pub amqp_url: String,
    /// The mails' sender, `Name <address>` or an address.
    pub mail_from: String,
    /// The SMTP server (lettre's URL form); `None` writes `.eml` files to `mail_dir`.
    pub smtp_url: Option<String>,
    /// Where mail goes without an SMTP server.
    pub mail_dir: PathBuf,
    /// The SMS gateway, if text messages are sent.
    pub sms: Option<SmsSettings>,
    /// Tries of one send before the message is dead-lettered.
    pub max_attempts: u32,
    /// The wait after the first failed try; doubled after each further one (at most a minute).
    pub retry_base: Duration,
    /// Messages held unacknowledged at once (and so sent in parallel).
    pub prefetch: u16,
    /// The longest one send may take.
    pub send_timeout: Duration,
    /// An operator's folder of templates replacing the built-in ones.
    pub templates_dir: Option<PathBuf>,
}

/// What a notification is sent through (the `channel` label of the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Medium {
    Email,
    Sms,
}

impl Medium {
    fn as_str(self) -> &'static str {
        match self {
            Medium::Email => "email",
            Medium::Sms => "sms",
        }
    }
}

/// Why a message is dead-lettered.
#[derive(Debug)]
struct Failure {
    /// The channel whose sends all failed (`none` for a message that is no event).
    channel: &'static str,
    reason: String,
}

/// The notification service.
#[derive(Debug, Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: NotifySettings,
    store: Arc<dyn Store>,
    templates: Templates,
    mailer: Mailer,
    from: Mailbox,
    sms: Option<SmsClient>,
    /// One handler per event at a time: a copy redelivered while the first is still being
    /// handled (its connection lost, say) waits for it, then finds its sends recorded.
    busy: KeyedLocks,
}

impl Notifier {
    /// A notifier recording its sends in `store`; checks the templates and senders now.
    pub fn new(settings: NotifySettings, store: Arc<dyn Store>) -> Result<Notifier, EventsError> {
        let templates = Templates::load(settings.templates_dir.as_deref())?;
        let from: Mailbox = settings
            .mail_from
            .parse()
            .map_err(|e| EventsError::Config(format!("notify.mail_from: {e}")))?;
        let mailer = Mailer::new(
            settings.smtp_url.as_deref(),
            settings.mail_dir.clone(),
            settings.send_timeout,
        )?;
        let sms = match &settings.sms {
            Some(sms) => Some(SmsClient::new(sms.clone(), settings.send_timeout)?),
            None => None,
        };
        let busy = KeyedLocks::default();
        Ok(Notifier {
            inner: Arc::new(Inner { settings, store, templates, mailer, from, sms, busy }),
        })
    }

    /// Consumes and sends until `shutdown` completes, reconnecting whenever the broker goes
    /// away; then lets the sends in progress finish (at most [`STOP_GRACE`]).
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let consumer = QueueConsumer {
            url: self.inner.settings.amqp_url.clone(),
            name: "storefront-notify",
            queue: QUEUE,
            prefetch: self.inner.settings.prefetch,
            grace: STOP_GRACE,
        };
        let handle = |publisher: Channel, delivery: Delivery| {
            let inner = self.inner.clone();
            async move { inner.handle(&publisher, delivery).await }
        };
        consumer.run(|channel| async move { declare(&channel).await }, handle, shutdown).await;
    }

    /// Moves every message of the dead-letter queue back to the notification queue (each
    /// published with a confirm before it leaves the dead letters). Returns how many it moved.
    pub async fn replay_dlq(&self) -> Result<u64, EventsError> {
        let connection =
            amqp::connect(&self.inner.settings.amqp_url, "storefront-notify-replay").await?;
        let channel = connection.create_channel().await.map_err(EventsError::broker)?;
        declare(&channel).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(EventsError::broker)?;
        // At most what is there now: a message that fails again meanwhile (a notifier is
        // running) goes back to the dead letters, and is not moved twice by this replay.
        let waiting = channel
            .queue_declare(
                DEAD_LETTERS.into(),
                QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
                FieldTable::default(),
            )
            .await
            .map_err(EventsError::broker)?
            .message_count();
        let mut moved = 0;
        while moved < u64::from(waiting)
            && let Some(message) = channel
                .basic_get(DEAD_LETTERS.into(), BasicGetOptions::default())
                .await
                .map_err(EventsError::broker)?
        {
            let delivery = &message.delivery;
            let properties = delivery.properties.clone().with_headers(FieldTable::default());
            if let Err(e) =
                amqp::publish_confirmed(&channel, "", QUEUE, &delivery.data, properties).await
            {
                let _ =
                    delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                return Err(e);
            }
            delivery.ack(BasicAckOptions::default()).await.map_err(EventsError::broker)?;
            moved += 1;
        }
        let _ = connection.close(0, "replayed".into()).await;
        Ok(moved)
    }
}

/// Declares the exchange, the notification queue with its bindings, and the dead letters
/// (idempotent; the notifier does it on every connection).
pub async fn declare(channel: &Channel) -> Result<(), EventsError> {
    amqp::declare_exchange(channel).await?;
    amqp::declare_quorum_queue(channel, QUEUE, SUBSCRIBED).await?;
    amqp::declare_quorum_queue(channel, DEAD_LETTERS, []).await
}

impl Inner {
    /// Sends what `delivery` owes, then acknowledges it (or dead-letters it). An error means
    /// the broker failed this connection (the message comes again).
    async fn handle(&self, publisher: &Channel, delivery: Delivery) -> Result<(), EventsError> {
        let outcome = self.process(&delivery.data).await;
        let acked = match outcome {
            Ok(()) => delivery.ack(BasicAckOptions::default()).await,
            Err(failure) => match dead_letter(publisher, &delivery, &failure).await {
                Ok(()) => {
                    metrics::counter!(NOTIFY_DEAD_LETTERED_TOTAL, "channel" => failure.channel)
                        .increment(1);
                    tracing::warn!(channel = failure.channel, reason = %failure.reason, "message dead-lettered");
                    delivery.ack(BasicAckOptions::default()).await
                }
                Err(e) => {
                    // It stays in the queue and comes again (what was sent is recorded), once
                    // this connection is replaced.
                    let _ = delivery
                        .nack(BasicNackOptions { requeue: true, ..Default::default() })
                        .await;
                    return Err(e);
                }
            },
        };
        acked.map(drop).map_err(EventsError::broker)
    }

    /// Every send `body` owes that is not recorded as done.
    async fn process(&self, body: &[u8]) -> Result<(), Failure> {
        let event = CloudEvent::parse(body)
            .map_err(|e| Failure { channel: "none", reason: e.to_string() })?;
        let _busy = self.busy.lock(event.id.clone()).await;
        if let EventData::PasswordResetRequested(reset) = &event.data
            && reset.expired(SystemTime::now())
        {
            metrics::counter!(NOTIFY_DROPPED_TOTAL, "reason" => "expired").increment(1);
            tracing::info!(event_id = %event.id, "password reset past its expiry: not sent");
            return Ok(());
        }
        let template = |e: EventsError| Failure { channel: "none", reason: e.to_string() };
        if let (Some(text), Some(to)) =
            (self.templates.mail(&event).map_err(template)?, event.data.email())
        {
            self.deliver(Medium::Email, &event.id, || {
                self.mailer.send(&self.from, to, &event.id, text.clone())
            })
            .await?;
        }
        if let (Some(sms), EventData::OrderConfirmed(order)) = (&self.sms, &event.data)
            && let Some(phone) = order.phone()
            && let Some(text) = self.templates.sms(&event).map_err(template)?
        {
            self.deliver(Medium::Sms, &event.id, || sms.send(phone, &text)).await?;
        }
        Ok(())
    }

    /// Sends through `channel` unless that send is recorded, retrying with back-off; records it.
    async fn deliver<F, Fut>(
        &self,
        channel: Medium,
        event_id: &str,
        mut send: F,
    ) -> Result<(), Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), EventsError>>,
    {
        let key = format!("{event_id}/{}", channel.as_str());
        let label = channel.as_str();
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_base)
            .with_max_delay(Duration::from_secs(60))
            .without_max_times()
            .build();
        let mut attempt = 1;
        loop {
            let outcome = match self.store.get(Table::NotificationsSent, key.as_bytes()).await {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => send().await,
                Err(e) => Err(EventsError::Store(e)),
            };
            match outcome {
                Ok(()) => {
                    metrics::counter!(NOTIFY_SENT_TOTAL, "channel" => label).increment(1);
                    self.record_sent(&key).await;
                    return Ok(());
                }
                Err(e) if attempt >= self.settings.max_attempts => {
                    metrics::counter!(NOTIFY_FAILED_TOTAL, "channel" => label).increment(1);
                    return Err(Failure { channel: label, reason: e.to_string() });
                }
                Err(e) => {
                    metrics::counter!(NOTIFY_FAILED_TOTAL, "channel" => label).increment(1);
                    metrics::counter!(NOTIFY_RETRIED_TOTAL, "channel" => label).increment(1);
                    let wait = delays.next().unwrap_or(Duration::from_secs(60));
                    tracing::info!(channel = label, attempt, error = %e, wait_ms = wait.as_millis() as u64, "send failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Records a send. The send happened: a store that fails now is retried a few times, and
    /// if it keeps failing the message is still acknowledged (logged: a redelivery would send it
    /// again).
    async fn record_sent(&self, key: &str) {
        let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        for attempt in 1..=5u32 {
            match self.store.put(Table::NotificationsSent, key.as_bytes(), at.as_bytes()).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(key, attempt, error = %e, "cannot record a send");
                    tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                }
            }
        }
    }
}

/// Publishes `delivery` to the dead letters (with why), confirmed.
async fn dead_letter(
    publisher: &Channel,
    delivery: &Delivery,
    failure: &Failure,
) -> Result<(), EventsError> {
    let mut headers = FieldTable::default();
    headers.insert("x-storefront-channel".into(), AMQPValue::LongString(failure.channel.into()));
    headers.insert(
        "x-storefront-error".into(),
        AMQPValue::LongString(failure.reason.chars().take(1000).collect::<String>().into()),
    );
    let properties = delivery.properties.clone().with_headers(headers);
    amqp::publish_confirmed(publisher, "", DEAD_LETTERS, &delivery.data, properties).await
}
