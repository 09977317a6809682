//! Errors as `application/problem+json` (RFC 9457) with stable `type`s clients branch on.
//!
//! [`ProblemType`] names every problem this API answers with, and holds each one's URI, title
//! and status once; a [`Problem`] is one occurrence of a type, with its `detail`.

use serde::Serialize;
use storefront_actors::DomainError;
use storefront_events::EventsError;

use crate::auth::AuthError;
use crate::catalog::CatalogError;
use crate::idempotency::IdempotencyError;

/// The media type of a problem document.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// A kind of problem: its stable `type` URI, its title and its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemType {
    /// 400: a field of the request is invalid; the problem lists `errors[]`.
    Validation,
    /// 400: the body is not JSON (or is empty, or has trailing characters).
    MalformedJson,
    /// 400: the body could not be read.
    BadRequest,
    /// 404: no such resource, or one the caller may not see; also an unknown endpoint.
    NotFound,
    /// 405: the path exists, but not with this method (with `Allow`).
    MethodNotAllowed,
    /// 413: the body is over the size limit.
    PayloadTooLarge,
    /// 415: a body that is not JSON.
    UnsupportedMediaType,
    /// 429: rate limited (with `Retry-After`).
    RateLimited,
    /// 503: the request was not answered within the request timeout (with `Retry-After`).
    Timeout,
    /// 401: no valid access token.
    Unauthorized,
    /// 403: the access token lacks the role.
    Forbidden,
    /// 401: unknown email or wrong password (the same answer for both).
    InvalidCredentials,
    /// 401: a refresh token that is unknown, expired, revoked or spent.
    InvalidRefreshToken,
    /// 400: a password-reset token that is unknown, spent or expired.
    InvalidResetToken,
    /// 409: the email is already registered.
    EmailTaken,
    /// 400: a money amount that is not a valid decimal for its currency.
    InvalidMoney,
    /// 400: a currency this shop does not support.
    UnknownCurrency,
    /// 400: amounts in different currencies were combined.
    CurrencyMismatch,
    /// 400: an exchange rate is missing or not positive.
    InvalidFxRate,
    /// 400: an amount or count does not fit.
    AmountOutOfRange,
    /// 409: a product with this SKU already exists.
    SkuExists,
    /// 409: not enough stock available; nothing is held.
    OutOfStock,
    /// 429: a SKU has more checkouts waiting than it serves within the checkout wait (with
    /// `Retry-After`); nothing is held.
    SkuBusy,
    /// 409: the buyer would go past the SKU's `max_per_customer`; nothing is held.
    PurchaseLimit,
    /// 409: the reservation expired or was released (or never existed).
    ReservationGone,
    /// 409: the reservation was already committed.
    ReservationCommitted,
    /// 409: on-hand stock would fall below what is reserved.
    BelowReserved,
    /// 409: an order id was reused for a different order.
    OrderConflict,
    /// 409: the order's state does not allow the request.
    InvalidOrderState,
    /// 503: a cancellation's refund outlasted the wait and goes on (with `Retry-After`).
    CancellationInProgress,
    /// 402: the payment was declined.
    PaymentDeclined,
    /// 502: the payment gateway kept failing; the order failed and released its stock.
    PaymentGatewayError,
    /// 409: the checkout failed for another reason; nothing is held.
    CheckoutFailed,
    /// 422: an idempotency key sent again with another request.
    IdempotencyKeyReused,
    /// 409: a duplicate of a request still running (with `Retry-After`).
    IdempotencyInProgress,
    /// 409: a node cannot leave while no other node is up to take its shards.
    LastNode,
    /// 503: a backend or the cluster cannot answer now; try again.
    Unavailable,
    /// 503: the storage cannot answer now; try again.
    StorageUnavailable,
    /// 500: a fault of this server, never caused by a request's content.
    Internal,
}

impl ProblemType {
    /// Every problem type, in declaration order (for documentation and tests).
    pub const ALL: &'static [Self] = &[
        Self::Validation,
        Self::MalformedJson,
        Self::BadRequest,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::RateLimited,
        Self::Timeout,
        Self::Unauthorized,
        Self::Forbidden,
        Self::InvalidCredentials,
        Self::InvalidRefreshToken,
        Self::InvalidResetToken,
        Self::EmailTaken,
        Self::InvalidMoney,
        Self::UnknownCurrency,
        Self::CurrencyMismatch,
        Self::InvalidFxRate,
        Self::AmountOutOfRange,
        Self::SkuExists,
        Self::OutOfStock,
        Self::SkuBusy,
        Self::PurchaseLimit,
        Self::ReservationGone,
        Self::ReservationCommitted,
        Self::BelowReserved,
        Self::OrderConflict,
        Self::InvalidOrderState,
        Self::CancellationInProgress,
        Self::PaymentDeclined,
        Self::PaymentGatewayError,
        Self::CheckoutFailed,
        Self::IdempotencyKeyReused,
        Self::IdempotencyInProgress,
        Self::LastNode,
        Self::Unavailable,
        Self::StorageUnavailable,
        Self::Internal,
    ];

    /// The stable `type` URI, for example `/problems/out-of-stock`.
    pub const fn uri(self) -> &'static str {
        self.parts().0
    }

    /// The short summary of the type.
    pub const fn title(self) -> &'static str {
        self.parts().1
    }

    /// The HTTP status.
    pub const fn status(self) -> u16 {
        self.parts().2
    }

    /// URI, title and status: one row per type.
    const fn parts(self) -> (&'static str, &'static str, u16) {
        match self {
            Self::Validation => ("/problems/validation", "Invalid request", 400),
            Self::MalformedJson => ("/problems/malformed-json", "Malformed JSON", 400),
            Self::BadRequest => ("/problems/bad-request", "Bad request", 400),
            Self::NotFound => ("/problems/not-found", "Not found", 404),
            Self::MethodNotAllowed => ("/problems/method-not-allowed", "Method not allowed", 405),
            Self::PayloadTooLarge => ("/problems/payload-too-large", "Request body too large", 413),
            Self::UnsupportedMediaType => {
                ("/problems/unsupported-media-type", "Unsupported media type", 415)
            }
            Self::RateLimited => ("/problems/rate-limited", "Too many requests", 429),
            Self::Timeout => ("/problems/timeout", "Request timed out", 503),
            Self::Unauthorized => ("/problems/unauthorized", "Not authenticated", 401),
            Self::Forbidden => ("/problems/forbidden", "Not allowed", 403),
            Self::InvalidCredentials => {
                ("/problems/invalid-credentials", "Invalid email or password", 401)
            }
            Self::InvalidRefreshToken => {
                ("/problems/invalid-refresh-token", "Refresh token not valid", 401)
            }
            Self::InvalidResetToken => {
                ("/problems/invalid-reset-token", "Reset token not valid", 400)
            }
            Self::EmailTaken => ("/problems/email-taken", "Email already registered", 409),
            Self::InvalidMoney => ("/problems/invalid-money", "Invalid amount", 400),
            Self::UnknownCurrency => ("/problems/unknown-currency", "Unknown currency", 400),
            Self::CurrencyMismatch => {
                ("/problems/currency-mismatch", "Currencies do not match", 400)
            }
            Self::InvalidFxRate => ("/problems/invalid-fx-rate", "Invalid exchange rate", 400),
            Self::AmountOutOfRange => ("/problems/amount-out-of-range", "Amount out of range", 400),
            Self::SkuExists => ("/problems/sku-exists", "SKU already exists", 409),
            Self::OutOfStock => ("/problems/out-of-stock", "Out of stock", 409),
            Self::SkuBusy => ("/problems/sku-busy", "SKU busy", 429),
            Self::PurchaseLimit => ("/problems/purchase-limit", "Over the purchase limit", 409),
            Self::ReservationGone => {
                ("/problems/reservation-gone", "Reservation no longer held", 409)
            }
            Self::ReservationCommitted => {
                ("/problems/reservation-committed", "Reservation already committed", 409)
            }
            Self::BelowReserved => {
                ("/problems/below-reserved", "Stock would fall below what is reserved", 409)
            }
            Self::OrderConflict => {
                ("/problems/order-conflict", "Order exists with other contents", 409)
            }
            Self::InvalidOrderState => {
                ("/problems/invalid-order-state", "Not possible in this order state", 409)
            }
            Self::CancellationInProgress => {
                ("/problems/cancellation-in-progress", "Cancellation in progress", 503)
            }
            Self::PaymentDeclined => ("/problems/payment-declined", "Payment declined", 402),
            Self::PaymentGatewayError => {
                ("/problems/payment-gateway-error", "Payment gateway error", 502)
            }
            Self::CheckoutFailed => ("/problems/checkout-failed", "Checkout failed", 409),
            Self::IdempotencyKeyReused => {
                ("/problems/idempotency-key-reused", "Idempotency key reused", 422)
            }
            Self::IdempotencyInProgress => {
                ("/problems/idempotency-in-progress", "Request in progress", 409)
            }
            Self::LastNode => ("/problems/last-node", "No node to hand off to", 409),
            Self::Unavailable => ("/problems/unavailable", "Temporarily unavailable", 503),
            Self::StorageUnavailable => {
                ("/problems/storage-unavailable", "Storage unavailable", 503)
            }
            Self::Internal => ("/problems/internal", "Internal error", 500),
        }
    }
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field, for example `items[0].qty`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Stable identifier, [`ProblemType::uri`], for example `/problems/out-of-stock`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Short summary of the kind, [`ProblemType::title`].
    pub title: &'static str,
    /// The HTTP status, [`ProblemType::status`].
    pub status: u16,
    /// This occurrence, in words.
    pub detail: String,
    /// Field errors of a validation problem.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// A problem of type `kind` without field errors.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            kind: kind.uri(),
            title: kind.title(),
            status: kind.status(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// 400 [`ProblemType::Validation`] naming one invalid field.
    pub fn validation(
        field: impl Into<String>,
        message: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            errors: vec![FieldError { field: field.into(), message: message.into() }],
            ..Self::new(ProblemType::Validation, detail)
        }
    }
}

/// Maps an error to the problem an API client sees.
pub trait ToProblem {
    /// The problem document for this error.
    fn to_problem(&self) -> Problem;
}

impl ToProblem for DomainError {
    fn to_problem(&self) -> Problem {
        let detail = self.to_string();
        let p = |kind| Problem::new(kind, detail.clone());
        match self {
            DomainError::Invalid { field, reason } => {
                Problem::validation(field.clone(), reason.clone(), detail)
            }
            DomainError::InvalidMoney(_) => p(ProblemType::InvalidMoney),
            DomainError::UnknownCurrency(_) => p(ProblemType::UnknownCurrency),
            DomainError::CurrencyMismatch { .. } => p(ProblemType::CurrencyMismatch),
            DomainError::InvalidRate(_) => p(ProblemType::InvalidFxRate),
            DomainError::Overflow => p(ProblemType::AmountOutOfRange),
            DomainError::OutOfStock { .. } => p(ProblemType::OutOfStock),
            DomainError::PurchaseLimit { .. } => p(ProblemType::PurchaseLimit),
            DomainError::ReservationGone(_) => p(ProblemType::ReservationGone),
            DomainError::AlreadyCommitted(_) => p(ProblemType::ReservationCommitted),
            DomainError::BelowReserved { .. } => p(ProblemType::BelowReserved),
            DomainError::NotFound { .. } => p(ProblemType::NotFound),
            DomainError::OrderConflict(_) => p(ProblemType::OrderConflict),
            DomainError::InvalidOrderState { .. } => p(ProblemType::InvalidOrderState),
            DomainError::Unavailable(_) | DomainError::Moved(_) => p(ProblemType::Unavailable),
            DomainError::Storage(_) => p(ProblemType::StorageUnavailable),
        }
    }
}

impl ToProblem for AuthError {
    fn to_problem(&self) -> Problem {
        let detail = self.to_string();
        let p = |kind| Problem::new(kind, detail.clone());
        match self {
            AuthError::InvalidToken(_) => p(ProblemType::Unauthorized),
            AuthError::Reused | AuthError::Revoked | AuthError::Expired => {
                p(ProblemType::InvalidRefreshToken)
            }
            AuthError::WeakPassword(reason) => {
                Problem::validation("password", reason.clone(), detail)
            }
            AuthError::InvalidEmail => Problem::validation("email", detail.clone(), detail),
            AuthError::EmailTaken => p(ProblemType::EmailTaken),
            AuthError::InvalidCredentials => p(ProblemType::InvalidCredentials),
            AuthError::WrongPassword => {
                Problem::validation("current_password", detail.clone(), detail)
            }
            AuthError::InvalidResetToken => p(ProblemType::InvalidResetToken),
            AuthError::Config(_) => p(ProblemType::Internal),
            AuthError::Backend(_) => p(ProblemType::Unavailable),
        }
    }
}

impl ToProblem for IdempotencyError {
    fn to_problem(&self) -> Problem {
        let detail = self.to_string();
        let p = |kind| Problem::new(kind, detail.clone());
        match self {
            IdempotencyError::InvalidKey => {
                Problem::validation("Idempotency-Key", detail.clone(), detail)
            }
            IdempotencyError::Reused => p(ProblemType::IdempotencyKeyReused),
            IdempotencyError::InProgress => p(ProblemType::IdempotencyInProgress),
            IdempotencyError::Backend(_) => p(ProblemType::Unavailable),
        }
    }
}

impl ToProblem for CatalogError {
    fn to_problem(&self) -> Problem {
        let detail = self.to_string();
        let p = |kind| Problem::new(kind, detail.clone());
        match self {
            CatalogError::SkuExists(_) => p(ProblemType::SkuExists),
            CatalogError::NotFound(_) => p(ProblemType::NotFound),
            CatalogError::Invalid { field, reason } => {
                Problem::validation(*field, reason.clone(), detail)
            }
            CatalogError::Backend(_) => p(ProblemType::Unavailable),
        }
    }
}

impl ToProblem for EventsError {
    fn to_problem(&self) -> Problem {
        // What reaches a request is the store (or a stored record) failing: no backend text.
        Problem::new(
            ProblemType::Unavailable,
            "the webhooks could not be read or written; try again",
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use storefront_actors::{Currency, Money};

    use super::*;

    #[test]
    fn every_problem_type_is_listed_once_with_its_own_uri() {
        for (index, kind) in ProblemType::ALL.iter().enumerate() {
            // In declaration order, so a type left out of the list shows as a gap.
            assert_eq!(*kind as usize, index, "{kind:?} out of place in ALL");
            assert!(kind.uri().starts_with("/problems/"), "{kind:?}");
            assert!(!kind.title().is_empty(), "{kind:?}");
            assert!((400..600).contains(&kind.status()), "{kind:?}");
        }
        let uris: HashSet<_> = ProblemType::ALL.iter().map(|kind| kind.uri()).collect();
        assert_eq!(uris.len(), ProblemType::ALL.len(), "a URI used twice");
        assert_eq!(ProblemType::ALL.last(), Some(&ProblemType::Internal));
    }

    #[test]
    fn a_problem_takes_uri_title_and_status_from_its_type() {
        let problem = Problem::new(ProblemType::OutOfStock, "A has 1 available");
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "/problems/out-of-stock",
                "title": "Out of stock",
                "status": 409,
                "detail": "A has 1 available"
            })
        );
    }

    #[test]
    fn domain_errors_map_to_stable_problems() {
        let cases = [
            (
                DomainError::OutOfStock { sku: "A".into(), requested: 2, available: 1 },
                409,
                ProblemType::OutOfStock,
            ),
            (
                DomainError::NotFound { kind: "order".into(), id: "o".into() },
                404,
                ProblemType::NotFound,
            ),
            (DomainError::Unavailable("timeout".into()), 503, ProblemType::Unavailable),
            (DomainError::UnknownCurrency("XYZ".into()), 400, ProblemType::UnknownCurrency),
            (
                DomainError::BelowReserved { on_hand: 1, reserved: 2 },
                409,
                ProblemType::BelowReserved,
            ),
        ];
        for (error, status, kind) in cases {
            let problem = error.to_problem();
            assert_eq!((problem.status, problem.kind), (status, kind.uri()), "{error}");
            assert_eq!(problem.detail, error.to_string());
        }
        let money = Money::parse("1.001", Currency::USD).unwrap_err().to_problem();
        assert_eq!((money.status, money.kind), (400, ProblemType::InvalidMoney.uri()));
    }

    #[test]
    fn auth_errors_map_to_401_or_validation() {
        assert_eq!(AuthError::InvalidToken("x".into()).to_problem().status, 401);
        let reused = AuthError::Reused.to_problem();
        assert_eq!((reused.status, reused.kind), (401, ProblemType::InvalidRefreshToken.uri()));
        let weak = AuthError::WeakPassword("at least 10 characters".into()).to_problem();
        assert_eq!((weak.status, weak.errors[0].field.as_str()), (400, "password"));
    }

    #[test]
    fn validation_problems_list_their_fields() {
        let problem = DomainError::Invalid {
            field: "items[0].qty".into(),
            reason: "must be between 1 and 100".into(),
        }
        .to_problem();
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(json["type"], ProblemType::Validation.uri());
        assert_eq!(json["status"], 400);
        assert_eq!(json["errors"][0]["field"], "items[0].qty");
        let plain = serde_json::to_value(DomainError::Overflow.to_problem()).unwrap();
        assert!(plain.get("errors").is_none(), "no empty errors array");
    }
}
