//! `ShardRegion`: the entities of one kind on this node.
//!
//! Supervision: the region spawns one supervisor actor per kind; every entity actor of the kind is
//! spawned linked to it, on the first command for its id. When an entity crashes, the supervisor
//! restarts it at once (it rebuilds itself from its journal; at most [`MAX_RESTARTS`] times per
//! [`RESTART_WINDOW`], after which it restarts on its next command instead) and its siblings never
//! notice. Commands sent while an entity stops (passivation or a crash) wait in the region and go
//! to its next incarnation, so no two incarnations of one entity ever run at once.
//!
//! Routing is a lock-protected map from id to actor: the caller's task sends straight into the
//! entity's mailbox, so a hot entity's commands do not queue behind a router actor.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort,
    SupervisionEvent,
};
use storefront_actors::{DomainError, EntityKind, EntityMsg, Passivation};

use crate::ClusterError;
use crate::shard::shard_of;

/// Restarts allowed per entity within [`RESTART_WINDOW`].
pub const MAX_RESTARTS: u32 = 5;
/// The window for [`MAX_RESTARTS`].
pub const RESTART_WINDOW: Duration = Duration::from_secs(10);
/// Commands held for one entity while it stops or restarts.
const MAX_HELD: usize = 100_000;

type MakeArgs<A> = dyn Fn(&str, Passivation) -> <A as Actor>::Arguments + Send + Sync;
/// Whether this node serves a shard now (it holds the shard's lease).
type Serves = dyn Fn(u32) -> bool + Send + Sync;

/// The entities of one kind on this node, addressed by id.
pub struct ShardRegion<A: Actor> {
    inner: Arc<RegionInner<A>>,
}

impl<A: Actor> Clone for ShardRegion<A> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<A: Actor> std::fmt::Debug for ShardRegion<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardRegion").field("kind", &self.inner.kind).finish()
    }
}

struct RegionInner<A: Actor> {
    kind: EntityKind,
    shard_count: u32,
    make_args: Box<MakeArgs<A>>,
    serves: Box<Serves>,
    supervisor: std::sync::OnceLock<ActorCell>,
    entities: Mutex<Entities<A::Msg>>,
    /// Calls sent to entities and not yet answered: how deep the mailboxes are (ractor does not
    /// expose mailbox lengths).
    in_flight: AtomicUsize,
}

enum Slot<M> {
    Running(ActorRef<M>),
    /// The actor is stopping; commands wait here for its successor.
    Stopping {
        actor: ActorId,
        held: Vec<M>,
    },
}

struct Entities<M> {
    by_id: HashMap<String, Slot<M>>,
    ids: HashMap<ActorId, String>,
    restarts: RestartCounts,
}

/// Crash restarts per entity within the current window; an entity whose window has passed is
/// forgotten, so the counts stay as few as the entities crashing lately.
#[derive(Debug, Default)]
struct RestartCounts(HashMap<String, (Instant, u32)>);

impl RestartCounts {
    /// Counts a restart of `id` at `now`; `false` once it used up its restarts in the window.
    fn note(&mut self, id: &str, now: Instant) -> bool {
        self.0.retain(|_, (since, _)| now.duration_since(*since) <= RESTART_WINDOW);
        let entry = self.0.entry(id.to_owned()).or_insert((now, 0));
        entry.1 += 1;
        entry.1 <= MAX_RESTARTS
    }
}

/// One call counted in a region's `in_flight` while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why an entity actor ended.
enum Exit {
    Stopped,
    Failed(String),
}

impl<A> ShardRegion<A>
where
    A: Actor + Default,
    A::Msg: EntityMsg,
{
    /// Starts the region of `kind`; `make_args` builds an entity's start arguments from its id;
    /// entities are started only in shards this node `serves`.
    pub async fn start(
        kind: EntityKind,
        shard_count: u32,
        make_args: impl Fn(&str, Passivation) -> A::Arguments + Send + Sync + 'static,
        serves: impl Fn(u32) -> bool + Send + Sync + 'static,
    ) -> Result<Self, ClusterError> {
        let inner = Arc::new(RegionInner {
            kind,
            shard_count,
            make_args: Box::new(make_args),
            serves: Box::new(serves),
            supervisor: std::sync::OnceLock::new(),
            entities: Mutex::new(Entities {
                by_id: HashMap::new(),
                ids: HashMap::new(),
                restarts: RestartCounts::default(),
            }),
            in_flight: AtomicUsize::new(0),
        });
        let (supervisor, _) =
            Actor::spawn(None, RegionSupervisor::<A>(PhantomData), Arc::downgrade(&inner))
                .await
                .map_err(|e| ClusterError::Region(format!("{kind} supervisor: {e}")))?;
        // Set once, here, before the region is handed out.
        let _ = inner.supervisor.set(supervisor.get_cell());
        Ok(Self { inner })
    }

    /// The entity kind.
    pub fn kind(&self) -> EntityKind {
        self.inner.kind
    }

    /// The shard `id` belongs to.
    pub fn shard(&self, id: &str) -> u32 {
        shard_of(self.inner.kind, id, self.inner.shard_count)
    }

    /// Entities running (or stopping) now.
    pub fn live_entities(&self) -> usize {
        self.inner.lock().by_id.len()
    }

    /// Calls sent to this region's entities and not yet answered (or timed out).
    pub fn calls_in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Sends `message` to entity `id`, starting it if needed.
    pub fn send(&self, id: &str, message: A::Msg) -> Result<(), ClusterError> {
        RegionInner::send(&self.inner, id, message)
    }

    /// Starts entity `id` if it is not running (for example to resume its work after a restart).
    pub fn ensure_started(&self, id: &str) -> Result<(), ClusterError> {
        let mut entities = self.inner.lock();
        if !entities.by_id.contains_key(id) {
            let shard = self.shard(id);
            if !(self.inner.serves)(shard) {
                return Err(ClusterError::NotOwner {
                    kind: self.inner.kind,
                    id: id.to_owned(),
                    shard,
                });
            }
            let actor = RegionInner::spawn(&self.inner, &mut entities, id)?;
            entities.by_id.insert(id.to_owned(), Slot::Running(actor));
        }
        Ok(())
    }

    /// Sends the message `build` makes around a reply port and waits up to `timeout` for the
    /// answer. A timeout or a stop means the outcome is unknown.
    pub async fn call<R: Send + 'static>(
        &self,
        id: &str,
        build: impl FnOnce(RpcReplyPort<R>) -> A::Msg,
        timeout: Duration,
    ) -> Result<R, ClusterError> {
        let (tx, rx) = ractor::concurrency::oneshot();
        self.send(id, build(RpcReplyPort::from(tx)))?;
        let answer = {
            // Counted until answered, timed out, or the caller gave up (the guard's drop).
            let _counted = InFlight::enter(&self.inner.in_flight);
            tokio::time::timeout(timeout, rx).await
        };
        match answer {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(ClusterError::Dropped { kind: self.inner.kind, id: id.to_owned() }),
            Err(_) => Err(ClusterError::Timeout {
                kind: self.inner.kind,
                id: id.to_owned(),
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// Stops every entity of `shard` after it has handled what is in its mailbox and its journal
    /// writes are done (the shard is moving to another node, and this node no longer `serves`
    /// it). Commands arriving meanwhile are held, then refused as [`DomainError::Moved`], so
    /// their callers can send them to the new owner.
    pub async fn stop_shard(&self, shard: u32, grace: Duration) {
        let stopping: Vec<ActorRef<A::Msg>> = {
            let mut entities = self.inner.lock();
            let ids: Vec<String> =
                entities.by_id.keys().filter(|id| self.shard(id) == shard).cloned().collect();
            let mut stopping = Vec::new();
            for id in ids {
                let Some(slot) = entities.by_id.get_mut(&id) else { continue };
                let actor = match slot {
                    Slot::Running(actor) => actor.clone(),
                    Slot::Stopping { .. } => continue,
                };
                *slot = Slot::Stopping { actor: actor.get_id(), held: Vec::new() };
                let _ = actor.send_message(A::Msg::stop());
                stopping.push(actor);
            }
            stopping
        };
        let cells: Vec<ActorCell> = stopping.iter().map(ActorRef::get_cell).collect();
        let exits = cells.iter().map(|cell| cell.wait(Some(grace)));
        let late = futures::future::join_all(exits).await.iter().filter(|e| e.is_err()).count();
        if late > 0 {
            tracing::warn!(
                kind = %self.inner.kind,
                shard,
                late,
                "entities still running after the handoff grace"
            );
        }
    }

    /// Stops every entity after it has handled what is in its mailbox, then the supervisor.
    pub async fn shutdown(&self, grace: Duration) {
        let actors: Vec<ActorRef<A::Msg>> = {
            let entities = self.inner.lock();
            entities
                .by_id
                .values()
                .filter_map(|slot| match slot {
                    Slot::Running(actor) => Some(actor.clone()),
                    Slot::Stopping { .. } => None,
                })
                .collect()
        };
        let drains = actors.iter().map(|actor| actor.drain_and_wait(Some(grace)));
        futures::future::join_all(drains).await;
        if let Some(supervisor) = self.inner.supervisor.get() {
            supervisor.stop(None);
        }
    }
}

impl<A> RegionInner<A>
where
    A: Actor + Default,
    A::Msg: EntityMsg,
{
    fn lock(&self) -> MutexGuard<'_, Entities<A::Msg>> {
        // The map is only ever mutated in short sections without panicking calls; a poisoned lock
        // still holds a consistent map.
        self.entities.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn send(this: &Arc<Self>, id: &str, message: A::Msg) -> Result<(), ClusterError> {
        let mut entities = this.lock();
        let message = match entities.by_id.get_mut(id) {
            Some(Slot::Running(actor)) => match actor.send_message(message) {
                Ok(()) => return Ok(()),
                Err(MessagingErr::SendErr(message)) => {
                    // Dead but not yet reported: hold the command for its successor.
                    let actor = actor.get_id();
                    entities
                        .by_id
                        .insert(id.to_owned(), Slot::Stopping { actor, held: vec![message] });
                    return Ok(());
                }
                Err(err) => return Err(this.spawn_error(id, err)),
            },
            Some(Slot::Stopping { held, .. }) => {
                if held.len() >= MAX_HELD {
                    return Err(ClusterError::Overloaded { kind: this.kind, id: id.to_owned() });
                }
                held.push(message);
                return Ok(());
            }
            None => message,
        };
        let shard = shard_of(this.kind, id, this.shard_count);
        if !(this.serves)(shard) {
            return Err(ClusterError::NotOwner { kind: this.kind, id: id.to_owned(), shard });
        }
        let actor = Self::spawn(this, &mut entities, id)?;
        let sent = actor.send_message(message).map_err(|err| this.spawn_error(id, err));
        entities.by_id.insert(id.to_owned(), Slot::Running(actor));
        sent
    }

    fn spawn_error(&self, id: &str, err: impl std::fmt::Display) -> ClusterError {
        ClusterError::Spawn { kind: self.kind, id: id.to_owned(), reason: err.to_string() }
    }

    /// Spawns entity `id` linked to the supervisor; the caller records it in `entities`.
    fn spawn(
        this: &Arc<Self>,
        entities: &mut Entities<A::Msg>,
        id: &str,
    ) -> Result<ActorRef<A::Msg>, ClusterError> {
        let weak = Arc::downgrade(this);
        let passivation =
            Passivation::new(move |actor| weak.upgrade().is_some_and(|r| r.agree_to_stop(actor)));
        let args = (this.make_args)(id, passivation);
        let supervisor =
            this.supervisor.get().ok_or_else(|| this.spawn_error(id, "region not started"))?;
        let (actor, started) = ractor::ActorRuntime::<A>::spawn_linked_instant(
            None,
            A::default(),
            args,
            supervisor.clone(),
        )
        .map_err(|e| this.spawn_error(id, e))?;
        entities.ids.insert(actor.get_id(), id.to_owned());
        // A failed start is not reported to the supervisor (it links only once started).
        let weak = Arc::downgrade(this);
        let actor_id = actor.get_id();
        tokio::spawn(async move {
            let failure = match started.await {
                Ok(Ok(_)) => return,
                Ok(Err(err)) => err.to_string(),
                Err(err) => err.to_string(),
            };
            if let Some(region) = weak.upgrade() {
                Self::exited(&region, actor_id, Exit::Failed(format!("start failed: {failure}")));
            }
        });
        Ok(actor)
    }

    /// The passivation handshake: stop routing to `actor` if it is the one running.
    fn agree_to_stop(&self, actor: ActorId) -> bool {
        let mut entities = self.lock();
        let Some(id) = entities.ids.get(&actor).cloned() else {
            return false;
        };
        match entities.by_id.get(&id) {
            Some(Slot::Running(running)) if running.get_id() == actor => {
                entities.by_id.insert(id, Slot::Stopping { actor, held: Vec::new() });
                true
            }
            _ => false,
        }
    }

    /// An entity actor ended: start its successor if commands wait for it or it crashed.
    fn exited(this: &Arc<Self>, actor: ActorId, exit: Exit) {
        let mut entities = this.lock();
        let Some(id) = entities.ids.remove(&actor) else {
            return;
        };
        let held = match entities.by_id.remove(&id) {
            Some(Slot::Running(running)) if running.get_id() == actor => Vec::new(),
            Some(Slot::Stopping { actor: stopping, held }) if stopping == actor => held,
            Some(other) => {
                // The slot already belongs to a successor.
                entities.by_id.insert(id, other);
                return;
            }
            None => return,
        };
        let restart = match &exit {
            Exit::Failed(reason) => {
                tracing::warn!(kind = %this.kind, %id, %reason, "entity crashed");
                this.note_restart(&mut entities, &id)
            }
            Exit::Stopped => false,
        };
        if held.is_empty() && !restart {
            return;
        }
        if !(this.serves)(shard_of(this.kind, &id, this.shard_count)) {
            // The shard moved away: whoever waits sends again, to the new owner.
            for message in held {
                message.refuse(DomainError::Moved(format!("{} {id}", this.kind)));
            }
            return;
        }
        match Self::spawn(this, &mut entities, &id) {
            Ok(successor) => {
                for message in held {
                    // A successor that dies at once turns these into unanswered calls.
                    let _ = successor.send_message(message);
                }
                entities.by_id.insert(id, Slot::Running(successor));
            }
            Err(err) => {
                tracing::error!(kind = %this.kind, %id, error = %err, "entity not restarted")
            }
        }
    }

    /// Counts a crash restart; `false` once the entity used up its restarts in the window.
    fn note_restart(&self, entities: &mut Entities<A::Msg>, id: &str) -> bool {
        if !entities.restarts.note(id, Instant::now()) {
            tracing::error!(kind = %self.kind, %id, "entity keeps crashing; it restarts on its next command");
            return false;
        }
        true
    }
}

/// The supervisor actor of one region: parent of every entity actor of the kind.
struct RegionSupervisor<A>(PhantomData<fn() -> A>);

impl<A> Actor for RegionSupervisor<A>
where
    A: Actor + Default,
    A::Msg: EntityMsg,
{
    type Msg = ();
    type State = std::sync::Weak<RegionInner<A>>;
    type Arguments = std::sync::Weak<RegionInner<A>>;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        region: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(region)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        region: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(region) = region.upgrade() else {
            return Ok(());
        };
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                RegionInner::exited(&region, cell.get_id(), Exit::Stopped);
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                RegionInner::exited(&region, cell.get_id(), Exit::Failed(err.to_string()));
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_counts_end_with_their_window_and_are_forgotten() {
        let mut counts = RestartCounts::default();
        let start = Instant::now();
        for _ in 0..MAX_RESTARTS {
            assert!(counts.note("crashy", start));
        }
        assert!(!counts.note("crashy", start), "past the limit within the window");
        for i in 0..1000 {
            assert!(counts.note(&format!("once-{i}"), start));
        }
        // A window later, a restart starts a new count, and the old ones are gone.
        let later = start + RESTART_WINDOW + Duration::from_secs(1);
        assert!(counts.note("crashy", later));
        assert_eq!(counts.0.len(), 1, "entities that crashed long ago are still counted");
    }
}
