//! `/v1/cart`: the caller's cart (its id is the user id). A cart holds no stock: adding more than
//! is available is refused (409) at the time, and checkout reserves.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use storefront_actors::cart::{CartCommand, CartView};
use storefront_actors::{Currency, Money, Quantity, Sku};

use super::known_sku;
use crate::app::AppState;
use crate::extract::Req;
use crate::reply::{ApiError, ApiResult};

/// `POST /v1/cart/items` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    /// The SKU.
    pub sku: String,
    /// Units to add, 1 to 100 (a line holds at most 100).
    #[schema(minimum = 1, maximum = 100)]
    pub qty: u32,
}

/// `PUT /v1/cart/items/{sku}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetItem {
    /// Units, 0 to 100; 0 removes the line.
    #[schema(minimum = 0, maximum = 100)]
    pub qty: u32,
}

/// One cart line, priced now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CartItem {
    /// The SKU.
    pub sku: String,
    /// Its product.
    pub product_id: String,
    /// The product's name.
    pub name: String,
    /// Units.
    pub qty: u32,
    /// Price of one unit in the requested currency.
    #[schema(value_type = super::MoneySchema)]
    pub unit_price: Money,
    /// `unit_price * qty`.
    #[schema(value_type = super::MoneySchema)]
    pub line_total: Money,
}

/// The cart, priced now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CartBody {
    /// The cart (the user's id).
    pub cart_id: String,
    /// Lines, by SKU.
    pub items: Vec<CartItem>,
    /// Sum of the lines.
    #[schema(value_type = super::MoneySchema)]
    pub total: Money,
}

/// `cart` priced from the catalog in `currency`.
async fn priced(
    state: &AppState,
    cart_id: &str,
    cart: &CartView,
    currency: Currency,
) -> Result<CartBody, ApiError> {
    let mut items = Vec::with_capacity(cart.lines.len());
    let mut total = Money::zero(currency);
    for line in &cart.lines {
        let Ok(sku) = Sku::parse(&line.sku) else { continue };
        let Some(product) = state.catalog.by_sku(&sku).await? else { continue };
        let unit_price = state.show(&product.price, currency)?;
        let line_total = unit_price.checked_mul(line.qty)?;
        total = total.checked_add(&line_total)?;
        items.push(CartItem {
            sku: line.sku.clone(),
            product_id: product.product_id.clone(),
            name: product.name.clone(),
            qty: line.qty,
            unit_price,
            line_total,
        });
    }
    Ok(CartBody { cart_id: cart_id.to_owned(), items, total })
}

/// Refuses more units of `sku` (a product's own) than are available now: 409.
async fn check_available(state: &AppState, sku: &Sku, want: u32) -> Result<(), ApiError> {
    let levels = state.regions.stock_levels(sku.as_str()).await?;
    if u64::from(want) > levels.available {
        return Err(storefront_actors::DomainError::OutOfStock {
            sku: sku.to_string(),
            requested: u64::from(want),
            available: levels.available,
        }
        .into());
    }
    Ok(())
}

async fn answer(state: &AppState, req: &Req, user_id: &str, cart: CartView) -> ApiResult {
    let currency = state.display_currency(req.query()?.get("currency"))?;
    super::ok(&priced(state, user_id, &cart, currency).await?)
}

#[utoipa::path(get, operation_id = "cart_get", path = "/v1/cart", tag = "cart", security(("bearer" = [])),
    params(("currency" = Option<String>, Query)), responses((status = 200, body = CartBody)))]
/// The caller's cart.
pub async fn get(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let me = state.customer(&req).await?;
    let cart = state.regions.cart(&me.user_id).await?;
    answer(&state, &req, &me.user_id, cart).await
}

#[utoipa::path(post, operation_id = "cart_add", path = "/v1/cart/items", tag = "cart", security(("bearer" = [])), request_body = AddItem,
    responses((status = 200, body = CartBody), (status = 400, description = "Bad SKU or qty"),
        (status = 404, description = "No product has this SKU"), (status = 409, description = "`/problems/out-of-stock`")))]
/// Adds units of a SKU.
pub async fn add(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let me = state.customer(&req).await?;
    let body: AddItem = req.json()?;
    let sku = known_sku(&state, &body.sku).await?;
    let qty = Quantity::new(body.qty).map_err(|e| ApiError::validation("qty", e.to_string()))?;
    let current = state.regions.cart(&me.user_id).await?;
    let have = current.lines.iter().find(|l| l.sku == sku.as_str()).map_or(0, |l| l.qty);
    check_available(&state, &sku, have + qty.get()).await?;
    let cart = state.regions.update_cart(&me.user_id, CartCommand::Add { sku, qty }).await?;
    answer(&state, &req, &me.user_id, cart).await
}

#[utoipa::path(put, operation_id = "cart_set_qty", path = "/v1/cart/items/{sku}", tag = "cart", security(("bearer" = [])), request_body = SetItem,
    params(("sku" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$")),
    responses((status = 200, body = CartBody), (status = 404, description = "No product has this SKU"),
        (status = 409, description = "`/problems/out-of-stock`")))]
/// Sets a line's units (0 removes it).
pub async fn set_qty(sku: String, state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let me = state.customer(&req).await?;
    let body: SetItem = req.json()?;
    let sku = known_sku(&state, &sku).await?;
    if body.qty > Quantity::MAX {
        return Err(ApiError::validation("qty", format!("must be 0 to {}", Quantity::MAX)));
    }
    let command = if body.qty == 0 {
        CartCommand::Remove { sku }
    } else {
        check_available(&state, &sku, body.qty).await?;
        CartCommand::SetQty { sku, qty: body.qty }
    };
    let cart = state.regions.update_cart(&me.user_id, command).await?;
    answer(&state, &req, &me.user_id, cart).await
}

#[utoipa::path(delete, operation_id = "cart_remove", path = "/v1/cart/items/{sku}", tag = "cart", security(("bearer" = [])),
    params(("sku" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$")), responses((status = 200, body = CartBody), (status = 404, description = "No product has this SKU")))]
/// Removes a line (removing an absent line changes nothing).
pub async fn remove(sku: String, state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let me = state.customer(&req).await?;
    let sku = known_sku(&state, &sku).await?;
    let cart = state.regions.update_cart(&me.user_id, CartCommand::Remove { sku }).await?;
    answer(&state, &req, &me.user_id, cart).await
}

#[utoipa::path(delete, operation_id = "cart_clear", path = "/v1/cart", tag = "cart", security(("bearer" = [])),
    responses((status = 200, body = CartBody, description = "The emptied cart")))]
/// Empties the cart.
pub async fn clear(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let me = state.customer(&req).await?;
    let cart = state.regions.update_cart(&me.user_id, CartCommand::Clear).await?;
    answer(&state, &req, &me.user_id, cart).await
}
