//! RabbitMQ: the `storefront.events` exchange, connections and the back-off between attempts.
//!
//! Every part that talks to the broker (the relay, the notifier, the webhook workers) connects
//! through [`connect`], declares what it uses itself (so any of them may start first), and after
//! a lost connection starts over from [`connect`] after [`Backoff`]'s next delay: lapin's own
//! auto-recovery is not used (it is opt-in, and amqp-rs/lapin#450 reports it failing to recover);
//! a fresh connection and channel after a failure is simple and proven by the broker-restart tests.

use std::time::Duration;

use backon::BackoffBuilder;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::task::JoinSet;

use crate::{EventType, EventsError};

/// The topic exchange every event is published to; the routing key is the event type.
pub const EXCHANGE: &str = "storefront.events";

/// The longest a connection attempt (TCP, TLS, AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the broker at `url`, naming the connection `name` in the broker's UI.
pub async fn connect(url: &str, name: &str) -> Result<Connection, EventsError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(connected) => connected.map_err(EventsError::broker),
        Err(_) => Err(EventsError::Broker(format!(
            "no connection within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// Declares the events exchange (durable topic; idempotent).
pub async fn declare_exchange(channel: &Channel) -> Result<(), EventsError> {
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
            FieldTable::default(),
        )
        .await
        .map_err(EventsError::broker)
}

/// Declares `queue` durable and of the quorum type (replicated, and kept safe across broker
/// restarts), bound to the events exchange for each of `types` (idempotent).
pub async fn declare_quorum_queue(
    channel: &Channel,
    queue: &str,
    types: impl IntoIterator<Item = EventType>,
) -> Result<(), EventsError> {
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), quorum)
        .await
        .map_err(EventsError::broker)?;
    for kind in types {
        channel
            .queue_bind(
                queue.into(),
                EXCHANGE.into(),
                kind.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(EventsError::broker)?;
    }
    Ok(())
}

/// Publishes `body` and waits for the broker's confirm (`channel` in confirm mode); a nack is an
/// error.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), EventsError> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .map_err(EventsError::broker)?
        .await
        .map_err(EventsError::broker)?;
    match confirm {
        Confirmation::Nack(_) => {
            Err(EventsError::Broker(format!("the broker refused a message for {routing_key}")))
        }
        Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
    }
}

/// A queue this process consumes, with manual acknowledgements.
#[derive(Debug, Clone)]
pub struct QueueConsumer {
    /// The broker.
    pub url: String,
    /// The connection's name in the broker and the consumer tag.
    pub name: &'static str,
    /// The queue.
    pub queue: &'static str,
    /// Deliveries unacknowledged at once (and so handled in parallel).
    pub prefetch: u16,
    /// How long a stopping consumer lets the deliveries in progress finish.
    pub grace: Duration,
}

impl QueueConsumer {
    /// Consumes until `stop` completes. On every connection `declare` runs first (with the
    /// consuming channel); then each delivery goes to `handle` on a task of its own, with a
    /// channel in confirm mode to publish on. A failed connection, or a handler's error (the
    /// broker refused what it published: it has settled its delivery itself), drops the
    /// connection, and a new one is made after [`Backoff`]'s delay. At stop, the deliveries in
    /// progress get `grace` to finish (an unfinished one comes again).
    pub async fn run<D, DF, H, HF>(&self, declare: D, handle: H, stop: impl Future<Output = ()>)
    where
        D: Fn(Channel) -> DF,
        DF: Future<Output = Result<(), EventsError>>,
        H: Fn(Channel, Delivery) -> HF,
        HF: Future<Output = Result<(), EventsError>> + Send + 'static,
    {
        let mut backoff = Backoff::default();
        let mut tasks = JoinSet::new();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                outcome = self.session(&declare, &handle, &mut tasks, &mut backoff) => {
                    if let Err(e) = outcome {
                        tracing::warn!(queue = self.queue, error = %e, "broker connection lost; reconnecting");
                    }
                }
            }
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
        tracing::info!(queue = self.queue, in_flight = tasks.len(), "consumer stopping");
        let drained =
            tokio::time::timeout(self.grace, async { while tasks.join_next().await.is_some() {} });
        if drained.await.is_err() {
            tracing::warn!(queue = self.queue, "deliveries still running at stop: they come again");
        }
    }

    /// One connection: declares, then hands out deliveries until it fails.
    async fn session<D, DF, H, HF>(
        &self,
        declare: &D,
        handle: &H,
        tasks: &mut JoinSet<Result<(), EventsError>>,
        backoff: &mut Backoff,
    ) -> Result<(), EventsError>
    where
        D: Fn(Channel) -> DF,
        DF: Future<Output = Result<(), EventsError>>,
        H: Fn(Channel, Delivery) -> HF,
        HF: Future<Output = Result<(), EventsError>> + Send + 'static,
    {
        let connection = connect(&self.url, self.name).await?;
        let channel = connection.create_channel().await.map_err(EventsError::broker)?;
        declare(channel.clone()).await?;
        let publisher = connection.create_channel().await.map_err(EventsError::broker)?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(EventsError::broker)?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(EventsError::broker)?;
        let mut deliveries = channel
            .basic_consume(
                self.queue.into(),
                self.name.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(EventsError::broker)?;
        tracing::info!(queue = self.queue, "consuming");
        backoff.reset();
        loop {
            tokio::select! {
                delivery = deliveries.next() => match delivery {
                    Some(Ok(delivery)) => {
                        tasks.spawn(handle(publisher.clone(), delivery));
                    }
                    Some(Err(e)) => return Err(EventsError::broker(e)),
                    None => return Err(EventsError::Broker("the consumer was cancelled".into())),
                },
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(Err(e)) = done {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Delays between reconnection attempts: from 100 ms, doubling with jitter, at most 10 s; it
/// starts over once a connection has worked.
#[derive(Debug)]
pub struct Backoff {
    delays: backon::ExponentialBackoff,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { delays: Self::schedule() }
    }
}

impl Backoff {
    fn schedule() -> backon::ExponentialBackoff {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(Duration::from_secs(10))
    }

    /// A connection worked: the next failure starts from the shortest delay again.
    pub fn reset(&mut self) {
        self.delays = Self::schedule();
    }
}
