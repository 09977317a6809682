//! Reading a request: its body (capped), JSON (strict), the query string, the bearer token.
//!
//! Every failure here is the client's and becomes a 4xx problem; nothing a request contains can
//! make these functions panic or answer 500.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::HeaderMap;
use serde::de::DeserializeOwned;
use warp::Filter;

use crate::auth::{Principal, Role};
use crate::reply::ApiError;
use crate::{Problem, ProblemType};

/// What every handler gets besides its path parameters.
#[derive(Debug)]
pub struct Req {
    /// The request headers.
    pub headers: HeaderMap,
    /// The raw query string (empty when there is none).
    pub query: String,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// The body, read up to the limit (empty for routes without one).
    pub body: Bytes,
}

impl Req {
    /// The client's IP (`0.0.0.0` when the transport does not say).
    pub fn ip(&self) -> IpAddr {
        self.peer.map_or(IpAddr::from([0, 0, 0, 0]), |peer| peer.ip())
    }

    /// A header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Idempotency-Key` header, if sent: 1 to 255 printable ASCII characters (400 else).
    pub fn idempotency_key(&self) -> Result<Option<&str>, ApiError> {
        let Some(value) = self.headers.get("idempotency-key") else { return Ok(None) };
        let key = value.to_str().ok().filter(|k| crate::idempotency::valid_key(k));
        key.map(Some).ok_or_else(|| {
            ApiError::validation("Idempotency-Key", "1 to 255 printable ASCII characters")
        })
    }

    /// Refuses a body on a route that takes none but `{}` (unknown fields are 400 everywhere).
    pub fn no_fields(&self) -> Result<(), ApiError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Empty {}
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        self.json::<Empty>().map(drop)
    }

    /// The body as `T`, strictly (see [`parse_json`]).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if let Some(content_type) = self.header("content-type")
            && !content_type.to_ascii_lowercase().contains("json")
        {
            return Err(ApiError::new(Problem::new(
                ProblemType::UnsupportedMediaType,
                format!("expected application/json, got `{content_type}`"),
            )));
        }
        parse_json(&self.body)
    }

    /// The query parameters (the last value wins for a repeated name).
    pub fn query(&self) -> Result<Query, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&self.query)
            .map_err(|e| ApiError::validation("query", e.to_string()))?;
        Ok(Query(pairs.into_iter().collect()))
    }
}

/// Parsed query parameters.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// A parameter; an empty value counts as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// `limit`: default 20, 1 to 100.
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(20),
            Some(raw) => match raw.parse::<usize>() {
                Ok(limit) if (1..=100).contains(&limit) => Ok(limit),
                _ => Err(ApiError::validation("limit", "must be a whole number from 1 to 100")),
            },
        }
    }
}

/// The filter giving a handler its [`Req`] without reading a body.
pub fn req() -> impl Filter<Extract = (Req,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned()
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::ext::optional::<crate::serve::Peer>())
        .map(|headers, query, peer: Option<crate::serve::Peer>| Req {
            headers,
            query,
            peer: peer.map(|crate::serve::Peer(addr)| addr),
            body: Bytes::new(),
        })
}

/// Reads the body of `req` from `body`, or the 413 problem if it is over `limit` bytes (checked
/// on `Content-Length` before reading, and while reading).
pub async fn read_body<B: Buf>(
    mut req: Req,
    body: impl Stream<Item = Result<B, warp::Error>>,
    limit: u64,
) -> Result<Req, ApiError> {
    let declared = req.header("content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    req.body = read_capped(body, limit).await?;
    Ok(req)
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(Problem::new(
        ProblemType::PayloadTooLarge,
        format!("the body may be at most {limit} bytes"),
    ))
}

async fn read_capped<B: Buf>(
    body: impl Stream<Item = Result<B, warp::Error>>,
    limit: u64,
) -> Result<Bytes, ApiError> {
    let mut body = std::pin::pin!(body);
    let mut bytes = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            ApiError::new(Problem::new(
                ProblemType::BadRequest,
                format!("the body could not be read: {e}"),
            ))
        })?;
        if (bytes.len() + chunk.remaining()) as u64 > limit {
            return Err(too_large(limit));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            bytes.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(bytes.freeze())
}

/// `body` as `T`. Malformed JSON is `/problems/malformed-json`; JSON of the wrong shape (a
/// missing or unknown field, a wrong type, a negative or fractional count, a bad amount) is
/// `/problems/validation` naming the field. Both 400.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(malformed("a JSON body is required".into()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if field == "." { "body".to_owned() } else { field };
                // serde's messages end with " at line 1 column 9": the field names the place.
                let message = inner.to_string();
                let message = match message.rfind(" at line ") {
                    Some(at) => message[..at].to_owned(),
                    None => message,
                };
                ApiError::validation(field, message)
            }
            _ => malformed(inner.to_string()),
        }
    })?;
    deserializer.end().map_err(|e| malformed(e.to_string()))?;
    Ok(value)
}

fn malformed(detail: String) -> ApiError {
    ApiError::new(Problem::new(ProblemType::MalformedJson, detail))
}

/// The caller named by the `Authorization: Bearer` header.
pub fn bearer(
    req: &Req,
    verify: impl Fn(&str) -> Result<Principal, crate::auth::AuthError>,
) -> Result<Principal, ApiError> {
    let header = req.header("authorization").ok_or_else(|| {
        ApiError::unauthorized("an `Authorization: Bearer` access token is required")
    })?;
    let token =
        header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).ok_or_else(
            || ApiError::unauthorized("the Authorization header must be `Bearer <token>`"),
        )?;
    verify(token.trim()).map_err(|e| ApiError::unauthorized(e.to_string()))
}

/// Refuses a caller without `role` (403).
pub fn require(principal: &Principal, role: Role) -> Result<(), ApiError> {
    if principal.has(role) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("this needs the {} role", role.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        sku: String,
        qty: u32,
    }

    fn kind(body: &str) -> (&'static str, Vec<String>) {
        let err = parse_json::<Line>(body.as_bytes()).unwrap_err();
        (err.problem.kind, err.problem.errors.into_iter().map(|e| e.field).collect())
    }

    #[test]
    fn json_errors_are_classified_and_name_the_field() {
        assert_eq!(kind("{\"sku\": \"A\", \"qty\": "), (ProblemType::MalformedJson.uri(), vec![]));
        assert_eq!(kind("not json"), (ProblemType::MalformedJson.uri(), vec![]));
        assert_eq!(kind(""), (ProblemType::MalformedJson.uri(), vec![]));
        assert_eq!(kind("{\"sku\":\"A\",\"qty\":1} x"), (ProblemType::MalformedJson.uri(), vec![]));
        assert_eq!(
            kind("{\"sku\":\"A\",\"qty\":-1}"),
            (ProblemType::Validation.uri(), vec!["qty".into()])
        );
        assert_eq!(
            kind("{\"sku\":\"A\",\"qty\":1.5}"),
            (ProblemType::Validation.uri(), vec!["qty".into()])
        );
        assert_eq!(
            kind("{\"sku\":\"A\",\"qty\":1,\"x\":1}"),
            (ProblemType::Validation.uri(), vec!["x".into()])
        );
        assert!(parse_json::<Line>(b"{\"sku\":\"A\",\"qty\":2}").is_ok());
    }

    #[test]
    fn limits_are_bounded() {
        let q = |s: &str| {
            Req { headers: HeaderMap::new(), query: s.into(), peer: None, body: Bytes::new() }
                .query()
                .unwrap()
        };
        assert_eq!(q("").limit().unwrap(), 20);
        assert_eq!(q("limit=100").limit().unwrap(), 100);
        for bad in ["limit=0", "limit=101", "limit=-1", "limit=x"] {
            assert_eq!(q(bad).limit().unwrap_err().problem.status, 400, "{bad}");
        }
    }
}
