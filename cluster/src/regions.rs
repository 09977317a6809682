//! The three regions of a node, wired together, and the typed calls the edges use.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use storefront_actors::cart::{CartCommand, CartView};
use storefront_actors::order::{OrderView, PlaceOrder};
use storefront_actors::{
    CartActor, CartArgs, CartMsg, Clock, DomainError, EntitySettings, OrderActor, OrderArgs,
    OrderMsg, PaymentGateway, SkuStockActor, SkuStockArgs, SkuStockMsg, StockCommand, StockFeed,
    StockLevels, StockPort,
};
use storefront_storage::{KeyedWrite, Store, Table};

use crate::fenced::FencedStore;
use crate::{ClusterError, Ownership, OwnershipConfig, ShardHost, ShardRegion};

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
}

impl Default for RegionsConfig {
    fn default() -> Self {
        Self {
            shard_count: 256,
            settings: EntitySettings::default(),
            call_timeout: Duration::from_secs(10),
            stock_feed: StockFeed::default(),
            cluster: None,
        }
    }
}

/// The outcome of a checkout within the caller's wait.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    ownership: Option<Ownership>,
    call_timeout: Duration,
}

/// Refuses a command for an entity whose shard this node does not hold.
fn check_held<A: ractor::Actor + Default>(
    ownership: Option<&Ownership>,
    region: &ShardRegion<A>,
    id: &str,
) -> Result<(), ClusterError> {
    let Some(ownership) = ownership else { return Ok(()) };
    let shard = region.shard(id);
    match ownership.epoch(shard) {
        Some(_) => Ok(()),
        None => Err(ClusterError::NotOwner { kind: region.kind(), id: id.to_owned(), shard }),
    }
}

/// The saga's way to SKUs: through the SKU region.
#[derive(Debug)]
struct SkuPort {
    skus: ShardRegion<SkuStockActor>,
    ownership: Option<Ownership>,
    timeout: Duration,
}

#[async_trait]
impl StockPort for SkuPort {
    async fn stock(&self, sku: &str, command: StockCommand) -> Result<StockLevels, DomainError> {
        check_held(self.ownership.as_ref(), &self.skus, sku)?;
        self.skus.call(sku, |reply| SkuStockMsg::Command(command, reply), self.timeout).await?
    }
}

impl Regions {
    /// Starts the three regions over `store`.
    pub async fn start(
        store: Arc<dyn Store>,
        gateway: Arc<dyn PaymentGateway>,
        clock: Clock,
        config: RegionsConfig,
    ) -> Result<Self, ClusterError> {
        let RegionsConfig { shard_count, settings, call_timeout, stock_feed, cluster } = config;
        let ownership = cluster.map(|config| Ownership::new(store.clone(), config));
        // Entities write through the fenced store; the node's own tables do not need it.
        let entity_store: Arc<dyn Store> = match &ownership {
            Some(ownership) => Arc::new(FencedStore::new(store.clone(), ownership.clone())),
            None => store.clone(),
        };
        let skus = {
            let (store, settings) = (entity_store.clone(), settings.clone());
            ShardRegion::<SkuStockActor>::start("sku", shard_count, move |sku, passivation| {
                SkuStockArgs {
                    sku: sku.to_owned(),
                    store: store.clone(),
                    clock,
                    settings: settings.clone(),
                    passivation,
                    feed: stock_feed.clone(),
                }
            })
            .await?
        };
        let carts = {
            let (store, settings) = (entity_store.clone(), settings.clone());
            ShardRegion::<CartActor>::start("cart", shard_count, move |cart_id, passivation| {
                CartArgs {
                    cart_id: cart_id.to_owned(),
                    store: store.clone(),
                    clock,
                    settings: settings.clone(),
                    passivation,
                }
            })
            .await?
        };
        let stock: Arc<dyn StockPort> = Arc::new(SkuPort {
            skus: skus.clone(),
            ownership: ownership.clone(),
            timeout: call_timeout,
        });
        let orders = {
            let store = entity_store;
            ShardRegion::<OrderActor>::start("order", shard_count, move |order_id, passivation| {
                OrderArgs {
                    order_id: order_id.to_owned(),
                    store: store.clone(),
                    clock,
                    settings: settings.clone(),
                    passivation,
                    stock: stock.clone(),
                    gateway: gateway.clone(),
                }
            })
            .await?
        };
        let regions = Self { skus, carts, orders, store, ownership, call_timeout };
        if let Some(ownership) = &regions.ownership {
            ownership.join(Arc::new(regions.clone())).await?;
        }
        Ok(regions)
    }

    /// Membership and the shards this node holds (`None` when the regions run unfenced).
    pub fn ownership(&self) -> Option<&Ownership> {
        self.ownership.as_ref()
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
                if !wanted(shard) || check_held(self.ownership(), &self.orders, &order_id).is_err()
                {
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
        check_held(self.ownership(), &self.skus, sku)?;
        self.skus.call(sku, |r| SkuStockMsg::Command(command, r), self.call_timeout).await?
    }

    /// A SKU's levels.
    pub async fn stock_levels(&self, sku: &str) -> Result<StockLevels, DomainError> {
        check_held(self.ownership(), &self.skus, sku)?;
        self.skus.call(sku, SkuStockMsg::Levels, self.call_timeout).await?
    }

    /// Changes a cart.
    pub async fn update_cart(
        &self,
        cart_id: &str,
        command: CartCommand,
    ) -> Result<CartView, DomainError> {
        check_held(self.ownership(), &self.carts, cart_id)?;
        self.carts.call(cart_id, |r| CartMsg::Command(command, r), self.call_timeout).await?
    }

    /// Reads a cart.
    pub async fn cart(&self, cart_id: &str) -> Result<CartView, DomainError> {
        check_held(self.ownership(), &self.carts, cart_id)?;
        self.carts.call(cart_id, CartMsg::Get, self.call_timeout).await?
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
        let order_id = order.order_id.clone();
        check_held(self.ownership(), &self.orders, &order_id)?;
        match self.orders.call(&order_id, |r| OrderMsg::Place(order, with, r), wait).await {
            Ok(outcome) => outcome.map(Checkout::Ended),
            Err(ClusterError::Timeout { .. }) => Ok(Checkout::Pending { order_id }),
            Err(err) => Err(err.into()),
        }
    }

    /// An order as it stands.
    pub async fn order(&self, order_id: &str) -> Result<OrderView, DomainError> {
        check_held(self.ownership(), &self.orders, order_id)?;
        self.orders.call(order_id, OrderMsg::Get, self.call_timeout).await?
    }

    /// An order once its saga (or cancellation) has ended, waiting up to `wait`.
    pub async fn order_outcome(
        &self,
        order_id: &str,
        wait: Duration,
    ) -> Result<OrderView, DomainError> {
        check_held(self.ownership(), &self.orders, order_id)?;
        self.orders.call(order_id, OrderMsg::AwaitOutcome, wait).await?
    }

    /// Cancels a confirmed order, waiting up to `wait` for the refund and restock.
    pub async fn cancel_order(
        &self,
        order_id: &str,
        wait: Duration,
    ) -> Result<OrderView, DomainError> {
        check_held(self.ownership(), &self.orders, order_id)?;
        self.orders.call(order_id, OrderMsg::Cancel, wait).await?
    }

    /// Stops every entity after its mailbox is handled.
    pub async fn shutdown(&self, grace: Duration) {
        if let Some(ownership) = self.ownership.as_ref().filter(|o| o.has_peers()) {
            // Hand the shards to the other nodes first. A cluster of one keeps them: its leases
            // stay with its node id and are claimed again at its next start.
            ownership.leave(grace).await;
        }
        if let Some(ownership) = &self.ownership {
            ownership.stop().await;
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
