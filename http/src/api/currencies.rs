//! `/v1/currencies` and `/v1/admin/fx-rates`: what prices can be shown in, and at what rates.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use storefront_actors::{Currency, FxRates};

use crate::app::AppState;
use crate::extract::Req;
use crate::reply::{ApiError, ApiResult};

/// The highest rate accepted (units of a currency per unit of the base).
pub const MAX_RATE: u32 = 1_000_000;

/// One supported currency.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CurrencyView {
    /// ISO 4217 code.
    pub code: &'static str,
    /// Digits after the decimal point in amounts.
    pub minor_digits: u32,
    /// Units of this currency per unit of the base currency, as a decimal string.
    pub rate: String,
}

/// `PUT /v1/admin/fx-rates` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRates {
    /// Must be the shop's base currency.
    pub base: String,
    /// Code -> units per unit of the base, as decimal strings (`"0.9210"`), all positive.
    pub rates: BTreeMap<String, String>,
}

fn view(rates: &FxRates) -> serde_json::Value {
    let items: Vec<CurrencyView> = Currency::ALL
        .iter()
        .filter_map(|c| {
            rates.rate(*c).map(|rate| CurrencyView {
                code: c.code(),
                minor_digits: c.minor_digits(),
                rate: rate.normalize().to_string(),
            })
        })
        .collect();
    serde_json::json!({ "base": rates.base().code(), "items": items, "next_cursor": null })
}

#[utoipa::path(get, operation_id = "currencies_list", path = "/v1/currencies", tag = "catalog",
    responses((status = 200, description = "`{base, items: [{code, minor_digits, rate}]}`")))]
/// Supported currencies and their current rates.
pub async fn list(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    req?;
    super::ok(&view(&state.catalog.fx()))
}

#[utoipa::path(put, operation_id = "currencies_set_rates", path = "/v1/admin/fx-rates", tag = "catalog", security(("bearer" = [])),
    request_body = SetRates,
    responses((status = 200, description = "The new rates, as `GET /v1/currencies`"),
        (status = 400, description = "Another base, an unknown currency, a rate that is not a positive decimal string")))]
/// Replaces the FX rates (admin). Currencies left out can no longer be shown.
pub async fn set_rates(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let admin = state.admin(&req).await?;
    let body: SetRates = req.json()?;
    if body.base != state.base.code() {
        return Err(ApiError::validation(
            "base",
            format!("must be the shop's base currency {}", state.base),
        ));
    }
    let mut rates = BTreeMap::new();
    for (code, rate) in &body.rates {
        let field = format!("rates.{code}");
        let currency =
            Currency::parse(code).map_err(|e| ApiError::validation(&field, e.to_string()))?;
        let rate = Decimal::from_str(rate)
            .ok()
            .filter(|r| *r > Decimal::ZERO && *r <= Decimal::from(MAX_RATE))
            .ok_or_else(|| {
                ApiError::validation(
                    &field,
                    format!("must be a decimal string above 0, at most {MAX_RATE}"),
                )
            })?;
        rates.insert(currency, rate);
    }
    let rates = FxRates::new(state.base, rates)?;
    let key = req.idempotency_key()?;
    super::idempotent(&state, &admin.user_id, key, &req, "PUT", "/v1/admin/fx-rates", || async {
        let rates = state.catalog.replace_fx(rates).await?;
        super::ok(&view(&rates))
    })
    .await
}
