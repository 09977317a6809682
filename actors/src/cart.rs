//! `CartActor`: one customer's cart (id = user id).
//!
//! Supervision: spawned on demand by the cart shard region's supervisor; a crash restarts only
//! this cart, from its journal. It is passivated when idle and restarts on the next command.
//! A cart not changed for `cart_idle_expiry` is emptied: the next command or read records the
//! expiry first. A cart holds no stock; checkout reserves it.

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use storefront_storage::Store;

use crate::EntityKind;
use crate::clock::Clock;
use crate::entity::{EntitySettings, Internal, InternalMsg, Lifecycle, Passivation};
use crate::journal::{Aggregate, Journal, Persisted};
use crate::{DomainError, Quantity, Sku};

/// Most distinct SKUs on one cart.
pub const MAX_LINES: usize = 100;

/// A change to a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CartCommand {
    /// Add units of a SKU to what the cart has (the line stays at most 100).
    Add {
        /// The SKU.
        sku: Sku,
        /// Units to add.
        qty: Quantity,
    },
    /// Set a line's quantity; 0 removes it.
    SetQty {
        /// The SKU.
        sku: Sku,
        /// The new quantity, 0 to 100.
        qty: u32,
    },
    /// Remove a line.
    Remove {
        /// The SKU.
        sku: Sku,
    },
    /// Empty the cart.
    Clear,
}

/// One cart line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    /// The SKU.
    pub sku: String,
    /// Units, 1 to 100.
    pub qty: u32,
}

/// A cart's serializable view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartView {
    /// Lines in SKU order.
    pub lines: Vec<CartLine>,
    /// Last change (ms since the epoch); 0 for a cart never changed.
    pub updated_at_ms: u64,
}

/// What happened to a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CartEvent {
    /// A line now has `qty` units.
    LineSet {
        /// The SKU.
        sku: String,
        /// Units.
        qty: u32,
    },
    /// A line was removed.
    LineRemoved {
        /// The SKU.
        sku: String,
    },
    /// The cart was emptied.
    Cleared,
    /// The cart was emptied after being idle too long.
    Expired,
}

/// A cart: a fold over its events.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct CartState {
    lines: BTreeMap<String, u32>,
    updated_at: u64,
}

impl CartState {
    /// The serializable view.
    pub fn view(&self) -> CartView {
        CartView {
            lines: self
                .lines
                .iter()
                .map(|(sku, qty)| CartLine { sku: sku.clone(), qty: *qty })
                .collect(),
            updated_at_ms: self.updated_at,
        }
    }

    fn decide(&self, command: &CartCommand) -> Result<Vec<CartEvent>, DomainError> {
        let too_many = || DomainError::Invalid {
            field: "sku".into(),
            reason: format!("a cart holds at most {MAX_LINES} different SKUs"),
        };
        Ok(match command {
            CartCommand::Add { sku, qty } => {
                let current = self.lines.get(sku.as_str()).copied();
                if current.is_none() && self.lines.len() >= MAX_LINES {
                    return Err(too_many());
                }
                let total = Quantity::new(current.unwrap_or(0) + qty.get())?;
                vec![CartEvent::LineSet { sku: sku.to_string(), qty: total.get() }]
            }
            CartCommand::SetQty { sku, qty: 0 } | CartCommand::Remove { sku } => {
                if self.lines.contains_key(sku.as_str()) {
                    vec![CartEvent::LineRemoved { sku: sku.to_string() }]
                } else {
                    vec![]
                }
            }
            CartCommand::SetQty { sku, qty } => {
                let qty = Quantity::new(*qty)?;
                if !self.lines.contains_key(sku.as_str()) && self.lines.len() >= MAX_LINES {
                    return Err(too_many());
                }
                if self.lines.get(sku.as_str()) == Some(&qty.get()) {
                    vec![]
                } else {
                    vec![CartEvent::LineSet { sku: sku.to_string(), qty: qty.get() }]
                }
            }
            CartCommand::Clear if self.lines.is_empty() => vec![],
            CartCommand::Clear => vec![CartEvent::Cleared],
        })
    }
}

impl Aggregate for CartState {
    type Event = CartEvent;

    fn apply(&mut self, at: u64, event: &CartEvent) {
        match event {
            CartEvent::LineSet { sku, qty } => {
                self.lines.insert(sku.clone(), *qty);
            }
            CartEvent::LineRemoved { sku } => {
                self.lines.remove(sku);
            }
            CartEvent::Cleared | CartEvent::Expired => self.lines.clear(),
        }
        self.updated_at = at;
    }
}

/// Messages of [`CartActor`].
#[derive(Debug)]
pub enum CartMsg {
    /// Change the cart; the reply is the cart after the change.
    Command(CartCommand, RpcReplyPort<Result<CartView, DomainError>>),
    /// Read the cart.
    Get(RpcReplyPort<Result<CartView, DomainError>>),
    /// The actor's own messages.
    Internal(Internal),
}

// Local only: entity actors never cross nodes (the cluster's region hosts carry commands).
impl ractor::Message for CartMsg {}

impl crate::EntityMsg for CartMsg {
    fn stop() -> Self {
        CartMsg::Internal(Internal(InternalMsg::Stop))
    }

    fn refuse(self, err: DomainError) {
        match self {
            CartMsg::Command(_, reply) | CartMsg::Get(reply) => {
                let _ = reply.send(Err(err));
            }
            CartMsg::Internal(_) => {}
        }
    }
}

/// What the region gives a cart actor to start.
#[derive(Debug, Clone)]
pub struct CartArgs {
    /// The cart's id (its owner's user id).
    pub cart_id: String,
    /// The journal's store.
    pub store: Arc<dyn Store>,
    /// Time.
    pub clock: Clock,
    /// Entity settings.
    pub settings: EntitySettings,
    /// The region's passivation handshake.
    pub passivation: Passivation,
}

/// A running cart actor's state.
#[derive(Debug)]
pub struct CartRunning {
    cart: CartState,
    journal: Journal,
    lifecycle: Lifecycle,
    clock: Clock,
    idle_expiry_ms: u64,
}

/// The actor owning one cart.
#[derive(Debug, Default, Clone, Copy)]
pub struct CartActor;

fn internal(msg: Internal) -> CartMsg {
    CartMsg::Internal(msg)
}

fn persisted(p: Persisted) -> CartMsg {
    CartMsg::Internal(Internal(InternalMsg::Persisted(p)))
}

impl CartRunning {
    /// Records the expiry of a cart idle too long, before anything else touches it.
    fn expire_if_idle(&mut self, now: u64) -> Result<(), DomainError> {
        let idle = now.saturating_sub(self.cart.updated_at);
        if !self.cart.lines.is_empty() && idle >= self.idle_expiry_ms {
            self.journal.record(&mut self.cart, now, vec![CartEvent::Expired])?;
        }
        Ok(())
    }

    fn answer(
        &mut self,
        reply: RpcReplyPort<Result<CartView, DomainError>>,
        outcome: Result<(), DomainError>,
    ) {
        let outcome = outcome.map(|()| self.cart.view());
        self.journal.after_durable(Box::new(move |durable| {
            let _ = reply.send(durable.and(outcome));
        }));
    }
}

impl Actor for CartActor {
    type Msg = CartMsg;
    type State = CartRunning;
    type Arguments = CartArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CartMsg>,
        args: CartArgs,
    ) -> Result<CartRunning, ActorProcessingErr> {
        let stream = EntityKind::Cart.stream(&args.cart_id);
        let (journal, cart) =
            Journal::recover::<CartState>(args.store, stream, args.settings.snapshot_every).await?;
        let mut running = CartRunning {
            cart,
            journal,
            lifecycle: Lifecycle::new(args.settings.passivate_after, args.passivation),
            clock: args.clock,
            idle_expiry_ms: args.settings.cart_idle_expiry.as_millis() as u64,
        };
        running.lifecycle.start(&myself, internal);
        Ok(running)
    }

    async fn handle(
        &self,
        myself: ActorRef<CartMsg>,
        message: CartMsg,
        st: &mut CartRunning,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CartMsg::Command(command, reply) => {
                st.lifecycle.touch();
                let now = st.clock.now_ms();
                st.expire_if_idle(now)?;
                let outcome = match st.cart.decide(&command) {
                    Ok(events) => st.journal.record(&mut st.cart, now, events),
                    Err(refused) => Err(refused),
                };
                st.answer(reply, outcome);
            }
            CartMsg::Get(reply) => {
                st.lifecycle.touch();
                st.expire_if_idle(st.clock.now_ms())?;
                st.answer(reply, Ok(()));
            }
            CartMsg::Internal(Internal(message)) => match message {
                InternalMsg::Persisted(outcome) => st.journal.persisted(outcome)?,
                InternalMsg::IdleCheck => {
                    st.lifecycle.idle_check(&myself, st.journal.is_idle(), internal);
                }
                InternalMsg::Stop => {
                    st.lifecycle.stop_when_idle(&myself.get_cell(), st.journal.is_idle());
                }
                InternalMsg::ExpireDue | InternalMsg::Saga(_) | InternalMsg::Done => {}
            },
        }
        st.journal.flush(&st.cart, &myself, persisted)?;
        st.lifecycle.after_write(&myself.get_cell(), st.journal.is_idle());
        Ok(())
    }
}
