//! The three regions of a node, wired together, and the typed calls the edges use.
//!
//! Every call is routed by its entity's shard: to this node's region when this node holds the
//! shard, to the holder's region host (through [`Links`]) when another node does, and while the
//! shard is moving (no holder yet, or the holder answers that it no longer holds it) the call is
//! retried with back-off until its deadline, not failed. A write whose outcome is unknown (sent,
//! no answer) is never sent again by the node; a read is.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use storefront_actors::cart::{CartCommand, CartView};
use storefront_actors::order::{OrderView, PlaceOrder};
use storefront_actors::trace;
use storefront_actors::{
    CartActor, CartArgs, CartMsg, Clock, DomainError, EntityKind, EntitySettings, OrderActor,
    OrderArgs, OrderMsg, PaymentGateway, SkuStockActor, SkuStockArgs, SkuStockMsg, StockCommand,
    StockFeed, StockLevels, StockPort,
};
use storefront_storage::{KeyedWrite, Store, Table};

use crate::call::{Answer, Call, CartCall, Execute, OrderCall, Refusal, SkuCall};
use crate::fenced::FencedStore;
use crate::remote::Links;
use crate::transport::{Transport, TransportConfig};
use crate::{ClusterError, Ownership, OwnershipConfig, ShardHost, ShardRegion, shard_of};

/// How a node's regions are set up.
#[derive(Debug, Clone)]
pub struct RegionsConfig {
    /// Shards per kind.
    pub shard_count: u32,
    /// Entity settings.
    pub settings: EntitySettings,
    /// How long one command to an entity may take before its outcome counts as unknown.
    pub call_timeout: Duration,
    /// Where SKU actors publish their durable level changes.
    pub stock_feed: StockFeed,
    /// Membership and shard leases: a node serves only the shards it holds, and its entities'
    /// appends are fenced by them. `None`: this process owns every shard, unfenced (tests and
    /// benchmarks of the engine alone).
    pub cluster: Option<OwnershipConfig>,
    /// Sessions to peers (with `cluster`): commands for shards other nodes hold go there.
    /// `None`: a node alone, reachable by no peer.
    pub transport: Option<TransportConfig>,
}

impl Default for RegionsConfig {
    fn default() -> Self {
        Self {
            shard_count: 256,
            settings: EntitySettings::default(),
            call_timeout: Duration::from_secs(10),
            stock_feed: StockFeed::default(),
            cluster: None,
            transport: None,
        }
    }
}

/// The outcome of a checkout within the caller's wait.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Checkout {
    /// The saga ended (confirmed or failed).
    Ended(OrderView),
    /// Still running after the wait; poll the order.
    Pending {
        /// The order to poll.
        order_id: String,
    },
}

/// The SKU, cart and order regions of one node.
#[derive(Debug, Clone)]
pub struct Regions {
    skus: ShardRegion<SkuStockActor>,
    carts: ShardRegion<CartActor>,
    orders: ShardRegion<OrderActor>,
    store: Arc<dyn Store>,
    router: Router,
    transport: Arc<tokio::sync::Mutex<Option<Transport>>>,
    call_timeout: Duration,
}

/// Where a call goes: this node's regions, or the holder of the entity's shard.
#[derive(Clone)]
struct Router {
    ownership: Option<Ownership>,
    links: Option<Arc<Links>>,
    shard_count: u32,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("ownership", &self.ownership).finish_non_exhaustive()
    }
}

/// The longest pause between two attempts to reach a moving shard.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Time a forwarded call gets beyond its own wait, for the trip there and back.
const TRANSIT: Duration = Duration::from_secs(2);

impl Router {
    /// Whether this node runs calls for the shard of (`kind`, `id`) itself.
    fn is_local(&self, kind: EntityKind, id: &str) -> bool {
        self.ownership.as_ref().is_none_or(|o| o.serves(shard_of(kind, id, self.shard_count)))
    }

    /// Runs `call` where its entity lives, retrying while its shard moves, until `timeout`.
    async fn route(
        &self,
        local: &dyn Execute,
        call: Call,
        timeout: Duration,
    ) -> Result<Answer, DomainError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        let command_id = self.links.as_ref().map_or(0, |links| links.next_id());
        let mut call = call;
        loop {
            let (kind, id) = call.target();
            let outcome = if self.is_local(kind, id) {
                local.execute(call.clone()).await
            } else {
                let shard = shard_of(kind, id, self.shard_count);
                // While this node hands the shard off, the lease still names it: wait.
                let owner = self
                    .ownership
                    .as_ref()
                    .and_then(|o| o.owner_of(shard).filter(|owner| owner != o.node_id()));
                match (owner, &self.links) {
                    (Some(owner), Some(links)) => {
                        metrics::counter!(crate::metrics::FORWARDED_CALLS_TOTAL, "kind" => kind.as_str())
                            .increment(1);
                        // A waiting call gets what is left of its wait, less the trip.
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        call.limit_wait(left.saturating_sub(TRANSIT));
                        links.call(&owner, command_id, call.clone(), deadline).await
                    }
                    _ => Err(Refusal::NotOwner),
                }
            };
            match outcome {
                Ok(answer) => return Ok(answer),
                Err(Refusal::Domain(err)) => return Err(err),
                Err(Refusal::Unknown(why)) if !call.is_read() => {
                    return Err(DomainError::Unavailable(why));
                }
                Err(refusal) => {
                    if tokio::time::Instant::now() + pause >= deadline {
                        let (kind, id) = call.target();
                        return Err(DomainError::Unavailable(format!(
                            "{kind} {id} cannot be reached now ({refusal:?})"
                        )));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
            }
        }
    }
}

fn refusal(err: ClusterError) -> Refusal {
    match err {
        ClusterError::NotOwner { .. } => Refusal::NotOwner,
        other => Refusal::Domain(other.into()),
    }
}

/// An entity's error answer; `Moved` (its shard left while the command waited) is sent again.
fn domain(err: DomainError) -> Refusal {
    match err {
        DomainError::Moved(_) => Refusal::NotOwner,
        other => Refusal::Domain(other),
    }
}

/// The tables a checkout writes with its order's placement: its idempotency claim, nothing else.
/// A checkout that arrives (from a peer, say) with other writes is refused whole.
fn checkout_writes(with: &[KeyedWrite]) -> Result<(), DomainError> {
    match with.iter().find(|write| write.table != Table::IdempotencyKeys) {
        None => Ok(()),
        Some(write) => Err(DomainError::Invalid {
            field: "with".into(),
            reason: format!("a checkout writes no {} table", write.table.name()),
        }),
    }
}

/// Whether this node serves `shard` now: it holds the shard's lease (always, unfenced).
fn serving(ownership: &Option<Ownership>) -> impl Fn(u32) -> bool + Send + Sync + 'static {
    let ownership = ownership.clone();
    move |shard| ownership.as_ref().is_none_or(|o| o.serves(shard))
}

/// Refuses a command for an entity whose shard this node does not hold.
fn check_held<A>(
    ownership: Option<&Ownership>,
    region: &ShardRegion<A>,
    id: &str,
) -> Result<(), ClusterError>
where
    A: ractor::Actor + Default,
    A::Msg: storefront_actors::EntityMsg,
{
    let Some(ownership) = ownership else { return Ok(()) };
    let shard = region.shard(id);
    if ownership.serves(shard) {
        Ok(())
    } else {
        Err(ClusterError::NotOwner { kind: region.kind(), id: id.to_owned(), shard })
    }
}

/// The saga's way to SKUs: routed like every other call.
#[derive(Debug)]
struct SkuPort {
    skus: ShardRegion<SkuStockActor>,
    router: Router,
    timeout: Duration,
}

#[async_trait]
impl Execute for SkuPort {
    async fn execute(&self, call: Call) -> Result<Answer, Refusal> {
        let Call::Sku(SkuCall::Command { sku, command }) = call else {
            return Err(Refusal::Domain(DomainError::Unavailable("not a stock command".into())));
        };
        check_held(self.router.ownership.as_ref(), &self.skus, &sku).map_err(refusal)?;
        let levels = self
            .skus
            .call(&sku, |reply| SkuStockMsg::Command(command, reply), self.timeout)
            .await
            .map_err(refusal)?;
        levels.map(Answer::Levels).map_err(domain)
    }
}

#[async_trait]
impl StockPort for SkuPort {
    async fn stock(&self, sku: &str, command: StockCommand) -> Result<StockLevels, DomainError> {
        let call = Call::Sku(SkuCall::Command { sku: sku.to_owned(), command });
        match self.router.route(self, call, self.timeout).await? {
            Answer::Levels(levels) => Ok(levels),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(answer: &Answer) -> DomainError {
    DomainError::Unavailable(format!("unexpected answer {answer:?}"))
}

impl Regions {
    /// Starts the three regions over `store`.
    pub async fn start(
        store: Arc<dyn Store>,
        gateway: Arc<dyn PaymentGateway>,
        clock: Clock,
        config: RegionsConfig,
    ) -> Result<Self, ClusterError> {
        let RegionsConfig { shard_count, settings, call_timeout, stock_feed, cluster, transport } =
            config;
        let ownership = cluster.map(|config| Ownership::new(store.clone(), config));
        let links = match (&ownership, &transport) {
            (Some(ownership), Some(_)) => Some(Links::new(ownership.node_id().to_owned())),
            _ => None,
        };
        let router = Router { ownership: ownership.clone(), links: links.clone(), shard_count };
        // Entities write through the fenced store; the node's own tables do not need it.
        let entity_store: Arc<dyn Store> = match &ownership {
            Some(ownership) => Arc::new(FencedStore::new(store.clone(), ownership.clone())),
            None => store.clone(),
        };
        let peers_feed = stock_feed.clone();
        let skus = {
            let (store, settings) = (entity_store.clone(), settings.clone());
            ShardRegion::<SkuStockActor>::start(
                EntityKind::Sku,
                shard_count,
                move |sku, passivation| SkuStockArgs {
                    sku: sku.to_owned(),
                    store: store.clone(),
                    clock,
                    settings: settings.clone(),
                    passivation,
                    feed: stock_feed.clone(),
                },
                serving(&ownership),
            )
            .await?
        };
        let carts = {
            let (store, settings) = (entity_store.clone(), settings.clone());
            ShardRegion::<CartActor>::start(
                EntityKind::Cart,
                shard_count,
                move |cart_id, passivation| CartArgs {
                    cart_id: cart_id.to_owned(),
                    store: store.clone(),
                    clock,
                    settings: settings.clone(),
                    passivation,
                },
                serving(&ownership),
            )
            .await?
        };
        let stock: Arc<dyn StockPort> =
            Arc::new(SkuPort { skus: skus.clone(), router: router.clone(), timeout: call_timeout });
        let orders = {
            let store = entity_store;
            ShardRegion::<OrderActor>::start(
                EntityKind::Order,
                shard_count,
                move |order_id, passivation| OrderArgs {
                    order_id: order_id.to_owned(),
                    store: store.clone(),
                    clock,
                    settings: settings.clone(),
                    passivation,
                    stock: stock.clone(),
                    gateway: gateway.clone(),
                },
                serving(&ownership),
            )
            .await?
        };
        let regions =
            Self { skus, carts, orders, store, router, transport: Arc::default(), call_timeout };
        if let (Some(ownership), Some(links), Some(config)) = (ownership, links, transport) {
            let local: Arc<dyn Execute> = Arc::new(regions.clone());
            let running = Transport::start(config, ownership, links, local, peers_feed).await?;
            *regions.transport.lock().await = Some(running);
        }
        if let Some(ownership) = regions.ownership() {
            ownership.join(Arc::new(regions.clone())).await?;
        }
        Ok(regions)
    }

    /// Membership and the shards this node holds (`None` when the regions run unfenced).
    pub fn ownership(&self) -> Option<&Ownership> {
        self.router.ownership.as_ref()
    }

    /// Runs `call` where its entity lives.
    async fn dispatch(&self, call: Call, timeout: Duration) -> Result<Answer, DomainError> {
        self.router.route(self, call, timeout).await
    }

    /// Starts every order whose saga had not ended when the node last stopped; each resumes or
    /// compensates on its own. Returns how many.
    pub async fn resume_open_orders(&self) -> Result<usize, ClusterError> {
        self.resume_open_orders_where(|_| true).await
    }

    /// [`Regions::resume_open_orders`] for the orders of shards this node holds that `wanted`
    /// accepts.
    async fn resume_open_orders_where(
        &self,
        wanted: impl Fn(u32) -> bool,
    ) -> Result<usize, ClusterError> {
        let mut after: Option<Vec<u8>> = None;
        let mut resumed = 0;
        loop {
            let page = self.store.scan(Table::OpenOrders, b"", after.as_deref(), 1000).await?;
            for (key, _) in &page {
                let order_id = String::from_utf8_lossy(key);
                let shard = self.orders.shard(&order_id);
                if !wanted(shard) || !self.router.is_local(EntityKind::Order, &order_id) {
                    continue;
                }
                self.orders.ensure_started(&order_id)?;
                resumed += 1;
            }
            match page.last() {
                Some((key, _)) if page.len() == 1000 => after = Some(key.clone()),
                _ => return Ok(resumed),
            }
        }
    }

    /// The SKU region.
    pub fn skus(&self) -> &ShardRegion<SkuStockActor> {
        &self.skus
    }

    /// The cart region.
    pub fn carts(&self) -> &ShardRegion<CartActor> {
        &self.carts
    }

    /// The order region.
    pub fn orders(&self) -> &ShardRegion<OrderActor> {
        &self.orders
    }

    /// Applies a stock command.
    pub async fn stock(
        &self,
        sku: &str,
        command: StockCommand,
    ) -> Result<StockLevels, DomainError> {
        let call = Call::Sku(SkuCall::Command { sku: sku.to_owned(), command });
        match self.dispatch(call, self.call_timeout).await? {
            Answer::Levels(levels) => Ok(levels),
            other => Err(unexpected(&other)),
        }
    }

    /// A SKU's levels.
    pub async fn stock_levels(&self, sku: &str) -> Result<StockLevels, DomainError> {
        match self
            .dispatch(Call::Sku(SkuCall::Levels { sku: sku.to_owned() }), self.call_timeout)
            .await?
        {
            Answer::Levels(levels) => Ok(levels),
            other => Err(unexpected(&other)),
        }
    }

    /// Changes a cart.
    pub async fn update_cart(
        &self,
        cart_id: &str,
        command: CartCommand,
    ) -> Result<CartView, DomainError> {
        let call = Call::Cart(CartCall::Update { cart_id: cart_id.to_owned(), command });
        match self.dispatch(call, self.call_timeout).await? {
            Answer::Cart(cart) => Ok(cart),
            other => Err(unexpected(&other)),
        }
    }

    /// Reads a cart.
    pub async fn cart(&self, cart_id: &str) -> Result<CartView, DomainError> {
        match self
            .dispatch(Call::Cart(CartCall::Get { cart_id: cart_id.to_owned() }), self.call_timeout)
            .await?
        {
            Answer::Cart(cart) => Ok(cart),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs a checkout, waiting up to `wait` for the saga to end.
    pub async fn checkout(
        &self,
        order: PlaceOrder,
        wait: Duration,
    ) -> Result<Checkout, DomainError> {
        self.checkout_with(order, Vec::new(), wait).await
    }

    /// [`Regions::checkout`], with keyed writes made atomically with the order's placement.
    pub async fn checkout_with(
        &self,
        order: PlaceOrder,
        with: Vec<KeyedWrite>,
        wait: Duration,
    ) -> Result<Checkout, DomainError> {
        let call = Call::Order(OrderCall::Place { order, with, wait_ms: millis(wait) });
        match self.dispatch(call, wait + TRANSIT).await? {
            Answer::Checkout(checkout) => Ok(checkout),
            other => Err(unexpected(&other)),
        }
    }

    /// An order as it stands.
    pub async fn order(&self, order_id: &str) -> Result<OrderView, DomainError> {
        match self
            .dispatch(
                Call::Order(OrderCall::Get { order_id: order_id.to_owned() }),
                self.call_timeout,
            )
            .await?
        {
            Answer::Order(order) => Ok(order),
            other => Err(unexpected(&other)),
        }
    }

    /// An order once its saga (or cancellation) has ended, waiting up to `wait` (then as it
    /// stands, still running).
    pub async fn order_outcome(
        &self,
        order_id: &str,
        wait: Duration,
    ) -> Result<OrderView, DomainError> {
        let call = Call::Order(OrderCall::Outcome {
            order_id: order_id.to_owned(),
            wait_ms: millis(wait),
        });
        match self.dispatch(call, wait + TRANSIT).await? {
            Answer::Order(order) => Ok(order),
            other => Err(unexpected(&other)),
        }
    }

    /// Cancels a confirmed order, waiting up to `wait` for the refund and restock.
    pub async fn cancel_order(
        &self,
        order_id: &str,
        wait: Duration,
    ) -> Result<OrderView, DomainError> {
        let call =
            Call::Order(OrderCall::Cancel { order_id: order_id.to_owned(), wait_ms: millis(wait) });
        match self.dispatch(call, wait + TRANSIT).await? {
            Answer::Order(order) => Ok(order),
            other => Err(unexpected(&other)),
        }
    }

    /// Stops every entity after its mailbox is handled.
    pub async fn shutdown(&self, grace: Duration) {
        if let Some(ownership) = self.ownership().filter(|o| o.has_peers()) {
            // Hand the shards to the other nodes first. A cluster of one keeps them: its leases
            // stay with its node id and are claimed again at its next start.
            ownership.leave(grace).await;
            // Peers route by the leases they read at their last round: until their next one
            // they may still send calls here for the shards given up. Two of this node's rounds
            // (a heartbeat apart, as theirs are) let them see the release while this node
            // still answers such calls "moved", which they retry at the new owner, rather than
            // close the sessions under calls in flight (whose outcome would be unknown: 503).
            ownership.rounds_pass(2).await;
        }
        if let Some(ownership) = self.ownership() {
            ownership.stop().await;
        }
        if let Some(transport) = self.transport.lock().await.take() {
            transport.stop().await;
        }
        self.orders.shutdown(grace).await;
        self.carts.shutdown(grace).await;
        self.skus.shutdown(grace).await;
    }
}

/// How long a moving shard's entities get to finish their journal writes.
const HANDOFF_GRACE: Duration = Duration::from_secs(10);

#[async_trait]
impl ShardHost for Regions {
    async fn stop_shard(&self, shard: u32) {
        self.orders.stop_shard(shard, HANDOFF_GRACE).await;
        self.carts.stop_shard(shard, HANDOFF_GRACE).await;
        self.skus.stop_shard(shard, HANDOFF_GRACE).await;
    }

    async fn shards_started(&self, shards: &[u32]) {
        if let Err(e) = self.resume_open_orders_where(|shard| shards.contains(&shard)).await {
            tracing::warn!(error = %e, "cannot resume the open orders of claimed shards");
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Runs calls against this node's own regions: for this node's callers when it holds the shard,
/// and for peers' region hosts.
#[async_trait]
impl Execute for Regions {
    async fn execute(&self, call: Call) -> Result<Answer, Refusal> {
        let ownership = self.ownership();
        let timeout = self.call_timeout;
        match call {
            Call::Sku(SkuCall::Command { sku, command }) => {
                check_held(ownership, &self.skus, &sku).map_err(refusal)?;
                let levels = self
                    .skus
                    .call(&sku, |r| SkuStockMsg::Command(command, r), timeout)
                    .await
                    .map_err(refusal)?;
                levels.map(Answer::Levels).map_err(domain)
            }
            Call::Sku(SkuCall::Levels { sku }) => {
                check_held(ownership, &self.skus, &sku).map_err(refusal)?;
                let levels =
                    self.skus.call(&sku, SkuStockMsg::Levels, timeout).await.map_err(refusal)?;
                levels.map(Answer::Levels).map_err(domain)
            }
            Call::Cart(CartCall::Update { cart_id, command }) => {
                check_held(ownership, &self.carts, &cart_id).map_err(refusal)?;
                let cart = self
                    .carts
                    .call(&cart_id, |r| CartMsg::Command(command, r), timeout)
                    .await
                    .map_err(refusal)?;
                cart.map(Answer::Cart).map_err(domain)
            }
            Call::Cart(CartCall::Get { cart_id }) => {
                check_held(ownership, &self.carts, &cart_id).map_err(refusal)?;
                let cart =
                    self.carts.call(&cart_id, CartMsg::Get, timeout).await.map_err(refusal)?;
                cart.map(Answer::Cart).map_err(domain)
            }
            Call::Order(OrderCall::Place { order, with, wait_ms }) => {
                let order_id = order.order_id.clone();
                checkout_writes(&with).map_err(Refusal::Domain)?;
                check_held(ownership, &self.orders, &order_id).map_err(refusal)?;
                let wait = Duration::from_millis(wait_ms);
                match self
                    .orders
                    .call(
                        &order_id,
                        |r| OrderMsg::Place(Box::new(order), with, trace::traceparent(), r),
                        wait,
                    )
                    .await
                {
                    Ok(outcome) => outcome
                        .map(|order| Answer::Checkout(Checkout::Ended(order)))
                        .map_err(domain),
                    // Still running after the wait: a pending answer names only an order that is
                    // durable, so it is the order's own read that answers, queued behind the
                    // placement and sent once that is written. An order that is not there was
                    // never placed (refused, or its write failed): unknown, for a retry to find.
                    Err(ClusterError::Timeout { .. }) => {
                        let read = self.orders.call(&order_id, OrderMsg::Get, TRANSIT / 2).await;
                        match read.map_err(refusal)? {
                            Ok(view) if view.in_progress => {
                                Ok(Answer::Checkout(Checkout::Pending { order_id }))
                            }
                            Ok(view) => Ok(Answer::Checkout(Checkout::Ended(view))),
                            Err(DomainError::NotFound { .. }) => Err(Refusal::Domain(
                                DomainError::Unavailable(format!("order {order_id} is not placed")),
                            )),
                            Err(err) => Err(domain(err)),
                        }
                    }
                    Err(err) => Err(refusal(err)),
                }
            }
            Call::Order(OrderCall::Get { order_id }) => {
                check_held(ownership, &self.orders, &order_id).map_err(refusal)?;
                let order =
                    self.orders.call(&order_id, OrderMsg::Get, timeout).await.map_err(refusal)?;
                order.map(Answer::Order).map_err(domain)
            }
            Call::Order(OrderCall::Outcome { order_id, wait_ms }) => {
                check_held(ownership, &self.orders, &order_id).map_err(refusal)?;
                let wait = Duration::from_millis(wait_ms);
                let order = match self.orders.call(&order_id, OrderMsg::AwaitOutcome, wait).await {
                    // Still running after the wait: the order as it stands.
                    Err(ClusterError::Timeout { .. }) => {
                        self.orders.call(&order_id, OrderMsg::Get, TRANSIT / 2).await
                    }
                    outcome => outcome,
                };
                order.map_err(refusal)?.map(Answer::Order).map_err(domain)
            }
            Call::Order(OrderCall::Cancel { order_id, wait_ms }) => {
                check_held(ownership, &self.orders, &order_id).map_err(refusal)?;
                let wait = Duration::from_millis(wait_ms);
                let order =
                    self.orders.call(&order_id, OrderMsg::Cancel, wait).await.map_err(refusal)?;
                order.map(Answer::Order).map_err(domain)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkout_writes_only_its_idempotency_claim() {
        let write = |table| KeyedWrite { table, key: b"k".to_vec(), value: Some(b"v".to_vec()) };
        assert!(checkout_writes(&[]).is_ok());
        assert!(checkout_writes(&[write(Table::IdempotencyKeys)]).is_ok());
        for table in [Table::Users, Table::Products, Table::RefreshTokens, Table::Settings] {
            let with = [write(Table::IdempotencyKeys), write(table)];
            assert!(
                matches!(checkout_writes(&with), Err(DomainError::Invalid { .. })),
                "a checkout wrote {table:?}"
            );
        }
    }
}
