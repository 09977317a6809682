//! The outbox relay: publishes the store's outbox to the `storefront.events` exchange, oldest
//! first, and records how far it got only once the broker has confirmed.
//!
//! One relay publishes at a time: it works only while its [`Leadership`] says so (in a node, the
//! lease of one shard), and it moves its recorded position by compare-and-swap, so a relay that
//! lost its lease without noticing cannot move the position back or past another's. A batch is
//! every record after the position (up to [`RelayConfig::batch`]): each is published at once,
//! many in flight, and the position moves to the batch's end after all are confirmed. A crash,
//! a lost connection or a nack before that publishes the batch again from the same position:
//! delivery is at least once, and the events of one entity keep their order.
//!
//! It runs on its own task and never touches a request: a broker that is down only delays
//! events, and the relay reconnects with [`Backoff`](crate::amqp::Backoff).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};
use lapin::{Confirmation, PublisherConfirm};
use storefront_storage::{OutboxEntry, Store, Table};
use tokio::sync::watch;

use crate::EventsError;
use crate::amqp::{self, Backoff, EXCHANGE};
use crate::metrics::{
    CONFIRMS_TOTAL, PUBLISHED_TOTAL, RELAY_FAILURES_TOTAL, RELAY_LAG, RELAY_RECONNECTS_TOTAL,
};

/// The name a node's relay records its position under.
pub const OUTBOX_RELAY: &str = "outbox";

/// Whether this relay may publish now. A node answers from the lease it holds.
pub trait Leadership: Send + Sync + std::fmt::Debug + 'static {
    /// `true` while this relay is the one that publishes.
    fn may_publish(&self) -> bool;
}

/// A relay that always publishes (a store with one relay, as in tests of the relay alone).
#[derive(Debug, Clone, Copy)]
pub struct Always;

impl Leadership for Always {
    fn may_publish(&self) -> bool {
        true
    }
}

/// How the relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The broker, `amqp://user:password@host:port/vhost` (or `amqps://`).
    pub amqp_url: String,
    /// The name its position is recorded under (`relay_offsets`).
    pub name: String,
    /// Most records published before their confirms are awaited.
    pub batch: usize,
    /// How often a relay that has published all there was looks again.
    pub poll: Duration,
}

impl RelayConfig {
    /// The defaults for a broker at `amqp_url`.
    pub fn new(amqp_url: impl Into<String>) -> Self {
        Self {
            amqp_url: amqp_url.into(),
            name: OUTBOX_RELAY.into(),
            batch: 4096,
            poll: Duration::from_millis(50),
        }
    }
}

/// A running relay; stopping it ends its task.
#[derive(Debug)]
pub struct Relay {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Starts relaying `store`'s outbox on a task of its own.
    pub fn start(
        store: Arc<dyn Store>,
        leadership: Arc<dyn Leadership>,
        config: RelayConfig,
    ) -> Relay {
        let (stop, stopped) = watch::channel(false);
        let lag = metrics::gauge!(RELAY_LAG, "relay" => config.name.clone());
        let worker = Worker { store, leadership, config, stopped, published: None, lag };
        Relay { stop, task: tokio::spawn(worker.run()) }
    }

    /// Stops after the batch in flight (its position recorded if it was confirmed).
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// A connection with a channel in confirm mode on which the exchange is declared.
struct Link {
    connection: Connection,
    channel: Channel,
}

struct Worker {
    store: Arc<dyn Store>,
    leadership: Arc<dyn Leadership>,
    config: RelayConfig,
    stopped: watch::Receiver<bool>,
    /// The recorded position as this relay last read or wrote it (`None`: read it again).
    published: Option<Vec<u8>>,
    /// Seconds since the oldest unpublished event happened.
    lag: metrics::Gauge,
}

/// What one pass of the loop did.
enum Pass {
    /// Published a whole batch: more is waiting, look again at once.
    Full,
    /// Published what there was, or nothing; or it is not this relay's turn.
    Idle,
}

impl Worker {
    async fn run(mut self) {
        let mut backoff = Backoff::default();
        let mut link: Option<Link> = None;
        let mut connected_before = false;
        while !*self.stopped.borrow() {
            let pass = self.pass(&mut link, &mut connected_before).await;
            let wait = match pass {
                Ok(Pass::Full) => {
                    backoff.reset();
                    continue;
                }
                Ok(Pass::Idle) => {
                    backoff.reset();
                    self.config.poll
                }
                Err((stage, e)) => {
                    metrics::counter!(RELAY_FAILURES_TOTAL, "stage" => stage).increment(1);
                    tracing::warn!(stage, error = %e, "outbox relay: will try again");
                    // A failed link is not reused: the next pass connects afresh. The recorded
                    // position is read again too (another relay may have moved it).
                    if let Some(old) = link.take() {
                        let _ = old.connection.close(0, "relay failed".into()).await;
                    }
                    self.published = None;
                    self.report_lag().await;
                    backoff.next_delay()
                }
            };
            let mut stopped = self.stopped.clone();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stopped.wait_for(|stop| *stop) => {}
            }
        }
        if let Some(link) = link {
            let _ = link.connection.close(0, "node stopping".into()).await;
        }
    }

    /// Publishes the next batch, if this relay may.
    async fn pass(
        &mut self,
        link: &mut Option<Link>,
        connected_before: &mut bool,
    ) -> Result<Pass, (&'static str, EventsError)> {
        if !self.leadership.may_publish() {
            if let Some(old) = link.take() {
                let _ = old.connection.close(0, "no longer the relay".into()).await;
            }
            self.published = None;
            return Ok(Pass::Idle);
        }
        // Connected (and the exchange declared) as soon as this relay may publish, events or not.
        if link.as_ref().is_none_or(|l| !l.connection.status().connected()) {
            *link = Some(self.connect().await.map_err(|e| ("connect", e))?);
            if *connected_before {
                metrics::counter!(RELAY_RECONNECTS_TOTAL).increment(1);
            }
            *connected_before = true;
        }
        let Some(channel) = link.as_ref().map(|l| &l.channel) else {
            return Ok(Pass::Idle);
        };
        let after = self.position().await.map_err(|e| ("store", e))?;
        let entries = self
            .store
            .read_outbox(after, self.config.batch)
            .await
            .map_err(|e| ("store", e.into()))?;
        let Some(last) = entries.last().map(|e| e.position) else {
            self.lag.set(0.0);
            return Ok(Pass::Idle);
        };
        self.lag.set(lag_seconds(&entries[0]));
        let mut confirms = Vec::with_capacity(entries.len());
        for entry in &entries {
            confirms.push(publish(channel, entry).await.map_err(|e| ("publish", e))?);
        }
        let mut nacked = 0usize;
        for confirm in confirms {
            match confirm.await.map_err(|e| ("confirm", EventsError::broker(e)))? {
                Confirmation::Ack(_) | Confirmation::NotRequested => {}
                Confirmation::Nack(_) => nacked += 1,
            }
        }
        metrics::counter!(CONFIRMS_TOTAL, "outcome" => "ack")
            .increment((entries.len() - nacked) as u64);
        if nacked > 0 {
            metrics::counter!(CONFIRMS_TOTAL, "outcome" => "nack").increment(nacked as u64);
            return Err((
                "confirm",
                EventsError::Broker(format!("{nacked} of {} messages nacked", entries.len())),
            ));
        }
        metrics::counter!(PUBLISHED_TOTAL).increment(entries.len() as u64);
        self.record(last).await.map_err(|e| ("store", e))?;
        // A short batch waits for the next poll: under a steady trickle of events the relay
        // publishes (and records its position) a few times a poll, not once per event.
        Ok(if entries.len() >= self.config.batch { Pass::Full } else { Pass::Idle })
    }

    async fn connect(&self) -> Result<Link, EventsError> {
        let connection = amqp::connect(&self.config.amqp_url, "storefront-relay").await?;
        let channel = connection.create_channel().await.map_err(EventsError::broker)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(EventsError::broker)?;
        amqp::declare_exchange(&channel).await?;
        tracing::info!(
            broker = %storefront_storage::redact_url(&self.config.amqp_url),
            "outbox relay connected"
        );
        Ok(Link { connection, channel })
    }

    /// The recorded position: the last one published and confirmed (0: none yet).
    async fn position(&mut self) -> Result<u64, EventsError> {
        if self.published.is_none() {
            let stored = self.store.get(Table::RelayOffsets, self.config.name.as_bytes()).await?;
            self.published = Some(stored.unwrap_or_default());
        }
        decode_position(self.published.as_deref().unwrap_or_default())
    }

    /// Moves the recorded position to `to`, unless another relay moved it meanwhile.
    async fn record(&mut self, to: u64) -> Result<(), EventsError> {
        let new = to.to_be_bytes().to_vec();
        let old = self.published.take();
        let expected = old.as_deref().filter(|o| !o.is_empty());
        let moved = self
            .store
            .compare_and_swap(
                Table::RelayOffsets,
                self.config.name.as_bytes(),
                expected,
                Some(&new),
            )
            .await?;
        if !moved {
            return Err(EventsError::Broker(
                "another relay moved the outbox position: reading it again".into(),
            ));
        }
        self.published = Some(new);
        Ok(())
    }

    /// While nothing can be published, the lag still grows: measure it from the oldest record.
    async fn report_lag(&mut self) {
        let Ok(after) = self.position().await else { return };
        if let Ok(entries) = self.store.read_outbox(after, 1).await {
            match entries.first() {
                Some(oldest) => self.lag.set(lag_seconds(oldest)),
                None => self.lag.set(0.0),
            }
        }
    }
}

/// Deletes the outbox records past their retention: those published (at or before the position
/// recorded under `name`) whose event happened more than `retention` before `now`; where no
/// broker was ever configured (`broker` is false and no position was ever recorded), every
/// record that old. A record with no readable time (written before events were CloudEvents)
/// counts as old. Returns the position trimmed up to, if any.
pub async fn trim_outbox(
    store: &dyn Store,
    name: &str,
    broker: bool,
    retention: Duration,
    now: SystemTime,
) -> Result<Option<u64>, EventsError> {
    const PAGE: usize = 1000;
    let published = match store.get(Table::RelayOffsets, name.as_bytes()).await? {
        Some(bytes) => decode_position(&bytes)?,
        // A broker is configured but has confirmed nothing yet: nothing is published.
        None if broker => 0,
        None => u64::MAX,
    };
    let cutoff_ms = now
        .checked_sub(retention)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    let mut up_to = None;
    let mut after = 0;
    'pages: loop {
        let entries = store.read_outbox(after, PAGE).await?;
        for entry in &entries {
            let old = event_time_ms(entry).is_none_or(|at| at < cutoff_ms);
            if entry.position > published || !old {
                break 'pages;
            }
            up_to = Some(entry.position);
        }
        match entries.last() {
            Some(last) if entries.len() == PAGE => after = last.position,
            _ => break,
        }
    }
    if let Some(up_to) = up_to {
        store.trim_outbox(up_to).await?;
    }
    Ok(up_to)
}

/// A recorded position: 8 bytes big-endian, or nothing (never published).
fn decode_position(bytes: &[u8]) -> Result<u64, EventsError> {
    if bytes.is_empty() {
        return Ok(0);
    }
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| EventsError::Decode("relay position is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(array))
}

/// When an outbox record's event happened, in milliseconds since the Unix epoch, from its id
/// (no parse of the body on the hot path).
fn event_time_ms(entry: &OutboxEntry) -> Option<u64> {
    crate::event::time_of_id(&entry.record.event_id)
}

/// The lag, from the oldest record not yet published.
fn lag_seconds(oldest: &OutboxEntry) -> f64 {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let lag_ms = event_time_ms(oldest).map_or(0, |at| now_ms.saturating_sub(at));
    lag_ms as f64 / 1000.0
}

/// Publishes one record as EVENTS.md describes the message; answers its pending confirm.
async fn publish(channel: &Channel, entry: &OutboxEntry) -> Result<PublisherConfirm, EventsError> {
    let record = &entry.record;
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(record.event_id.as_str().into())
        .with_type(record.topic.as_str().into())
        .with_content_type("application/json".into())
        .with_app_id("storefront".into());
    if let Some(ms) = event_time_ms(entry) {
        properties = properties.with_timestamp(ms / 1000);
    }
    channel
        .basic_publish(
            EXCHANGE.into(),
            record.topic.as_str().into(),
            BasicPublishOptions::default(),
            &record.payload,
            properties,
        )
        .await
        .map_err(EventsError::broker)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn trimming_keeps_what_is_unpublished_or_recent() {
        use crate::event::StockLow;
        use crate::{CloudEvent, EventData};
        use storefront_storage::AppendRequest;

        let dir = tempfile::tempdir().unwrap();
        let store = storefront_storage::embedded::EmbeddedStore::open(dir.path()).await.unwrap();
        let day_ms = 24 * 3600 * 1000;
        let now = UNIX_EPOCH + Duration::from_millis(100 * day_ms);
        // Three events ten days old, then one an hour old.
        let at = [90 * day_ms, 90 * day_ms + 1, 90 * day_ms + 2, 100 * day_ms - 3_600_000];
        let events = at.iter().map(|&ms| {
            let low = StockLow { sku: "A".into(), available: 1, threshold: 5 };
            CloudEvent::new(ms, EventData::StockLow(low)).into_outbox().unwrap()
        });
        let request = AppendRequest {
            stream: "sku/A".into(),
            expected_seq: 0,
            events: vec![b"e".to_vec()],
            outbox: events.collect(),
            puts: vec![],
            fence: None,
        };
        store.append(request).await.unwrap();
        let positions: Vec<u64> =
            store.read_outbox(0, 10).await.unwrap().iter().map(|e| e.position).collect();
        let week = Duration::from_secs(7 * 24 * 3600);
        // Published up to the second: the third is old but unpublished, the fourth recent.
        store.put(Table::RelayOffsets, b"outbox", &positions[1].to_be_bytes()).await.unwrap();
        assert_eq!(
            trim_outbox(&store, "outbox", true, week, now).await.unwrap(),
            Some(positions[1])
        );
        let left: Vec<u64> =
            store.read_outbox(0, 10).await.unwrap().iter().map(|e| e.position).collect();
        assert_eq!(left, positions[2..]);
        // A broker that never confirmed anything: nothing goes.
        store.delete(Table::RelayOffsets, b"outbox").await.unwrap();
        assert_eq!(trim_outbox(&store, "outbox", true, week, now).await.unwrap(), None);
        // Where no broker was ever configured, the old ones go.
        assert_eq!(
            trim_outbox(&store, "outbox", false, week, now).await.unwrap(),
            Some(positions[2])
        );
        let left: Vec<u64> =
            store.read_outbox(0, 10).await.unwrap().iter().map(|e| e.position).collect();
        assert_eq!(left, positions[3..]);
    }

    #[test]
    fn positions_are_eight_bytes_or_none() {
        assert_eq!(decode_position(&[]).unwrap(), 0);
        assert_eq!(decode_position(&42u64.to_be_bytes()).unwrap(), 42);
        assert!(decode_position(&[1, 2, 3]).is_err());
    }
}
