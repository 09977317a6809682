//! The route table: every endpoint of the v1 contract, each with its template (the metrics label),
//! its rate limit and its handler. Unmatched requests become problem documents too.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use warp::filters::BoxedFilter;
use warp::{Filter, Rejection};

use crate::api;
use crate::app::AppState;
use crate::extract::{Req, read_body, req};
use crate::metrics::RouteMetrics;
use crate::ratelimit::Limit;
use crate::reply::ApiError;
use crate::{Problem, ProblemType};

type Response = warp::reply::Response;

/// A handler's input: the request (with its body for writes), once it passed the rate limits.
type Input = BoxedFilter<(Result<Req, ApiError>,)>;

/// The request, read and admitted: API routes count against the per-IP limit, and registration
/// and login also against the stricter auth limit.
fn input(state: &Arc<AppState>, auth: bool, with_body: bool) -> Input {
    let body_limit = state.body_limit;
    let state = state.clone();
    let admit = move |req: Result<Req, ApiError>| {
        let state = state.clone();
        async move {
            let req = req?;
            let client = state.edge.bucket(&req);
            state.admit(Limit::Ip(client)).await?;
            if auth {
                state.admit(Limit::Auth(client)).await?;
            }
            Ok(req)
        }
    };
    if with_body {
        req()
            .and(warp::body::stream())
            .then(move |req, body| read_body(req, body, body_limit))
            .then(admit)
            .boxed()
    } else {
        req().map(Ok).then(admit).boxed()
    }
}

/// Every route's template (`METHOD /path/{param}`), for the `Allow` header of a 405.
const TEMPLATES: &[&str] = &[
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
    "GET /admin",
    "POST /v1/auth/register",
    "POST /v1/auth/login",
    "POST /v1/auth/refresh",
    "POST /v1/auth/logout",
    "POST /v1/auth/logout-all",
    "POST /v1/auth/password",
    "POST /v1/auth/password-reset",
    "POST /v1/auth/password-reset/confirm",
    "GET /v1/me",
    "POST /v1/admin/users",
    "GET /v1/products",
    "GET /v1/products/{product_id}",
    "POST /v1/admin/products",
    "PATCH /v1/admin/products/{product_id}",
    "GET /v1/currencies",
    "PUT /v1/admin/fx-rates",
    "GET /v1/inventory/stream",
    "GET /v1/inventory/{sku}",
    "POST /v1/admin/inventory/{sku}/restock",
    "PUT /v1/admin/inventory/{sku}",
    "GET /v1/cart",
    "DELETE /v1/cart",
    "POST /v1/cart/items",
    "PUT /v1/cart/items/{sku}",
    "DELETE /v1/cart/items/{sku}",
    "POST /v1/checkout",
    "GET /v1/orders",
    "GET /v1/orders/{order_id}",
    "POST /v1/orders/{order_id}/cancel",
    "GET /v1/admin/orders",
    "GET /v1/admin/cluster",
    "GET /v1/admin/cluster/locate",
    "POST /v1/admin/cluster/leave",
    "POST /v1/admin/webhooks",
    "GET /v1/admin/webhooks",
    "DELETE /v1/admin/webhooks/{webhook_id}",
    "GET /v1/admin/webhooks/{webhook_id}/deliveries",
];

/// The methods some route takes for `path`, as an `Allow` header value.
fn allowed_methods(path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut methods: Vec<&str> = TEMPLATES
        .iter()
        .filter_map(|template| template.split_once(' '))
        .filter(|(_, pattern)| {
            let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
            pattern.len() == segments.len()
                && pattern.iter().zip(&segments).all(|(p, s)| p.starts_with('{') || p == s)
        })
        // A literal route (`stream`) does not also allow the methods of `{sku}` there: close
        // enough for an `Allow` header, which lists what may work.
        .map(|(method, _)| method)
        .collect();
    methods.sort_unstable();
    methods.dedup();
    methods.join(", ")
}

/// Times a route, turns its error into a problem response and records both (a streaming
/// route's status when its stream starts).
fn finish<F, T>(route: &'static str, filter: F) -> BoxedFilter<(Response,)>
where
    F: Filter<Extract = (Result<T, ApiError>,), Error = Rejection> + Clone + Send + Sync + 'static,
    T: Into<Response> + Send,
{
    let metrics = RouteMetrics::new(route);
    warp::any()
        .map(Instant::now)
        .and(filter)
        .map(move |started: Instant, result: Result<T, ApiError>| {
            let response: Response =
                result.map_or_else(|e| e.into_api_response().into(), Into::into);
            metrics.record(response.status(), started.elapsed());
            response
        })
        .boxed()
}

fn with(
    state: &Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = Infallible> + Clone + use<> {
    let state = state.clone();
    warp::any().map(move || state.clone())
}

/// Every route of the node.
pub fn routes(state: Arc<AppState>) -> BoxedFilter<(Response,)> {
    let s = &state;
    let get = || warp::get();
    let post = || warp::post();
    let put = || warp::put();
    let delete = || warp::delete();
    let patch = || warp::patch();
    let read = || input(s, false, false);
    let write = || input(s, false, true);
    // Registration, login and the password routes: also under the stricter per-IP auth limit.
    let auth_write = || input(s, true, true);

    let service =
        finish("GET /healthz", warp::path!("healthz").and(get()).then(api::service::healthz))
            .or(finish(
                "GET /readyz",
                warp::path!("readyz").and(get()).and(with(s)).then(api::service::readyz),
            ))
            .unify()
            .or(finish(
                "GET /metrics",
                warp::path!("metrics").and(get()).and(with(s)).then(api::service::metrics),
            ))
            .unify()
            .or(finish(
                "GET /openapi.json",
                warp::path!("openapi.json").and(get()).then(api::service::openapi),
            ))
            .unify()
            .or(finish("GET /admin", warp::path!("admin").and(get()).then(api::service::dashboard)))
            .unify()
            .boxed();

    let auth = finish(
        "POST /v1/auth/register",
        warp::path!("v1" / "auth" / "register")
            .and(post())
            .and(with(s))
            .and(auth_write())
            .then(api::auth::register),
    )
    .or(finish(
        "POST /v1/auth/login",
        warp::path!("v1" / "auth" / "login")
            .and(post())
            .and(with(s))
            .and(auth_write())
            .then(api::auth::login),
    ))
    .unify()
    .or(finish(
        "POST /v1/admin/users",
        warp::path!("v1" / "admin" / "users")
            .and(post())
            .and(with(s))
            .and(write())
            .then(api::auth::provision),
    ))
    .unify()
    .or(finish(
        "POST /v1/auth/refresh",
        warp::path!("v1" / "auth" / "refresh")
            .and(post())
            .and(with(s))
            .and(write())
            .then(api::auth::refresh),
    ))
    .unify()
    .or(finish(
        "POST /v1/auth/logout",
        warp::path!("v1" / "auth" / "logout")
            .and(post())
            .and(with(s))
            .and(write())
            .then(api::auth::logout),
    ))
    .unify()
    .or(finish(
        "POST /v1/auth/logout-all",
        warp::path!("v1" / "auth" / "logout-all")
            .and(post())
            .and(with(s))
            .and(write())
            .then(api::auth::logout_all),
    ))
    .unify()
    .or(finish(
        "POST /v1/auth/password",
        warp::path!("v1" / "auth" / "password")
            .and(post())
            .and(with(s))
            .and(auth_write())
            .then(api::auth::change_password),
    ))
    .unify()
    .or(finish(
        "POST /v1/auth/password-reset",
        warp::path!("v1" / "auth" / "password-reset")
            .and(post())
            .and(with(s))
            .and(auth_write())
            .then(api::auth::password_reset),
    ))
    .unify()
    .or(finish(
        "POST /v1/auth/password-reset/confirm",
        warp::path!("v1" / "auth" / "password-reset" / "confirm")
            .and(post())
            .and(with(s))
            .and(auth_write())
            .then(api::auth::password_reset_confirm),
    ))
    .unify()
    .or(finish(
        "GET /v1/me",
        warp::path!("v1" / "me").and(get()).and(with(s)).and(read()).then(api::auth::me),
    ))
    .unify()
    .boxed();

    let catalog = finish(
        "GET /v1/products",
        warp::path!("v1" / "products")
            .and(get())
            .and(with(s))
            .and(read())
            .then(api::products::search),
    )
    .or(finish(
        "GET /v1/products/{product_id}",
        warp::path!("v1" / "products" / String)
            .and(get())
            .and(with(s))
            .and(read())
            .then(api::products::get),
    ))
    .unify()
    .or(finish(
        "POST /v1/admin/products",
        warp::path!("v1" / "admin" / "products")
            .and(post())
            .and(with(s))
            .and(write())
            .then(api::products::create),
    ))
    .unify()
    .or(finish(
        "PATCH /v1/admin/products/{product_id}",
        warp::path!("v1" / "admin" / "products" / String)
            .and(patch())
            .and(with(s))
            .and(write())
            .then(api::products::update),
    ))
    .unify()
    .or(finish(
        "GET /v1/currencies",
        warp::path!("v1" / "currencies")
            .and(get())
            .and(with(s))
            .and(read())
            .then(api::currencies::list),
    ))
    .unify()
    .or(finish(
        "PUT /v1/admin/fx-rates",
        warp::path!("v1" / "admin" / "fx-rates")
            .and(put())
            .and(with(s))
            .and(write())
            .then(api::currencies::set_rates),
    ))
    .unify()
    .boxed();

    let inventory = finish(
        "GET /v1/inventory/stream",
        warp::path!("v1" / "inventory" / "stream")
            .and(get())
            .and(with(s))
            .and(read())
            .then(api::inventory::stream),
    )
    .or(finish(
        "GET /v1/inventory/{sku}",
        warp::path!("v1" / "inventory" / String)
            .and(get())
            .and(with(s))
            .and(read())
            .then(api::inventory::get),
    ))
    .unify()
    .or(finish(
        "POST /v1/admin/inventory/{sku}/restock",
        warp::path!("v1" / "admin" / "inventory" / String / "restock")
            .and(post())
            .and(with(s))
            .and(write())
            .then(api::inventory::restock),
    ))
    .unify()
    .or(finish(
        "PUT /v1/admin/inventory/{sku}",
        warp::path!("v1" / "admin" / "inventory" / String)
            .and(put())
            .and(with(s))
            .and(write())
            .then(api::inventory::set),
    ))
    .unify()
    .boxed();

    let cart = finish(
        "GET /v1/cart",
        warp::path!("v1" / "cart").and(get()).and(with(s)).and(read()).then(api::cart::get),
    )
    .or(finish(
        "DELETE /v1/cart",
        warp::path!("v1" / "cart").and(delete()).and(with(s)).and(read()).then(api::cart::clear),
    ))
    .unify()
    .or(finish(
        "POST /v1/cart/items",
        warp::path!("v1" / "cart" / "items")
            .and(post())
            .and(with(s))
            .and(write())
            .then(api::cart::add),
    ))
    .unify()
    .or(finish(
        "PUT /v1/cart/items/{sku}",
        warp::path!("v1" / "cart" / "items" / String)
            .and(put())
            .and(with(s))
            .and(write())
            .then(api::cart::set_qty),
    ))
    .unify()
    .or(finish(
        "DELETE /v1/cart/items/{sku}",
        warp::path!("v1" / "cart" / "items" / String)
            .and(delete())
            .and(with(s))
            .and(read())
            .then(api::cart::remove),
    ))
    .unify()
    .boxed();

    let orders = finish(
        "POST /v1/checkout",
        warp::path!("v1" / "checkout")
            .and(post())
            .and(with(s))
            .and(write())
            .then(api::checkout::checkout),
    )
    .or(finish(
        "GET /v1/orders",
        warp::path!("v1" / "orders").and(get()).and(with(s)).and(read()).then(api::orders::list),
    ))
    .unify()
    .or(finish(
        "GET /v1/orders/{order_id}",
        warp::path!("v1" / "orders" / String)
            .and(get())
            .and(with(s))
            .and(read())
            .then(api::orders::get),
    ))
    .unify()
    .or(finish(
        "POST /v1/orders/{order_id}/cancel",
        warp::path!("v1" / "orders" / String / "cancel")
            .and(post())
            .and(with(s))
            .and(write())
            .then(api::orders::cancel),
    ))
    .unify()
    .or(finish(
        "GET /v1/admin/orders",
        warp::path!("v1" / "admin" / "orders")
            .and(get())
            .and(with(s))
            .and(read())
            .then(api::orders::list_all),
    ))
    .unify()
    .boxed();

    let cluster = finish(
        "GET /v1/admin/cluster",
        warp::path!("v1" / "admin" / "cluster")
            .and(get())
            .and(with(s))
            .and(read())
            .then(api::cluster::status),
    )
    .or(finish(
        "GET /v1/admin/cluster/locate",
        warp::path!("v1" / "admin" / "cluster" / "locate")
            .and(get())
            .and(with(s))
            .and(read())
            .then(api::cluster::locate),
    ))
    .unify()
    .or(finish(
        "POST /v1/admin/cluster/leave",
        warp::path!("v1" / "admin" / "cluster" / "leave")
            .and(post())
            .and(with(s))
            .and(write())
            .then(api::cluster::leave),
    ))
    .unify()
    .boxed();

    let webhooks = finish(
        "POST /v1/admin/webhooks",
        warp::path!("v1" / "admin" / "webhooks")
            .and(post())
            .and(with(s))
            .and(write())
            .then(api::webhooks::create),
    )
    .or(finish(
        "GET /v1/admin/webhooks",
        warp::path!("v1" / "admin" / "webhooks")
            .and(get())
            .and(with(s))
            .and(read())
            .then(api::webhooks::list),
    ))
    .unify()
    .or(finish(
        "DELETE /v1/admin/webhooks/{webhook_id}",
        warp::path!("v1" / "admin" / "webhooks" / String)
            .and(delete())
            .and(with(s))
            .and(read())
            .then(api::webhooks::delete),
    ))
    .unify()
    .or(finish(
        "GET /v1/admin/webhooks/{webhook_id}/deliveries",
        warp::path!("v1" / "admin" / "webhooks" / String / "deliveries")
            .and(get())
            .and(with(s))
            .and(read())
            .then(api::webhooks::deliveries),
    ))
    .unify()
    .boxed();

    service
        .or(auth)
        .unify()
        .or(catalog)
        .unify()
        .or(inventory)
        .unify()
        .or(cart)
        .unify()
        .or(orders)
        .unify()
        .or(cluster)
        .unify()
        .or(webhooks)
        .unify()
        .or(warp::path::full().and(warp::method()).map(unmatched))
        .unify()
        .boxed()
}

/// The routes of the separate metrics address: `GET /metrics` only.
pub fn metrics_only(state: Arc<AppState>) -> BoxedFilter<(Response,)> {
    finish(
        "GET /metrics (metrics address)",
        warp::path!("metrics").and(warp::get()).and(with(&state)).then(api::service::exposition),
    )
    .or(warp::any().map(|| {
        let problem = Problem::new(ProblemType::NotFound, "only GET /metrics here");
        ApiError::new(problem).into_api_response().into_response()
    }))
    .unify()
    .boxed()
}

/// A request no route takes: 405 with `Allow` for a known path with another method, else 404.
fn unmatched(path: warp::path::FullPath, method: warp::http::Method) -> Response {
    let allow = allowed_methods(path.as_str());
    let response = if allow.is_empty() {
        ApiError::new(Problem::new(ProblemType::NotFound, "no such endpoint"))
    } else {
        let detail = format!("{} {} is not served; this path takes {allow}", method, path.as_str());
        let allow = warp::http::HeaderValue::from_str(&allow)
            .unwrap_or(warp::http::HeaderValue::from_static("GET"));
        ApiError::new(Problem::new(ProblemType::MethodNotAllowed, detail))
            .with_header("allow", allow)
    }
    .into_api_response();
    RouteMetrics::new("unmatched").record(response.status, std::time::Duration::ZERO);
    response.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_the_methods_of_a_path() {
        assert_eq!(allowed_methods("/v1/cart"), "DELETE, GET");
        assert_eq!(allowed_methods("/v1/cart/items/SKU-1"), "DELETE, PUT");
        assert_eq!(allowed_methods("/v1/products/prod-1"), "GET");
        assert_eq!(allowed_methods("/v1/nothing"), "");
    }
}
