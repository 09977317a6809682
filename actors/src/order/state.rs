//! The order's pure state machine: the checkout as placed, the events of its saga, the state
//! they fold into, and the saga's decisions (`next`: which step or events come next;
//! `decide_outcome`: which events a step's outcome records). No I/O and no actor here: the saga
//! runner ([`super::saga`]) does the I/O of a step, and the actor ([`super::OrderActor`]) records
//! what this module decides.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use storefront_events::event::{self as wire, OrderData, OrderItem};

use crate::gateway::GatewayError;
use crate::journal::Aggregate;
use crate::sku::StockLevels;
use crate::{Currency, DomainError, Money, Quantity, Sku};

/// Most lines on one order.
pub const MAX_LINES: usize = 100;

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
    /// The catalog version of the product record that priced the line (0 before versions).
    pub product_version: u64,
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
    /// The catalog version (products and FX rates) the checkout priced from (0 before
    /// versions).
    pub catalog_version: u64,
}

/// A checkout as journals recorded it from Step 5 until orders carried catalog versions
/// (Step 7). Read back as a [`PlaceOrder`] at catalog version 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrderV2 {
    order_id: String,
    user_id: String,
    lines: Vec<OrderLineV2>,
    currency: Currency,
    fx_rate: Option<String>,
    payment_token: String,
    shipping_address: Option<String>,
    email: String,
}

/// A line of a [`PlaceOrderV2`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OrderLineV2 {
    sku: Sku,
    qty: Quantity,
    unit_price: Money,
    name: String,
}

impl From<PlaceOrderV2> for PlaceOrder {
    fn from(v2: PlaceOrderV2) -> Self {
        PlaceOrder {
            order_id: v2.order_id,
            user_id: v2.user_id,
            lines: v2
                .lines
                .into_iter()
                .map(|l| OrderLine {
                    sku: l.sku,
                    qty: l.qty,
                    unit_price: l.unit_price,
                    name: l.name,
                    product_version: 0,
                })
                .collect(),
            currency: v2.currency,
            fx_rate: v2.fx_rate,
            payment_token: v2.payment_token,
            shipping_address: v2.shipping_address,
            email: v2.email,
            catalog_version: 0,
        }
    }
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
                    product_version: 0,
                })
                .collect(),
            currency: v1.currency,
            fx_rate: v1.fx_rate,
            payment_token: v1.payment_token,
            shipping_address: v1.shipping_address,
            email: String::new(),
            catalog_version: 0,
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
    /// A line would take the buyer past the SKU's purchase limit.
    PurchaseLimit {
        /// The SKU.
        sku: String,
        /// Units one customer may buy.
        limit: u64,
    },
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
    /// The checkout was accepted (as recorded from Step 5 to Step 7; see [`PlaceOrderV2`]).
    PlacedV2(PlaceOrderV2),
    /// The authorization's outcome is unknown (the gateway never answered): it may hold money,
    /// so compensation voids it by its key.
    AuthorizationUnknown,
    /// The checkout was accepted.
    Placed(PlaceOrder),
}

/// An order: a fold over its events.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct OrderState {
    /// Shared with the saga's steps, which read it while the order goes on.
    pub(super) order: Option<Arc<PlaceOrder>>,
    pub(super) status: Option<OrderStatus>,
    pub(super) created_at: u64,
    pub(super) reserved: BTreeSet<usize>,
    pub(super) committed: BTreeSet<usize>,
    pub(super) released: BTreeSet<usize>,
    pub(super) returned: BTreeSet<usize>,
    pub(super) authorization: Option<String>,
    pub(super) capture: Option<String>,
    pub(super) voided: bool,
    /// An authorization was asked for and never answered (see [`OrderEvent::AuthorizationUnknown`]).
    pub(super) authorization_unknown: bool,
    pub(super) refund: Option<String>,
    pub(super) failure: Option<FailureReason>,
    pub(super) compensating: bool,
    pub(super) cancelling: bool,
    pub(super) history: Vec<(OrderStatus, u64)>,
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
    /// The catalog version the checkout priced from.
    pub catalog_version: u64,
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
        format!("{}/{:016x}/{}", self.user_id, u64::MAX - self.created_at_ms, self.order_id)
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
        void: Option<Void>,
        refund: Option<String>,
    },
}

impl Step {
    /// The step's name, as its trace span shows it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Step::Reserve(_) => "reserve",
            Step::Authorize => "authorize",
            Step::Commit(_) => "commit",
            Step::Capture(_) => "capture",
            Step::Compensate { .. } => "compensate",
        }
    }
}

/// What compensation voids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Void {
    /// This authorization.
    Authorization(String),
    /// Whatever the authorization of unknown outcome holds: asked again by its idempotency key,
    /// the gateway names it (or says there is none), and it is voided.
    ByKey,
}

/// What the saga does next.
#[derive(Debug)]
pub(super) enum Next {
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

impl OrderState {
    pub(super) fn total(&self) -> Option<Money> {
        let order = self.order.as_ref()?;
        order_total(order).ok()
    }

    pub(super) fn is_terminal(&self) -> bool {
        matches!(self.status, Some(OrderStatus::Failed | OrderStatus::Cancelled))
            || (self.status == Some(OrderStatus::Confirmed) && !self.cancelling)
    }

    pub(super) fn in_progress(&self) -> bool {
        self.order.is_some() && !self.is_terminal()
    }

    /// Whether a failed order still has to void an authorization of unknown outcome: the
    /// customer has the order's outcome, and the actor keeps asking the gateway by the key (and
    /// keeps the order open, so a restart resumes it) until it answers.
    pub(super) fn cleanup_pending(&self) -> bool {
        self.status == Some(OrderStatus::Failed) && self.authorization_unknown && !self.voided
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
            catalog_version: order.catalog_version,
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
    pub(super) fn outcome_label(&self) -> &'static str {
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

    pub(super) fn next(&self) -> Next {
        let Some(order) = &self.order else {
            return Next::Idle;
        };
        if self.cleanup_pending() {
            return Next::Run(Step::Compensate {
                release: vec![],
                give_back: vec![],
                void: Some(Void::ByKey),
                refund: None,
            });
        }
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
            let void = match &self.authorization {
                _ if self.capture.is_some() || self.voided => None,
                Some(authorization) => Some(Void::Authorization(authorization.clone())),
                None if self.authorization_unknown => Some(Void::ByKey),
                None => None,
            };
            let refund = self.capture.clone().filter(|_| self.refund.is_none());
            // A void by key does not hold up the outcome: while the gateway does not answer, the
            // order fails with its stock back, and the void goes on (`cleanup_pending`).
            let voiding = matches!(void, Some(Void::Authorization(_)));
            if release.is_empty() && give_back.is_empty() && !voiding && refund.is_none() {
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
    pub(super) fn decide_outcome(&self, outcome: StepOutcome) -> Vec<OrderEvent> {
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
                        Err(DomainError::PurchaseLimit { sku, limit, .. }) => {
                            failure.get_or_insert(FailureReason::PurchaseLimit { sku, limit });
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
            // The gateway never answered: the authorization may exist. The order fails, and
            // compensation voids whatever the key authorized.
            StepOutcome::Authorized(Err(GatewayError::Unavailable(_))) => events.extend([
                OrderEvent::AuthorizationUnknown,
                OrderEvent::CompensationStarted(FailureReason::PaymentGatewayError),
            ]),
            // A capture of unknown outcome may have collected the money: it is never guessed.
            // Nothing is recorded, and the capture is tried again by its key until the gateway
            // answers (the stock is committed meanwhile; the order stays pending).
            StepOutcome::Captured(Err(GatewayError::Unavailable(_))) => {}
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

pub(super) fn is_transient(err: &DomainError) -> bool {
    matches!(err, DomainError::Unavailable(_) | DomainError::Storage(_))
}

/// Money as events carry it (the API's Money object).
pub(super) fn wire_money(money: &Money) -> wire::Money {
    wire::Money { amount: money.amount().to_string(), currency: money.currency().code().into() }
}

/// `data` of `order.confirmed` (and with the refund, `order.cancelled`): everything a mail shows.
pub(super) fn order_data(
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

pub(super) fn order_total(order: &PlaceOrder) -> Result<Money, DomainError> {
    order.lines.iter().try_fold(Money::zero(order.currency), |sum, line| {
        sum.checked_add(&line.unit_price.checked_mul(line.qty.get())?)
    })
}

pub(super) fn validate(order: &PlaceOrder) -> Result<(), DomainError> {
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
                self.order = Some(Arc::new(order.clone().into()));
                self.created_at = at;
                enter(self, OrderStatus::Pending);
            }
            OrderEvent::PlacedV2(order) => {
                self.order = Some(Arc::new(order.clone().into()));
                self.created_at = at;
                enter(self, OrderStatus::Pending);
            }
            OrderEvent::Placed(order) => {
                self.order = Some(Arc::new(order.clone()));
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
            OrderEvent::AuthorizationUnknown => self.authorization_unknown = true,
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
                product_version: 0,
            }],
            currency: Currency::USD,
            fx_rate: Some("0.9210".into()),
            payment_token: "tok_visa".into(),
            shipping_address: Some("1 Main St".into()),
            email: "u@example.com".into(),
            catalog_version: 0,
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
            OrderEvent::AuthorizationUnknown,
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

    #[test]
    fn a_checkout_journaled_before_orders_carried_catalog_versions_still_replays() {
        // Variant 14 with the Step 5 fields: byte for byte what Step 5 and 6 nodes wrote.
        let v2 = OrderEvent::PlacedV2(PlaceOrderV2 {
            order_id: "o".into(),
            user_id: "u".into(),
            lines: vec![OrderLineV2 {
                sku: Sku::parse("A").unwrap(),
                qty: Quantity::new(2).unwrap(),
                unit_price: Money::parse("1.25", Currency::USD).unwrap(),
                name: "Thing A".into(),
            }],
            currency: Currency::USD,
            fx_rate: None,
            payment_token: "tok_visa".into(),
            shipping_address: None,
            email: "u@example.com".into(),
        });
        let bytes = encode(&(7u64, &v2)).unwrap();
        assert_eq!(bytes[2], 14, "the Step 5 Placed is still variant 14");
        let (_, back): (u64, OrderEvent) = decode(&bytes).unwrap();
        let mut state = OrderState::default();
        state.apply(7, &back);
        let order = state.order.as_ref().unwrap();
        assert_eq!((order.lines[0].name.as_str(), order.lines[0].product_version), ("Thing A", 0));
        assert_eq!((order.email.as_str(), order.catalog_version), ("u@example.com", 0));
        assert_eq!(state.status, Some(OrderStatus::Pending));
    }
}

/// The order state machine against a model of the world it acts on (SKU actors and a gateway
/// whose calls may take effect and still answer "unavailable"): whatever the answers, the saga
/// ends with stock and money consistent.
#[cfg(test)]
mod machine {
    use proptest::prelude::*;

    use super::*;

    /// What the world holds for one line.
    #[derive(Debug, Default, Clone)]
    struct Line {
        reserved: bool,
        committed: bool,
        released: bool,
        returned: bool,
    }

    /// What the gateway holds.
    #[derive(Debug, Default)]
    struct Payment {
        authorized: bool,
        voided: bool,
        captured: bool,
        refunded: bool,
    }

    /// The world, answering each call by the next choice (success once they run out).
    struct World {
        lines: Vec<Line>,
        pay: Payment,
        choices: std::vec::IntoIter<u8>,
    }

    const LEVELS: StockLevels = StockLevels { on_hand: 1, reserved: 0, available: 1, sold: 0 };

    fn unavailable() -> DomainError {
        DomainError::Unavailable("no answer".into())
    }

    fn gateway_down() -> GatewayError {
        GatewayError::Unavailable("no answer".into())
    }

    impl World {
        fn choice(&mut self) -> u8 {
            self.choices.next().unwrap_or(0)
        }

        /// A call that takes effect on 0 and 1; on 2 is refused (`no`); on 3 takes effect or
        /// not (the next choice says) and answers "unavailable".
        fn call<T, E>(
            &mut self,
            effect: impl FnOnce(&mut Self) -> Result<T, E>,
            no: impl FnOnce(&mut Self) -> Result<T, E>,
            down: E,
        ) -> Result<T, E> {
            match self.choice() % 4 {
                0 | 1 => effect(self),
                2 => no(self),
                _ => {
                    if self.choice().is_multiple_of(2) {
                        let _ = effect(self);
                    }
                    Err(down)
                }
            }
        }

        fn reserve(&mut self, l: usize) -> Result<StockLevels, DomainError> {
            let out = || DomainError::OutOfStock { sku: "S".into(), requested: 1, available: 0 };
            self.call(
                |w| {
                    w.lines[l].reserved = true;
                    Ok(LEVELS)
                },
                |_| Err(out()),
                unavailable(),
            )
        }

        fn commit(&mut self, l: usize) -> Result<StockLevels, DomainError> {
            let gone = || DomainError::ReservationGone("r".into());
            self.call(
                |w| {
                    let line = &mut w.lines[l];
                    if line.committed {
                        return Ok(LEVELS);
                    }
                    if !line.reserved || line.released {
                        return Err(gone());
                    }
                    line.committed = true;
                    Ok(LEVELS)
                },
                // The reservation lapsed: the SKU's timer gave the units back.
                |w| {
                    if !w.lines[l].committed {
                        w.lines[l].released = true;
                        return Err(gone());
                    }
                    Ok(LEVELS)
                },
                unavailable(),
            )
        }

        fn release(&mut self, l: usize) -> Result<StockLevels, DomainError> {
            if self.lines[l].committed {
                return Err(DomainError::AlreadyCommitted("r".into()));
            }
            self.call(
                |w| {
                    w.lines[l].released = true;
                    Ok(LEVELS)
                },
                |_| Err(unavailable()),
                unavailable(),
            )
        }

        fn give_back(&mut self, l: usize) -> Result<StockLevels, DomainError> {
            self.call(
                |w| {
                    w.lines[l].returned = true;
                    Ok(LEVELS)
                },
                |_| Err(unavailable()),
                unavailable(),
            )
        }

        fn authorize(&mut self) -> Result<String, GatewayError> {
            self.call(
                |w| {
                    w.pay.authorized = true;
                    Ok("auth".into())
                },
                |w| {
                    if w.pay.authorized {
                        Ok("auth".into())
                    } else {
                        Err(GatewayError::Declined("card_declined".into()))
                    }
                },
                gateway_down(),
            )
        }

        fn capture(&mut self) -> Result<String, GatewayError> {
            self.call(
                |w| {
                    if w.pay.voided {
                        return Err(GatewayError::Declined("voided".into()));
                    }
                    w.pay.captured = true;
                    Ok("cap".into())
                },
                |w| {
                    if w.pay.captured {
                        Ok("cap".into())
                    } else {
                        Err(GatewayError::Declined("capture_not_allowed".into()))
                    }
                },
                gateway_down(),
            )
        }

        fn void(&mut self, void: Void) -> Result<(), GatewayError> {
            if void == Void::ByKey {
                // Asked again by its key: it names the hold, or says there is none.
                match self.authorize() {
                    Ok(_) => {}
                    Err(GatewayError::Declined(_)) => return Ok(()),
                    Err(down) => return Err(down),
                }
            }
            self.call(
                |w| {
                    if !w.pay.captured {
                        w.pay.voided = true;
                    }
                    Ok(())
                },
                |_| Err(gateway_down()),
                gateway_down(),
            )
        }

        fn refund(&mut self) -> Result<String, GatewayError> {
            self.call(
                |w| {
                    w.pay.refunded = true;
                    Ok("re".into())
                },
                |_| Err(gateway_down()),
                gateway_down(),
            )
        }

        fn run(&mut self, step: Step) -> StepOutcome {
            let each = |w: &mut Self, lines: Vec<usize>, f: fn(&mut Self, usize) -> _| {
                lines.into_iter().map(|l| (l, f(w, l))).collect::<Vec<_>>()
            };
            match step {
                Step::Reserve(lines) => StepOutcome::Reserved(each(self, lines, Self::reserve)),
                Step::Authorize => StepOutcome::Authorized(self.authorize()),
                Step::Commit(lines) => StepOutcome::Committed(each(self, lines, Self::commit)),
                Step::Capture(_) => StepOutcome::Captured(self.capture()),
                Step::Compensate { release, give_back, void, refund } => StepOutcome::Compensated {
                    released: each(self, release, Self::release),
                    returned: each(self, give_back, Self::give_back),
                    voided: void.map(|v| self.void(v)),
                    refunded: refund.map(|_| self.refund()),
                },
            }
        }
    }

    fn place(lines: usize) -> PlaceOrder {
        PlaceOrder {
            order_id: "o".into(),
            user_id: "u".into(),
            lines: (0..lines)
                .map(|i| OrderLine {
                    sku: Sku::parse(&format!("S{i}")).unwrap(),
                    qty: Quantity::new(1).unwrap(),
                    unit_price: Money::parse("1.00", Currency::USD).unwrap(),
                    name: format!("Thing {i}"),
                    product_version: 0,
                })
                .collect(),
            currency: Currency::USD,
            fx_rate: None,
            payment_token: "tok_visa".into(),
            shipping_address: None,
            email: "u@example.com".into(),
            catalog_version: 0,
        }
    }

    proptest! {
        #[test]
        fn every_saga_ends_with_stock_and_money_consistent(
            lines in 1usize..4,
            choices in proptest::collection::vec(any::<u8>(), 0..80),
            cancel in any::<bool>(),
        ) {
            let mut world = World {
                lines: vec![Line::default(); lines],
                pay: Payment::default(),
                choices: choices.into_iter(),
            };
            let mut order = OrderState::default();
            order.apply(0, &OrderEvent::Placed(place(lines)));
            let mut cancelled = false;
            let mut steps = 0;
            loop {
                steps += 1;
                prop_assert!(steps < 1000, "the saga did not end: {order:?}");
                if cancel && !cancelled && order.status == Some(OrderStatus::Confirmed) {
                    cancelled = true;
                    order.apply(0, &OrderEvent::CancelRequested);
                }
                let events = match order.next() {
                    Next::Idle => break,
                    Next::Record(events) => events,
                    Next::Run(step) => order.decide_outcome(world.run(step)),
                };
                for event in &events {
                    order.apply(0, event);
                }
            }
            prop_assert!(!order.in_progress() && !order.cleanup_pending());
            let (pay, held) = (&world.pay, |l: &Line| l.reserved && !l.committed && !l.released);
            match order.status {
                Some(OrderStatus::Confirmed) => {
                    prop_assert!(world.lines.iter().all(|l| l.committed && !l.returned));
                    prop_assert!(pay.captured && !pay.refunded && !pay.voided);
                }
                Some(OrderStatus::Failed | OrderStatus::Cancelled) => {
                    prop_assert!(!world.lines.iter().any(held), "stock still held: {:?}", world.lines);
                    prop_assert!(
                        world.lines.iter().all(|l| !l.committed || l.returned),
                        "sold stock not returned: {:?}", world.lines
                    );
                    prop_assert!(!pay.captured || pay.refunded, "money kept: {pay:?}");
                    prop_assert!(!pay.authorized || pay.captured || pay.voided, "hold kept: {pay:?}");
                }
                other => prop_assert!(false, "ended {other:?}"),
            }
        }
    }
}
