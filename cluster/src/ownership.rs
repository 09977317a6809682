//! Membership and shard ownership: which nodes are in the cluster, and which one holds each shard.
//!
//! Every node writes its record (its addresses and a heartbeat counter) into the store's
//! `cluster_nodes` table once per heartbeat. A member is live while its counter keeps changing, as
//! timed by the reader's own monotonic clock, so node clocks never need to agree. Each shard's
//! desired owner is the live member with the highest rendezvous weight for it, so a join or a
//! leave moves about 1/N of the shards. A shard's lease (in the store, with a fencing epoch) only
//! ever moves by compare-and-set:
//! - the desired owner claims a shard that is free, or whose holder is no longer live;
//! - a holder that is no longer the desired owner hands the shard off: it stops routing to it,
//!   stops its entities after their journal writes, and then releases the lease;
//! - a node that could not renew its heartbeat for half the member TTL stops serving everything
//!   it holds (others take over only after a whole TTL without a beat), and the store fences any
//!   append it still makes with an old epoch; unless its last round saw no other live member:
//!   alone, no one can take its shards, and dropping them would only turn every request away;
//! - a node cut off from most of its peers (the transport's pings) stops beating and serving, so
//!   that the majority takes its shards over.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use storefront_storage::{Lease, StorageError, Store, Table};
use tokio::sync::watch;

use crate::ClusterError;
use crate::metrics::{SHARDS_HANDED_OFF_TOTAL, SHARDS_LOST_TOTAL};

/// How ownership is run.
#[derive(Debug, Clone)]
pub struct OwnershipConfig {
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// Where peers reach this node, if it is in a cluster.
    pub cluster_addr: Option<String>,
    /// Where this node serves HTTP.
    pub http_addr: String,
    /// Shards per kind.
    pub shard_count: u32,
    /// How often the node beats and re-reads membership and leases.
    pub heartbeat: Duration,
    /// A member whose beat has not changed for this long is down.
    pub member_ttl: Duration,
}

/// What the entities of a shard need when the shard leaves this node.
#[async_trait]
pub trait ShardHost: Send + Sync + 'static {
    /// Stops every entity of `shard` after its queued commands and journal writes.
    async fn stop_shard(&self, shard: u32);
    /// `shards` have just been claimed: resume the work left in them (open checkouts).
    async fn shards_started(&self, shards: &[u32]);
}

/// A node as the store records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NodeRecord {
    cluster_addr: Option<String>,
    http_addr: String,
    /// Raised by every beat.
    beat: u64,
    /// Handing its shards off; no shard is assigned to it any more.
    leaving: bool,
}

/// A member's state as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Beating and taking shards.
    Up,
    /// Beating, handing its shards off.
    Leaving,
    /// No beat within the member TTL.
    Down,
}

/// One member of the cluster, for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Its node id.
    pub node_id: String,
    /// Where peers reach it.
    pub cluster_addr: Option<String>,
    /// Where it serves HTTP.
    pub http_addr: String,
    /// Up, leaving or down.
    pub status: MemberStatus,
    /// Shards whose lease it holds.
    pub shards: usize,
    /// Whether this node has seen its beat change (a record seen once may be a dead node's).
    pub beating: bool,
}

/// The cluster as operators see it: `GET /v1/admin/cluster` and `storefront cluster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    /// The node answering (`None` from the shell).
    pub node_id: Option<String>,
    /// Every member.
    pub nodes: Vec<NodeStatus>,
    /// Shards per kind.
    pub shard_count: u32,
    /// Shards held, by node.
    pub shards_by_node: std::collections::BTreeMap<String, usize>,
    /// Shards no node holds (moving).
    pub unowned_shards: usize,
}

/// One member in a [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// Its id.
    pub node_id: String,
    /// Where peers reach it.
    pub addr: Option<String>,
    /// Where it serves HTTP.
    pub http_addr: String,
    /// Up, leaving or down.
    pub status: MemberStatus,
    /// Shards it holds.
    pub shards: usize,
}

impl ClusterView {
    /// The operators' document of this view, as `node_id` (if any) answers it.
    pub fn status(&self, node_id: Option<&str>, shard_count: u32) -> ClusterStatus {
        let mut shards_by_node = std::collections::BTreeMap::new();
        for owner in self.owners.iter().flatten() {
            *shards_by_node.entry(owner.clone()).or_default() += 1;
        }
        ClusterStatus {
            node_id: node_id.map(str::to_owned),
            nodes: self
                .members
                .iter()
                .map(|m| NodeStatus {
                    node_id: m.node_id.clone(),
                    addr: m.cluster_addr.clone(),
                    http_addr: m.http_addr.clone(),
                    status: m.status,
                    shards: m.shards,
                })
                .collect(),
            shard_count,
            shards_by_node,
            unowned_shards: self.owners.iter().filter(|o| o.is_none()).count(),
        }
    }
}

/// The cluster as this node last read it.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Every node with a record, by id.
    pub members: Vec<Member>,
    /// Per shard: its lease holder, if any.
    pub owners: Vec<Option<String>>,
}

/// This node's membership and the shards it holds. Cheap to clone.
#[derive(Clone)]
pub struct Ownership {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership").field("node_id", &self.inner.config.node_id).finish()
    }
}

struct Inner {
    config: OwnershipConfig,
    store: Arc<dyn Store>,
    /// Shard -> the epoch this node holds it at. Only a successful claim by this process adds
    /// a shard; losing it removes it at once, handing it off once its entities have stopped.
    held: RwLock<HashMap<u32, u64>>,
    /// Held shards being handed off: no new command is taken, but the entities still running
    /// finish their journal writes under the lease.
    draining: RwLock<std::collections::HashSet<u32>>,
    view: RwLock<ClusterView>,
    leaving: std::sync::atomic::AtomicBool,
    /// Cut off from most of the cluster (see `transport`): beat no more, serve nothing.
    isolated: std::sync::atomic::AtomicBool,
    /// The peers that answer this node's pings (`None` without a transport: a node alone). Only
    /// they are given shards: a node no one can reach must not be handed any.
    reachable: RwLock<Option<std::collections::HashSet<String>>>,
    /// Told when the reachable peers change: the next round runs at once, so shards move to
    /// a peer as soon as it is reached rather than on the next tick.
    reach_changed: tokio::sync::Notify,
    /// Changes after every round; `leave` waits on it.
    rounds: watch::Sender<u64>,
    /// Set by [`Ownership::stop`]; the loops end on it.
    stop: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// When this node's record was last written.
    last_renewed: std::sync::Mutex<Instant>,
    /// Shards dropped without a handoff whose entities the next round stops.
    to_stop: std::sync::Mutex<Vec<u32>>,
    /// Whether the last round saw no live member but this node.
    alone: std::sync::atomic::AtomicBool,
}

/// What one round remembers for the next.
struct Observed {
    /// node id -> (its last beat seen, when it changed by this node's clock, whether it has
    /// changed since first seen).
    beats: HashMap<String, (u64, Instant, bool)>,
}

/// The members other than `me` that the store shows up (taking shards).
fn candidates_all<'a>(
    members: &'a [(String, NodeRecord, MemberStatus, bool)],
    me: &str,
) -> Vec<&'a str> {
    members
        .iter()
        .filter(|(id, _, status, _)| id != me && *status == MemberStatus::Up)
        .map(|(id, ..)| id.as_str())
        .collect()
}

/// The rendezvous weight of `node` for `shard`: FNV-1a over both, then a 64-bit finalizer so
/// that nearby shards get unrelated weights.
fn weight(node: &str, shard: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain([0]).chain(shard.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The member with the highest weight for `shard`: the node every node agrees should hold it
/// among `members` (the live ones not leaving), once the cluster has settled.
pub fn rendezvous<'a>(members: &[&'a str], shard: u32) -> Option<&'a str> {
    members.iter().copied().max_by_key(|node| (weight(node, shard), *node))
}

impl Ownership {
    /// Ownership for this node over `store`; it holds nothing until [`Ownership::join`].
    pub fn new(store: Arc<dyn Store>, config: OwnershipConfig) -> Self {
        let (rounds, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                config,
                store,
                held: RwLock::new(HashMap::new()),
                draining: RwLock::default(),
                view: RwLock::new(ClusterView::default()),
                leaving: std::sync::atomic::AtomicBool::new(false),
                isolated: std::sync::atomic::AtomicBool::new(false),
                reachable: RwLock::new(None),
                reach_changed: tokio::sync::Notify::new(),
                rounds,
                stop: watch::channel(false).0,
                tasks: std::sync::Mutex::new(Vec::new()),
                last_renewed: std::sync::Mutex::new(Instant::now()),
                to_stop: std::sync::Mutex::new(Vec::new()),
                alone: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Registers this node and claims the shards it can take now; then keeps beating, reading
    /// membership and moving shards while the node lives, telling `host` about every shard that
    /// arrives or leaves. Beats run on their own task, so a slow handoff never delays them.
    pub async fn join(&self, host: Arc<dyn ShardHost>) -> Result<(), ClusterError> {
        let mut beat = 0;
        self.beat(&mut beat).await?;
        let mut observed = Observed { beats: HashMap::new() };
        self.round(&mut observed, host.as_ref()).await?;
        let every = self.inner.config.heartbeat;
        let beats = {
            let (ownership, mut stop) = (self.clone(), self.inner.stop.subscribe());
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await;
                loop {
                    tokio::select! {
                        _ = ticks.tick() => {}
                        _ = stop.wait_for(|stop| *stop) => return,
                    }
                    // Back from a pause longer than half a TTL (a stopped process, a stall):
                    // others may hold our shards by now, so serve none before beating again.
                    if ownership.stale() {
                        ownership.drop_all("not_renewed");
                    }
                    if let Err(e) = ownership.beat(&mut beat).await {
                        tracing::warn!(error = %e, "cannot write this node's heartbeat");
                    }
                }
            })
        };
        let rounds = {
            let (ownership, mut stop) = (self.clone(), self.inner.stop.subscribe());
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await;
                loop {
                    tokio::select! {
                        _ = ticks.tick() => {}
                        _ = ownership.inner.reach_changed.notified() => {}
                        _ = stop.wait_for(|stop| *stop) => return,
                    }
                    if let Err(e) = ownership.round(&mut observed, host.as_ref()).await {
                        tracing::warn!(error = %e, "cannot read the cluster's membership or leases");
                    }
                }
            })
        };
        lock(&self.inner.tasks).extend([beats, rounds]);
        Ok(())
    }

    /// Ends the beats and rounds (the node is stopping). A node that left removes its record,
    /// so the others stop counting it at once.
    pub async fn stop(&self) {
        self.inner.stop.send_replace(true);
        let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        for task in tasks {
            let _ = task.await;
        }
        if self.is_leaving() && self.held_shards() == 0 {
            let id = self.inner.config.node_id.as_bytes();
            if let Err(e) = self.within(self.inner.store.delete(Table::ClusterNodes, id)).await {
                tracing::warn!(error = %e, "cannot remove this node's record");
            }
        }
    }

    fn since_renewed(&self) -> std::time::Duration {
        lock(&self.inner.last_renewed).elapsed()
    }

    /// Not renewed for half a TTL while others are live, who may soon take its shards over.
    fn stale(&self) -> bool {
        self.since_renewed() > self.inner.config.member_ttl / 2
            && !self.inner.alone.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops serving every shard at once, without a handoff (others take over after the TTL);
    /// the next round stops their entities.
    fn drop_all(&self, reason: &'static str) {
        let lost: Vec<u32> = write(&self.inner.held).drain().map(|(shard, _)| shard).collect();
        write(&self.inner.draining).clear();
        if lost.is_empty() {
            return;
        }
        tracing::warn!(shards = lost.len(), reason, "serving no shard");
        metrics::counter!(SHARDS_LOST_TOTAL, "reason" => reason).increment(lost.len() as u64);
        lock(&self.inner.to_stop).extend(lost);
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// Shards per kind.
    pub fn shard_count(&self) -> u32 {
        self.inner.config.shard_count
    }

    /// The epoch at which this node holds `shard`, if it does: its entities' appends are fenced
    /// with it.
    pub fn epoch(&self, shard: u32) -> Option<u64> {
        read(&self.inner.held).get(&shard).copied()
    }

    /// Whether this node takes commands for `shard`: it holds it and is not handing it off.
    pub fn serves(&self, shard: u32) -> bool {
        self.epoch(shard).is_some() && !read(&self.inner.draining).contains(&shard)
    }

    /// The shards this node holds.
    pub fn held_shards(&self) -> usize {
        read(&self.inner.held).len()
    }

    /// The cluster as last read.
    pub fn view(&self) -> ClusterView {
        read(&self.inner.view).clone()
    }

    /// The node that holds `shard`, as last read.
    pub fn owner_of(&self, shard: u32) -> Option<String> {
        read(&self.inner.view).owners.get(shard as usize).cloned().flatten()
    }

    /// Marks this node as cut off from most of the cluster (or not any more). While it is, it
    /// stops beating, so the others see it down and take its shards over, and it serves none.
    pub fn set_isolated(&self, isolated: bool) {
        let was = self.inner.isolated.swap(isolated, std::sync::atomic::Ordering::SeqCst);
        if was != isolated {
            tracing::warn!(isolated, "cluster reachability changed");
        }
    }

    /// The peers that answer this node's pings now (the transport's view).
    pub fn set_reachable(&self, peers: std::collections::HashSet<String>) {
        let changed = write(&self.inner.reachable).replace(peers.clone()) != Some(peers);
        if changed {
            self.inner.reach_changed.notify_one();
        }
    }

    /// Whether this node is handing its shards off (after [`Ownership::leave`]).
    pub fn is_leaving(&self) -> bool {
        self.inner.leaving.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many of the live members the store shows this node reaches, itself included, and
    /// how many there are. A node that reaches no more than half is cut off from the cluster.
    pub fn reach(&self) -> (usize, usize) {
        let me = self.node_id();
        let reachable = read(&self.inner.reachable).clone();
        let view = read(&self.inner.view);
        let live_peers: Vec<&str> = view
            .members
            .iter()
            .filter(|m| m.node_id != me && m.status != MemberStatus::Down)
            .map(|m| m.node_id.as_str())
            .collect();
        let reached =
            live_peers.iter().filter(|id| reachable.as_ref().is_none_or(|r| r.contains(**id)));
        (1 + reached.count(), 1 + live_peers.len())
    }

    /// Whether another member is up (one that could take this node's shards).
    pub fn has_peers(&self) -> bool {
        let me = self.node_id();
        let reachable = read(&self.inner.reachable).clone();
        read(&self.inner.view).members.iter().any(|m| {
            m.node_id != me
                && m.status == MemberStatus::Up
                && reachable.as_ref().is_none_or(|r| r.contains(&m.node_id))
        })
    }

    /// Hands every shard off and stops taking new ones; returns once none is held (or after
    /// `timeout`, with how many are still held).
    pub async fn leave(&self, timeout: Duration) -> usize {
        self.inner.leaving.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut rounds = self.inner.rounds.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let held = self.held_shards();
            if held == 0 {
                return 0;
            }
            match tokio::time::timeout_at(deadline, rounds.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.held_shards(),
            }
        }
    }

    /// Waits until this node has run `count` more rounds (one a heartbeat, as every member's),
    /// or for `count + 2` heartbeats at most (rounds that stall on the store).
    pub async fn rounds_pass(&self, count: u32) {
        let mut rounds = self.inner.rounds.subscribe();
        let _ = tokio::time::timeout(self.inner.config.heartbeat * (count + 2), async {
            for _ in 0..count {
                if rounds.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// `operation`, bounded by two heartbeats: a store that does not answer must not stall the
    /// rounds (they are what stops a cut-off node from serving).
    async fn within<T>(&self, operation: impl Future<Output = T>) -> Result<T, StorageError> {
        tokio::time::timeout(self.inner.config.heartbeat * 2, operation).await.map_err(|_| {
            StorageError::Backend("the store did not answer within two heartbeats".into())
        })
    }

    async fn beat(&self, beat: &mut u64) -> Result<(), StorageError> {
        if self.inner.isolated.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let config = &self.inner.config;
        *beat += 1;
        let record = NodeRecord {
            cluster_addr: config.cluster_addr.clone(),
            http_addr: config.http_addr.clone(),
            beat: *beat,
            leaving: self.inner.leaving.load(std::sync::atomic::Ordering::SeqCst),
        };
        let value = postcard::to_stdvec(&record)
            .map_err(|e| StorageError::Invalid(format!("node record: {e}")))?;
        self.within(self.inner.store.put(Table::ClusterNodes, config.node_id.as_bytes(), &value))
            .await??;
        // Renewed late (paused after the beat task's own check, or during this write): others
        // may hold this node's shards by now. Serve none of them, as that check would have,
        // before the renewal makes this node look current to its rounds.
        if self.stale() {
            self.drop_all("not_renewed");
        }
        *lock(&self.inner.last_renewed) = Instant::now();
        Ok(())
    }

    /// Stops the entities of the shards [`Self::drop_all`] dropped.
    async fn stop_dropped(&self, host: &dyn ShardHost) {
        let dropped = std::mem::take(&mut *lock(&self.inner.to_stop));
        futures::future::join_all(dropped.iter().map(|&shard| host.stop_shard(shard))).await;
    }

    /// One round: read members and leases, then claim, hand off or drop shards.
    async fn round(
        &self,
        observed: &mut Observed,
        host: &dyn ShardHost,
    ) -> Result<(), StorageError> {
        let config = &self.inner.config;
        let me = config.node_id.as_str();
        let now = Instant::now();
        // Cut off from most of the cluster, or not renewed for half a TTL: others may soon
        // take over, so stop serving first (and keep reading the cluster, below, so that the
        // view that decides isolation stays current).
        let isolated = self.inner.isolated.load(std::sync::atomic::Ordering::SeqCst);
        let stale = self.stale();
        if isolated || stale {
            self.drop_all(if isolated { "isolated" } else { "not_renewed" });
        }
        self.stop_dropped(host).await;
        let records = self
            .within(self.inner.store.scan(Table::ClusterNodes, b"", None, usize::MAX))
            .await??;
        let mut members = Vec::with_capacity(records.len());
        for (key, value) in records {
            let (Ok(node_id), Ok(record)) =
                (String::from_utf8(key), postcard::from_bytes::<NodeRecord>(&value))
            else {
                tracing::warn!("skipping an unreadable cluster node record");
                continue;
            };
            let seen = observed.beats.entry(node_id.clone()).or_insert((record.beat, now, false));
            if seen.0 != record.beat {
                *seen = (record.beat, now, true);
            }
            let beating = node_id == me || seen.2;
            let up = node_id == me || now.duration_since(seen.1) < config.member_ttl;
            let status = match (up, record.leaving) {
                (false, _) => MemberStatus::Down,
                (true, true) => MemberStatus::Leaving,
                (true, false) => MemberStatus::Up,
            };
            members.push((node_id, record, status, beating));
        }
        observed.beats.retain(|id, _| members.iter().any(|(m, ..)| m == id));
        let alone =
            members.iter().all(|(id, _, status, _)| id == me || *status == MemberStatus::Down);
        self.inner.alone.store(alone, std::sync::atomic::Ordering::SeqCst);
        if isolated || stale {
            let leases = self.within(self.inner.store.leases()).await??;
            self.publish(members, leases.into_iter().map(|l| (l.shard, l)).collect());
            return Ok(());
        }
        // Shards go to members that are up and that this node reaches (itself always).
        let reachable = read(&self.inner.reachable).clone();
        let candidates: Vec<&str> = members
            .iter()
            .filter(|(_, _, status, _)| *status == MemberStatus::Up)
            .map(|(id, ..)| id.as_str())
            .filter(|id| *id == me || reachable.as_ref().is_none_or(|r| r.contains(*id)))
            .collect();
        let live: Vec<&str> = members
            .iter()
            .filter(|(_, _, status, _)| *status != MemberStatus::Down)
            .map(|(id, ..)| id.as_str())
            .collect();
        let mut leases: HashMap<u32, Lease> = self
            .within(self.inner.store.leases())
            .await??
            .into_iter()
            .map(|l| (l.shard, l))
            .collect();
        // Paused while reading (a stopped process, a stall): what was read may already show
        // others holding our shards. Stop serving every shard first, as at a round's start,
        // rather than lose them one by one.
        if self.stale() {
            self.drop_all("not_renewed");
            self.stop_dropped(host).await;
            self.publish(members, leases);
            return Ok(());
        }

        // Claim only as part of the cluster: reaching most of the members the store shows up
        // (records just seen count too), so a node that cannot talk to its peers (a wrong
        // certificate, a partition, its first round before any session) takes nothing.
        let up_peers: Vec<&str> = candidates_all(&members, me);
        let reached = up_peers
            .iter()
            .filter(|id| reachable.as_ref().is_none_or(|r| r.contains(**id)))
            .count();
        let may_claim = 2 * (reached + 1) > up_peers.len() + 1;
        let mut claims = Vec::new();
        let mut handoffs = Vec::new();
        let mut lost = Vec::new();
        let mut releases = Vec::new();
        for shard in 0..config.shard_count {
            let lease = leases.get(&shard);
            let (owner, epoch) = lease.map_or((None, 0), |l| (l.owner.as_deref(), l.epoch));
            let desired = rendezvous(&candidates, shard);
            let held = self.epoch(shard);
            if held.is_some() && (owner != Some(me) || held != Some(epoch)) {
                lost.push(shard);
            } else if held.is_some() {
                if desired != Some(me) {
                    handoffs.push((shard, epoch));
                }
                continue;
            }
            let holder_live = owner.is_some_and(|o| o != me && live.contains(&o));
            if desired == Some(me) && !holder_live {
                if may_claim {
                    claims.push((shard, epoch));
                }
            } else if owner == Some(me) && desired != Some(me) {
                // Ours in the store but not held (a release or a claim whose answer was lost):
                // let it go, or no one else ever takes it.
                releases.push((shard, epoch));
            }
        }
        for &shard in &lost {
            write(&self.inner.held).remove(&shard);
            tracing::warn!(shard, "shard lease lost");
            metrics::counter!(SHARDS_LOST_TOTAL, "reason" => "lease_lost").increment(1);
        }
        futures::future::join_all(lost.iter().map(|&shard| host.stop_shard(shard))).await;
        // Handoffs: take no new command for any of them, stop their entities together, then
        // release each lease.
        for &(shard, _) in &handoffs {
            write(&self.inner.draining).insert(shard);
        }
        futures::future::join_all(handoffs.iter().map(|&(shard, _)| host.stop_shard(shard))).await;
        for &(shard, _) in &handoffs {
            write(&self.inner.held).remove(&shard);
            write(&self.inner.draining).remove(&shard);
            tracing::info!(shard, "shard handed off");
            metrics::counter!(SHARDS_HANDED_OFF_TOTAL).increment(1);
        }
        let store = &self.inner.store;
        let letting_go: Vec<(u32, u64)> = handoffs.iter().chain(&releases).copied().collect();
        let released = self
            .within(futures::future::join_all(
                letting_go.iter().map(|&(shard, epoch)| store.set_lease(shard, epoch, None)),
            ))
            .await?;
        for (&(shard, epoch), outcome) in letting_go.iter().zip(released) {
            if outcome? {
                leases.insert(shard, Lease { shard, owner: None, epoch: epoch + 1 });
            }
        }
        let outcomes = self
            .within(futures::future::join_all(
                claims.iter().map(|&(shard, epoch)| store.set_lease(shard, epoch, Some(me))),
            ))
            // A claim whose answer is lost may have been made: the next round sees the lease
            // with this node's id and an epoch it does not hold, and claims it again.
            .await?;
        let mut started = Vec::new();
        for (&(shard, epoch), outcome) in claims.iter().zip(outcomes) {
            if outcome? {
                write(&self.inner.held).insert(shard, epoch + 1);
                leases.insert(shard, Lease { shard, owner: Some(me.to_owned()), epoch: epoch + 1 });
                started.push(shard);
            }
        }
        if !started.is_empty() {
            tracing::info!(shards = started.len(), "shards claimed");
            host.shards_started(&started).await;
        }

        self.publish(members, leases);
        Ok(())
    }

    /// Makes `members` and `leases` the view the node answers from.
    fn publish(
        &self,
        members: Vec<(String, NodeRecord, MemberStatus, bool)>,
        leases: HashMap<u32, Lease>,
    ) {
        let owners: Vec<Option<String>> = (0..self.inner.config.shard_count)
            .map(|shard| leases.get(&shard).and_then(|l| l.owner.clone()))
            .collect();
        let view = ClusterView {
            members: members
                .into_iter()
                .map(|(node_id, record, status, beating)| Member {
                    shards: owners
                        .iter()
                        .filter(|o| o.as_deref() == Some(node_id.as_str()))
                        .count(),
                    node_id,
                    cluster_addr: record.cluster_addr,
                    http_addr: record.http_addr,
                    status,
                    beating,
                })
                .collect(),
            owners,
        };
        *write(&self.inner.view) = view;
        self.inner.rounds.send_modify(|n| *n += 1);
    }
}

/// The cluster as the store shows it, for a process that is not a member (`storefront cluster
/// status`): node records are read twice, `config.heartbeat * 2` apart, and a node whose beat did
/// not change in between counts as down.
pub async fn observe(
    store: &dyn Store,
    config: &OwnershipConfig,
) -> Result<ClusterView, StorageError> {
    let read_records = || async {
        let rows = store.scan(Table::ClusterNodes, b"", None, usize::MAX).await?;
        Ok::<_, StorageError>(
            rows.into_iter()
                .filter_map(|(key, value)| {
                    Some((
                        String::from_utf8(key).ok()?,
                        postcard::from_bytes::<NodeRecord>(&value).ok()?,
                    ))
                })
                .collect::<Vec<_>>(),
        )
    };
    let first: HashMap<String, u64> =
        read_records().await?.into_iter().map(|(id, r)| (id, r.beat)).collect();
    tokio::time::sleep(config.heartbeat * 2).await;
    let records = read_records().await?;
    let leases: HashMap<u32, Lease> =
        store.leases().await?.into_iter().map(|l| (l.shard, l)).collect();
    let owners: Vec<Option<String>> = (0..config.shard_count)
        .map(|shard| leases.get(&shard).and_then(|l| l.owner.clone()))
        .collect();
    let members = records
        .into_iter()
        .map(|(node_id, record)| {
            let beating = first.get(&node_id).is_some_and(|&beat| beat != record.beat);
            Member {
                shards: owners.iter().filter(|o| o.as_deref() == Some(node_id.as_str())).count(),
                status: match (beating, record.leaving) {
                    (false, _) => MemberStatus::Down,
                    (true, true) => MemberStatus::Leaving,
                    (true, false) => MemberStatus::Up,
                },
                node_id,
                cluster_addr: record.cluster_addr,
                http_addr: record.http_addr,
                beating,
            }
        })
        .collect();
    Ok(ClusterView { members, owners })
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only ever held for an assignment; a poisoned lock still holds a consistent value.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // Writers hold these locks only for plain assignments; a poisoned lock still holds a
    // consistent value.
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_moves_about_one_in_n_shards_on_a_join() {
        let three = ["node-1", "node-2", "node-3"];
        let four = ["node-1", "node-2", "node-3", "node-4"];
        let shards = 4096;
        let mut counts = HashMap::new();
        let mut moved = 0;
        for shard in 0..shards {
            let before = rendezvous(&three, shard).unwrap();
            let after = rendezvous(&four, shard).unwrap();
            *counts.entry(before).or_insert(0) += 1;
            if before != after {
                assert_eq!(after, "node-4", "a join only moves shards to the new node");
                moved += 1;
            }
        }
        // 1/4 of the shards move, within a few percent; each of three nodes had about 1/3.
        assert!((900..1150).contains(&moved), "{moved} of {shards} moved");
        assert!(counts.values().all(|&c| (1250..1480).contains(&c)), "{counts:?}");
        assert_eq!(rendezvous(&[], 1), None);
    }
}
