//! `/v1/products` and `/v1/admin/products`: the catalog.

use std::sync::Arc;

use serde::Deserialize;
use storefront_actors::{Money, Sku, StockCommand};

use super::{Page, ProductView};
use crate::app::AppState;
use crate::catalog::{NewProduct, Product, ProductPatch};
use crate::extract::Req;
use crate::reply::{ApiError, ApiResult};

/// `POST /v1/admin/products` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    /// 1 to 64 of `A-Z a-z 0-9 - _ .`, unique.
    pub sku: String,
    /// 1 to 200 characters.
    pub name: String,
    /// At most 5,000 characters.
    #[serde(default)]
    pub description: String,
    /// Slug: 1 to 64 of `a-z 0-9 -`.
    pub category: String,
    /// In the shop's base currency (another currency: 400).
    #[schema(value_type = super::MoneySchema)]
    pub price: Money,
    /// Units on hand to start with (default 0).
    pub initial_stock: Option<u64>,
    /// Units one customer may buy across their orders that are not failed or cancelled
    /// (absent or null: no limit).
    #[schema(minimum = 1)]
    pub max_per_customer: Option<u32>,
}

/// `PATCH /v1/admin/products/{product_id}` body: the fields to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New category.
    pub category: Option<String>,
    /// New price, in the base currency.
    #[schema(value_type = Option<super::MoneySchema>)]
    pub price: Option<Money>,
    /// New purchase limit per customer; `null` lifts it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub max_per_customer: Option<Option<u32>>,
}

/// A field that may be `null`: absent is `None`, `null` is `Some(None)`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

/// 400 for a purchase limit of 0.
fn check_limit(limit: Option<u32>) -> Result<(), ApiError> {
    if limit == Some(0) {
        return Err(ApiError::validation("max_per_customer", "at least 1, or null for no limit"));
    }
    Ok(())
}

/// Sets `sku`'s purchase limit in its actor, which enforces it; `id` makes a retry apply once.
async fn set_limit(
    state: &AppState,
    sku: &Sku,
    id: String,
    limit: Option<u32>,
) -> Result<(), ApiError> {
    let command = StockCommand::SetLimit { set_id: id, limit: limit.map(u64::from) };
    state.regions.stock(sku.as_str(), command).await?;
    Ok(())
}

/// The view of `product` in `currency`, with its available stock.
pub async fn view(
    state: &AppState,
    product: &Product,
    currency: storefront_actors::Currency,
) -> Result<ProductView, ApiError> {
    let price = state.show(&product.price, currency)?;
    let levels = state.regions.stock_levels(product.sku.as_str()).await?;
    Ok(ProductView::new(product, price, levels.available))
}

#[utoipa::path(get, operation_id = "products_search", path = "/v1/products", tag = "catalog",
    params(("q" = Option<String>, Query, description = "Full text over name and description"),
        ("category" = Option<String>, Query, description = "Category slug"),
        ("currency" = Option<String>, Query, description = "ISO 4217 code for prices (default: the base currency)"),
        ("limit" = Option<usize>, Query, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "`{items: [Product], next_cursor}`, best match first (catalog order without `q`)"),
        (status = 400, description = "Bad limit, cursor or currency")))]
/// Searches the catalog.
pub async fn search(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let query = req.query()?;
    let currency = state.display_currency(query.get("currency"))?;
    let page = state
        .catalog
        .search(query.get("q"), query.get("category"), query.limit()?, query.get("cursor"))
        .await?;
    let views = page.items.iter().map(|product| view(&state, product, currency));
    let items = futures::future::try_join_all(views).await?;
    super::ok(&Page { items, next_cursor: page.next_cursor })
}

#[utoipa::path(get, operation_id = "products_get", path = "/v1/products/{product_id}", tag = "catalog",
    params(("product_id" = String, Path), ("currency" = Option<String>, Query)),
    responses((status = 200, body = ProductView), (status = 404, description = "`/problems/not-found`")))]
/// One product.
pub async fn get(id: String, state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let currency = state.display_currency(req.query()?.get("currency"))?;
    let product = state
        .catalog
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("product {id}")))?;
    super::ok(&view(&state, &product, currency).await?)
}

#[utoipa::path(post, operation_id = "products_create", path = "/v1/admin/products", tag = "catalog", security(("bearer" = [])),
    request_body = CreateProduct,
    params(("Idempotency-Key" = Option<String>, Header, description = "Optional: a retry returns the first response")),
    responses((status = 201, body = ProductView), (status = 400, description = "Validation"),
        (status = 403, description = "Not an admin"), (status = 409, description = "`/problems/sku-exists`")))]
/// Creates a product (admin).
pub async fn create(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let admin = state.admin(&req).await?;
    let body: CreateProduct = req.json()?;
    let sku = Sku::parse(&body.sku).map_err(|e| ApiError::validation("sku", e.to_string()))?;
    check_limit(body.max_per_customer)?;
    let key = req.idempotency_key()?;
    super::idempotent(&state, &admin.user_id, key, &req, "POST", "/v1/admin/products", || async {
        let product = state
            .catalog
            .create(NewProduct {
                sku: sku.clone(),
                name: body.name,
                description: body.description,
                category: body.category,
                price: body.price,
                max_per_customer: body.max_per_customer,
            })
            .await?;
        if body.max_per_customer.is_some() {
            set_limit(&state, &sku, format!("limit/{sku}/initial"), body.max_per_customer).await?;
        }
        let on_hand = body.initial_stock.unwrap_or(0);
        let levels = state
            .regions
            .stock(sku.as_str(), StockCommand::Set { set_id: format!("initial/{sku}"), on_hand })
            .await?;
        super::created(&ProductView::new(&product, product.price, levels.available))
    })
    .await
}

#[utoipa::path(patch, operation_id = "products_update", path = "/v1/admin/products/{product_id}", tag = "catalog", security(("bearer" = [])),
    request_body = UpdateProduct, params(("product_id" = String, Path)),
    responses((status = 200, body = ProductView), (status = 404, description = "No such product")))]
/// Changes a product (admin).
pub async fn update(id: String, state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let admin = state.admin(&req).await?;
    let body: UpdateProduct = req.json()?;
    if let Some(limit) = body.max_per_customer {
        check_limit(limit)?;
    }
    let key = req.idempotency_key()?;
    let path = format!("/v1/admin/products/{id}");
    super::idempotent(&state, &admin.user_id, key, &req, "PATCH", &path, || async {
        let patch = ProductPatch {
            name: body.name,
            description: body.description,
            category: body.category,
            price: body.price,
            max_per_customer: body.max_per_customer,
        };
        let product = state.catalog.update(&id, patch).await?;
        if let Some(limit) = body.max_per_customer {
            // Stored first, then told to the SKU: a failure here answers 503, and a retry of
            // the same change sets it again (the SKU applies each distinct limit once).
            let id = format!("limit/{}/{}", product.sku, uuid::Uuid::now_v7());
            set_limit(&state, &product.sku, id, limit).await?;
        }
        super::ok(&view(&state, &product, state.base).await?)
    })
    .await
}
