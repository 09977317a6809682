//! A merchant's endpoint for the tests: records every webhook request, fails the first ones when
//! told to, and checks signatures the way EVENTS.md tells merchants to.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use warp::Filter;
use warp::http::{HeaderMap, StatusCode};

/// One request received.
#[derive(Debug, Clone)]
pub struct Hook {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Hook {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// Whether `Storefront-Signature` is `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
    pub fn verifies(&self, secret: &str) -> bool {
        let header = self.header("storefront-signature");
        let mut t = None;
        let mut v1 = None;
        for part in header.split(',') {
            match part.split_once('=') {
                Some(("t", value)) => t = Some(value),
                Some(("v1", value)) => v1 = Some(value),
                _ => {}
            }
        }
        let (Some(t), Some(v1)) = (t, v1) else { return false };
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(&self.body);
        let mac = hmac_sha256::HMAC::mac(&signed, secret.as_bytes());
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        hex == v1
    }
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub addr: Option<SocketAddr>,
    hooks: Arc<Mutex<Vec<Hook>>>,
    fail_next: Arc<AtomicU32>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let receiver = Receiver::default();
        let (hooks, fail_next) = (receiver.hooks.clone(), receiver.fail_next.clone());
        let route = warp::post()
            .and(warp::path::full())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(move |path: warp::path::FullPath, headers, body: bytes::Bytes| {
                hooks.lock().unwrap().push(Hook {
                    path: path.as_str().to_owned(),
                    headers,
                    body: body.to_vec(),
                });
                let failing = fail_next
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let status = if failing {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                };
                warp::reply::with_status("", status)
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        Receiver { addr: Some(addr), ..receiver }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr.unwrap())
    }

    /// The next `n` requests are answered 500 (and still recorded).
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }
}
