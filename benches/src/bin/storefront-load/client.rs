//! The load's HTTP/1.1 keep-alive connections: each carries one request at a time, as one shopper's
//! browser or app does, and reconnects after a failure. Set-up and checks go through `reqwest`
//! instead ([`crate::admin`]); this is the measured path only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A node to send load to: `http://host:port`.
#[derive(Debug)]
pub struct Target {
    /// The URL as given (no trailing slash).
    pub url: String,
    addr: SocketAddr,
    host: HeaderValue,
}

impl Target {
    /// Parses and resolves `url` (plain `http://host:port`, no path).
    pub async fn resolve(url: &str) -> anyhow::Result<Self> {
        let url = url.trim_end_matches('/');
        let Some(authority) = url.strip_prefix("http://") else {
            bail!("{url}: only http:// URLs are supported");
        };
        if authority.is_empty() || authority.contains('/') {
            bail!("{url}: expected http://host:port with no path");
        }
        let with_port =
            if authority.contains(':') { authority.to_owned() } else { format!("{authority}:80") };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("resolving {with_port}"))?
            .next()
            .with_context(|| format!("{with_port} resolves to no address"))?;
        Ok(Self { url: url.to_owned(), addr, host: HeaderValue::from_str(authority)? })
    }
}

/// One request of the load.
#[derive(Debug, Clone)]
pub struct Call {
    /// The endpoint it counts under, e.g. `POST /v1/checkout`.
    pub endpoint: &'static str,
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Bearer token.
    pub token: Option<Arc<str>>,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// JSON body.
    pub body: Option<Bytes>,
}

impl Call {
    /// A GET of `path`.
    pub fn get(endpoint: &'static str, path: String) -> Self {
        Self { endpoint, method: Method::GET, path, token: None, idempotency_key: None, body: None }
    }

    /// A POST of the JSON `body` to `path` as the holder of `token`.
    pub fn post(endpoint: &'static str, path: String, token: Arc<str>, body: Bytes) -> Self {
        Self {
            endpoint,
            method: Method::POST,
            path,
            token: Some(token),
            idempotency_key: None,
            body: Some(body),
        }
    }

    /// `POST /v1/checkout` of the JSON `body` as the holder of `token`, under `idempotency_key`.
    pub fn checkout(token: Arc<str>, body: Bytes, idempotency_key: String) -> Self {
        let mut call = Self::post("POST /v1/checkout", "/v1/checkout".to_owned(), token, body);
        call.idempotency_key = Some(idempotency_key);
        call
    }

    /// The body of a checkout of one unit of `sku`, paid with a card that succeeds.
    pub fn one_unit_of(sku: &str) -> Bytes {
        Bytes::from(
            serde_json::json!({"payment_token": "tok_visa", "items": [{"sku": sku, "qty": 1}]})
                .to_string(),
        )
    }
}

/// What came back.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Whether the body is `application/problem+json`.
    pub problem: bool,
    /// The body.
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made.
    Connect,
    /// No answer within the timeout.
    Timeout,
    /// The connection broke.
    Io,
}

impl Failure {
    /// The outcome label of the report.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Connect => "error: connect",
            Failure::Timeout => "error: timeout",
            Failure::Io => "error: connection",
        }
    }
}

/// A keep-alive connection to one target.
#[derive(Debug)]
pub struct Conn {
    target: Arc<Target>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// Opens a connection to `target`.
    pub async fn open(target: Arc<Target>) -> Result<Self, Failure> {
        let mut conn = Self { target, sender: None };
        conn.connect().await?;
        Ok(conn)
    }

    async fn connect(&mut self) -> Result<(), Failure> {
        let stream = TcpStream::connect(self.target.addr).await.map_err(|_| Failure::Connect)?;
        stream.set_nodelay(true).map_err(|_| Failure::Connect)?;
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|_| Failure::Connect)?;
        // The connection task ends when the sender is dropped or the peer closes.
        tokio::spawn(connection);
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends `call` and reads the whole answer, within `timeout`. After a failure the next call
    /// reconnects.
    pub async fn send(&mut self, call: &Call, timeout: Duration) -> Result<Answer, Failure> {
        match tokio::time::timeout(timeout, self.exchange(call)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(failure)) => {
                self.sender = None;
                Err(failure)
            }
            Err(_) => {
                self.sender = None;
                Err(Failure::Timeout)
            }
        }
    }

    async fn exchange(&mut self, call: &Call) -> Result<Answer, Failure> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect().await?;
        }
        let Some(sender) = self.sender.as_mut() else { return Err(Failure::Connect) };
        sender.ready().await.map_err(|_| Failure::Io)?;
        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(call.path.as_str())
            .header(header::HOST, self.target.host.clone());
        if let Some(token) = &call.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(key) = &call.idempotency_key {
            request = request.header("idempotency-key", key.as_str());
        }
        let body = match &call.body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                body.clone()
            }
            None => Bytes::new(),
        };
        // The parts above are valid by construction (a path we formatted, ASCII headers).
        let request = request.body(Full::new(body)).map_err(|_| Failure::Io)?;
        let response = sender.send_request(request).await.map_err(|_| Failure::Io)?;
        let status = response.status().as_u16();
        let problem = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
        let body = response.into_body().collect().await.map_err(|_| Failure::Io)?.to_bytes();
        Ok(Answer { status, problem, body })
    }
}
