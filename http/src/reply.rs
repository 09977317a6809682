//! What a handler returns: a response with its body as bytes (so an idempotent one can be stored
//! and replayed byte for byte), or an [`ApiError`] that becomes a problem document.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use storefront_actors::DomainError;
use storefront_events::EventsError;

use crate::auth::AuthError;
use crate::catalog::CatalogError;
use crate::idempotency::IdempotencyError;
use crate::{CONTENT_TYPE, Problem, ProblemType, ToProblem};

/// The media type of every JSON body.
pub const JSON: &str = "application/json; charset=utf-8";

/// A complete response.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// Status.
    pub status: StatusCode,
    /// `Content-Type`, or none for an empty body.
    pub content_type: Option<&'static str>,
    /// The body.
    pub body: Bytes,
    /// Further headers (`Retry-After`, `Location`, ...).
    pub headers: Vec<(&'static str, HeaderValue)>,
}

impl ApiResponse {
    /// `value` as JSON with `status`.
    pub fn json(status: StatusCode, value: &impl Serialize) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| ApiError::internal(format!("response not serializable: {e}")))?;
        Ok(Self { status, content_type: Some(JSON), body: body.into(), headers: Vec::new() })
    }

    /// An empty response.
    pub fn empty(status: StatusCode) -> Self {
        Self { status, content_type: None, body: Bytes::new(), headers: Vec::new() }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The warp response.
    pub fn into_response(self) -> warp::reply::Response {
        let mut response = warp::reply::Response::new(self.body.into());
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Some(content_type) = self.content_type {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

impl From<ApiResponse> for warp::reply::Response {
    fn from(response: ApiResponse) -> Self {
        response.into_response()
    }
}

/// A request that failed: the problem its client sees, plus headers such as `Retry-After`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The problem document.
    pub problem: Problem,
    /// Further headers.
    pub headers: Vec<(&'static str, HeaderValue)>,
}

impl ApiError {
    /// A problem without extra headers.
    pub fn new(problem: Problem) -> Self {
        Self { problem, headers: Vec::new() }
    }

    /// 400 with one field error.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        let (field, message) = (field.into(), message.into());
        let detail = format!("{field}: {message}");
        Self::new(Problem::validation(field, message, detail))
    }

    /// 404 for a resource that does not exist (or that the caller may not see).
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(Problem::new(ProblemType::NotFound, what))
    }

    /// 401: no valid access token.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(Problem::new(ProblemType::Unauthorized, detail))
            .with_header("www-authenticate", HeaderValue::from_static("Bearer"))
    }

    /// 403: the token lacks the role.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(Problem::new(ProblemType::Forbidden, detail))
    }

    /// 500 for a fault of this server (never caused by a request's content).
    pub fn internal(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        tracing::error!(%detail, "internal error");
        Self::new(Problem::new(ProblemType::Internal, detail))
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The response.
    pub fn into_api_response(self) -> ApiResponse {
        let status =
            StatusCode::from_u16(self.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // A `Problem` holds strings and numbers only, so it always serializes.
        let body = serde_json::to_vec(&self.problem).unwrap_or_default();
        ApiResponse {
            status,
            content_type: Some(CONTENT_TYPE),
            body: body.into(),
            headers: self.headers,
        }
    }
}

macro_rules! from_to_problem {
    ($($error:ty),*) => {$(
        impl From<$error> for ApiError {
            fn from(err: $error) -> Self {
                let mut problem = err.to_problem();
                if problem.status >= 500 {
                    // What failed inside (a backend's own words, addresses, node names) is for
                    // the log; the client gets the kind of failure only.
                    tracing::warn!(error = %err, status = problem.status, "request failed");
                    problem.detail = format!("{}; try again later", problem.title);
                }
                Self::new(problem)
            }
        }
    )*};
}

from_to_problem!(DomainError, AuthError, IdempotencyError, CatalogError, EventsError);

/// Handlers' result.
pub type ApiResult = Result<ApiResponse, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backends_own_words_never_reach_the_client() {
        let leaks = [
            ApiError::from(DomainError::Storage("connect to 10.0.0.5:5432 refused".into())),
            ApiError::from(DomainError::Unavailable("no session to node 10.0.0.5".into())),
            ApiError::from(AuthError::Backend("relation \"kv\" at 10.0.0.5".into())),
        ];
        for error in leaks {
            let problem = &error.problem;
            assert!(problem.status >= 500, "{problem:?}");
            assert!(!problem.detail.contains("10.0.0.5"), "leaked: {}", problem.detail);
        }
        // A client's own mistake keeps its explanation.
        let invalid =
            ApiError::from(DomainError::Invalid { field: "qty".into(), reason: "too many".into() });
        assert!(invalid.problem.detail.contains("too many"));
    }
}
