//! What every entity actor shares: its arguments from the region, the internal messages of its
//! write pipeline and idle timer, and passivation.
//!
//! Supervision: entity actors are spawned (linked) by their kind's shard region supervisor in
//! `storefront-cluster`. A crash stops only that entity; the supervisor restarts it, and it rebuilds
//! its state from its snapshot and journal. Passivation is a handshake: an idle entity asks its
//! region to stop routing to it ([`Passivation::request`]); if the region agrees, the entity sends
//! itself a stop message, which it handles after every message already in its mailbox, and stops
//! once its journal is idle. The region holds new commands for it until it has stopped.

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorCell, ActorId, ActorRef, Message};

use crate::DomainError;
use crate::journal::Persisted;

/// Settings every entity kind reads.
#[derive(Debug, Clone)]
pub struct EntitySettings {
    /// Save a snapshot after this many events.
    pub snapshot_every: u64,
    /// Stop an entity idle this long.
    pub passivate_after: Duration,
    /// Empty a cart untouched this long.
    pub cart_idle_expiry: Duration,
    /// How long a checkout's reservations are held.
    pub reservation_ttl: Duration,
    /// Emit `stock.low` at or below this many available units.
    pub stock_low_threshold: u64,
    /// Attempts per payment operation on gateway errors.
    pub gateway_max_attempts: u32,
    /// Back-off before the second attempt, doubled after each further one.
    pub gateway_retry_base: Duration,
    /// How long one gateway call may take before its outcome counts as unknown.
    pub gateway_timeout: Duration,
}

impl Default for EntitySettings {
    fn default() -> Self {
        Self {
            snapshot_every: 1000,
            passivate_after: Duration::from_secs(120),
            cart_idle_expiry: Duration::from_secs(7 * 24 * 3600),
            reservation_ttl: Duration::from_secs(600),
            stock_low_threshold: 5,
            gateway_max_attempts: 3,
            gateway_retry_base: Duration::from_millis(100),
            gateway_timeout: Duration::from_secs(10),
        }
    }
}

/// Asks the entity's region to stop routing commands to it; `true` means it may stop.
#[derive(Clone)]
pub struct Passivation(Arc<dyn Fn(ActorId) -> bool + Send + Sync>);

impl Passivation {
    /// A passivation handshake answered by `agree`.
    pub fn new(agree: impl Fn(ActorId) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(agree))
    }

    /// Asks to stop the entity running as `actor`.
    pub fn request(&self, actor: ActorId) -> bool {
        (self.0)(actor)
    }
}

impl std::fmt::Debug for Passivation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passivation")
    }
}

/// What a region needs of an entity's messages besides delivering them.
pub trait EntityMsg: Message {
    /// Stops the entity once the messages before this one are handled and its journal is idle
    /// (the region's side of a shard handoff).
    fn stop() -> Self;
    /// Answers the command with `err` without running it (its shard moved away); the entity's
    /// own messages are dropped.
    fn refuse(self, err: DomainError);
}

/// Messages an entity sends itself. Opaque outside this crate.
#[derive(Debug)]
pub struct Internal(pub(crate) InternalMsg);

#[derive(Debug)]
pub(crate) enum InternalMsg {
    /// The append in flight finished.
    Persisted(Persisted),
    /// The idle timer fired.
    IdleCheck,
    /// The entity's work is done: passivate without waiting for the idle timer.
    Done,
    /// The region agreed to passivation: stop once the journal is idle.
    Stop,
    /// A SKU's earliest reservation deadline has passed.
    ExpireDue,
    /// A checkout saga step finished or should start.
    Saga(crate::order::SagaMsg),
}

/// Where an entity is on its way to stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopping {
    /// Serving.
    No,
    /// The region agreed and routes no more commands here; the stop message is queued behind the
    /// commands already in the mailbox, which are still served.
    Requested,
    /// The stop message was handled: stop as soon as the journal is idle.
    Draining,
}

/// The idle timer and stop state of one entity.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    passivate_after: Duration,
    passivation: Passivation,
    last_activity: tokio::time::Instant,
    stopping: Stopping,
    /// The armed idle timer: its task holds the actor's cell (and with it the mailbox) until it
    /// fires, so it is cancelled when the entity stops.
    timer: Option<tokio::task::AbortHandle>,
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

impl Lifecycle {
    pub(crate) fn new(passivate_after: Duration, passivation: Passivation) -> Self {
        Self {
            passivate_after,
            passivation,
            last_activity: tokio::time::Instant::now(),
            stopping: Stopping::No,
            timer: None,
        }
    }

    /// Arms the idle timer; call once when the entity has started.
    pub(crate) fn start<M: Message>(&mut self, myself: &ActorRef<M>, wrap: fn(Internal) -> M) {
        self.arm(myself.get_cell(), self.passivate_after, wrap);
    }

    /// Notes that a command arrived.
    pub(crate) fn touch(&mut self) {
        self.last_activity = tokio::time::Instant::now();
    }

    /// Handles the idle timer: asks to passivate if idle long enough and `can_stop`, otherwise
    /// re-arms the timer.
    pub(crate) fn idle_check<M: Message>(
        &mut self,
        myself: &ActorRef<M>,
        can_stop: bool,
        wrap: fn(Internal) -> M,
    ) {
        if self.stopping != Stopping::No {
            return;
        }
        let idle = self.last_activity.elapsed();
        if idle >= self.passivate_after && can_stop && self.request_stop(myself, wrap) {
            return;
        }
        let wait = self.passivate_after.saturating_sub(idle).max(Duration::from_millis(10));
        self.arm(myself.get_cell(), wait, wrap);
    }

    /// Asks to passivate now, idle or not (an entity whose work is done).
    pub(crate) fn passivate_now<M: Message>(
        &mut self,
        myself: &ActorRef<M>,
        wrap: fn(Internal) -> M,
    ) {
        if self.stopping == Stopping::No {
            self.request_stop(myself, wrap);
        }
    }

    /// The passivation handshake; on the region's agreement, queues the stop message behind
    /// whatever the mailbox already holds.
    fn request_stop<M: Message>(&mut self, myself: &ActorRef<M>, wrap: fn(Internal) -> M) -> bool {
        if !self.passivation.request(myself.get_id()) {
            return false;
        }
        self.stopping = Stopping::Requested;
        let _ = myself.send_message(wrap(Internal(InternalMsg::Stop)));
        true
    }

    /// Handles the stop message: every earlier command has been handled; stop now if `ready`
    /// (the journal idle and the entity's own work done), else as soon as it is.
    pub(crate) fn stop_when_idle(&mut self, myself: &ActorCell, ready: bool) {
        self.stopping = Stopping::Draining;
        self.after_write(myself, ready);
    }

    /// At the end of every message: finishes a stop that waited until the entity was `ready`.
    pub(crate) fn after_write(&self, myself: &ActorCell, ready: bool) {
        if self.stopping == Stopping::Draining && ready {
            myself.stop(Some("passivated".into()));
        }
    }

    fn arm<M: Message>(&mut self, cell: ActorCell, after: Duration, wrap: fn(Internal) -> M) {
        let timer =
            ractor::time::send_after(after, cell, move || wrap(Internal(InternalMsg::IdleCheck)));
        if let Some(earlier) = self.timer.replace(timer.abort_handle()) {
            earlier.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use ractor::{Actor, ActorProcessingErr, ActorRef};

    use super::*;

    /// An entity that does nothing but arm its idle timer.
    struct Idle;

    #[derive(Debug)]
    struct IdleMsg(#[allow(dead_code)] Internal);

    impl ractor::Message for IdleMsg {}

    impl Actor for Idle {
        type Msg = IdleMsg;
        type State = Lifecycle;
        type Arguments = ();

        async fn pre_start(
            &self,
            myself: ActorRef<IdleMsg>,
            (): (),
        ) -> Result<Lifecycle, ActorProcessingErr> {
            let mut lifecycle =
                Lifecycle::new(Duration::from_secs(120), Passivation::new(|_| true));
            lifecycle.start(&myself, IdleMsg);
            Ok(lifecycle)
        }

        async fn handle(
            &self,
            _: ActorRef<IdleMsg>,
            _: IdleMsg,
            _: &mut Lifecycle,
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    /// A stopped entity's idle timer goes with it: the timer's task held the actor's cell, and
    /// with it the mailbox, for the whole idle period (120 s of every order ever checked out).
    #[tokio::test]
    async fn a_stopped_entity_leaves_no_timer_holding_its_mailbox() {
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        for _ in 0..10 {
            let (actor, handle) = Actor::spawn(None, Idle, ()).await.unwrap();
            actor.stop(None);
            handle.await.unwrap();
        }
        // An aborted task ends when the runtime next gets to it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while metrics.num_alive_tasks() > before && tokio::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        assert_eq!(metrics.num_alive_tasks(), before, "idle timers outlived their entities");
    }
}
