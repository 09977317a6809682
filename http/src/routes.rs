//! The route table: every endpoint of the node, each with its template (the metrics label and
//! what `Allow` is computed from), its OpenAPI operation, its rate limit and its handler.
//! Unmatched requests become problem documents too.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

// The traits `#[utoipa::path]` implements for a handler's schemas and tags, as `#[openapi(paths())]`
// reads them (utoipa 5 names them `__dev`: they are the generated code's, not documented).
use utoipa::__dev::{SchemaReferences, Tags};
use utoipa::openapi::OpenApi;
use utoipa::openapi::path::HttpMethod;
use warp::filters::BoxedFilter;
use warp::path::FullPath;
use warp::{Filter, Rejection};

use crate::api;
use crate::app::AppState;
use crate::extract::{Req, read_body, req};
use crate::metrics::RouteMetrics;
use crate::ratelimit::Limit;
use crate::reply::ApiError;
use crate::{Problem, ProblemType};

type Response = warp::reply::Response;

/// A route's handler, ready to serve one node.
type Serve = fn(&Arc<AppState>) -> BoxedFilter<(Response,)>;

/// One row of the route table.
pub(crate) struct Route {
    /// `METHOD /path/{param}`: the route's metrics label, and what `Allow` is computed from.
    pub(crate) template: &'static str,
    /// Adds the route's operation (and the schemas it names) to an OpenAPI document; `None`
    /// for the service routes, which the document leaves out.
    pub(crate) document: Option<fn(&mut OpenApi)>,
    serve: Serve,
}

impl Route {
    /// A v1 route, named and documented by its handler's `#[utoipa::path]` (`P`).
    fn v1<P: utoipa::Path + SchemaReferences + for<'t> Tags<'t>>(serve: Serve) -> Self {
        let methods: Vec<&str> = P::methods().iter().map(method_name).collect();
        Self {
            template: intern(format!("{} {}", methods.join(","), P::path())),
            document: Some(document::<P>),
            serve,
        }
    }

    /// A service route (health, metrics, the document itself, the dashboard).
    fn service(template: &'static str, serve: Serve) -> Self {
        Self { template, document: None, serve }
    }

    /// The route's handler for `state`'s node, timed and counted under its template.
    fn filter(&self, state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
        let metrics = RouteMetrics::new(self.template);
        warp::any()
            .map(Instant::now)
            .and((self.serve)(state))
            .map(move |started: Instant, response: Response| {
                metrics.record(response.status(), started.elapsed());
                response
            })
            .boxed()
    }
}

/// Adds `P`'s operation (with its tags), and the schemas it refers to, to `doc`.
fn document<P: utoipa::Path + SchemaReferences + for<'t> Tags<'t>>(doc: &mut OpenApi) {
    let mut operation = P::operation();
    operation.tags.get_or_insert_with(Vec::new).extend(P::tags().into_iter().map(str::to_owned));
    doc.paths.add_path_operation(P::path(), P::methods(), operation);
    let mut schemas = Vec::new();
    P::schemas(&mut schemas);
    doc.components.get_or_insert_with(Default::default).schemas.extend(schemas);
}

fn method_name(method: &HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Options => "OPTIONS",
        HttpMethod::Head => "HEAD",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Trace => "TRACE",
    }
}

/// `template` as a `&'static str` (a metrics label), each distinct one allocated once for the
/// process: there are as many as the table has rows.
fn intern(template: String) -> &'static str {
    static TEMPLATES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut known = TEMPLATES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = known.get(template.as_str()) {
        return known;
    }
    let template: &'static str = Box::leak(template.into_boxed_str());
    known.insert(template);
    template
}

/// A handler's answer as a response: its error as a problem document.
fn answer<F, T>(filter: F) -> BoxedFilter<(Response,)>
where
    F: Filter<Extract = (Result<T, ApiError>,), Error = Rejection> + Clone + Send + Sync + 'static,
    T: Into<Response> + Send,
{
    filter
        .map(|result: Result<T, ApiError>| {
            result.map_or_else(|e| e.into_api_response().into(), Into::into)
        })
        .boxed()
}

/// A handler's input: the request (with its body for writes), once it passed the rate limits.
type Input = BoxedFilter<(Result<Req, ApiError>,)>;

/// A request without a body, admitted.
fn read(state: &Arc<AppState>) -> Input {
    input(state, false, false)
}

/// A request with its body, admitted.
fn write(state: &Arc<AppState>) -> Input {
    input(state, false, true)
}

/// Registration, login and the password routes: also under the stricter per-IP auth limit.
fn auth_write(state: &Arc<AppState>) -> Input {
    input(state, true, true)
}

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

/// Every route's template, in the table's order (the order routes are tried in).
fn templates() -> &'static [&'static str] {
    static TEMPLATES: OnceLock<Vec<&'static str>> = OnceLock::new();
    TEMPLATES.get_or_init(|| table().iter().map(|route| route.template).collect())
}

/// The methods some route takes for `path`, as an `Allow` header value.
fn allowed_methods(path: &str) -> String {
    let segments = segments(path);
    let mut methods: Vec<&str> = templates()
        .iter()
        .filter_map(|template| template.split_once(' '))
        .filter(|(_, pattern)| takes(pattern, &segments))
        // A literal route (`stream`) does not also allow the methods of `{sku}` there: close
        // enough for an `Allow` header, which lists what may work.
        .map(|(method, _)| method)
        .collect();
    methods.sort_unstable();
    methods.dedup();
    methods.join(", ")
}

/// The template of the route that takes a `method` request for `path`, if one does: the first
/// that does in the table's order, as warp tries them.
pub(crate) fn template_of(method: &str, path: &str) -> Option<&'static str> {
    let segments = segments(path);
    templates().iter().copied().find(|template| {
        template
            .split_once(' ')
            .is_some_and(|(m, pattern)| m == method && takes(pattern, &segments))
    })
}

fn segments(path: &str) -> Vec<&str> {
    path.trim_matches('/').split('/').collect()
}

/// Whether a template's path `pattern` takes a path of these `segments`.
fn takes(pattern: &str, segments: &[&str]) -> bool {
    let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    pattern.len() == segments.len()
        && pattern.iter().zip(segments).all(|(p, s)| p.starts_with('{') || p == s)
}

fn with(
    state: &Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = Infallible> + Clone + use<> {
    let state = state.clone();
    warp::any().map(move || state.clone())
}

/// The route table: every endpoint the node serves, in the order they are tried. The metrics
/// label of each, the `Allow` header of a 405 and the OpenAPI document all derive from it; a v1
/// route's method and path are those of its handler's `#[utoipa::path]`.
pub(crate) fn table() -> Vec<Route> {
    vec![
        Route::service("GET /healthz", |_| {
            answer(warp::path!("healthz").and(warp::get()).then(api::service::healthz))
        }),
        Route::service("GET /readyz", |s| {
            answer(warp::path!("readyz").and(warp::get()).and(with(s)).then(api::service::readyz))
        }),
        Route::service("GET /metrics", |s| {
            answer(warp::path!("metrics").and(warp::get()).and(with(s)).then(api::service::metrics))
        }),
        Route::service("GET /openapi.json", |_| {
            answer(warp::path!("openapi.json").and(warp::get()).then(api::service::openapi))
        }),
        Route::service("GET /admin", |_| {
            answer(warp::path!("admin").and(warp::get()).then(api::service::dashboard))
        }),
        Route::v1::<api::auth::__path_register>(|s| {
            answer(
                warp::path!("v1" / "auth" / "register")
                    .and(warp::post())
                    .and(with(s))
                    .and(auth_write(s))
                    .then(api::auth::register),
            )
        }),
        Route::v1::<api::auth::__path_login>(|s| {
            answer(
                warp::path!("v1" / "auth" / "login")
                    .and(warp::post())
                    .and(with(s))
                    .and(auth_write(s))
                    .then(api::auth::login),
            )
        }),
        Route::v1::<api::auth::__path_provision>(|s| {
            answer(
                warp::path!("v1" / "admin" / "users")
                    .and(warp::post())
                    .and(with(s))
                    .and(write(s))
                    .then(api::auth::provision),
            )
        }),
        Route::v1::<api::auth::__path_refresh>(|s| {
            answer(
                warp::path!("v1" / "auth" / "refresh")
                    .and(warp::post())
                    .and(with(s))
                    .and(write(s))
                    .then(api::auth::refresh),
            )
        }),
        Route::v1::<api::auth::__path_logout>(|s| {
            answer(
                warp::path!("v1" / "auth" / "logout")
                    .and(warp::post())
                    .and(with(s))
                    .and(write(s))
                    .then(api::auth::logout),
            )
        }),
        Route::v1::<api::auth::__path_logout_all>(|s| {
            answer(
                warp::path!("v1" / "auth" / "logout-all")
                    .and(warp::post())
                    .and(with(s))
                    .and(write(s))
                    .then(api::auth::logout_all),
            )
        }),
        Route::v1::<api::auth::__path_change_password>(|s| {
            answer(
                warp::path!("v1" / "auth" / "password")
                    .and(warp::post())
                    .and(with(s))
                    .and(auth_write(s))
                    .then(api::auth::change_password),
            )
        }),
        Route::v1::<api::auth::__path_password_reset>(|s| {
            answer(
                warp::path!("v1" / "auth" / "password-reset")
                    .and(warp::post())
                    .and(with(s))
                    .and(auth_write(s))
                    .then(api::auth::password_reset),
            )
        }),
        Route::v1::<api::auth::__path_password_reset_confirm>(|s| {
            answer(
                warp::path!("v1" / "auth" / "password-reset" / "confirm")
                    .and(warp::post())
                    .and(with(s))
                    .and(auth_write(s))
                    .then(api::auth::password_reset_confirm),
            )
        }),
        Route::v1::<api::auth::__path_me>(|s| {
            answer(
                warp::path!("v1" / "me")
                    .and(warp::get())
                    .and(with(s))
                    .and(read(s))
                    .then(api::auth::me),
            )
        }),
        Route::v1::<api::products::__path_search>(|s| {
            answer(
                warp::path!("v1" / "products")
                    .and(warp::get())
                    .and(with(s))
                    .and(read(s))
                    .then(api::products::search),
            )
        }),
        Route::v1::<api::products::__path_get>(|s| {
            answer(
                warp::path!("v1" / "products" / String)
                    .and(warp::get())
                    .and(with(s))
                    .and(read(s))
                    .then(api::products::get),
            )
        }),
        Route::v1::<api::products::__path_create>(|s| {
            answer(
                warp::path!("v1" / "admin" / "products")
                    .and(warp::post())
                    .and(with(s))
                    .and(write(s))
                    .then(api::products::create),
            )
        }),
        Route::v1::<api::products::__path_update>(|s| {
            answer(
                warp::path!("v1" / "admin" / "products" / String)
                    .and(warp::patch())
                    .and(with(s))
                    .and(write(s))
                    .then(api::products::update),
            )
        }),
        Route::v1::<api::currencies::__path_list>(|s| {
            answer(
                warp::path!("v1" / "currencies")
                    .and(warp::get())
                    .and(with(s))
                    .and(read(s))
                    .then(api::currencies::list),
            )
        }),
        Route::v1::<api::currencies::__path_set_rates>(|s| {
            answer(
                warp::path!("v1" / "admin" / "fx-rates")
                    .and(warp::put())
                    .and(with(s))
                    .and(write(s))
                    .then(api::currencies::set_rates),
            )
        }),
        Route::v1::<api::inventory::__path_stream>(|s| {
            answer(
                warp::path!("v1" / "inventory" / "stream")
                    .and(warp::get())
                    .and(with(s))
                    .and(read(s))
                    .then(api::inventory::stream),
            )
        }),
        Route::v1::<api::inventory::__path_get>(|s| {
            answer(
                warp::path!("v1" / "inventory" / String)
                    .and(warp::get())
                    .and(with(s))
                    .and(read(s))
                    .then(api::inventory::get),
            )
        }),
        Route::v1::<api::inventory::__path_restock>(|s| {
            answer(
                warp::path!("v1" / "admin" / "inventory" / String / "restock")
                    .and(warp::post())
                    .and(with(s))
                    .and(write(s))
                    .then(api::inventory::restock),
            )
        }),
        Route::v1::<api::inventory::__path_set>(|s| {
            answer(
                warp::path!("v1" / "admin" / "inventory" / String)
                    .and(warp::put())
                    .and(with(s))
                    .and(write(s))
                    .then(api::inventory::set),
            )
        }),
        Route::v1::<api::cart::__path_get>(|s| {
            answer(
                warp::path!("v1" / "cart")
                    .and(warp::get())
                    .and(with(s))
                    .and(read(s))
                    .then(api::cart::get),
            )
        }),
        Route::v1::<api::cart::__path_clear>(|s| {
            answer(
                warp::path!("v1" / "cart")
                    .and(warp::delete())
                    .and(with(s))
                    .and(read(s))
                    .then(api::cart::clear),
            )
        }),
        Route::v1::<api::cart::__path_add>(|s| {
            answer(
                warp::path!("v1" / "cart" / "items")
                    .and(warp::post())
                    .and(with(s))
                    .and(write(s))
                    .then(api::cart::add),
            )
        }),
        Route::v1::<api::cart::__path_set_qty>(|s| {
            answer(
                warp::path!("v1" / "cart" / "items" / String)
                    .and(warp::put())
                    .and(with(s))
                    .and(write(s))
                    .then(api::cart::set_qty),
            )
        }),
        Route::v1::<api::cart::__path_remove>(|s| {
            answer(
                warp::path!("v1" / "cart" / "items" / String)
                    .and(warp::delete())
                    .and(with(s))
                    .and(read(s))
                    .then(api::cart::remove),
            )
        }),
        Route::v1::<api::checkout::__path_checkout>(|s| {
            answer(
                warp::path!("v1" / "checkout")
                    .and(warp::post())
                    .and(with(s))
                    .and(write(s))
                    .then(api::checkout::checkout),
            )
        }),
        Route::v1::<api::orders::__path_list>(|s| {
            answer(
                warp::path!("v1" / "orders")
                    .and(warp::get())
                    .and(with(s))
                    .and(read(s))
                    .then(api::orders::list),
            )
        }),
        Route::v1::<api::orders::__path_get>(|s| {
            answer(
                warp::path!("v1" / "orders" / String)
                    .and(warp::get())
                    .and(with(s))
                    .and(read(s))
                    .then(api::orders::get),
            )
        }),
        Route::v1::<api::orders::__path_cancel>(|s| {
            answer(
                warp::path!("v1" / "orders" / String / "cancel")
                    .and(warp::post())
                    .and(with(s))
                    .and(write(s))
                    .then(api::orders::cancel),
            )
        }),
        Route::v1::<api::orders::__path_list_all>(|s| {
            answer(
                warp::path!("v1" / "admin" / "orders")
                    .and(warp::get())
                    .and(with(s))
                    .and(read(s))
                    .then(api::orders::list_all),
            )
        }),
        Route::v1::<api::cluster::__path_status>(|s| {
            answer(
                warp::path!("v1" / "admin" / "cluster")
                    .and(warp::get())
                    .and(with(s))
                    .and(read(s))
                    .then(api::cluster::status),
            )
        }),
        Route::v1::<api::cluster::__path_locate>(|s| {
            answer(
                warp::path!("v1" / "admin" / "cluster" / "locate")
                    .and(warp::get())
                    .and(with(s))
                    .and(read(s))
                    .then(api::cluster::locate),
            )
        }),
        Route::v1::<api::cluster::__path_leave>(|s| {
            answer(
                warp::path!("v1" / "admin" / "cluster" / "leave")
                    .and(warp::post())
                    .and(with(s))
                    .and(write(s))
                    .then(api::cluster::leave),
            )
        }),
        Route::v1::<api::webhooks::__path_create>(|s| {
            answer(
                warp::path!("v1" / "admin" / "webhooks")
                    .and(warp::post())
                    .and(with(s))
                    .and(write(s))
                    .then(api::webhooks::create),
            )
        }),
        Route::v1::<api::webhooks::__path_list>(|s| {
            answer(
                warp::path!("v1" / "admin" / "webhooks")
                    .and(warp::get())
                    .and(with(s))
                    .and(read(s))
                    .then(api::webhooks::list),
            )
        }),
        Route::v1::<api::webhooks::__path_delete>(|s| {
            answer(
                warp::path!("v1" / "admin" / "webhooks" / String)
                    .and(warp::delete())
                    .and(with(s))
                    .and(read(s))
                    .then(api::webhooks::delete),
            )
        }),
        Route::v1::<api::webhooks::__path_deliveries>(|s| {
            answer(
                warp::path!("v1" / "admin" / "webhooks" / String / "deliveries")
                    .and(warp::get())
                    .and(with(s))
                    .and(read(s))
                    .then(api::webhooks::deliveries),
            )
        }),
    ]
}

/// Every route of the node, then the answer to a request none takes. The routes are grouped by
/// the literal segments their paths begin with (at most two: `/v1/checkout`, `/v1/cart`,
/// `/healthz`), and a request is tried against its own group's routes only, in the table's
/// order: one comparison per group instead of a boxed filter (and its allocations) per route
/// before its own. No path is under two groups' prefixes, so the first route that takes a
/// request is the table's first that does, as before.
pub fn routes(state: Arc<AppState>) -> BoxedFilter<(Response,)> {
    let mut groups: Vec<Group> = Vec::new();
    for route in table() {
        let prefix = literal_prefix(route.template);
        let filter = route.filter(&state);
        match groups.iter_mut().find(|(known, _)| *known == prefix) {
            Some((_, filters)) => filters.push(filter),
            None => groups.push((prefix, vec![filter])),
        }
    }
    let groups = groups
        .into_iter()
        .filter_map(|(prefix, filters)| Some(under(prefix).and(in_order(filters)?).boxed()))
        .collect();
    let unmatched = warp::path::full().and(warp::method()).map(unmatched).boxed();
    in_order(groups).map_or(unmatched.clone(), |routes| routes.or(unmatched).unify().boxed())
}

/// Routes whose paths begin with the same literal segments, in the table's order.
type Group = (Vec<&'static str>, Vec<BoxedFilter<(Response,)>>);

/// The literal segments a template's path begins with, at most two.
fn literal_prefix(template: &'static str) -> Vec<&'static str> {
    let path = template.split_once(' ').map_or(template, |(_, path)| path);
    segments(path).into_iter().take(2).take_while(|s| !s.starts_with('{')).collect()
}

/// Passes a request whose path begins with `prefix`'s segments, matched as `warp::path!` matches
/// them, without taking them (the routes match their whole paths).
fn under(prefix: Vec<&'static str>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::path::peek()
        .and_then(move |peek: warp::path::Peek| {
            let mut segments = peek.as_str().split('/');
            let under = prefix.iter().all(|literal| segments.next() == Some(*literal));
            std::future::ready(if under { Ok(()) } else { Err(warp::reject::not_found()) })
        })
        .untuple_one()
}

/// `filters`, tried in order, as a balanced tree of `or`s: a request goes through a few boxed
/// filters on its way to its route, not one per route before it.
fn in_order(mut filters: Vec<BoxedFilter<(Response,)>>) -> Option<BoxedFilter<(Response,)>> {
    while filters.len() > 1 {
        let mut pairs = Vec::with_capacity(filters.len().div_ceil(2));
        let mut rest = filters.into_iter();
        while let Some(first) = rest.next() {
            pairs.push(match rest.next() {
                Some(second) => first.or(second).unify().boxed(),
                None => first,
            });
        }
        filters = pairs;
    }
    filters.pop()
}

/// The routes of the separate metrics address: `GET /metrics` only.
pub fn metrics_only(state: Arc<AppState>) -> BoxedFilter<(Response,)> {
    let exposition = Route::service("GET /metrics (metrics address)", |s| {
        answer(warp::path!("metrics").and(warp::get()).and(with(s)).then(api::service::exposition))
    });
    exposition
        .filter(&state)
        .or(warp::any().map(|| {
            let problem = Problem::new(ProblemType::NotFound, "only GET /metrics here");
            ApiError::new(problem).into_api_response().into_response()
        }))
        .unify()
        .boxed()
}

/// A request no route takes: 405 with `Allow` for a known path with another method, else 404.
fn unmatched(path: FullPath, method: warp::http::Method) -> Response {
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
    fn a_request_is_named_after_the_route_that_takes_it() {
        assert_eq!(template_of("POST", "/v1/checkout"), Some("POST /v1/checkout"));
        assert_eq!(template_of("GET", "/v1/inventory/stream"), Some("GET /v1/inventory/stream"));
        assert_eq!(template_of("GET", "/v1/inventory/A-1"), Some("GET /v1/inventory/{sku}"));
        assert_eq!(
            template_of("PATCH", "/v1/admin/products/p1"),
            Some("PATCH /v1/admin/products/{product_id}")
        );
        assert_eq!(template_of("DELETE", "/v1/checkout"), None);
        assert_eq!(template_of("GET", "/nowhere"), None);
    }

    /// A request is tried against one group of routes: no path may be under two groups'
    /// prefixes (one a prefix of the other), or a route of a later group could be passed over
    /// for one of an earlier group that the table puts after it.
    #[test]
    fn no_path_is_under_two_groups_of_routes() {
        let mut prefixes: Vec<Vec<&str>> =
            table().iter().map(|route| literal_prefix(route.template)).collect();
        prefixes.sort();
        prefixes.dedup();
        for (i, a) in prefixes.iter().enumerate() {
            assert!(!a.is_empty(), "a route begins with a parameter: group it by hand");
            for b in &prefixes[i + 1..] {
                assert!(!b.starts_with(a), "{a:?} is a prefix of {b:?}");
            }
        }
    }

    #[test]
    fn allow_lists_the_methods_of_a_path() {
        assert_eq!(allowed_methods("/v1/cart"), "DELETE, GET");
        assert_eq!(allowed_methods("/v1/cart/items/SKU-1"), "DELETE, PUT");
        assert_eq!(allowed_methods("/v1/products/prod-1"), "GET");
        assert_eq!(allowed_methods("/v1/nothing"), "");
    }

    #[test]
    fn every_template_is_one_method_and_a_path_and_appears_once() {
        let table = table();
        let mut seen = BTreeSet::new();
        for route in &table {
            let (method, path) = route.template.split_once(' ').unwrap();
            assert!(["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method), "{method}");
            assert!(path.starts_with('/'), "{path}");
            assert!(seen.insert(route.template), "{} twice", route.template);
        }
        assert!(table.iter().any(|r| r.template == "GET /v1/products/{product_id}"));
    }
}
