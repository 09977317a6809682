//! Event sourcing for entity actors: recovery, pipelined group writes, snapshots.
//!
//! An entity decides a command against its in-memory state, then [`Journal::record`]s the events:
//! they are applied to the state at once (so the next command is decided against them) and queued
//! with the command's reply. While one append is in flight, everything recorded meanwhile waits;
//! when it lands ([`Journal::persisted`]), its replies are sent and everything waiting goes out as
//! the next single append. So a busy entity writes every command that arrived during one write in
//! the next one, and no reply leaves before its events are durable. Events an entity can redo
//! after a crash ([`Journal::record_held`]) are held until something else needs writing (an
//! event recorded, a reply waiting, [`Journal::write_held`]) and go out with it: an order's
//! forward saga steps are written with the saga's end, not one append per step. If an append
//! fails, every waiting reply gets the error and the entity stops: its in-memory state may hold
//! events that were never written, so it must be rebuilt from the journal by its supervisor.

use std::sync::Arc;

use ractor::{ActorRef, Message};
use serde::Serialize;
use serde::de::DeserializeOwned;
use storefront_storage::{AppendRequest, KeyedWrite, OutboxRecord, Snapshot, StorageError, Store};

use crate::DomainError;
use crate::codec::{decode, encode};
use crate::metrics::{JOURNAL_APPEND_SECONDS, JOURNAL_BATCH_EVENTS};

/// Answers a command once its events are durable (or failed).
pub(crate) type Reply = Box<dyn FnOnce(Result<(), DomainError>) + Send>;

/// Events read per page during recovery.
const RECOVERY_PAGE: usize = 4096;

/// An entity's state as a fold over its events.
pub(crate) trait Aggregate: Default + Serialize + DeserializeOwned + Send + 'static {
    /// What happened to the entity.
    type Event: Serialize + DeserializeOwned + Send;
    /// Folds one event, written at `at` (ms since the epoch), into the state.
    fn apply(&mut self, at: u64, event: &Self::Event);
    /// Rebuilds what the state derives and does not store, after a snapshot is loaded.
    fn after_snapshot_load(&mut self) {}
    /// Roughly how many items a snapshot of the state holds. A snapshot is taken only after at
    /// least this many events, so a state that grows (a hot SKU remembers a day of settled ids)
    /// costs a bounded amount of snapshot writing per event, and replaying the events after a
    /// snapshot costs about what loading it does.
    fn weight(&self) -> u64 {
        0
    }
}

/// The outcome of one append, sent back to the entity.
#[derive(Debug)]
pub(crate) struct Persisted(Result<u64, StorageError>);

/// One entity's journal stream and its write pipeline.
pub(crate) struct Journal {
    stream: String,
    store: Arc<dyn Store>,
    /// The sequence of the last event recorded, durable or not.
    recorded_seq: u64,
    /// The sequence of the last durable event.
    durable_seq: u64,
    snapshot_seq: u64,
    snapshot_every: u64,
    pending: Pending,
    in_flight: Option<Vec<Reply>>,
    batch_events: metrics::Histogram,
    append_seconds: metrics::Histogram,
}

#[derive(Default)]
struct Pending {
    events: Vec<Vec<u8>>,
    outbox: Vec<OutboxRecord>,
    puts: Vec<KeyedWrite>,
    replies: Vec<Reply>,
    /// Whether the events need writing now; held events alone do not.
    write_now: bool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("stream", &self.stream)
            .field("recorded_seq", &self.recorded_seq)
            .field("durable_seq", &self.durable_seq)
            .field("pending", &self.pending.events.len())
            .field("in_flight", &self.in_flight.is_some())
            .finish()
    }
}

impl Journal {
    /// Loads the newest snapshot of `stream` and replays the events after it.
    pub(crate) async fn recover<A: Aggregate>(
        store: Arc<dyn Store>,
        stream: String,
        snapshot_every: u64,
    ) -> Result<(Self, A), DomainError> {
        let snapshot = store.load_snapshot(&stream).await?;
        let (mut state, snapshot_seq) = match snapshot.map(|s| (decode::<A>(&s.state), s.seq)) {
            Some((Ok(mut state), seq)) => {
                state.after_snapshot_load();
                (state, seq)
            }
            Some((Err(e), seq)) => {
                // A snapshot of an older shape of the state (the events are the record, a
                // snapshot only a shortcut): replay from the start instead.
                tracing::warn!(%stream, seq, error = %e, "snapshot unreadable; replaying the journal");
                (A::default(), 0)
            }
            None => (A::default(), 0),
        };
        let mut seq = snapshot_seq;
        loop {
            let page = store.read_events(&stream, seq + 1, RECOVERY_PAGE).await?;
            for event in &page {
                let (at, event): (u64, A::Event) = decode(&event.payload)?;
                state.apply(at, &event);
            }
            match page.last() {
                Some(last) => seq = last.seq,
                None => break,
            }
            if page.len() < RECOVERY_PAGE {
                break;
            }
        }
        // The entity kind is the stream's prefix (`sku/A-1` -> `sku`): a bounded label.
        let kind = stream.split('/').next().unwrap_or_default().to_owned();
        let journal = Self {
            batch_events: metrics::histogram!(JOURNAL_BATCH_EVENTS, "kind" => kind.clone()),
            append_seconds: metrics::histogram!(JOURNAL_APPEND_SECONDS, "kind" => kind),
            stream,
            store,
            recorded_seq: seq,
            durable_seq: seq,
            snapshot_seq,
            snapshot_every,
            pending: Pending::default(),
            in_flight: None,
        };
        Ok((journal, state))
    }

    /// Looks through the durable journal for the last event that `pick` picks, among those
    /// written at or after `from_ms`: a binary search by time finds the first of them, then the
    /// rest are read in order. The returned future owns what it needs, to run off the actor.
    pub(crate) fn find_last<A: Aggregate, T: Send + 'static>(
        &self,
        from_ms: u64,
        pick: impl Fn(&A::Event) -> Option<T> + Send + 'static,
    ) -> impl Future<Output = Result<Option<T>, DomainError>> + Send + 'static {
        let (store, stream, last) = (self.store.clone(), self.stream.clone(), self.durable_seq);
        async move {
            let at = |seq: u64| {
                let (store, stream) = (store.clone(), stream.clone());
                async move {
                    let page = store.read_events(&stream, seq, 1).await?;
                    match page.first() {
                        Some(event) => Ok(decode::<(u64, A::Event)>(&event.payload)?.0),
                        None => Err(DomainError::Storage(format!("{stream} has no event {seq}"))),
                    }
                }
            };
            // The first sequence written at or after `from_ms` (times rise along a stream).
            let (mut low, mut high) = (1, last + 1);
            while low < high {
                let mid = low + (high - low) / 2;
                if at(mid).await? < from_ms {
                    low = mid + 1;
                } else {
                    high = mid;
                }
            }
            let mut found = None;
            let mut seq = low;
            while seq <= last {
                let page = store.read_events(&stream, seq, RECOVERY_PAGE).await?;
                for event in page.iter().take_while(|e| e.seq <= last) {
                    let (_, event): (u64, A::Event) = decode(&event.payload)?;
                    if let Some(hit) = pick(&event) {
                        found = Some(hit);
                    }
                }
                match page.last() {
                    Some(event) if page.len() == RECOVERY_PAGE => seq = event.seq + 1,
                    _ => break,
                }
            }
            Ok(found)
        }
    }

    /// Applies `events` to `state` now and queues them for the next append. Follow with
    /// [`Journal::after_durable`] to answer once they are written.
    pub(crate) fn record<A: Aggregate>(
        &mut self,
        state: &mut A,
        at: u64,
        events: Vec<A::Event>,
    ) -> Result<(), DomainError> {
        self.pending.write_now = true;
        self.record_held(state, at, events)
    }

    /// Like [`Journal::record`], but the events are held: written with the next append that
    /// something else asks for, not on their own. Only for events the entity can afford to lose
    /// in a crash, because it redoes what they record when it is rebuilt (an order's idempotent
    /// saga steps): nothing may be answered from them before they are durable.
    pub(crate) fn record_held<A: Aggregate>(
        &mut self,
        state: &mut A,
        at: u64,
        events: Vec<A::Event>,
    ) -> Result<(), DomainError> {
        for event in &events {
            self.pending.events.push(encode(&(at, event))?);
        }
        for event in &events {
            state.apply(at, event);
        }
        self.recorded_seq += events.len() as u64;
        Ok(())
    }

    /// The sequence of the last event recorded (durable or not).
    pub(crate) fn recorded(&self) -> u64 {
        self.recorded_seq
    }

    /// Queues a domain event for the outside world with the events recorded next.
    pub(crate) fn outbox(&mut self, record: OutboxRecord) {
        self.pending.outbox.push(record);
    }

    /// Queues a keyed-table write to land with the events recorded next.
    pub(crate) fn put(&mut self, write: KeyedWrite) {
        self.pending.puts.push(write);
    }

    /// Runs `reply` once everything recorded so far is durable (at once if it already is).
    pub(crate) fn after_durable(&mut self, reply: Reply) {
        if !self.pending.events.is_empty() {
            self.pending.write_now = true;
            self.pending.replies.push(reply);
        } else if let Some(in_flight) = &mut self.in_flight {
            in_flight.push(reply);
        } else {
            reply(Ok(()));
        }
    }

    /// Has held events written with the next flush.
    pub(crate) fn write_held(&mut self) {
        self.pending.write_now = true;
    }

    /// Whether nothing is waiting to be written (held events included) or being written.
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.pending.events.is_empty()
    }

    /// Starts the next append if none is in flight and events are waiting, unless they are all
    /// held. The outcome comes back to `myself` as `wrap(Persisted)`; a snapshot of `state` is
    /// saved after it when one is due.
    pub(crate) fn flush<A: Aggregate, M: Message>(
        &mut self,
        state: &A,
        myself: &ActorRef<M>,
        wrap: fn(Persisted) -> M,
    ) -> Result<(), DomainError> {
        if self.in_flight.is_some() || self.pending.events.is_empty() || !self.pending.write_now {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let request = AppendRequest {
            stream: self.stream.clone(),
            expected_seq: self.durable_seq,
            events: pending.events,
            outbox: pending.outbox,
            puts: pending.puts,
            // A node's store fences its entities' appends by shard lease (storefront-cluster).
            fence: None,
        };
        // `state` now holds exactly the events of this append and those before it.
        let due = self.snapshot_every.max(state.weight());
        let snapshot = if self.recorded_seq - self.snapshot_seq >= due {
            self.snapshot_seq = self.recorded_seq;
            Some(Snapshot { seq: self.recorded_seq, state: encode(state)? })
        } else {
            None
        };
        self.in_flight = Some(pending.replies);
        self.batch_events.record(request.events.len() as f64);
        let append_seconds = self.append_seconds.clone();
        let store = self.store.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let stream = request.stream.clone();
            let started = std::time::Instant::now();
            let result = store.append(request).await;
            append_seconds.record(started.elapsed().as_secs_f64());
            let save = snapshot.filter(|_| result.is_ok());
            // The entity may have stopped; its replies were then already failed.
            let _ = myself.send_message(wrap(Persisted(result)));
            if let Some(snapshot) = save
                && let Err(err) = store.save_snapshot(&stream, snapshot).await
            {
                tracing::warn!(%stream, error = %err, "snapshot not saved");
            }
        });
        Ok(())
    }

    /// Handles the outcome of the append in flight: answers its replies. An error fails every
    /// waiting reply too and is returned: the entity must stop and be rebuilt from the journal.
    pub(crate) fn persisted(&mut self, persisted: Persisted) -> Result<(), DomainError> {
        let replies = self.in_flight.take().unwrap_or_default();
        match persisted.0 {
            Ok(seq) => {
                self.durable_seq = seq;
                for reply in replies {
                    reply(Ok(()));
                }
                Ok(())
            }
            Err(err) => {
                let err = DomainError::from(err);
                let waiting = std::mem::take(&mut self.pending.replies);
                for reply in replies.into_iter().chain(waiting) {
                    reply(Err(err.clone()));
                }
                Err(err)
            }
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // An entity stopped with commands undecided on disk: their outcome is unknown to callers.
        let unknown = || Err(DomainError::Unavailable("entity stopped before its write".into()));
        for reply in self.in_flight.take().unwrap_or_default() {
            reply(unknown());
        }
        for reply in std::mem::take(&mut self.pending.replies) {
            reply(unknown());
        }
    }
}
