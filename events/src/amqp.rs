//! RabbitMQ: the `storefront.events` exchange, connections and the back-off between attempts.
//!
//! Every part that talks to the broker (the relay, the notifier, the webhook workers) connects
//! through [`connect`], declares what it uses itself (so any of them may start first), and after
//! a lost connection starts over from [`connect`] after [`Backoff`]'s next delay: lapin's own
//! auto-recovery is not used (it is opt-in, and amqp-rs/lapin#450 reports it failing to recover);
//! a fresh connection and channel after a failure is simple and proven by the broker-restart tests.

use std::time::Duration;

use backon::BackoffBuilder;
use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::EventsError;

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
