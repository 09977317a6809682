//! `/v1/orders` and `/v1/admin/orders`: order history, one order, cancellation.
//!
//! A customer sees only their own orders: another customer's order id answers 404, exactly as an
//! order that does not exist (so ids cannot be probed). Lists are read from the order indexes that
//! every order writes in its own appends when it is placed and when it ends: an order whose saga
//! is running is listed as `pending` (`reserved` and `paid` are passing states the lists never
//! show); the order itself shows every step.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use storefront_actors::order::{FailureReason, OrderStatus, OrderSummary, OrderView};
use storefront_actors::{DomainError, Money};
use storefront_storage::Table;

use super::Page;
use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::extract::{Query, Req};
use crate::reply::{ApiError, ApiResult};

/// Most index entries one list request reads (a filtered page may come back short, with a cursor).
const MAX_SCANNED: usize = 5_000;

/// An instant as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// One order line.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderItem {
    /// The SKU.
    pub sku: String,
    /// Units.
    pub qty: u32,
    /// Price of one unit, in the order's currency, fixed at checkout.
    #[schema(value_type = super::MoneySchema)]
    pub unit_price: Money,
    /// `unit_price * qty`.
    #[schema(value_type = super::MoneySchema)]
    pub line_total: Money,
    /// The catalog version of the product record that priced the line (0 for orders placed
    /// before the catalog had versions).
    pub product_version: u64,
}

/// A status change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderEventView {
    /// The status entered.
    pub status: String,
    /// When (RFC 3339).
    pub at: String,
}

/// An order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderBody {
    /// The order.
    pub order_id: String,
    /// The buyer.
    pub user_id: String,
    /// `pending`, `reserved`, `paid`, `confirmed`, `cancelled` or `failed`.
    pub status: String,
    /// The lines.
    pub items: Vec<OrderItem>,
    /// Sum of the lines, in the order's currency.
    #[schema(value_type = super::MoneySchema)]
    pub total: Money,
    /// Units of the order's currency per unit of the base currency used at checkout, when the
    /// order is not in the base currency.
    pub fx_rate: Option<String>,
    /// The catalog version (products and FX rates) the checkout priced from.
    pub catalog_version: u64,
    /// When it was placed (RFC 3339).
    pub created_at: String,
    /// Every status change, oldest first.
    pub events: Vec<OrderEventView>,
    /// Why a failed order failed: `out_of_stock`, `payment_declined`, `payment_gateway_error`,
    /// `reservation_lapsed`, `stock_unavailable`, `purchase_limit`.
    pub failure_reason: Option<&'static str>,
}

/// The label of a failure.
pub fn failure_label(reason: &FailureReason) -> &'static str {
    match reason {
        FailureReason::OutOfStock { .. } => "out_of_stock",
        FailureReason::PaymentDeclined { .. } => "payment_declined",
        FailureReason::PaymentGatewayError => "payment_gateway_error",
        FailureReason::ReservationLapsed => "reservation_lapsed",
        FailureReason::StockUnavailable => "stock_unavailable",
        FailureReason::PurchaseLimit { .. } => "purchase_limit",
    }
}

impl OrderBody {
    /// The API's view of an order.
    pub fn new(view: &OrderView) -> Result<Self, ApiError> {
        let mut items = Vec::with_capacity(view.lines.len());
        for line in &view.lines {
            items.push(OrderItem {
                sku: line.sku.to_string(),
                qty: line.qty.get(),
                unit_price: line.unit_price,
                line_total: line.unit_price.checked_mul(line.qty.get())?,
                product_version: line.product_version,
            });
        }
        Ok(Self {
            order_id: view.order_id.clone(),
            user_id: view.user_id.clone(),
            status: view.status.to_string(),
            items,
            total: view.total,
            fx_rate: view.fx_rate.clone(),
            catalog_version: view.catalog_version,
            created_at: rfc3339(view.created_at_ms),
            events: view
                .history
                .iter()
                .map(|c| OrderEventView { status: c.status.to_string(), at: rfc3339(c.at_ms) })
                .collect(),
            failure_reason: view.failure.as_ref().map(failure_label),
        })
    }
}

/// An order in a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderListItem {
    /// The order.
    pub order_id: String,
    /// The buyer.
    pub user_id: String,
    /// Status as of its last change.
    pub status: String,
    /// Total in the order's currency.
    #[schema(value_type = super::MoneySchema)]
    pub total: Money,
    /// When it was placed (RFC 3339).
    pub created_at: String,
}

impl From<OrderSummary> for OrderListItem {
    fn from(s: OrderSummary) -> Self {
        Self {
            order_id: s.order_id,
            user_id: s.user_id,
            status: s.status.to_string(),
            total: s.total,
            created_at: rfc3339(s.created_at_ms),
        }
    }
}

/// Refuses ids that cannot be order ids, before any entity is started for them.
pub fn check_order_id(id: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(ApiError::not_found(format!("order {id}"))) }
}

/// The order, if the caller may see it (its buyer, or an admin); 404 otherwise.
async fn visible(state: &AppState, me: &Principal, id: &str) -> Result<OrderView, ApiError> {
    check_order_id(id)?;
    let not_found = || ApiError::not_found(format!("order {id}"));
    let view = match state.regions.order(id).await {
        Ok(view) => view,
        Err(DomainError::NotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    if view.user_id != me.user_id && !me.has(Role::Admin) {
        return Err(not_found());
    }
    Ok(view)
}

/// A page of `table` under `prefix`, newest first, keeping the entries `keep` accepts.
async fn page(
    state: &AppState,
    table: Table,
    prefix: &str,
    query: &Query,
    keep: impl Fn(&OrderSummary) -> bool,
) -> Result<Page<OrderListItem>, ApiError> {
    let limit = query.limit()?;
    let mut after = match query.get("cursor") {
        Some(cursor) => {
            if !cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'/')
            {
                return Err(ApiError::validation("cursor", "not a cursor of this list"));
            }
            Some(format!("{prefix}{cursor}").into_bytes())
        }
        None => None,
    };
    let mut items = Vec::new();
    let mut scanned = 0;
    loop {
        let chunk = state
            .store
            .scan(table, prefix.as_bytes(), after.as_deref(), 200)
            .await
            .map_err(DomainError::from)?;
        let exhausted = chunk.len() < 200;
        scanned += chunk.len();
        for (key, value) in chunk {
            let summary: OrderSummary = serde_json::from_slice(&value)
                .map_err(|e| ApiError::internal(format!("order index entry: {e}")))?;
            after = Some(key);
            if keep(&summary) {
                items.push(OrderListItem::from(summary));
                if items.len() == limit {
                    break;
                }
            }
        }
        // A full page (there may be more), or a rare status over a long history (answer what was
        // found): the rest starts after the last entry read.
        if items.len() == limit || (!exhausted && scanned >= MAX_SCANNED) {
            let next_cursor =
                after.map(|k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
            return Ok(Page { items, next_cursor });
        }
        if exhausted {
            return Ok(Page { items, next_cursor: None });
        }
    }
}

#[utoipa::path(get, operation_id = "orders_list", path = "/v1/orders", tag = "orders", security(("bearer" = [])),
    params(("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "`{items: [{order_id, user_id, status, total, created_at}], next_cursor}`, newest first")))]
/// The caller's orders.
pub async fn list(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let me = state.customer(&req).await?;
    let prefix = format!("{}/", me.user_id);
    super::ok(&page(&state, Table::OrdersByUser, &prefix, &req.query()?, |_| true).await?)
}

#[utoipa::path(get, operation_id = "orders_list_all", path = "/v1/admin/orders", tag = "orders", security(("bearer" = [])),
    params(("status" = Option<String>, Query), ("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "Every order, newest first, optionally of one status"), (status = 403, description = "Not an admin")))]
/// All orders (admin).
pub async fn list_all(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    state.admin(&req).await?;
    let query = req.query()?;
    let status = match query.get("status") {
        None => None,
        Some(s @ ("pending" | "reserved" | "paid" | "confirmed" | "cancelled" | "failed")) => {
            Some(s.to_owned())
        }
        Some(_) => {
            return Err(ApiError::validation(
                "status",
                "one of pending, reserved, paid, confirmed, cancelled, failed",
            ));
        }
    };
    let keep = |s: &OrderSummary| status.as_ref().is_none_or(|want| s.status.to_string() == *want);
    super::ok(&page(&state, Table::Orders, "", &query, keep).await?)
}

#[utoipa::path(get, operation_id = "orders_get", path = "/v1/orders/{order_id}", tag = "orders", security(("bearer" = [])),
    params(("order_id" = String, Path)),
    responses((status = 200, body = OrderBody), (status = 404, description = "No such order, or not the caller's")))]
/// One order (its buyer or an admin).
pub async fn get(id: String, state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let me = state.caller(&req).await?;
    let view = visible(&state, &me, &id).await?;
    super::ok(&OrderBody::new(&view)?)
}

#[utoipa::path(post, operation_id = "orders_cancel", path = "/v1/orders/{order_id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("order_id" = String, Path)),
    responses((status = 200, body = OrderBody, description = "Cancelled: refunded and restocked"),
        (status = 503, description = "`/problems/cancellation-in-progress` with `Retry-After`: the refund outlasted the wait and goes on; a retry answers 200 once done"),
        (status = 404, description = "No such order, or not the caller's"),
        (status = 409, description = "`/problems/invalid-order-state`: not a confirmed order")))]
/// Cancels a confirmed order (its buyer or an admin).
pub async fn cancel(id: String, state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let me = state.caller(&req).await?;
    req.no_fields()?;
    let view = visible(&state, &me, &id).await?;
    // The contract: only a confirmed order can be cancelled; a cancelled one answers 409 too.
    if view.status != OrderStatus::Confirmed {
        return Err(DomainError::InvalidOrderState {
            order_id: id,
            status: view.status.to_string(),
            action: "cancelled".into(),
        }
        .into());
    }
    match state.regions.cancel_order(&id, state.checkout_wait).await {
        Ok(view) => super::ok(&OrderBody::new(&view)?),
        // The refund outlasted the wait: it goes on; a retry joins it and answers 200.
        Err(DomainError::Unavailable(_)) => Err(ApiError::new(crate::Problem::new(
            crate::ProblemType::CancellationInProgress,
            format!("order {id} is being cancelled; retry to get the cancelled order"),
        ))
        .with_header("retry-after", http::HeaderValue::from_static("1"))),
        Err(e) => Err(e.into()),
    }
}
