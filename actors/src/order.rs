//! `OrderActor`: one order and its checkout saga.
//!
//! Supervision: spawned on demand by the order shard region's supervisor (and passivated as soon
//! as its saga has ended and been answered), and at node start for
//! every order whose saga has not ended (the `open_orders` table, kept in the same appends as the
//! order's events). A crash restarts only this order; it replays its journal and resumes the saga
//! where its events stop. Every step is idempotent (reservation ids and payment idempotency keys
//! derive from the order id), so redoing a step whose outcome was not yet recorded is safe. A
//! shard handoff stops it the same way, without waiting for its saga: once its journal is idle,
//! its waiting callers answered "moved", the shard's next holder resumes it.
//!
//! The saga: reserve every line, authorize the payment, commit the reservations, capture, confirm.
//! On a failure it compensates: releases what is reserved, returns what was committed, voids or
//! refunds what was paid, and ends `failed`. A confirmed order can be cancelled: refund, return
//! the stock, `cancelled`. One step runs at a time, in a task, and its outcome comes back as a
//! message, so the order keeps answering reads while a step waits on the gateway.
//!
//! Steps are not written one by one: once the order is durably placed (and so marked open, to be
//! resumed after a crash), the next step starts as soon as the previous one's events are
//! recorded, and the forward steps' events (reserved, authorized, committed, captured) are held
//! ([`Journal::record_held`]) until the saga ends, when they are written in one append with its
//! end; a read of the order or a stop for a handoff meanwhile has them written first. So a
//! checkout that confirms writes its order twice: placed, and ended. This is safe because every
//! forward step is idempotent (a crash, or a node's shutdown, redoes what was not yet durable)
//! and nothing is acknowledged to a caller before the events that decided it are durable.
//! Compensation is not redone so: its decision is durable, with the steps before it, before it
//! acts, and its own steps are written as they come.
//!
//! Three parts: the pure state machine ([`state`]: events, the state they fold into, and what
//! comes next), the saga runner ([`saga`]: one step's I/O and its retries), and here the actor
//! that records the machine's decisions and runs its steps.

mod saga;
mod state;

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use storefront_events::event::{self as wire, PaymentFailureReason};
use storefront_events::{CloudEvent, EventData};
use storefront_storage::{KeyedWrite, OutboxRecord, Store, Table};
use tracing::Instrument;

pub use self::saga::StockPort;
use self::saga::{StepRunner, retry_backoff};
pub use self::state::{
    FailureReason, MAX_LINES, OrderEvent, OrderLine, OrderState, OrderStatus, OrderSummary,
    OrderView, PlaceOrder, PlaceOrderV1, StatusChange,
};
use self::state::{Next, StepOutcome, order_data, order_total, validate, wire_money};
use crate::DomainError;
use crate::EntityKind;
use crate::clock::Clock;
use crate::entity::{EntitySettings, Internal, InternalMsg, Lifecycle, Passivation};
use crate::gateway::PaymentGateway;
use crate::journal::{Journal, Persisted};
use crate::metrics::SAGAS_TOTAL;

/// Saga messages an order sends itself.
#[derive(Debug)]
pub(crate) enum SagaMsg {
    /// Events are durable: look for the next step.
    Advance,
    /// A step finished.
    StepDone(Box<StepOutcome>),
}

/// Messages of [`OrderActor`].
#[derive(Debug)]
pub enum OrderMsg {
    /// Start the checkout (or join it, if this order id was already placed with the same
    /// contents); the reply comes when the saga has ended. The keyed writes are made in the same
    /// append as `Placed` when the order is new (the edge's idempotency record), and dropped
    /// when it is not. The caller's trace context (`traceparent`, see [`crate::trace`]), if
    /// traced: the saga's steps are traced as its children.
    Place(
        Box<PlaceOrder>,
        Vec<KeyedWrite>,
        Option<String>,
        RpcReplyPort<Result<OrderView, DomainError>>,
    ),
    /// The order as it stands.
    Get(RpcReplyPort<Result<OrderView, DomainError>>),
    /// The order once its saga (or cancellation) has ended.
    AwaitOutcome(RpcReplyPort<Result<OrderView, DomainError>>),
    /// Cancel a confirmed order; the reply comes when it is cancelled.
    Cancel(RpcReplyPort<Result<OrderView, DomainError>>),
    /// The actor's own messages.
    Internal(Internal),
}

// Local only: entity actors never cross nodes (the cluster's region hosts carry commands).
impl ractor::Message for OrderMsg {}

impl crate::EntityMsg for OrderMsg {
    fn stop() -> Self {
        OrderMsg::Internal(Internal(InternalMsg::Stop))
    }

    fn refuse(self, err: DomainError) {
        match self {
            OrderMsg::Place(_, _, _, reply)
            | OrderMsg::Get(reply)
            | OrderMsg::AwaitOutcome(reply)
            | OrderMsg::Cancel(reply) => {
                let _ = reply.send(Err(err));
            }
            OrderMsg::Internal(_) => {}
        }
    }
}

/// What the region gives an order actor to start.
#[derive(Debug, Clone)]
pub struct OrderArgs {
    /// The order id.
    pub order_id: String,
    /// The journal's store.
    pub store: Arc<dyn Store>,
    /// Time.
    pub clock: Clock,
    /// Entity settings.
    pub settings: EntitySettings,
    /// The region's passivation handshake.
    pub passivation: Passivation,
    /// How to reach SKU actors.
    pub stock: Arc<dyn StockPort>,
    /// The payment gateway.
    pub gateway: Arc<dyn PaymentGateway>,
}

type Waiter = RpcReplyPort<Result<OrderView, DomainError>>;

/// A running order actor's state.
#[derive(Debug)]
pub struct OrderRunning {
    order_id: String,
    order: OrderState,
    journal: Journal,
    lifecycle: Lifecycle,
    clock: Clock,
    settings: EntitySettings,
    stock: Arc<dyn StockPort>,
    gateway: Arc<dyn PaymentGateway>,
    waiters: Vec<Waiter>,
    step_running: bool,
    compensation_retries: u32,
    /// The trace context of the call that placed the order, parent of its steps' spans (none
    /// once the actor restarted, or when not traced).
    placed_by: Option<String>,
    /// Told to stop (its shard moves or was lost): it starts no step, and stops once its
    /// journal is idle.
    stopping: bool,
}

/// The actor owning one order.
#[derive(Debug, Default, Clone, Copy)]
pub struct OrderActor;

fn internal(msg: Internal) -> OrderMsg {
    OrderMsg::Internal(msg)
}

fn persisted(p: Persisted) -> OrderMsg {
    OrderMsg::Internal(Internal(InternalMsg::Persisted(p)))
}

fn saga(msg: SagaMsg) -> OrderMsg {
    OrderMsg::Internal(Internal(InternalMsg::Saga(msg)))
}

fn not_found(order_id: &str) -> DomainError {
    DomainError::NotFound { kind: EntityKind::Order.as_str().into(), id: order_id.to_owned() }
}

impl OrderRunning {
    /// Whether the order may stop: nothing being written, no saga or cancellation running, no
    /// one waiting for an outcome; once told to stop, only nothing being written (what it was
    /// running, even a cancellation that arrived meanwhile, is resumed by its next actor).
    fn ready_to_stop(&self) -> bool {
        if self.stopping {
            return self.journal.is_idle();
        }
        self.journal.is_idle()
            && !self.order.in_progress()
            && !self.order.cleanup_pending()
            && !self.step_running
            && self.waiters.is_empty()
    }

    /// Records events with what must land with them, then has the saga advance.
    fn record(
        &mut self,
        myself: &ActorRef<OrderMsg>,
        events: Vec<OrderEvent>,
    ) -> Result<(), DomainError> {
        if events.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let was_in_progress = self.order.in_progress();
        let was_cleaning_up = self.order.cleanup_pending();
        let placed = events.iter().any(|e| matches!(e, OrderEvent::Placed(_)));
        let reopened = events.contains(&OrderEvent::CancelRequested);
        let outbox = events
            .iter()
            .filter_map(|e| self.domain_event(e, now).transpose())
            .collect::<Result<Vec<OutboxRecord>, DomainError>>()?;
        // Compensation undoes what the steps did, so redoing the steps from the last one written
        // is no longer safe once it has begun (a released reservation would be refused, and the
        // authorization it must void forgotten): its decision is written before it acts.
        let compensates = events.iter().any(|e| {
            matches!(e, OrderEvent::CompensationStarted(_) | OrderEvent::AuthorizationUnknown)
        });
        // A forward step of a saga under way (reserve, authorize, commit, capture) is held, to be
        // written with the saga's end (or with anything recorded or read before it): after a
        // crash the saga redoes those steps, each idempotent, from the last one written, as it
        // does with a step written but not yet durable. A compensating or stopping order holds
        // nothing (a stopping one stops once everything it recorded is written).
        let step = was_in_progress
            && !self.order.compensating
            && !self.stopping
            && events.iter().all(|e| {
                matches!(
                    e,
                    OrderEvent::LineReserved(_)
                        | OrderEvent::PaymentAuthorized(_)
                        | OrderEvent::LineCommitted(_)
                        | OrderEvent::PaymentCaptured(_)
                )
            });
        if step {
            self.journal.record_held(&mut self.order, now, events)?;
        } else {
            self.journal.record(&mut self.order, now, events)?;
        }
        for record in outbox {
            self.journal.outbox(record);
        }
        let open_key = self.order_id.as_bytes().to_vec();
        if placed || reopened {
            self.journal.put(KeyedWrite {
                table: Table::OpenOrders,
                key: open_key.clone(),
                value: Some(vec![]),
            });
        }
        // The lists show an order as placed and as it ended (the order itself shows every step):
        // two index writes per checkout instead of one per step.
        // (The events that end a saga are never held: its held steps go out with them.)
        let ended = was_in_progress && !self.order.in_progress();
        if (placed || ended)
            && let Some(summary) = self.order.summary()
        {
            let value = serde_json::to_vec(&summary)
                .map_err(|e| DomainError::Storage(format!("order summary: {e}")))?;
            for (table, key) in [
                (Table::Orders, summary.all_orders_key()),
                (Table::OrdersByUser, summary.by_user_key()),
            ] {
                self.journal.put(KeyedWrite {
                    table,
                    key: key.into_bytes(),
                    value: Some(value.clone()),
                });
            }
        }
        if ended {
            metrics::counter!(SAGAS_TOTAL, "outcome" => self.order.outcome_label()).increment(1);
            self.notify_waiters();
        }
        // An order is done once it has ended and voided any authorization of unknown outcome.
        let done = !self.order.cleanup_pending() && (ended || was_cleaning_up);
        if done {
            // A done order is rarely touched again: once that is durable (and answered), it
            // leaves memory; a later read rebuilds it from its journal.
            let me = myself.clone();
            self.journal.after_durable(Box::new(move |durable| {
                if durable.is_ok() {
                    let _ = me.send_message(internal(Internal(InternalMsg::Done)));
                }
            }));
            self.journal.put(KeyedWrite { table: Table::OpenOrders, key: open_key, value: None });
        }
        if placed || reopened || compensates {
            // No step may act before the open-order marker is durable: after a crash, only a
            // marked order is resumed, so a step taken for an unmarked one could be left dangling.
            // Nor may compensation act before its decision is durable (above).
            let myself = myself.clone();
            self.journal.after_durable(Box::new(move |durable| {
                if durable.is_ok() {
                    let _ = myself.send_message(saga(SagaMsg::Advance));
                }
            }));
        } else {
            // Later steps need not wait for these events to be durable (see the module doc).
            myself
                .send_message(saga(SagaMsg::Advance))
                .map_err(|e| DomainError::Unavailable(e.to_string()))?;
        }
        Ok(())
    }

    /// Answers everyone waiting for the outcome, once what is recorded is durable.
    fn notify_waiters(&mut self) {
        let waiters = std::mem::take(&mut self.waiters);
        if waiters.is_empty() {
            return;
        }
        let view = self.order.view().ok_or_else(|| not_found(&self.order_id));
        self.journal.after_durable(Box::new(move |durable| {
            for waiter in waiters {
                let _ = waiter.send(durable.clone().and(view.clone()));
            }
        }));
    }

    fn reply_now(&mut self, reply: Waiter) {
        let view = self.order.view().ok_or_else(|| not_found(&self.order_id));
        self.journal.after_durable(Box::new(move |durable| {
            let _ = reply.send(durable.and(view));
        }));
    }

    /// The outbox record (EVENTS.md) `event` produces, if it is one the outside world hears of.
    fn domain_event(
        &self,
        event: &OrderEvent,
        now: u64,
    ) -> Result<Option<OutboxRecord>, DomainError> {
        let Some(order) = (match event {
            OrderEvent::Placed(order) => Some(order),
            _ => self.order.order.as_deref(),
        }) else {
            return Ok(None);
        };
        let data = match event {
            OrderEvent::Confirmed => {
                EventData::OrderConfirmed(order_data(order, OrderStatus::Confirmed, false)?)
            }
            OrderEvent::Cancelled => {
                EventData::OrderCancelled(order_data(order, OrderStatus::Cancelled, true)?)
            }
            OrderEvent::CompensationStarted(reason) => {
                let reason = match reason {
                    FailureReason::PaymentDeclined { code } if code == "insufficient_funds" => {
                        PaymentFailureReason::InsufficientFunds
                    }
                    FailureReason::PaymentDeclined { .. } => PaymentFailureReason::Declined,
                    FailureReason::PaymentGatewayError => PaymentFailureReason::GatewayError,
                    _ => return Ok(None),
                };
                EventData::PaymentFailed(wire::PaymentFailed {
                    order_id: order.order_id.clone(),
                    user_id: order.user_id.clone(),
                    email: order.email.clone(),
                    reason,
                    total: wire_money(&order_total(order)?),
                })
            }
            _ => return Ok(None),
        };
        Ok(Some(CloudEvent::new(now, data).into_outbox()?))
    }

    /// Records what needs no I/O, and starts the next step if none is running.
    fn advance(&mut self, myself: &ActorRef<OrderMsg>) -> Result<(), DomainError> {
        if self.step_running || self.stopping {
            // The running step advances again when it is done; a stopping order leaves the
            // rest to the shard's next holder.
            return Ok(());
        }
        match self.order.next() {
            Next::Idle => Ok(()),
            Next::Record(events) => self.record(myself, events),
            Next::Run(step) => {
                self.step_running = true;
                let runner = StepRunner {
                    order: self.order.order.clone().ok_or_else(|| not_found(&self.order_id))?,
                    placed_at: self.order.created_at,
                    stock: self.stock.clone(),
                    gateway: self.gateway.clone(),
                    settings: self.settings.clone(),
                };
                let span = tracing::info_span!(
                    target: crate::trace::TARGET,
                    parent: None,
                    "saga.step",
                    otel.name = %format!("saga {}", step.name()),
                    saga.step = step.name(),
                    order.id = %self.order_id,
                );
                if let Some(traceparent) = &self.placed_by {
                    crate::trace::continue_trace(&span, traceparent);
                }
                let myself = myself.clone();
                // A step's future is large (any step's calls, retries and compensation): boxed
                // once, the task moves a pointer where it would copy the future at each hand-over
                // (BENCHMARKS.md, Step 8, seventh part).
                let step = Box::pin(runner.run(step));
                tokio::spawn(
                    async move {
                        let outcome = step.await;
                        let _ = myself.send_message(saga(SagaMsg::StepDone(Box::new(outcome))));
                    }
                    .instrument(span),
                );
                Ok(())
            }
        }
    }

    fn step_done(
        &mut self,
        myself: &ActorRef<OrderMsg>,
        outcome: StepOutcome,
    ) -> Result<(), DomainError> {
        self.step_running = false;
        let compensating = matches!(outcome, StepOutcome::Compensated { .. });
        let events = self.order.decide_outcome(outcome);
        if events.is_empty() {
            // Nothing moved: a compensation whose calls all failed for now. Retry with back-off.
            self.compensation_retries += 1;
            let backoff = retry_backoff(&self.settings, self.compensation_retries);
            ractor::time::send_after(backoff, myself.get_cell(), || saga(SagaMsg::Advance));
            if !compensating {
                tracing::warn!(order_id = %self.order_id, "saga step made no progress");
            }
            return Ok(());
        }
        self.compensation_retries = 0;
        self.record(myself, events)
    }
}

impl Actor for OrderActor {
    type Msg = OrderMsg;
    type State = OrderRunning;
    type Arguments = OrderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<OrderMsg>,
        args: OrderArgs,
    ) -> Result<OrderRunning, ActorProcessingErr> {
        let stream = EntityKind::Order.stream(&args.order_id);
        let (journal, order) =
            Journal::recover::<OrderState>(args.store, stream, args.settings.snapshot_every)
                .await?;
        let mut running = OrderRunning {
            order_id: args.order_id,
            order,
            journal,
            lifecycle: Lifecycle::new(args.settings.passivate_after, args.passivation),
            clock: args.clock,
            settings: args.settings,
            stock: args.stock,
            gateway: args.gateway,
            waiters: Vec::new(),
            step_running: false,
            compensation_retries: 0,
            placed_by: None,
            stopping: false,
        };
        running.lifecycle.start(&myself, internal);
        if running.order.in_progress() || running.order.cleanup_pending() {
            tracing::info!(order_id = %running.order_id, "resuming checkout saga");
            myself.send_message(saga(SagaMsg::Advance))?;
        }
        Ok(running)
    }

    async fn handle(
        &self,
        myself: ActorRef<OrderMsg>,
        message: OrderMsg,
        st: &mut OrderRunning,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            OrderMsg::Place(place, with, placed_by, reply) => {
                st.lifecycle.touch();
                match &st.order.order {
                    _ if place.order_id != st.order_id => {
                        let _ = reply.send(Err(DomainError::Invalid {
                            field: "order_id".into(),
                            reason: "does not match the actor".into(),
                        }));
                    }
                    Some(existing) if **existing != *place => {
                        let _ = reply.send(Err(DomainError::OrderConflict(st.order_id.clone())));
                    }
                    Some(_) if st.order.in_progress() => st.waiters.push(reply),
                    Some(_) => st.reply_now(reply),
                    None => match validate(&place) {
                        Err(invalid) => {
                            let _ = reply.send(Err(invalid));
                        }
                        Ok(()) => {
                            st.waiters.push(reply);
                            st.placed_by = placed_by;
                            st.record(&myself, vec![OrderEvent::Placed(*place)])?;
                            for write in with {
                                st.journal.put(write);
                            }
                        }
                    },
                }
            }
            OrderMsg::Get(reply) => {
                st.lifecycle.touch();
                st.reply_now(reply);
            }
            OrderMsg::AwaitOutcome(reply) => {
                st.lifecycle.touch();
                if st.order.in_progress() {
                    st.waiters.push(reply);
                } else {
                    st.reply_now(reply);
                }
            }
            OrderMsg::Cancel(reply) => {
                st.lifecycle.touch();
                match st.order.status {
                    Some(OrderStatus::Confirmed) if !st.order.cancelling => {
                        st.waiters.push(reply);
                        st.record(&myself, vec![OrderEvent::CancelRequested])?;
                    }
                    Some(OrderStatus::Confirmed) => st.waiters.push(reply),
                    Some(OrderStatus::Cancelled) => st.reply_now(reply),
                    Some(status) => {
                        let _ = reply.send(Err(DomainError::InvalidOrderState {
                            order_id: st.order_id.clone(),
                            status: status.to_string(),
                            action: "cancelled".into(),
                        }));
                    }
                    None => {
                        let _ = reply.send(Err(not_found(&st.order_id)));
                    }
                }
            }
            OrderMsg::Internal(Internal(message)) => match message {
                InternalMsg::Persisted(outcome) => st.journal.persisted(outcome)?,
                InternalMsg::IdleCheck => {
                    st.lifecycle.idle_check(&myself, st.ready_to_stop(), internal);
                }
                InternalMsg::Stop => {
                    // Its shard moves: it does not wait for its saga, whose next step may need
                    // an entity of a moving shard too (a SKU of this node). The shard's next
                    // holder resumes the saga from the journal, as after a restart (every step
                    // is idempotent), and the callers waiting for its outcome ask there.
                    st.stopping = true;
                    st.journal.write_held();
                    for waiter in st.waiters.drain(..) {
                        let _ = waiter.send(Err(DomainError::Moved(st.order_id.clone())));
                    }
                    st.lifecycle.stop_when_idle(&myself.get_cell(), st.ready_to_stop());
                }
                InternalMsg::Done => {
                    if st.ready_to_stop() {
                        st.lifecycle.passivate_now(&myself, internal);
                    }
                }
                InternalMsg::Saga(SagaMsg::Advance) => st.advance(&myself)?,
                InternalMsg::Saga(SagaMsg::StepDone(outcome)) => st.step_done(&myself, *outcome)?,
                InternalMsg::ExpireDue => {}
            },
        }
        st.journal.flush(&st.order, &myself, persisted)?;
        st.lifecycle.after_write(&myself.get_cell(), st.ready_to_stop());
        // An order never placed (a read of an id no one used) leaves memory once it has answered,
        // so made-up ids cannot pile up actors until the idle timer.
        if st.order.order.is_none() && st.ready_to_stop() {
            st.lifecycle.passivate_now(&myself, internal);
        }
        Ok(())
    }
}
