//! `/v1/products` and `/v1/admin/products`: the catalog.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use storefront_actors::{Money, Sku, StockCommand};

use super::ProductView;
use crate::app::AppState;
use crate::catalog::search::Sort;
use crate::catalog::{NewProduct, Product, ProductPatch, Search};
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
    params(("q" = Option<String>, Query, description = "Words to find in name or description (each must match; one typo tolerated in words of 5+ letters)"),
        ("category" = Option<String>, Query, description = "Category slug"),
        ("min_price" = Option<String>, Query, description = "Lowest price shown, inclusive, a decimal in the display currency"),
        ("max_price" = Option<String>, Query, description = "Highest price shown, inclusive, a decimal in the display currency"),
        ("in_stock" = Option<bool>, Query, description = "`true`: only products with units available; `false`: only those without"),
        ("sort" = Option<String>, Query, description = "`relevance`, `price_asc`, `price_desc` or `newest` (default: `relevance` with `q`, else `newest`)"),
        ("currency" = Option<String>, Query, description = "ISO 4217 code for prices (default: the base currency)"),
        ("limit" = Option<usize>, Query, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, body = ProductPage),
        (status = 400, description = "Bad limit, cursor, currency, price, stock filter or sort")))]
/// Searches the catalog.
pub async fn search(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let query = req.query()?;
    let currency = state.display_currency(query.get("currency"))?;
    let price = |field: &'static str| -> Result<Option<Money>, ApiError> {
        query
            .get(field)
            .map(|amount| {
                Money::parse(amount, currency).ok().filter(|m| !m.is_negative()).ok_or_else(|| {
                    ApiError::validation(
                        field,
                        format!(
                            "a decimal of at most {} places, not negative",
                            currency.minor_digits()
                        ),
                    )
                })
            })
            .transpose()
    };
    let in_stock = match query.get("in_stock") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::validation("in_stock", "true or false")),
    };
    let sort = match query.get("sort") {
        None => None,
        Some("relevance") => Some(Sort::Relevance),
        Some("price_asc") => Some(Sort::PriceAsc),
        Some("price_desc") => Some(Sort::PriceDesc),
        Some("newest") => Some(Sort::Newest),
        Some(_) => {
            return Err(ApiError::validation("sort", "relevance, price_asc, price_desc or newest"));
        }
    };
    if query.get("category").is_some_and(|c| !crate::catalog::is_category(c)) {
        return Err(ApiError::validation("category", crate::catalog::CATEGORY_RULE));
    }
    if query.get("q").is_some_and(|q| crate::catalog::search::words(q).len() > MAX_WORDS) {
        return Err(ApiError::validation("q", format!("at most {MAX_WORDS} words")));
    }
    let (min_price, max_price) = (price("min_price")?, price("max_price")?);
    if let (Some(min), Some(max)) = (&min_price, &max_price)
        && min.amount() > max.amount()
    {
        return Err(ApiError::validation("min_price", "must not be above max_price"));
    }
    let search = Search {
        text: query.get("q"),
        category: query.get("category"),
        min_price,
        max_price,
        in_stock,
        sort,
        limit: query.limit()?,
        cursor: query.get("cursor"),
    };
    let page = state.catalog.search(search, currency).await?;
    let views = page.items.iter().map(|product| view(&state, product, currency));
    let items = futures::future::try_join_all(views).await?;
    super::ok(&ProductPage {
        items,
        next_cursor: page.next_cursor,
        facets: Facets {
            category: (page.categories.into_iter())
                .map(|(value, count)| CategoryCount { value, count })
                .collect(),
            price: (page.prices.into_iter())
                .map(|b| PriceCount { from: b.from, to: b.to, count: b.count })
                .collect(),
            in_stock: StockCounts { in_stock: page.in_stock.0, out_of_stock: page.in_stock.1 },
        },
    })
}

/// Words one search may hold.
const MAX_WORDS: usize = 16;

/// `GET /v1/products`: a page of products and the facets of every result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductPage {
    /// The products, in the search's order.
    pub items: Vec<ProductView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
    /// Counts over every result, not only this page.
    pub facets: Facets,
}

/// The facets of a search.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Facets {
    /// Results per category, most first.
    pub category: Vec<CategoryCount>,
    /// Results per price range of the display currency, cheapest first; empty ranges left out.
    pub price: Vec<PriceCount>,
    /// Results with and without units available.
    pub in_stock: StockCounts,
}

/// Results in one category.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CategoryCount {
    /// The category slug.
    pub value: String,
    /// Results in it.
    pub count: u64,
}

/// Results in one price range.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PriceCount {
    /// Inclusive.
    #[schema(value_type = super::MoneySchema)]
    pub from: Money,
    /// Exclusive; `null` on the last range.
    #[schema(value_type = Option<super::MoneySchema>)]
    pub to: Option<Money>,
    /// Results in it.
    pub count: u64,
}

/// Results with and without units available.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StockCounts {
    /// With units available.
    #[serde(rename = "true")]
    pub in_stock: u64,
    /// Without.
    #[serde(rename = "false")]
    pub out_of_stock: u64,
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
