//! Errors as `application/problem+json` (RFC 9457) with stable `type`s clients branch on.

use serde::Serialize;
use storefront_actors::DomainError;
use storefront_events::EventsError;

use crate::auth::AuthError;
use crate::catalog::CatalogError;
use crate::idempotency::IdempotencyError;

/// The media type of a problem document.
pub const CONTENT_TYPE: &str = "application/problem+json";

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
    /// Stable identifier, for example `/problems/out-of-stock`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Short summary of the kind.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// This occurrence, in words.
    pub detail: String,
    /// Field errors of a validation problem.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// A problem without field errors.
    pub fn new(
        kind: &'static str,
        title: &'static str,
        status: u16,
        detail: impl Into<String>,
    ) -> Self {
        Self { kind, title, status, detail: detail.into(), errors: Vec::new() }
    }

    /// 400 `/problems/validation` naming one invalid field.
    pub fn validation(
        field: impl Into<String>,
        message: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            errors: vec![FieldError { field: field.into(), message: message.into() }],
            ..Self::new("/problems/validation", "Invalid request", 400, detail)
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
        let p = |kind, title, status| Problem::new(kind, title, status, detail.clone());
        match self {
            DomainError::Invalid { field, reason } => {
                Problem::validation(field.clone(), reason.clone(), detail)
            }
            DomainError::InvalidMoney(_) => p("/problems/invalid-money", "Invalid amount", 400),
            DomainError::UnknownCurrency(_) => {
                p("/problems/unknown-currency", "Unknown currency", 400)
            }
            DomainError::CurrencyMismatch { .. } => {
                p("/problems/currency-mismatch", "Currencies do not match", 400)
            }
            DomainError::InvalidRate(_) => {
                p("/problems/invalid-fx-rate", "Invalid exchange rate", 400)
            }
            DomainError::Overflow => p("/problems/amount-out-of-range", "Amount out of range", 400),
            DomainError::OutOfStock { .. } => p("/problems/out-of-stock", "Out of stock", 409),
            DomainError::PurchaseLimit { .. } => {
                p("/problems/purchase-limit", "Over the purchase limit", 409)
            }
            DomainError::ReservationGone(_) => {
                p("/problems/reservation-gone", "Reservation no longer held", 409)
            }
            DomainError::AlreadyCommitted(_) => {
                p("/problems/reservation-committed", "Reservation already committed", 409)
            }
            DomainError::BelowReserved { .. } => {
                p("/problems/below-reserved", "Stock would fall below what is reserved", 409)
            }
            DomainError::NotFound { .. } => p("/problems/not-found", "Not found", 404),
            DomainError::OrderConflict(_) => {
                p("/problems/order-conflict", "Order exists with other contents", 409)
            }
            DomainError::InvalidOrderState { .. } => {
                p("/problems/invalid-order-state", "Not possible in this order state", 409)
            }
            DomainError::Unavailable(_) | DomainError::Moved(_) => {
                p("/problems/unavailable", "Temporarily unavailable", 503)
            }
            DomainError::Storage(_) => {
                p("/problems/storage-unavailable", "Storage unavailable", 503)
            }
        }
    }
}

impl ToProblem for AuthError {
    fn to_problem(&self) -> Problem {
        let detail = self.to_string();
        let p = |kind, title, status| Problem::new(kind, title, status, detail.clone());
        match self {
            AuthError::InvalidToken(_) => p("/problems/unauthorized", "Not authenticated", 401),
            AuthError::Reused | AuthError::Revoked | AuthError::Expired => {
                p("/problems/invalid-refresh-token", "Refresh token not valid", 401)
            }
            AuthError::WeakPassword(reason) => {
                Problem::validation("password", reason.clone(), detail)
            }
            AuthError::InvalidEmail => Problem::validation("email", detail.clone(), detail),
            AuthError::EmailTaken => p("/problems/email-taken", "Email already registered", 409),
            AuthError::InvalidCredentials => {
                p("/problems/invalid-credentials", "Invalid email or password", 401)
            }
            AuthError::WrongPassword => {
                Problem::validation("current_password", detail.clone(), detail)
            }
            AuthError::InvalidResetToken => {
                p("/problems/invalid-reset-token", "Reset token not valid", 400)
            }
            AuthError::Config(_) => p("/problems/internal", "Server misconfigured", 500),
            AuthError::Backend(_) => p("/problems/unavailable", "Temporarily unavailable", 503),
        }
    }
}

impl ToProblem for IdempotencyError {
    fn to_problem(&self) -> Problem {
        let detail = self.to_string();
        let p = |kind, title, status| Problem::new(kind, title, status, detail.clone());
        match self {
            IdempotencyError::InvalidKey => {
                Problem::validation("Idempotency-Key", detail.clone(), detail)
            }
            IdempotencyError::Reused => {
                p("/problems/idempotency-key-reused", "Idempotency key reused", 422)
            }
            IdempotencyError::InProgress => {
                p("/problems/idempotency-in-progress", "Request in progress", 409)
            }
            IdempotencyError::Backend(_) => {
                p("/problems/unavailable", "Temporarily unavailable", 503)
            }
        }
    }
}

impl ToProblem for CatalogError {
    fn to_problem(&self) -> Problem {
        let detail = self.to_string();
        let p = |kind, title, status| Problem::new(kind, title, status, detail.clone());
        match self {
            CatalogError::SkuExists(_) => p("/problems/sku-exists", "SKU already exists", 409),
            CatalogError::NotFound(_) => p("/problems/not-found", "Not found", 404),
            CatalogError::Invalid { field, reason } => {
                Problem::validation(*field, reason.clone(), detail)
            }
            CatalogError::Backend(_) => p("/problems/unavailable", "Temporarily unavailable", 503),
        }
    }
}

impl ToProblem for EventsError {
    fn to_problem(&self) -> Problem {
        // What reaches a request is the store (or a stored record) failing: no backend text.
        Problem::new(
            "/problems/unavailable",
            "Temporarily unavailable",
            503,
            "the webhooks could not be read or written; try again",
        )
    }
}

#[cfg(test)]
mod tests {
    use storefront_actors::{Currency, Money};

    use super::*;

    #[test]
    fn domain_errors_map_to_stable_problems() {
        let cases = [
            (
                DomainError::OutOfStock { sku: "A".into(), requested: 2, available: 1 },
                409,
                "/problems/out-of-stock",
            ),
            (
                DomainError::NotFound { kind: "order".into(), id: "o".into() },
                404,
                "/problems/not-found",
            ),
            (DomainError::Unavailable("timeout".into()), 503, "/problems/unavailable"),
            (DomainError::UnknownCurrency("XYZ".into()), 400, "/problems/unknown-currency"),
            (
                DomainError::BelowReserved { on_hand: 1, reserved: 2 },
                409,
                "/problems/below-reserved",
            ),
        ];
        for (error, status, kind) in cases {
            let problem = error.to_problem();
            assert_eq!((problem.status, problem.kind), (status, kind), "{error}");
            assert_eq!(problem.detail, error.to_string());
        }
        let money = Money::parse("1.001", Currency::USD).unwrap_err().to_problem();
        assert_eq!((money.status, money.kind), (400, "/problems/invalid-money"));
    }

    #[test]
    fn auth_errors_map_to_401_or_validation() {
        assert_eq!(AuthError::InvalidToken("x".into()).to_problem().status, 401);
        let reused = AuthError::Reused.to_problem();
        assert_eq!((reused.status, reused.kind), (401, "/problems/invalid-refresh-token"));
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
        assert_eq!(json["type"], "/problems/validation");
        assert_eq!(json["status"], 400);
        assert_eq!(json["errors"][0]["field"], "items[0].qty");
        let plain = serde_json::to_value(DomainError::Overflow.to_problem()).unwrap();
        assert!(plain.get("errors").is_none(), "no empty errors array");
    }
}
