//! The handlers, one module per resource of the contract, and what they share: admission (rate
//! limits), the caller (bearer token, roles), idempotent writes, and the JSON views.

pub mod auth;
pub mod cart;
pub mod checkout;
pub mod cluster;
pub mod currencies;
pub mod inventory;
pub mod orders;
pub mod products;
pub mod service;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderValue, StatusCode};
use serde::Serialize;
use storefront_actors::{Currency, Money, Sku, StockLevels};
use storefront_storage::KeyedWrite;

use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::catalog::Product;
use crate::extract::{Req, bearer, require};
use crate::idempotency::{Begin, BeginDeferred, ClaimWrite, StoredResponse, request_hash};
use crate::ratelimit::Limit;
use crate::reply::{ApiError, ApiResponse, ApiResult};
use crate::{Problem, ProblemType};

impl AppState {
    /// Counts a request against `limit`; 429 with `Retry-After` when over it.
    pub async fn admit(&self, limit: Limit<'_>) -> Result<(), ApiError> {
        self.limiter.check(limit).await.map_err(|wait| {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            rate_limited(format!("rate limit exceeded; retry in {secs} s"), secs)
        })
    }

    /// The authenticated caller (401 without a valid token), counted against the per-user limit.
    pub async fn caller(&self, req: &Req) -> Result<Principal, ApiError> {
        let principal = bearer(req, |token| self.tokens.verify(token))?;
        self.admit(Limit::User(&principal.user_id)).await?;
        Ok(principal)
    }

    /// The caller, who must be a customer (403 otherwise).
    pub async fn customer(&self, req: &Req) -> Result<Principal, ApiError> {
        let principal = self.caller(req).await?;
        require(&principal, Role::Customer)?;
        Ok(principal)
    }

    /// The caller, who must be an admin (403 otherwise).
    pub async fn admin(&self, req: &Req) -> Result<Principal, ApiError> {
        let principal = self.caller(req).await?;
        require(&principal, Role::Admin)?;
        Ok(principal)
    }

    /// The currency a request asks prices in (`?currency=`, default the base currency).
    pub fn display_currency(&self, requested: Option<&str>) -> Result<Currency, ApiError> {
        match requested {
            None => Ok(self.base),
            Some(code) => Currency::parse(code).map_err(ApiError::from),
        }
    }

    /// `price` (in the base currency) shown in `currency` at the current rates.
    pub fn show(&self, price: &Money, currency: Currency) -> Result<Money, ApiError> {
        Ok(self.catalog.fx().convert(price, currency)?)
    }
}

/// Runs `run` once per idempotency key: with a key (`Idempotency-Key`), the first final response
/// is stored with the request's hash and replayed byte for byte to a retry (with the header
/// `Idempotent-Replayed: true`); a different request under the same key is refused (422); a
/// duplicate that arrives while the first still runs is refused (409 with `Retry-After: 1`), not
/// made to wait. Responses whose outcome is unknown are not stored (see [`stored`]): the key stays
/// bound to the request, and a retry of it runs again, safely, since what it does is keyed too.
pub async fn idempotent<F, Fut>(
    state: &AppState,
    scope: &str,
    key: Option<&str>,
    req: &Req,
    method: &str,
    path: &str,
    run: F,
) -> ApiResult
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ApiResult>,
{
    let Some(key) = key else {
        return run().await;
    };
    let hash = request_hash(method, path, &req.body);
    let claim = match state.idempotency.begin(scope, key, &hash).await.map_err(refusal)? {
        Begin::Run(claim) => claim,
        Begin::Replay(stored) => return replay(stored),
    };
    let response = run().await.unwrap_or_else(ApiError::into_api_response);
    match stored(&response) {
        Some(stored) => state.idempotency.complete(claim, stored).await?,
        None => state.idempotency.release(claim).await?,
    }
    Ok(response)
}

/// [`idempotent`] for a request whose effects are keyed by an id derived from its key and
/// `request` (its [`request_hash`], which the caller computed for that id): a checkout. Nothing
/// is written before it runs; `run` gets the claim record to write atomically with its first
/// effect (the order's placement). From then on the effects answer the key: a retry finds the
/// claim, asks the order, and answers from it ([`Claimed::answered_by_effects`]), so no answer
/// is stored after the response. An answer decided before any effect (a validation error, say)
/// is stored after it is sent. No durable write before the work, and none after it for a request
/// that had effects (see [`crate::idempotency::Deferred`]).
pub async fn idempotent_keyed<F, Fut>(
    state: &AppState,
    scope: &str,
    key: &str,
    request: &str,
    run: F,
) -> ApiResult
where
    F: FnOnce(Claimed) -> Fut,
    Fut: Future<Output = ApiResult>,
{
    let claim =
        match state.idempotency.begin_deferred(scope, key, request).await.map_err(refusal)? {
            BeginDeferred::Run(claim) => claim,
            BeginDeferred::Replay(stored) => return replay(stored),
        };
    let by_effects = Arc::new(AtomicBool::new(false));
    let before = claim.claimed_before();
    let claimed = Claimed { claim: claim.claim_write(), before, by_effects: by_effects.clone() };
    let outcome = run(claimed).await;
    let by_effects = by_effects.load(Ordering::SeqCst);
    // An out-of-stock or SKU-busy answer decided before anything was written changed nothing:
    // nothing is kept under the key (API.md), and a retry is decided afresh.
    let unkept = matches!(&outcome, Err(e) if e.problem.kind == ProblemType::OutOfStock.uri()
            || e.problem.kind == ProblemType::SkuBusy.uri())
        && !before
        && !by_effects;
    let response = outcome.unwrap_or_else(ApiError::into_api_response);
    if unkept || by_effects {
        // Nothing was written under the key, or what was (the claim, with the effects) answers
        // a retry: dropping the claim frees the key on this node.
        drop(claim);
    } else if response.status == StatusCode::UNPROCESSABLE_ENTITY {
        // The key turned out to be another request's (its effects said so): nothing of this
        // request is kept under it, and the other's claim stays as it is.
        drop(claim);
    } else {
        state.idempotency.finish(claim, stored(&response));
    }
    Ok(response)
}

/// A deferred claim as a keyed request's run gets it.
#[derive(Debug)]
pub struct Claimed {
    claim: ClaimWrite,
    /// The key was claimed before without a stored answer: the first run may have had effects.
    pub before: bool,
    /// Whether the key's answer is its effects' (see [`idempotent_keyed`]).
    by_effects: Arc<AtomicBool>,
}

impl Claimed {
    /// The claim record, to write atomically with the request's first effect; from then on the
    /// effects answer the key.
    pub fn write(&self) -> Result<KeyedWrite, ApiError> {
        let write = self.claim.write()?;
        self.answered_by_effects();
        Ok(write)
    }

    /// The run answers from effects an earlier run had (a retry): nothing is stored either.
    pub fn answered_by_effects(&self) {
        self.by_effects.store(true, Ordering::SeqCst);
    }
}

/// A response to store as the request's answer: a final one, any but a 429 and a 5xx other than
/// 502 (their outcome is unknown: a retry runs again), and a 202 (still running: a retry asks
/// the order again, wherever it runs now, and gets its final answer once it has one).
fn stored(response: &ApiResponse) -> Option<StoredResponse> {
    let status = response.status;
    let is_final = status != StatusCode::TOO_MANY_REQUESTS
        && status != StatusCode::ACCEPTED
        && (!status.is_server_error() || status == StatusCode::BAD_GATEWAY);
    is_final.then(|| StoredResponse {
        status: status.as_u16(),
        content_type: response.content_type.unwrap_or_default().to_owned(),
        body: String::from_utf8_lossy(&response.body).into_owned(),
    })
}

/// The problem for a key that cannot run now; a duplicate in progress may retry in a second.
fn refusal(err: crate::idempotency::IdempotencyError) -> ApiError {
    let in_progress = matches!(err, crate::idempotency::IdempotencyError::InProgress);
    let error = ApiError::from(err);
    if in_progress {
        error.with_header("retry-after", HeaderValue::from_static("1"))
    } else {
        error
    }
}

fn replay(stored: StoredResponse) -> Result<ApiResponse, ApiError> {
    let content_type = match stored.content_type.as_str() {
        crate::reply::JSON => Some(crate::reply::JSON),
        crate::CONTENT_TYPE => Some(crate::CONTENT_TYPE),
        _ => None,
    };
    let status = StatusCode::from_u16(stored.status).map_err(|_| {
        ApiError::internal(format!("stored response with status {}", stored.status))
    })?;
    Ok(ApiResponse {
        status,
        content_type,
        body: stored.body.into_bytes().into(),
        headers: vec![("idempotent-replayed", HeaderValue::from_static("true"))],
    })
}

/// A product as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductView {
    /// Stable id.
    pub product_id: String,
    /// The SKU.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Category slug.
    pub category: String,
    /// Price in the requested currency.
    #[schema(value_type = MoneySchema)]
    pub price: Money,
    /// Units available to buy now.
    pub available: u64,
    /// Units one customer may buy (across orders not failed or cancelled); absent: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_customer: Option<u32>,
}

impl ProductView {
    /// The view of `product` with its price in `currency`.
    pub fn new(product: &Product, price: Money, available: u64) -> Self {
        Self {
            product_id: product.product_id.clone(),
            sku: product.sku.to_string(),
            name: product.name.clone(),
            description: product.description.clone(),
            category: product.category.clone(),
            price,
            available,
            max_per_customer: product.max_per_customer,
        }
    }
}

/// Stock levels as the API shows them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LevelsView {
    /// The SKU.
    pub sku: String,
    /// Units in the warehouse, reserved ones included.
    pub on_hand: u64,
    /// Units held by checkouts in progress.
    pub reserved: u64,
    /// `on_hand - reserved`, never negative.
    pub available: u64,
}

impl LevelsView {
    /// The view of `sku`'s levels.
    pub fn new(sku: &str, levels: StockLevels) -> Self {
        Self {
            sku: sku.to_owned(),
            on_hand: levels.on_hand,
            reserved: levels.reserved,
            available: levels.available,
        }
    }
}

/// Money: `amount` a decimal string with exactly the currency's ISO 4217 minor digits.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"amount": "19.99", "currency": "USD"}))]
pub struct MoneySchema {
    /// Decimal string, e.g. `"19.99"` (USD), `"1999"` (JPY), `"1.999"` (KWD).
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
}

/// A page of a list.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// `201 Created` with `value`.
pub fn created(value: &impl Serialize) -> ApiResult {
    ApiResponse::json(StatusCode::CREATED, value)
}

/// 429 `/problems/rate-limited`, to retry after `secs` seconds.
pub(crate) fn rate_limited(detail: impl Into<String>, secs: u64) -> ApiError {
    ApiError::new(Problem::new(ProblemType::RateLimited, detail))
        .with_header("retry-after", HeaderValue::from(secs))
}

/// The product's own SKU for `raw` (SKUs are case-insensitive: `demo-1` names the product whose
/// SKU is `DEMO-1`, and its one stock counter), or 400 (not a SKU) / 404 (no product has it).
pub(crate) async fn known_sku(state: &AppState, raw: &str) -> Result<Sku, ApiError> {
    let sku = Sku::parse(raw).map_err(|e| ApiError::validation("sku", e.to_string()))?;
    match state.catalog.by_sku(&sku).await? {
        Some(product) => Ok(product.sku.clone()),
        None => Err(ApiError::not_found(format!("no product has sku {sku}"))),
    }
}

/// `200 OK` with `value`.
pub fn ok(value: &impl Serialize) -> ApiResult {
    ApiResponse::json(StatusCode::OK, value)
}
