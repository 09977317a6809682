//! The OpenAPI 3.1 document of the v1 API: its paths are the route table's v1 routes
//! ([`crate::routes`]), each described by its handler's `#[utoipa::path]` annotation and the
//! request and response types.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Storefront API",
        version = "1",
        description = "The v1 storefront API. Errors are `application/problem+json` (RFC 9457) with a stable `type`; validation problems list `errors: [{field, message}]`. Money is `{amount: decimal string with the currency's minor digits, currency: ISO 4217}`. Lists take `limit` (1-100, default 20) and `cursor`. Every `/v1` route is rate limited per client IP (and per user when authenticated; registration and login more strictly): 429 with `Retry-After`. Bodies over the limit (64 KiB by default): 413; unknown JSON fields: 400. Idempotency keys (`Idempotency-Key`, required on checkout, optional on admin writes) are scoped to the caller and kept 24 hours; a concurrent duplicate is refused with 409 `/problems/idempotency-in-progress` and `Retry-After: 1` rather than made to wait."
    ),
    components(schemas(api::MoneySchema, api::ProductView, api::LevelsView)),
    modifiers(&Bearer),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "catalog", description = "Products, search, currencies"),
        (name = "inventory", description = "Stock levels and the live stream"),
        (name = "cart", description = "The caller's cart"),
        (name = "orders", description = "Checkout and orders"),
        (name = "cluster", description = "Operators"),
        (name = "webhooks", description = "Merchants' endpoints for events (EVENTS.md)"),
    )
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
    }
}

/// The answers every operation may give, documented once here rather than on each handler: 400
/// (malformed or invalid input), 413 and 415 (bodies), 429 (rate limits, with `Retry-After`), and
/// 401 and 403 on the operations that need a token. Statuses and `type`s come from
/// [`ProblemType`](crate::ProblemType).
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::ResponseBuilder;

        use crate::ProblemType as P;
        let problem = |text: &str| {
            ResponseBuilder::new()
                .description(format!("{text} (`application/problem+json`)"))
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations =
                [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let mut common = vec![
                    (
                        P::Validation,
                        format!(
                            "Malformed or invalid input: `{}`, `{}` with `errors[]`",
                            P::MalformedJson.uri(),
                            P::Validation.uri()
                        ),
                    ),
                    (
                        P::PayloadTooLarge,
                        format!("Body over the limit: `{}`", P::PayloadTooLarge.uri()),
                    ),
                    (
                        P::UnsupportedMediaType,
                        format!("A body that is not JSON: `{}`", P::UnsupportedMediaType.uri()),
                    ),
                    (
                        P::RateLimited,
                        format!(
                            "Rate limited: `{}`, with `Retry-After` in seconds",
                            P::RateLimited.uri()
                        ),
                    ),
                ];
                if secured {
                    common.push((
                        P::Unauthorized,
                        format!("No valid access token: `{}`", P::Unauthorized.uri()),
                    ));
                    common.push((
                        P::Forbidden,
                        format!("The token lacks the role: `{}`", P::Forbidden.uri()),
                    ));
                }
                for (kind, text) in common {
                    operation
                        .responses
                        .responses
                        .entry(kind.status().to_string())
                        .or_insert_with(|| problem(&text).into());
                }
            }
        }
    }
}

/// The document as JSON (built once).
pub fn document() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        for route in crate::routes::table() {
            if let Some(document) = route.document {
                document(&mut doc);
            }
        }
        CommonResponses.modify(&mut doc);
        doc.openapi = utoipa::openapi::OpenApiVersion::Version31;
        doc.to_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use crate::ProblemType;

    #[test]
    fn every_problem_the_document_names_is_a_problem_type() {
        let doc = super::document();
        let mut named = 0;
        for (at, _) in doc.match_indices("/problems/") {
            let uri: String = doc[at..]
                .chars()
                .take_while(|c| *c == '/' || *c == '-' || c.is_ascii_lowercase())
                .collect();
            assert!(ProblemType::ALL.iter().any(|kind| kind.uri() == uri), "unknown: {uri}");
            named += 1;
        }
        assert!(named > 0, "the document names no problem type");
    }
}
