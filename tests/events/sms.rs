//! A Twilio-compatible Messages API for the tests: records every request, and fails the first
//! ones when told to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use warp::Filter;
use warp::http::StatusCode;

/// One request the gateway received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    pub form: HashMap<String, String>,
}

#[derive(Clone, Default)]
pub struct SmsGateway {
    pub addr: Option<SocketAddr>,
    received: Arc<Mutex<Vec<Received>>>,
    fail_next: Arc<AtomicU32>,
}

impl SmsGateway {
    pub async fn start() -> SmsGateway {
        let gateway = SmsGateway::default();
        let (received, fail_next) = (gateway.received.clone(), gateway.fail_next.clone());
        let route = warp::post()
            .and(warp::path::full())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::form::<HashMap<String, String>>())
            .map(move |path: warp::path::FullPath, authorization, form| {
                let failing = fail_next
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    return warp::reply::with_status(
                        "{\"message\":\"busy\"}",
                        StatusCode::SERVICE_UNAVAILABLE,
                    );
                }
                received.lock().unwrap().push(Received {
                    path: path.as_str().to_owned(),
                    authorization,
                    form,
                });
                warp::reply::with_status(
                    "{\"sid\":\"SM1\",\"status\":\"queued\"}",
                    StatusCode::CREATED,
                )
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        SmsGateway { addr: Some(addr), ..gateway }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }

    /// The next `n` requests fail with 503.
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}
