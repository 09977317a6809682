//! `OrderActor`: one order and its checkout saga.
//!
//! Supervision: spawned on demand by the order shard region's supervisor (and passivated as soon
//! as its saga has ended and been answered), and at node start for
//! every order whose saga has not ended (the `open_orders` table, kept in the same appends as the
//! order's events). A crash restarts only this order; it replays its journal and resumes the saga
//! where its events stop. Every step is idempotent (reservation ids and payment idempotency keys
//! derive from the order id), so redoing a step whose outcome was not yet recorded is safe.
//!
//! The saga: reserve every line, authorize the payment, commit the reservations, capture, confirm.
//! On a failure it compensates: releases what is reserved, returns what was committed, voids or
//! refunds what was paid, and ends `failed`. A confirmed order can be cancelled: refund, return
//! the stock, `cancelled`. One step runs at a time, in a task, and its outcome comes back as a
//! message, so the order keeps answering reads while a step waits on the gateway.
//!
//! Steps are pipelined with the journal: once the order is durably placed (and so marked open, to
//! be resumed after a crash), the next step starts as soon as the previous one's events are
//! recorded, not when they are durable, so a busy order writes several steps in one append. This
//! is safe because every step is idempotent (a crash redoes what was not yet durable) and nothing
//! is acknowledged to a caller before the events that decided it are durable.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use storefront_events::event::{self as wire, OrderData, OrderItem, PaymentFailureReason};
use storefront_events::{CloudEvent, EventData};
use storefront_storage::{KeyedWrite, OutboxRecord, Store, Table};

use crate::EntityKind;
use crate::clock::Clock;
use crate::entity::{EntitySettings, Internal, InternalMsg, Lifecycle, Passivation};
use crate::gateway::{GatewayError, PaymentGateway};
use crate::journal::{Aggregate, Journal, Persisted};
use crate::metrics::SAGAS_TOTAL;
use crate::sku::{StockCommand, StockLevels};
use crate::{Currency, DomainError, Money, Quantity, Sku};

/// Most lines on one order.
pub const MAX_LINES: usize = 100;
/// Attempts for one stock command that fails for want of the SKU's actor or store.
const STOCK_ATTEMPTS: u32 = 5;
/// The longest wait between compensation retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How the saga reaches SKU actors, wherever they live.
#[async_trait]
pub trait StockPort: Send + Sync + std::fmt::Debug + 'static {
    /// Sends `command` to the SKU's actor and waits for its durable answer.
    async fn stock(&self, sku: &str, command: StockCommand) -> Result<StockLevels, DomainError>;
}

/// One line of an order, priced in the order's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The SKU.
    pub sku: Sku,
    /// Units.
    pub qty: Quantity,
    /// Price of one unit, in the order's currency.
    pub unit_price: Money,
    /// The product's name at checkout (what a confirmation mail shows).
    pub name: String,
}

/// A checkout: what to buy, at what price, paid how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    /// The order's id (chosen by the caller, so a retried checkout finds the same order).
    pub order_id: String,
    /// The buyer.
    pub user_id: String,
    /// What is bought.
    pub lines: Vec<OrderLine>,
    /// The currency the order is charged in.
    pub currency: Currency,
    /// The FX rate from the shop's base currency used to price it, if converted.
    pub fx_rate: Option<String>,
    /// The gateway's payment token (never card data).
    pub payment_token: String,
    /// Where to ship: the checkout's shipping address as JSON text.
    pub shipping_address: Option<String>,
    /// The buyer's email address at checkout (where the confirmation goes).
    pub email: String,
}

/// A checkout as journals recorded it before orders carried the buyer's address and the
/// product names (before Step 5). Read back as a [`PlaceOrder`] with no address and each line
/// named by its SKU, so those orders still replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrderV1 {
    order_id: String,
    user_id: String,
    lines: Vec<OrderLineV1>,
    currency: Currency,
    fx_rate: Option<String>,
    payment_token: String,
    shipping_address: Option<String>,
}

/// A line of a [`PlaceOrderV1`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OrderLineV1 {
    sku: Sku,
    qty: Quantity,
    unit_price: Money,
}

impl From<PlaceOrderV1> for PlaceOrder {
    fn from(v1: PlaceOrderV1) -> Self {
        PlaceOrder {
            order_id: v1.order_id,
            user_id: v1.user_id,
            lines: v1
                .lines
                .into_iter()
                .map(|l| OrderLine {
                    name: l.sku.as_str().to_owned(),
                    sku: l.sku,
                    qty: l.qty,
                    unit_price: l.unit_price,
                })
                .collect(),
            currency: v1.currency,
            fx_rate: v1.fx_rate,
            payment_token: v1.payment_token,
            shipping_address: v1.shipping_address,
            email: String::new(),
        }
    }
}

/// An order's status, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Placed; stock not yet all reserved.
    Pending,
    /// Every line's stock is held.
    Reserved,
    /// The payment is authorized.
    Paid,
    /// Stock committed and payment captured, durably.
    Confirmed,
    /// Cancelled after confirmation: refunded and restocked.
    Cancelled,
    /// The saga failed and compensated.
    Failed,
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Reserved => "reserved",
            OrderStatus::Paid => "paid",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Failed => "failed",
        };
        f.write_str(s)
    }
}

/// Why a saga failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// A line could not be reserved.
    OutOfStock {
        /// The SKU short of stock.
        sku: String,
        /// Units it had available.
        available: u64,
    },
    /// The payment was declined.
    PaymentDeclined {
        /// The gateway's decline code.
        code: String,
    },
    /// The gateway kept failing.
    PaymentGatewayError,
    /// A reservation lapsed before it was committed.
    ReservationLapsed,
    /// A SKU's actor could not be reached.
    StockUnavailable,
}

/// What happened to an order. Journals name variants by position: new ones go at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// The checkout was accepted (as recorded before Step 5; see [`PlaceOrderV1`]).
    PlacedV1(PlaceOrderV1),
    /// A line's stock is held.
    LineReserved(usize),
    /// The payment is authorized.
    PaymentAuthorized(String),
    /// A line's reservation became a sale.
    LineCommitted(usize),
    /// The payment was collected.
    PaymentCaptured(String),
    /// The order is confirmed.
    Confirmed,
    /// The saga failed; compensation begins.
    CompensationStarted(FailureReason),
    /// A line's reservation was released.
    LineReleased(usize),
    /// A committed line's units were put back on hand.
    LineReturned(usize),
    /// The authorization was voided.
    PaymentVoided,
    /// The captured payment was refunded.
    PaymentRefunded(String),
    /// Compensation finished.
    Failed,
    /// A cancellation of the confirmed order began.
    CancelRequested,
    /// The cancellation finished.
    Cancelled,
    /// The checkout was accepted.
    Placed(PlaceOrder),
}

/// An order: a fold over its events.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct OrderState {
    order: Option<PlaceOrder>,
    status: Option<OrderStatus>,
    created_at: u64,
    reserved: BTreeSet<usize>,
    committed: BTreeSet<usize>,
    released: BTreeSet<usize>,
    returned: BTreeSet<usize>,
    authorization: Option<String>,
    capture: Option<String>,
    voided: bool,
    refund: Option<String>,
    failure: Option<FailureReason>,
    compensating: bool,
    cancelling: bool,
    history: Vec<(OrderStatus, u64)>,
}

/// A status change in an order's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// The status entered.
    pub status: OrderStatus,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

/// An order's serializable view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    /// The order.
    pub order_id: String,
    /// The buyer.
    pub user_id: String,
    /// Current status.
    pub status: OrderStatus,
    /// The lines.
    pub lines: Vec<OrderLine>,
    /// Sum of the lines, in the order's currency.
    pub total: Money,
    /// FX rate used at checkout, if converted.
    pub fx_rate: Option<String>,
    /// When it was placed (ms since the epoch).
    pub created_at_ms: u64,
    /// Every status change, oldest first.
    pub history: Vec<StatusChange>,
    /// Why it failed, for a failed order.
    pub failure: Option<FailureReason>,
    /// Whether the saga (or a cancellation) is still running.
    pub in_progress: bool,
    /// The gateway's authorization id, once authorized.
    pub authorization: Option<String>,
}

/// An order as the order lists show it; kept in the order indexes, written in the order's own
/// appends when it is placed and when its saga (or a cancellation) ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSummary {
    /// The order.
    pub order_id: String,
    /// The buyer.
    pub user_id: String,
    /// Status as of its last change.
    pub status: OrderStatus,
    /// Sum of the lines, in the order's currency.
    pub total: Money,
    /// When it was placed (ms since the epoch).
    pub created_at_ms: u64,
}

impl OrderSummary {
    /// Key in [`Table::Orders`]: newest first in a forward scan (inverted creation time).
    pub fn all_orders_key(&self) -> String {
        format!("{:016x}/{}", u64::MAX - self.created_at_ms, self.order_id)
    }

    /// Key in [`Table::OrdersByUser`]: the buyer, then newest first.
    pub fn by_user_key(&self) -> String {
        format!("{}/{}", self.user_id, self.all_orders_key())
    }
}

/// A unit of saga work that needs I/O.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Reserve(Vec<usize>),
    Authorize,
    Commit(Vec<usize>),
    Capture(String),
    Compensate {
        release: Vec<usize>,
        give_back: Vec<usize>,
        void: Option<String>,
        refund: Option<String>,
    },
}

/// What the saga does next.
#[derive(Debug)]
enum Next {
    /// Nothing: ended, or not placed.
    Idle,
    /// Record these events (no I/O needed).
    Record(Vec<OrderEvent>),
    /// Run this step.
    Run(Step),
}

/// The outcome of a [`Step`].
#[derive(Debug)]
pub(crate) enum StepOutcome {
    Reserved(Vec<(usize, Result<StockLevels, DomainError>)>),
    Authorized(Result<String, GatewayError>),
    Committed(Vec<(usize, Result<StockLevels, DomainError>)>),
    Captured(Result<String, GatewayError>),
    Compensated {
        released: Vec<(usize, Result<StockLevels, DomainError>)>,
        returned: Vec<(usize, Result<StockLevels, DomainError>)>,
        voided: Option<Result<(), GatewayError>>,
        refunded: Option<Result<String, GatewayError>>,
    },
}

/// Saga messages an order sends itself.
#[derive(Debug)]
pub(crate) enum SagaMsg {
    /// Events are durable: look for the next step.
    Advance,
    /// A step finished.
    StepDone(Box<StepOutcome>),
}

impl OrderState {
    fn total(&self) -> Option<Money> {
        let order = self.order.as_ref()?;
        order_total(order).ok()
    }

    fn is_terminal(&self) -> bool {
        matches!(self.status, Some(OrderStatus::Failed | OrderStatus::Cancelled))
            || (self.status == Some(OrderStatus::Confirmed) && !self.cancelling)
    }

    fn in_progress(&self) -> bool {
        self.order.is_some() && !self.is_terminal()
    }

    /// The serializable view, if the order exists.
    pub fn view(&self) -> Option<OrderView> {
        let order = self.order.as_ref()?;
        Some(OrderView {
            order_id: order.order_id.clone(),
            user_id: order.user_id.clone(),
            status: self.status.unwrap_or(OrderStatus::Pending),
            lines: order.lines.clone(),
            total: self.total().unwrap_or_else(|| Money::zero(order.currency)),
            fx_rate: order.fx_rate.clone(),
            created_at_ms: self.created_at,
            history: self
                .history
                .iter()
                .map(|(status, at_ms)| StatusChange { status: *status, at_ms: *at_ms })
                .collect(),
            failure: self.failure.clone(),
            in_progress: self.in_progress(),
            authorization: self.authorization.clone(),
        })
    }

    /// The saga outcome metric's label for an ended order (a bounded set).
    fn outcome_label(&self) -> &'static str {
        match (self.status, &self.failure) {
            (Some(OrderStatus::Confirmed), _) => "confirmed",
            (Some(OrderStatus::Cancelled), _) => "cancelled",
            (_, Some(FailureReason::OutOfStock { .. })) => "out_of_stock",
            (_, Some(FailureReason::PaymentDeclined { .. })) => "payment_declined",
            (_, Some(FailureReason::PaymentGatewayError)) => "payment_gateway_error",
            _ => "other_failure",
        }
    }

    /// The list entry, if the order exists.
    pub fn summary(&self) -> Option<OrderSummary> {
        let order = self.order.as_ref()?;
        Some(OrderSummary {
            order_id: order.order_id.clone(),
            user_id: order.user_id.clone(),
            status: self.status.unwrap_or(OrderStatus::Pending),
            total: self.total().unwrap_or_else(|| Money::zero(order.currency)),
            created_at_ms: self.created_at,
        })
    }

    fn next(&self) -> Next {
        let Some(order) = &self.order else {
            return Next::Idle;
        };
        if self.is_terminal() {
            return Next::Idle;
        }
        let all: Vec<usize> = (0..order.lines.len()).collect();
        if self.cancelling || self.compensating {
            let release: Vec<usize> = if self.cancelling {
                vec![]
            } else {
                all.iter()
                    .copied()
                    .filter(|l| !self.committed.contains(l) && !self.released.contains(l))
                    .collect()
            };
            let give_back: Vec<usize> =
                self.committed.iter().copied().filter(|l| !self.returned.contains(l)).collect();
            let void =
                self.authorization.clone().filter(|_| self.capture.is_none() && !self.voided);
            let refund = self.capture.clone().filter(|_| self.refund.is_none());
            if release.is_empty() && give_back.is_empty() && void.is_none() && refund.is_none() {
                return Next::Record(vec![if self.cancelling {
                    OrderEvent::Cancelled
                } else {
                    OrderEvent::Failed
                }]);
            }
            return Next::Run(Step::Compensate { release, give_back, void, refund });
        }
        let unreserved: Vec<usize> =
            all.iter().copied().filter(|l| !self.reserved.contains(l)).collect();
        if !unreserved.is_empty() {
            return Next::Run(Step::Reserve(unreserved));
        }
        let Some(authorization) = &self.authorization else {
            return Next::Run(Step::Authorize);
        };
        let uncommitted: Vec<usize> =
            all.iter().copied().filter(|l| !self.committed.contains(l)).collect();
        if !uncommitted.is_empty() {
            return Next::Run(Step::Commit(uncommitted));
        }
        if self.capture.is_none() {
            return Next::Run(Step::Capture(authorization.clone()));
        }
        Next::Record(vec![OrderEvent::Confirmed])
    }

    /// Turns a step's outcome into events. A forward step that failed (after the runner's
    /// retries) starts compensation; a compensation call that failed is left undone, to be
    /// retried with back-off until it succeeds.
    fn decide_outcome(&self, outcome: StepOutcome) -> Vec<OrderEvent> {
        let mut events = Vec::new();
        match outcome {
            StepOutcome::Reserved(results) => {
                let mut failure = None;
                for (line, result) in results {
                    match result {
                        Ok(_) => events.push(OrderEvent::LineReserved(line)),
                        Err(DomainError::OutOfStock { sku, available, .. }) => {
                            failure.get_or_insert(FailureReason::OutOfStock { sku, available });
                        }
                        // The hold was already released (a late retry of a fenced-off id).
                        Err(DomainError::ReservationGone(_)) => {
                            failure.get_or_insert(FailureReason::ReservationLapsed);
                        }
                        Err(_) => {
                            failure.get_or_insert(FailureReason::StockUnavailable);
                        }
                    }
                }
                events.extend(failure.map(OrderEvent::CompensationStarted));
            }
            StepOutcome::Authorized(Ok(authorization)) => {
                events.push(OrderEvent::PaymentAuthorized(authorization))
            }
            StepOutcome::Authorized(Err(GatewayError::Declined(code)))
            | StepOutcome::Captured(Err(GatewayError::Declined(code))) => events
                .push(OrderEvent::CompensationStarted(FailureReason::PaymentDeclined { code })),
            StepOutcome::Authorized(Err(GatewayError::Unavailable(_)))
            | StepOutcome::Captured(Err(GatewayError::Unavailable(_))) => {
                events.push(OrderEvent::CompensationStarted(FailureReason::PaymentGatewayError))
            }
            StepOutcome::Committed(results) => {
                let mut failure = None;
                for (line, result) in results {
                    match result {
                        Ok(_) => events.push(OrderEvent::LineCommitted(line)),
                        Err(err) if is_transient(&err) => {
                            failure.get_or_insert(FailureReason::StockUnavailable);
                        }
                        Err(_) => {
                            failure.get_or_insert(FailureReason::ReservationLapsed);
                        }
                    }
                }
                events.extend(failure.map(OrderEvent::CompensationStarted));
            }
            StepOutcome::Captured(Ok(capture)) => events.push(OrderEvent::PaymentCaptured(capture)),
            StepOutcome::Compensated { released, returned, voided, refunded } => {
                for (line, result) in released {
                    match result {
                        Ok(_) => events.push(OrderEvent::LineReleased(line)),
                        // Committed before a crash hid it from us: give it back instead.
                        Err(DomainError::AlreadyCommitted(_)) => {
                            events.push(OrderEvent::LineCommitted(line))
                        }
                        Err(_) => {}
                    }
                }
                events.extend(
                    returned
                        .into_iter()
                        .filter(|(_, r)| r.is_ok())
                        .map(|(line, _)| OrderEvent::LineReturned(line)),
                );
                if let Some(Ok(())) = voided {
                    events.push(OrderEvent::PaymentVoided);
                }
                if let Some(Ok(refund)) = refunded {
                    events.push(OrderEvent::PaymentRefunded(refund));
                }
            }
        }
        events
    }
}

/// The wait before retry number `attempt` (from 0): the base doubled per attempt, capped.
fn retry_backoff(settings: &EntitySettings, attempt: u32) -> Duration {
    settings.gateway_retry_base.saturating_mul(1 << attempt.min(10)).min(MAX_BACKOFF)
}

fn is_transient(err: &DomainError) -> bool {
    matches!(err, DomainError::Unavailable(_) | DomainError::Storage(_))
}

/// Money as events carry it (the API's Money object).
fn wire_money(money: &Money) -> wire::Money {
    wire::Money { amount: money.amount().to_string(), currency: money.currency().code().into() }
}

/// `data` of `order.confirmed` (and with the refund, `order.cancelled`): everything a mail shows.
fn order_data(
    order: &PlaceOrder,
    status: OrderStatus,
    refunded: bool,
) -> Result<OrderData, DomainError> {
    let items = order
        .lines
        .iter()
        .map(|line| {
            Ok(OrderItem {
                sku: line.sku.as_str().to_owned(),
                name: line.name.clone(),
                qty: line.qty.get(),
                unit_price: wire_money(&line.unit_price),
                line_total: wire_money(&line.unit_price.checked_mul(line.qty.get())?),
            })
        })
        .collect::<Result<Vec<_>, DomainError>>()?;
    let total = wire_money(&order_total(order)?);
    // Stored as the JSON the checkout was given (checked there); text that is not JSON travels
    // as a string rather than being dropped.
    let shipping_address = order.shipping_address.as_deref().map(|text| {
        serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
    });
    Ok(OrderData {
        order_id: order.order_id.clone(),
        user_id: order.user_id.clone(),
        email: order.email.clone(),
        status: status.to_string(),
        items,
        refund: refunded.then(|| total.clone()),
        total,
        shipping_address,
    })
}

fn order_total(order: &PlaceOrder) -> Result<Money, DomainError> {
    order.lines.iter().try_fold(Money::zero(order.currency), |sum, line| {
        sum.checked_add(&line.unit_price.checked_mul(line.qty.get())?)
    })
}

fn validate(order: &PlaceOrder) -> Result<(), DomainError> {
    let invalid = |field: &str, reason: &str| DomainError::Invalid {
        field: field.into(),
        reason: reason.into(),
    };
    if order.order_id.is_empty() || order.order_id.len() > 100 {
        return Err(invalid("order_id", "1 to 100 bytes"));
    }
    if order.user_id.is_empty() {
        return Err(invalid("user_id", "must not be empty"));
    }
    if order.lines.is_empty() || order.lines.len() > MAX_LINES {
        return Err(invalid("items", "1 to 100 lines"));
    }
    let token = &order.payment_token;
    if token.is_empty() || token.len() > 255 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("payment_token", "1 to 255 printable characters"));
    }
    let mut skus = BTreeSet::new();
    for (i, line) in order.lines.iter().enumerate() {
        if !skus.insert(line.sku.as_str()) {
            return Err(invalid(&format!("items[{i}].sku"), "appears twice"));
        }
        if line.unit_price.currency() != order.currency {
            return Err(invalid(&format!("items[{i}].unit_price"), "not in the order's currency"));
        }
        if line.unit_price.is_negative() {
            return Err(invalid(&format!("items[{i}].unit_price"), "is negative"));
        }
    }
    order_total(order).map(drop)
}

impl Aggregate for OrderState {
    type Event = OrderEvent;

    fn apply(&mut self, at: u64, event: &OrderEvent) {
        let enter = |state: &mut Self, status| {
            state.status = Some(status);
            state.history.push((status, at));
        };
        match event {
            OrderEvent::PlacedV1(order) => {
                self.order = Some(order.clone().into());
                self.created_at = at;
                enter(self, OrderStatus::Pending);
            }
            OrderEvent::Placed(order) => {
                self.order = Some(order.clone());
                self.created_at = at;
                enter(self, OrderStatus::Pending);
            }
            OrderEvent::LineReserved(line) => {
                self.reserved.insert(*line);
                let lines = self.order.as_ref().map_or(0, |o| o.lines.len());
                if self.reserved.len() == lines && !self.compensating {
                    enter(self, OrderStatus::Reserved);
                }
            }
            OrderEvent::PaymentAuthorized(authorization) => {
                self.authorization = Some(authorization.clone());
                enter(self, OrderStatus::Paid);
            }
            OrderEvent::LineCommitted(line) => {
                self.committed.insert(*line);
            }
            OrderEvent::PaymentCaptured(capture) => self.capture = Some(capture.clone()),
            OrderEvent::Confirmed => enter(self, OrderStatus::Confirmed),
            OrderEvent::CompensationStarted(reason) => {
                self.compensating = true;
                self.failure = Some(reason.clone());
            }
            OrderEvent::LineReleased(line) => {
                self.released.insert(*line);
            }
            OrderEvent::LineReturned(line) => {
                self.returned.insert(*line);
            }
            OrderEvent::PaymentVoided => self.voided = true,
            OrderEvent::PaymentRefunded(refund) => self.refund = Some(refund.clone()),
            OrderEvent::Failed => enter(self, OrderStatus::Failed),
            OrderEvent::CancelRequested => self.cancelling = true,
            OrderEvent::Cancelled => {
                self.cancelling = false;
                enter(self, OrderStatus::Cancelled);
            }
        }
    }
}

/// Messages of [`OrderActor`].
#[derive(Debug)]
pub enum OrderMsg {
    /// Start the checkout (or join it, if this order id was already placed with the same
    /// contents); the reply comes when the saga has ended. The keyed writes are made in the same
    /// append as `Placed` when the order is new (the edge's idempotency record), and dropped
    /// when it is not.
    Place(PlaceOrder, Vec<KeyedWrite>, RpcReplyPort<Result<OrderView, DomainError>>),
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
            OrderMsg::Place(_, _, reply)
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
    /// one waiting for an outcome. (A command that arrived while a stop was under way, such as a
    /// cancellation, delays the stop until it is done.)
    fn ready_to_stop(&self) -> bool {
        self.journal.is_idle()
            && !self.order.in_progress()
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
        let placed = events.iter().any(|e| matches!(e, OrderEvent::Placed(_)));
        let reopened = events.contains(&OrderEvent::CancelRequested);
        let outbox = events
            .iter()
            .filter_map(|e| self.domain_event(e, now).transpose())
            .collect::<Result<Vec<OutboxRecord>, DomainError>>()?;
        self.journal.record(&mut self.order, now, events)?;
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
            // An ended order is rarely touched again: once its outcome is durable (and answered),
            // it leaves memory; a later read rebuilds it from its journal.
            let me = myself.clone();
            self.journal.after_durable(Box::new(move |durable| {
                if durable.is_ok() {
                    let _ = me.send_message(internal(Internal(InternalMsg::Done)));
                }
            }));
            self.journal.put(KeyedWrite { table: Table::OpenOrders, key: open_key, value: None });
            metrics::counter!(SAGAS_TOTAL, "outcome" => self.order.outcome_label()).increment(1);
            self.notify_waiters();
        }
        if placed || reopened {
            // No step may act before the open-order marker is durable: after a crash, only a
            // marked order is resumed, so a step taken for an unmarked one could be left dangling.
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
            _ => self.order.order.as_ref(),
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
        if self.step_running {
            // The running step advances again when it is done.
            return Ok(());
        }
        match self.order.next() {
            Next::Idle => Ok(()),
            Next::Record(events) => self.record(myself, events),
            Next::Run(step) => {
                self.step_running = true;
                let runner = StepRunner {
                    order: self.order.order.clone().ok_or_else(|| not_found(&self.order_id))?,
                    stock: self.stock.clone(),
                    gateway: self.gateway.clone(),
                    settings: self.settings.clone(),
                };
                let myself = myself.clone();
                tokio::spawn(async move {
                    let outcome = runner.run(step).await;
                    let _ = myself.send_message(saga(SagaMsg::StepDone(Box::new(outcome))));
                });
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

/// Runs one step's I/O, with the saga's retry policy.
struct StepRunner {
    order: PlaceOrder,
    stock: Arc<dyn StockPort>,
    gateway: Arc<dyn PaymentGateway>,
    settings: EntitySettings,
}

impl StepRunner {
    fn reservation_id(&self, line: usize) -> String {
        format!("{}/{line}", self.order.order_id)
    }

    fn key(&self, operation: &str) -> String {
        format!("{}/{operation}", self.order.order_id)
    }

    async fn run(self, step: Step) -> StepOutcome {
        let total = order_total(&self.order).unwrap_or_else(|_| Money::zero(self.order.currency));
        match step {
            Step::Reserve(lines) => {
                let ttl_ms = self.settings.reservation_ttl.as_millis() as u64;
                StepOutcome::Reserved(
                    self.each_line(lines, |this, line| StockCommand::Reserve {
                        reservation_id: this.reservation_id(line),
                        order_id: this.order.order_id.clone(),
                        qty: u64::from(this.order.lines[line].qty.get()),
                        ttl_ms,
                    })
                    .await,
                )
            }
            Step::Commit(lines) => StepOutcome::Committed(
                self.each_line(lines, |this, line| StockCommand::Commit {
                    reservation_id: this.reservation_id(line),
                })
                .await,
            ),
            Step::Authorize => {
                let (key, token) = (self.key("authorize"), self.order.payment_token.clone());
                StepOutcome::Authorized(
                    self.pay(|gw| {
                        let (key, token) = (key.clone(), token.clone());
                        async move { gw.authorize(&key, &token, &total).await }
                    })
                    .await,
                )
            }
            Step::Capture(authorization) => {
                let key = self.key("capture");
                StepOutcome::Captured(
                    self.pay(|gw| {
                        let (key, authorization) = (key.clone(), authorization.clone());
                        async move { gw.capture(&key, &authorization, &total).await }
                    })
                    .await,
                )
            }
            Step::Compensate { release, give_back, void, refund } => {
                let released = self
                    .each_line(release, |this, line| StockCommand::Release {
                        reservation_id: this.reservation_id(line),
                    })
                    .await;
                let returned = self
                    .each_line(give_back, |this, line| StockCommand::Restock {
                        restock_id: format!("{}/return", this.reservation_id(line)),
                        qty: u64::from(this.order.lines[line].qty.get()),
                    })
                    .await;
                let voided = match void {
                    Some(authorization) => {
                        let key = self.key("void");
                        Some(
                            self.pay(|gw| {
                                let (key, authorization) = (key.clone(), authorization.clone());
                                async move { gw.void(&key, &authorization).await }
                            })
                            .await,
                        )
                    }
                    None => None,
                };
                let refunded = match refund {
                    Some(capture) => {
                        let key = self.key("refund");
                        Some(
                            self.pay(|gw| {
                                let (key, capture) = (key.clone(), capture.clone());
                                async move { gw.refund(&key, &capture, &total).await }
                            })
                            .await,
                        )
                    }
                    None => None,
                };
                StepOutcome::Compensated { released, returned, voided, refunded }
            }
        }
    }

    /// Sends one stock command per line, concurrently, retrying while the SKU is unreachable.
    async fn each_line(
        &self,
        lines: Vec<usize>,
        command: impl Fn(&Self, usize) -> StockCommand,
    ) -> Vec<(usize, Result<StockLevels, DomainError>)> {
        let calls = lines.into_iter().map(|line| {
            let sku = self.order.lines[line].sku.to_string();
            let command = command(self, line);
            async move {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match self.stock.stock(&sku, command.clone()).await {
                        Err(err) if is_transient(&err) && attempt < STOCK_ATTEMPTS => {
                            tokio::time::sleep(retry_backoff(&self.settings, attempt)).await;
                        }
                        result => return (line, result),
                    }
                }
            }
        });
        join_all(calls).await
    }

    /// Calls the gateway, retrying gateway errors (not declines) with the same idempotency key.
    async fn pay<T, F, Fut>(&self, call: F) -> Result<T, GatewayError>
    where
        F: Fn(Arc<dyn PaymentGateway>) -> Fut,
        Fut: Future<Output = Result<T, GatewayError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match call(self.gateway.clone()).await {
                Err(GatewayError::Unavailable(why))
                    if attempt < self.settings.gateway_max_attempts =>
                {
                    tracing::debug!(order_id = %self.order.order_id, attempt, %why, "gateway error, retrying");
                    tokio::time::sleep(retry_backoff(&self.settings, attempt - 1)).await;
                }
                result => return result,
            }
        }
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
        let running = OrderRunning {
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
        };
        running.lifecycle.start(&myself, internal);
        if running.order.in_progress() {
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
            OrderMsg::Place(place, with, reply) => {
                st.lifecycle.touch();
                match &st.order.order {
                    _ if place.order_id != st.order_id => {
                        let _ = reply.send(Err(DomainError::Invalid {
                            field: "order_id".into(),
                            reason: "does not match the actor".into(),
                        }));
                    }
                    Some(existing) if *existing != place => {
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
                            st.record(&myself, vec![OrderEvent::Placed(place)])?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    /// Every event survives the journal's encoding (postcard supports no self-describing forms).
    #[test]
    fn every_event_round_trips_through_the_journal_codec() {
        let place = PlaceOrder {
            order_id: "o".into(),
            user_id: "u".into(),
            lines: vec![OrderLine {
                sku: Sku::parse("A").unwrap(),
                qty: Quantity::new(2).unwrap(),
                unit_price: Money::parse("1.25", Currency::USD).unwrap(),
                name: "Thing A".into(),
            }],
            currency: Currency::USD,
            fx_rate: Some("0.9210".into()),
            payment_token: "tok_visa".into(),
            shipping_address: Some("1 Main St".into()),
            email: "u@example.com".into(),
        };
        let events = vec![
            OrderEvent::Placed(place),
            OrderEvent::LineReserved(0),
            OrderEvent::PaymentAuthorized("auth_1".into()),
            OrderEvent::LineCommitted(0),
            OrderEvent::PaymentCaptured("cap_1".into()),
            OrderEvent::Confirmed,
            OrderEvent::CompensationStarted(FailureReason::OutOfStock {
                sku: "A".into(),
                available: 1,
            }),
            OrderEvent::CompensationStarted(FailureReason::PaymentDeclined {
                code: "card_declined".into(),
            }),
            OrderEvent::CompensationStarted(FailureReason::PaymentGatewayError),
            OrderEvent::CompensationStarted(FailureReason::ReservationLapsed),
            OrderEvent::CompensationStarted(FailureReason::StockUnavailable),
            OrderEvent::LineReleased(0),
            OrderEvent::LineReturned(0),
            OrderEvent::PaymentVoided,
            OrderEvent::PaymentRefunded("re_1".into()),
            OrderEvent::Failed,
            OrderEvent::CancelRequested,
            OrderEvent::Cancelled,
        ];
        let mut state = OrderState::default();
        for (at, event) in events.iter().enumerate() {
            let bytes = encode(&(at as u64, event)).unwrap();
            let (back_at, back): (u64, OrderEvent) = decode(&bytes).unwrap();
            assert_eq!((back_at, &back), (at as u64, event));
            state.apply(back_at, &back);
        }
        let restored: OrderState = decode(&encode(&state).unwrap()).unwrap();
        assert_eq!(restored.view(), state.view());
    }

    #[test]
    fn a_checkout_journaled_before_orders_carried_email_and_names_still_replays() {
        // Variant 0 with the pre-Step-5 fields: byte for byte what older nodes wrote.
        let v1 = OrderEvent::PlacedV1(PlaceOrderV1 {
            order_id: "o".into(),
            user_id: "u".into(),
            lines: vec![OrderLineV1 {
                sku: Sku::parse("A").unwrap(),
                qty: Quantity::new(2).unwrap(),
                unit_price: Money::parse("1.25", Currency::USD).unwrap(),
            }],
            currency: Currency::USD,
            fx_rate: None,
            payment_token: "tok_visa".into(),
            shipping_address: None,
        });
        let bytes = encode(&(7u64, &v1)).unwrap();
        assert_eq!(bytes[1], 7, "the time, then variant 0");
        assert_eq!(bytes[2], 0, "the old Placed is still variant 0");
        let (_, back): (u64, OrderEvent) = decode(&bytes).unwrap();
        let mut state = OrderState::default();
        state.apply(7, &back);
        let order = state.order.as_ref().unwrap();
        assert_eq!(order.lines[0].name, "A");
        assert_eq!(order.email, "");
        assert_eq!(state.status, Some(OrderStatus::Pending));
    }
}
