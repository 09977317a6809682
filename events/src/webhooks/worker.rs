//! Delivering webhooks: every node with a broker consumes `storefront.webhooks` (quorum; bound to
//! every event type offered to webhooks), competing with the other nodes for its messages. A
//! node declares and consumes it once the shop has a webhook (it looks every second until then):
//! events that happen before the first subscription are for no one.
//!
//! For each event, every webhook that wants it gets a `POST` of the CloudEvent, signed, within
//! [`TIMEOUT`], no redirect followed, through a resolver that only yields addresses the SSRF
//! rules allow (checked at delivery time). A 2xx is `delivered`; anything else is retried: the
//! retry is a message to that webhook alone, parked in the retry queue of its delay
//! (`storefront.webhooks.retry.<n>`, about 1 s doubling to 1 h) whose expiry dead-letters it back
//! into the work queue, so a waiting retry holds no node and survives any node's restart. After
//! `max_attempts` tries, or at once when the rules refuse the address, it is `failed`. The
//! message is acknowledged after the log and any retry are written; a node that dies before that
//! leaves it to be delivered again (at least once: endpoints deduplicate on
//! `Storefront-Event-Id`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use tokio::sync::watch;

use super::guard::{GuardedResolver, Unfit, resolve_checked};
use super::{Delivery, DeliveryStatus, Webhook, Webhooks, signature};
use crate::amqp::{self, QueueConsumer};
use crate::keyed::KeyedLocks;
use crate::metrics::WEBHOOK_ATTEMPTS_TOTAL;
use crate::{CloudEvent, EventType, EventsError};

/// The work queue.
pub const QUEUE: &str = "storefront.webhooks";
/// The longest a merchant's endpoint may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two tries.
const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Retry queues, one per delay: `base × 2^n`, the last capped at [`MAX_DELAY`].
const RETRY_LEVELS: u32 = 13;
/// The header naming the one webhook a retry is for.
const WEBHOOK_HEADER: &str = "x-storefront-webhook";
/// Messages a node works on at once.
const PREFETCH: u16 = 64;

/// How a node delivers.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The broker.
    pub amqp_url: String,
    /// Tries of one delivery before it is `failed`.
    pub max_attempts: u32,
    /// The wait after the first failed try (about 1 s; doubled after each further one).
    pub retry_base: Duration,
}

/// A running delivery worker; stopping it ends its task.
#[derive(Debug)]
pub struct WebhookWorker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookWorker {
    /// Starts delivering `webhooks` on a task of its own.
    pub fn start(
        webhooks: Webhooks,
        settings: WorkerSettings,
    ) -> Result<WebhookWorker, EventsError> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the merchant's host itself, past the rules.
            .no_proxy()
            .dns_resolver(std::sync::Arc::new(GuardedResolver {
                allow_private: webhooks.allow_private(),
            }))
            .user_agent("Storefront-Webhooks/1")
            .build()
            .map_err(|e| EventsError::Config(format!("webhook client: {e}")))?;
        let (stop, stopped) = watch::channel(false);
        let deliverer = Deliverer { webhooks, settings, http, busy: KeyedLocks::default() };
        Ok(WebhookWorker { stop, task: tokio::spawn(deliverer.run(stopped)) })
    }

    /// Stops taking messages and lets the deliveries in progress finish.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// The delay of retry level `n`.
fn level_delay(base: Duration, level: u32) -> Duration {
    base.saturating_mul(1u32 << level.min(20)).min(MAX_DELAY)
}

fn retry_queue(level: u32) -> String {
    format!("{QUEUE}.retry.{level}")
}

/// Declares the exchange, the work queue with its bindings, and the retry queues.
pub async fn declare(channel: &Channel) -> Result<(), EventsError> {
    amqp::declare_exchange(channel).await?;
    let offered = EventType::ALL.into_iter().filter(|k| k.offered_to_webhooks());
    amqp::declare_quorum_queue(channel, QUEUE, offered).await?;
    // A parked retry expires (its per-message TTL) into the work queue. Each queue holds one
    // delay only, so the message at its head always expires first.
    let mut parking = FieldTable::default();
    parking.insert(ShortString::from("x-dead-letter-exchange"), AMQPValue::LongString("".into()));
    parking.insert(
        ShortString::from("x-dead-letter-routing-key"),
        AMQPValue::LongString(QUEUE.into()),
    );
    for level in 0..RETRY_LEVELS {
        channel
            .queue_declare(
                retry_queue(level).as_str().into(),
                QueueDeclareOptions::durable(),
                parking.clone(),
            )
            .await
            .map_err(EventsError::broker)?;
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Deliverer {
    webhooks: Webhooks,
    settings: WorkerSettings,
    http: reqwest::Client,
    /// One try at a time per (webhook, event) in this process: a copy redelivered while the
    /// first is still being tried waits for it, then finds its record.
    busy: KeyedLocks,
}

impl Deliverer {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        // No subscription, no queue: until the shop has a webhook, events are not routed to
        // one (they are for no one), and the broker and this node do no work for them.
        loop {
            match self.webhooks.list().await {
                Ok(list) if !list.is_empty() => break,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the webhooks"),
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopped.wait_for(|stop| *stop) => return,
            }
        }
        let consumer = QueueConsumer {
            url: self.settings.amqp_url.clone(),
            name: "storefront-webhooks",
            queue: QUEUE,
            prefetch: PREFETCH,
            grace: TIMEOUT + Duration::from_secs(5),
        };
        let handle = |publisher: Channel, delivery: AmqpDelivery| {
            let this = self.clone();
            async move { this.handle(&publisher, delivery).await }
        };
        let stop = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        consumer.run(|channel| async move { declare(&channel).await }, handle, stop).await;
    }

    /// Delivers one message to its webhooks, then acknowledges it. A failure (the broker or
    /// the store) requeues it and drops the connection: it comes again after a back-off.
    async fn handle(&self, publisher: &Channel, message: AmqpDelivery) -> Result<(), EventsError> {
        match self.deliver_message(publisher, &message).await {
            Ok(()) => {
                message.ack(BasicAckOptions::default()).await.map(drop).map_err(EventsError::broker)
            }
            Err(e) => {
                let _ =
                    message.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                Err(e)
            }
        }
    }

    async fn deliver_message(
        &self,
        publisher: &Channel,
        message: &AmqpDelivery,
    ) -> Result<(), EventsError> {
        let event = match CloudEvent::parse(&message.data) {
            Ok(event) => event,
            Err(e) => {
                // Not an event of the contract: nothing to deliver, nothing to retry.
                tracing::warn!(error = %e, "webhook worker dropped a message that is no event");
                return Ok(());
            }
        };
        // A retry is for its one webhook; the event itself (first delivered, or again after a
        // crash) starts a delivery only where none has started: later tries come from retries,
        // so no delivery ever runs two retry chains.
        let (targets, retry) = match retry_target(&message.properties) {
            Some(webhook_id) => (self.webhooks.get(&webhook_id).await?.into_iter().collect(), true),
            None => (self.webhooks.wanting(event.event_type()).await?, false),
        };
        let attempts = targets
            .iter()
            .map(|webhook| self.attempt(publisher, webhook, &event, &message.data, retry));
        for outcome in futures::future::join_all(attempts).await {
            outcome?;
        }
        Ok(())
    }

    /// One try of `event` to `webhook` (unless it is already settled), logged; a failed try is
    /// parked for its retry.
    async fn attempt(
        &self,
        publisher: &Channel,
        webhook: &Webhook,
        event: &CloudEvent,
        body: &[u8],
        retry: bool,
    ) -> Result<(), EventsError> {
        let _busy = self.busy.lock(format!("{}/{}", webhook.webhook_id, event.id)).await;
        let previous = self.webhooks.delivery(&webhook.webhook_id, &event.id).await?;
        let settled = previous.as_ref().is_some_and(|d| d.status != DeliveryStatus::Pending);
        if settled || (previous.is_some() && !retry) {
            return Ok(());
        }
        let attempts = previous.map_or(0, |d| d.attempts) + 1;
        let (status_code, error, refused) = self.post(webhook, event, body).await;
        let delivered = error.is_none();
        let give_up = refused || attempts >= self.settings.max_attempts;
        let (status, next) = if delivered {
            (DeliveryStatus::Delivered, None)
        } else if give_up {
            (DeliveryStatus::Failed, None)
        } else {
            let delay = level_delay(self.settings.retry_base, attempts - 1);
            (DeliveryStatus::Pending, Some(delay))
        };
        let outcome = match status {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed if refused => "refused",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Pending => "retried",
        };
        metrics::counter!(WEBHOOK_ATTEMPTS_TOTAL, "outcome" => outcome).increment(1);
        let record = Delivery {
            event_id: event.id.clone(),
            kind: event.event_type().as_str().into(),
            status,
            attempts,
            last_status_code: status_code,
            last_error: error,
            next_attempt_at: next.map(|delay| {
                humantime::format_rfc3339_seconds(SystemTime::now() + delay).to_string()
            }),
        };
        // The retry is parked before the log says one is due: a log that says pending always
        // has its retry waiting in the broker.
        if next.is_some() {
            park(
                publisher,
                &webhook.webhook_id,
                body,
                (attempts - 1).min(RETRY_LEVELS - 1),
                self.settings.retry_base,
            )
            .await?;
        }
        self.webhooks.record(&webhook.webhook_id, &record).await?;
        Ok(())
    }

    /// POSTs the event: answers the status code (if one came), the error (if it failed) and
    /// whether the SSRF rules refused the address.
    async fn post(
        &self,
        webhook: &Webhook,
        event: &CloudEvent,
        body: &[u8],
    ) -> (Option<u16>, Option<String>, bool) {
        // The rules, on what the name resolves to now (the client's resolver enforces them on
        // the connection itself).
        let url = match reqwest::Url::parse(&webhook.url) {
            Ok(url) => url,
            Err(e) => return (None, Some(format!("invalid url: {e}")), true),
        };
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        match resolve_checked(host, port, self.webhooks.allow_private()).await {
            Ok(_) => {}
            Err(Unfit::Refused(why)) => return (None, Some(format!("refused: {why}")), true),
            // A name that does not resolve now is tried again, like any failed try.
            Err(unresolved @ Unfit::Unresolved(_)) => {
                return (None, Some(unresolved.to_string()), false);
            }
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let sent = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("Storefront-Event-Id", event.id.as_str())
            .header("Storefront-Event-Type", event.event_type().as_str())
            .header("Storefront-Signature", signature(&webhook.secret, now, body))
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => {
                (Some(answer.status().as_u16()), None, false)
            }
            Ok(answer) => {
                let status = answer.status();
                (Some(status.as_u16()), Some(format!("answered {status}")), false)
            }
            Err(e) if e.is_timeout() => {
                (None, Some(format!("no answer within {} s", TIMEOUT.as_secs())), false)
            }
            Err(e) => (None, Some(error_chain(&e)), false),
        }
    }
}

/// An error with its causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The webhook a retry message is for.
fn retry_target(properties: &BasicProperties) -> Option<String> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(WEBHOOK_HEADER)? {
        AMQPValue::LongString(id) => Some(String::from_utf8_lossy(id.as_bytes()).into_owned()),
        _ => None,
    }
}

/// Parks a retry of `body` for `webhook_id` in the retry queue of `level`, confirmed.
async fn park(
    publisher: &Channel,
    webhook_id: &str,
    body: &[u8],
    level: u32,
    base: Duration,
) -> Result<(), EventsError> {
    let mut headers = FieldTable::default();
    headers.insert(WEBHOOK_HEADER.into(), AMQPValue::LongString(webhook_id.into()));
    let expiration = level_delay(base, level).as_millis().to_string();
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_expiration(expiration.as_str().into())
        .with_headers(headers);
    amqp::publish_confirmed(publisher, "", &retry_queue(level), body, properties).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_about_a_second_then_double_up_to_an_hour() {
        let base = Duration::from_secs(1);
        let delays: Vec<u64> = (0..RETRY_LEVELS).map(|l| level_delay(base, l).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600]);
    }
}
