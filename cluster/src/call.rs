//! The cross-node call protocol: what a node asks of an entity wherever it lives ([`Call`]), what
//! the entity answers ([`Answer`]), why a call may get no answer ([`Refusal`]), the one place
//! a node runs calls against its own regions ([`Execute`]), and the one-way stock levels a node
//! tells its peers ([`StockNotice`]). `remote` carries these between nodes;
//! `regions` routes and executes them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use storefront_actors::cart::{CartCommand, CartView};
use storefront_actors::order::{OrderView, PlaceOrder};
use storefront_actors::{DomainError, EntityKind, StockCommand, StockLevels};
use storefront_storage::KeyedWrite;

use crate::regions::Checkout;

/// A command for an entity, as it crosses nodes: one enum per entity kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Call {
    Sku(SkuCall),
    Cart(CartCall),
    Order(OrderCall),
}

/// A command for one SKU's stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SkuCall {
    Command { sku: String, command: StockCommand },
    Levels { sku: String },
}

/// A command for one cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CartCall {
    Update { cart_id: String, command: CartCommand },
    Get { cart_id: String },
}

/// A command for one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum OrderCall {
    /// Places the order (with keyed writes made in its placement's append) and waits for its
    /// outcome up to `wait_ms`.
    Place {
        order: PlaceOrder,
        with: Vec<KeyedWrite>,
        wait_ms: u64,
    },
    Get {
        order_id: String,
    },
    /// The order once it has ended, waiting up to `wait_ms`.
    Outcome {
        order_id: String,
        wait_ms: u64,
    },
    Cancel {
        order_id: String,
        wait_ms: u64,
    },
}

impl Call {
    /// The entity the command is for: its kind and id.
    pub(crate) fn target(&self) -> (EntityKind, &str) {
        match self {
            Call::Sku(SkuCall::Command { sku, .. } | SkuCall::Levels { sku }) => {
                (EntityKind::Sku, sku)
            }
            Call::Cart(CartCall::Update { cart_id, .. } | CartCall::Get { cart_id }) => {
                (EntityKind::Cart, cart_id)
            }
            Call::Order(OrderCall::Place { order, .. }) => (EntityKind::Order, &order.order_id),
            Call::Order(
                OrderCall::Get { order_id }
                | OrderCall::Outcome { order_id, .. }
                | OrderCall::Cancel { order_id, .. },
            ) => (EntityKind::Order, order_id),
        }
    }

    /// Whether the command only reads: one whose outcome is unknown can be sent again.
    pub(crate) fn is_read(&self) -> bool {
        matches!(
            self,
            Call::Sku(SkuCall::Levels { .. })
                | Call::Cart(CartCall::Get { .. })
                | Call::Order(OrderCall::Get { .. } | OrderCall::Outcome { .. })
        )
    }

    /// Caps the wait of a command that waits for an outcome (a checkout, an outcome, a
    /// cancellation) at `left`.
    pub(crate) fn limit_wait(&mut self, left: Duration) {
        let left = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
        if let Call::Order(
            OrderCall::Place { wait_ms, .. }
            | OrderCall::Outcome { wait_ms, .. }
            | OrderCall::Cancel { wait_ms, .. },
        ) = self
        {
            *wait_ms = (*wait_ms).min(left);
        }
    }
}

/// What a command answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Answer {
    Levels(StockLevels),
    Cart(CartView),
    Checkout(Checkout),
    Order(OrderView),
}

/// A SKU's levels as the node holding it tells its peers (the stock feed between nodes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StockNotice {
    pub(crate) sku: String,
    pub(crate) levels: StockLevels,
    /// The SKU journal's sequence the levels are as of.
    pub(crate) seq: u64,
}

/// Why a command got no answer from its entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Refusal {
    /// The node asked does not hold the entity's shard: nothing was done; ask the owner.
    NotOwner,
    /// The command never left this node (no session to the owner): nothing was done.
    Unreachable(String),
    /// The command was sent but no answer came in time: it may or may not take effect.
    Unknown(String),
    /// The entity answered with an error.
    Domain(DomainError),
}

/// Runs a command against this node's own regions.
#[async_trait::async_trait]
pub(crate) trait Execute: Send + Sync + 'static {
    async fn execute(&self, call: Call) -> Result<Answer, Refusal>;
}
