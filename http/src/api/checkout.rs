//! `POST /v1/checkout`: runs the checkout saga for the caller's cart or the given items.
//!
//! The `Idempotency-Key` is required. The order id derives from the caller and the key, so a
//! retry of the same checkout always reaches the same order: a retry after a crash resumes it
//! and answers its outcome. The order is the key's answer: its placement writes the key's claim,
//! and a retry asks the order, wherever it runs now, and answers as its saga ended (the same
//! bytes as the first answer, marked replayed), so nothing more is written per checkout. A 202
//! names an order that is placed (durably) and still running: a retry gets its final answer once
//! it has one (or the order is polled with `GET /v1/orders/{id}`).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use storefront_actors::cart::CartCommand;
use storefront_actors::order::{FailureReason, OrderLine, OrderStatus, OrderView, PlaceOrder};
use storefront_actors::{DomainError, Money, Quantity, Sku};
use storefront_cluster::Checkout;

use super::Claimed;
use crate::admission::Busy;
use crate::app::AppState;
use crate::catalog::Product;
use crate::extract::Req;
use crate::idempotency::{IdempotencyError, request_hash};
use crate::reply::{ApiError, ApiResponse, ApiResult};
use crate::{Problem, ProblemType};

/// One line to buy.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutItem {
    /// The SKU.
    pub sku: String,
    /// Units, 1 to 100.
    #[schema(minimum = 1, maximum = 100)]
    pub qty: u32,
}

/// `POST /v1/checkout` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// The payment gateway's token (`tok_...`); card data is refused.
    #[schema(pattern = "^tok_[A-Za-z0-9_]+$", max_length = 255)]
    pub payment_token: String,
    /// The order's currency (default: the shop's base currency).
    pub currency: Option<String>,
    /// What to buy; without it, the cart (emptied once the order is confirmed).
    pub items: Option<Vec<CheckoutItem>>,
    /// Where to ship (free-form JSON, at most 2,000 bytes).
    #[schema(value_type = Option<Object>)]
    pub shipping_address: Option<serde_json::Value>,
}

/// The checkout's answer (201 confirmed, 202 pending).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckoutResponse {
    /// The order.
    pub order_id: String,
    /// `confirmed` (201) or `pending` (202).
    pub status: String,
    /// The order's total (201 only).
    #[schema(value_type = Option<super::MoneySchema>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<Money>,
}

fn check_token(token: &str) -> Result<(), ApiError> {
    let digits = token.bytes().filter(u8::is_ascii_digit).count();
    if digits >= 12 && token.bytes().all(|b| b.is_ascii_digit() || b == b' ' || b == b'-') {
        return Err(ApiError::validation(
            "payment_token",
            "looks like a card number: send the gateway's token (tok_...), never card data",
        ));
    }
    let well_formed = token.starts_with("tok_")
        && (5..=255).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if well_formed {
        Ok(())
    } else {
        Err(ApiError::validation(
            "payment_token",
            "must be a gateway token: tok_ and letters, digits, _",
        ))
    }
}

/// What to buy, merged by SKU: the request's items or the cart's lines.
async fn wanted(
    state: &AppState,
    user_id: &str,
    items: Option<Vec<CheckoutItem>>,
) -> Result<(BTreeMap<Sku, (Arc<Product>, u32)>, bool), ApiError> {
    let (lines, from_cart): (Vec<(String, u32, String)>, bool) = match items {
        Some(items) => (
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| (item.sku, item.qty, format!("items[{i}]")))
                .collect(),
            false,
        ),
        None => {
            let cart = state.regions.cart(user_id).await?;
            (cart.lines.into_iter().map(|l| (l.sku, l.qty, "cart".to_owned())).collect(), true)
        }
    };
    if lines.is_empty() {
        let field = if from_cart { "cart" } else { "items" };
        return Err(ApiError::validation(field, "nothing to buy"));
    }
    // Merged by the product's own SKU: SKUs are case-insensitive, and `a-1` and `A-1` are one
    // line of the product whose SKU is `A-1`.
    let mut merged: BTreeMap<Sku, (Arc<Product>, u32)> = BTreeMap::new();
    for (sku, qty, field) in lines {
        let sku = Sku::parse(&sku)
            .map_err(|e| ApiError::validation(format!("{field}.sku"), e.to_string()))?;
        Quantity::new(qty)
            .map_err(|e| ApiError::validation(format!("{field}.qty"), e.to_string()))?;
        let product = state
            .catalog
            .by_sku(&sku)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no product has sku {sku}")))?;
        let (_, total) = merged.entry(product.sku.clone()).or_insert((product, 0));
        *total += qty;
        if *total > Quantity::MAX {
            return Err(ApiError::validation(
                format!("{field}.qty"),
                format!("at most {} units of one SKU", Quantity::MAX),
            ));
        }
    }
    if merged.len() > storefront_actors::order::MAX_LINES {
        return Err(ApiError::validation(
            "items",
            format!("at most {} SKUs", storefront_actors::order::MAX_LINES),
        ));
    }
    Ok((merged, from_cart))
}

/// The order id of a checkout: the caller's key names it, whatever the request, so that one
/// order actor, wherever it runs, decides between two requests sent with one key to two nodes
/// at once (the second, of another body, is refused as a key reused).
fn order_id(user_id: &str, key: &str) -> String {
    let hash = request_hash(user_id, key, b"");
    format!("ord_{}", &hash[..32])
}

/// The order id of a key used again after its retention, for another request (and of every
/// checkout before order ids were named by the key alone).
fn order_id_of_request(user_id: &str, key: &str, request: &str) -> String {
    let hash = request_hash(user_id, key, request.as_bytes());
    format!("ord_{}", &hash[..32])
}

/// Whether `view` is older than the retention of idempotency keys: an order of an earlier use of
/// its key, not of this request.
fn of_an_earlier_use(view: &OrderView) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now.saturating_sub(view.created_at_ms) > crate::idempotency::RETENTION.as_millis() as u64
}

#[utoipa::path(post, operation_id = "checkout_checkout", path = "/v1/checkout", tag = "orders", security(("bearer" = [])),
    request_body = CheckoutRequest,
    params(("Idempotency-Key" = String, Header, description = "Required, 1-255 printable ASCII. A retry returns the first final response byte for byte, except an out-of-stock 409 decided before any order was placed (it changed nothing, so nothing is kept: the retry is decided afresh, and buys if stock came back) and a 429 (nothing was held)")),
    responses((status = 201, body = CheckoutResponse, description = "Confirmed: stock committed and payment captured"),
        (status = 202, body = CheckoutResponse, description = "Still running after the configured wait: the order is placed; poll `GET /v1/orders/{order_id}`, or retry with the same key, which answers the order's final response once it has one"),
        (status = 400, description = "Validation (missing key, bad token, qty, currency, empty cart)"),
        (status = 402, description = "`/problems/payment-declined`"),
        (status = 404, description = "A SKU no product has"),
        (status = 409, description = "`/problems/out-of-stock` (nothing stays held; when no order was placed, as after a sell-out, the node answers from the stock levels it last heard of, and the answer is not kept under the key); `/problems/purchase-limit`: a line would take the buyer past the SKU's `max_per_customer` (nothing held); `/problems/idempotency-in-progress` for a duplicate while the first runs"),
        (status = 422, description = "`/problems/idempotency-key-reused`"),
        (status = 429, description = "`/problems/sku-busy` with `Retry-After`: a SKU of the checkout has more checkouts under way on this node than it serves within the checkout wait; nothing is held and the answer is not kept under the key (other SKUs are served as usual)"),
        (status = 502, description = "`/problems/payment-gateway-error`: the gateway kept failing; the order failed and released its stock")))]
/// Checks out.
pub async fn checkout(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let me = state.customer(&req).await?;
    let key = req
        .idempotency_key()?
        .ok_or_else(|| {
            ApiError::validation("Idempotency-Key", "the header is required on checkout")
        })?
        .to_owned();
    let request = request_hash("POST", "/v1/checkout", &req.body);
    // Validation runs under the key too: the same key with another body is 422, even if invalid.
    // The order id derives from the key: the effects are keyed.
    super::idempotent_keyed(&state, &me.user_id, &key, &request, |claim| {
        place(&state, &req, OrderIds { user_id: &me.user_id, key: &key, request: &request }, claim)
    })
    .await
}

/// What names a checkout's order: the caller, the key and the request's hash.
struct OrderIds<'a> {
    user_id: &'a str,
    key: &'a str,
    request: &'a str,
}

impl OrderIds<'_> {
    /// The key's order ([`order_id`]).
    fn of_key(&self) -> String {
        order_id(self.user_id, self.key)
    }

    /// The order of this request under a key used again after its retention
    /// ([`order_id_of_request`]): needed only then, and by a retry.
    fn of_request(&self) -> String {
        order_id_of_request(self.user_id, self.key, self.request)
    }
}

/// Validates the checkout, places the order (with the idempotency `claim` in the same write) and
/// answers with its outcome within the wait.
async fn place(state: &Arc<AppState>, req: &Req, ids: OrderIds<'_>, claim: Claimed) -> ApiResult {
    let user_id = ids.user_id;
    if claim.before {
        // A retry of a checkout that placed its order (or may have): the order answers, not the
        // cart as it is now (emptied by that very order, perhaps).
        for order_id in [ids.of_key(), ids.of_request()] {
            match state.regions.order(&order_id).await {
                Ok(view) if of_an_earlier_use(&view) => {}
                Ok(view) => {
                    // The order answers the key, now and on every later retry.
                    claim.answered_by_effects();
                    let view = if saga_ended(&view) {
                        view
                    } else {
                        state.regions.order_outcome(&order_id, state.checkout_wait).await?
                    };
                    if !saga_ended(&view) {
                        return answer(Checkout::Pending { order_id });
                    }
                    return replayed(ended(&as_its_saga_ended(view)));
                }
                Err(DomainError::NotFound { .. }) => {}
                // Whether the order exists is not known now (its owner cannot be reached): a
                // pending answer could name an order that was never placed.
                Err(e) => return Err(e.into()),
            }
        }
    }
    let body: CheckoutRequest = req.json()?;
    check_token(&body.payment_token)?;
    let currency = state.display_currency(body.currency.as_deref())?;
    let shipping_address = match &body.shipping_address {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => {
            let text = value.to_string();
            if text.len() > 2000 {
                return Err(ApiError::validation("shipping_address", "at most 2000 bytes"));
            }
            Some(text)
        }
    };
    let (wanted, from_cart) = wanted(state, user_id, body.items).await?;
    let (rates, catalog_version) = state.catalog.fx_versioned();
    let mut lines = Vec::with_capacity(wanted.len());
    for (sku, (product, qty)) in wanted {
        let unit_price = rates.convert(&product.price, currency)?;
        // `qty` was checked to be 1..=100 above.
        let qty = Quantity::new(qty)?;
        lines.push(OrderLine {
            sku,
            qty,
            unit_price,
            name: product.name.clone(),
            product_version: product.version,
        });
    }
    // A line its SKU cannot fill now is answered at once, without an order and without a
    // write: in a flash sale most attempts come after the sell-out, and each would otherwise
    // place, durably fail and index an order that never held anything. The units are those
    // the node's stock feed last heard of (its own actors' durable levels at once, its peers'
    // within their forwarding period), so no round trip to the SKU's owner; a SKU it has not
    // heard of is asked. Stock taken after this is still decided by the saga's reserve.
    for line in &lines {
        let available = match state.feed.available(line.sku.as_str()) {
            Some(available) => available,
            None => state.regions.stock_levels(line.sku.as_str()).await?.available,
        };
        if available < u64::from(line.qty.get()) {
            return Err(out_of_stock(&line.sku, available, None));
        }
    }
    // A SKU with more checkouts under way than it serves within the wait turns this one away
    // before it holds anything; the others' checkouts go on as usual.
    let _admitted = state.admission.admit(lines.iter().map(|l| &l.sku)).map_err(sku_busy)?;
    // The confirmation goes to the address the account has now (the events carry it, so no
    // consumer has to call back).
    let email = state
        .users
        .get(user_id)
        .await?
        .map(|user| user.email)
        .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
    let fx_rate = (currency != state.base)
        .then(|| rates.rate(currency).map(|r| r.normalize().to_string()))
        .flatten();
    let bought: Vec<Sku> = lines.iter().map(|l| l.sku.clone()).collect();
    let wait = state.checkout_wait;
    let order = PlaceOrder {
        // Named only now: most attempts of a sale are answered above, without an order.
        order_id: ids.of_key(),
        user_id: user_id.to_owned(),
        lines,
        currency,
        fx_rate,
        payment_token: body.payment_token,
        shipping_address,
        email,
        catalog_version,
    };
    let claim = claim.write()?;
    let outcome = match state.regions.checkout_with(order.clone(), vec![claim.clone()], wait).await
    {
        // The key's order is another request's: one sent at once to another node (refused: the
        // key is that request's), or one of the key's use before its retention (this request
        // gets an order of its own).
        Err(DomainError::OrderConflict(_)) => {
            let earlier = state.regions.order(&order.order_id).await?;
            if !of_an_earlier_use(&earlier) {
                return Err(IdempotencyError::Reused.into());
            }
            let order = PlaceOrder { order_id: ids.of_request(), ..order };
            match state.regions.checkout_with(order, vec![claim], wait).await {
                Err(DomainError::OrderConflict(_)) => return Err(IdempotencyError::Reused.into()),
                outcome => outcome?,
            }
        }
        outcome => outcome?,
    };
    if from_cart {
        empty_cart_on_confirm(state, user_id, &outcome, bought).await;
    }
    answer(outcome)
}

/// The answer for a checkout's outcome within the wait.
fn answer(outcome: Checkout) -> ApiResult {
    match outcome {
        Checkout::Ended(view) => ended(&view),
        Checkout::Pending { order_id } => {
            let location = HeaderValue::try_from(format!("/v1/orders/{order_id}"))
                .map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(ApiResponse::json(
                StatusCode::ACCEPTED,
                &CheckoutResponse { order_id, status: "pending".into(), total: None },
            )?
            .with_header("location", location))
        }
    }
}

/// Removes the bought lines from the cart once the order is confirmed: now, or (for a 202) when
/// it confirms later, watched until the node stops. A failure to empty the cart never turns a
/// confirmed order into an error.
async fn empty_cart_on_confirm(
    state: &Arc<AppState>,
    user_id: &str,
    outcome: &Checkout,
    bought: Vec<Sku>,
) {
    match outcome {
        Checkout::Ended(view) => {
            if view.status == OrderStatus::Confirmed
                && let Err(e) = empty_bought_lines(state, user_id, &bought).await
            {
                tracing::warn!(order_id = %view.order_id, error = ?e.problem, "cart not emptied");
            }
        }
        Checkout::Pending { order_id } => {
            let (state, user_id, order_id) = (state.clone(), user_id.to_owned(), order_id.clone());
            let mut stopping = state.stopping.clone();
            tokio::spawn(async move {
                let outcome = tokio::select! {
                    outcome = state.regions.order_outcome(&order_id, LATE_CONFIRM_WAIT) => outcome,
                    _ = stopping.wait_for(|stopping| *stopping) => return,
                };
                if outcome.is_ok_and(|view| view.status == OrderStatus::Confirmed)
                    && let Err(e) = empty_bought_lines(&state, &user_id, &bought).await
                {
                    tracing::warn!(%order_id, error = ?e.problem, "cart not emptied after a late confirmation");
                }
            });
        }
    }
}

/// How long a checkout answered 202 is watched to empty its cart when it confirms.
const LATE_CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the bought SKUs' lines from the cart (lines added meanwhile for other SKUs stay).
async fn empty_bought_lines(
    state: &AppState,
    user_id: &str,
    bought: &[Sku],
) -> Result<(), ApiError> {
    for sku in bought {
        state.regions.update_cart(user_id, CartCommand::Remove { sku: sku.clone() }).await?;
    }
    Ok(())
}

/// 409 `/problems/out-of-stock`: `sku` has only `available` units (seen before an order was
/// placed, or by the saga of `order_id`).
fn out_of_stock(sku: &impl std::fmt::Display, available: u64, order_id: Option<&str>) -> ApiError {
    let order = order_id.map_or(String::new(), |id| format!("order {id}: "));
    ApiError::new(Problem::new(
        ProblemType::OutOfStock,
        format!("{order}{sku} has {available} available; nothing is held"),
    ))
}

/// 429 `/problems/sku-busy`: the SKU has more checkouts under way than it serves within the
/// checkout wait.
fn sku_busy(busy: Busy) -> ApiError {
    ApiError::new(Problem::new(
        ProblemType::SkuBusy,
        format!(
            "{} has {} checkouts under way on this node, more than it serves within the checkout wait; nothing is held",
            busy.sku, busy.under_way
        ),
    ))
    .with_header("retry-after", HeaderValue::from(busy.retry_after_secs))
}

/// Whether the checkout saga of `view` has ended, and so decided the checkout's answer (a
/// confirmed order being cancelled is still in progress, but its checkout confirmed).
fn saga_ended(view: &OrderView) -> bool {
    matches!(view.status, OrderStatus::Confirmed | OrderStatus::Cancelled | OrderStatus::Failed)
}

/// `view` as its saga ended: a cancelled order had confirmed (only a confirmed order can be
/// cancelled), and its checkout answered so.
fn as_its_saga_ended(mut view: OrderView) -> OrderView {
    if view.status == OrderStatus::Cancelled {
        view.status = OrderStatus::Confirmed;
    }
    view
}

/// `answer` marked as the key's answer given again (`Idempotent-Replayed: true`).
fn replayed(answer: ApiResult) -> ApiResult {
    let header = ("idempotent-replayed", HeaderValue::from_static("true"));
    match answer {
        Ok(response) => Ok(response.with_header(header.0, header.1)),
        Err(error) => Err(error.with_header(header.0, header.1)),
    }
}

/// The answer for a saga that ended.
fn ended(view: &OrderView) -> ApiResult {
    let problem = |kind, detail: String| {
        Err(ApiError::new(Problem::new(kind, format!("order {}: {detail}", view.order_id))))
    };
    match (&view.status, &view.failure) {
        (OrderStatus::Failed, Some(FailureReason::OutOfStock { sku, available })) => {
            Err(out_of_stock(sku, *available, Some(&view.order_id)))
        }
        (OrderStatus::Failed, Some(FailureReason::PurchaseLimit { sku, limit })) => problem(
            ProblemType::PurchaseLimit,
            format!("sku {sku} is limited to {limit} per customer; nothing is held"),
        ),
        (OrderStatus::Failed, Some(FailureReason::PaymentDeclined { code })) => {
            problem(ProblemType::PaymentDeclined, format!("declined: {code}"))
        }
        (OrderStatus::Failed, Some(FailureReason::PaymentGatewayError)) => problem(
            ProblemType::PaymentGatewayError,
            "the payment gateway kept failing; the order failed and its stock was released".into(),
        ),
        (OrderStatus::Failed, reason) => problem(
            ProblemType::CheckoutFailed,
            format!(
                "{}; nothing is held; try again with a new Idempotency-Key",
                reason.as_ref().map_or("failed", super::orders::failure_label)
            ),
        ),
        (status, _) => {
            let location = HeaderValue::try_from(format!("/v1/orders/{}", view.order_id))
                .map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(ApiResponse::json(
                StatusCode::CREATED,
                &CheckoutResponse {
                    order_id: view.order_id.clone(),
                    status: status.to_string(),
                    total: Some(view.total),
                },
            )?
            .with_header("location", location))
        }
    }
}
