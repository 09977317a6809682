//! Commands between nodes: the region host every node exposes, and the links that carry batches
//! of calls and answers ([`crate::call`]) to it over `ractor_cluster`.
//!
//! Entity actors are local only. Each node runs one remotely addressable [`RegionHost`] per entity
//! kind (in the process group `storefront-host/<kind>/<node id>`), which executes the commands it
//! receives against its own region of that kind. Commands and answers travel as one-way casts, each a batch: a link takes every
//! command waiting for its peer and sends them as one message, and the host sends answers back the
//! same way, so a slow checkout never holds up the answers of fast reads. Every command carries an
//! id (unique per sending process, kept when the command is sent again) and its caller's trace
//! context ([`storefront_actors::trace`]), under which the host runs it; the host remembers recent
//! answers by (sender, id), so a command that arrives twice is applied once. A command waits for
//! its answer at most its deadline, or until its session closes: after that its outcome is unknown
//! to the caller. At most [`MAX_IN_FLIGHT`] commands wait per link.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::Serialize;
use storefront_actors::EntityKind;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;

use storefront_actors::{StockFeed, StockUpdate};

use crate::call::{Answer, Call, Execute, Refusal, StockNotice};
use storefront_actors::trace;

/// Commands a link sends in one message at most.
const MAX_BATCH: usize = 512;
/// Commands waiting for their answer per link at most; more wait for room (until their deadline).
pub(crate) const MAX_IN_FLIGHT: usize = 16_384;
/// How long a host remembers an answer for a repeated command, and how many at most.
const REMEMBER_ANSWERS: Duration = Duration::from_secs(60);
const REMEMBER_AT_MOST: usize = 100_000;

/// The messages of a [`RegionHost`]: the only ones that cross nodes.
#[derive(Debug, RactorClusterMessage)]
pub(crate) enum HostMsg {
    /// Commands from another node: `postcard((sender node id, [(command id, Call, W3C
    /// traceparent of the caller's span, if traced)]))`.
    Commands(Vec<u8>),
    /// Answers to this node's commands: `postcard([(command id, Result<Answer, Refusal>)])`.
    Answers(Vec<u8>),
    /// A liveness probe; answers this node's id.
    #[rpc]
    Ping(RpcReplyPort<String>),
    /// Stock levels of SKUs the sender holds: `postcard([StockNotice])`.
    Stock(Vec<u8>),
}

/// The process group of `node`'s host for `kind`.
pub(crate) fn host_group(kind: EntityKind, node: &str) -> String {
    format!("storefront-host/{kind}/{node}")
}

/// The remotely addressable actor of a node for one entity kind: runs commands from peers against
/// its region and hands answers (to any kind's commands) to this node's waiting callers.
pub(crate) struct RegionHost;

pub(crate) struct HostArgs {
    pub(crate) kind: EntityKind,
    pub(crate) node_id: String,
    pub(crate) links: Arc<Links>,
    pub(crate) local: Arc<dyn Execute>,
    pub(crate) feed: StockFeed,
}

pub(crate) struct HostState {
    links: Arc<Links>,
    local: Arc<dyn Execute>,
    feed: StockFeed,
    answered: Arc<Mutex<Answered>>,
}

/// Recent answers by (sender, command id), so a repeated command is applied once.
#[derive(Default)]
struct Answered {
    /// Each with when it began, which names its entry in `order`.
    by_id: HashMap<(String, u64), (Instant, AnswerSlot)>,
    order: std::collections::VecDeque<(Instant, (String, u64))>,
}

enum AnswerSlot {
    Running,
    Done(Box<Result<Answer, Refusal>>),
}

/// What a host knows of a command it was sent.
#[derive(Debug, PartialEq)]
enum Seen {
    /// Not seen (or forgotten): run it.
    New,
    /// Running: its answer will go to the same waiting caller.
    Running,
    /// Answered before: send the same answer again.
    Answered(Box<Result<Answer, Refusal>>),
}

impl Answered {
    /// Looks up a command by (sender, id), marking a new one as running.
    fn begin(&mut self, key: &(String, u64), now: Instant) -> Seen {
        self.forget_old(now);
        match self.by_id.get(key) {
            Some((_, AnswerSlot::Running)) => Seen::Running,
            Some((_, AnswerSlot::Done(answer))) => Seen::Answered(answer.clone()),
            None => {
                self.by_id.insert(key.clone(), (now, AnswerSlot::Running));
                self.order.push_back((now, key.clone()));
                Seen::New
            }
        }
    }

    /// Records the answer of a command that ran. A refusal is never kept: it says nothing was
    /// done here (or that the outcome is unknown), and the same command sent again may well run
    /// (the node may have claimed the shard since), so a repeat runs rather than replays it.
    fn finish(&mut self, key: &(String, u64), answer: &Result<Answer, Refusal>) {
        match answer {
            Ok(_) | Err(Refusal::Domain(_)) => {
                if let Some((_, slot)) = self.by_id.get_mut(key) {
                    *slot = AnswerSlot::Done(Box::new(answer.clone()));
                }
            }
            Err(Refusal::NotOwner | Refusal::Unreachable(_) | Refusal::Unknown(_)) => {
                self.by_id.remove(key);
            }
        }
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front() {
            if now.duration_since(*at) < REMEMBER_ANSWERS && self.order.len() <= REMEMBER_AT_MOST {
                break;
            }
            // A refused command that ran again has a newer entry: that one stays.
            if self.by_id.get(key).is_some_and(|(began, _)| began == at) {
                self.by_id.remove(key);
            }
            self.order.pop_front();
        }
    }
}

impl Actor for RegionHost {
    type Msg = HostMsg;
    type State = HostState;
    type Arguments = HostArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HostMsg>,
        args: HostArgs,
    ) -> Result<HostState, ActorProcessingErr> {
        ractor::pg::join(host_group(args.kind, &args.node_id), vec![myself.get_cell()]);
        Ok(HostState {
            links: args.links,
            local: args.local,
            feed: args.feed,
            answered: Arc::default(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<HostMsg>,
        message: HostMsg,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HostMsg::Commands(bytes) => {
                let Ok((from, commands)) =
                    postcard::from_bytes::<(String, Vec<(u64, Call, Option<String>)>)>(&bytes)
                else {
                    tracing::warn!("dropping an unreadable batch of commands");
                    return Ok(());
                };
                for (id, call, traceparent) in commands {
                    let key = (from.clone(), id);
                    match lock(&state.answered).begin(&key, Instant::now()) {
                        Seen::Running => continue,
                        Seen::Answered(answer) => {
                            state.links.answer(&from, id, *answer);
                            continue;
                        }
                        Seen::New => {}
                    }
                    let (local, links, answered) =
                        (state.local.clone(), state.links.clone(), state.answered.clone());
                    let span = tracing::info_span!(
                        target: trace::TARGET,
                        "cluster.call",
                        otel.name = %format!("{} call from {from}", call.target().0),
                        otel.kind = "server",
                        entity.kind = %call.target().0,
                        entity.id = call.target().1,
                        peer.node = %from,
                    );
                    if let Some(traceparent) = &traceparent {
                        trace::continue_trace(&span, traceparent);
                    }
                    tokio::spawn(
                        async move {
                            let answer = local.execute(call).await;
                            lock(&answered).finish(&key, &answer);
                            links.answer(&key.0, key.1, answer);
                        }
                        .instrument(span),
                    );
                }
            }
            HostMsg::Answers(bytes) => {
                match postcard::from_bytes::<Vec<(u64, Result<Answer, Refusal>)>>(&bytes) {
                    Ok(answers) => state.links.deliver(answers),
                    Err(_) => tracing::warn!("dropping an unreadable batch of answers"),
                }
            }
            HostMsg::Ping(reply) => {
                let _ = reply.send(state.links.node_id.clone());
            }
            HostMsg::Stock(bytes) => match postcard::from_bytes::<Vec<StockNotice>>(&bytes) {
                Ok(notices) => {
                    for StockNotice { sku, levels, seq } in notices {
                        state.feed.publish_remote(StockUpdate {
                            sku: sku.into(),
                            levels,
                            seq,
                            from_peer: true,
                        });
                    }
                }
                Err(_) => tracing::warn!("dropping an unreadable batch of stock levels"),
            },
        }
        Ok(())
    }
}

/// Something to send to a peer.
enum Outgoing {
    /// A command, with the caller's trace context.
    Command(u64, Call, Option<String>),
    Answer(u64, Result<Answer, Refusal>),
}

/// This node's links to its peers, and its callers waiting for answers.
pub(crate) struct Links {
    node_id: String,
    next_id: AtomicU64,
    peers: Mutex<HashMap<String, Peer>>,
    /// Callers waiting for an answer: command id -> (the node asked, the caller).
    waiting: Mutex<HashMap<u64, (String, AnswerPort)>>,
}

/// Where a waiting caller gets its answer.
type AnswerPort = oneshot::Sender<Result<Answer, Refusal>>;

/// Removes a caller's entry when it stops waiting (answered, timed out or cancelled).
struct Waiting<'a> {
    links: &'a Links,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(&self.links.waiting).remove(&self.id);
    }
}

struct Peer {
    queue: mpsc::UnboundedSender<Outgoing>,
    room: Arc<Semaphore>,
}

impl Links {
    pub(crate) fn new(node_id: String) -> Arc<Self> {
        // A per-process random start keeps ids unique across restarts of a node.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Arc::new(Self {
            node_id,
            next_id: AtomicU64::new(start),
            peers: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
        })
    }

    /// A fresh command id: one per call, kept across its retries.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `call` (command `id`) to `node`'s host and waits for its answer until `deadline`.
    pub(crate) async fn call(
        self: &Arc<Self>,
        node: &str,
        id: u64,
        call: Call,
        deadline: tokio::time::Instant,
    ) -> Result<Answer, Refusal> {
        if host_of(call.target().0, node).is_none() {
            return Err(Refusal::Unreachable(format!("no session to node {node}")));
        }
        let (queue, room) = self.peer(node);
        let permit = match tokio::time::timeout_at(deadline, room.acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(Refusal::Unreachable(format!("the link to node {node} is full"))),
        };
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id, (node.to_owned(), tx));
        let _waiting = Waiting { links: self, id };
        if queue.send(Outgoing::Command(id, call, trace::traceparent())).is_err() {
            return Err(Refusal::Unreachable(format!("the link to node {node} is closed")));
        }
        let answer = tokio::time::timeout_at(deadline, rx).await;
        drop(permit);
        match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Refusal::Unknown(format!("the session to node {node} closed"))),
            Err(_) => Err(Refusal::Unknown(format!("node {node} did not answer in time"))),
        }
    }

    /// The session to `node` is gone: its waiting callers learn it now (outcome unknown)
    /// instead of at their deadlines.
    pub(crate) fn fail_node(&self, node: &str) {
        lock(&self.waiting).retain(|_, (asked, _)| asked != node);
    }

    /// Queues an answer for a command `node` sent.
    fn answer(self: &Arc<Self>, node: &str, id: u64, answer: Result<Answer, Refusal>) {
        let (queue, _) = self.peer(node);
        let _ = queue.send(Outgoing::Answer(id, answer));
    }

    /// Hands answers from a peer to the callers waiting for them.
    fn deliver(&self, answers: Vec<(u64, Result<Answer, Refusal>)>) {
        let mut waiting = lock(&self.waiting);
        for (id, answer) in answers {
            if let Some((_, caller)) = waiting.remove(&id) {
                let _ = caller.send(answer);
            }
        }
    }

    /// The queue to `node`, starting its sender task on first use.
    fn peer(self: &Arc<Self>, node: &str) -> (mpsc::UnboundedSender<Outgoing>, Arc<Semaphore>) {
        let mut peers = lock(&self.peers);
        if let Some(peer) = peers.get(node).filter(|p| !p.queue.is_closed()) {
            return (peer.queue.clone(), peer.room.clone());
        }
        let (queue, outgoing) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        peers.insert(node.to_owned(), Peer { queue: queue.clone(), room: room.clone() });
        tokio::spawn(send_to(self.node_id.clone(), node.to_owned(), outgoing));
        (queue, room)
    }
}

/// The ref of `node`'s host for `kind`, if a session to it is up.
fn host_of(kind: EntityKind, node: &str) -> Option<ActorRef<HostMsg>> {
    ractor::pg::get_members(&host_group(kind, node)).into_iter().next().map(ActorRef::from)
}

/// Casts `message` (built from the encoded `value`) to `node`'s host for `kind`; without a
/// session it is dropped, and whoever waits for it times out.
pub(crate) fn cast_to(
    kind: EntityKind,
    node: &str,
    value: &impl Serialize,
    message: fn(Vec<u8>) -> HostMsg,
) {
    let Some(host) = host_of(kind, node) else {
        tracing::debug!(node, %kind, "no session: dropping a batch");
        return;
    };
    match postcard::to_stdvec(value) {
        Ok(bytes) => {
            let _ = host.cast(message(bytes));
        }
        Err(e) => tracing::error!(error = %e, "cannot encode a batch"),
    }
}

/// Sends everything queued for `node`, as batches, while the link lives: the commands for each
/// kind to that kind's host, the answers to any one of them.
async fn send_to(me: String, node: String, mut outgoing: mpsc::UnboundedReceiver<Outgoing>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while outgoing.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut commands: [Vec<(u64, Call, Option<String>)>; EntityKind::ALL.len()] =
            Default::default();
        let mut answers = Vec::new();
        for item in batch.drain(..) {
            match item {
                Outgoing::Command(id, call, traceparent) => {
                    commands[call.target().0.index()].push((id, call, traceparent));
                }
                Outgoing::Answer(id, answer) => answers.push((id, answer)),
            }
        }
        for (kind, commands) in EntityKind::ALL.into_iter().zip(&commands) {
            if !commands.is_empty() {
                cast_to(kind, &node, &(&me, commands), HostMsg::Commands);
            }
        }
        if !answers.is_empty() {
            cast_to(EntityKind::Sku, &node, &answers, HostMsg::Answers);
        }
    }
}

/// Whether `node`'s host answers a ping within `timeout`.
pub(crate) async fn ping(node: &str, timeout: Duration) -> bool {
    let Some(host) = host_of(EntityKind::Sku, node) else { return false };
    matches!(
        host.call(HostMsg::Ping, Some(timeout)).await,
        Ok(ractor::rpc::CallResult::Success(ref id)) if id == node
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Held only for map updates that do not panic; a poisoned lock still holds a usable map.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use storefront_actors::{DomainError, StockLevels};

    use super::*;

    #[test]
    fn a_refusal_is_never_replayed_to_a_repeated_command() {
        let mut answered = Answered::default();
        let key = ("node-a".to_string(), 7);
        let now = Instant::now();
        assert_eq!(answered.begin(&key, now), Seen::New);
        answered.finish(&key, &Err(Refusal::NotOwner));
        // The node has claimed the shard since: the caller's repeat runs, and its answer is kept.
        assert_eq!(answered.begin(&key, now), Seen::New);
        let levels = Answer::Levels(StockLevels { on_hand: 3, reserved: 1, available: 2, sold: 0 });
        answered.finish(&key, &Ok(levels.clone()));
        assert_eq!(answered.begin(&key, now), Seen::Answered(Box::new(Ok(levels))));

        for (id, refusal) in
            [(8, Refusal::Unreachable("x".into())), (9, Refusal::Unknown("y".into()))]
        {
            let key = ("node-a".to_string(), id);
            assert_eq!(answered.begin(&key, now), Seen::New);
            answered.finish(&key, &Err(refusal));
            assert_eq!(answered.begin(&key, now), Seen::New, "a refusal was replayed");
            answered.finish(
                &key,
                &Ok(Answer::Levels(StockLevels { on_hand: 3, reserved: 1, available: 2, sold: 0 })),
            );
        }
    }

    #[test]
    fn an_entitys_error_is_its_answer_and_is_replayed() {
        let mut answered = Answered::default();
        let key = ("node-a".to_string(), 9);
        let now = Instant::now();
        assert_eq!(answered.begin(&key, now), Seen::New);
        let error = Err(Refusal::Domain(DomainError::UnknownCurrency("XYZ".into())));
        answered.finish(&key, &error);
        assert_eq!(answered.begin(&key, now), Seen::Answered(Box::new(error)));
    }
}
